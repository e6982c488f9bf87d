"""`mlform export pulumi`: a stack environment as a Pulumi program.

The stack is planned without a refresh (what the spec declares, over what the state
recorded), and every instance the plan keeps is handed to its provider as an
`ExportObject`; the provider answers with the Pulumi resources that declare what its
`create` makes (`Provider.pulumi_resources`: names, tags or labels, configuration, the
id ``pulumi import`` takes).  Before that, two kinds of values are taken out of the
attributes and replaced by `PulumiInput`s, so the program reads them from its stack
config: sensitive values (a Pulumi secret, never a literal in the program) and values
known only after an apply (plain config, to fill in or to get by applying first).

Pipelines are runs, facts rather than long-lived infrastructure: they become comments
naming the run and the model artifact it produced, and that URI is a stack output.  A
kind its provider has nothing to declare for (a dataset in a store Pulumi does not model)
is a comment too.  The result is a `PulumiProgram` value; `views.pulumi_program` writes
it out.  Planning is the only I/O here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from mlform.diagnostics import DiagnosticError
from mlform.providers.kit.names import pulumi_config_key
from mlform.providers.base import (
    UNKNOWN, ExportObject, PulumiInput, PulumiRef, PulumiResource,
)

__all__ = ["PulumiProgram", "export_program", "program_of", "config_key", "found_in"]


@dataclass(frozen=True)
class PulumiProgram:
    """Everything the exported project holds, as values."""

    project: str
    stack: str
    env: str
    resources: list[PulumiResource]
    inputs: list[PulumiInput]
    notes: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def packages(self) -> list[str]:
        return sorted({r.module.split(".", 1)[0] for r in self.resources})


def config_key(address: str, path: Iterable[Any]) -> str:
    """The Pulumi config key of one value of an instance (`kit.names.pulumi_config_key`):
    ``endpoint_fraud_environment_API_KEY``."""
    return pulumi_config_key(address, *path)


def _with_inputs(address: str, value: Any, sensitive: set[tuple], path: tuple = ()) -> Any:
    """`value` with each sensitive value and each value known only after apply replaced
    by the `PulumiInput` the program reads it from."""
    where = ".".join(map(str, (address, *path)))
    if path in sensitive:
        return PulumiInput(config_key(address, path), secret=True,
                           description=f"{where} (sensitive in the mlform spec)")
    if value is UNKNOWN:
        return PulumiInput(config_key(address, path),
                           description=f"{where}: known after `mlform apply`")
    if isinstance(value, Mapping):
        return {k: _with_inputs(address, v, sensitive, (*path, k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_with_inputs(address, v, sensitive, (*path, i)) for i, v in enumerate(value)]
    return value


def found_in(value: Any, cls: type) -> Iterable[Any]:
    """Every instance of `cls` (`PulumiInput`, `PulumiRef`) inside an argument value."""
    if isinstance(value, cls):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from found_in(v, cls)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from found_in(v, cls)


def _run_note(address: str, attrs: Mapping[str, Any]) -> tuple[str, str | None]:
    """(the comment for a pipeline, the model URI it produced if known)."""
    uri = attrs.get("model_uri")
    uri = uri if isinstance(uri, str) else None
    run = attrs.get("run_id")
    if uri is None:
        return (f"{address}: a pipeline run (a fact, not infrastructure), not run yet: its "
                "model artifact is known after `mlform apply`."), None
    return (f"{address}: a pipeline run (a fact, not infrastructure): run "
            f"{run if isinstance(run, str) else '(unknown)'} produced {uri}."), uri


def program_of(*, project: str, stack: str, env: str, objects: list[tuple[Any, ExportObject]],
               ) -> PulumiProgram:
    """The program of `objects` ((provider, object) pairs, in plan order): pure."""
    resources: list[PulumiResource] = []
    notes: list[str] = []
    outputs: dict[str, Any] = {}
    for provider, obj in objects:
        if obj.kind == "pipeline":
            note, uri = _run_note(obj.address, obj.attributes)
            notes.append(note)
            if uri is not None:
                outputs[config_key(obj.address, ["model_uri"])] = uri
            continue
        found = list(provider.pulumi_resources(obj))
        if not found:
            notes.append(f"{obj.address}: the {provider.name} provider makes nothing Pulumi "
                         f"declares for {_a(obj.kind)}; it stays with mlform.")
        resources += found
    names: dict[str, str] = {}
    for r in resources:
        if r.name in names:
            raise DiagnosticError.single(
                f"Two Pulumi resources are both named {r.name!r} ({names[r.name]} and "
                f"{r.address})", hint="This is a bug in the provider's pulumi_resources.")
        names[r.name] = r.address
    for r in resources:
        for ref in [*(ref.name for ref in found_in(r.args, PulumiRef)), *r.depends_on]:
            if ref not in names:
                raise DiagnosticError.single(
                    f"{r.address}: its Pulumi resource {r.name!r} refers to {ref!r}, "
                    "which the export does not declare",
                    hint="This is a bug in the provider's pulumi_resources.")
    inputs: dict[str, PulumiInput] = {}
    for r in resources:
        for i in found_in(r.args, PulumiInput):
            inputs.setdefault(i.key, i)
    return PulumiProgram(project=project, stack=stack, env=env, resources=resources,
                         inputs=sorted(inputs.values(), key=lambda i: i.key), notes=notes,
                         outputs=outputs)


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def export_program(session) -> PulumiProgram:
    """Plan the session's stack environment (no refresh) and export it."""
    from mlform import operations
    from mlform.plan.inputs import PlanOptions
    from mlform.plan.model import Action
    state = operations.load_state(session, recover=False)
    plan = operations.plan(session, state, PlanOptions(refresh=False))
    if plan.errored:
        raise DiagnosticError(list(plan.diagnostics))
    providers = session.provider_set(state)
    objects = []
    for change in plan.changes:
        if change.action is Action.DELETE or change.after is None:
            continue
        recorded = state.get(change.address)
        sensitive = {tuple(p) for p in change.after_sensitive}
        obj = ExportObject(
            address=change.address, kind=change.kind, name=change.name,
            attributes=_with_inputs(change.address, dict(change.after), sensitive),
            id=recorded.id if recorded is not None else None,
            recorded=dict(recorded.attributes) if recorded is not None else None)
        objects.append((providers.get(change.provider), obj))
    stack = session.config.stack_name
    env = session.env_name or "default"
    project = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{stack}-{env}").strip("-")
    return program_of(project=project, stack=stack, env=env, objects=objects)

