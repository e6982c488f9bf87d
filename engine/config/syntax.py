"""The generic syntax of a spec file: bodies of attributes and blocks, with positions.

HCL, YAML and JSON files all become the same `Body` here, so the decoding that
follows (`decode.py`) is written once.  HCL goes through python-hcl2's parse
tree (the only source of line numbers).  YAML and JSON are one walk
(`_tree_body`) over nodes that know where they start: PyYAML's node graph,
whose marks give lines for every key, and for JSON the lazily scanned nodes
of `_json_nodes` (json's C decoder for values, a light scan for the keys).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import lark
import yaml

from mlform.config._hcl_errors import hcl_syntax_error
from mlform.config._json_nodes import MAPPING, SCALAR, SEQUENCE, JsonDocument, JsonValueError
from mlform.diagnostics import Diagnostic, DiagnosticError, SourceRange, error
from mlform.expr import ExprError, compile_hcl, compile_value, parse_type

# Names of nested blocks that YAML/JSON spell as mappings; in HCL they are blocks.
NESTED_BLOCKS = frozenset({"lifecycle", "settings", "backend", "validation"})


@dataclass
class Attribute:
    name: str
    expr: Any  # mlform.expr.Expr (or an object with the same interface)
    source: SourceRange


@dataclass
class Block:
    type: str
    labels: tuple[str, ...]
    body: "Body"
    source: SourceRange


@dataclass
class Body:
    attributes: dict[str, Attribute] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)
    source: SourceRange | None = None

    def blocks_of(self, type_: str) -> list[Block]:
        return [b for b in self.blocks if b.type == type_]


class BlockObjectExpr:
    """An object value assembled from a nested block's attributes (`settings { a = 1 }`).

    It quacks like `mlform.expr.Expr` so decoders need not care which syntax
    produced a value.
    """

    constant = False

    def __init__(self, body: Body, source: SourceRange) -> None:
        self.body = body
        self.source = source
        refs: list = []
        for attr in body.attributes.values():
            refs.extend(attr.expr.references)
        reads = any(getattr(a.expr, "reads_files", True) for a in body.attributes.values())
        for block in body.blocks:
            inner = BlockObjectExpr(block.body, block.source)
            refs.extend(inner.references)
            reads = reads or inner.reads_files
        self.references = tuple(refs)
        self.reads_files = reads

    def evaluate(self, scope) -> dict:
        out = {name: a.expr.evaluate(scope) for name, a in self.body.attributes.items()}
        for block in self.body.blocks:
            value = BlockObjectExpr(block.body, block.source).evaluate(scope)
            if block.labels:
                out.setdefault(block.type, {})[block.labels[0]] = value
            else:
                out[block.type] = value
        return out

    def static_traversal(self):
        return None

    def source_text(self) -> str:
        return "{ ... }"


# --------------------------------------------------------------------- HCL


def _token_text(node) -> str:
    """The text of an identifier/keyword/literal or a quoted label."""
    if isinstance(node, lark.Token):
        return str(node)
    if node.data == "string":
        parts = [c for c in node.children if isinstance(c, lark.Tree) and c.data == "string_part"]
        return "".join(str(p.children[0]) for p in parts if isinstance(p.children[0], lark.Token))
    return "".join(_token_text(c) for c in node.children)


def _pos(file: str, node) -> SourceRange:
    meta = getattr(node, "meta", None)
    if meta is not None and not getattr(meta, "empty", True):
        return SourceRange(file, meta.line, meta.column)
    if isinstance(node, lark.Token) and node.line:
        return SourceRange(file, node.line, node.column)
    return SourceRange(file)


def _hcl_body(tree: lark.Tree, file: str, diags: list[Diagnostic],
              block_type: str | None = None) -> Body:
    """`block_type` is the type of the top-level block this is the body of; None for
    the file's own body, "" for nested blocks."""
    body = Body(source=_pos(file, tree))
    for child in tree.children:
        if not isinstance(child, lark.Tree):
            continue
        if child.data == "attribute":
            name = _token_text(child.children[0])
            source = _pos(file, child)
            if name in body.attributes:
                diags.append(error(
                    f'Duplicate attribute "{name}"', source=source,
                    detail=f"It was already set at {body.attributes[name].source}.",
                    hint="Each attribute may be set once per block."))
                continue
            try:
                if block_type == "variable" and name == "type":
                    # `type = list(string)` is a type constraint, not a value: read it
                    # as one (compiling it would look for a function called list).
                    expr = parse_type(child.children[-1], file)
                else:
                    expr = compile_hcl(child.children[-1], file)
            except ExprError as exc:
                diags.append(exc.diagnostic())
                continue
            body.attributes[name] = Attribute(name, expr, source)
        elif child.data == "block":
            parts = [c for c in child.children if isinstance(c, lark.Tree)
                     and c.data not in ("body", "new_line_or_comment")]
            inner = next(c for c in child.children if isinstance(c, lark.Tree) and c.data == "body")
            type_ = _token_text(parts[0])
            labels = tuple(_token_text(p) for p in parts[1:])
            inner_type = type_ if block_type is None else ""
            body.blocks.append(Block(type_, labels, _hcl_body(inner, file, diags, inner_type),
                                     _pos(file, child)))
    return body


