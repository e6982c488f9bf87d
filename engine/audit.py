"""The audit trail: who changed a stack environment, when, with which plan, and how it ended.

`record(session, command, outcome=...)` appends one record to the environment's audit log
(`session.backend.audit_log()`, stored by `mlform.state.audit`): the time (UTC), who (user,
host, and the CI pipeline from the environment: GitHub Actions, GitLab CI, or a generic
``CI=true``), the command, the digest of the plan applied, the changes (each address with
its actions, never an attribute value) and the outcome.  `history(session)` reads the log
and `verify(session)` checks its hash chain.

What a record may hold is fixed here, not by callers: changes are reduced to addresses and
action names, and `detail` is short engine text (counts, addresses, policy names); nothing
from a resource's attributes, a variable or a provider's error message goes in, so no
sensitive value can reach the log.

Writing the record comes after the work: if it fails, `record` returns a warning
diagnostic (the caller shows it) and never raises, so the work is neither undone nor hidden.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from mlform import __version__ as MLFORM_VERSION
from mlform.diagnostics import Diagnostic, warning
from mlform.state.audit import AuditRead, Verdict
from mlform.state.identity import ci_identity, host, user
from mlform.state.audit import verify as verify_chain

OUTCOMES = ("success", "error", "refused", "cancelled")
FORMAT = 1
_MAX_DETAIL = 500

def identity(environ: Mapping[str, str] | None = None) -> dict:
    """Who is running: ``{"user", "host", "ci"?}``; ``ci`` names the pipeline when one is
    detected from the environment (`mlform.state.identity`)."""
    who: dict[str, Any] = {"user": user(), "host": host()}
    ci = ci_identity(environ)
    if ci:
        who["ci"] = ci
    return who


def plan_digest(plan) -> str | None:
    """``sha256:HEX`` of what a plan would do: its changes (values redacted as in the JSON
    plan), output changes, mode, environment, and the state and spec it was made against.
    The same for a plan and for that plan saved and loaded again (`apply PLANFILE`)."""
    if plan is None:
        return None
    from mlform._gc import paused_gc
    from mlform.plan.codec import plan_document
    with paused_gc():       # bounded and I/O-free: a few dicts per attribute of the plan
        # json.dumps sorts every dict's keys itself, so the document need not be sorted
        # first (`plan_to_json` would): the same bytes, one walk fewer.
        doc = plan_document(plan)
        body = {key: doc.get(key) for key in ("mode", "env", "resource_changes",
                                              "resource_drift", "output_changes")}
        body.update(state_lineage=plan.state_lineage, state_serial=plan.state_serial,
                    config_digest=plan.config_digest)
        data = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def changes_of(plan) -> list[dict]:
    """The plan's changes as address + actions (no-ops left out; a refresh-only plan's are
    the drift it records)."""
    if plan is None:
        return []
    items = plan.drift if plan.mode == "refresh-only" else plan.changes
    return [{"address": c.address, "actions": list(c.action.json_actions)}
            for c in items if c.is_change]


def _clean_changes(changes: Iterable[Any]) -> list[dict]:
    """Changes reduced to what a record may hold: address, actions, and for a move the
    address it came from.  Anything else a caller passes is dropped."""
    cleaned = []
    for c in changes:
        if isinstance(c, dict) or isinstance(c, Mapping):   # (dict first: no ABC check)
            address, actions = c.get("address"), c.get("actions") or ()
            source = c.get("from")
        else:                                       # a plan Change
            address, actions, source = c.address, c.action.json_actions, None
        entry: dict[str, Any] = {"address": str(address),
                                 "actions": [str(a) for a in actions]}
        if source:
            entry["from"] = str(source)
        if (isinstance(c, dict) or isinstance(c, Mapping)) and c.get("failed"):
            entry["failed"] = True
        cleaned.append(entry)
    return cleaned


def command_for(plan) -> str:
    """The command name an apply of `plan` is recorded under."""
    return {"destroy": "destroy", "refresh-only": "refresh"}.get(getattr(plan, "mode", ""),
                                                                 "apply")


def build(session, command: str, *, outcome: str, plan=None, changes=None,
          detail: str = "", environ: Mapping[str, str] | None = None) -> dict:
    """The record body (without seq, prev and hash)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    if changes is None:
        changes = changes_of(plan)
    return {
        "format": FORMAT,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "who": identity(environ),
        "command": command,
        "stack": session.config.stack_name,
        "env": session.env_name,
        "plan": plan_digest(plan),
        "changes": _clean_changes(changes),
        "outcome": outcome,
        "detail": detail if len(detail) <= _MAX_DETAIL else detail[:_MAX_DETAIL - 1] + "…",
        "mlform_version": MLFORM_VERSION,
    }


