"""Apply: execute a plan's changes in dependency order, in parallel, durably.

The walk runs on one scheduler thread that owns every mutable thing (the
evaluation scopes, the ready set); only provider calls run on the worker
pool (`--parallelism`).  Each provider call is bracketed by a journal intent
and a journal result (`StateWriter`), so a kill at any instant loses nothing:
the next run finds the intent and adopts what the call made.

After a failure, in-flight calls finish, nothing new starts, and the summary
names each root cause once (failures of dependents that never started are
not repeated).  `cancel()` does the same for the first Ctrl-C.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from mlform.addresses import config_key
from mlform.diagnostics import Diagnostic, DiagnosticError, error
from mlform.expr import UNKNOWN, strip_sensitive
from mlform.expr.values import contains_unknown
from mlform.graph import NODE_OUTPUT, NODE_RESOURCE
from mlform.plan.diff import apply_ignore_changes
from mlform.plan.evaluate import Evaluator, Instance
from mlform.plan.model import Action, Change, Plan
from mlform.providers.base import Desired as ProviderDesired
from mlform.providers.base import LiveObject, Planned, ProgressEvent, ProviderError
from mlform.state import ResourceState, State, StateError, StateWriter, hash_value, mask


@dataclass
class ApplyResult:
    state: State | None = None
    added: int = 0
    changed: int = 0
    destroyed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    cancelled: bool = False
    not_started: int = 0
    outputs: dict[str, tuple[Any, bool]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.diagnostics and not self.cancelled


@dataclass
class _Op:
    """One provider operation sequence for one instance, run on a worker."""

    change: Change
    unit: str
    inst: Instance | None
    prior: ResourceState | None
    planned: Planned | None
    sensitive_paths: list
    dependencies: list[str]


@dataclass
class _Unit:
    key: str
    deps: set[str]
    run: Callable[["Applier", "_Unit"], None]     # plans the unit's ops and _submits them
    node: Any = None
    change: Change | None = None
    outstanding: int = 0
    failed: bool = False


_COUNTS = {Action.CREATE: ("added",), Action.UPDATE: ("changed",), Action.DELETE: ("destroyed",),
           Action.DELETE_CREATE: ("added", "destroyed"), Action.CREATE_DELETE: ("added", "destroyed")}


class Applier:
    def __init__(self, session, plan: Plan, writer: StateWriter, *, parallelism: int = 10,
                 progress: Callable[[ProgressEvent], None] | None = None) -> None:
        self.session = session
        self.plan = plan
        self.writer = writer
        self.parallelism = max(1, parallelism)
        self.progress = progress or (lambda e: None)
        self.cancel_event = threading.Event()
        self.result = ApplyResult()
        self.by_address = {c.address: c for c in plan.changes}
        self.refreshed = {a: ResourceState.from_json(r) for a, r in plan.refreshed.items()}
        self.lineage = writer.lineage
        # Results come back to the scheduler thread through _done; work goes out to the
        # workers through _work (C-implemented queues: no Future or lock per operation).
        self._done: "queue.SimpleQueue[tuple[_Unit, _Op, Any, BaseException | None]]" = \
            queue.SimpleQueue()
        self._work: "queue.SimpleQueue[tuple[_Unit, _Op] | None]" = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._inflight = 0
        self._stopping = False
        self._outputs: dict[str, Any] = {}
        self._edges = session.graph.resource_edges()

    def cancel(self) -> None:
        """First Ctrl-C: stop scheduling, let in-flight calls finish, save."""
        self.cancel_event.set()

    # ------------------------------------------------------------ entry

    def run(self) -> ApplyResult:
        mode = self.plan.mode
        if mode == "refresh-only":
            self._record_refresh()
        else:
            self._record_refresh()
            units = self._destroy_units() if mode == "destroy" else self._normal_units()
            self._schedule(units)
            if mode == "normal" and not self._stopping:
                self._record_outputs()
            elif mode == "destroy" and not self._stopping and not self.plan.targets:
                # A full destroy leaves nothing for outputs to describe; a targeted one keeps them.
                self.writer.set_outputs({})
        self.result.cancelled = self.cancel_event.is_set()
        return self.result

    def _record_refresh(self) -> None:
        """What refresh found becomes state: drifted attributes, objects gone."""
        recorded = self.writer.addresses()    # (no copy of the whole state)
        for address, rs in self.refreshed.items():
            old = self.writer.get(address)
            if old is None or old.attributes != rs.attributes or old.id != rs.id:
                self.writer.record(rs)
        for address in recorded:
            if address not in self.refreshed:
                self.writer.record_delete(address)

    # ------------------------------------------------------------ units

    def _normal_units(self) -> dict[str, _Unit]:
        graph = self.session.graph
        self.ev = Evaluator(graph, self.session.stack_dir, self.session.variables.values,
                            self.session.env_name)
        units: dict[str, _Unit] = {}
        for key, node in graph.nodes.items():
            units[key] = _Unit(key, set(node.deps), Applier._run_node, node=node)
        deletes = [c for c in self.plan.changes if c.action is Action.DELETE]
        self._add_delete_units(units, deletes)
        # An orphan is deleted after the blocks that used to depend on it moved on.
        for c in deletes:
            key = config_key(c.address)
            for rs in self.refreshed.values():
                if key in rs.dependencies:
                    owner = config_key(rs.address)
                    if owner in units and owner != key:
                        units[f"delete:{c.address}"].deps.add(owner)
        return units

    def _destroy_units(self) -> dict[str, _Unit]:
        units: dict[str, _Unit] = {}
        self._add_delete_units(units, [c for c in self.plan.changes if c.action is Action.DELETE])
        return units

    def _add_delete_units(self, units: dict[str, _Unit], deletes: list[Change]) -> None:
        by_key: dict[str, list[str]] = {}
        for c in deletes:
            by_key.setdefault(config_key(c.address), []).append(f"delete:{c.address}")
        for c in deletes:
            units[f"delete:{c.address}"] = _Unit(f"delete:{c.address}", set(), Applier._run_delete,
                                                 change=c)
        # X is deleted after everything that depends on X is deleted.
        for c in deletes:
            for dep in c.dependencies:
                for target in by_key.get(dep, ()):
                    if target != f"delete:{c.address}":
                        units[target].deps.add(f"delete:{c.address}")

    # ------------------------------------------------------------ scheduler

    def _schedule(self, units: dict[str, _Unit]) -> None:
        dependents: dict[str, list[str]] = {k: [] for k in units}
        waiting: dict[str, int] = {}
        for key, unit in units.items():
            unit.deps &= units.keys()
            waiting[key] = len(unit.deps)
            for dep in unit.deps:
                dependents[dep].append(key)
        ready = sorted(k for k, n in waiting.items() if n == 0)
        finished: set[str] = set()

        def complete(unit: _Unit) -> None:
            finished.add(unit.key)
            if unit.failed:
                return
            for nxt in dependents[unit.key]:
                waiting[nxt] -= 1
                if waiting[nxt] == 0:
                    ready.append(nxt)

        try:
            while True:
                while ready and not self._stopping:
                    if self.cancel_event.is_set():
                        self._stopping = True
                        break
                    unit = units[ready.pop()]
                    unit.outstanding = 0
                    try:
                        # A block's operations start as soon as each one is planned (_submit),
                        # so the first ones run while the rest are still being planned.
                        unit.run(self, unit)
                    except DiagnosticError as exc:
                        self._fail_unit(unit, exc.diagnostics)
                    if unit.outstanding == 0:
                        self._finish_unit(unit)
                        complete(unit)
                if self._inflight == 0:
                    break
                try:
                    unit, op, live, exc = self._done.get(timeout=0.2)
                except queue.Empty:
                    if self.cancel_event.is_set():
                        self._stopping = True
                    continue
                self._inflight -= 1
                self._settle(unit, op, live, exc)
                unit.outstanding -= 1
                if unit.outstanding == 0:
                    self._finish_unit(unit)
                    complete(unit)
        finally:
            # Work already handed out runs to its end (as ThreadPoolExecutor.shutdown(wait=True)).
            for _ in self._workers:
                self._work.put(None)
            for worker in self._workers:
                worker.join()
            self._workers.clear()
        self.result.not_started = sum(1 for k, u in units.items()
                                      if k not in finished and (u.change or (
                                          u.node is not None and u.node.type == NODE_RESOURCE)))

    def _submit(self, unit: _Unit, op: _Op) -> None:
        """Hand one operation to the workers (scheduler thread only)."""
        unit.outstanding += 1
        self._inflight += 1
        if len(self._workers) < min(self.parallelism, self._inflight):
            worker = threading.Thread(target=self._work_loop, daemon=True,
                                      name=f"mlform-apply-{len(self._workers)}")
            worker.start()
            self._workers.append(worker)
        self._work.put((unit, op))

    def _work_loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            self._worker(*item)

    def _fail_unit(self, unit: _Unit, diags: list[Diagnostic]) -> None:
        unit.failed = True
        self._stopping = True
        for d in diags:
            self.result.diagnostics.append(d)
            self.result.failures.append((d.address or unit.key, d.summary))

    def _finish_unit(self, unit: _Unit) -> None:
        if unit.failed:
            self._stopping = True

    # ------------------------------------------------------------ node work (scheduler thread)

    def _run_node(self, unit: _Unit) -> None:
        node = unit.node
        if node.type != NODE_RESOURCE:
            value = self.ev.evaluate_node(node)
            if node.type == NODE_OUTPUT and not node.module:
                self._outputs[node.name] = value
            return
        ev = self.ev
        instances = ev.expand(node)
        ev.declare_empty(node)
        submitted = 0
        res = node.config
        provider_key = self.session.provider_key_for(res)
        provider = self.session.provider(provider_key)
        schema = self.session.schema(provider_key, res.kind, res.source)
        deps = sorted(self._edges.get(node.key, ()))
        problems: list[Diagnostic] = []
        for inst in instances:
            change = self.by_address.get(inst.address)
            prior = self.refreshed.get(inst.address)
            if change is None or change.action is Action.NOOP:
                if prior is not None:
                    ev.set_instance(inst, prior.attributes, prior.sensitive_paths, prior.id)
                    if change is not None and list(prior.dependencies) != deps:
                        self.writer.record(ResourceState(**{**prior.__dict__, "dependencies": deps}))
                    continue
                if change is None:
                    # Not selected by --target and not yet created: downstream sees unknowns
                    # (computed attributes too, so outputs that read them stay unknown).
                    desired = ev.desired(inst)
                    unknowns = {k: UNKNOWN if v is None else v for k, v in desired.attributes.items()}
                    unknowns.update({k: UNKNOWN for k in schema.computed if "." not in k})
                    ev.set_instance(inst, unknowns, [], UNKNOWN)
                    continue
            try:
                planned, sens = self._final_plan(inst, change, prior, provider, provider_key,
                                                 schema.computed)
            except DiagnosticError as exc:
                problems.extend(exc.diagnostics)
                continue
            self._submit(unit, _Op(change, unit.key, inst, prior, planned, sens, deps))
            submitted += 1
        if problems:
            if submitted:
                # Some instances are fine: they run, but this block counts as failed.
                self._fail_unit(unit, problems)
                return
            raise DiagnosticError(problems)

    def _final_plan(self, inst: Instance, change: Change, prior, provider, provider_key: str,
                    computed) -> tuple[Planned, list]:
        """Re-evaluate with applied upstream values; must agree with the saved plan."""
        desired = self.ev.desired(inst)
        if desired.diagnostics:
            raise DiagnosticError(desired.diagnostics)
        request = ProviderDesired(inst.address, inst.kind, inst.name, desired.attributes)
        # A replacement is planned as a new object (no prior), as the planner did.
        prior_live = (LiveObject(inst.address, inst.kind, prior.id, prior.attributes)
                      if prior and not change.action.is_replace else None)
        try:
            planned = provider.plan(request, prior_live)
        except ProviderError as exc:
            raise DiagnosticError.single(f"Planning {inst.address} failed: {exc.message}",
                                         address=inst.address)
        attrs = dict(planned.attributes)
        lc = inst.resource.lifecycle
        if lc.ignore_changes and prior is not None:  # a replacement keeps them too, as planned
            attrs = apply_ignore_changes(prior.attributes, attrs, lc.ignored, computed)
        masked = mask(attrs, desired.sensitive_paths, self.lineage)
        for path, saved, now in _differences(change.after or {}, masked):
            if not contains_unknown(now):
                raise DiagnosticError.single(
                    f"Provider \"{provider_key}\" produced an inconsistent final plan for {inst.address}",
                    detail=f"When applying, {'.'.join(map(str, path))} was {_short(now)}, but the plan "
                           f"said {_short(saved)}. The spec, a file it reads, or an upstream result "
                           "changed after the plan was made.",
                    address=inst.address, hint="Run plan again and review the new plan.")
        return (Planned(planned.address, planned.kind, planned.name, attrs, planned.replace_paths,
                        planned.reasons), desired.sensitive_paths)

    def _run_delete(self, unit: _Unit) -> None:
        c = unit.change
        prior = self.refreshed.get(c.address)
        if prior is not None:
            self._submit(unit, _Op(c, unit.key, None, prior, None, [], list(prior.dependencies)))

    # ------------------------------------------------------------ provider work (worker threads)

    def _worker(self, unit: _Unit, op: _Op) -> None:
        try:
            live = self._execute(op)
            self._done.put((unit, op, live, None))
        except BaseException as exc:  # reported on the scheduler thread
            self._done.put((unit, op, None, exc))

    def _emit(self, address: str, message: str, waiting: str = "") -> None:
        try:
            self.progress(ProgressEvent(address, message, waiting))
        except Exception:
            pass  # a broken progress renderer must not break an apply

    def _execute(self, op: _Op):
        c = op.change
        provider = self.session.provider(c.provider if op.prior is None or op.planned is not None
                                         else op.prior.provider)
        prior_live = (LiveObject(op.prior.address, op.prior.kind, op.prior.id, op.prior.attributes)
                      if op.prior else None)
        w = self.writer
        start = time.monotonic()
        action = c.action
        if action is Action.DELETE:
            self._emit(c.address, "Destroying...")
            w.intent(c.address, c.kind, op.prior.provider, "delete", op.prior.id)
            provider.delete(prior_live)
            w.record_delete(c.address)
            self._emit(c.address, f"Destruction complete after {time.monotonic() - start:.1f}s")
            return None
        if action is Action.DELETE_CREATE and prior_live is not None:
            self._emit(c.address, "Destroying (replace)...")
            w.intent(c.address, c.kind, c.provider, "delete", op.prior.id)
            provider.delete(prior_live)
            w.record_delete(c.address)
        if action in (Action.CREATE, Action.DELETE_CREATE, Action.CREATE_DELETE):
            self._emit(c.address, "Creating...")
            w.intent(c.address, c.kind, c.provider, "create", None)
            live = self._guarded(provider.create, op, op.planned)
            self._record(op, live)
            if action is Action.CREATE_DELETE and prior_live is not None and live.id != prior_live.id:
                self._emit(c.address, "Destroying the replaced object...")
                provider.delete(prior_live)
            self._emit(c.address, f"Creation complete after {time.monotonic() - start:.1f}s "
                                  f"[id={live.id}]")
            return live
        self._emit(c.address, "Modifying...")
        w.intent(c.address, c.kind, c.provider, "update", op.prior.id if op.prior else None)
        live = self._guarded(provider.update, op, prior_live, op.planned)
        self._record(op, live)
        self._emit(c.address, f"Modifications complete after {time.monotonic() - start:.1f}s "
                              f"[id={live.id}]")
        return live

    def _guarded(self, call, op: _Op, *args):
        try:
            return call(*args)
        except ProviderError as exc:
            if exc.partial is not None:
                # Half-made: record it tainted so the next apply replaces it, never orphans it.
                self._record(op, exc.partial, status="tainted")
            else:
                self.writer.abandon(op.change.address)
            raise

    def _record(self, op: _Op, live, status: str = "ok") -> None:
        inst = op.inst
        c = op.change
        self.writer.record(ResourceState(
            address=c.address, kind=c.kind, name=c.name, module=c.module, index_key=c.index_key,
            provider=c.provider, id=live.id, attributes=dict(live.attributes),
            sensitive_paths=[list(p) for p in op.sensitive_paths],
            dependencies=list(op.dependencies), status=status))

    # ------------------------------------------------------------ results (scheduler thread)

    def _settle(self, unit: _Unit, op: _Op, live, exc: BaseException | None) -> None:
        c = op.change
        if exc is not None:
            unit.failed = True
            self._stopping = True
            action_word = {Action.CREATE: "create", Action.UPDATE: "update",
                           Action.DELETE: "delete"}.get(c.action, "replace")
            if isinstance(exc, ProviderError):
                msg = _failure_message(c.address, action_word, exc.message, exc.service_message)
                hint = "Retrying may help." if exc.retryable else ""
            elif isinstance(exc, StateError):
                # The provider call may have succeeded; recording it did not.  The intent is
                # in the journal (or the lost record is), so the next command adopts it.
                msg = (f"{action_word} ran, but recording the result in the state failed: "
                       f"{exc.summary}" + (f": {exc.detail}" if exc.detail else ""))
                hint = (exc.hint or "") + (" " if exc.hint else "") + (
                    "Run the command again: the next run reads the object by its "
                    "deterministic name and records it.")
            else:
                msg = f"{action_word} failed: provider crashed: {type(exc).__name__}: {exc}"
                hint = f'This is a bug in the provider "{c.provider}".'
            self.result.failures.append((c.address, msg))
            self.result.diagnostics.append(error(f"{c.address}: {msg}", address=c.address,
                                                 hint=hint))
            return
        for counter in _COUNTS.get(c.action, ()):
            setattr(self.result, counter, getattr(self.result, counter) + 1)
        if live is not None and op.inst is not None:
            self._check_result(op, live)
            self.ev.set_instance(op.inst, dict(live.attributes), op.sensitive_paths, live.id)

    def _check_result(self, op: _Op, live) -> None:
        """The core does not trust the plugin: applied values must match the known plan."""
        for path, planned, got in _differences(dict(op.planned.attributes), live.attributes):
            self.result.diagnostics.append(error(
                f'Provider "{op.change.provider}" produced an inconsistent result for '
                f"{op.change.address}",
                detail=f"{'.'.join(map(str, path))} was planned as {_short(planned)} but the "
                       f"provider returned {_short(got)}. This is a bug in the provider.",
                address=op.change.address))
            return

    def _record_outputs(self) -> None:
        outputs = {}
        for name, value in self._outputs.items():
            node = self.session.graph.nodes[f"output.{name}"]
            clear, marked = strip_sensitive(value)
            sensitive = bool(marked) or node.config.sensitive
            if contains_unknown(clear):
                continue
            outputs[name] = {"value": hash_value(clear, self.lineage) if sensitive else clear,
                             "sensitive": sensitive}
            self.result.outputs[name] = (clear, sensitive)
        self.writer.set_outputs(outputs)


def _differences(expected: Any, actual: Any, path: tuple = ()):
    """(path, leaf, value found) for each known leaf of `expected` whose value in `actual`
    differs, in `iter_paths` order; a value is found as `_get` finds it (None when the path
    does not exist).  Equal subtrees are skipped whole: the common case costs one `==`."""
    if expected is UNKNOWN or expected == actual:
        return
    if isinstance(expected, dict) and expected:
        for key, item in expected.items():
            found = actual[key] if isinstance(actual, dict) and key in actual else None
            yield from _differences(item, found, path + (key,))
    elif isinstance(expected, list) and expected:
        for index, item in enumerate(expected):
            found = actual[index] if isinstance(actual, list) and index < len(actual) else None
            yield from _differences(item, found, path + (index,))
    elif path:
        yield path, expected, actual


def _failure_message(address: str, action_word: str, message: str, service_message: str) -> str:
    """`create failed: <what the service said>`, each part once: providers often name the
    resource and the operation themselves, and repeat the service's words in `message`."""
    msg = message[len(address) + 2:] if message.startswith(f"{address}: ") else message
    if service_message and service_message not in msg:
        msg = f"{msg} ({service_message})"
    return msg if f"{action_word} failed" in msg else f"{action_word} failed: {msg}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def apply_plan(session, plan: Plan, writer: StateWriter, *, parallelism: int = 10,
               progress=None, on_start: Callable[[Applier], None] | None = None) -> ApplyResult:
    applier = Applier(session, plan, writer, parallelism=parallelism, progress=progress)
    if on_start is not None:
        on_start(applier)
    return applier.run()


__all__ = ["Applier", "ApplyResult", "apply_plan"]
