"""Apply: execute a plan's changes in dependency order, in parallel, durably.

The walk is the one graph walker (`mlform.walk`); this module is its apply executor.
Visiting a unit runs on the walk's thread, which owns every mutable thing (the
evaluation scopes, the fact table): it re-evaluates a block with what its upstream
blocks really produced, asks the provider for the final plan of each instance (which
must agree with the saved plan), and hands each instance's operation to a worker
(`--parallelism` threads).  Facts a final plan needs are read on a worker too, and
the block is visited again when they are in.

What an operation does is the action's row in `STEPS`: a sequence of provider calls,
each bracketed by a journal intent before it and a result after it (`StateWriter`),
so a kill at any instant loses nothing.  The next run finds an intent without a result
and reads what the call made (`mlform.recovery`).  In a create_before_destroy
replacement the old object stays recorded as *deposed* on the new one until its delete
is recorded, so no kill can orphan it: the next plan deletes it.

After a failure, in-flight calls finish, nothing new starts, and the summary names
each root cause once (dependents that never started are not repeated).  `cancel()`
does the same for the first Ctrl-C.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from typing import Any, Callable

from mlform.addresses import config_key
from mlform.diagnostics import Diagnostic, DiagnosticError, error
from mlform.expr import UNKNOWN, strip_sensitive
from mlform.expr.values import contains_unknown
from mlform.facts import read_facts
from mlform.graph import NODE_OUTPUT, NODE_RESOURCE
from mlform.plan.diff import apply_ignore_changes
from mlform.plan.evaluate import Evaluator, Instance
from mlform.plan.inputs import ENGINE, FactTable, ProviderSet
from mlform.plan.model import Action, Change, Plan
from mlform.providers.base import Desired, LiveObject, Planned, ProgressEvent, ProviderError
from mlform.providers.kit.digests import DigestCache
from mlform.state import ResourceState, State, StateError, StateWriter, hash_value, mask
from mlform.walk import NeedFacts, Unit, Visit, Walk

__all__ = ["Applier", "ApplyResult", "apply_plan", "STEPS"]


@dataclass
class ApplyResult:
    state: State | None = None
    added: int = 0
    changed: int = 0
    destroyed: int = 0
    diagnostics: list[Diagnostic] = field(default_factory=list)
    cancelled: bool = False
    not_started: int = 0
    outputs: dict[str, tuple[Any, bool]] = field(default_factory=dict)

    @property
    def failures(self) -> list[tuple[str, str]]:
        """(address, message) of each error, for the summary: the diagnostics, shortened
        (a summary that starts with its address names it once)."""
        out = []
        for d in self.diagnostics:
            if d.severity != "error":
                continue
            address = d.address or ""
            prefix = f"{address}: "
            out.append((address, d.summary[len(prefix):] if address and
                        d.summary.startswith(prefix) else d.summary))
        return out

    @property
    def ok(self) -> bool:
        return not self.diagnostics and not self.cancelled

    def count(self, action: Action) -> None:
        for counter in action.counts:
            setattr(self, counter, getattr(self, counter) + 1)


@dataclass
class _Op:
    """One instance's provider operations (a row of `STEPS`), run on a worker."""

    change: Change
    inst: Instance | None
    prior: ResourceState | None
    planned: Planned | None
    sensitive_paths: list
    dependencies: list[str]
    live: Any = None                        # what the last step returned

    def run(self, applier: "Applier") -> Any:
        steps = DEPOSED_STEPS if self.change.deposed else STEPS[self.change.action]
        for step in steps:
            step(applier, self)
        return self.live


@dataclass
class _FactsOp:
    """Reading the facts a block's final plans need (visited again when done)."""

    requests: frozenset

    def run(self, applier: "Applier") -> Any:
        return read_facts(self.requests, applier.providers, applier.digests)


