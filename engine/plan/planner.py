"""The planning walk: configuration + refreshed state → a `Plan` value.

Order of work:
1. refresh (parallel reads through providers) → refreshed state + drift;
2. walk the graph in dependency order: evaluate each block, expand instances,
   ask the provider for its plan, run the pure diff, attach reasons;
3. instances in the state but not in the configuration become deletes;
4. outputs; 5. `--target` selection.

Provider calls here are side-effect free (`validate`, `plan`, `read`); the
diff itself (`diff.py`) is pure.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from typing import Any

from mlform._gc import paused_gc
from mlform.addresses import config_key, matches
from mlform.config.model import Resource
from mlform.diagnostics import Diagnostic, DiagnosticError, error
from mlform.expr import UNKNOWN, Sensitive, strip_sensitive
from mlform.expr.values import contains_unknown
from mlform.graph import NODE_OUTPUT, NODE_RESOURCE
from mlform.plan.diff import (
    DiffInput, apply_ignore_changes, changed_paths, diff, dotted, parse_dotted,
)
from mlform.plan.evaluate import Evaluator, Instance
from mlform.plan.lineage import rerun_reasons
from mlform.plan.model import Action, Change, OutputChange, Plan
from mlform.plan.refresh import refresh
from mlform.providers.base import Desired as ProviderDesired
from mlform.providers.base import LiveObject, ProviderError
from mlform.state import State, hash_value, mask


@dataclass(frozen=True)
class PlanOptions:
    mode: str = "normal"            # "normal" | "destroy" | "refresh-only"
    refresh: bool = True
    targets: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    parallelism: int = 10


@dataclass
class PlanTiming:
    refresh_s: float = 0.0
    walk_s: float = 0.0


# How an upstream change reads in a downstream reason ("model.fraud gets a new version"):
# (kind or None for any, action, attribute the change must touch or None) -> phrase;
# the first match wins, so specific entries come first.
_UPSTREAM_PHRASE = {
    ("pipeline", Action.UPDATE, "run_id"): "{up} will be re-run",
    ("model", Action.UPDATE, "version"): "{up} gets a new version",
    ("model", Action.CREATE, None): "{up} will be registered",
    (None, Action.CREATE, None): "{up} will be created",
    (None, Action.UPDATE, None): "{up} will be updated",
    (None, Action.DELETE_CREATE, None): "{up} will be replaced",
    (None, Action.CREATE_DELETE, None): "{up} will be replaced",
}
# What a downstream update is called, per kind.
_KIND_PREFIX = {"model": "new model version", "endpoint": "rollout", "monitor": "reconfigure"}

_ACTION_VERBS = {Action.DELETE_CREATE: "replaced", Action.CREATE_DELETE: "replaced"}


def _upstream_phrase(kind: str, action: Action, up: str, changed: set[str]) -> str:
    for (k, a, needs), fmt in _UPSTREAM_PHRASE.items():
        if a is action and k in (kind, None) and (needs is None or needs in changed):
            return fmt.format(up=up)
    return f"{up} changes"


class Planner:
    def __init__(self, session, state: State, options: PlanOptions) -> None:
        self.session = session
        self.state = state
        self.options = options
        self.diags: list[Diagnostic] = []
        self.changes: list[Change] = []
        self.node_actions: dict[str, set[Action]] = {}   # config key -> actions of its instances
        self.node_kinds: dict[str, str] = {}
        self.node_changed: dict[str, set[str]] = {}      # config key -> top-level attributes changed
        self.declared: set[str] = set()
        self.failed: set[str] = set()    # config keys whose planning failed, or an upstream's did
        self.timing = PlanTiming()
        self.resource_edges = session.graph.resource_edges()
        self.lineage = state.lineage

    # ---------------------------------------------------------------- run

    def run(self) -> Plan:
        opts = self.options
        t0 = time.perf_counter()
        drift: list[Change] = []
        refreshed = self.state
        if opts.refresh and self.state.resources:
            result = refresh(self.session, self.state, opts.parallelism)
            refreshed, drift = result.state, result.drift
            self.diags.extend(result.diagnostics)
        self.refreshed = refreshed
        self.timing.refresh_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        outputs: dict[str, Any] = {}
        if opts.mode == "normal" and not _has_errors(self.diags):
            # No I/O in the walk, and what it allocates lives until the plan is made:
            # cyclic GC passes over it free nothing and cost a fifth of a big plan.
            with paused_gc():
                outputs = self._walk()
            self._orphans()
        elif opts.mode == "destroy" and not _has_errors(self.diags):
            self._destroy_all()
        output_changes = self._output_changes(outputs) if opts.mode == "normal" else (
            self._output_deletes() if opts.mode == "destroy" and not opts.targets else ())
        changes = self._select_targets(self.changes)
        self.timing.walk_s = time.perf_counter() - t1
        values = self.session.variables
        return Plan(
            changes=tuple(changes), drift=tuple(drift), output_changes=tuple(output_changes),
            diagnostics=tuple(dict.fromkeys(self.diags)),  # each once
            mode=opts.mode, env=self.session.env_name,
            targets=tuple(opts.targets), replace=tuple(opts.replace),
            state_lineage=self.state.lineage, state_serial=self.state.serial,
            config_digest=self.session.config.digest,
            variables={k: v for k, v in values.values.items() if k not in values.sensitive},
            sensitive_variables={k: hash_value(values.values[k], self.state.lineage)
                                 for k in sorted(values.sensitive)},
            refreshed={a: r.to_json() for a, r in refreshed.resources.items()},
            errored=_has_errors(self.diags),
        )

    # ---------------------------------------------------------------- walk

    def _walk(self) -> dict[str, Any]:
        session = self.session
        ev = Evaluator(session.graph, session.stack_dir, session.variables.values, session.env_name)
        self.evaluator = ev
        failed = self.failed
        outputs: dict[str, Any] = {}
        for node in session.graph.topological():
            if any(dep in failed for dep in node.deps):
                failed.add(node.key)          # not repeated: the root cause is already reported
                continue
            try:
                if node.type == NODE_RESOURCE:
                    self._plan_resource(ev, node)
                else:
                    value = ev.evaluate_node(node)
                    if node.type == NODE_OUTPUT and not node.module:
                        outputs[node.name] = value
            except DiagnosticError as exc:
                self.diags.extend(exc.diagnostics)
                failed.add(node.key)
        return outputs

    def _plan_resource(self, ev: Evaluator, node) -> None:
        res: Resource = node.config
        self.node_kinds[node.key] = res.kind
        instances = ev.expand(node)
        ev.declare_empty(node)
        actions = self.node_actions.setdefault(node.key, set())
        changed = self.node_changed.setdefault(node.key, set())
        provider_key = self.session.provider_key_for(res)
        schema = self.session.schema(provider_key, res.kind, res.provider_source or res.source)
        provider = self.session.provider(provider_key)
        replace_paths = tuple(parse_dotted(p) for p in schema.replace_paths)
        dependencies = tuple(sorted(self.resource_edges.get(node.key, ())))
        triggered = self._triggered(res, node.module)
        errors = False
        for inst in instances:
            self.declared.add(inst.address)
            try:
                change = self._plan_instance(ev, inst, provider, provider_key, schema, replace_paths,
                                             dependencies, triggered)
            except DiagnosticError as exc:
                self.diags.extend(exc.diagnostics)
                errors = True
                continue
            actions.add(change.action)
            changed.update(str(p[0]) for p in change.changed_paths if p)
            self.changes.append(change)
        if errors:
            raise DiagnosticError([])

    def _triggered(self, res: Resource, module: str) -> str:
        """The first replace_triggered_by reference that changes in this plan, or ""."""
        prefix = f"{module}." if module else ""
        for trav in res.lifecycle.replace_triggered_by:
            key = prefix + ".".join(str(p) for p in trav.parts[:2])
            if not self.node_actions.get(key, set()) - {Action.NOOP, Action.READ}:
                continue
            attr = trav.parts[2] if len(trav.parts) > 2 else None   # `model.m.version`: that attribute
            if attr is None or str(attr) in self.node_changed.get(key, set()):
                return prefix + ".".join(str(p) for p in trav.parts)
        return ""

    def _plan_instance(self, ev: Evaluator, inst: Instance, provider, provider_key: str, schema,
                       replace_paths, dependencies, triggered: str) -> Change:
        res = inst.resource
        prior = self.refreshed.get(inst.address)
        desired = ev.desired(inst)
        if desired.diagnostics:
            raise DiagnosticError(desired.diagnostics)
        request = ProviderDesired(inst.address, inst.kind, inst.name, desired.attributes)
        prior_live = LiveObject(inst.address, inst.kind, prior.id, prior.attributes) if prior else None
        problems = self._provider_call(inst, provider.validate, request)
        if problems:
            raise DiagnosticError([_locate(d, res, inst.address) for d in problems])
        planned = self._provider_call(inst, provider.plan, request, prior_live)
        self._check_planned(provider_key, inst, desired.attributes, planned.attributes)
        clear_after = dict(planned.attributes)
        masked_after = mask(clear_after, desired.sensitive_paths, self.lineage)
        force = ""
        if inst.address in self.options.replace:
            force = "replace_by_request"
        elif triggered and prior is not None:
            force = "replace_by_triggers"
        lc = res.lifecycle
        ignore = lc.ignored
        result = diff(DiffInput(
            prior=prior.attributes if prior else None,
            prior_tainted=bool(prior and prior.status == "tainted"),
            planned=masked_after,
            replace_paths=replace_paths + tuple(parse_dotted(p) for p in planned.replace_paths),
            computed=schema.computed,
            ignore_changes=ignore,
            create_before_destroy=lc.create_before_destroy,
            force_replace=force,
        ))
        provider_reasons = planned.reasons
        if result.action.is_replace and prior_live is not None:
            # A replacement is a new object: plan it as a create (Terraform re-plans with a
            # null prior), so what the provider computes anew (run ids, versions) is unknown.
            planned = self._provider_call(inst, provider.plan, request, None)
            self._check_planned(provider_key, inst, desired.attributes, planned.attributes)
            clear_after = dict(planned.attributes)
            after = mask(clear_after, desired.sensitive_paths, self.lineage)
            if lc.ignore_changes:
                after = apply_ignore_changes(prior.attributes, after, ignore, schema.computed)
            result = dc_replace(result, after=after, changed_paths=changed_paths(prior.attributes, after))
        if lc.ignore_changes and prior is not None:
            clear_after = apply_ignore_changes(prior.attributes, clear_after, ignore, schema.computed)
        if result.action.is_replace and lc.prevent_destroy:
            raise DiagnosticError.single(
                f"Instance cannot be destroyed: {inst.address}",
                detail=f"{inst.address} has lifecycle.prevent_destroy set, but the plan would replace it"
                       + (f" ({', '.join(dotted(p) for p in result.replace_paths)} forces replacement)."
                          if result.replace_paths else "."),
                source=res.source, address=inst.address,
                hint="Remove prevent_destroy to allow this, or change the spec so no replacement is needed.")
        reasons, reason_code = self._reasons(inst, prior, result, provider_reasons, triggered)
        new_id = prior.id if prior is not None and not result.action.is_replace else UNKNOWN
        ev.set_instance(inst, clear_after, desired.sensitive_paths,
                        new_id if result.action is not Action.CREATE else UNKNOWN)
        return Change(
            address=inst.address, kind=inst.kind, name=inst.name, provider=provider_key,
            action=result.action, before=prior.attributes if prior else None,
            after=result.after, module=inst.module, index_key=inst.index_key,
            replace_paths=result.replace_paths, action_reason=result.action_reason or reason_code,
            reasons=tuple(reasons),
            before_sensitive=tuple(map(tuple, prior.sensitive_paths)) if prior else (),
            after_sensitive=tuple(desired.sensitive_paths), dependencies=dependencies,
            prior_id=prior.id if prior else None, changed_paths=result.changed_paths)

    @staticmethod
    def _provider_call(inst: Instance, fn, *args):
        """A side-effect-free provider call (validate, plan); its errors become diagnostics."""
        try:
            return fn(*args)
        except ProviderError as exc:
            raise DiagnosticError.single(f"Planning {inst.address} failed: {exc.message}",
                                         detail=exc.service_message, source=inst.resource.source,
                                         address=inst.address)

    def _check_planned(self, provider_key: str, inst: Instance, desired: dict, planned) -> None:
        """The core does not trust the plugin: planned values must keep what the spec set."""
        for key, value in desired.items():
            if key in planned and planned[key] == value:
                continue          # the common case first: the cheap comparison
            if value is UNKNOWN or contains_unknown(value):
                continue
            raise DiagnosticError.single(
                f'Provider "{provider_key}" produced an invalid plan for {inst.address}',
                detail=f'It changed "{key}" from {value!r:.80} to {planned.get(key)!r:.80}. '
                       "This is a bug in the provider.", address=inst.address)

    def _reasons(self, inst: Instance, prior, result, provider_reasons,
                 trigger: str = "") -> tuple[list[str], str]:
        reasons: list[str] = []
        code = ""
        action = result.action
        if action is Action.NOOP or action is Action.CREATE:
            return reasons, code
        if result.action_reason == "replace_because_tainted":
            reasons.append(f"{inst.address} is tainted (an earlier create or update failed), "
                           "so it must be replaced")
        elif result.action_reason == "replace_by_request":
            reasons.append("replacement requested with --replace")
        elif result.action_reason == "replace_by_triggers":
            reasons.append(f"replace_triggered_by: {trigger} changes")
        elif result.replace_paths:
            reasons.append("forces replacement: " + ", ".join(dotted(p) for p in result.replace_paths))
        after = result.after
        if inst.kind == "pipeline" and prior is not None:
            lineage = []
            if prior.attributes.get("fingerprint") != after.get("fingerprint"):
                lineage = rerun_reasons(prior.attributes, after)
            lineage.extend(provider_reasons)
            if lineage:
                code = code or "rerun_because_lineage"
                reasons.extend(f"{inst.address} must be re-run: {r}" for r in lineage)
        elif provider_reasons:
            reasons.extend(provider_reasons)
        if inst.kind == "dataset" and prior is not None and \
                prior.attributes.get("digest") != after.get("digest"):
            old, new = prior.attributes.get("digest"), after.get("digest")
            reasons.append(f"{inst.address} content changed (sha256 {_short(old)} → {_short(new)})")
            code = code or "update_because_content"
        if code == "rerun_because_lineage":
            return list(dict.fromkeys(reasons)), code  # the lineage already names the upstream cause
        # Downstream of a change: name the upstream resource that causes this one.
        prefix = f"{inst.module}." if inst.module else ""
        res = inst.resource
        touched = sorted({p[0] for p in result.changed_paths if p})
        for attr in touched:
            expr = res.attributes.get(attr)
            if expr is None:
                continue
            for ref in getattr(expr, "references", ()):
                up = prefix + ".".join(str(p) for p in ref.parts[:2])
                up_actions = self.node_actions.get(up, set()) - {Action.NOOP}
                if not up_actions:
                    continue
                up_action = sorted(up_actions, key=lambda a: a.value)[0]
                phrase = _upstream_phrase(self.node_kinds.get(up, ""), up_action, up,
                                          self.node_changed.get(up, set()))
                lead = _KIND_PREFIX.get(inst.kind)
                reasons.append(f"{lead}: {attr} changes because {phrase}" if lead
                               else f"{attr} changes because {phrase}")
                code = code or "update_because_upstream"
        return list(dict.fromkeys(reasons)), code

    # ---------------------------------------------------------------- deletes

    def _delete_change(self, rs, reason: str, code: str) -> Change:
        key = config_key(rs.address)
        node = self.session.graph.nodes.get(key)
        if node is not None and node.type == NODE_RESOURCE and node.config.lifecycle.prevent_destroy:
            raise DiagnosticError.single(
                f"Instance cannot be destroyed: {rs.address}",
                detail=f"{rs.address} has lifecycle.prevent_destroy set.",
                source=node.config.source, address=rs.address,
                hint="Remove prevent_destroy from its lifecycle block first.")
        return Change(
            address=rs.address, kind=rs.kind, name=rs.name, provider=rs.provider,
            action=Action.DELETE, before=rs.attributes, after=None, module=rs.module,
            index_key=rs.index_key, action_reason=code, reasons=(reason,) if reason else (),
            before_sensitive=tuple(map(tuple, rs.sensitive_paths)),
            dependencies=tuple(rs.dependencies), prior_id=rs.id)

    def _orphans(self) -> None:
        for address, rs in self.refreshed.resources.items():
            if address in self.declared:
                continue
            key = config_key(address)
            if key in self.failed:
                continue  # a block that failed to plan is still declared: not an orphan
            node = self.session.graph.nodes.get(key)
            if node is None:
                reason, code = f"{key} is not in the configuration", "delete_because_no_resource_config"
            elif node.config.for_each is not None:
                reason, code = f"for_each no longer has key {json.dumps(rs.index_key)}", "delete_because_each_key"
            elif node.config.count is not None:
                reason, code = f"count no longer includes index {rs.index_key}", "delete_because_count_index"
            else:
                reason, code = "the instance key changed", "delete_because_no_resource_config"
            try:
                self.changes.append(self._delete_change(rs, reason, code))
                self.node_actions.setdefault(key, set()).add(Action.DELETE)
            except DiagnosticError as exc:
                self.diags.extend(exc.diagnostics)

    def _destroy_all(self) -> None:
        for rs in self.refreshed.resources.values():
            try:
                self.changes.append(self._delete_change(rs, "", "delete_because_destroy"))
            except DiagnosticError as exc:
                self.diags.extend(exc.diagnostics)

    # ---------------------------------------------------------------- outputs

    def _output_changes(self, values: dict[str, Any]) -> list[OutputChange]:
        out = []
        prior = self.state.outputs
        for name in sorted(values.keys() | prior.keys()):
            before = prior.get(name, {}).get("value") if name in prior else None
            if name not in values:
                if f"output.{name}" in self.failed:
                    continue  # not evaluated (an error upstream), not removed
                out.append(OutputChange(name, Action.DELETE, before, None,
                                        bool(prior[name].get("sensitive"))))
                continue
            value = values[name]
            sensitive = isinstance(value, Sensitive) or bool(
                self.session.graph.nodes[f"output.{name}"].config.sensitive)
            clear, marked = strip_sensitive(value)
            after = hash_value(clear, self.lineage) if (sensitive or marked) and not contains_unknown(clear) \
                else (UNKNOWN if contains_unknown(clear) and (sensitive or marked) else clear)
            sensitive = sensitive or bool(marked)
            if name not in prior:
                action = Action.CREATE
            elif before == after and not contains_unknown(after):
                action = Action.NOOP
            else:
                action = Action.UPDATE
            out.append(OutputChange(name, action, before, after, sensitive))
        return out

    def _output_deletes(self) -> list[OutputChange]:
        return [OutputChange(n, Action.DELETE, o.get("value"), None, bool(o.get("sensitive")))
                for n, o in sorted(self.state.outputs.items())]

    # ---------------------------------------------------------------- targets

    def _select_targets(self, changes: list[Change]) -> list[Change]:
        targets = self.options.targets
        if not targets:
            return changes
        known = set(self.session.graph.nodes) | {c.address for c in changes}
        for t in targets:
            if not any(matches(t, a) or matches(t, config_key(a)) for a in known):
                from mlform.specs import did_you_mean
                resources = sorted(a for a in known if "." in a and not a.startswith(
                    ("var.", "local.", "output.")))
                self.diags.append(error(f'--target "{t}" matches no resource',
                                        hint=did_you_mean(t, resources) or
                                        "Use an address from `mlform state list` or the spec."))
        selected_keys: set[str] = set()
        selected_addrs: set[str] = set()
        for c in changes:
            if any(matches(t, c.address) for t in targets):
                selected_addrs.add(c.address)
                selected_keys.add(config_key(c.address))
        # Terraform semantics: targets bring their dependencies along (dependents when destroying).
        edges = self.resource_edges
        if self.options.mode == "destroy":
            reverse: dict[str, set[str]] = {}
            for c in changes:
                for dep in c.dependencies:
                    reverse.setdefault(dep, set()).add(config_key(c.address))
            edges = reverse
        stack = list(selected_keys)
        while stack:
            key = stack.pop()
            for dep in edges.get(key, ()):
                if dep not in selected_keys:
                    selected_keys.add(dep)
                    stack.append(dep)
        return [c for c in changes
                if c.address in selected_addrs or config_key(c.address) in selected_keys]


def _short(digest) -> str:
    return f"{digest[:8]}…" if isinstance(digest, str) else "(known after apply)"


def _has_errors(diags) -> bool:
    return any(d.severity == "error" for d in diags)


def _locate(diag: Diagnostic, res: Resource, address: str) -> Diagnostic:
    from dataclasses import replace
    return replace(diag, source=diag.source or res.source, address=diag.address or address)


def make_plan(session, state: State, options: PlanOptions) -> Plan:
    return Planner(session, state, options).run()


__all__ = ["Planner", "PlanOptions", "make_plan"]
