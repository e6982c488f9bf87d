"""Evaluation of the configuration in dependency order: the values behind every name.

The `Evaluator` owns the scope of each module instance (the `var`, `local`,
`module` and resource-kind roots) and fills it in as the walk proceeds.  Plan,
validate and apply use it: planning fills resources with planned values, apply
with the values providers returned.  It reads nothing: a pipeline's entrypoint
digest is a fact (`entrypoint_key`) the caller read before; when it is not in the
facts given, `desired` raises `NeedFacts`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from mlform.config.model import RESOURCE_KINDS, Resource
from mlform.diagnostics import Diagnostic, DiagnosticError, error
from mlform.expr import UNKNOWN, ExprError, Scope, Sensitive, strip_sensitive
from mlform.expr.values import contains_unknown, get_path, set_path
from mlform.graph import NODE_LOCAL, NODE_OUTPUT, NODE_VARIABLE, Node
from mlform.plan.fingerprints import fingerprint
from mlform.plan.inputs import ENGINE, entrypoint_key
from mlform.providers.base import FactError, FactKey
from mlform.walk import NeedFacts

REF_KEY = "__ref__"


#: `Diagnostic.code` of a for_each or count that needs values known only after apply
NEEDS_APPLY = "needs_apply"

# A count beyond this is a mistake, not a fleet: expanding it would exhaust memory.
MAX_COUNT = 100_000


@dataclass(frozen=True)
class Instance:
    """One instance of a resource block after for_each/count expansion."""

    address: str
    config_key: str          # "module.m.dataset.d": the graph node
    module: str
    kind: str
    name: str
    index_key: Any           # None, for_each key or count index
    node: Node

    @property
    def resource(self) -> Resource:
        return self.node.config


def instance_address(prefix: str, kind: str, name: str, key: Any) -> str:
    base = f"{prefix}{kind}.{name}"
    if key is None:
        return base
    return f"{base}[{json.dumps(key)}]" if isinstance(key, str) else f"{base}[{key}]"


@dataclass
class Evaluated:
    """An instance's evaluated attributes (the provider gets them as `Desired`)."""

    attributes: dict                 # clear values (no Sensitive markers), may hold UNKNOWN
    sensitive_paths: list[tuple]
    diagnostics: list[Diagnostic]


def _mark_sensitive(value: dict, paths: list[tuple]) -> dict:
    for path in paths:
        value = set_path(value, path, Sensitive(get_path(value, path)))
    return value


