"""When a pipeline must run again, and stale markers: one rule, one wording, one type.

A pipeline run stands while its fingerprint (inputs' digests, entrypoint,
hyperparameters, cluster) is unchanged; the engine computes it and, when it moves,
says what moved.  On top of that, a run must be redone when a monitor marked it
*stale* (its `stale` attribute is the reason, a string, or None) or when it never
completed (no `model_uri`).  `rerun_reason` is that rule; `plan_run` the plan of a
pipeline under it: the prior run's outputs kept, or unknown until the new run.

A stale marker is a small JSON document a monitor writes when it breaches with
``on_breach = "retrain"`` (`mlform.providers.kit.monitoring.stale_marker`); where it
is kept is the provider's business (a file, an S3 object).  `StaleMarker.marks`
decides whether it still applies to a run: it names the run, or (when the monitor
could not know the run) the fingerprint it judged, written after the run began.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping

from mlform.providers.base import Desired, LiveObject, Planned, ProviderError, contains_unknown

from .plans import plan_of, unknowns

__all__ = ["RUN_OUTPUTS", "rerun_reason", "plan_run", "run_fingerprint", "fingerprint_hex",
           "StaleMarker"]

#: What a run produces, on every provider (some add their own, e.g. a job's ARN).
RUN_OUTPUTS = ("run_id", "model_uri", "metrics")


def rerun_reason(attrs: Mapping[str, Any], prior: LiveObject | None) -> str | None:
    """None when the prior run stands; else why it must run again ("" when the engine
    already says why: there is no prior run, or the fingerprint moved)."""
    if prior is None or contains_unknown(attrs.get("fingerprint")):
        return ""
    before = prior.attributes
    stale = before.get("stale")
    if stale:
        return str(stale)       # the marker's reason names the monitor and its finding
    if before.get("fingerprint") != attrs.get("fingerprint") or not before.get("run_id"):
        return ""
    if not before.get("model_uri"):
        return f"its run {before['run_id']} did not complete"
    return None


def plan_run(desired: Desired, prior: LiveObject | None, *,
             outputs: Iterable[str] = RUN_OUTPUTS, known: Mapping[str, Any] | None = None
             ) -> Planned:
    """The plan of a pipeline: the prior run's outputs when it stands, else the outputs
    unknown (but for `known` ones the provider can tell already, e.g. a job's name),
    with the re-run reason.  `stale` is always planned None: a run is never stale."""
    outputs = tuple(outputs)
    reason = rerun_reason(desired.attributes, prior)
    if reason is None:
        kept = {key: prior.attributes.get(key) for key in outputs}
        return plan_of(desired, {**kept, "stale": None})
    return plan_of(desired, {**unknowns(outputs), **(known or {}), "stale": None},
                   reasons=(reason,))


def run_fingerprint(planned: Planned) -> str:
    """The fingerprint a run is made for (what names and finds it); a ProviderError when
    apply reaches a pipeline whose fingerprint is still unknown (a plan made wrong)."""
    fingerprint = planned.attributes.get("fingerprint")
    if contains_unknown(fingerprint) or not fingerprint:
        raise ProviderError(f"{planned.address}: the run fingerprint is not known; "
                            "run plan again", address=planned.address)
    return str(fingerprint)


def fingerprint_hex(fingerprint: str) -> str:
    """The fingerprint's hex digits (``sha256:ABcd…`` -> ``abcd…``), for names and labels
    of the runs made for it."""
    return re.sub(r"[^a-z0-9]", "", fingerprint.split(":", 1)[-1].lower())


@dataclass(frozen=True)
class StaleMarker:
    """A monitor's request to re-run a pipeline (the document `stale_marker` writes)."""

    reason: str
    run_id: str | None = None
    fingerprint: str | None = None
    written: datetime | None = None       # when the store says it was written, if known

    @classmethod
    def from_json(cls, doc: Any, written: datetime | None = None) -> "StaleMarker | None":
        if not isinstance(doc, Mapping):
            return None
        return cls(str(doc.get("reason") or "marked stale by a monitor"),
                   doc.get("run_id") or None, doc.get("fingerprint") or None, written)

    def marks(self, run_id: str, fingerprint: Any = None,
              started: datetime | None = None) -> bool:
        """Does this marker make the run `run_id` stale?"""
        if self.run_id:
            return self.run_id == run_id
        if not self.fingerprint or self.fingerprint != fingerprint:
            return False
        # Without a run id: a run started after the marker was written is the re-run.
        # Stores keep whole seconds: a run started in the marker's second counts as
        # before it (at worst one extra re-run, never a retrain request ignored).
        if started is None or self.written is None:
            return True
        return started.replace(microsecond=0) <= self.written


