"""Compile HCL expression trees (as parsed by python-hcl2) into fast evaluators.

python-hcl2 parses HCL into a raw lark tree; this module turns an expression
subtree into nested Python closures once, so evaluating it for ten thousand
`for_each` instances never walks the tree again.  YAML/JSON strings holding
``${...}`` and heredoc bodies are re-parsed with the same hcl2 parser by wrapping
them in a quoted HCL string: there is one grammar, python-hcl2's.

Entry points: `compile_hcl` (a lark subtree), `parse_expression` (expression
text) and `compile_value` (a plain YAML/JSON value).  Each returns an `Expr`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from lark import Token, Tree

from mlform.diagnostics import SourceRange
from mlform.expr import _templates, _text, ops
from mlform.expr import functions as fnlib
from mlform.expr._core import (
    NOT_LITERAL,
    RULES,
    Ctx,
    Fn,
    attr_name,
    compile_node,
    const,
    for_items,
    has_token,
    identity_pos,
    literal_key,
    static_parts,
    static_traversal_of,
    trees,
    unroll,
)
from mlform.expr.errors import ExprError, suggest
from mlform.expr.scope import Scope
from mlform.expr.values import UNKNOWN, Sensitive, contains_unknown

__all__ = ["Expr", "ConstantExpr", "Reference", "compile_hcl", "parse_expression",
           "compile_value"]

_EMPTY_SCOPE = Scope({})


# ---------------------------------------------------------------------------
# Public values
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Reference:
    """A static traversal found in an expression: root name, then attribute names and
    literal index keys, up to the first dynamic index or splat."""

    parts: tuple
    source: SourceRange

    def __str__(self) -> str:
        text = str(self.parts[0]) if self.parts else ""
        for part in self.parts[1:]:
            if isinstance(part, int):
                text += f"[{part}]"
            elif re.fullmatch(r"[A-Za-z_][\w-]*", part):
                text += "." + part
            else:
                text += f"[{json.dumps(part)}]"
        return text


class Expr:
    """A compiled expression: evaluate it against a `Scope` as often as needed."""

    __slots__ = ("source", "references", "constant", "reads_files", "_fn", "_traversal",
                 "_text", "_node")

    def __init__(self, fn: Fn, source: SourceRange, references: tuple[Reference, ...],
                 constant: bool, traversal: tuple | None, text: str | Callable[[], str],
                 node: Tree | Token | None = None, reads_files: bool = False) -> None:
        self._fn = fn
        # calls file(), templatefile(), ...: its value depends on more than its references
        self.reads_files = reads_files
        self.source = source
        self.references = references
        self.constant = constant
        self._traversal = traversal
        self._text = text
        self._node = node

    def evaluate(self, scope: Scope | None = None) -> Any:
        """The value in `scope` (may be or contain UNKNOWN / Sensitive).

        Raises only `ExprError`; any other exception is a bug in the evaluator
        and is reported as an internal error at this expression.
        """
        try:
            return self._fn(scope if scope is not None else _EMPTY_SCOPE)
        except ExprError:
            raise
        except RecursionError:
            raise ExprError("Expression too complex",
                            "Evaluating it nested too deeply.", self.source) from None
        except Exception as err:  # the guarantee callers rely on: only ExprError escapes
            raise ExprError("Internal error while evaluating expression",
                            f"{type(err).__name__}: {err}", self.source) from None

    def static_traversal(self) -> tuple | None:
        """Parts of a bare traversal: ``dataset.d["k"]`` -> ("dataset", "d", "k"); else None."""
        return self._traversal

    def source_text(self) -> str:
        """The expression as written (best effort, for messages)."""
        if callable(self._text):
            self._text = self._text()
        return self._text

    @property
    def node(self) -> Tree | Token | None:
        """The lark tree this was compiled from (None for YAML/JSON values)."""
        return self._node

    def __repr__(self) -> str:
        return f"Expr({self.source_text()!r} at {self.source})"


class ConstantExpr(Expr):
    """A value with no template in it (most values of a YAML/JSON stack): made without
    compiling anything, evaluated without a call.  The value is shared, not copied:
    values are never mutated."""

    __slots__ = ("_value",)

    def __init__(self, value: Any, source: SourceRange) -> None:  # noqa: D107
        self._value = value
        self.source = source
        self.references = ()
        self.constant = True
        self.reads_files = False
        self._traversal = None
        self._node = None

    @property
    def _fn(self) -> Fn:
        return const(self._value)

    def evaluate(self, scope: Scope | None = None) -> Any:
        return self._value

    def source_text(self) -> str:
        value = self._value
        return value if isinstance(value, str) else \
            json.dumps(value, default=repr, ensure_ascii=False)


def _c_expr_term(node: Tree, ctx: Ctx) -> Fn:
    kids = trees(node)
    if len(kids) != 1:
        raise ExprError("Invalid expression", "Expected a single expression.", ctx.at(node))
    return compile_node(kids[0], ctx)


def _c_int(node: Tree, ctx: Ctx) -> Fn:
    try:
        return const(int(node.children[0].value))
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        raise ExprError("Invalid number", "The number has too many digits.",
                        ctx.at(node)) from None


def _c_float(node: Tree, ctx: Ctx) -> Fn:
    value = float(node.children[0].value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ExprError("Invalid number", "The number is too large.", ctx.at(node))
    return const(ops.normalize(value))


_LITERALS = {"true": True, "false": False, "null": None}


def _c_literal(node: Tree, ctx: Ctx) -> Fn:
    return const(_LITERALS[node.children[0].value])


def _c_template_string(node: Tree, ctx: Ctx) -> Fn:
    # python-hcl2's \"...\" form inside directives: a plain string literal.
    raw = node.children[0].value
    return const(_text.unescape(raw[2:-2], ctx.at(node)))


def _c_tuple(node: Tree, ctx: Ctx) -> Fn:
    items = [compile_node(c, ctx) for c in trees(node)]
    if all(hasattr(f, "constant_value") for f in items):
        values = [f.constant_value for f in items]  # type: ignore[attr-defined]
        return lambda scope: list(values)  # a fresh list: callers may mutate results
    return lambda scope: [f(scope) for f in items]


def _c_object(node: Tree, ctx: Ctx) -> Fn:
    entries: list[tuple[bool, Any, Fn, SourceRange]] = []
    for elem in trees(node):
        key_node, value_node = elem.children[0], elem.children[-1]
        static, key = _object_key(key_node, ctx)
        entries.append((static, key, compile_node(value_node, ctx), ctx.at(key_node)))
    if all(static for static, _, _, _ in entries):
        fixed = [(key, fn) for _, key, fn, _ in entries]
        return lambda scope: {key: fn(scope) for key, fn in fixed}

    def build(scope: Scope) -> Any:
        out: dict[str, Any] = {}
        unknown = sensitive = False
        for static, key, fn, src in entries:
            if not static:
                key = key(scope)
                if key is UNKNOWN:
                    unknown = True
                    continue
                if type(key) is Sensitive:
                    key, sensitive = key.value, True
                    if key is UNKNOWN:
                        unknown = True
                        continue
                key = ops.object_key(key, src)
            out[key] = fn(scope)
        if unknown:
            return UNKNOWN
        return Sensitive(out) if sensitive else out
    return build


def _object_key(key_node: Tree, ctx: Ctx) -> tuple[bool, Any]:
    """(True, name) for a bare identifier/keyword key, else (False, compiled key)."""
    inner = key_node.children[0]
    if isinstance(inner, Tree) and inner.data == "keyword":
        return True, inner.children[0].value
    if isinstance(inner, Tree) and inner.data == "expr_term":
        kids = inner.children
        if len(kids) == 1 and isinstance(kids[0], Tree):
            if kids[0].data == "identifier":  # `{ name = ... }`: the name itself
                return True, kids[0].children[0].value
            if kids[0].data == "literal_value":
                return True, kids[0].children[0].value
    fn = compile_node(inner, ctx)
    if hasattr(fn, "constant_value"):
        return True, ops.object_key(fn.constant_value, ctx.at(key_node))  # type: ignore
    return False, fn


def _c_conditional(node: Tree, ctx: Ctx) -> Fn:
    cond_node, yes_node, no_node = trees(node)
    cond = compile_node(cond_node, ctx)
    yes, no = compile_node(yes_node, ctx), compile_node(no_node, ctx)
    src = ctx.at(cond_node)

    def conditional(scope: Scope) -> Any:
        c = cond(scope)
        if c is True:
            return yes(scope)
        if c is False:
            return no(scope)
        c = ops.to_bool(c, src, "condition")
        if c is UNKNOWN:
            return UNKNOWN
        if type(c) is Sensitive:
            result = yes(scope) if c.value else no(scope)
            return result if result is UNKNOWN else Sensitive(result)
        return yes(scope) if c else no(scope)
    return conditional


def _c_unary(node: Tree, ctx: Ctx) -> Fn:
    op = node.children[0].value
    operand = compile_node(trees(node)[0], ctx)
    src = ctx.at(node)
    if op == "-":
        return lambda scope: ops.negate(operand(scope), src)
    return lambda scope: ops.logical_not(operand(scope), src)


def _c_binary(node: Tree, ctx: Ctx) -> Fn:
    left_node, term = trees(node)[:2]
    op_node = next(c for c in term.children if isinstance(c, Tree) and c.data == "binary_operator")
    right_node = [c for c in trees(term) if c is not op_node][0]
    op = op_node.children[0].value.strip()
    left, right = compile_node(left_node, ctx), compile_node(right_node, ctx)
    src = ctx.at(node)
    if op in ops.ARITHMETIC:
        arith = ops.arithmetic
        return lambda scope: arith(op, left(scope), right(scope), src)
    if op in ops.ORDERING:
        cmp = ops.compare
        return lambda scope: cmp(op, left(scope), right(scope), src)
    if op in ("==", "!="):
        neg = op == "!="
        return lambda scope: ops.equality(neg, left(scope), right(scope))
    if op in ("&&", "||"):
        return _logical(op == "&&", left, right, ctx.at(left_node), ctx.at(right_node))
    raise ExprError("Unsupported operator", f"The operator {op!r} is not supported.", src)


def _logical(is_and: bool, left: Fn, right: Fn, lsrc: SourceRange, rsrc: SourceRange) -> Fn:
    # Short-circuits on a known deciding left operand, so `x != null && x.y` works.
    decisive = not is_and

    def logical(scope: Scope) -> Any:
        a = ops.to_bool(left(scope), lsrc, "operand")
        sensitive = False
        if type(a) is Sensitive:
            a, sensitive = a.value, True
        if a is decisive:
            return Sensitive(a) if sensitive else a
        b = ops.to_bool(right(scope), rsrc, "operand")
        if type(b) is Sensitive:
            b, sensitive = b.value, True
        if b is decisive:
            result: Any = b
        elif a is UNKNOWN or b is UNKNOWN:
            return UNKNOWN
        else:
            result = b
        return Sensitive(result) if sensitive else result
    return logical


# ---------------------------------------------------------------------------
# Traversals: names, attributes, indexes, splats
# ---------------------------------------------------------------------------

def _compile_step(step: Tree, ctx: Ctx) -> list[tuple]:
    """A step as [(kind, payload, source)]; an attr splat may become two steps."""
    src = ctx.at(step)
    if step.data == "get_attr":
        return [("attr", attr_name(step), src)]
    if step.data in ("braces_index", "short_index"):
        key = literal_key(step)
        if key is not NOT_LITERAL:
            return [("index", key, src)]
        return [("dyn", compile_node(trees(step)[0], ctx), src)]
    inner = trees(step)
    if step.data == "attr_splat":
        # HCL: `.*` applies only the attribute steps per element; a later index
        # applies to the resulting list (`a.*.b[0]` is `[for v in a: v.b][0]`).
        n = 0
        while n < len(inner) and inner[n].data == "get_attr":
            n += 1
        per_item = [s for sub in inner[:n] for s in _compile_step(sub, ctx)]
        after = [s for sub in inner[n:] for s in _compile_step(sub, ctx)]
        return [("splat", per_item, src), *after]
    per_item = [s for sub in inner for s in _compile_step(sub, ctx)]
    return [("splat", per_item, src)]


def _step_fn(step: tuple) -> Callable[[Any, Scope], Any]:
    kind, payload, src = step
    if kind == "attr":
        return lambda value, scope: ops.get_attr(value, payload, src)
    if kind == "index":
        return lambda value, scope: ops.get_index(value, payload, src)
    if kind == "dyn":
        return lambda value, scope: ops.get_index(value, payload(scope), src)
    inner = [_step_fn(s) for s in payload]

    def splat(value: Any, scope: Scope) -> Any:
        def each(item: Any) -> Any:
            for fn in inner:
                item = fn(item, scope)
            return item
        return ops.splat(value, each, src)
    return splat


def _c_traversal(node: Tree, ctx: Ctx) -> Fn:
    root, step_nodes = unroll(node)
    if root.data == "identifier":
        name = root.children[0].value
        src = ctx.at(root)
        if name not in ctx.bound:
            # The reference is recorded before the index expressions' own references,
            # so `dataset.d[each.key]` lists dataset.d first.
            parts, _ = static_parts(root, step_nodes)
            ctx.shared.refs.append(Reference(tuple(parts), src))

        def root_fn(scope: Scope) -> Any:
            return scope.lookup(name, src)
    else:
        root_fn = compile_node(root, ctx)
        name, src = None, None
    steps = [s for node_ in step_nodes for s in _compile_step(node_, ctx)]
    if not steps:
        return root_fn
    if all(kind in ("attr", "index") for kind, _, _ in steps):
        return _static_chain(name, src, root_fn, steps)
    fns = [_step_fn(s) for s in steps]

    def traverse(scope: Scope) -> Any:
        value = root_fn(scope)
        for fn in fns:
            value = fn(value, scope)
        return value
    return traverse


def _static_chain(name: str | None, src: SourceRange | None, root_fn: Fn,
                  steps: list[tuple]) -> Fn:
    # The hot path of every plan: `var.x`, `each.key`, `dataset.d.uri`.  Plain dict
    # lookups inline; anything unusual (lists, markers, errors) goes through ops.
    keys = tuple((kind == "attr", key, s) for kind, key, s in steps)
    get_attr, get_index = ops.get_attr, ops.get_index

    if name is not None:
        # Same walk as chain_any below, with the root lookup inlined: this closure runs
        # once per reference per instance, and the saved call is measurable at 10k instances.
        def chain(scope: Scope) -> Any:
            value = scope.lookup(name, src)
            for is_attr, key, where in keys:
                if type(value) is dict and key in value:
                    value = value[key]
                elif is_attr:
                    value = get_attr(value, key, where)
                else:
                    value = get_index(value, key, where)
            return value
        return chain

    def chain_any(scope: Scope) -> Any:
        value = root_fn(scope)
        for is_attr, key, where in keys:
            if type(value) is dict and key in value:
                value = value[key]
            elif is_attr:
                value = get_attr(value, key, where)
            else:
                value = get_index(value, key, where)
        return value
    return chain_any


# ---------------------------------------------------------------------------
# for expressions
# ---------------------------------------------------------------------------

def _for_parts(node: Tree, ctx: Ctx):
    intro = next(c for c in trees(node) if c.data == "for_intro")
    cond_node = next((c for c in trees(node) if c.data == "for_cond"), None)
    bodies = [c for c in trees(node) if c.data not in ("for_intro", "for_cond")]
    idents = [c for c in trees(intro) if c.data == "identifier"]
    names = [i.children[0].value for i in idents]
    coll_node = [c for c in trees(intro) if c.data != "identifier"][0]
    key_name, value_name = (names[0], names[1]) if len(names) == 2 else (None, names[0])
    coll = compile_node(coll_node, ctx)
    inner = ctx.with_bound(names)
    cond = compile_node(trees(cond_node)[0], inner) if cond_node is not None else None
    cond_src = ctx.at(cond_node) if cond_node is not None else None
    return key_name, value_name, coll, inner, bodies, cond, cond_src


def _c_for_tuple(node: Tree, ctx: Ctx) -> Fn:
    key_name, value_name, coll, inner, bodies, cond, cond_src = _for_parts(node, ctx)
    body = compile_node(bodies[0], inner)
    src = ctx.at(node)

    def for_tuple(scope: Scope) -> Any:
        items = for_items(key_name, value_name, coll, cond, cond_src, src, scope)
        if items is UNKNOWN:
            return UNKNOWN
        scopes, sensitive = items
        out = [body(child) for child in scopes]
        return Sensitive(out) if sensitive else out
    return for_tuple


def _c_for_object(node: Tree, ctx: Ctx) -> Fn:
    key_name, value_name, coll, inner, bodies, cond, cond_src = _for_parts(node, ctx)
    key_fn, value_fn = compile_node(bodies[0], inner), compile_node(bodies[1], inner)
    key_src = ctx.at(bodies[0])
    grouping = has_token(node, "ELLIPSIS")
    src = ctx.at(node)

    def for_object(scope: Scope) -> Any:
        items = for_items(key_name, value_name, coll, cond, cond_src, src, scope)
        if items is UNKNOWN:
            return UNKNOWN
        scopes, sensitive = items
        out: dict[str, Any] = {}
        for child in scopes:
            key = key_fn(child)
            if type(key) is Sensitive:
                key, sensitive = key.value, True
            if key is UNKNOWN:
                return UNKNOWN
            key = ops.object_key(key, key_src)
            value = value_fn(child)
            if grouping:
                out.setdefault(key, []).append(value)
            elif key in out:
                raise ExprError("Duplicate object key",
                                f'Two different items produced the key "{key}" in this '
                                "'for' expression.", key_src,
                                hint="If duplicates are expected, use the ellipsis (...) "
                                     "after the value expression to group them by key.")
            else:
                out[key] = value
        return Sensitive(out) if sensitive else out
    return for_object


# ---------------------------------------------------------------------------
# Function calls
# ---------------------------------------------------------------------------

def _c_function_call(node: Tree, ctx: Ctx) -> Fn:
    idents = [c for c in node.children if isinstance(c, Tree) and c.data == "identifier"]
    name = "::".join(i.children[0].value for i in idents)
    args_node = next((c for c in node.children
                      if isinstance(c, Tree) and c.data == "arguments"), None)
    arg_nodes = trees(args_node) if args_node is not None else []
    expand = args_node is not None and has_token(args_node, "ELLIPSIS")
    src = ctx.at(node)
    if name in fnlib.LAZY_FUNCTIONS:
        return _c_lazy(name, arg_nodes, expand, ctx, src)
    fn = fnlib.FUNCTIONS.get(name)
    if fn is None:
        raise ExprError("Call to unknown function", f'There is no function named "{name}".',
                        src, hint=suggest(name, [*fnlib.FUNCTIONS, *fnlib.LAZY_FUNCTIONS],
                                          listing=0))
    if fn.reads_files:  # type: ignore[attr-defined]
        ctx.shared.side_inputs = True
    lo, hi = fnlib.arity(fn)
    if not expand and (len(arg_nodes) < lo or (hi is not None and len(arg_nodes) > hi)):
        raise fnlib.arity_error(name, fn, len(arg_nodes), src)
    args = [compile_node(a, ctx) for a in arg_nodes]
    arg_srcs = tuple(ctx.at(a) for a in arg_nodes)
    call = fnlib.call

    if not expand:
        def call_fn(scope: Scope) -> Any:
            return call(name, fn, [a(scope) for a in args], scope, src, arg_srcs)
        return call_fn

    last_src = arg_srcs[-1]

    def call_expanded(scope: Scope) -> Any:
        values = [a(scope) for a in args]
        last = values.pop()
        sensitive = False
        if type(last) is Sensitive:
            last, sensitive = last.value, True
        if last is UNKNOWN:
            return UNKNOWN
        if not isinstance(last, (list, tuple)):
            raise ExprError("Invalid expanding argument value",
                            "The expanding argument (indicated by ...) must be a list, got "
                            f"{ops.type_name(last)}.", last_src)
        values.extend(last)
        spread = arg_srcs[:-1] + (last_src,) * len(last)
        result = call(name, fn, values, scope, src, spread)
        return Sensitive(result) if sensitive and result is not UNKNOWN else result
    return call_expanded


def _c_lazy(name: str, arg_nodes: list[Tree], expand: bool, ctx: Ctx,
            src: SourceRange) -> Fn:
    """try() and can(): their arguments are evaluated one by one, errors caught."""
    if expand:
        raise ExprError("Invalid function argument",
                        f'The function "{name}" does not accept an expanding argument (...).',
                        src)
    if name == "can" and len(arg_nodes) != 1:
        raise ExprError("Not enough function arguments" if not arg_nodes
                        else "Too many function arguments",
                        'Function "can" expects 1 argument.', src)
    if name == "try" and not arg_nodes:
        raise ExprError("Not enough function arguments",
                        'Function "try" expects at least 1 argument.', src)
    args = [compile_node(a, ctx) for a in arg_nodes]

    if name == "can":
        only = args[0]

        def can(scope: Scope) -> Any:
            try:
                value = only(scope)
            except ExprError:
                return False
            # Not knowing the value yet means not knowing whether it will fail.
            return UNKNOWN if contains_unknown(value) else True
        return can

    def try_(scope: Scope) -> Any:
        errors = []
        for arg in args:
            try:
                return arg(scope)
            except ExprError as err:
                errors.append(err)
        reasons = "; ".join(f"{e.summary} ({e.detail})" if e.detail else e.summary
                            for e in errors)
        raise ExprError("Error in function call",
                        f'Call to function "try" failed: no expression succeeded: {reasons}',
                        src)
    return try_


RULES.update({
    "expr_term": _c_expr_term,
    "int_lit": _c_int,
    "float_lit": _c_float,
    "literal_value": _c_literal,
    "template_string": _c_template_string,
    "tuple": _c_tuple,
    "object": _c_object,
    "identifier": _c_traversal,
    "index_expr_term": _c_traversal,
    "get_attr_expr_term": _c_traversal,
    "attr_splat_expr_term": _c_traversal,
    "full_splat_expr_term": _c_traversal,
    "conditional": _c_conditional,
    "binary_op": _c_binary,
    "unary_op": _c_unary,
    "function_call": _c_function_call,
    "for_tuple_expr": _c_for_tuple,
    "for_object_expr": _c_for_object,
})


# ---------------------------------------------------------------------------
# Building Expr values
# ---------------------------------------------------------------------------

def _finish(node: Tree, ctx: Ctx, text: str | Callable[[], str],
            traversal: tuple | None = None) -> Expr:
    src = ctx.at(node)
    try:
        fn = compile_node(node, ctx)
    except ExprError:
        raise
    except RecursionError:
        raise ExprError("Expression too complex", "It is nested too deeply.", src) from None
    except Exception as err:  # an unexpected tree shape must still be a user error
        raise ExprError("Invalid expression", f"{type(err).__name__}: {err}", src) from None
    if traversal is None:
        traversal = static_traversal_of(node)
    refs = _dedupe(ctx.shared.refs)
    return Expr(fn, src, refs, not refs and not ctx.shared.side_inputs, traversal, text, node,
                ctx.shared.side_inputs)


def _dedupe(refs: list[Reference]) -> tuple[Reference, ...]:
    seen: dict[tuple, Reference] = {}
    for ref in refs:
        seen.setdefault(ref.parts, ref)
    return tuple(seen.values())


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------

def compile_hcl(node: Tree | Token, file: str) -> Expr:
    """Compile an expression subtree of python-hcl2's raw lark tree.

    `node` is the expression child of an ``attribute`` (an ``attribute`` itself is
    accepted too).  Positions come from the tree, so they already point into `file`.
    """
    if isinstance(node, Tree) and node.data == "attribute":
        node = node.children[-1]
    ctx = Ctx(file, identity_pos(file))
    if isinstance(node, Token):
        raise ExprError("Unsupported expression", f"Unexpected token {node.value!r}.",
                        ctx.at(node))
    return _finish(node, ctx, lambda: _text.reconstruct(node))


def parse_expression(text: str, file: str, line: int = 1, column: int = 1) -> Expr:
    """Compile HCL expression text found at (line, column) of `file`."""
    node, ctx, stripped = _parse_text(text, file, line, column)
    return _finish(node, ctx, stripped)


def parse_tree(text: str, file: str, line: int = 1, column: int = 1) -> Tree:
    """The python-hcl2 subtree of expression text, not compiled (type constraints use it).

    Positions in the tree are relative to the wrapped text; use `parse_expression`
    when positions in `file` matter.
    """
    return _parse_text(text, file, line, column)[0]


def _parse_text(text: str, file: str, line: int, column: int) -> tuple[Tree, Ctx, str]:
    if not isinstance(text, str):
        raise ExprError("Invalid expression", "An expression must be text.",
                        SourceRange(file, line, column))
    stripped = text.lstrip()
    lead = text[:len(text) - len(stripped)]
    if "\n" in lead:
        line += lead.count("\n")
        column = len(lead) - lead.rfind("\n")
    else:
        column += len(lead)
    stripped = stripped.rstrip()
    if not stripped:
        raise ExprError("Invalid expression", "The expression is empty.",
                        SourceRange(file, line, column))
    width = len(_text.PREFIX)

    def pos(gen_line: int, gen_column: int) -> SourceRange:
        if gen_line <= 1:
            return SourceRange(file, line, column + max(0, gen_column - 1 - width))
        return SourceRange(file, line + gen_line - 1, gen_column)

    ctx = Ctx(file, pos)
    return _text.parse_single(_text.PREFIX + stripped, pos), ctx, stripped


def compile_value(value: Any, file: str, line: int = 1, column: int = 1) -> Expr:
    """Compile a plain YAML/JSON value whose strings may hold ``${...}`` templates.

    A string that is exactly ``"${expr}"`` yields expr's own value, unconverted;
    ``$${`` is a literal ``${``.  Keys are taken literally.
    """
    src = SourceRange(file, line, column)
    if type(value) is str and "${" not in value and "%{" not in value:
        return ConstantExpr(value, src)        # the commonest value: a plain string
    if not _has_template(value):
        # Most values of a YAML/JSON stack hold no template: a constant, at once (a
        # container is shared, not rebuilt per evaluation: values are never mutated,
        # and resource attributes are projected into fresh containers anyway).
        return ConstantExpr(_normalized(value), src)
    ctx = Ctx(file, identity_pos(file))
    state: dict[str, Any] = {"traversal": None}
    try:
        fn = _compile_plain(value, ctx, line, column, state, top=True)
    except ExprError:
        raise
    except RecursionError:
        raise ExprError("Value too complex", "It is nested too deeply.", src) from None
    refs = _dedupe(ctx.shared.refs)
    text = value if isinstance(value, str) else \
        (lambda: json.dumps(value, default=repr, ensure_ascii=False))
    return Expr(fn, src, refs, not refs and not ctx.shared.side_inputs, state["traversal"],
                text, None, ctx.shared.side_inputs)


_SCALARS = frozenset({int, bool, type(None)})


def _has_template(value: Any) -> bool:
    """Whether a plain value holds a `${...}` or `%{...}` anywhere (keys are literal)."""
    kind = type(value)       # YAML/JSON values: exact types first, ABCs are slow to ask
    if kind is str:
        return "${" in value or "%{" in value
    if kind is dict:
        return any(_has_template(v) for v in value.values())
    if kind is list:
        return any(_has_template(v) for v in value)
    if kind in _SCALARS or kind is float:
        return False
    if isinstance(value, Mapping):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_template(v) for v in value)
    return isinstance(value, str) and ("${" in value or "%{" in value)


def _normalized(value: Any) -> Any:
    """A constant container as `_compile_plain` evaluates it: string keys, numbers
    normalized, tuples as lists."""
    kind = type(value)
    if kind is str or kind in _SCALARS:
        return value
    if kind is float:
        return ops.normalize(value)
    if isinstance(value, Mapping):
        return {(k if isinstance(k, str) else (ops.to_string(k) or str(k))): _normalized(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalized(v) for v in value]
    return value


# "${a.b[0].c}" and nothing else: a bare reference, the most common template of a
# YAML/JSON stack.  Compiled here without an HCL parse (python-hcl2's lark parser costs
# about 0.3 ms per distinct string: 12,000 references took 4 s), to exactly what the
# parse gives (tests/unit/test_expr.py compares the two).
_BARE_REFERENCE = re.compile(
    r"\$\{(\s*)([A-Za-z_][A-Za-z0-9_-]*)((?:\.[A-Za-z_][A-Za-z0-9_-]*|\[[0-9]+\])*)\s*\}")
_REFERENCE_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[([0-9]+)\]")
_NOT_NAMES = frozenset({"true", "false", "null"})


def _bare_reference(value: str, ctx: Ctx, index_pos: Callable[[int], SourceRange]
                    ) -> tuple[Fn, tuple] | None:
    """(fn, traversal) of a template that is one bare reference, else None."""
    match = _BARE_REFERENCE.fullmatch(value)
    if match is None or match.group(2) in _NOT_NAMES or match.group(2) in ctx.bound:
        return None
    name = match.group(2)
    src = index_pos(match.start(2))
    steps, parts = [], [name]
    for step in _REFERENCE_STEP.finditer(value, match.start(3), match.end(3)):
        key = step.group(1) if step.group(1) is not None else int(step.group(2))
        steps.append(("attr" if step.group(1) is not None else "index", key,
                      index_pos(step.start())))
        parts.append(key)
    ctx.shared.refs.append(Reference(tuple(parts), src))
    if not steps:
        return (lambda scope: scope.lookup(name, src)), tuple(parts)
    return _static_chain(name, src, None, steps), tuple(parts)


def _compile_plain(value: Any, ctx: Ctx, line: int, column: int, state: dict,
                   top: bool = False) -> Fn:
    if type(value) is str or isinstance(value, str):
        if "${" not in value and "%{" not in value:
            return const(value)
        file = ctx.file
        if "\n" not in value:    # the common case: one line, no search for line starts
            def index_pos(index: int) -> SourceRange:
                return SourceRange(file, line, column + index)
        else:
            starts = _text.line_starts(value)

            def index_pos(index: int) -> SourceRange:
                n = _text.line_of(starts, index)
                if n == 0:
                    return SourceRange(file, line, column + index)
                return SourceRange(file, line + n, index - starts[n] + 1)
        found = _bare_reference(value, ctx, index_pos)
        fn, traversal = found if found is not None else \
            _templates.compile_template_text(value, ctx, index_pos)
        if top:
            state["traversal"] = traversal
        return fn
    if type(value) is dict or isinstance(value, Mapping):
        entries = [(k if isinstance(k, str) else (ops.to_string(k) or str(k)),
                    _compile_plain(v, ctx, line, column, state)) for k, v in value.items()]
        return lambda scope: {k: fn(scope) for k, fn in entries}
    if isinstance(value, (list, tuple)):
        items = [_compile_plain(v, ctx, line, column, state) for v in value]
        return lambda scope: [fn(scope) for fn in items]
    if isinstance(value, float):
        return const(ops.normalize(value))
    return const(value)
