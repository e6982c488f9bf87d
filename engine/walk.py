"""The one graph walker: plan, validate and apply visit the same units in dependency order.

A walk is a set of `Unit`s (a graph node, or for apply a delete) with dependencies.
A unit is visited once every unit it depends on is done; the operation's `Executor`
decides what visiting means and answers with a `Visit`:

* ``DONE`` - finished; units that depend on it may start.
* ``FAILED`` - it failed (the executor kept the diagnostics).  Units that depend on it
  are never visited and not reported again: the root cause is said once.  With
  ``stop_on_failure`` (apply) nothing new starts at all after a failure.
* ``RUNNING`` - it handed ``unit.outstanding`` operations to workers (apply's provider
  calls); `Executor.wait` reports each one as it ends, and the unit is done when none is
  left (or visited again when it set ``unit.revisit``, e.g. after reading facts).
* ``WAITING`` - it needs facts first (``unit.waiting``).  When nothing else can run,
  `Walk.run` returns those requests to its caller, who reads them (the planner itself
  does no I/O) and calls `run` again: waiting units are visited again then.

Ready units are taken in the order of the graph's topological listing, so a
synchronous walk (plan, validate) visits exactly in that order and its output is
stable; apply's parallel walk starts units in the same order as they become ready.
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from mlform.diagnostics import DiagnosticError

__all__ = ["Visit", "Unit", "Executor", "Walk", "NeedFacts", "visiting"]


class Visit(enum.Enum):
    DONE = "done"
    FAILED = "failed"
    RUNNING = "running"
    WAITING = "waiting"


@dataclass(eq=False)
class Unit:
    """One thing to visit: a graph node or (apply) a delete.  The walk keeps its state."""

    key: str
    deps: set[str]
    node: Any = None
    change: Any = None
    order: int = 0
    outstanding: int = 0                     # async operations still running
    revisit: bool = False                    # visit again once they are done
    waiting: frozenset = frozenset()         # fact requests it waits on
    failed: bool = False
    done: bool = False


class NeedFacts(Exception):
    """Raised inside a visit when facts are missing; the executor answers WAITING."""

    def __init__(self, requests: Iterable[Any]) -> None:
        super().__init__("facts needed")
        self.requests = frozenset(requests)


def visiting(unit: Unit, work: Callable[[], Visit], diagnostics: list) -> Visit:
    """A synchronous visit (plan, validate): `work`'s answer, WAITING when it raised
    `NeedFacts` (the unit waits on those requests), FAILED with the diagnostics of a
    `DiagnosticError` kept in `diagnostics`."""
    try:
        return work()
    except NeedFacts as exc:
        unit.waiting = exc.requests
        return Visit.WAITING
    except DiagnosticError as exc:
        diagnostics.extend(exc.diagnostics)
        return Visit.FAILED


class Executor(Protocol):
    def visit(self, unit: Unit) -> Visit: ...

    def wait(self) -> Unit | None:
        """Block until one async operation ends; the unit it belonged to (with
        `outstanding` already counted down and any failure recorded), or None when
        nothing ended within the executor's poll interval."""
        ...


@dataclass
class _Heap:
    items: list = field(default_factory=list)

    def push(self, unit: Unit) -> None:
        heapq.heappush(self.items, (unit.order, unit.key, unit))

    def pop(self) -> Unit:
        return heapq.heappop(self.items)[2]

    def __bool__(self) -> bool:
        return bool(self.items)


class Walk:
    """Dependency-ordered visits of `units` by `executor` (see the module docstring)."""

    def __init__(self, units: dict[str, Unit], executor: Executor, *,
                 stop_on_failure: bool = False,
                 cancelled: Callable[[], bool] = lambda: False) -> None:
        self.units = units
        self.executor = executor
        self.stop_on_failure = stop_on_failure
        self.cancelled = cancelled
        self.stopping = False
        self._dependents: dict[str, list[str]] = {k: [] for k in units}
        self._blocked: dict[str, int] = {}
        self._ready = _Heap()
        self._parked: list[Unit] = []
        self._inflight = 0
        for key, unit in units.items():
            unit.deps &= units.keys()
            self._blocked[key] = len(unit.deps)
            for dep in unit.deps:
                self._dependents[dep].append(key)
        for key, count in self._blocked.items():
            if count == 0:
                self._ready.push(units[key])

    # ------------------------------------------------------------ running

    def run(self) -> frozenset:
        """Visit until every unit is done (returns an empty set) or every unit left waits
        on facts (returns what they wait on; read them, then call `resume` and `run`)."""
        while True:
            while self._ready and not self.stopping:
                if self.cancelled():
                    self.stopping = True
                    break
                self._visit(self._ready.pop())
            if self._inflight:
                unit = self.executor.wait()
                if unit is None:
                    if self.cancelled():
                        self.stopping = True
                    continue
                self._inflight -= 1
                if unit.failed and self.stop_on_failure:
                    self.stopping = True    # in-flight work ends; nothing new starts
                if unit.outstanding == 0:
                    self._settled(unit)
                continue
            if self._parked and not self.stopping:
                return frozenset().union(*(u.waiting for u in self._parked))
            return frozenset()

    def resume(self) -> None:
        """Waiting units are visited again at the next `run` (their facts are in)."""
        for unit in self._parked:
            unit.waiting = frozenset()
            self._ready.push(unit)
        self._parked.clear()

    def _visit(self, unit: Unit) -> None:
        unit.outstanding = 0
        unit.revisit = False
        outcome = self.executor.visit(unit)
        if outcome is Visit.WAITING:
            self._parked.append(unit)
        elif outcome is Visit.RUNNING and unit.outstanding:
            self._inflight += unit.outstanding
            if unit.failed and self.stop_on_failure:
                self.stopping = True        # some of its instances run; it failed anyway
        elif outcome is Visit.FAILED:
            self._finish(unit, failed=True)
        else:
            self._settled(unit)

    def _settled(self, unit: Unit) -> None:
        """A unit whose operations all ended: visit it again, or finish it."""
        if unit.revisit and not unit.failed and not self.stopping:
            self._ready.push(unit)
            return
        self._finish(unit, failed=unit.failed)

    def _finish(self, unit: Unit, *, failed: bool) -> None:
        unit.done = True
        unit.failed = failed
        if failed:
            if self.stop_on_failure:
                self.stopping = True
            return          # dependents never become ready: not visited, not reported
        for key in self._dependents[unit.key]:
            self._blocked[key] -= 1
            if self._blocked[key] == 0:
                self._ready.push(self.units[key])

    # ------------------------------------------------------------ results

    @property
    def failed(self) -> set[str]:
        """Keys of units that failed, or that depend on one that did (never visited)."""
        return {k for k, u in self.units.items() if u.failed or not u.done}

    def not_started(self, counts: Callable[[Unit], bool] = lambda unit: True) -> int:
        """Units never finished (after a failure or a cancel) that `counts` accepts."""
        return sum(1 for u in self.units.values() if not u.done and counts(u))
