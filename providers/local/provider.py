"""`LocalProvider`: the whole ML chain on this machine, for real.

Datasets are copied into a content-addressed store, GPUs are found with
NVML, pipelines run their entrypoint as a subprocess, models go into a
local registry, endpoints are detached HTTP servers and monitors compute
drift on captured requests.  Each kind is one handler module; this class
only configures them (dispatch is `HandlerProvider`'s).
"""

from __future__ import annotations

from pathlib import Path

from mlform.providers.base import ProviderContext
from mlform.providers.dispatch import HandlerProvider

from .cluster import ClusterHandler
from .common import KindHandler, LocalEnv, default_python
from .config import LocalConfig
from .datasets import DatasetHandler
from .endpoints import EndpointHandler
from .monitors import MonitorHandler
from .registry import ModelHandler
from .runs import PipelineHandler

__all__ = ["LocalProvider"]

HANDLERS: dict[str, type[KindHandler]] = {
    "dataset": DatasetHandler,
    "training_cluster": ClusterHandler,
    "pipeline": PipelineHandler,
    "model": ModelHandler,
    "endpoint": EndpointHandler,
    "monitor": MonitorHandler,
}


class LocalProvider(HandlerProvider):
    name = "local"
    HANDLERS = HANDLERS
    kinds = {kind: handler.schema for kind, handler in HANDLERS.items()}
    config_model = LocalConfig

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        config = self.parse_config(LocalConfig)
        root = Path(config.root.replace("{env}", context.env))
        if not root.is_absolute():
            root = Path(context.stack_dir) / root
        self.env = LocalEnv(context=context, root=root, host=config.host,
                            python=config.python or default_python(),
                            ready_timeout=config.ready_timeout_seconds)
        self.start_handlers(self.env)