def record(session, command: str, *, outcome: str, plan=None, changes=None,
           detail: str = "") -> Diagnostic | None:
    """Append one record for `command` to the session's audit log.

    Returns None, or a warning diagnostic when the record could not be written (the
    caller shows it; the work it records stands).  Never raises for a storage problem;
    an unknown `outcome` is a programming error (ValueError).
    """
    body = build(session, command, outcome=outcome, plan=plan, changes=changes,
                 detail=_scrub(session, detail))
    where = "the state backend"
    try:
        log = session.backend.audit_log()
        where = log.describe()
        log.append(body)
    except Exception as exc:  # the work is done: losing its record must not hide it
        summary = getattr(exc, "summary", None) or f"{type(exc).__name__}: {exc}"
        return warning(f"The {command} was not recorded in the audit log",
                       f"{where}: {summary}",
                       hint="The command's work is done and kept. Check the state backend, "
                            "then run: mlform history verify")
    return None


def _secrets(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _secrets(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _secrets(v)
    elif value is not None and not isinstance(value, bool):
        text = str(value)
        if len(text) >= 4:          # shorter ones would blank out ordinary words
            yield text


def _scrub(session, detail: str) -> str:
    """`detail` with the value of every sensitive variable masked.  Details are engine
    text, but an error summary can quote what a provider or a value check said."""
    if not detail:
        return detail
    try:
        values = session.variables
    except Exception:              # variables that do not resolve: none to mask
        return detail
    for name in getattr(values, "sensitive", ()) or ():
        raw = values.values.get(name)
        for secret in _secrets(getattr(raw, "value", raw)):
            detail = detail.replace(secret, "(sensitive value)")
    return detail


def apply_outcome(result) -> tuple[str, str, set[str]]:
    """(outcome, detail, failed addresses) of an `operations.apply` result."""
    failed = {address for address, _ in result.failures if address}
    counts = (f"{result.added} added, {result.changed} changed, "
              f"{result.destroyed} destroyed")
    if result.cancelled:
        return "cancelled", (f"interrupted: {counts}, {result.not_started} not started"), failed
    if not result.ok:
        names = ", ".join(sorted(failed)[:10])
        return "error", (f"{counts}, {len(result.failures)} failed"
                         + (f": {names}" if names else "")), failed
    return "success", counts, failed


def record_apply(session, plan, result, *, plan_file: str | None = None) -> Diagnostic | None:
    """Record an apply (or destroy, refresh) of `plan` that ran, with how it ended."""
    outcome, detail, failed = apply_outcome(result)
    if plan_file:
        detail = f"plan file {plan_file}; {detail}"
    changes = [{**c, "failed": c["address"] in failed} for c in changes_of(plan)]
    return record(session, command_for(plan), outcome=outcome, plan=plan, changes=changes,
                  detail=detail)


def failure_detail(exc: BaseException) -> str:
    """Engine text for a command that stopped on `exc`: the summaries of its error
    diagnostics (the engine's own words), never a provider's raw message."""
    diagnostics = getattr(exc, "diagnostics", None)
    if diagnostics:
        return "; ".join(d.summary for d in diagnostics if d.severity == "error")
    summary = getattr(exc, "summary", None)
    if summary:
        return str(summary)
    return type(exc).__name__


def policy_refusal(plan) -> str | None:
    """The names of the mandatory policies that failed, if that is why a plan errored."""
    failed = [p.policy for p in plan.failed_policies if p.level == "mandatory"]
    if not failed:
        return None
    return "mandatory polic" + ("y" if len(set(failed)) == 1 else "ies") + " failed: " + \
        ", ".join(sorted(set(failed)))


def history(session) -> AuditRead:
    """Every record of the environment's audit log (with the head marker)."""
    return session.backend.audit_log().read()


def verify(session) -> tuple[AuditRead, Verdict]:
    read = history(session)
    return read, verify_chain(read)
