"""`pipeline` on the example provider: a recorded "run" per fingerprint.

The engine computes the fingerprint; the kit says when a run stands (`plan_run`) and
judges it (`check_gate`).  A run here trains nothing: it "reaches" the metrics in
`settings.metrics`, which makes the gate easy to try.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mlform.providers.base import (
    UNKNOWN, Desired, Facts, KindSchema, LiveObject, Planned, ProviderError,
)
from mlform.providers.kit.gate import check_gate
from mlform.providers.kit.names import short_hash
from mlform.providers.kit.reruns import RUN_OUTPUTS, plan_run, run_fingerprint

from .env import ExampleHandler, plain


class PipelineSettings(BaseModel):
    """`settings { }` of an example pipeline (the engine checks it against this model)."""

    model_config = ConfigDict(extra="forbid")

    metrics: dict[str, float] = Field(default_factory=lambda: {"accuracy": 1.0},
                                      description="The metrics a run reaches.")


class PipelineHandler(ExampleHandler):
    schema = KindSchema(settings_model=PipelineSettings, computed=(*RUN_OUTPUTS, "stale"))

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        return plan_run(desired, prior)

    def create(self, planned: Planned) -> LiveObject:
        attrs = dict(planned.attributes)
        if attrs.get("run_id") is UNKNOWN:
            fingerprint = run_fingerprint(planned)
            metrics: dict[str, Any] = PipelineSettings.model_validate(
                attrs.get("settings") or {}).metrics
            missed = check_gate(attrs.get("gate"), metrics)
            if missed is not None:       # publish nothing: the old run (if any) stays
                raise ProviderError(missed, address=planned.address)
            run_id = "run-" + short_hash(planned.address, fingerprint, length=12)
            attrs.update(run_id=run_id, metrics=metrics, stale=None,
                         model_uri=f"example://{self.env.context.stack}/{run_id}")
        return self.save(planned.address, planned.kind, plain(attrs))
