"""`monitor` on the memory provider: `breached` and `last_report`, as the store says.

A breach is reported by the service (or written into the store by hand): plan keeps
what refresh read.
"""

from __future__ import annotations

from typing import Any, Mapping

from mlform.providers.base import Facts, KindSchema

from .env import Computed, MemoryHandler

__all__ = ["MonitorHandler"]


class MonitorHandler(MemoryHandler):
    kind = "monitor"
    schema = KindSchema(computed=("breached", "last_report"))

    def compute(self, address: str, attrs: Mapping[str, Any], prior: Mapping[str, Any] | None,
                facts: Facts) -> Computed:
        if prior is None:
            return Computed({"breached": False, "last_report": None})
        return Computed({"breached": prior.get("breached", False),
                         "last_report": prior.get("last_report")})
