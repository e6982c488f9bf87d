"""`model` on the memory provider: a version per artifact (a counter per address).

The stored object keeps, besides the attributes, ``registry``: version -> the lineage
of the pipeline run its artifact came from (`kit.champions.run_lineage`, built from the
pipeline object whose `model_uri` is the artifact), so a champion/challenger gate reads
the metrics the stage's version had (`champions`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from mlform.providers.base import UNKNOWN, Facts, KindSchema, contains_unknown
from mlform.providers.kit.champions import champion, run_lineage

from .env import Computed, MemoryEnv, MemoryHandler

__all__ = ["ModelHandler", "champions"]


def _lineage_of(env: MemoryEnv, artifact: Any) -> dict | None:
    """The lineage of the pipeline run whose `model_uri` is `artifact`, if one is stored."""
    store = env.store()
    for id in store.ids():
        obj = store.get(id) or {}
        attrs = obj.get("attributes") or {}
        if obj.get("kind") == "pipeline" and attrs.get("model_uri") == artifact:
            return run_lineage(obj.get("address", ""), attrs, attrs.get("run_id"),
                               attrs.get("metrics") or {})
    return None


def champions(env: MemoryEnv, pipeline: str, stage: str, model: str | None) -> list[dict]:
    """The versions in `stage` a run of `pipeline` must beat: of the model `model`, else of
    every model holding a version registered from `pipeline`."""
    store = env.store()
    out = []
    for id in sorted(store.ids()):
        obj = store.get(id) or {}
        if obj.get("kind") != "model":
            continue
        registry = obj.get("registry") or {}
        if model is not None:
            if obj.get("address") != model:
                continue
        elif not any((r or {}).get("pipeline") == pipeline for r in registry.values()):
            continue
        attrs = obj.get("attributes") or {}
        if attrs.get("stage") == stage and attrs.get("version") is not None:
            out.append(champion(obj["address"], attrs["version"],
                                registry.get(str(attrs["version"]))))
    return out


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

    def kept(self, address: str, attrs: Mapping[str, Any], existing: Mapping[str, Any] | None
             ) -> dict[str, Any]:
        registry = dict((existing or {}).get("registry") or {})
        version = attrs.get("version")
        if version is not None and str(version) not in registry:
            registry[str(version)] = _lineage_of(self.env, attrs.get("artifact"))
        return {"registry": registry}

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