class Applier:
    def __init__(self, session, plan: Plan, writer: StateWriter, *, parallelism: int = 10,
                 progress: Callable[[ProgressEvent], None] | None = None,
                 providers: ProviderSet | None = None) -> None:
        self.session = session
        self.plan = plan
        self.writer = writer
        self.parallelism = max(1, parallelism)
        self.progress = progress or (lambda e: None)
        self.cancel_event = threading.Event()
        self.result = ApplyResult()
        self.by_address = {c.address: c for c in plan.changes if not c.deposed}
        self.refreshed = {a: ResourceState.from_json(r) for a, r in plan.refreshed.items()}
        self.providers = providers if providers is not None else session.provider_set(
            keys={rs.provider for rs in self.refreshed.values()})
        self.digests: DigestCache = session.digests
        self.facts = FactTable()
        self.lineage = writer.lineage
        # Results come back to the walk's thread through _done; work goes out to the
        # workers through _work (C-implemented queues: no Future or lock per operation).
        self._done: "queue.SimpleQueue[tuple[Unit, Any, Any, BaseException | None]]" = \
            queue.SimpleQueue()
        self._work: "queue.SimpleQueue[tuple[Unit, Any] | None]" = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._submitted: set[str] = set()     # addresses whose operation was handed out
        self._inflight = 0
        self._outputs: dict[str, Any] = {}
        self._edges = session.graph.resource_edges()
        self.walk: Walk | None = None

    def cancel(self) -> None:
        """First Ctrl-C: stop scheduling, let in-flight calls finish, save."""
        self.cancel_event.set()

    # ------------------------------------------------------------ entry

    def run(self) -> ApplyResult:
        mode = self.plan.mode
        self._record_refresh()
        if mode != "refresh-only":
            units = self._destroy_units() if mode == "destroy" else self._normal_units()
            self.walk = Walk(units, self, stop_on_failure=True,
                             cancelled=self.cancel_event.is_set)
            try:
                self.walk.run()
            finally:
                # Work already handed out runs to its end (as ThreadPoolExecutor.shutdown).
                for _ in self._workers:
                    self._work.put(None)
                for worker in self._workers:
                    worker.join()
                self._workers.clear()
            self.result.not_started = self.walk.not_started(
                lambda u: u.change is not None or u.node.type == NODE_RESOURCE)
            if not self.walk.stopping:
                if mode == "normal":
                    self._record_outputs()
                elif not self.plan.targets:
                    # A full destroy leaves nothing for outputs to describe; a targeted one
                    # keeps them.
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

    def _normal_units(self) -> dict[str, Unit]:
        graph = self.session.graph
        self.ev = Evaluator(graph, self.session.stack_dir, self.session.variables.values,
                            self.session.env_name)
        order = {node.key: i for i, node in enumerate(graph.topological())}
        units = {key: Unit(key, set(node.deps), node=node, order=order[key])
                 for key, node in graph.nodes.items()}
        deletes = [c for c in self.plan.changes if c.action is Action.DELETE and not c.deposed]
        self._add_delete_units(units, deletes, len(order))
        self._add_deposed_units(units)
        # An orphan is deleted after the blocks that used to depend on it moved on.
        for c in deletes:
            key = config_key(c.address)
            for rs in self.refreshed.values():
                if key in rs.dependencies:
                    owner = config_key(rs.address)
                    if owner in units and owner != key:
                        units[f"delete:{c.address}"].deps.add(owner)
        return units

    def _destroy_units(self) -> dict[str, Unit]:
        units: dict[str, Unit] = {}
        self._add_delete_units(units, [c for c in self.plan.changes
                                       if c.action is Action.DELETE and not c.deposed], 0)
        self._add_deposed_units(units)
        return units

    def _add_deposed_units(self, units: dict[str, Unit]) -> None:
        """A unit per deposed object; the address's own work (its block, or its delete)
        waits for them, so two units never record the same address at once."""
        for i, c in enumerate(c for c in self.plan.changes if c.deposed):
            key = f"delete-deposed:{c.address}:{c.deposed}"
            units[key] = Unit(key, set(), change=c, order=-1 - i)
            for owner in (config_key(c.address), f"delete:{c.address}"):
                if owner in units:
                    units[owner].deps.add(key)

    @staticmethod
    def _add_delete_units(units: dict[str, Unit], deletes: list[Change], first: int) -> None:
        by_key: dict[str, list[str]] = {}
        for c in deletes:
            by_key.setdefault(config_key(c.address), []).append(f"delete:{c.address}")
        for i, c in enumerate(deletes):
            key = f"delete:{c.address}"
            units[key] = Unit(key, set(), change=c, order=first + i)
        # X is deleted after everything that depends on X is deleted.
        for c in deletes:
            for dep in c.dependencies:
                for target in by_key.get(dep, ()):
                    if target != f"delete:{c.address}":
                        units[target].deps.add(f"delete:{c.address}")

    # ------------------------------------------------------------ the walk's executor

    def visit(self, unit: Unit) -> Visit:
        try:
            if unit.change is not None:
                return self._visit_delete(unit)
            if unit.node.type != NODE_RESOURCE:
                value = self.ev.evaluate_node(unit.node)
                if unit.node.type == NODE_OUTPUT and not unit.node.module:
                    self._outputs[unit.node.name] = value
                return Visit.DONE
            return self._visit_resource(unit)
        except DiagnosticError as exc:
            self._fail(unit, exc.diagnostics)
            return Visit.FAILED

    def wait(self) -> Unit | None:
        try:
            unit, op, outcome, exc = self._done.get(timeout=0.2)
        except queue.Empty:
            return None
        unit.outstanding -= 1
        if isinstance(op, _FactsOp):
            if exc is not None:
                self._fail(unit, [error(f"Reading facts for {unit.key} failed: {exc}")])
            else:
                self.facts.add(outcome)
                unit.revisit = True
        else:
            self._settle(unit, op, outcome, exc)
        return unit

    def _submit(self, unit: Unit, op: Any) -> None:
        """Hand one operation to the workers (walk thread only)."""
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
            unit, op = item
            try:
                self._done.put((unit, op, op.run(self), None))
            except BaseException as exc:  # reported on the walk's thread
                self._done.put((unit, op, None, exc))

    def _fail(self, unit: Unit, diags: list[Diagnostic]) -> None:
        unit.failed = True
        self.result.diagnostics.extend(dc_replace(d, address=d.address or unit.key)
                                       for d in diags)

    # ------------------------------------------------------------ node work (walk thread)

    def _visit_delete(self, unit: Unit) -> Visit:
        c = unit.change
        prior = self.refreshed.get(c.address)
        if prior is None or (prior.holds_only_deposed and not c.deposed):
            return Visit.DONE
        self._submit(unit, _Op(c, None, prior, None, [], list(prior.dependencies)))
        return Visit.RUNNING

    def _visit_resource(self, unit: Unit) -> Visit:
        node = unit.node
        ev = self.ev
        instances = ev.expand(node)
        res = node.config
        provider_key = self.providers.key_for(res)
        provider = self.providers.get(provider_key)
        schema = self.providers.schema(provider_key, res.kind, res.source)
        deps = sorted(self._edges.get(node.key, ()))
        # Each operation goes to the workers as soon as its final plan is made, so they
        # start while the rest of the block is planned.  An instance whose plan needs
        # facts waits for them (read on a worker) and the block is visited again; what
        # was handed out already is not planned twice.
        submitted = False
        problems: list[Diagnostic] = []
        needs: set = set()
        for inst in instances:
            if inst.address in self._submitted:
                continue
            change = self.by_address.get(inst.address)
            prior = self.refreshed.get(inst.address)
            if prior is not None and prior.holds_only_deposed:
                prior = None        # the object is gone; only its deposed objects are left
            try:
                if change is None or change.action is Action.NOOP:
                    self._unchanged(inst, change, prior, schema, deps)
                    continue
                planned, sens = self._final_plan(inst, change, prior, provider, provider_key,
                                                 schema.computed)
            except NeedFacts as exc:
                needs |= exc.requests
                continue
            except DiagnosticError as exc:
                problems.extend(exc.diagnostics)
                continue
            self._submitted.add(inst.address)
            self._submit(unit, _Op(change, inst, prior, planned, sens, deps))
            submitted = True
        if needs and not problems:
            self._submit(unit, _FactsOp(frozenset(needs)))
            return Visit.RUNNING
        ev.declare_empty(node)
        if problems:
            # Some instances may be fine: they run, but this block counts as failed.
            self._fail(unit, problems)
            return Visit.RUNNING if submitted else Visit.FAILED
        return Visit.RUNNING if submitted else Visit.DONE

    def _unchanged(self, inst: Instance, change: Change | None, prior, schema, deps) -> None:
        """An instance the plan leaves alone: downstream sees what it is (or will be)."""
        if prior is not None:
            self.ev.set_instance(inst, prior.attributes, prior.sensitive_paths, prior.id)
            if change is not None and list(prior.dependencies) != deps:
                self.writer.record(ResourceState(**{**prior.__dict__, "dependencies": deps}))
            return
        if change is None:
            # Not selected by --target and not yet created: downstream sees unknowns
            # (computed attributes too, so outputs that read them stay unknown).
            desired = self.ev.desired(inst, self.facts.view(ENGINE))
            unknowns = {k: UNKNOWN if v is None else v for k, v in desired.attributes.items()}
            unknowns.update({k: UNKNOWN for k in schema.computed if "." not in k})
            self.ev.set_instance(inst, unknowns, [], UNKNOWN)

    def _final_plan(self, inst: Instance, change: Change, prior, provider, provider_key: str,
                    computed) -> tuple[Planned, list]:
        """Re-evaluate with applied upstream values; must agree with the saved plan."""
        desired = self.ev.desired(inst, self.facts.view(ENGINE))
        if desired.diagnostics:
            raise DiagnosticError(desired.diagnostics)
        request = Desired(inst.address, inst.kind, inst.name, desired.attributes)
        # A replacement is planned as a new object (no prior), as the planner did.
        prior_live = (LiveObject(inst.address, inst.kind, prior.id, prior.attributes)
                      if prior and not change.action.is_replace else None)
        keys = provider.fact_keys(request, prior_live)
        missing = self.facts.missing(provider_key, keys) if keys else ()
        if missing:
            raise NeedFacts(missing)
        try:
            planned = provider.plan(request, prior_live, self.facts.view(provider_key))
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
        replaces = prior.id if prior is not None and change.action is Action.CREATE_DELETE else None
        return (Planned(planned.address, planned.kind, planned.name, attrs, planned.replace_paths,
                        planned.reasons, replaces=replaces), desired.sensitive_paths)

    # ------------------------------------------------------------ provider work (workers)

    def emit(self, address: str, message: str, waiting: str = "") -> None:
        try:
            self.progress(ProgressEvent(address, message, waiting))
        except Exception:
            pass  # a broken progress renderer must not break an apply

    def provider_of(self, op: _Op):
        c = op.change
        return self.providers.get(c.provider if op.prior is None or op.planned is not None
                                  else op.prior.provider)

    def guarded(self, call, op: _Op, *args):
        """A create or update: a half-made object is recorded tainted, never orphaned."""
        try:
            return call(*args)
        except ProviderError as exc:
            if exc.partial is not None:
                self.record(op, exc.partial, status="tainted")
            else:
                self.writer.abandon(op.change.address)
            raise

    def record(self, op: _Op, live, status: str = "ok", deposed: list | None = None) -> None:
        """Record `live` as the object at the change's address.  Deposed objects recorded
        there stay (unless `deposed` says which now are): only their own delete ends them."""
        c = op.change
        if deposed is None:
            current = self.writer.get(c.address)
            deposed = list(current.deposed) if current is not None else []
        self.writer.record(ResourceState(
            address=c.address, kind=c.kind, name=c.name, module=c.module, index_key=c.index_key,
            provider=c.provider, id=live.id, attributes=dict(live.attributes),
            sensitive_paths=[list(p) for p in op.sensitive_paths],
            dependencies=list(op.dependencies), status=status, deposed=deposed))

    # ------------------------------------------------------------ results (walk thread)

    def _settle(self, unit: Unit, op: _Op, live, exc: BaseException | None) -> None:
        c = op.change
        if exc is not None:
            action_word = {Action.CREATE: "create", Action.UPDATE: "update",
                           Action.DELETE: "delete"}.get(c.action, "replace")
            if isinstance(exc, ProviderError):
                msg = _failure_message(c.address, action_word, exc.message, exc.service_message)
                hint = " ".join(h for h in (getattr(exc, "hint", ""),
                                            "Retrying may help." if exc.retryable else "") if h)
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
            # located at the resource's block, as plan-time diagnostics are
            source = op.inst.resource.source if op.inst is not None else None
            self._fail(unit, [error(f"{c.address}: {msg}", address=c.address, hint=hint,
                                    source=source)])
            return
        self.result.count(c.action)
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


