"""What a registry records about a version so a champion/challenger gate is honest, and
the checks of a gate's `must_beat` part (`kit.gate` compares; this module describes).

A version registered from a pipeline's run carries that run's *lineage*
(`run_lineage`): the pipeline's address, the run id, the run's metrics, the digests of
its inputs (`data_digests`: a dataset's content digest, else the input's URI) and of its
code (`code_digest`: the entrypoint's sha256), and the run fingerprint.  Each provider
keeps it where its registry keeps a version's facts (local: the version's meta.json;
sagemaker: the package's CustomerMetadataProperties; kubernetes: the version's
immutable ConfigMap; memory: the model's store object), and hands champions back as
`champion(...)` dicts, the shape `kit.gate.check_challenger` reads.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from dataclasses import replace

from mlform.providers.base import (
    Desired, Diagnostic, FactKey, Planned, contains_unknown, error, warning,
)

from .gate import challenge, champion_note, champion_reason, check_challenger

__all__ = ["champion_key", "gate_diagnostics", "judge_challenger", "with_champion_reason", "run_lineage", "champion", "MODEL_ADDRESS", "challenge_problems",
           "no_champion_warning", "LINEAGE_KEYS"]

#: a model's address as `gate.model` names it (optionally inside a module, or indexed)
MODEL_ADDRESS = re.compile(
    r'(module\.[A-Za-z_][A-Za-z0-9_-]*\.)*model\.[A-Za-z_][A-Za-z0-9_-]*'
    r'(\[(?:"(?:[^"\\]|\\.)*"|\d+)\])?')

LINEAGE_KEYS = ("pipeline", "run_id", "metrics", "data_digests", "code_digest", "fingerprint")


def _input_identity(value: Any) -> Any:
    """A dataset input's content digest, else what the input points at."""
    if isinstance(value, Mapping):
        for key in ("digest", "uri", "model_uri", "address"):
            if isinstance(value.get(key), str):
                return value[key]
        return None
    return value if isinstance(value, str) else None


def champion_key(desired: Desired) -> FactKey | None:
    """The fact a pipeline whose gate has `must_beat` reads before planning: the
    champions of that stage (each provider's `champions(...)` answers it); None otherwise."""
    gate = desired.attributes.get("gate")
    wanted = None if contains_unknown(gate) else challenge(gate)
    if wanted is None:
        return None
    return FactKey("pipeline", "champions", (desired.address, wanted["must_beat"], wanted["model"]))


def run_lineage(address: str, attrs: Mapping[str, Any], run_id: str,
                metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The lineage a pipeline's run leaves for the registry (plain JSON)."""
    inputs = attrs.get("inputs") if isinstance(attrs.get("inputs"), Mapping) else {}
    code = attrs.get("entrypoint_sha256")
    fingerprint = attrs.get("fingerprint")
    return {"pipeline": address, "run_id": run_id,
            "metrics": {str(k): v for k, v in metrics.items()},
            "data_digests": {str(k): _input_identity(v) for k, v in sorted(inputs.items())
                             if not contains_unknown(v)},
            "code_digest": code if isinstance(code, str) else None,
            "fingerprint": fingerprint if isinstance(fingerprint, str) else None}


def champion(model: str, version: Any, lineage: Mapping[str, Any] | None) -> dict[str, Any]:
    """A champion as `check_challenger` reads it: the registry's version and its record."""
    lineage = lineage or {}
    return {"model": model, "version": version,
            "metrics": dict(lineage.get("metrics") or {}),
            **{key: lineage.get(key) for key in LINEAGE_KEYS if key != "metrics"}}


def challenge_problems(address: str, gate: Any) -> list[Diagnostic]:
    """Errors in a gate's champion/challenger part that the spec's types let through."""
    if not isinstance(gate, Mapping):
        return []
    model = gate.get("model")
    if model is None or contains_unknown(model):
        return []
    if not isinstance(model, str) or not MODEL_ADDRESS.fullmatch(model):
        return [error(f"{address}: gate.model {model!r} is not a model address",
                      detail="gate.model names the registry whose champion the run must "
                             "beat, as a model resource's address.",
                      address=address, hint='Write it as a string: model = "model.fraud".')]
    if not isinstance(gate.get("must_beat"), str):
        return [error(f"{address}: gate.model is set but gate.must_beat is not",
                      address=address,
                      hint='Name the stage to beat, e.g. must_beat = "production".')]
    return []


def no_champion_warning(address: str, gate: Any, champions: Any) -> list[Diagnostic]:
    """A warning when no registry has a version in the stage to beat (a first run, or a
    stage no model uses): the run then passes without a comparison."""
    wanted = challenge(gate)
    if wanted is None or champions is None or champions:
        return []
    where = wanted["model"] or f"the models registered from {address}"
    return [warning(
        f"{address}: no version of {where} is in stage {wanted['must_beat']!r}",
        detail="gate.must_beat has no champion to compare with: the next run passes on its "
               "own metrics (a first run), and later runs must beat it once a model "
               f"sets stage = {wanted['must_beat']!r}.",
        address=address,
        hint="Check the stage's name against the `stage` of your model resources.")]


def gate_diagnostics(desired: Desired, facts: Any, earlier: list) -> list[Diagnostic]:
    """A pipeline's gate at validate, the same on every provider: its champion/challenger
    errors, and the no-champion warning only when nothing else (`earlier`, this gate's
    own) is wrong, so a first run's warning never buries a real error."""
    gate = desired.attributes.get("gate")
    found = challenge_problems(desired.address, gate)
    key = champion_key(desired)
    if key is not None and not earlier and not found:
        found += no_champion_warning(desired.address, gate, facts.get(key))
    return found


def judge_challenger(gate: Any, metrics: Mapping[str, Any],
                     champions_of: Callable[[str, str | None], list],
                     run_id: str | None = None) -> tuple[str | None, str | None]:
    """(why a run that passed its bounds does not beat the champion, or None; the note for
    its record), asking `champions_of(stage, model)` only when the gate has `must_beat`."""
    wanted = challenge(gate)
    if wanted is None:
        return None, None
    found = champions_of(wanted["must_beat"], wanted["model"])
    return (check_challenger(gate, metrics, found, run_id=run_id),
            champion_note(gate, metrics, found, run_id=run_id))


def with_champion_reason(planned: Planned, desired: Desired, facts: Any, runs: bool) -> Planned:
    """`planned`, with the bar a new run must clear among its reasons when one will be
    made (`runs`) and its gate has `must_beat` (the champions read as a fact)."""
    key = champion_key(desired)
    if not runs or key is None or key not in facts:
        return planned
    reason = champion_reason(desired.attributes.get("gate"), facts[key])
    return replace(planned, reasons=(*planned.reasons, reason)) if reason else planned
