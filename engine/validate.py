"""`mlform validate`: every static check, without state or provider calls.

Root variables without a value are treated as unknown, so validation needs no
inputs; attribute names and types are checked against the spec models.
"""

from __future__ import annotations

from mlform import registry
from mlform.diagnostics import Diagnostic, DiagnosticError
from mlform.expr import UNKNOWN
from mlform.graph import NODE_RESOURCE
from mlform.plan.evaluate import Evaluator


def validate_stack(session) -> list[Diagnostic]:
    config = session.config
    values = {}
    diags: list[Diagnostic] = []
    try:
        values = session.variables.values
    except DiagnosticError as exc:
        # Missing required values are fine here; wrong values are not.
        diags.extend(d for d in exc.diagnostics if "No value for required" not in d.summary)
        values = {name: UNKNOWN for name in config.root.variables}
    diags.extend(_provider_configs(session))
    ev = Evaluator(session.graph, session.stack_dir, values, session.env_name)
    failed: set[str] = set()
    for node in session.graph.topological():
        if any(d in failed for d in node.deps):
            failed.add(node.key)
            continue
        try:
            if node.type != NODE_RESOURCE:
                ev.evaluate_node(node)
                continue
            try:
                instances = ev.expand(node)
            except DiagnosticError as exc:
                if any("known only after apply" in (d.detail or "") for d in exc.diagnostics):
                    failed.add(node.key)  # needs real values: checked at plan time
                    continue
                raise
            ev.declare_empty(node)
            for inst in instances:
                desired = ev.desired(inst)
                if desired.diagnostics:
                    diags.extend(desired.diagnostics)
                    failed.add(node.key)
                    continue
                ev.set_instance(inst, {**desired.attributes,
                                       **{k: UNKNOWN for k in _computed(inst.kind)}},
                                desired.sensitive_paths, UNKNOWN)
        except DiagnosticError as exc:
            diags.extend(exc.diagnostics)
            failed.add(node.key)
    return diags


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


def _computed(kind: str) -> tuple[str, ...]:
    from mlform.specs import COMPUTED
    return tuple(COMPUTED.get(kind, ()))


__all__ = ["validate_stack"]
