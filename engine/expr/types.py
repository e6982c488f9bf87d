"""Type constraints of `variable { type = ... }`.

`parse_type` reads HCL type expressions - ``string``, ``number``, ``bool``,
``any``, ``list(T)``, ``set(T)``, ``map(T)``, ``tuple([T, ...])`` and
``object({a = T, b = optional(T, default)})`` - from a python-hcl2 subtree, a
compiled `Expr`, or text (YAML writes ``type: "list(string)"``).
`TypeConstraint.convert` converts a value the way Terraform does ("5" -> 5 for
a number) or raises `ExprError` saying what was required and what was given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from lark import Token, Tree

from mlform.diagnostics import SourceRange
from mlform.expr import ops
from mlform.expr.errors import ExprError
from mlform.expr.values import UNKNOWN, Sensitive

__all__ = ["TypeConstraint", "parse_type", "ANY"]

_Path = tuple
PosFn = Callable[[int, int], SourceRange]


class TypeConstraint:
    """Base of every type constraint; `str()` prints it as HCL."""

    def convert(self, value: Any, source: SourceRange | None = None) -> Any:
        """`value` converted to this type; raises `ExprError` when it cannot be."""
        try:
            return self._convert(value, ())
        except _Mismatch as err:
            detail = err.message[:1].upper() + err.message[1:] + "."
            if err.path:
                detail = f"At {_where(err.path)}: {err.message}."
            raise ExprError("Invalid value", detail, source,
                            hint=f"The type constraint is {self}.") from None

    def _convert(self, value: Any, path: _Path) -> Any:
        raise NotImplementedError

    def _article(self) -> str:
        """`a number`, `a list of string` - how messages name this type."""
        text = self._describe()
        return ("an " if text[:1] in "aeiou" else "a ") + text

    def _describe(self) -> str:
        return str(self)


class _Mismatch(Exception):
    def __init__(self, path: _Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _where(path: _Path) -> str:
    """A path into a value as HCL would index it: [0].name["some key"]."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][\w-]*", part):
            text += ("." if text else "") + part
        else:
            text += f'["{part}"]'
    return text


def _given(value: Any) -> str:
    name = ops.type_name(value)
    if isinstance(value, str) and len(value) <= 40:
        return f'{name} "{value}"'
    return name


def _markers(convert):
    """UNKNOWN passes through; Sensitive is unwrapped, converted and re-wrapped."""

    def wrapper(self, value: Any, path: _Path) -> Any:
        if value is UNKNOWN:
            return UNKNOWN
        if type(value) is Sensitive:
            inner = wrapper(self, value.value, path)
            return inner if inner is UNKNOWN else Sensitive(inner)
        return convert(self, value, path)
    return wrapper


@dataclass(frozen=True)
class Primitive(TypeConstraint):
    name: str  # "string" | "number" | "bool" | "any"

    def __str__(self) -> str:
        return self.name

    def _describe(self) -> str:
        return "value" if self.name == "any" else self.name

    @_markers
    def _convert(self, value: Any, path: _Path) -> Any:
        if value is None or self.name == "any":
            return value
        if self.name == "string":
            text = ops.to_string(value)
            if text is not None:
                return text
        elif self.name == "number":
            if ops.is_number(value):
                return ops.normalize(value)
            if isinstance(value, str):
                number = ops.parse_number(value)
                if number is not None:
                    return number
        elif self.name == "bool":
            if isinstance(value, bool):
                return value
            if value in ("true", "false") and isinstance(value, str):
                return value == "true"
        raise _Mismatch(path, f"{self._article()} is required, got {_given(value)}")


ANY = Primitive("any")


@dataclass(frozen=True)
class Collection(TypeConstraint):
    kind: str  # "list" | "set" | "map"
    element: TypeConstraint

    def __str__(self) -> str:
        return f"{self.kind}({self.element})"

    def _describe(self) -> str:
        return f"{self.kind} of {self.element._describe()}"

    @_markers
    def _convert(self, value: Any, path: _Path) -> Any:
        if value is None:
            return None
        if self.kind == "map":
            if isinstance(value, Mapping):
                return {k: self.element._convert(v, path + (k,)) for k, v in value.items()}
        elif isinstance(value, (list, tuple)):
            items = [self.element._convert(v, path + (i,)) for i, v in enumerate(value)]
            if self.kind == "set":
                from mlform.expr.functions import _set_order  # a set is a sorted list
                return _set_order(items) if UNKNOWN not in items else items
            return items
        raise _Mismatch(path, f"{self._article()} is required, got {_given(value)}")


