"""`MemoryProvider`: the built-in in-product fake, as httpx's MockTransport is to httpx.

It serves all six kinds, keeps live objects in a JSON file that people edit
by hand to simulate drift, computes what real providers compute (URIs,
digests, run ids, model versions) and can be made slow (`latency_ms`) or
failing (`fail`) per operation and address.  Tests and benchmarks drive the
engine through it; nothing in it is test-only.

Built on the provider kit: one handler per kind (`datasets`, `clusters`,
`pipelines`, `models`, `endpoints`, `monitors`), sharing `env.MemoryHandler`.
Ids are ``"{stack}/{env}/{address}"``, so a retried or interrupted create
finds and adopts the object it (or an earlier process) made.
"""

from __future__ import annotations

from typing import Any, Mapping

from mlform.providers.base import CostBasis, ProviderContext
from mlform.providers.kit.handlers import HandlerProvider
from mlform.providers.kit.pricing import config_table, table_cost_basis

from .clusters import ClusterHandler
from .config import MemoryConfig
from .datasets import DatasetHandler
from .endpoints import EndpointHandler
from .env import MemoryEnv
from .models import ModelHandler
from .monitors import MonitorHandler
from .pipelines import PipelineHandler

__all__ = ["MemoryProvider"]


class MemoryProvider(HandlerProvider):
    """Live objects in a local JSON store; see the package docstring for the config."""

    name = "memory"
    config_model = MemoryConfig
    HANDLERS = {
        "dataset": DatasetHandler,
        "training_cluster": ClusterHandler,
        "pipeline": PipelineHandler,
        "model": ModelHandler,
        "endpoint": EndpointHandler,
        "monitor": MonitorHandler,
    }

    def make_env(self, context: ProviderContext, config: MemoryConfig) -> MemoryEnv:
        return MemoryEnv.configure(context, config)

    def cost_basis(self, kind: str, attributes: Mapping[str, Any],
                   prior: Mapping[str, Any] | None = None) -> CostBasis | None:
        """Endpoints and pipelines priced from the block's `prices` (none: not priced)."""
        return table_cost_basis(config_table(self.name, self.config.prices), kind,
                                attributes, prior)

    @property
    def store_path(self):
        return self.env.store_path

    def object_id(self, address: str) -> str:
        """The deterministic provider-side id of the object at `address`."""
        return self.env.object_id(address)

    def close(self) -> None:
        super().close()
        self.env.close()