class Evaluator:
    def __init__(self, graph, stack_dir: Path, variables: dict[str, Any], env_name: str,
                 cwd: str = ".") -> None:
        self.graph = graph
        self.stack_dir = stack_dir
        self.roots: dict[str, dict[str, Any]] = {}
        self.scopes: dict[str, Scope] = {}
        for path, module in graph.modules.items():
            roots: dict[str, Any] = {
                "var": {}, "local": {}, "module": {name: {} for name in module.children},
                "path": {"module": str(module.dir), "root": str(stack_dir), "cwd": cwd},
                "env": {"name": env_name},
            }
            for kind in RESOURCE_KINDS:
                roots[kind] = {}
            self.roots[path] = roots
            self.scopes[path] = Scope(roots, module.dir)
        self.roots[""]["var"].update(variables)
        # for_each values per resource block, so `each.value` is found without re-evaluating.
        self._each: dict[str, dict] = {}

    # ---------------------------------------------------------- plain nodes

    def evaluate_node(self, node: Node) -> Any:
        """Variables (of child modules), locals and outputs; returns the value set."""
        handler = _NODE_HANDLERS[node.type]
        return handler(self, node)

    def _variable(self, node: Node) -> Any:
        if not node.module:
            return self.roots[""]["var"].get(node.name)
        parent, call = self.graph.parents[node.module]
        call_cfg = self.graph.modules[parent].module_calls[call]
        var = node.config
        expr = call_cfg.inputs.get(node.name)
        try:
            if expr is not None:
                value = expr.evaluate(self.scopes[parent])
            else:
                value = var.default.evaluate(self.scopes[node.module]) if var.has_default else None
            if var.type is not None and value is not None and not contains_unknown(value):
                wrapped = isinstance(value, Sensitive)
                value = var.type.convert(value.value if wrapped else value)
                value = Sensitive(value) if wrapped else value
        except ExprError as exc:
            raise DiagnosticError([exc.diagnostic()])
        if var.sensitive and not isinstance(value, Sensitive):
            value = Sensitive(value)
        self.roots[node.module]["var"][node.name] = value
        return value

    def _local(self, node: Node) -> Any:
        try:
            value = node.config.evaluate(self.scopes[node.module])
        except ExprError as exc:
            raise DiagnosticError([exc.diagnostic()])
        self.roots[node.module]["local"][node.name] = value
        return value

    def _output(self, node: Node) -> Any:
        out = node.config
        try:
            value = out.value.evaluate(self.scopes[node.module])
        except ExprError as exc:
            raise DiagnosticError([exc.diagnostic()])
        if out.sensitive and not isinstance(value, Sensitive):
            value = Sensitive(value)
        if node.module:
            parent, call = self.graph.parents[node.module]
            self.roots[parent]["module"][call][node.name] = value
        return value

    # ---------------------------------------------------------- resources

    def expand(self, node: Node) -> list[Instance]:
        """The instances a resource block declares, from its for_each or count."""
        res: Resource = node.config
        prefix = f"{node.module}." if node.module else ""
        scope = self.scopes[node.module]

        def make(key):
            return Instance(instance_address(prefix, res.kind, res.name, key), node.key, node.module,
                            res.kind, res.name, key, node)

        if res.for_each is not None:
            source = res.attribute_sources.get("for_each", res.source)
            try:
                value = res.for_each.evaluate(scope)
            except ExprError as exc:
                raise DiagnosticError([exc.diagnostic()])
            if isinstance(value, Sensitive):
                raise DiagnosticError.single("Invalid for_each argument", source=source,
                                             detail="Sensitive values cannot be used as for_each keys: "
                                                    "they would appear in resource addresses.")
            # A map's keys decide the instances; unknown *values* in it are fine.
            if not isinstance(value, dict) and contains_unknown(value):
                raise DiagnosticError.single(
                    "Invalid for_each argument", source=source, code=NEEDS_APPLY,
                    detail="The for_each value depends on attributes known only after apply, "
                           "so the instances to create cannot be determined.",
                    hint="Use values known at plan time (variables, locals, literal keys), or "
                         "apply the upstream resources first with --target.")
            if isinstance(value, dict):
                self._each[node.key] = value
                return [make(k) for k in value]
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                self._each[node.key] = {v: v for v in value}
                return [make(k) for k in dict.fromkeys(value)]
            raise DiagnosticError.single(
                "Invalid for_each argument", source=source,
                detail=f"for_each needs a map or a set of strings; got {type(value).__name__}.",
                hint="Wrap a list of strings in toset(...).")
        if res.count is not None:
            source = res.attribute_sources.get("count", res.source)
            try:
                value = res.count.evaluate(scope)
            except ExprError as exc:
                raise DiagnosticError([exc.diagnostic()])
            if isinstance(value, Sensitive):
                value = value.value
            if value is UNKNOWN:
                raise DiagnosticError.single(
                    "Invalid count argument", source=source, code=NEEDS_APPLY,
                    detail="The count depends on values known only after apply.",
                    hint="Use a value known at plan time.")
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise DiagnosticError.single(
                    "Invalid count argument", source=source,
                    detail=f"count must be a whole number ≥ 0; got {value!r}.",
                    hint="Use count = 0 for no instances, or a positive whole number.")
            if value > MAX_COUNT:
                raise DiagnosticError.single(
                    "Invalid count argument", source=source,
                    detail=f"count is {value}; at most {MAX_COUNT} instances of one block "
                           "are supported.",
                    hint="Check the expression; split very large fleets across blocks.")
            return [make(i) for i in range(value)]
        return [make(None)]

    def instance_scope(self, inst: Instance) -> Scope:
        scope = self.scopes[inst.module]
        res = inst.resource
        if res.for_each is not None:
            return scope.child(each={"key": inst.index_key,
                                     "value": self._each[inst.config_key][inst.index_key]})
        if res.count is not None:
            return scope.child(count={"index": inst.index_key})
        return scope

    def desired(self, inst: Instance, facts: Mapping[FactKey, Any]) -> Evaluated:
        """Evaluate an instance's attributes, project references and check them against its
        spec.  `facts` are the engine's (entrypoint digests); NeedFacts when one is missing."""
        raw, diags = self.raw_attributes(inst)
        return self.desired_from(inst, raw, diags, facts)

    def raw_attributes(self, inst: Instance) -> tuple[dict[str, Any], list[Diagnostic]]:
        """The values of an instance's attribute expressions, as evaluated (references
        still whole upstream values, Sensitive markers in place), and their errors."""
        scope = self.instance_scope(inst)
        diags: list[Diagnostic] = []
        raw: dict[str, Any] = {}
        for name, expr in inst.resource.attributes.items():
            try:
                raw[name] = expr.evaluate(scope)
            except ExprError as exc:
                diags.append(_with_address(exc.diagnostic(), inst.address))
        return raw, diags

    def desired_from(self, inst: Instance, raw: dict[str, Any], diags: list[Diagnostic],
                     facts: Mapping[FactKey, Any]) -> Evaluated:
        """`desired` from the values `raw_attributes` gave."""
        # imported here: a plan whose every instance the no-op memo answers never checks
        # a spec, and never builds the kinds' pydantic models
        from mlform.specs import project_refs, validate_attributes

        res = inst.resource
        if _has_sensitive(raw):
            attributes, sensitive = strip_sensitive(raw)
        else:
            # Nothing to strip: skip the copy (project_refs below builds fresh containers).
            attributes, sensitive = raw, []
        attributes = {k: v for k, v in attributes.items() if v is not None}
        if not diags:
            # Validate while references still carry their address (`__ref__`), then keep
            # only the compact reference the provider and the state need.
            for path, message in validate_attributes(inst.kind, attributes, lambda v: v is UNKNOWN):
                top = path[0] if path else None
                source = res.attribute_sources.get(top, res.source) if top else res.source
                summary, hint = _spec_problem(inst.kind, path, message)
                diags.append(error(f"Invalid {inst.kind} {inst.address}: {summary}",
                                   source=source, address=inst.address, hint=hint))
        attributes = project_refs(attributes)
        if inst.kind == "pipeline" and not diags:
            module_dir = self.graph.modules[inst.module].dir
            entrypoint = attributes.get("entrypoint")
            digest = self._entrypoint_digest(entrypoint, module_dir, facts)
            if digest is None:
                where = _shown_path(module_dir, self.stack_dir)
                diags.append(error(f"Entrypoint not found for {inst.address}",
                                   detail=f'There is no file "{entrypoint}" in {where}.',
                                   source=res.attribute_sources.get("entrypoint", res.source),
                                   address=inst.address,
                                   hint="entrypoint is a path relative to the module directory."))
            attributes["entrypoint_sha256"] = digest
            if isinstance(entrypoint, str) and inst.module:
                # Providers run entrypoints from the stack directory; a module's entrypoint
                # is relative to the module, so hand them a stack-relative path.
                attributes["entrypoint_path"] = os.path.relpath(module_dir / entrypoint,
                                                                self.stack_dir)
            attributes["fingerprint"] = fingerprint(attributes, digest)
        return Evaluated(attributes, [tuple(p) for p in sensitive], diags)

    @staticmethod
    def _entrypoint_digest(entrypoint: Any, module_dir: Path, facts: Mapping[FactKey, Any]) -> Any:
        """The entrypoint's sha256 from the facts; UNKNOWN while its name is unknown, None
        when there is no such file."""
        if not isinstance(entrypoint, str):
            return UNKNOWN if entrypoint is UNKNOWN else None
        key = entrypoint_key(module_dir / entrypoint)   # an absolute entrypoint stays itself
        if key not in facts:
            raise NeedFacts({(ENGINE, key)})
        found = facts[key]
        return None if isinstance(found, FactError) else found

    def set_instance(self, inst: Instance, attributes: dict, sensitive_paths: list,
                     id: Any) -> dict:
        """Publish an instance's (planned or applied) value to the scope of its module;
        returns the value published (what references to the instance evaluate to)."""
        value = dict(attributes)
        if sensitive_paths:
            value = _mark_sensitive(value, [tuple(p) for p in sensitive_paths])
        value[REF_KEY] = inst.address
        value["id"] = id
        table = self.roots[inst.module][inst.kind]
        res = inst.resource
        if res.for_each is not None:
            table.setdefault(inst.name, {})[inst.index_key] = value
        elif res.count is not None:
            items = table.setdefault(inst.name, [])
            while len(items) <= inst.index_key:
                items.append(None)
            items[inst.index_key] = value
        else:
            table[inst.name] = value
        return value

    def declare_empty(self, node: Node) -> None:
        """A resource with zero instances still has a value: an empty map or list."""
        res: Resource = node.config
        table = self.roots[node.module][res.kind]
        if res.for_each is not None:
            table.setdefault(res.name, {})
        elif res.count is not None:
            table.setdefault(res.name, [])


