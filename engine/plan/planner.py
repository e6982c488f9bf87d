"""The planning walk: `PlanInputs` (configuration, refreshed state, facts) → a `Plan` value.

Pure: no I/O, no session.  What it needs was read before it runs (refresh, provider
configuration) and is handed to it in `PlanInputs`; the facts providers and the engine
need (digests, GPUs, existing jobs) arrive in rounds: `Planner.run(facts)` returns the
fact requests the walk is waiting on, and is called again once they are read
(`mlform.operations.plan` drives it).

Order of work:
1. walk the graph in dependency order (`mlform.walk`): evaluate each block, expand
   instances, check `settings` against the provider's model, ask the provider to
   validate and plan (pure calls, with the facts they named), run the pure diff,
   attach reasons;
2. instances in the state but not in the configuration become deletes;
3. outputs; 4. `--target` selection.
"""

from __future__ import annotations

import json
from dataclasses import replace as dc_replace
from typing import Any

from mlform._gc import paused_gc
from mlform.addresses import config_key, matches
from mlform.config.model import Resource
from mlform.diagnostics import Diagnostic, DiagnosticError, Diagnostics, error
from mlform.expr import UNKNOWN, Sensitive, strip_sensitive
from mlform.expr.values import contains_unknown
from mlform.graph import NODE_OUTPUT, NODE_RESOURCE
from mlform.plan.diff import (
    DiffInput, apply_ignore_changes, changed_paths, diff, dotted, parse_dotted,
)
from mlform.plan.evaluate import Evaluator, Instance
from mlform.plan.fingerprints import rerun_reasons
from mlform.plan.inputs import ENGINE, FactTable, PlanInputs, PlanOptions
from mlform.plan.memo import RecordingFacts, Uncacheable, fact_digest, key_of, recorded
from mlform.plan.model import Action, Change, OutputChange, Plan
from mlform.providers.base import Desired, Facts, LiveObject, ProviderError
from mlform.state.sensitive import hash_value, mask
from mlform.walk import NeedFacts, Unit, Visit, Walk, visiting


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

def _upstream_phrase(kind: str, action: Action, up: str, changed: set[str]) -> str:
    for (k, a, needs), fmt in _UPSTREAM_PHRASE.items():
        if a is action and k in (kind, None) and (needs is None or needs in changed):
            return fmt.format(up=up)
    return f"{up} changes"


