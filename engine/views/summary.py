"""The result of an apply as the renderers need it (plain data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ApplySummary:
    """What `render_apply_summary` shows.

    `failed` holds the root causes only, as (address, message); failures
    caused by an upstream failure are left out by whoever builds this.
    `outputs` maps an output name to (value, sensitive).
    """

    added: int = 0
    changed: int = 0
    destroyed: int = 0
    mode: str = "normal"        # the plan's: "destroy" says "Destroy complete!"
    failed: list[tuple] = field(default_factory=list)   # (address, message[, at, hint])
    outputs: dict[str, tuple[Any, bool]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed
