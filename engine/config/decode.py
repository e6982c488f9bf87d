"""Decode generic bodies (`syntax.Body`) into the typed configuration (`model`).

Each top-level block type has one decoder in `BLOCK_DECODERS`; unknown block
types, misplaced attributes and malformed meta-arguments become diagnostics
with the file and line they were written at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from mlform.config.model import (
    MLFLOW_ARGUMENTS, POLICY_ACTIONS, RESOURCE_KINDS, TRACKING_SYSTEMS, Lifecycle, MlflowTarget,
    Module, ModuleCall, Output, Policy, ProviderConfig, Resource, Tracking, Traversal, Validation,
    Variable,
)
from mlform.diagnostics import SourceRange
from mlform.config.syntax import Attribute, Block, BlockObjectExpr, Body
from mlform.diagnostics import Diagnostic, error
from mlform.expr import ExprError, Scope, parse_type
from mlform.specs import did_you_mean


class Decoder:
    """Collects diagnostics while decoding one module's files."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self.diags: list[Diagnostic] = []
        self._const_scope = Scope({}, base_dir=module.dir)

    # ------------------------------------------------------------ helpers

    def constant(self, attr: Attribute, what: str) -> Any:
        """Evaluate an attribute that must not depend on anything (a literal)."""
        if attr.expr.references:
            self.diags.append(error(
                f"{what} must be a literal value", source=attr.source,
                detail=f'"{attr.name}" cannot refer to {attr.expr.references[0].parts[0]}.*',
                hint="Write the value itself here; references are resolved later."))
            return None
        try:
            return attr.expr.evaluate(self._const_scope)
        except ExprError as exc:
            self.diags.append(exc.diagnostic())
            return None

    def constant_bool(self, attr: Attribute | None, what: str, default: bool = False) -> bool:
        if attr is None:
            return default
        value = self.constant(attr, what)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.diags.append(error(f"{what} must be true or false", source=attr.source,
                                    detail=f"Got {value!r}."))
            return default
        return value

    def traversals(self, attr: Attribute, what: str) -> list[Traversal]:
        """A list of static references (`[dataset.x, "model.y"]`): both spellings work."""
        if attr.expr.constant:
            value = self.constant(attr, what)
            items = value if isinstance(value, list) else [value]
            out = []
            for item in items:
                if not isinstance(item, str) or not item:
                    self.diags.append(error(f"{what} must list references", source=attr.source,
                                            detail=f"Got {item!r}.",
                                            hint='Write references like dataset.x or "dataset.x".'))
                    continue
                out.append(Traversal(_split_path(item), attr.source))
            return out
        return [Traversal(tuple(r.parts), r.source) for r in attr.expr.references]

    def unexpected(self, body: Body, allowed_attrs, allowed_blocks, where: str) -> None:
        for name, attr in body.attributes.items():
            if name not in allowed_attrs:
                hint = did_you_mean(name, allowed_attrs)
                self.diags.append(error(f'Unsupported argument "{name}" in {where}',
                                        source=attr.source, hint=hint or
                                        "Allowed here: " + ", ".join(sorted(allowed_attrs)) + "."))
        for block in body.blocks:
            if block.type not in allowed_blocks:
                hint = did_you_mean(block.type, allowed_blocks)
                self.diags.append(error(f'Unsupported block "{block.type}" in {where}',
                                        source=block.source, hint=hint or
                                        ("Allowed blocks: " + ", ".join(sorted(allowed_blocks)) + "."
                                         if allowed_blocks else "No nested blocks are allowed here.")))

    def need_labels(self, block: Block, n: int, names: str) -> bool:
        if len(block.labels) != n:
            self.diags.append(error(
                f'A "{block.type}" block needs {n} label{"s" if n != 1 else ""} ({names})',
                source=block.source, detail=f"Found {len(block.labels)}.",
                hint=f'Write: {block.type} "{names}" {{ ... }}'))
            return False
        return True

    def unique(self, table: dict, key: str, block: Block, what: str) -> bool:
        if key in table:
            prior = getattr(table[key], "source", None)
            self.diags.append(error(f'Duplicate {what} "{key}"', source=block.source,
                                    detail=f"It was already declared at {prior}." if prior else "",
                                    hint="Names must be unique within a module."))
            return False
        return True

    # ------------------------------------------------------------ blocks

    def file(self, body: Body) -> None:
        for name, attr in body.attributes.items():
            if name == "tracking":   # YAML/JSON: `tracking: {mlflow: {...}}` is a value
                self.set_tracking(tracking_of(attr.expr, attr.source, "tracking"), attr.source)
                continue
            self.diags.append(error(f'Unexpected attribute "{name}" at the top level',
                                    source=attr.source,
                                    hint="Top-level entries are blocks: variable, locals, output, "
                                         "provider, module, policy, tracking, or a resource kind."))
        for block in body.blocks:
            decoder = BLOCK_DECODERS.get(block.type)
            if decoder is None:
                hint = did_you_mean(block.type, BLOCK_DECODERS) or (
                    "Known blocks: " + ", ".join(sorted(BLOCK_DECODERS)) + ".")
                self.diags.append(error(f'Unknown block type "{block.type}"', source=block.source,
                                        hint=hint))
                continue
            decoder(self, block)

    def variable(self, block: Block) -> None:
        if not self.need_labels(block, 1, "NAME"):
            return
        name = block.labels[0]
        if not self.unique(self.module.variables, name, block, "variable"):
            return
        body = block.body
        self.unexpected(body, {"type", "default", "sensitive", "description", "nullable"},
                        {"validation"}, f'variable "{name}"')
        var = Variable(name=name, source=block.source)
        if "type" in body.attributes:
            try:
                var.type = parse_type(body.attributes["type"].expr)
            except ExprError as exc:
                self.diags.append(exc.diagnostic())
        if "default" in body.attributes:
            var.default = body.attributes["default"]
            var.has_default = True
            self.constant(var.default, f'The default of variable "{name}"')
            var.default = var.default.expr
        var.sensitive = self.constant_bool(body.attributes.get("sensitive"), '"sensitive"')
        var.nullable = self.constant_bool(body.attributes.get("nullable"), '"nullable"', True)
        if "description" in body.attributes:
            var.description = str(self.constant(body.attributes["description"], '"description"') or "")
        for v in body.blocks_of("validation"):
            self.unexpected(v.body, {"condition", "error_message"}, set(), "validation")
            cond = v.body.attributes.get("condition")
            msg = v.body.attributes.get("error_message")
            if cond is None or msg is None:
                self.diags.append(error("A validation block needs condition and error_message",
                                        source=v.source))
                continue
            var.validations.append(Validation(cond.expr, str(self.constant(msg, '"error_message"')),
                                              v.source))
        self.module.variables[name] = var

    def locals_(self, block: Block) -> None:
        self.unexpected(block.body, block.body.attributes.keys(), set(), "locals")
        for name, attr in block.body.attributes.items():
            if name in self.module.locals:
                self.diags.append(error(f'Duplicate local value "{name}"', source=attr.source,
                                        detail=f"Already defined at {self.module.locals[name][1]}."))
                continue
            self.module.locals[name] = (attr.expr, attr.source)

    def output(self, block: Block) -> None:
        if not self.need_labels(block, 1, "NAME"):
            return
        name = block.labels[0]
        if not self.unique(self.module.outputs, name, block, "output"):
            return
        body = block.body
        self.unexpected(body, {"value", "sensitive", "description", "depends_on"}, set(),
                        f'output "{name}"')
        if "value" not in body.attributes:
            self.diags.append(error(f'Output "{name}" needs a value', source=block.source,
                                    hint='Add: value = <expression>'))
            return
        out = Output(name, body.attributes["value"].expr, block.source)
        out.sensitive = self.constant_bool(body.attributes.get("sensitive"), '"sensitive"')
        if "description" in body.attributes:
            out.description = str(self.constant(body.attributes["description"], '"description"') or "")
        if "depends_on" in body.attributes:
            out.depends_on = self.traversals(body.attributes["depends_on"], "depends_on")
        self.module.outputs[name] = out

    def provider(self, block: Block) -> None:
        if not self.need_labels(block, 1, "TYPE"):
            return
        config = provider_config(self, block)
        if config is None:
            return
        if config.key in self.module.providers:
            self.diags.append(error(f'Duplicate provider configuration "{config.key}"',
                                    source=block.source,
                                    hint='Give the second one an alias: alias = "name".'))
            return
        self.module.providers[config.key] = config

    def module_call(self, block: Block) -> None:
        if not self.need_labels(block, 1, "NAME"):
            return
        name = block.labels[0]
        if not self.unique(self.module.module_calls, name, block, "module"):
            return
        attrs = dict(block.body.attributes)
        src = attrs.pop("source", None)
        if src is None:
            self.diags.append(error(f'Module "{name}" needs a source', source=block.source,
                                    hint='Add: source = "../modules/NAME" (a local path).'))
            return
        reported = len(self.diags)
        path = self.constant(src, "A module source")
        if not isinstance(path, str):
            if len(self.diags) == reported:
                self.diags.append(error(f'Module "{name}": source must be a path string',
                                        source=src.source, detail=f"Got {path!r}.",
                                        hint='Write: source = "../modules/NAME" (a local path).'))
            return
        depends = self.traversals(attrs.pop("depends_on"), "depends_on") if "depends_on" in attrs else []
        for b in block.body.blocks:
            self.diags.append(error(f'Unsupported block "{b.type}" in module "{name}"',
                                    source=b.source))
        self.module.module_calls[name] = ModuleCall(
            name, path, {k: a.expr for k, a in attrs.items()}, block.source, depends,
            {k: a.source for k, a in attrs.items()})

    def resource(self, block: Block) -> None:
        kind = block.type
        if not self.need_labels(block, 1, "NAME"):
            return
        name = block.labels[0]
        key = f"{kind}.{name}"
        if not self.unique(self.module.resources, key, block, "resource"):
            return
        res = Resource(kind=kind, name=name, source=block.source, attributes={})
        body = block.body
        for attr_name, attr in body.attributes.items():
            meta = RESOURCE_META.get(attr_name)
            if meta is not None:
                meta(self, res, attr)
            else:
                res.attributes[attr_name] = attr.expr
                res.attribute_sources[attr_name] = attr.source
        for nested in body.blocks:
            if nested.type == "lifecycle":
                res.lifecycle = self.lifecycle(nested)
            elif nested.type == "settings":
                if "settings" in res.attributes:
                    self.diags.append(error("settings is set twice", source=nested.source))
                    continue
                res.attributes["settings"] = BlockObjectExpr(nested.body, nested.source)
                res.attribute_sources["settings"] = nested.source
            else:
                hint = did_you_mean(nested.type, ("lifecycle", "settings"))
                self.diags.append(error(f'Unsupported block "{nested.type}" in {key}',
                                        source=nested.source,
                                        hint=hint or "Resources take lifecycle { } and settings { } blocks; "
                                                     "other nested values are attributes: name = { ... }."))
        if res.count is not None and res.for_each is not None:
            self.diags.append(error(f"{key} sets both count and for_each", source=block.source,
                                    hint="Use one of them."))
        self.module.resources[key] = res

    def policy(self, block: Block) -> None:
        if not self.need_labels(block, 1, "NAME"):
            return
        name = block.labels[0]
        if not self.unique(self.module.policies, name, block, "policy"):
            return
        body = block.body
        self.unexpected(body, POLICY_ARGUMENTS, set(), f'policy "{name}"')
        attrs = body.attributes
        if "condition" not in attrs:
            self.diags.append(error(f'Policy "{name}" needs a condition', source=block.source,
                                    hint="Add: condition = <an expression that must be true>, "
                                         "e.g. plan.totals.gpus <= 8."))
            return
        policy = Policy(name, block.source, attrs["condition"].expr,
                        attribute_sources={k: a.source for k, a in attrs.items()})
        for key in ("level", "message", "enabled"):
            if key in attrs:
                setattr(policy, key, attrs[key].expr)
        if "description" in attrs:
            policy.description = str(self.constant(attrs["description"], '"description"') or "")
        policy.kinds = self._names(attrs.get("kinds"), "kinds", RESOURCE_KINDS)
        policy.actions = self._names(attrs.get("actions"), "actions", POLICY_ACTIONS)
        self.module.policies[name] = policy

    def tracking(self, block: Block) -> None:
        """`tracking { mlflow { uri = "..."  experiment = "..." } }`: where runs are logged."""
        if block.labels:
            self.diags.append(error('A "tracking" block takes no labels', source=block.source,
                                    hint='Write: tracking { mlflow { uri = "http://..." } }'))
            return
        self.set_tracking(tracking_of(BlockObjectExpr(block.body, block.source), block.source,
                                      "tracking"), block.source)

    def set_tracking(self, tracking: Tracking, source: SourceRange) -> None:
        if self.module.tracking is not None:
            self.diags.append(error("Duplicate tracking block", source=source,
                                    detail=f"It was already declared at {self.module.tracking.source}.",
                                    hint="A stack has one tracking block; a provider's own "
                                         "`tracking` argument overrides it for its runs."))
            return
        self.diags.extend(literal_tracking_diagnostics(tracking, self.module.dir))
        self.module.tracking = tracking

    def _names(self, attr: Attribute | None, what: str, allowed: tuple) -> tuple[str, ...]:
        """A literal list of names from `allowed` (a policy's kinds or actions filter)."""
        if attr is None:
            return ()
        value = self.constant(attr, what)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.diags.append(error(f"{what} must be a list of strings", source=attr.source,
                                    detail=f"Got {value!r}.",
                                    hint=f"One or more of: {', '.join(allowed)}."))
            return ()
        for v in value:
            if v not in allowed:
                self.diags.append(error(f'Unknown {what[:-1]} "{v}" in {what}', source=attr.source,
                                        hint=did_you_mean(v, allowed)
                                        or f"One or more of: {', '.join(allowed)}."))
        return tuple(v for v in value if v in allowed)

    def lifecycle(self, block: Block) -> Lifecycle:
        body = block.body
        self.unexpected(body, {"prevent_destroy", "create_before_destroy", "ignore_changes",
                               "replace_triggered_by"}, set(), "lifecycle")
        lc = Lifecycle()
        lc.prevent_destroy = self.constant_bool(body.attributes.get("prevent_destroy"), "prevent_destroy")
        lc.create_before_destroy = self.constant_bool(body.attributes.get("create_before_destroy"),
                                                      "create_before_destroy")
        if "ignore_changes" in body.attributes:
            attr = body.attributes["ignore_changes"]
            # `all` is Terraform's bare keyword; the string "all" (YAML/JSON, old HCL) also works
            if (attr.expr.static_traversal() == ("all",)
                    or attr.expr.constant and self.constant(attr, "ignore_changes") == "all"):
                lc.ignore_changes = "all"
            else:
                lc.ignore_changes = [t.parts for t in self.traversals(attr, "ignore_changes")]
        if "replace_triggered_by" in body.attributes:
            lc.replace_triggered_by = self.traversals(body.attributes["replace_triggered_by"],
                                                      "replace_triggered_by")
        return lc


