"""`endpoint` on the memory provider: `url`, and the `model_version` it serves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlform.providers.base import UNKNOWN, Facts, KindSchema
from mlform.providers.kit.variants import endpoint_variants

from .env import Computed, MemoryHandler

__all__ = ["EndpointHandler"]


class EndpointHandler(MemoryHandler):
    kind = "endpoint"
    schema = KindSchema(replace_paths=("settings.region",), computed=("url", "model_version"))

    def compute(self, address: str, attrs: Mapping[str, Any], prior: Mapping[str, Any] | None,
                facts: Facts) -> Computed:
        # the model of the heaviest live variant (the endpoint's one `model` without variants)
        live = [v for v in endpoint_variants(attrs) if v["role"] == "live"]
        model = max(reversed(live), key=lambda v: v["weight"])["model"] if live else None
        if model is UNKNOWN:
            version: Any = UNKNOWN
        elif isinstance(model, Mapping) and "version" in model:
            version = model["version"]
        else:
            version = None
        return Computed({"url": self.env.uri("endpoint", address), "model_version": version})
