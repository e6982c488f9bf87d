"""`ExampleProvider`: the set-up.  The kit derives `kinds` from `HANDLERS`, parses the
provider block with `config_model` into `self.config`, and routes every call of the
contract to the handler of the resource's kind."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from mlform.providers.base import ProviderContext
from mlform.providers.kit.handlers import HandlerProvider

from .datasets import DatasetHandler
from .env import ExampleEnv
from .models import ModelHandler
from .pipelines import PipelineHandler

__all__ = ["ExampleProvider", "ExampleConfig"]


class ExampleConfig(BaseModel):
    """`provider "example" { root = ".mlform/example/{env}" }`"""

    model_config = ConfigDict(extra="forbid")

    root: str = Field(".mlform/example/{env}", description="Where the records are kept, "
                                                           "relative to the stack.")


class ExampleProvider(HandlerProvider):
    name = "example"
    config_model = ExampleConfig
    HANDLERS = {"dataset": DatasetHandler, "pipeline": PipelineHandler, "model": ModelHandler}

    def make_env(self, context: ProviderContext, config: ExampleConfig) -> ExampleEnv:
        root = Path(config.root.replace("{env}", context.env))
        return ExampleEnv(context, root if root.is_absolute() else context.stack_dir / root)