POLICY_ARGUMENTS = frozenset({"condition", "level", "description", "message", "enabled", "kinds",
                              "actions"})


def _split_path(text: str) -> tuple:
    """`settings.instance_type` / `dataset.d["k"]` / `x[0]` → path parts."""
    parts: list = []
    for piece in text.replace("]", "").split("."):
        head, *indexes = piece.split("[")
        if head:
            parts.append(head)
        for ix in indexes:
            ix = ix.strip().strip('"')
            parts.append(int(ix) if ix.isdigit() else ix)
    return tuple(parts)


def provider_config(decoder: Decoder, block: Block) -> ProviderConfig | None:
    attrs = dict(block.body.attributes)
    alias = None
    if "alias" in attrs:
        alias = decoder.constant(attrs.pop("alias"), "alias")
    config = ProviderConfig(block.labels[0], alias, {k: a.expr for k, a in attrs.items()},
                            block.source, {k: a.source for k, a in attrs.items()})
    for nested in block.body.blocks:
        config.attributes[nested.type] = BlockObjectExpr(nested.body, nested.source)
        config.attribute_sources[nested.type] = nested.source
    return config


def tracking_of(expr: Any, source: SourceRange, where: str) -> Tracking:
    """A `Tracking` from its expression; written as blocks, each part's place is kept."""
    sources: dict[str, SourceRange] = {}
    body = getattr(expr, "body", None)   # a BlockObjectExpr: `tracking { mlflow { ... } }`
    if isinstance(body, Body):
        for name, attr in body.attributes.items():
            sources[name] = attr.source
        for block in body.blocks:
            sources[block.type] = block.source
            for name, attr in block.body.attributes.items():
                sources[f"{block.type}.{name}"] = attr.source
            for inner in block.body.blocks:
                sources[f"{block.type}.{inner.type}"] = inner.source
    return Tracking(expr, source, where, sources)