# ---------------------------------------------------------------- the action table
#
# Each step is one provider call with its journal intent before and its record after.

def _destroy(applier: Applier, op: _Op) -> None:
    c, prior = op.change, op.prior
    start = time.monotonic()
    applier.emit(c.address, "Destroying...")
    applier.writer.intent(c.address, c.kind, prior.provider, "delete", prior.id)
    applier.provider_of(op).delete(LiveObject(prior.address, prior.kind, prior.id,
                                              prior.attributes))
    applier.writer.record_delete(c.address)
    applier.emit(c.address, f"Destruction complete after {time.monotonic() - start:.1f}s")


def _destroy_first(applier: Applier, op: _Op) -> None:
    """The delete half of a plain (destroy-then-create) replacement."""
    c, prior = op.change, op.prior
    if prior is None:
        return
    applier.emit(c.address, "Destroying (replace)...")
    applier.writer.intent(c.address, c.kind, c.provider, "delete", prior.id)
    applier.provider_of(op).delete(LiveObject(prior.address, prior.kind, prior.id,
                                              prior.attributes))
    applier.writer.record_delete(c.address)


def _create(applier: Applier, op: _Op) -> None:
    c, prior = op.change, op.prior
    start = time.monotonic()
    applier.emit(c.address, "Creating...")
    # A create_before_destroy replacement: the old object stays until the new one is
    # recorded, and is then recorded as deposed (its delete is the next step), so no
    # kill can lose track of either.
    replacing = prior.id if c.action is Action.CREATE_DELETE and prior is not None else None
    applier.writer.intent(c.address, c.kind, c.provider, "create", None, replaces=replacing)
    live = applier.guarded(applier.provider_of(op).create, op, op.planned)
    current = applier.writer.get(c.address)
    deposed = list(current.deposed) if current is not None else []
    if replacing is not None and live.id != replacing:
        deposed.append({"id": replacing, "attributes": prior.attributes})
    applier.record(op, live, deposed=deposed)
    op.live = live
    applier.emit(c.address, f"Creation complete after {time.monotonic() - start:.1f}s "
                            f"[id={live.id}]")


def _destroy_replaced(applier: Applier, op: _Op) -> None:
    """The delete half of a create_before_destroy replacement: the old object, deposed
    when the new one was recorded."""
    c, prior, live = op.change, op.prior, op.live
    if prior is None or live is None or live.id == prior.id:
        return          # the provider reused the object (its ids come from the address)
    applier.emit(c.address, "Destroying the replaced object...")
    _delete_deposed(applier, c.address, c.kind, c.provider, prior.id, prior.attributes)


def _destroy_deposed(applier: Applier, op: _Op) -> None:
    """A deposed object the plan deletes (an earlier replacement was interrupted)."""
    c = op.change
    applier.emit(c.address, f"Destroying deposed object {c.deposed}...")
    _delete_deposed(applier, c.address, c.kind, c.provider, c.deposed, c.before or {})


def _delete_deposed(applier: Applier, address: str, kind: str, provider: str, id: str,
                    attributes) -> None:
    applier.writer.intent(address, kind, provider, "delete-deposed", id)
    applier.providers.get(provider).delete(LiveObject(address, kind, id, dict(attributes)))
    current = applier.writer.get(address)
    if current is None:
        applier.writer.abandon(address)
        return
    rest = [d for d in current.deposed if d.get("id") != id]
    if current.holds_only_deposed and not rest:
        applier.writer.record_delete(address)       # the placeholder held nothing else
    else:
        applier.writer.record(current.with_deposed(rest))