class Planner:
    """One plan: `run(facts)` until it returns a `Plan` (see the module docstring)."""

    def __init__(self, inputs: PlanInputs) -> None:
        self.inputs = inputs
        self.graph = inputs.graph
        self.providers = inputs.providers
        self.state = inputs.state
        self.refreshed = inputs.refreshed
        self.options = inputs.options
        self.lineage = inputs.state.lineage
        self.diags = Diagnostics(inputs.diagnostics)
        self.changes: list[Change] = []
        # each block's changes, put in the graph's order when the walk ends: blocks that
        # waited on facts are planned later, and the plan must read the same anyway
        self.node_changes: dict[str, list[Change]] = {}
        self.node_actions: dict[str, set[Action]] = {}   # config key -> actions of its instances
        self.node_changed: dict[str, set[str]] = {}      # config key -> top-level attributes changed
        self.declared: set[str] = set()
        self.outputs: dict[str, Any] = {}
        self.resource_edges = self.graph.resource_edges()
        self.evaluator = Evaluator(self.graph, inputs.stack_dir, inputs.variables.values,
                                   inputs.env, inputs.cwd)
        self.facts = FactTable()
        self.memo = inputs.memo if inputs.options.mode == "normal" else None
        self._provider_salts: dict[str, Any] = {}
        # id(published value) -> (the value, its instance's memo key): a reference to an
        # instance the memo answered is keyed by that key, not by its whole value
        self._tokens: dict[int, tuple[dict, str]] = {}
        order = {node.key: i for i, node in enumerate(self.graph.topological())}
        self.walk = Walk({key: Unit(key, set(node.deps), node=node, order=order[key])
                          for key, node in self.graph.nodes.items()}, self)
        self._walked = False

    # ---------------------------------------------------------------- run

    def run(self, facts: FactTable | None = None) -> Plan | frozenset:
        """The plan, or the fact requests still needed (read them, then call again)."""
        if facts is not None:
            self.facts = facts
        # Planning does no I/O, and what it allocates (the walk's values, the plan and
        # its copy of the refreshed state) lives until the plan is made: cyclic GC
        # passes over it free nothing and cost a fifth of a big plan.
        with paused_gc():
            return self._run()

    def _run(self) -> Plan | frozenset:
        opts = self.options
        if opts.mode == "normal" and not self.diags.has_errors() and not self._walked:
            self.walk.resume()
            requests = self.walk.run()
            if requests:
                return requests
            self._walked = True
            self.changes = [c for node in self.graph.topological()
                            for c in self.node_changes.get(node.key, ())]
            self._orphans()
            self._deposed()
        elif opts.mode == "destroy" and not self.diags.has_errors():
            self._destroy_all()
            self._deposed()
        output_changes = self._output_changes(self.outputs) if opts.mode == "normal" else (
            self._output_deletes() if opts.mode == "destroy" and not opts.targets else ())
        changes = self._select_targets(self.changes)
        values = self.inputs.variables
        return Plan(
            changes=tuple(changes), drift=tuple(self.inputs.drift),
            output_changes=tuple(output_changes),
            diagnostics=tuple(dict.fromkeys(self.diags)),  # each once
            mode=opts.mode, env=self.inputs.env,
            targets=tuple(opts.targets), replace=tuple(opts.replace),
            state_lineage=self.state.lineage, state_serial=self.state.serial,
            config_digest=self.inputs.config_digest,
            variables={k: v for k, v in values.values.items() if k not in values.sensitive},
            sensitive_variables={k: hash_value(values.values[k], self.state.lineage)
                                 for k in sorted(values.sensitive)},
            refreshed={a: r.to_json() for a, r in self.refreshed.resources.items()},
        )

    # ---------------------------------------------------------------- walk

    def visit(self, unit: Unit) -> Visit:
        """One graph node (the walk's executor)."""
        return visiting(unit, lambda: self._visit_node(unit.node), self.diags)

    def _visit_node(self, node) -> Visit:
        if node.type == NODE_RESOURCE:
            return self._plan_resource(node)
        value = self.evaluator.evaluate_node(node)
        if node.type == NODE_OUTPUT and not node.module:
            self.outputs[node.name] = value
        return Visit.DONE

    def wait(self) -> None:
        return None             # planning hands nothing to workers

    @property
    def failed(self) -> set[str]:
        """Config keys whose planning failed, or an upstream's did."""
        return self.walk.failed

    def _plan_resource(self, node) -> Visit:
        """Plan every instance of a block, or none: a block waiting on facts is planned
        again from the start once they are in, so nothing of a half round is kept."""
        res: Resource = node.config
        ev = self.evaluator
        instances = ev.expand(node)
        provider_key = self.providers.key_for(res)
        schema = self.providers.schema(provider_key, res.kind, res.provider_source or res.source)
        provider = self.providers.get(provider_key)
        replace_paths = tuple(parse_dotted(p) for p in schema.replace_paths)
        dependencies = tuple(sorted(self.resource_edges.get(node.key, ())))
        triggered = self._triggered(res, node.module)
        memo_salt = self._memo_salt(node, provider_key, provider, triggered)
        planned: list[tuple[Instance, Change, dict, list, str | None]] = []
        problems: list[Diagnostic] = []
        needs: set = set()
        for inst in instances:
            try:
                planned.append(self._plan_instance(ev, inst, provider, provider_key, schema,
                                                   replace_paths, dependencies, triggered,
                                                   memo_salt))
            except NeedFacts as exc:
                needs |= exc.requests
            except DiagnosticError as exc:
                problems.extend(exc.diagnostics)
        if needs:
            raise NeedFacts(needs)
        ev.declare_empty(node)
        actions = self.node_actions.setdefault(node.key, set())
        changed = self.node_changed.setdefault(node.key, set())
        changes = self.node_changes.setdefault(node.key, [])
        for inst, change, clear_after, sensitive_paths, token in planned:
            self.declared.add(inst.address)
            new_id = change.prior_id if change.action in (Action.NOOP, Action.UPDATE) else UNKNOWN
            published = ev.set_instance(inst, clear_after, sensitive_paths, new_id)
            if token is not None:
                self._tokens[id(published)] = (published, token)
            actions.add(change.action)
            changed.update(str(p[0]) for p in change.changed_paths if p)
            changes.append(change)
        for inst in instances:
            self.declared.add(inst.address)     # a failed instance is still declared
        if problems:
            raise DiagnosticError(problems)
        return Visit.DONE

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

    def _facts(self, provider_key: str, provider, request: Desired,
               prior: LiveObject | None) -> Facts:
        """The facts `provider` named for this call; NeedFacts when some are not read yet."""
        keys = provider.fact_keys(request, prior)
        if keys:
            missing = self.facts.missing(provider_key, keys)
            if missing:
                raise NeedFacts(missing)
        return self.facts.view(provider_key)

    # ---------------------------------------------------------------- memo

    def _memo_salt(self, node, provider_key: str, provider, triggered: str) -> str | None:
        """A digest of what every memo key of a block's instances holds besides their own
        values (`mlform.plan.memo`), made once per block; None when the block is not
        memoised."""
        if self.memo is None:
            return None
        res: Resource = node.config
        exprs = [*res.attributes.values(), res.for_each, res.count]
        if any(getattr(e, "reads_files", True) for e in exprs if e is not None):
            return None              # its value depends on files the key does not hold
        if provider_key not in self._provider_salts:
            cls = type(provider)
            try:
                self._provider_salts[provider_key] = key_of(
                    f"{cls.__module__}.{cls.__qualname__}", provider.context.config)
            except (Uncacheable, TypeError, ValueError, AttributeError):
                self._provider_salts[provider_key] = None
        provider_salt = self._provider_salts[provider_key]
        if provider_salt is None:
            return None
        lc = res.lifecycle
        return key_of(self.memo.salt, provider_key, provider_salt,
                      str(self.graph.modules[node.module].dir), repr(lc.ignored),
                      lc.create_before_destroy, lc.prevent_destroy, triggered)

    def _memo_key(self, memo_salt: str | None, inst: Instance, raw: dict, prior) -> str | None:
        if memo_salt is None or prior is None or prior.sensitive_paths \
                or inst.address in self.options.replace:
            return None
        try:
            return key_of(memo_salt, inst.address, self._tokenized(raw), prior.attributes,
                          prior.id, prior.status)
        except (Uncacheable, TypeError, ValueError):
            return None            # UNKNOWN, Sensitive or an object among the inputs

    def _tokenized(self, raw: dict) -> dict:
        """`raw` with each attribute that is a whole upstream instance the memo answered
        (`model = each.value`) replaced by that instance's key: the key says everything
        its value was made from, and is much cheaper to encode than the value."""
        tokens, out = self._tokens, None
        for name, value in raw.items():
            if type(value) is dict:
                found = tokens.get(id(value))
                if found is not None and found[0] is value:
                    if out is None:
                        out = dict(raw)
                    out[name] = {"\0memo": found[1]}
        return raw if out is None else out

    def _replay(self, key: str, inst: Instance, prior, provider_key: str,
                dependencies) -> tuple[Instance, Change, dict, list, str] | None:
        """The no-op the memo holds for `key`, when the facts it was planned with are the
        same; None for a miss.  NeedFacts for facts a full plan would read first."""
        recorded_facts = self.memo.lookup(key)
        if recorded_facts is None:
            return None
        missing = set()
        for provider, fact, digest in recorded_facts:
            table = self.facts.view(provider)
            if fact in table:
                if digest is None or fact_digest(table[fact]) != digest:
                    return None
            elif digest is not None:
                missing.add((provider, fact))
        if missing:
            raise NeedFacts(missing)
        self.memo.keep(key, recorded_facts)
        self.memo.hits += 1
        return inst, _noop(inst, prior, provider_key, dependencies), prior.attributes, [], key

    def _memo_record(self, key: str, seen: dict, inst: Instance, prior, planned_change: Change,
                     clear_after: dict, sensitive_paths: list) -> str | None:
        """Keep a no-op for the next plan, when its replay would give this very change;
        returns the key kept (None when it is not)."""
        if planned_change.action is not Action.NOOP or sensitive_paths \
                or clear_after != prior.attributes \
                or planned_change != _noop(inst, prior, planned_change.provider,
                                           planned_change.dependencies):
            return None
        facts = recorded(seen)
        if facts is None:
            return None
        self.memo.keep(key, facts)
        return key

    # ---------------------------------------------------------------- instances

    def _plan_instance(self, ev: Evaluator, inst: Instance, provider, provider_key: str, schema,
                       replace_paths, dependencies, triggered: str, memo_salt: str | None = None
                       ) -> tuple[Instance, Change, dict, list, str | None]:
        """(the instance, its change, its planned clear value, its sensitive paths, its
        memo key when the memo holds it)."""
        res = inst.resource
        prior = self.refreshed.get(inst.address)
        if prior is not None and prior.holds_only_deposed:
            prior = None      # only holds deposed objects: the object itself is gone
        raw, raw_diags = ev.raw_attributes(inst)
        key = None if raw_diags else self._memo_key(memo_salt, inst, raw, prior)
        seen: dict | None = None
        engine_facts = self.facts.view(ENGINE)
        if key is not None:
            hit = self._replay(key, inst, prior, provider_key, dependencies)
            if hit is not None:
                return hit
            seen = {}
            engine_facts = RecordingFacts(ENGINE, engine_facts, seen)
        desired = ev.desired_from(inst, raw, raw_diags, engine_facts)
        if desired.diagnostics:
            raise DiagnosticError(desired.diagnostics)
        settings = desired.attributes.get("settings")
        if isinstance(settings, dict):
            problems = settings_problems(schema.settings_model, settings, inst.address,
                                         res.attribute_sources.get("settings", res.source),
                                         provider_key, inst.kind)
            if problems:
                raise DiagnosticError(problems)
        request = Desired(inst.address, inst.kind, inst.name, desired.attributes)
        prior_live = LiveObject(inst.address, inst.kind, prior.id, prior.attributes) if prior else None
        facts = self._facts(provider_key, provider, request, prior_live)
        if seen is not None:
            facts = RecordingFacts(provider_key, facts, seen)
        problems = self._provider_call(inst, provider.validate, request, facts)
        if problems:
            raise DiagnosticError([_locate(d, res, inst.address) for d in problems])
        planned = self._provider_call(inst, provider.plan, request, prior_live, facts)
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
            facts = self._facts(provider_key, provider, request, None)
            planned = self._provider_call(inst, provider.plan, request, None, facts)
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
        change = Change(
            address=inst.address, kind=inst.kind, name=inst.name, provider=provider_key,
            action=result.action, before=prior.attributes if prior else None,
            after=result.after, module=inst.module, index_key=inst.index_key,
            replace_paths=result.replace_paths, action_reason=result.action_reason or reason_code,
            reasons=tuple(reasons),
            before_sensitive=tuple(map(tuple, prior.sensitive_paths)) if prior else (),
            after_sensitive=tuple(desired.sensitive_paths), dependencies=dependencies,
            prior_id=prior.id if prior else None, changed_paths=result.changed_paths)
        kept = None
        if seen is not None:
            kept = self._memo_record(key, seen, inst, prior, change, clear_after,
                                     desired.sensitive_paths)
        return inst, change, clear_after, desired.sensitive_paths, kept

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
                phrase = _upstream_phrase(self._kind_of(up), up_action, up,
                                          self.node_changed.get(up, set()))
                lead = _KIND_PREFIX.get(inst.kind)
                reasons.append(f"{lead}: {attr} changes because {phrase}" if lead
                               else f"{attr} changes because {phrase}")
                code = code or "update_because_upstream"
        return list(dict.fromkeys(reasons)), code

    def _kind_of(self, key: str) -> str:
        node = self.graph.nodes.get(key)
        return node.config.kind if node is not None and node.type == NODE_RESOURCE else ""

    # ---------------------------------------------------------------- deletes

    def _delete_change(self, rs, reason: str, code: str) -> Change:
        key = config_key(rs.address)
        node = self.graph.nodes.get(key)
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

    def _deposed(self) -> None:
        """Objects a create_before_destroy replacement left behind (its delete was
        interrupted): each is deleted, as its own change."""
        for rs in self.refreshed.resources.values():
            for obj in rs.deposed:
                self.changes.append(Change(
                    address=rs.address, kind=rs.kind, name=rs.name, provider=rs.provider,
                    action=Action.DELETE, before=obj.get("attributes") or {}, after=None,
                    module=rs.module, index_key=rs.index_key, deposed=obj["id"],
                    reasons=(f"a create_before_destroy replacement of {rs.address} was "
                             "interrupted before it destroyed this object",),
                    before_sensitive=tuple(map(tuple, rs.sensitive_paths)),
                    dependencies=tuple(rs.dependencies), prior_id=obj["id"]))

    def _orphans(self) -> None:
        for address, rs in self.refreshed.resources.items():
            if address in self.declared or rs.holds_only_deposed:
                continue
            key = config_key(address)
            if key in self.failed:
                continue  # a block that failed to plan is still declared: not an orphan
            node = self.graph.nodes.get(key)
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
            if rs.holds_only_deposed:
                continue
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
                self.graph.nodes[f"output.{name}"].config.sensitive)
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
        known = set(self.graph.nodes) | {c.address for c in changes}
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


