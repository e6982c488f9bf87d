"""`mlform reconcile`: pull-based GitOps, one stack environment, at an interval.

Each cycle pulls the spec (`mlform.reconcile_git`: a git checkout, or a directory as
it is), builds a fresh `Session`, takes the state lock, loads the state and plans
(`operations.plan`, which attaches cost and policy results), then decides:

| the plan                          | the cycle                                  | outcome     |
| --------------------------------- | ------------------------------------------ | ----------- |
| errored by a mandatory policy     | applies nothing                            | `refused`   |
| errored otherwise                 | applies nothing                            | `failed`    |
| no changes                        | nothing to do                              | `unchanged` |
| changes `--auto-apply` allows     | applies them                               | `applied` (`failed` if the apply fails) |
| changes it does not allow         | reports them                               | `pending`   |

`--auto-apply`: `none` never applies; `all` applies every plan that passes;
`drift` applies only a plan that heals drift (`heals_drift`): the live objects moved
out of band, the spec did not.  That is decided by planning the same spec against the
state as recorded at the last apply, without refresh: when that plan is empty, every
change of the refreshed plan exists only because of the drift (including changes
downstream of a healed object, such as an endpoint following a re-created model); when
it is not, the spec (a new commit, a variable, an input's content) changed, and such a
change waits for a person or `--auto-apply all`.  Healing never replaces or deletes:
a drift whose healing needs a replacement waits too.

While a pull request holds the state (`plan --hold`, `mlform.holds`), nothing is
applied: the cycle is `pending`, naming the holder, so the reviewed plan stays fresh.

A cycle that applies, or that fails or is refused after the lock was taken, is
recorded in the audit trail (`mlform.audit.record`).  Failures before that (the pull,
loading the spec, a lock held by someone else) never touched the state: they are in
the log line and the metrics only.

Stopping: `stop()` (the CLI's SIGTERM/SIGINT) lets the cycle in flight finish (an apply
runs to its end, so the state is consistent) and starts no new one; a stop that comes
before a cycle's apply has started skips that apply.  `cancel_apply()` (a second
signal) stops scheduling new operations of the apply in flight; those already started
finish and are recorded, as for the first Ctrl-C of `mlform apply`.

This module prints nothing: each finished cycle is handed to a `report` callback.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mlform import operations
from mlform.diagnostics import Diagnostic, DiagnosticError, error, warning
from mlform.plan.inputs import PlanOptions
from mlform.plan.model import Action, Plan
from mlform.reconcile_git import DirectorySource, GitSource, SourceError
from mlform.reconcile_metrics import OUTCOMES, SUCCESS_OUTCOMES, Health, ReconcileMetrics
from mlform.session import Session, SessionOptions
from mlform.state import StateError

__all__ = ["AUTO_APPLY", "OUTCOMES", "ReconcileOptions", "CycleResult", "Reconciler",
           "heals_drift", "parse_duration", "DirectorySource", "GitSource"]

#: the `--auto-apply` rules
AUTO_APPLY = ("none", "drift", "all")
_HEALING_ACTIONS = (Action.CREATE, Action.UPDATE)


@dataclass(frozen=True)
class ReconcileOptions:
    env: str | None = None
    vars: tuple[str, ...] = ()
    var_files: tuple[Path, ...] = ()
    auto_apply: str = "none"
    interval_s: float = 60.0
    parallelism: int = 10


@dataclass
class CycleResult:
    """What one cycle did: the CLI's log line, the metrics and the audit record."""

    number: int
    outcome: str = "failed"
    message: str = ""
    revision: str = ""
    drifted: int = 0
    pending: int = 0
    added: int = 0
    changed: int = 0
    destroyed: int = 0
    plan_s: float | None = None
    apply_s: float | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    failed_policies: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome in SUCCESS_OUTCOMES


