"""Run fingerprints: what makes the plan ML-aware (DESIGN.md section 2, "Lineage").

A pipeline's identity is its *run fingerprint*: the content digests of its
input datasets, the content of its entrypoint, its hyperparameters, the
cluster fields that change results and, when it has one, its `sweep` (the
search space, objective, direction, trials, seed and pruning: what the search
finds; `parallel` is left out, it changes how fast trials run, not which
trials a finished sweep made worth keeping).  When the fingerprint moves, the plan
re-runs the pipeline and says why (`rerun_reasons`); the models and endpoints
downstream show the update they get, each with its reason.

Pure: the entrypoint's digest is a fact read before planning (`mlform.facts`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from mlform.expr.values import UNKNOWN, contains_unknown

# Cluster fields that change a run's results (a different accelerator or
# world size can change numerics); tags or names do not.
CLUSTER_RESULT_FIELDS = ("accelerator", "gpus_per_node", "nodes", "instance_type")

def _input_identity(value: Any) -> Any:
    """What of an input feeds the fingerprint: a dataset's digest, else the value itself."""
    if isinstance(value, dict) and "digest" in value:
        return {"digest": value["digest"]}
    return value


def fingerprint(attributes: Mapping[str, Any], entrypoint_sha256: Any) -> Any:
    """The run fingerprint of a pipeline, or UNKNOWN when any part is not yet known."""
    inputs = attributes.get("inputs") or {}
    cluster = attributes.get("cluster")
    cluster_part = ({k: cluster.get(k) for k in CLUSTER_RESULT_FIELDS}
                    if isinstance(cluster, dict) else cluster)
    doc = {
        "inputs": {k: _input_identity(v) for k, v in inputs.items()} if isinstance(inputs, dict) else inputs,
        "entrypoint": entrypoint_sha256,
        "hyperparameters": attributes.get("hyperparameters") or {},
        "cluster": cluster_part,
    }
    processes = _processes(attributes)
    if processes is not None:
        # how many processes train it changes the result (batches per step, the seed
        # each rank draws); only when set, so every other fingerprint stays as it was
        doc["processes_per_node"] = processes
    sweep = sweep_identity(attributes.get("sweep"))
    if sweep is not None:
        doc["sweep"] = sweep   # only when set: a pipeline without one keeps its fingerprint
    if contains_unknown(doc):
        return UNKNOWN
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


#: the sweep fields that change what a sweep finds (all but `parallel`)
SWEEP_RESULT_FIELDS = ("objective", "direction", "trials", "seed", "pruning", "parameters")


def sweep_identity(sweep: Any) -> Any:
    """What of a `sweep` feeds the fingerprint, or None when there is none; defaults are
    filled in, so writing `pruning = "none"` or leaving it out is the same sweep."""
    if sweep is None or not isinstance(sweep, Mapping):
        return sweep
    doc = {k: sweep.get(k) for k in SWEEP_RESULT_FIELDS}
    doc["pruning"] = doc["pruning"] or "none"
    params = doc["parameters"]
    if isinstance(params, Mapping):
        doc["parameters"] = {name: ({"log": False, **p} if isinstance(p, Mapping)
                                    and p.get("type") in ("float", "int") else p)
                             for name, p in params.items()}
    return doc


def _sweep_changes(old: Any, new: Any) -> str | None:
    """How the sweep moved, in words, or None when it did not."""
    before, after = sweep_identity(old), sweep_identity(new)
    if before == after:
        return None
    if before is None:
        return "sweep added"
    if after is None:
        return "sweep removed"
    if not isinstance(before, dict) or not isinstance(after, dict):
        return "sweep changed"
    moved = []
    for key in SWEEP_RESULT_FIELDS:
        if key == "parameters" or before.get(key) == after.get(key):
            continue
        moved.append(f"{key} {json.dumps(before.get(key))} → {json.dumps(after.get(key), default=str)}")
    old_p, new_p = before.get("parameters"), after.get("parameters")
    if old_p != new_p and isinstance(old_p, Mapping) and isinstance(new_p, Mapping):
        for name in sorted(old_p.keys() | new_p.keys()):
            if name not in old_p:
                moved.append(f"parameter {name} added")
            elif name not in new_p:
                moved.append(f"parameter {name} removed")
            elif old_p[name] != new_p[name]:
                moved.append(f"parameter {name} changed")
    elif old_p != new_p:
        moved.append("parameters changed")
    return "sweep changed: " + ", ".join(moved)


def _processes(attributes: Mapping[str, Any]) -> Any:
    """`settings.processes_per_node` when it asks for more than one process, else None."""
    settings = attributes.get("settings")
    value = settings.get("processes_per_node") if isinstance(settings, Mapping) else None
    return None if value in (None, 1) else value


def _short(digest: Any) -> str:
    return f"{digest[:8]}…" if isinstance(digest, str) else "(known after apply)"


def rerun_reasons(prior: Mapping[str, Any], planned: Mapping[str, Any]) -> list[str]:
    """Why a pipeline's fingerprint moved, in words (display only)."""
    reasons: list[str] = []
    old_inputs = prior.get("inputs") or {}
    new_inputs = planned.get("inputs") or {}
    if isinstance(old_inputs, dict) and isinstance(new_inputs, dict):
        for key in sorted(new_inputs.keys() | old_inputs.keys()):
            old, new = old_inputs.get(key), new_inputs.get(key)
            if old == new:
                continue
            name = (new or old).get("address", key) if isinstance(new or old, dict) else key
            if isinstance(old, dict) and isinstance(new, dict) and old.get("digest") != new.get("digest"):
                reasons.append(f"{name} content changed (sha256 {_short(old.get('digest'))} → "
                               f"{_short(new.get('digest'))})")
            elif old is None:
                reasons.append(f"input {key} added ({name})")
            elif new is None:
                reasons.append(f"input {key} removed")
            elif _input_identity(old) != _input_identity(new):
                reasons.append(f"input {key} changed")
    if prior.get("entrypoint_sha256") != planned.get("entrypoint_sha256"):
        reasons.append(f"entrypoint {planned.get('entrypoint')} changed "
                       f"(sha256 {_short(prior.get('entrypoint_sha256'))} → "
                       f"{_short(planned.get('entrypoint_sha256'))})")
    old_hp, new_hp = prior.get("hyperparameters") or {}, planned.get("hyperparameters") or {}
    if old_hp != new_hp and isinstance(old_hp, dict) and isinstance(new_hp, dict):
        moved = [f"{k} {json.dumps(old_hp.get(k))} → {json.dumps(new_hp.get(k), default=str)}"
                 for k in sorted(old_hp.keys() | new_hp.keys()) if old_hp.get(k) != new_hp.get(k)]
        reasons.append("hyperparameters changed: " + ", ".join(moved))
    sweep = _sweep_changes(prior.get("sweep"), planned.get("sweep"))
    if sweep is not None:
        reasons.append(sweep)
    if _processes(prior) != _processes(planned):
        reasons.append(f"processes_per_node {_processes(prior) or 1} → {_processes(planned) or 1}")
    old_c, new_c = prior.get("cluster"), planned.get("cluster")
    if isinstance(old_c, dict) and isinstance(new_c, dict):
        if any(old_c.get(k) != new_c.get(k) for k in CLUSTER_RESULT_FIELDS):
            reasons.append(f"cluster {new_c.get('address', '')} changed".replace("  ", " "))
    elif old_c != new_c:
        reasons.append("cluster changed")
    return reasons


__all__ = ["fingerprint", "rerun_reasons", "sweep_identity", "CLUSTER_RESULT_FIELDS",
           "SWEEP_RESULT_FIELDS"]