def _noop(inst: Instance, prior, provider_key: str, dependencies) -> Change:
    """The change of an instance that stays as its prior state says (a memo hit)."""
    return Change(address=inst.address, kind=inst.kind, name=inst.name, provider=provider_key,
                  action=Action.NOOP, before=prior.attributes, after=prior.attributes,
                  module=inst.module, index_key=inst.index_key, dependencies=dependencies,
                  prior_id=prior.id)


def _short(digest) -> str:
    return f"{digest[:8]}…" if isinstance(digest, str) else "(known after apply)"


def _locate(diag: Diagnostic, res: Resource, address: str) -> Diagnostic:
    from dataclasses import replace
    return replace(diag, source=diag.source or res.source, address=diag.address or address)


def settings_problems(model, settings: dict, address: str, source, provider_key: str,
                      kind: str) -> list[Diagnostic]:
    """A resource's `settings { }` checked against its provider's settings model, once, by
    the engine (providers do not check them again); unknown values pass."""
    from mlform.specs import validate_model     # here: see Evaluator.desired_from

    out = []
    for path, message in validate_model(model, settings, lambda v: v is UNKNOWN):
        where = ".".join(str(p) for p in path)
        text, _, suggestion = message.partition("; did you mean ")
        text = text.replace('unknown attribute "', 'unknown setting "')
        if where and f'"{path[-1]}"' not in text:
            text = f"{where}: {text}"
        fields = ", ".join(model.model_fields) or "none"
        hint = (f"Did you mean {suggestion}" if suggestion else
                f'The "{provider_key}" provider\'s {kind} settings: {fields}.')
        out.append(error(f"Invalid settings for {address}: {text}", source=source,
                         address=address, hint=hint))
    return out


__all__ = ["Planner", "PlanOptions", "settings_problems"]