_NODE_HANDLERS = {
    NODE_VARIABLE: Evaluator._variable,
    NODE_LOCAL: Evaluator._local,
    NODE_OUTPUT: Evaluator._output,
}


_LEAVES = frozenset({str, int, float, bool, type(None)})


def _has_sensitive(value: Any) -> bool:
    """True when a `Sensitive` marker sits where `strip_sensitive` looks (dicts, lists)."""
    if isinstance(value, Sensitive):
        return True
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        return False
    for item in value:
        if type(item) not in _LEAVES and _has_sensitive(item):
            return True
    return False


def _shown_path(directory: Path, stack_dir: Path) -> str:
    """A module directory as diagnostics name it: relative to the stack."""
    if Path(directory).resolve() == Path(stack_dir).resolve():
        return "the stack directory"
    try:
        return Path(directory).resolve().relative_to(Path(stack_dir).resolve()).as_posix()
    except ValueError:
        return str(directory)


def _with_address(diag: Diagnostic, address: str) -> Diagnostic:
    return replace(diag, address=diag.address or address)


def _spec_problem(kind: str, path: tuple, message: str) -> tuple[str, str]:
    """A spec problem as (summary text, hint): the summary names the attribute, a
    did-you-mean suggestion becomes the hint."""
    text, _, suggestion = message.partition("; did you mean ")
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    if where and f'"{path[-1]}"' not in text:
        text = f'attribute "{where}": {text}'
    if suggestion:
        return text, f"Did you mean {suggestion}"
    article = "an" if kind[0] in "aeiou" else "a"
    return text, f"See `mlform schema {kind}` for the attributes {article} {kind} takes."


__all__ = ["Evaluator", "Instance", "Evaluated", "instance_address", "REF_KEY", "NEEDS_APPLY"]
