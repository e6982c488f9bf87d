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
    try:
        yield
    finally:
        backend.unlock(info)


def load_state(session) -> State:
    """The current state, after settling operations a killed run left pending."""
    try:
        loaded = session.backend.load()
    except StateError as exc:
        raise DiagnosticError([exc.diagnostic()])
    if not loaded.pending:
        return loaded.state
    writer = session.backend.open_writer(loaded.state)
    diags = recover_pending(session, writer, loaded.pending)
    state = writer.close()
    if diags:
        raise DiagnosticError(diags)
    return state


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
