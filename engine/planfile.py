"""Saved plan files (`plan --out FILE`, `apply FILE`).

The file is the JSON plan document plus what apply needs: variable values,
the config digest and the state lineage/serial the plan was made against.
Sensitive variable values are not stored, only their keyed hashes: apply
asks for them again (`--var`, `--var-file`, `MLFORM_VAR_*`) and checks they
match, so the file is safe to upload as a CI artifact.  Likewise the planned
value at each sensitive path of a change is kept only as the keyed hash the
state would hold (`sensitive_hashes`), so apply can still check that what it
re-evaluates is what was planned.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace as dc_replace
from pathlib import Path

from mlform.config.inputs import VariableValues, resolve_root_variables
from mlform.diagnostics import DiagnosticError, error
from mlform.expr import Sensitive
from mlform.expr.values import get_path, set_path
from mlform.plan.model import Plan
from mlform.state.model import State
from mlform.state.sensitive import hash_value, is_marker
from mlform.plan.codec import plan_from_json, plan_to_json

FORMAT = "mlform-plan"
VERSION = 1


def save(plan: Plan, path: Path, stack_dir: Path, hold: str | None = None) -> None:
    doc = plan_to_json(plan, include_internal=True)
    doc["plan_file"] = {"format": FORMAT, "version": VERSION, "stack_dir": str(stack_dir)}
    if hold is not None:
        doc["plan_file"]["hold"] = hold     # made under `plan --hold`: apply may drop it
    doc["sensitive_hashes"] = _sensitive_hashes(plan)
    tmp = Path(f"{path}.tmp")
    try:
        tmp.write_text(json.dumps(doc, sort_keys=True, default=str))
        os.replace(tmp, path)
    except OSError as exc:
        if tmp.is_file():
            tmp.unlink()
        raise DiagnosticError.single(f"Cannot write the plan file {path}: {exc.strerror}",
                                     hint="Pass --out a file path in a writable directory."
                                     ) from None


def is_plan_file(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(1)
        if head != b"{":
            return False
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("plan_file", {}).get("format") == FORMAT


def load(path: Path) -> tuple[Plan, Path]:
    try:
        doc = json.loads(path.read_text())
        meta = doc["plan_file"]
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError("not a plan file of this version")
        plan = plan_from_json(doc)
        hashes = doc.get("sensitive_hashes") or {}
        if hashes:
            plan = dc_replace(plan, changes=tuple(_with_hashes(c, hashes.get(c.address, ()))
                                                  for c in plan.changes))
        return plan, Path(meta["stack_dir"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DiagnosticError.single(f"Cannot read plan file {path}: {exc}",
                                     hint="Make a new one with: mlform plan --out FILE")


def hold_of(path: Path) -> str | None:
    """The hold id a saved plan was made under (`plan --hold ID --out FILE`), or None."""
    try:
        hold = json.loads(Path(path).read_text())["plan_file"].get("hold")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return hold if isinstance(hold, str) else None


def _sensitive_hashes(plan: Plan) -> dict:
    """address -> [[path, keyed hash], ...] for the sensitive paths of each change
    (the JSON document writes null there; `Change.after` holds the hashes, never clear
    values)."""
    out = {}
    for c in plan.changes:
        found = [[list(p), v] for p in c.after_sensitive
                 if is_marker(v := get_path(c.after or {}, tuple(p)))]
        if found:
            out[c.address] = found
    return out


def _with_hashes(change, hashes) -> object:
    after = change.after
    for path, value in hashes:
        if is_marker(value) and after is not None:
            after = set_path(after, tuple(path), value)
    return dc_replace(change, after=after) if after is not change.after else change


def base_state(plan: Plan, state: State) -> State:
    """The state to apply a saved plan to.

    A plan made while no state existed yet carries the lineage the state will get (its
    sensitive values are hashed with it).  An empty state at serial 0, as a stack that
    was never applied loads, takes that lineage, so the plan is not refused as stale; a
    stored state with another lineage is still refused when it is written.
    """
    if (plan.state_lineage and state.lineage != plan.state_lineage and plan.state_serial == 0
            and state.serial == 0 and not state.resources and not state.outputs):
        return State(serial=0, lineage=plan.state_lineage)
    return state


def check_fresh(plan: Plan, state: State, config_digest: str) -> None:
    """A saved plan applies only to the exact state and spec it was made from."""
    problems = []
    if plan.state_lineage and state.lineage != plan.state_lineage:
        problems.append(f"the state's lineage is {state.lineage}, the plan's {plan.state_lineage}")
    if state.serial != plan.state_serial:
        problems.append(f"the state moved from serial {plan.state_serial} to {state.serial}")
    if config_digest != plan.config_digest:
        problems.append("the spec files changed since the plan was made")
    if problems:
        raise DiagnosticError([error("Saved plan is stale", detail="; ".join(problems) + ".",
                                     hint="Nothing was applied. Run plan again and apply the new plan.")])


def variables_for(plan: Plan, session) -> VariableValues:
    """The plan's variable values; sensitive ones re-supplied by the user and checked."""
    out = VariableValues(values=dict(plan.variables))
    if not plan.sensitive_variables:
        return out
    supplied = resolve_root_variables(session.config, session.options.vars, session.options.var_files,
                                      session.options.environ)
    problems = []
    for name, digest in plan.sensitive_variables.items():
        value = supplied.values.get(name)
        if value is None or hash_value(value, plan.state_lineage) != digest:
            problems.append(error(
                f'Sensitive variable "{name}" must be given again to apply this plan',
                detail="Plan files do not store sensitive values; the value given differs from "
                       "the one planned with, or none was given.",
                hint=f"Pass --var {name}=... or set MLFORM_VAR_{name} as when planning."))
            continue
        out.values[name] = value if isinstance(value, Sensitive) else Sensitive(value)
        out.sensitive.add(name)
    if problems:
        raise DiagnosticError(problems)
    return out


__all__ = ["save", "load", "is_plan_file", "base_state", "check_fresh", "variables_for",
           "hold_of"]
