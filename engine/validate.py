"""`mlform validate`: every static check, without state or provider calls.

Root variables without a value are treated as unknown, so validation needs no
inputs; attribute names and types are checked against the spec models, and each
block's `settings { }` against its provider's settings model (read from the plugin
class: no provider is configured).  The walk is the planner's (`mlform.walk`); the
only facts it reads are the engine's own (entrypoint digests).
"""

from __future__ import annotations

from mlform import registry
from mlform.config.inputs import MISSING_VARIABLE
from mlform.diagnostics import Diagnostic, DiagnosticError
from mlform.expr import UNKNOWN
from mlform.facts import read_engine_facts
from mlform.graph import NODE_RESOURCE
from mlform.plan.evaluate import NEEDS_APPLY, Evaluator
from mlform.plan.inputs import ENGINE
from mlform.plan.planner import settings_problems
from mlform.specs import COMPUTED
from mlform.walk import Unit, Visit, Walk, visiting

__all__ = ["validate_stack"]


class _Validator:
    """The walk's executor for `validate`: evaluate, expand, check; nothing planned."""

    def __init__(self, session, values: dict) -> None:
        self.session = session
        self.ev = Evaluator(session.graph, session.stack_dir, values, session.env_name)
        self.facts: dict = {}
        self.diags: list[Diagnostic] = []

    def visit(self, unit: Unit) -> Visit:
        return visiting(unit, lambda: self._visit_node(unit.node), self.diags)

    def _visit_node(self, node) -> Visit:
        if node.type != NODE_RESOURCE:
            self.ev.evaluate_node(node)
            return Visit.DONE
        return self._resource(node)

    def wait(self) -> None:
        return None

    def _resource(self, node) -> Visit:
        try:
            instances = self.ev.expand(node)
        except DiagnosticError as exc:
            if any(d.code == NEEDS_APPLY for d in exc.diagnostics):
                return Visit.FAILED    # needs real values: checked at plan time, not here
            raise
        settings_model = self._settings_model(node.config)
        problems: list[Diagnostic] = []
        evaluated = [(inst, self.ev.desired(inst, self.facts)) for inst in instances]
        self.ev.declare_empty(node)
        for inst, desired in evaluated:
            if desired.diagnostics:
                problems.extend(desired.diagnostics)
                continue
            settings = desired.attributes.get("settings")
            if settings_model is not None and isinstance(settings, dict):
                res = node.config
                problems.extend(settings_problems(
                    settings_model, settings, inst.address,
                    res.attribute_sources.get("settings", res.source),
                    self.session.provider_key_for(res), inst.kind))
            self.ev.set_instance(inst, {**desired.attributes,
                                        **{k: UNKNOWN for k in COMPUTED.get(inst.kind, ())}},
                                 desired.sensitive_paths, UNKNOWN)
        if problems:
            self.diags.extend(problems)
            return Visit.FAILED
        return Visit.DONE

    def _settings_model(self, resource):
        """The provider's settings model of this kind, from its class (None when the
        provider is not installed or does not serve the kind: plan reports that)."""
        key = self.session.provider_key_for(resource)
        try:
            cls = registry.get(key.partition(".")[0])
        except DiagnosticError:
            return None
        schema = cls.kinds.get(resource.kind)
        return schema.settings_model if schema is not None else None


def validate_stack(session) -> list[Diagnostic]:
    config = session.config
    diags: list[Diagnostic] = list(config.warnings)
    try:
        values = session.variables.values
    except DiagnosticError as exc:
        # Missing required values are fine here; wrong values are not.
        diags.extend(d for d in exc.diagnostics if d.code != MISSING_VARIABLE)
        values = {name: UNKNOWN for name in config.root.variables}
    diags.extend(_provider_configs(session))
    validator = _Validator(session, values)
    order = {node.key: i for i, node in enumerate(session.graph.topological())}
    walk = Walk({key: Unit(key, set(node.deps), node=node, order=order[key])
                 for key, node in session.graph.nodes.items()}, validator)
    while requests := walk.run():
        keys = [key for provider, key in requests if provider is ENGINE]
        validator.facts.update(read_engine_facts(keys, session.digests))
        walk.resume()
    # The digests read stay in memory: validate writes nothing, not even a cache.
    from mlform.policy import static_diagnostics
    return diags + validator.diags + static_diagnostics(session.graph)


def _provider_configs(session) -> list[Diagnostic]:
    """Argument names and literal values of each declared provider whose plugin is
    installed (an uninstalled one is reported when planning needs it)."""
    config = session.config
    diags: list[Diagnostic] = []
    for key in sorted({*config.root.providers, *config.env.providers}):
        try:
            registry.get(key.partition(".")[0])
        except DiagnosticError:
            continue  # not installed, or broken: reported when planning needs it
        try:
            session.provider_config(key, static=True)
        except DiagnosticError as exc:
            diags.extend(exc.diagnostics)
    return diags
