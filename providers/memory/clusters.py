"""`training_cluster` on the memory provider: `gpus_total` = gpus_per_node × nodes."""

from __future__ import annotations

from typing import Any, Mapping

from mlform.providers.base import UNKNOWN, Facts, KindSchema

from .env import Computed, MemoryHandler

__all__ = ["ClusterHandler"]


class ClusterHandler(MemoryHandler):
    kind = "training_cluster"
    schema = KindSchema(replace_paths=("accelerator",), computed=("gpus_total",))

    def compute(self, address: str, attrs: Mapping[str, Any], prior: Mapping[str, Any] | None,
                facts: Facts) -> Computed:
        per_node, nodes = attrs.get("gpus_per_node"), attrs.get("nodes")
        if per_node is UNKNOWN or nodes is UNKNOWN:
            return Computed({"gpus_total": UNKNOWN})
        per_node = per_node if isinstance(per_node, (int, float)) else 0
        nodes = nodes if isinstance(nodes, (int, float)) else 1
        return Computed({"gpus_total": per_node * nodes})
