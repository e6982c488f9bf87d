"""Shared machinery of the expression compiler: context, rule table, tree helpers.

`compile_node` dispatches a lark subtree to the handler registered for its
grammar rule in `RULES` (expression rules live in `compile.py`, string and
heredoc templates in `_templates.py`).  A `Ctx` carries what compiling needs to
know besides the tree: how tree positions map to the user's file, which names
are iteration variables of an enclosing `for`, and the references found so far.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from lark import Token, Tree

from mlform.diagnostics import SourceRange
from mlform.expr import _text, ops
from mlform.expr.errors import ExprError
from mlform.expr.scope import Scope
from mlform.expr.values import UNKNOWN, Sensitive

Fn = Callable[[Scope], Any]
PosFn = Callable[[int, int], SourceRange]

# grammar rule name -> handler(node, ctx) -> Fn; filled by compile.py and _templates.py
RULES: dict[str, Callable[[Tree, "Ctx"], Fn]] = {}


# ---------------------------------------------------------------------------
# Compile context
# ---------------------------------------------------------------------------

class Shared:
    __slots__ = ("refs", "side_inputs")

    def __init__(self) -> None:
        self.refs: list = []  # of compile.Reference
        self.side_inputs = False


class Ctx:
    """Where positions map to, which names are `for` variables, what was referenced."""

    __slots__ = ("file", "pos", "bound", "shared")

    def __init__(self, file: str, pos: PosFn, bound: frozenset = frozenset(),
                 shared: Shared | None = None) -> None:
        self.file = file
        self.pos = pos
        self.bound = bound
        self.shared = shared or Shared()

    def at(self, node: Tree | Token) -> SourceRange:
        line, column = line_col(node)
        return self.pos(line, column)

    def with_bound(self, names: Iterable[str]) -> "Ctx":
        return Ctx(self.file, self.pos, self.bound | frozenset(names), self.shared)

    def with_pos(self, pos: PosFn) -> "Ctx":
        return Ctx(self.file, pos, self.bound, self.shared)


def line_col(node: Tree | Token) -> tuple[int, int]:
    if isinstance(node, Token):
        return node.line or 1, node.column or 1
    meta = node.meta
    if not meta.empty:
        return meta.line, meta.column
    for token in node.scan_values(lambda v: isinstance(v, Token)):
        if token.line:
            return token.line, token.column
    return 1, 1


def identity_pos(file: str) -> PosFn:
    def pos(line: int, column: int) -> SourceRange:
        return SourceRange(file, line, column)
    return pos


def trees(node: Tree) -> list[Tree]:
    """Child subtrees that carry meaning (no punctuation, newlines or comments)."""
    return [c for c in node.children if isinstance(c, Tree) and c.data != "new_line_or_comment"]


def has_token(node: Tree, kind: str) -> bool:
    return any(isinstance(c, Token) and c.type == kind for c in node.children)


def const(value: Any) -> Fn:
    def fn(scope: Scope) -> Any:
        return value
    fn.constant_value = value  # type: ignore[attr-defined]
    return fn


# ---------------------------------------------------------------------------
# Dispatch over the grammar's rules
# ---------------------------------------------------------------------------

def compile_node(node: Tree | Token, ctx: Ctx) -> Fn:
    if isinstance(node, Token):
        raise ExprError("Unsupported expression", f"Unexpected token {node.value!r}.",
                        ctx.at(node))
    handler = RULES.get(node.data)
    if handler is None:
        raise ExprError("Unsupported expression",
                        f'The construct "{node.data}" is not supported in expressions.',
                        ctx.at(node))
    return handler(node, ctx)


# ---------------------------------------------------------------------------
# Traversal analysis (pure tree functions)
# ---------------------------------------------------------------------------

CHAIN = frozenset({"index_expr_term", "get_attr_expr_term", "attr_splat_expr_term",
                    "full_splat_expr_term"})
NOT_LITERAL = object()


def unroll(node: Tree) -> tuple[Tree, list[Tree]]:
    """(root, steps) of a traversal chain, steps in source order."""
    steps: list[Tree] = []
    while True:
        if node.data == "expr_term" and len(node.children) == 1 \
                and isinstance(node.children[0], Tree):
            node = node.children[0]
        elif node.data in CHAIN:
            steps.append(node.children[1])
            node = node.children[0]
        else:
            break
    steps.reverse()
    return node, steps


def attr_name(get_attr: Tree) -> str:
    return trees(get_attr)[0].children[0].value


def literal_key(index: Tree) -> Any:
    """The key of `[0]`, `["k"]` or `.0` when it is a literal, else NOT_LITERAL."""
    if index.data == "short_index":
        return int(index.children[-1].value)
    expr = trees(index)[0]
    while expr.data == "expr_term" and len(expr.children) == 1 \
            and isinstance(expr.children[0], Tree):
        expr = expr.children[0]
    if expr.data == "int_lit":
        return int(expr.children[0].value)
    if expr.data == "string":
        parts = [c for c in expr.children if isinstance(c, Tree)]
        if all(isinstance(p.children[0], Token) and p.children[0].type == "STRING_CHARS"
               for p in parts):
            try:
                return _text.unescape("".join(p.children[0].value for p in parts), None)
            except ExprError:
                return NOT_LITERAL
    return NOT_LITERAL


def static_parts(root: Tree, steps: list[Tree]) -> tuple[list, bool]:
    """(longest static prefix, whether the whole chain is static)."""
    parts: list = [root.children[0].value]
    for step in steps:
        if step.data == "get_attr":
            parts.append(attr_name(step))
        elif step.data in ("braces_index", "short_index"):
            key = literal_key(step)
            if key is NOT_LITERAL:
                return parts, False
            parts.append(key)
        else:
            return parts, False
    return parts, True


def static_traversal_of(node: Tree | Token, bound: frozenset = frozenset()) -> tuple | None:
    """Parts of a bare, fully static traversal expression, else None."""
    if not isinstance(node, Tree):
        return None
    root, steps = unroll(node)
    if root.data != "identifier" or root.children[0].value in bound:
        return None
    parts, complete = static_parts(root, steps)
    return tuple(parts) if complete else None


# ---------------------------------------------------------------------------
# Iteration shared by for expressions and %{ for } directives
# ---------------------------------------------------------------------------

def for_items(key_name: str | None, value_name: str, coll: Fn, cond: Fn | None,
              cond_src: SourceRange | None, src: SourceRange, scope: Scope):
    """(child scopes of the kept items, sensitive) or UNKNOWN."""
    value = coll(scope)
    sensitive = False
    if type(value) is Sensitive:
        value, sensitive = value.value, True
    if value is UNKNOWN:
        return UNKNOWN
    scopes = []
    for k, v in ops.iteration_pairs(value, src, "'for' expression"):
        child = scope.child({key_name: k, value_name: v} if key_name else {value_name: v})
        if cond is not None:
            keep = ops.to_bool(cond(child), cond_src, "'for' condition")
            if keep is UNKNOWN:
                return UNKNOWN
            if type(keep) is Sensitive:
                keep, sensitive = keep.value, True
            if not keep:
                continue
        scopes.append(child)
    return scopes, sensitive