def parse_hcl(text: str, file: str, cache=None) -> tuple[Body, list[Diagnostic]]:
    """An HCL file's body; `cache` (a `ParseCache`) holds the trees of texts parsed before."""
    diags: list[Diagnostic] = []
    tree = cache.get(text) if cache is not None else None
    if tree is not None:
        return _hcl_body(tree.children[0], file, diags), diags
    import hcl2    # here, not at the top: a run whose files are all cached never needs it

    try:
        tree = hcl2.parses_to_tree(text)
    except lark.exceptions.LarkError as exc:
        return Body(source=SourceRange(file)), [hcl_syntax_error(exc, file, text)]
    except RecursionError:
        return Body(source=SourceRange(file)), [error(
            "Invalid HCL syntax: nesting too deep", source=SourceRange(file, 1, 1))]
    if cache is not None:
        cache.put(text, tree)
    return _hcl_body(tree.children[0], file, diags), diags


# ------------------------------------------------------------ YAML / JSON


class SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader limited to the values a spec holds (JSON's): dates stay
    the text written, and binary, sets and non-finite numbers are refused."""

    def construct_finite_float(self, node: yaml.Node) -> float:
        value = self.construct_yaml_float(node)
        if value != value or value in (float("inf"), float("-inf")):
            raise yaml.constructor.ConstructorError(
                None, None, "infinite and NaN numbers are not supported", node.start_mark)
        return value

    def refuse(self, node: yaml.Node) -> None:
        kind = str(node.tag).rsplit(":", 1)[-1]
        raise yaml.constructor.ConstructorError(
            None, None, f"{kind} values are not supported", node.start_mark)


SpecLoader.add_constructor("tag:yaml.org,2002:timestamp", SpecLoader.construct_yaml_str)
SpecLoader.add_constructor("tag:yaml.org,2002:float", SpecLoader.construct_finite_float)
for _tag in ("binary", "set", "omap", "pairs"):
    SpecLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", SpecLoader.refuse)


class _Constructor:
    """Turns PyYAML nodes into plain Python values (safe types only)."""

    def __init__(self) -> None:
        self._loader = SpecLoader("")

    def value(self, node: yaml.Node) -> Any:
        try:
            return self._loader.construct_document(node)
        except ValueError:  # an integer with more digits than Python converts
            raise yaml.constructor.ConstructorError(
                None, None, "this number has too many digits", node.start_mark) from None


def _mark(file: str, node: yaml.Node) -> SourceRange:
    return SourceRange(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _YamlNode:
    """A PyYAML node seen through the interface `_tree_body` walks (as `JsonNode`)."""

    __slots__ = ("node", "file", "ctor")

    def __init__(self, node: yaml.Node, file: str, ctor: _Constructor) -> None:
        self.node, self.file, self.ctor = node, file, ctor

    @property
    def pos(self) -> SourceRange:
        return _mark(self.file, self.node)

    @property
    def line_col(self) -> tuple[int, int]:
        """Where the value's text starts (as `JsonNode.line_col`): after a quote."""
        quoted = isinstance(self.node, yaml.ScalarNode) and self.node.style in ('"', "'")
        return self.node.start_mark.line + 1, self.node.start_mark.column + 1 + quoted

    @property
    def kind(self) -> str:
        if isinstance(self.node, yaml.MappingNode):
            return MAPPING
        return SEQUENCE if isinstance(self.node, yaml.SequenceNode) else SCALAR

    def value(self) -> Any:
        return self.ctor.value(self.node)

    def entries(self):
        for key_node, value_node in self.node.value:
            yield (self.ctor.value(key_node), _mark(self.file, key_node),
                   _YamlNode(value_node, self.file, self.ctor))

    def items(self):
        return (_YamlNode(item, self.file, self.ctor) for item in self.node.value)


# Top-level keys whose value maps a label to a block body (`dataset: {name: {...}}`).
LABELED = {"variable", "output", "provider", "module", "policy", "dataset", "training_cluster",
            "pipeline", "model", "endpoint", "monitor", "backend"}


def top_level_keys(text: str, suffix: str) -> set[str]:
    """The keys of a plain YAML/JSON document's top-level mapping; empty when it is not
    one or does not parse (the caller only asks whether it looks like a spec file)."""
    try:
        data = json.loads(text) if suffix == ".json" else yaml.load(text, Loader=_FAST_LOADER)
    except (ValueError, yaml.YAMLError, RecursionError):
        return set()
    return {k for k in data if isinstance(k, str)} if isinstance(data, dict) else set()


# libyaml's loader when PyYAML was built with it: this reads files that are not ours.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _tree_body(node, file: str, diags: list[Diagnostic], top: bool = False) -> Body:
    """The body a YAML or JSON mapping spells.

    `node` is a `_YamlNode` or a `JsonNode`: `pos` is where it starts, `line_col` where
    its text starts (inside a string's quotes; `compile_value` counts from there),
    `kind` is MAPPING, SEQUENCE or SCALAR, `value()` the plain value, `entries()` gives
    (key, where the key starts, value node) per member in file order (a key written
    twice comes twice) and `items()` a sequence's nodes.
    """
    body = Body(source=node.pos)
    if node.kind != MAPPING:
        diags.append(error("Expected a mapping of attributes", source=node.pos,
                           hint="A block body is a mapping: `name: value` per line."))
        return body
    for key, source, value_node in node.entries():
        if not isinstance(key, str):
            diags.append(error(f"Attribute names must be strings, got {key!r}", source=source))
            continue
        if top and key in LABELED:
            _tree_labeled(key, value_node, file, diags, body)
        elif top and key == "locals":
            body.blocks.append(Block("locals", (), _tree_body(value_node, file, diags), source))
        elif key in NESTED_BLOCKS and value_node.kind == MAPPING and not top:
            body.blocks.append(Block(key, (), _tree_body(value_node, file, diags), source))
        else:
            if key in body.attributes:
                diags.append(error(f'Duplicate attribute "{key}"', source=source))
                continue
            try:
                expr = compile_value(value_node.value(), file, *value_node.line_col)
            except ExprError as exc:
                diags.append(exc.diagnostic())
                continue
            body.attributes[key] = Attribute(key, expr, source)
    return body


def _tree_labeled(type_: str, node, file: str, diags: list[Diagnostic], body: Body) -> None:
    if node.kind != MAPPING:
        diags.append(error(f'"{type_}" must map names to blocks', source=node.pos,
                           hint=f"Write `{type_}:` then `  NAME:` and the block's attributes under it."))
        return
    for label, source, block_node in node.entries():
        # `provider: {memory: [{...}, {alias: x, ...}]}` declares several configurations.
        items = block_node.items() if block_node.kind == SEQUENCE else [block_node]
        for item in items:
            body.blocks.append(Block(type_, (str(label),), _tree_body(item, file, diags), source))


def parse_yaml(text: str, file: str) -> tuple[Body, list[Diagnostic]]:
    diags: list[Diagnostic] = []
    try:
        node = yaml.compose(text, Loader=SpecLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        return Body(), [error(f"Invalid YAML syntax: {exc.problem or exc.context}",
                              source=SourceRange(file, line, col),
                              hint="Check indentation and quoting on this line.")]
    except yaml.YAMLError as exc:
        return Body(), [error(f"Invalid YAML: {exc}", source=SourceRange(file))]
    if node is None:
        return Body(source=SourceRange(file)), []
    try:
        return _tree_body(_YamlNode(node, file, _Constructor()), file, diags, top=True), diags
    except yaml.MarkedYAMLError as exc:  # constructor errors (unknown tags, huge numbers)
        mark = exc.problem_mark or exc.context_mark
        return Body(), [error(f"Invalid YAML value: {exc.problem or exc.context}",
                              source=SourceRange(file, mark.line + 1, mark.column + 1) if mark
                              else SourceRange(file),
                              hint="Write plain strings, numbers, booleans, lists and mappings.")]
    except yaml.YAMLError as exc:
        return Body(), [error(f"Invalid YAML: {exc}", source=SourceRange(file))]


def parse_json(text: str, file: str) -> tuple[Body, list[Diagnostic]]:
    """JSON is checked and its errors worded by `json.loads`, then walked with the
    positions of `_json_nodes` (C-speed decoding of every attribute value)."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return Body(), [error(f"Invalid JSON syntax: {exc.msg}",
                              source=SourceRange(file, exc.lineno, exc.colno),
                              hint="JSON needs double quotes and no trailing commas.")]
    except ValueError:  # json refuses integers of more digits than Python converts
        return Body(), [error("Invalid JSON value: a number has too many digits",
                              source=SourceRange(file))]
    except RecursionError:
        return Body(), [error("Invalid JSON: nesting too deep", source=SourceRange(file, 1, 1))]
    diags: list[Diagnostic] = []
    try:
        return _tree_body(JsonDocument(text, file).root(), file, diags, top=True), diags
    except JsonValueError as exc:
        return Body(), [error(f"Invalid JSON value: {exc.message}", source=exc.source,
                              hint="Write plain strings, numbers, booleans, lists and objects.")]
    except RecursionError:
        return Body(), [error("Invalid JSON: nesting too deep", source=SourceRange(file, 1, 1))]


PARSERS = {".hcl": parse_hcl, ".tf": parse_hcl, ".yaml": parse_yaml, ".yml": parse_yaml,
           ".json": parse_json}


def parse_file(path, display: str, cache=None) -> Body:
    """Parse one spec file; raises DiagnosticError with every syntax problem found.
    `cache` (a `ParseCache`) keeps HCL parse trees by content."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DiagnosticError.single(f"Cannot read spec file: {exc.strerror}",
                                     source=SourceRange(display))
    try:
        text = data.decode("utf-8-sig")  # a leading byte-order mark is not content
    except UnicodeDecodeError as exc:
        head = data[:exc.start]
        line, column = head.count(b"\n") + 1, len(head) - head.rfind(b"\n")
        raise DiagnosticError.single(
            "Spec file is not valid UTF-8", source=SourceRange(display, line, column),
            detail=f"Byte 0x{data[exc.start]:02x} cannot start or continue a UTF-8 character.",
            hint="Save the file as UTF-8.") from None
    parser = PARSERS[path.suffix]
    body, diags = parser(text, display, cache) if parser is parse_hcl else parser(text, display)
    if diags:
        raise DiagnosticError(diags)
    return body
