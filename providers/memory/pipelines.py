"""`pipeline` on the memory provider: a "run" per fingerprint, gated on its metrics.

Re-runs follow the kit's rule (`kit.reruns`): a changed fingerprint, a `stale` reason
written into the store (what a monitor would do), or a run that never completed.  A
run's metrics are `settings.metrics` (default ``{accuracy = 1.0}``), judged by the
`gate` before anything is counted or stored, so a failed gate makes nothing.  The first
run of a fingerprint has the id ``run-`` + sha256(address + fingerprint)[:12]; a re-run
of the same fingerprint (a stale pipeline) counts on, so it is a new run.

A gate with ``must_beat`` also compares the run with the champion (`models.champions`:
the stored model in that stage, with the lineage recorded for its version), in the
kit's words; plan reads the champions as a fact and names the number to beat.

A pipeline with a `sweep` is planned like on any provider (`kit.sweeps.plan_sweep`:
`best_parameters` unknown until it runs, the sweep among the reasons); its "run" makes
no trials: `best_parameters` is the kit's deterministic placeholder (each range's
min, each categorical's first value), so stacks with sweeps plan and apply here.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from functools import partial
from typing import Any, Callable, Mapping

from mlform.providers.base import (
    UNKNOWN, Desired, Diagnostic, FactKey, Facts, KindSchema, LiveObject, Planned,
    ProviderError, contains_unknown,
)
from mlform.providers.kit.champions import (
    champion_key, gate_diagnostics, judge_challenger, with_champion_reason,
)
from mlform.providers.kit.gate import check_gate
from mlform.providers.kit.reruns import RUN_OUTPUTS, plan_run
from mlform.providers.kit.run_records import SUCCEEDED, run_record
from mlform.providers.kit.sweeps import BEST_PARAMETERS, placeholder_parameters, plan_sweep, sweep_of

from .env import MemoryHandler
from .models import champions
from .trees import to_plain

__all__ = ["PipelineHandler"]


class PipelineHandler(MemoryHandler):
    kind = "pipeline"
    schema = KindSchema(computed=(*RUN_OUTPUTS, "stale"))   # and best_parameters with a sweep

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> list[FactKey]:
        key = champion_key(desired)
        return [key] if key is not None else []

    def read_facts(self, keys) -> dict[FactKey, Any]:
        return {key: champions(self.env, *key.args) for key in keys}

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        found = super().validate(desired, facts)
        return found + gate_diagnostics(desired, facts, found)

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        self.env.failures.raise_for("plan", desired.address)
        planned = plan_sweep(plan_run(desired, prior), prior)
        return with_champion_reason(planned, desired, facts,
                                    runs=planned.attributes.get("run_id") is UNKNOWN)

    def realize(self, address: str, attrs: Mapping[str, Any], existing: Mapping[str, Any] | None,
                next_counter: Callable[[str, int], int], id: str) -> dict[str, Any]:
        if attrs.get("run_id") is not UNKNOWN:
            return {}  # plan kept the previous run: nothing to run
        settings = attrs.get("settings")
        metrics = settings.get("metrics") if isinstance(settings, Mapping) else None
        if not isinstance(metrics, Mapping) or contains_unknown(metrics):
            metrics = {"accuracy": 1.0}
        metrics = to_plain(metrics)
        gate = attrs.get("gate")
        missed = check_gate(gate, metrics)   # before anything is counted or stored
        if missed is None:
            missed, _ = judge_challenger(gate, metrics, partial(champions, self.env, address))
        if missed is not None:
            raise ProviderError(missed, address=address)
        fingerprint = attrs.get("fingerprint")
        fingerprint = ("" if fingerprint is None or contains_unknown(fingerprint) else
                       fingerprint if isinstance(fingerprint, str) else
                       json.dumps(to_plain(fingerprint), sort_keys=True))
        number = next_counter(f"{id}#run:{fingerprint}", 0)
        seed = address + fingerprint + ("" if number == 1 else f"#{number}")
        run_id = "run-" + hashlib.sha256(seed.encode()).hexdigest()[:12]
        spec = sweep_of(attrs)
        best = {BEST_PARAMETERS: placeholder_parameters(spec)} if spec is not None else {}
        return {"run_id": run_id, "model_uri": self.env.uri("artifacts", address, run_id),
                "metrics": metrics, "stale": None, **best}

    def kept(self, address: str, attrs: Mapping[str, Any], existing: Mapping[str, Any] | None
             ) -> dict[str, Any]:
        """The records of the runs this pipeline object made (a "run" is instantaneous
        here: it succeeds or, missing its gate, leaves nothing, as `realize` says)."""
        runs = list((existing or {}).get("runs") or [])
        run_id = attrs.get("run_id")
        if isinstance(run_id, str) and all(r.get("run_id") != run_id for r in runs):
            now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
            runs.append(run_record(provider=self.env.context.name, address=address, attrs=attrs,
                                   run_id=run_id, status=SUCCEEDED, started=now, finished=now,
                                   metrics=attrs.get("metrics") or {},
                                   model_uri=attrs.get("model_uri"),
                                   artifacts={"model": str(attrs.get("model_uri"))}))
        return {"runs": runs}

    def run_records(self, pipeline: str | None) -> list[dict]:
        store = self.env.store()
        return [run for id in sorted(store.ids())
                for obj in [store.get(id) or {}]
                if obj.get("kind") == "pipeline" and pipeline in (None, obj.get("address"))
                for run in obj.get("runs") or []]
