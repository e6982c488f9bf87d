"""`LocalProvider`: the whole ML chain on this machine, for real.

Datasets are copied into a content-addressed store, GPUs are found with
NVML, pipelines run their entrypoint as a subprocess, models go into a
local registry, endpoints are detached HTTP servers and monitors compute
drift on captured requests.  Built on the provider kit: each kind is one
handler module; this class only says which, and builds their `LocalEnv`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from mlform.providers.base import CostBasis, ProviderContext
from mlform.providers.kit.handlers import HandlerProvider
from mlform.providers.kit.pricing import config_table, table_cost_basis

from .clusters import ClusterHandler
from .config import LocalConfig
from .datasets import DatasetHandler
from .endpoints import EndpointHandler
from .env import LocalEnv, default_python
from .models import ModelHandler
from .monitors import MonitorHandler
from .pipelines import PipelineHandler

__all__ = ["LocalProvider"]


class LocalProvider(HandlerProvider):
    name = "local"
    config_model = LocalConfig
    HANDLERS = {
        "dataset": DatasetHandler,
        "training_cluster": ClusterHandler,
        "pipeline": PipelineHandler,
        "model": ModelHandler,
        "endpoint": EndpointHandler,
        "monitor": MonitorHandler,
    }

    def cost_basis(self, kind: str, attributes: Mapping[str, Any],
                   prior: Mapping[str, Any] | None = None) -> CostBasis | None:
        """Endpoints and pipelines priced from the block's `prices` (none: not priced)."""
        return table_cost_basis(config_table(self.name, self.config.prices), kind,
                                attributes, prior)

    def make_env(self, context: ProviderContext, config: LocalConfig) -> LocalEnv:
        root = Path(config.root.replace("{env}", context.env))
        if not root.is_absolute():
            root = Path(context.stack_dir) / root
        return LocalEnv(context=context, root=root, host=config.host,
                        python=config.python or default_python(),
                        ready_timeout=config.ready_timeout_seconds)
