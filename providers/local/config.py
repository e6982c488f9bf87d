"""Configuration of the `local` provider block."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mlform.providers.kit.pricing import Prices


class LocalConfig(BaseModel):
    """`provider "local" { ... }`."""

    model_config = ConfigDict(extra="forbid")

    root: str = Field(".mlform/local/{env}",
                      description="Where datasets, runs, the model registry, endpoint and monitor "
                                  "files live; relative to the stack; {env} is substituted.")
    host: str = Field("127.0.0.1", description="Address endpoints bind to.")
    python: str | None = Field(None, description="Interpreter for entrypoints and servers "
                                                 "(default: the one running mlform).")
    ready_timeout_seconds: float = Field(60.0, gt=0,
                                         description="How long to wait for a server to be ready.")
    prices: Prices = None
