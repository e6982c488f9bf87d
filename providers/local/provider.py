"""`LocalProvider`: the whole ML chain on this machine, for real.

Datasets are copied into a content-addressed store, GPUs are found with
NVML, pipelines run their entrypoint as a subprocess, models go into a
local registry, endpoints are detached HTTP servers and monitors compute
drift on captured requests.  Each kind is one handler module; this class
only configures them and dispatches.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from mlform.diagnostics import Diagnostic
from mlform.providers.base import (
    Desired, LiveObject, Planned, Provider, ProviderContext, ProviderError,
)

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


class LocalProvider(Provider):
    name = "local"
    kinds = {kind: handler.schema for kind, handler in HANDLERS.items()}
    config_model = LocalConfig

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        settings = {k: v for k, v in dict(context.config).items() if k != "alias"}
        try:
            config = LocalConfig.model_validate(settings)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}"
                                 for e in exc.errors())
            raise ProviderError(f'invalid provider "local" configuration: {problems}') from exc
        root = Path(config.root.replace("{env}", context.env))
        if not root.is_absolute():
            root = Path(context.stack_dir) / root
        self.env = LocalEnv(context=context, root=root, host=config.host,
                            python=config.python or default_python(),
                            ready_timeout=config.ready_timeout_seconds)
        self._handlers = {kind: cls(self.env) for kind, cls in HANDLERS.items()}

    def _handler(self, kind: str, address: str) -> KindHandler:
        handler = self._handlers.get(kind)
        if handler is None:
            raise ProviderError(f"the local provider does not serve {kind!r} resources", address=address)
        return handler

    def validate(self, desired: Desired) -> list[Diagnostic]:
        return self._handler(desired.kind, desired.address).validate(desired)

    def plan(self, desired: Desired, prior: LiveObject | None) -> Planned:
        return self._handler(desired.kind, desired.address).plan(desired, prior)

    def create(self, planned: Planned) -> LiveObject:
        return self._handler(planned.kind, planned.address).create(planned)

    def read(self, prior: LiveObject) -> LiveObject | None:
        return self._handler(prior.kind, prior.address).read(prior)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        return self._handler(planned.kind, planned.address).update(prior, planned)

    def delete(self, prior: LiveObject) -> None:
        self._handler(prior.kind, prior.address).delete(prior)

    def action(self, live: LiveObject, name: str, args: dict | None = None) -> dict:
        try:
            return self._handler(live.kind, live.address).action(live, name, args or {})
        except NotImplementedError:
            raise ProviderError(f"{live.kind} resources have no action {name!r}", address=live.address)

    def close(self) -> None:
        for handler in self._handlers.values():
            handler.close()