def _update(applier: Applier, op: _Op) -> None:
    c, prior = op.change, op.prior
    start = time.monotonic()
    applier.emit(c.address, "Modifying...")
    applier.writer.intent(c.address, c.kind, c.provider, "update", prior.id if prior else None)
    prior_live = LiveObject(prior.address, prior.kind, prior.id, prior.attributes) \
        if prior else None
    live = applier.guarded(applier.provider_of(op).update, op, prior_live, op.planned)
    applier.record(op, live)
    op.live = live
    applier.emit(c.address, f"Modifications complete after {time.monotonic() - start:.1f}s "
                            f"[id={live.id}]")


#: action -> the provider calls that carry it out, in order
STEPS: dict[Action, tuple[Callable[[Applier, _Op], None], ...]] = {
    Action.CREATE: (_create,),
    Action.UPDATE: (_update,),
    Action.DELETE: (_destroy,),
    Action.DELETE_CREATE: (_destroy_first, _create),
    Action.CREATE_DELETE: (_create, _destroy_replaced),
}
#: the delete of a deposed object
DEPOSED_STEPS = (_destroy_deposed,)


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
               progress=None, on_start: Callable[[Applier], None] | None = None,
               providers: ProviderSet | None = None) -> ApplyResult:
    applier = Applier(session, plan, writer, parallelism=parallelism, progress=progress,
                      providers=providers)
    if on_start is not None:
        on_start(applier)
    return applier.run()
