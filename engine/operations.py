"""Operations that need the state: lock, load (with recovery), plan, apply.

The CLI composes these; they print nothing and never exit.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from mlform.apply.applier import ApplyResult, apply_plan
from mlform.diagnostics import DiagnosticError
from mlform.plan.model import Plan
from mlform.plan.planner import PlanOptions, make_plan
from mlform.plan.refresh import recover_pending
from mlform.state import State, StateError, StateLocked


@contextlib.contextmanager
def locked(session, operation: str) -> Iterator[None]:
    backend = session.backend
    try:
        info = backend.lock(operation)
    except StateLocked as exc:
        raise DiagnosticError([exc.diagnostic()])
    except StateError as exc:
        raise DiagnosticError([exc.diagnostic()])
    except OSError as exc:  # the backend path cannot hold a state (a directory, no permission)
        raise _unusable_state(session, exc) from None
    try:
        yield
    finally:
        backend.unlock(info)


def load_state(session, *, recover: bool = True) -> State:
    """The current state, after settling operations a killed run left pending.

    Read-only commands pass ``recover=False``: they hold no lock, so they must not
    write (recovering would rewrite the state, and call providers, under the feet of
    a run that holds the lock); they see the snapshot with its journal replayed.
    """
    try:
        loaded = session.backend.load()
    except StateError as exc:
        raise DiagnosticError([exc.diagnostic()])
    except OSError as exc:
        raise _unusable_state(session, exc) from None
    if not loaded.pending or not recover:
        return loaded.state
    writer = session.backend.open_writer(loaded.state)
    diags = recover_pending(session, writer, loaded.pending)
    state = writer.close()
    if diags:
        raise DiagnosticError(diags)
    return state


def _unusable_state(session, exc: OSError) -> DiagnosticError:
    env = session.config.env
    where = f" {exc.filename}" if exc.filename else ""
    return DiagnosticError.single(
        f"Cannot use the state file{where}: {exc.strerror}",
        hint=f"Check the backend path in {env.file}." if env.file and env.backend.get("path")
        else "Check that the stack directory is writable.")


def plan(session, state: State, options: PlanOptions) -> Plan:
    return make_plan(session, state, options)


def apply(session, state: State, plan_: Plan, *, parallelism: int, progress=None,
          on_start=None) -> ApplyResult:
    writer = session.backend.open_writer(state)
    try:
        result = apply_plan(session, plan_, writer, parallelism=parallelism, progress=progress,
                            on_start=on_start)
    finally:
        final = writer.close()
    result.state = final
    return result


__all__ = ["locked", "load_state", "plan", "apply"]
