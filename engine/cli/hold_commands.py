"""Plan holds at the command line: `mlform release`, `force-unlock` of a hold, and the
steps `plan --hold` and `apply` take around their work (`mlform.holds` has the rules).

The plan/apply steps are called from `mlform.cli.commands` while it holds the state
lock; they print warnings and notes themselves so the command bodies stay short.
"""

from __future__ import annotations

from pathlib import Path

from mlform import holds
from mlform.cli import output as out
from mlform.cli.runner import show_diagnostics
from mlform.diagnostics import DiagnosticError, error
from mlform.state import StateError


# ---------------------------------------------------------------- inside plan and apply


def before_plan(session, hold: str | None) -> None:
    """Refuse `plan --hold ID` while another id holds the state; warn a plain plan."""
    show_diagnostics(holds.check_plan(session, hold))


def after_plan(session, hold: str | None, plan) -> None:
    """Take or renew the hold once the plan succeeded (an errored plan holds nothing)."""
    if hold is not None and not plan.errored:
        holds.take(session, hold, plan.config_digest)


def before_apply(session, plan_file: Path | None):
    """Refuse an apply while held, unless it applies the holder's own saved plan; returns
    the hold a successful apply drops."""
    from mlform import planfile
    return holds.check_apply(session, planfile.hold_of(plan_file) if plan_file else None)


def after_apply(session, hold, result) -> list:
    """Drop the hold after the holder's plan applied in full (the pull request merged).
    Returns what to tell the user, shown by `report` after the apply summary."""
    if hold is None or not result.ok or result.cancelled:
        return []
    return holds.release_after_apply(session, hold) or [
        f"Released the hold of {hold.id} on {hold.path}."]


def report(released: list) -> None:
    """Show what `after_apply` returned: a note, or the warning that it could not release."""
    notes = [n for n in released if isinstance(n, str)]
    show_diagnostics([d for d in released if not isinstance(d, str)])
    for note in notes:
        out.echo(note)


# ---------------------------------------------------------------- commands


def release(hold_id: str, dir: Path, env: str | None) -> int:
    """`mlform release ID`: the pull request closed without merging."""
    from mlform import operations
    from mlform.cli.commands import _session
    session = _session(dir, env)
    try:
        with operations.locked(session, "release"):
            dropped, found = holds.release(session, hold_id)
    finally:
        session.close()
    where = session.backend.describe()
    if dropped:
        out.echo(f"Released the hold of {hold_id} on {where}.")
    elif found is None:
        out.echo(f"Nothing to release: {where} is not held.")
    else:
        out.echo(f"Nothing to release: {where} is held by {found.id}, not {hold_id}.")
    return 0


def force_unlock_hold(hold_id: str, env: str | None, lock_error) -> int:
    """`mlform force-unlock ID` when no state lock has that id: remove the hold with that
    id, whoever made it; when there is none either, the state lock's error stands."""
    from mlform import operations
    from mlform.cli.commands import _state_session
    session = _state_session(env)
    try:
        found = _read_quietly(session)
        if found is None or found.id != hold_id:
            held = ("no pull request holds it" if found is None
                    else f"the hold there is {found.id}")
            raise DiagnosticError([error(lock_error.summary, f"{lock_error.detail}; {held}",
                                         hint=lock_error.hint)])
        with operations.locked(session, "force-unlock"):
            dropped, found = holds.release(session, hold_id)
    finally:
        session.close()
    if not dropped:      # released or replaced between the look and the lock
        out.echo(f"Nothing to remove: the hold of {hold_id} is gone.")
        return 0
    out.echo(f"The hold of {hold_id} has been removed from {found.path}.")
    return 0


def _read_quietly(session):
    """The hold, or None when the backend has none or cannot be read (the lock's own
    error is the one to show then)."""
    try:
        return holds.store(session).read()
    except (StateError, DiagnosticError):
        return None


__all__ = ["before_plan", "after_plan", "before_apply", "after_apply", "report", "release",
           "force_unlock_hold"]