def literal_tracking_diagnostics(tracking: Tracking, base_dir: Path) -> list[Diagnostic]:
    """What is wrong with a tracking setting that refers to nothing (checked when the
    stack loads); one that refers to variables is checked when it is evaluated."""
    if tracking.value.references:
        return []
    try:
        value = tracking.value.evaluate(Scope({}, base_dir=base_dir))
    except ExprError as exc:
        return [exc.diagnostic()]
    return tracking_target(value, tracking)[1]


def tracking_target(value: Any, tracking: Tracking) -> tuple[MlflowTarget | None, list[Diagnostic]]:
    """The MLflow target a tracking setting's value names, or the diagnostics saying why
    it names none (each at the part it is about, when that part was written as a block)."""
    where, src = tracking.where, tracking.sources
    example = 'mlflow { uri = "http://127.0.0.1:5000"  experiment = "fraud" }'
    if not isinstance(value, dict):
        return None, [error(f"{where}: tracking must be an object", source=tracking.source,
                            detail=f"Got {value!r}.", hint=f"Write: tracking {{ {example} }}")]
    diags = [error(f'Unsupported tracking system "{name}" in {where}',
                   source=src.get(str(name), tracking.source),
                   hint=did_you_mean(str(name), TRACKING_SYSTEMS)
                   or f"Supported: {', '.join(TRACKING_SYSTEMS)}.")
             for name in value if name not in TRACKING_SYSTEMS]
    mlflow = value.get("mlflow")
    if mlflow is None:
        if not diags:
            diags.append(error(f"{where}: tracking names no tracking system",
                               source=tracking.source, hint=f"Write: tracking {{ {example} }}"))
        return None, diags
    at = src.get("mlflow", tracking.source)
    if not isinstance(mlflow, dict):
        return None, diags + [error(f"{where}: mlflow must be an object", source=at,
                                    detail=f"Got {mlflow!r}.", hint=f"Write: {example}")]
    for name in mlflow:
        if name not in MLFLOW_ARGUMENTS:
            diags.append(error(f'Unsupported argument "{name}" in {where} mlflow',
                               source=src.get(f"mlflow.{name}", at),
                               hint=did_you_mean(str(name), MLFLOW_ARGUMENTS)
                               or f"mlflow takes: {', '.join(MLFLOW_ARGUMENTS)}."))
    uri, experiment = mlflow.get("uri"), mlflow.get("experiment")
    if uri is None:
        diags.append(error(f"{where}: mlflow needs a uri", source=at,
                           hint='Add the tracking server\'s address: uri = "http://127.0.0.1:5000".'))
    elif not isinstance(uri, str) or not uri.strip() or any(c.isspace() for c in uri):
        diags.append(error(f"{where}: mlflow's uri must be a URI", source=src.get("mlflow.uri", at),
                           detail=f"Got {uri!r}.",
                           hint='Write the tracking server\'s address: uri = "http://127.0.0.1:5000".'))
    if experiment is not None and (not isinstance(experiment, str) or not experiment.strip()):
        diags.append(error(f"{where}: mlflow's experiment must be a name",
                           source=src.get("mlflow.experiment", at), detail=f"Got {experiment!r}.",
                           hint='Write experiment = "fraud", or leave it out: the experiment '
                                'is then named after the stack.'))
    if diags:
        return None, diags
    return MlflowTarget(uri=uri.rstrip("/"), experiment=experiment, source=at), []