@dataclass(frozen=True)
class TupleType(TypeConstraint):
    elements: tuple[TypeConstraint, ...]

    def __str__(self) -> str:
        return "tuple([" + ", ".join(str(e) for e in self.elements) + "])"

    def _describe(self) -> str:
        n = len(self.elements)
        return f"tuple of {n} element{'s' if n != 1 else ''}"

    @_markers
    def _convert(self, value: Any, path: _Path) -> Any:
        if value is None:
            return None
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(path, f"{self._article()} is required, got {_given(value)}")
        if len(value) != len(self.elements):
            raise _Mismatch(path, f"{self._article()} is required, got a list of "
                                  f"{len(value)}")
        return [t._convert(v, path + (i,)) for i, (t, v) in enumerate(zip(self.elements, value))]


@dataclass(frozen=True)
class ObjectAttribute:
    """One attribute of an `object({...})` type: its type, and whether `optional(...)`
    wraps it, with the default filled in when a value leaves it out."""

    type: TypeConstraint
    optional: bool = False
    default: Any = None

    def __str__(self) -> str:
        if not self.optional:
            return str(self.type)
        if self.default is None:
            return f"optional({self.type})"
        return f"optional({self.type}, {ops.hcl_literal(self.default)})"


@dataclass(frozen=True)
class ObjectType(TypeConstraint):
    attributes: Mapping[str, ObjectAttribute] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(tuple(self.attributes))

    def __str__(self) -> str:
        inner = ", ".join(f"{k} = {a}" for k, a in self.attributes.items())
        return "object({" + inner + "})"

    def _describe(self) -> str:
        return "object"

    @_markers
    def _convert(self, value: Any, path: _Path) -> Any:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise _Mismatch(path, f"an object is required, got {_given(value)}")
        out = {}
        for name, attr in self.attributes.items():
            item = value.get(name)
            if item is None:
                if not attr.optional:
                    raise _Mismatch(path, f'attribute "{name}" is required')
                item = attr.default
                if item is None:
                    out[name] = None
                    continue
            out[name] = attr.type._convert(item, path + (name,))
        return out  # attributes not in the type are dropped, as Terraform does


# ---------------------------------------------------------------------------
# Parsing type expressions
# ---------------------------------------------------------------------------

_PRIMITIVES = {"string", "number", "bool", "any"}


def parse_type(spec: Any, file: str = "<type>", line: int = 1, column: int = 1
               ) -> TypeConstraint:
    """A `TypeConstraint` from a lark subtree, an `Expr` or type text like "map(number)"."""
    from mlform.expr.compile import Expr, _parse_text

    if isinstance(spec, TypeConstraint):
        return spec
    if isinstance(spec, str):
        node, ctx, _ = _parse_text(spec, file, line, column)
        return _from_node(node, file, ctx.pos)
    if isinstance(spec, Expr):
        if spec.node is not None:
            return _from_node(spec.node, spec.source.file, _shift_to(spec))
        value = spec.evaluate()
        if isinstance(value, str):
            return parse_type(value, spec.source.file, spec.source.line, spec.source.column)
        raise ExprError("Invalid type specification",
                        f"A type is written like string, number or list(string), got "
                        f"{ops.type_name(value)}.", spec.source)
    if isinstance(spec, Tree) and spec.data == "attribute":
        spec = spec.children[-1]
    if isinstance(spec, (Tree, Token)):
        return _from_node(spec, file, _identity(file))
    raise ExprError("Invalid type specification", f"Cannot read a type from {spec!r}.",
                    SourceRange(file, line, column))


def _unwrap(node: Tree) -> Tree:
    while node.data == "expr_term" and len(node.children) == 1 \
            and isinstance(node.children[0], Tree):
        node = node.children[0]
    return node


def _kids(node: Tree) -> list[Tree]:
    return [c for c in node.children if isinstance(c, Tree) and c.data != "new_line_or_comment"]


def _identity(file: str) -> PosFn:
    return lambda line, column: SourceRange(file, line, column)


def _shift_to(expr: Any) -> PosFn:
    """Positions of an Expr's tree mapped so its start lands on expr.source."""
    line0, col0 = _pos(expr.node)
    src = expr.source

    def pos(line: int, column: int) -> SourceRange:
        if line == line0:
            return SourceRange(src.file, src.line, src.column + column - col0)
        return SourceRange(src.file, src.line + line - line0, column)
    return pos


