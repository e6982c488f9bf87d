"""Plan holds in plan and apply: what may run while a pull request holds the state.

The rules (docs/state.md, "Plan holds across pull requests"), for one stack environment:

* `plan --hold ID` takes the hold for ID, or renews it when ID holds it already; it is
  refused, before anything is planned, when another ID holds it.
* a plain `plan` (someone at a terminal looking) runs, with a warning naming the holder.
* `apply PLANFILE` of a plan made under the holding ID runs, and drops the hold when it
  succeeds (the pull request merged); any other apply (a directory, or a plan file made
  without --hold or under another ID) is refused naming the holder.
* `release ID` drops the hold if ID holds it (the pull request closed); `force-unlock ID`
  drops it whoever asks.

Every function here runs while the caller holds the state lock: the local backend's hold
relies on it for an atomic check-and-take (`mlform.state.holds`).  Nothing here prints;
the CLI shows the diagnostics returned or raised.
"""

from __future__ import annotations

from mlform.diagnostics import Diagnostic, DiagnosticError, error, warning
from mlform.state import StateError
from mlform.state.holds import HoldInfo, HoldStore, StateHeld, check_hold_id

SUMMARY = "The state is held by another pull request"


def store(session) -> HoldStore:
    try:
        return session.backend.holds()
    except StateError as exc:
        raise DiagnosticError([exc.diagnostic()]) from None


def _env_flag(session) -> str:
    # The hint must name the same state: force-unlock works on --env's state.
    name = session.env_name
    return f" --env {name}" if name and name != "default" else ""


def held_diagnostic(session, holder: HoldInfo, why: str = "") -> Diagnostic:
    """`error: The state is held by another pull request`, the holder and the way out."""
    refusal = StateHeld(holder, env_flag=_env_flag(session))
    detail = refusal.detail + (f"; {why}" if why else "")
    return error(refusal.summary, detail + "\n" + holder.describe(), hint=refusal.hint)


def validate_id(hold_id: str) -> None:
    problem = check_hold_id(hold_id)
    if problem is not None:
        raise DiagnosticError.single(f"Invalid hold id {hold_id!r}", detail=problem + ".",
                                     hint="Name the pull request, e.g. --hold "
                                          "github:OWNER/REPO#NUMBER.")


def _read(session) -> HoldInfo | None:
    try:
        return store(session).read()
    except StateError as exc:
        raise DiagnosticError([exc.diagnostic()]) from None


def check_plan(session, hold_id: str | None) -> list[Diagnostic]:
    """Before a plan: refuse a plan under another id than the holder's; a plain plan gets
    a warning naming the holder (returned)."""
    if hold_id is not None:
        validate_id(hold_id)
    current = _read(session)
    if current is None or current.id == hold_id:
        return []
    if hold_id is not None:
        raise DiagnosticError([held_diagnostic(session, current)])
    return [warning(
        SUMMARY,
        f"{current.id} ({current.who}@{current.host}) holds {current.path} since "
        f"{current.since()}; "
        f"this plan is for looking only: applying is refused until the hold is released",
        hint=f"Wait for {current.id} to merge or close.")]


def take(session, hold_id: str, config_digest: str) -> HoldInfo:
    """After a successful plan: take or renew the hold for `hold_id`."""
    try:
        return store(session).take(hold_id, config_digest)
    except StateHeld as exc:         # taken since check_plan (s3: by a racing run)
        raise DiagnosticError([held_diagnostic(session, exc.holder)]) from None
    except StateError as exc:
        raise DiagnosticError([exc.diagnostic()]) from None


def check_apply(session, plan_hold: str | None) -> HoldInfo | None:
    """Before an apply: returns the hold it will drop when it succeeds (the plan was made
    under the holding id), None when nothing is held; refuses every other apply."""
    current = _read(session)
    if current is None:
        return None
    if plan_hold is not None and current.id == plan_hold:
        return current
    why = (f"this plan was made under {plan_hold}" if plan_hold is not None
           else "only a plan saved with `plan --hold "
                f"{current.id} --out FILE` may be applied while it is held")
    raise DiagnosticError([held_diagnostic(session, current, why)])


def release_after_apply(session, hold: HoldInfo) -> list[Diagnostic]:
    """After a successful apply of the holder's plan: drop the hold.  Failing to is a
    warning: the apply is done and must not be reported as failed."""
    try:
        store(session).release(hold.id)
    except (StateError, DiagnosticError) as exc:
        detail = exc.diagnostic().detail if isinstance(exc, StateError) else str(exc)
        return [warning(f"The hold of {hold.id} could not be released", detail,
                        hint=f"Release it with: mlform release {hold.id}")]
    return []


def release(session, hold_id: str) -> tuple[bool, HoldInfo | None]:
    """Drop the hold if `hold_id` holds it: (dropped, the hold found or None)."""
    validate_id(hold_id)
    try:
        return store(session).release(hold_id)
    except StateError as exc:
        raise DiagnosticError([exc.diagnostic()]) from None


__all__ = ["SUMMARY", "check_plan", "take", "check_apply", "release_after_apply", "release",
           "held_diagnostic", "validate_id", "store"]