def _meta_provider(decoder: Decoder, res: Resource, attr: Attribute) -> None:
    trav = attr.expr.static_traversal()
    if trav is None and attr.expr.constant:
        value = decoder.constant(attr, "provider")
        trav = tuple(value.split(".")) if isinstance(value, str) else None
    if not trav or len(trav) > 2 or not all(isinstance(p, str) for p in trav):
        decoder.diags.append(error("Invalid provider reference", source=attr.source,
                                   hint="Write provider = TYPE or provider = TYPE.ALIAS."))
        return
    res.provider = ".".join(trav)
    res.provider_source = attr.source


def _meta_depends_on(decoder: Decoder, res: Resource, attr: Attribute) -> None:
    res.depends_on = decoder.traversals(attr, "depends_on")


def _meta_for_each(decoder: Decoder, res: Resource, attr: Attribute) -> None:
    res.for_each = attr.expr
    res.attribute_sources["for_each"] = attr.source


def _meta_count(decoder: Decoder, res: Resource, attr: Attribute) -> None:
    res.count = attr.expr
    res.attribute_sources["count"] = attr.source


def _meta_lifecycle_attr(decoder: Decoder, res: Resource, attr: Attribute) -> None:
    decoder.diags.append(error("lifecycle is a block", source=attr.source,
                               hint="Write lifecycle { prevent_destroy = true } without '='."))


RESOURCE_META: dict[str, Callable[[Decoder, Resource, Attribute], None]] = {
    "provider": _meta_provider,
    "depends_on": _meta_depends_on,
    "for_each": _meta_for_each,
    "count": _meta_count,
    "lifecycle": _meta_lifecycle_attr,
}

BLOCK_DECODERS: dict[str, Callable[[Decoder, Block], None]] = {
    "variable": Decoder.variable,
    "locals": Decoder.locals_,
    "output": Decoder.output,
    "provider": Decoder.provider,
    "module": Decoder.module_call,
    "policy": Decoder.policy,
    "tracking": Decoder.tracking,
    **{kind: Decoder.resource for kind in RESOURCE_KINDS},
}


def decode_module(bodies: list[Body], module: Module) -> list[Diagnostic]:
    decoder = Decoder(module)
    for body in bodies:
        decoder.file(body)
    return decoder.diags


def relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


__all__ = ["decode_module", "Decoder", "provider_config", "relative", "tracking_of",
           "tracking_target", "literal_tracking_diagnostics"]
