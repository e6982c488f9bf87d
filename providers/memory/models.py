"""`model` on the memory provider: a version per artifact (a counter per address)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from mlform.providers.base import UNKNOWN, Facts, KindSchema, contains_unknown

from .env import Computed, MemoryHandler

__all__ = ["ModelHandler"]


class ModelHandler(MemoryHandler):
    kind = "model"
    schema = KindSchema(replace_paths=("framework",), computed=("version", "uri"))

    def compute(self, address: str, attrs: Mapping[str, Any], prior: Mapping[str, Any] | None,
                facts: Facts) -> Computed:
        artifact = attrs.get("artifact")
        if (prior is None or contains_unknown(artifact) or prior.get("artifact") != artifact
                or prior.get("version") is None):
            return Computed({"version": UNKNOWN, "uri": UNKNOWN})
        return Computed({"version": prior.get("version"), "uri": prior.get("uri")})

    def realize(self, address: str, attrs: Mapping[str, Any], existing: Mapping[str, Any] | None,
                next_counter: Callable[[str, int], int], id: str) -> dict[str, Any]:
        computed: dict[str, Any] = {}
        version = attrs.get("version")
        if version is UNKNOWN:
            # never below what a hand-written store already shows for this object
            seen = (existing or {}).get("version")
            version = next_counter(f"{id}#version", seen if isinstance(seen, int) else 0)
            computed["version"] = version
        if attrs.get("uri") is UNKNOWN:
            computed["uri"] = self.env.uri("model", address, f"v{version}")
        return computed