def heals_drift(plan: Plan, spec_plan: Plan) -> tuple[bool, str]:
    """Whether every change of `plan` heals drift (module docstring), and why not.

    `spec_plan` is the same spec planned against the recorded state without refresh.
    """
    if not plan.drift:
        return False, "no drift was found, so the changes come from the spec"
    if spec_plan.errored:
        return False, "the spec could not be planned against the recorded state"
    if spec_plan.has_changes:
        n = sum(1 for c in spec_plan.changes if c.is_change) or len(spec_plan.output_changes)
        return False, (f"the spec changed since the last apply ({n} change"
                       f"{'s' if n != 1 else ''} against the recorded state)")
    for c in plan.changes:
        if c.is_change and c.action not in _HEALING_ACTIONS:
            return False, (f"healing {c.address} needs {c.action.value}, which only "
                           "--auto-apply all applies")
    return True, ""


class Reconciler:
    """Runs cycles: `cycle()` once, or `run()` until stopped."""

    def __init__(self, source: GitSource | DirectorySource, options: ReconcileOptions,
                 metrics: ReconcileMetrics | None = None, health: Health | None = None,
                 progress: Callable | None = None) -> None:
        if options.auto_apply not in AUTO_APPLY:
            raise DiagnosticError.single(f'Unknown --auto-apply rule "{options.auto_apply}"',
                                         hint="Rules: " + ", ".join(AUTO_APPLY) + ".")
        self.source = source
        self.options = options
        self.metrics = metrics or ReconcileMetrics()
        self.health = health or Health(options.interval_s)
        self.progress = progress or (lambda event: None)
        self.cycles = 0
        self._stop = threading.Event()
        self._applier = None
        self._cancel_requested = False

    # ------------------------------------------------------------ control

    def stop(self) -> None:
        """Finish the cycle in flight, start no new one (a signal handler may call it)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def cancel_apply(self) -> bool:
        """Start no more operations of the apply in flight; True when there is one."""
        self._cancel_requested = True
        applier = self._applier
        if applier is not None:
            applier.cancel()
        return applier is not None

    def run(self, report: Callable[[CycleResult], None], cycles: int | None = None) -> CycleResult | None:
        """Cycles every `interval_s` until `stop()` (or `cycles` of them); the last result."""
        last = None
        while not self._stop.is_set():
            last = self.cycle()
            report(last)
            if cycles is not None and self.cycles >= cycles:
                break
            self._stop.wait(self.options.interval_s)
        return last

    # ------------------------------------------------------------ one cycle

    def cycle(self) -> CycleResult:
        self.cycles += 1
        result = CycleResult(self.cycles)
        try:
            self._cycle(result)
        except (DiagnosticError, StateError) as exc:   # the spec, the lock, the backend
            diags = _diagnostics_of(exc)
            result.outcome = "failed"
            result.diagnostics.extend(diags)
            result.message = result.message or _first_error(diags)
        except Exception as exc:  # a bug must not end a daemon: the cycle fails, the next retries
            if os.environ.get("MLFORM_DEBUG"):
                raise
            result.outcome = "failed"
            result.message = f"internal error: {type(exc).__name__}: {exc}"
            result.diagnostics.append(error(result.message, hint="This is a bug in mlform; "
                                            "rerun with MLFORM_DEBUG=1 and report it."))
        self._count(result)
        return result

    def _cycle(self, result: CycleResult) -> None:
        try:
            checkout = self.source.pull()
        except SourceError as exc:
            self.metrics.git_failures.inc()
            result.message = exc.message
            result.diagnostics.append(error(exc.message, hint=exc.hint))
            return
        result.revision = checkout.revision
        session = Session(checkout.stack_dir, SessionOptions(
            env=self.options.env, vars=list(self.options.vars),
            var_files=list(self.options.var_files), parallelism=self.options.parallelism,
            progress=self.progress))
        try:
            with operations.locked(session, "reconcile"):
                self._locked_cycle(session, result)
        finally:
            session.close()

    def _locked_cycle(self, session: Session, result: CycleResult) -> None:
        plan = None
        changes: list = []
        try:
            state = operations.load_state(session)
            options = PlanOptions(parallelism=self.options.parallelism)
            t0 = time.perf_counter()
            plan = operations.plan(session, state, options)
            result.plan_s = time.perf_counter() - t0
            self.metrics.plan_seconds.observe(result.plan_s)
            result.drifted = len(plan.drift)
            result.failed_policies = list(plan.failed_policies)
            changes = [c for c in plan.changes if c.is_change]
            if plan.errored:
                result.diagnostics.extend(d for d in plan.diagnostics)
                mandatory = [p for p in result.failed_policies if p.level == "mandatory"]
                result.outcome = "refused" if mandatory else "failed"
                result.message = (f"refused by {', '.join(sorted({p.policy for p in mandatory}))}"
                                  if mandatory else _first_error(plan.diagnostics))
                self._audit(session, result, plan, changes)
                return
            result.diagnostics.extend(plan.diagnostics)     # warnings, advisory policies
            if not plan.has_changes:
                result.outcome, result.message = "unchanged", "no changes"
                return
            allowed, why = self._allowed(session, state, plan)
            if allowed:
                allowed, why = self._not_held(session)
            if allowed and self._stop.is_set():
                allowed, why = False, "stopping: no apply is started after a stop signal"
            if not allowed:
                result.outcome = "pending"
                result.pending = len(changes) or len(plan.output_changes)
                result.message = f"{_counts(plan)}, not applied: {why}"
                return
            failed = self._apply(session, state, plan, result)
            self._audit(session, result, plan, [
                {"address": c.address, "actions": c.action.json_actions,
                 "failed": c.address in failed} for c in changes])
        except (DiagnosticError, StateError) as exc:
            # failed after the lock was taken: the audit trail hears of it
            diags = _diagnostics_of(exc)
            result.outcome = "failed"
            result.diagnostics.extend(diags)
            result.message = _first_error(diags)
            self._audit(session, result, plan, changes)

    def _allowed(self, session: Session, state, plan: Plan) -> tuple[bool, str]:
        rule = self.options.auto_apply
        if rule == "all":
            return True, ""
        if rule == "none":
            return False, "--auto-apply none"
        if not plan.drift:
            return False, "--auto-apply drift, and they do not heal drift (no drift found)"
        spec_plan = operations.plan(session, state, PlanOptions(
            refresh=False, parallelism=self.options.parallelism))
        ok, why = heals_drift(plan, spec_plan)
        return ok, (f"--auto-apply drift, and {why}" if not ok else "")

    def _not_held(self, session: Session) -> tuple[bool, str]:
        """A pull request holding the state (`plan --hold`) keeps its reviewed plan fresh:
        the loop applies nothing meanwhile (a plain directory apply would be refused)."""
        try:
            from mlform import holds
        except ImportError:            # a build without plan holds
            return True, ""
        try:
            holds.check_apply(session, None)
        except DiagnosticError as exc:
            d = exc.diagnostics[0] if exc.diagnostics else None
            first = (d.detail.splitlines() or [""])[0] if d is not None else ""
            return False, f"{d.summary if d else 'the state is held'} ({first.split(';')[0]})"
        return True, ""

    def _apply(self, session: Session, state, plan: Plan, result: CycleResult) -> set[str]:
        """Apply `plan`; the addresses whose operation failed."""
        t0 = time.perf_counter()
        try:
            applied = operations.apply(session, state, plan, parallelism=self.options.parallelism,
                                       progress=self.progress, on_start=self._started)
        finally:
            self._applier = None
            result.apply_s = time.perf_counter() - t0
            self.metrics.apply_seconds.observe(result.apply_s)
        result.added, result.changed, result.destroyed = applied.added, applied.changed, \
            applied.destroyed
        result.diagnostics.extend(applied.diagnostics)
        failed = {address for address, _ in applied.failures if address}
        done = f"{applied.added} added, {applied.changed} changed, {applied.destroyed} destroyed"
        if applied.cancelled:
            result.outcome = "failed"
            result.message = (f"apply cancelled after {done}; {applied.not_started} not started "
                              "(the state records everything that finished)")
        elif not applied.ok:
            result.outcome = "failed"
            result.message = f"apply failed ({done}): {_first_error(applied.diagnostics)}"
        else:
            result.outcome, result.message = "applied", done
        return failed

    def _started(self, applier) -> None:
        self._applier = applier
        if self._cancel_requested:     # a second signal came between plan and apply
            applier.cancel()

    # ------------------------------------------------------------ reporting

    def _count(self, result: CycleResult) -> None:
        m = self.metrics
        m.cycles.labels(result.outcome).inc()
        now = time.time()
        m.last_cycle.set(now)
        if result.ok:
            m.last_success.set(now)
        if result.plan_s is not None:        # a cycle that never planned leaves the last figures
            m.drifted.set(result.drifted)
            m.pending.set(result.pending)
        for p in result.failed_policies:
            m.policy_failures.labels(p.policy, p.level).inc()
        self.health.record(result.outcome)

    def _audit(self, session: Session, result: CycleResult, plan, changes) -> None:
        """One audit record for a cycle that applied, failed or was refused.

        Never undoes or hides the work: a record that cannot be written is a warning."""
        outcome = {"applied": "success", "refused": "refused"}.get(result.outcome, "error")
        if result.outcome == "failed" and "cancelled" in result.message:
            outcome = "cancelled"
        detail = " ".join(filter(None, [f"revision {result.revision}" if result.revision else "",
                                        f"auto-apply {self.options.auto_apply}:",
                                        result.message]))
        try:
            from mlform import audit
        except ImportError:
            result.diagnostics.append(warning(
                "The audit trail is not available in this build; the cycle was not recorded"))
            return
        try:
            found = audit.record(session, "reconcile", outcome=outcome, plan=plan,
                                 changes=changes, detail=detail)
        except DiagnosticError as exc:
            result.diagnostics.extend(_as_warnings(exc.diagnostics))
            return
        except Exception as exc:
            result.diagnostics.append(warning(f"Could not write the audit record: {exc}"))
            return
        # it returns None, or a warning when the record could not be written
        for d in found if isinstance(found, (list, tuple)) else [found]:
            if isinstance(d, Diagnostic):
                result.diagnostics.append(d)


def _diagnostics_of(exc: Exception) -> list[Diagnostic]:
    if isinstance(exc, StateError):
        return [exc.diagnostic()]
    return list(exc.diagnostics) or [error("operation failed")]


def _as_warnings(diags) -> list[Diagnostic]:
    from dataclasses import replace
    return [replace(d, severity="warning") if getattr(d, "severity", "") == "error" else d
            for d in diags]


def _first_error(diags) -> str:
    for d in diags:
        if getattr(d, "severity", "error") == "error":
            return d.summary
    return "failed"


def _counts(plan: Plan) -> str:
    s = plan.summary
    return f"{s.add} to add, {s.change} to change, {s.destroy} to destroy"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`60s`, `5m`, `1h30m`, `250ms` or a plain number of seconds -> seconds."""
    t = text.strip().lower()
    try:
        return _non_negative(float(t), text)
    except ValueError:
        pass
    parts = _DURATION.findall(t)
    if not t or "".join(n + u for n, u in parts) != t:
        raise DiagnosticError.single(f'Invalid duration "{text}"',
                                     hint="Write it as 60s, 5m, 1h30m or a number of seconds.")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _non_negative(value: float, text: str) -> float:
    if value < 0:
        raise DiagnosticError.single(f'Invalid duration "{text}": it is negative')
    return value