def _from_node(node: Any, file: str, pos: PosFn) -> TypeConstraint:
    from mlform.expr.compile import compile_hcl

    if not isinstance(node, Tree):
        raise ExprError("Invalid type specification", "Expected a type expression.",
                        SourceRange(file))
    node = _unwrap(node)
    src = pos(*_pos(node))
    if node.data == "identifier":
        name = node.children[0].value
        if name in _PRIMITIVES:
            return Primitive(name)
        raise ExprError("Invalid type specification",
                        f'The keyword "{name}" is not a valid type specification.', src,
                        hint="Use string, number, bool, any, list(T), set(T), map(T), "
                             "tuple([...]) or object({...}).")
    if node.data == "string":
        # Legacy quoted form (type = "string"), and YAML's type: "list(string)".
        text = compile_hcl(node, file).evaluate()
        if isinstance(text, str):
            return parse_type(text, file, src.line, src.column + 1)
    if node.data == "function_call":
        names = [c.children[0].value for c in node.children
                 if isinstance(c, Tree) and c.data == "identifier"]
        args_node = next((c for c in node.children
                          if isinstance(c, Tree) and c.data == "arguments"), None)
        args = _kids(args_node) if args_node is not None else []
        name = names[-1] if len(names) == 1 else "::".join(names)
        if name in ("list", "set", "map"):
            if len(args) != 1:
                raise ExprError("Invalid type specification",
                                f"{name}() takes exactly one element type.", src)
            return Collection(name, _from_node(args[0], file, pos))
        if name == "tuple":
            inner = _unwrap(args[0]) if len(args) == 1 else None
            if inner is None or inner.data != "tuple":
                raise ExprError("Invalid type specification",
                                "tuple() takes a list of element types, like "
                                "tuple([string, number]).", src)
            return TupleType(tuple(_from_node(e, file, pos) for e in _kids(inner)))
        if name == "object":
            inner = _unwrap(args[0]) if len(args) == 1 else None
            if inner is None or inner.data != "object":
                raise ExprError("Invalid type specification",
                                "object() takes a map of attribute types, like "
                                "object({name = string}).", src)
            return ObjectType(_object_attributes(inner, file, pos))
        if name == "optional":
            raise ExprError("Invalid type specification",
                            "optional() is only allowed for an attribute of object({...}).",
                            src)
        raise ExprError("Invalid type specification",
                        f'"{name}" is not a type constructor.', src,
                        hint="Use list(T), set(T), map(T), tuple([...]) or object({...}).")
    raise ExprError("Invalid type specification",
                    "A type is written like string, number, list(string) or "
                    "object({name = string}).", src)


def _object_attributes(node: Tree, file: str, pos: PosFn) -> dict[str, ObjectAttribute]:
    from mlform.expr.compile import compile_hcl

    attributes: dict[str, ObjectAttribute] = {}
    for elem in _kids(node):
        key_node, value_node = elem.children[0], elem.children[-1]
        key_inner = key_node.children[0]
        key_inner = _unwrap(key_inner) if key_inner.data == "expr_term" else key_inner
        if key_inner.data in ("identifier", "keyword"):
            key = key_inner.children[0].value
        else:
            key = compile_hcl(key_inner, file).evaluate()
            if not isinstance(key, str):
                raise ExprError("Invalid type specification",
                                "Object attribute names must be strings.",
                                pos(*_pos(key_node)))
        value = _unwrap(value_node)
        if value.data == "function_call" and _call_name(value) == "optional":
            args_node = next((c for c in value.children
                              if isinstance(c, Tree) and c.data == "arguments"), None)
            args = _kids(args_node) if args_node is not None else []
            if not 1 <= len(args) <= 2:
                raise ExprError("Invalid type specification",
                                "optional() takes a type and an optional default value.",
                                pos(*_pos(value)))
            attr_type = _from_node(args[0], file, pos)
            default = None
            if len(args) == 2:
                default_expr = compile_hcl(args[1], file)
                if not default_expr.constant:
                    raise ExprError("Invalid type specification",
                                    "A default value must not refer to anything.",
                                    default_expr.source)
                default = attr_type.convert(default_expr.evaluate(), default_expr.source)
            attributes[key] = ObjectAttribute(attr_type, True, default)
        else:
            attributes[key] = ObjectAttribute(_from_node(value_node, file, pos))
    return attributes


def _call_name(node: Tree) -> str:
    names = [c.children[0].value for c in node.children
             if isinstance(c, Tree) and c.data == "identifier"]
    return "::".join(names)


def _pos(node: Tree) -> tuple[int, int]:
    meta = node.meta
    if not meta.empty:
        return meta.line, meta.column
    return 1, 1
