"""Operations that need the state: lock, load (with recovery), plan, apply.

This is where planning's I/O happens, around the pure planner: providers are
configured, refresh reads every recorded object, and the facts the planner asks for
are read in rounds (`mlform.facts`) until it returns a plan.  The CLI composes these;
they print nothing and never exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from mlform.cost import attach_cost
from mlform.diagnostics import DiagnosticError
from mlform.facts import read_facts
from mlform.plan.inputs import FactTable, PlanInputs, PlanOptions
from mlform.plan.memo import MEMO_VERSION, PlanMemo, key_of
from mlform.plan.model import Plan
from mlform.plan.planner import Planner
from mlform.policy import check_policies
from mlform.recovery import recover_pending
from mlform.refresh import refresh
from mlform.state import State, StateError, StateLocked

if TYPE_CHECKING:
    from mlform.apply.applier import ApplyResult

#: A plan that still asks for new facts after this many rounds has a provider whose
#: fact keys never settle: a bug, reported rather than looped on.
MAX_FACT_ROUNDS = 64


@dataclass
class PlanTiming:
    """Where one plan's time went (seconds): the benchmarks report it."""

    refresh_s: float = 0.0
    facts_s: float = 0.0
    walk_s: float = 0.0
    fact_rounds: int = 0
    memo_hits: int = 0            # instances the no-op memo answered


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
    diags = recover_pending(session.provider_set(loaded.state), writer, loaded.pending)
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


def plan(session, state: State, options: PlanOptions, timing: PlanTiming | None = None) -> Plan:
    """Refresh, then run the pure planner, reading the facts it asks for between rounds."""
    timing = timing if timing is not None else PlanTiming()
    providers = session.provider_set(state)
    t0 = time.perf_counter()
    refreshed, drift, diags = state, (), ()
    if options.refresh and state.resources:
        found = refresh(providers, state, options.parallelism)
        refreshed, drift, diags = found.state, tuple(found.drift), tuple(found.diagnostics)
    timing.refresh_s = time.perf_counter() - t0
    memo = _load_memo(session, providers) if options.mode == "normal" else None
    planner = Planner(PlanInputs(
        graph=session.graph, stack_dir=session.stack_dir, env=session.env_name,
        config_digest=session.config.digest, variables=session.variables,
        providers=providers, state=state, refreshed=refreshed, options=options,
        drift=drift, diagnostics=(*session.config.warnings, *diags), cwd=str(Path.cwd()),
        memo=memo))
    facts = FactTable()
    while True:
        t1 = time.perf_counter()
        result = planner.run(facts)
        timing.walk_s += time.perf_counter() - t1
        if isinstance(result, Plan):
            if memo is not None:
                timing.memo_hits = memo.hits
                if memo.changed:
                    _save_memo(session, memo)
            result = attach_cost(result, providers, state)   # prices are the providers' data
            # After the pure planner: the policies' verdicts (pure too, over the plan and
            # the scopes the planner evaluated).
            return check_policies(result, session.graph, planner.evaluator)
        timing.fact_rounds += 1
        if timing.fact_rounds > MAX_FACT_ROUNDS:
            raise DiagnosticError.single(
                f"Planning asked for new facts {MAX_FACT_ROUNDS} times",
                detail=f"Still asking for: {sorted(map(str, result))[:3]}",
                hint="A provider's fact_keys keeps changing; this is a bug in the provider.")
        t2 = time.perf_counter()
        facts.add(read_facts(result, providers, session.digests))
        timing.facts_s += time.perf_counter() - t2


# ---------------------------------------------------------------- the no-op memo

def _memo_path(session) -> Path:
    return session.cache_dir / f"plan-memo.{session.env_name or 'default'}.json"


def _code_files(providers) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of the engine's, the specs' and the providers' source files:
    a memo made by other code is never used (`mlform.plan.memo`)."""
    import mlform
    import mlform.providers
    import mlform.specs

    # mlform.providers (the kit and the built-in providers) is its own folder in a
    # checkout (pyproject's package-dir), inside mlform's when installed: both walked,
    # each file once.
    roots = [*mlform.__path__, *mlform.providers.__path__, *mlform.specs.__path__]
    for _, provider in providers.items():
        module = sys.modules.get(type(provider).__module__)
        if module is not None and getattr(module, "__file__", None):
            roots.append(os.path.dirname(module.__file__))
    found: dict[str, tuple[int, int]] = {}
    stack = list(dict.fromkeys(roots))
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and entry.name != "__pycache__":
                    stack.append(entry.path)
                elif entry.name.endswith(".py") and entry.path not in found:
                    st = entry.stat()
                    found[entry.path] = (st.st_size, st.st_mtime_ns)
    return sorted((path, size, mtime) for path, (size, mtime) in found.items())


def _load_memo(session, providers) -> PlanMemo | None:
    """The memo the last plan of this stack and environment left, for the planner to
    reuse (an empty one when there is none or it was made by other code or elsewhere)."""
    try:
        salt = key_of(MEMO_VERSION, sys.version, str(session.stack_dir.resolve()),
                      os.getcwd(), session.env_name, _code_files(providers))
    except OSError:
        return None
    try:
        data = json.loads(_memo_path(session).read_bytes())
    except (OSError, ValueError):
        data = None
    return PlanMemo.from_json(data, salt)


def _save_memo(session, memo: PlanMemo) -> None:
    """Written whole to a temporary file then renamed: a crash leaves the old memo or
    the new one, never half of one.  A cache: failing to write it loses nothing."""
    path = _memo_path(session)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(memo.to_json(), separators=(",", ":")))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def apply(session, state: State, plan_: Plan, *, parallelism: int, progress=None,
          on_start=None) -> "ApplyResult":
    from mlform.apply.applier import apply_plan   # here: `plan` never needs the applier

    writer = session.backend.open_writer(state)
    try:
        result = apply_plan(session, plan_, writer, parallelism=parallelism, progress=progress,
                            on_start=on_start)
    finally:
        final = writer.close()
    result.state = final
    return result


__all__ = ["locked", "load_state", "plan", "apply", "PlanTiming"]
