"""Templates: quoted strings, heredocs and ``${...}`` inside YAML/JSON strings.

A template is a sequence of literal text, interpolations and ``%{ if }`` /
``%{ for }`` directives.  python-hcl2 parses quoted strings into flat parts;
here they are nested, compiled once and rendered by a closure.  Heredoc bodies
and YAML strings, which python-hcl2 leaves as raw text, are turned into an HCL
quoted string (`_text.escape_template`) and parsed by the same parser.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from lark import Token, Tree

from mlform.diagnostics import SourceRange
from mlform.expr import _text, ops
from mlform.expr._core import (
    RULES,
    Ctx,
    Fn,
    compile_node,
    const,
    for_items,
    static_traversal_of,
    trees,
)
from mlform.expr.errors import ExprError
from mlform.expr.scope import Scope
from mlform.expr.values import UNKNOWN, Sensitive


def _strip_flags(directive: Tree) -> tuple[bool, bool]:
    tokens = [c for c in directive.children if isinstance(c, Token)]
    left = len(tokens) > 1 and tokens[1].type == "STRIP_MARKER"
    right = len(tokens) > 2 and tokens[-2].type == "STRIP_MARKER"
    return left, right


def _template_items(parts: list, ctx: Ctx) -> list[list]:
    """Flat items: ["lit", text] | ["expr", node] | [directive, node, strip_l, strip_r]."""
    items: list[list] = []
    for part in parts:
        if isinstance(part, Token):
            if part.type == "STRING_CHARS":
                items.append(["lit", _text.unescape(part.value, ctx.at(part))])
            else:  # $${ and %%{ escapes stand for ${ and %{
                items.append(["lit", part.value[1:]])
        elif part.data == "interpolation":
            items.append(["expr", trees(part)[0]])
        else:
            kind = part.data.replace("template_", "").replace("_start", "")
            items.append([kind, part, *_strip_flags(part)])
    for i, item in enumerate(items):
        if item[0] in ("lit", "expr"):
            continue
        if item[2] and i > 0 and items[i - 1][0] == "lit":
            items[i - 1][1] = items[i - 1][1].rstrip()
        if item[3] and i + 1 < len(items) and items[i + 1][0] == "lit":
            items[i + 1][1] = items[i + 1][1].lstrip()
    return items


def _build_sequence(items: list[list], i: int, ctx: Ctx,
                    stops: frozenset) -> tuple[list[tuple], int, str | None]:
    """Nest flat template items; returns (sequence, next index, stop directive)."""
    seq: list[tuple] = []
    while i < len(items):
        item = items[i]
        kind = item[0]
        if kind in stops:
            return seq, i, kind
        if kind == "lit":
            if item[1]:
                seq.append((True, item[1], None))
            i += 1
        elif kind == "expr":
            seq.append((False, compile_node(item[1], ctx), ctx.at(item[1])))
            i += 1
        elif kind == "if":
            node = item[1]
            src = ctx.at(node)
            cond = compile_node(trees(node)[0], ctx)
            then, i, stop = _build_sequence(items, i + 1, ctx, frozenset({"else", "endif"}))
            otherwise: list[tuple] = []
            if stop == "else":
                otherwise, i, stop = _build_sequence(items, i + 1, ctx, frozenset({"endif"}))
            if stop != "endif":
                raise ExprError("Unterminated template directive",
                                "This %{ if } has no matching %{ endif }.", src)
            i += 1
            seq.append((False, _if_directive(cond, _render(then), _render(otherwise), src),
                        src))
        elif kind == "for":
            node = item[1]
            src = ctx.at(node)
            names = [t.children[0].value for t in trees(node) if t.data == "identifier"]
            coll_node = [t for t in trees(node) if t.data != "identifier"][0]
            coll = compile_node(coll_node, ctx)
            body, i, stop = _build_sequence(items, i + 1, ctx.with_bound(names),
                                            frozenset({"endfor"}))
            if stop != "endfor":
                raise ExprError("Unterminated template directive",
                                "This %{ for } has no matching %{ endfor }.", src)
            i += 1
            key_name, value_name = (names[0], names[1]) if len(names) == 2 \
                else (None, names[0])
            seq.append((False, _for_directive(key_name, value_name, coll, _render(body), src),
                        src))
        else:
            raise ExprError("Unexpected template directive",
                            f"%{{ {kind} }} has no matching opening directive.",
                            ctx.at(item[1]))
    return seq, i, None


def _join(values: Iterable[tuple[Any, SourceRange | None]]) -> Any:
    """Concatenate rendered pieces; UNKNOWN wins, Sensitive marks the result."""
    out: list[str] = []
    unknown = sensitive = False
    for value, src in values:
        t = type(value)
        if t is str:
            out.append(value)
            continue
        if t is Sensitive:
            sensitive = True
            value = value.value
            if type(value) is str:
                out.append(value)
                continue
        if value is UNKNOWN:
            unknown = True
            continue
        out.append(ops.template_string(value, src))
    if unknown:
        return UNKNOWN
    text = "".join(out)
    return Sensitive(text) if sensitive else text


def _render(seq: list[tuple]) -> Fn:
    if all(is_lit for is_lit, _, _ in seq):
        return const("".join(text for _, text, _ in seq))
    parts = tuple(seq)

    def render(scope: Scope) -> Any:
        return _join([(item, None) if is_lit else (item(scope), src)
                      for is_lit, item, src in parts])
    return render


def _if_directive(cond: Fn, then: Fn, otherwise: Fn, src: SourceRange) -> Fn:
    def if_directive(scope: Scope) -> Any:
        c = ops.to_bool(cond(scope), src, "condition")
        if c is UNKNOWN:
            return UNKNOWN
        if type(c) is Sensitive:
            result = then(scope) if c.value else otherwise(scope)
            return result if result is UNKNOWN else Sensitive(result)
        return then(scope) if c else otherwise(scope)
    return if_directive


def _for_directive(key_name: str | None, value_name: str, coll: Fn, body: Fn,
                   src: SourceRange) -> Fn:
    def for_directive(scope: Scope) -> Any:
        items = for_items(key_name, value_name, coll, None, None, src, scope)
        if items is UNKNOWN:
            return UNKNOWN
        scopes, sensitive = items
        result = _join((body(child), src) for child in scopes)
        return Sensitive(result) if sensitive and result is not UNKNOWN else result
    return for_directive


def _template(parts: list, ctx: Ctx) -> Fn:
    items = _template_items(parts, ctx)
    seq, _, _ = _build_sequence(items, 0, ctx, frozenset())
    if len(seq) == 1 and not seq[0][0]:
        # "${x}" alone yields x itself, unconverted (HCL and Terraform do the same).
        return seq[0][1]
    return _render(seq)


def _c_string(node: Tree, ctx: Ctx) -> Fn:
    parts = [c.children[0] for c in node.children
             if isinstance(c, Tree) and c.data == "string_part"]
    return _template(parts, ctx)


def _c_heredoc(node: Tree, ctx: Ctx) -> Fn:
    token = node.children[0]
    value = token.value
    rest = value[value.index("\n") + 1:]
    rest = rest[:-1] if rest.endswith("\n") else rest
    rest = rest[:-1] if rest.endswith("\r") else rest
    cut = rest.rfind("\n")
    body = rest[:cut + 1] if cut >= 0 else ""  # the closing marker line is not content
    origin = list(range(len(body)))
    if node.data == "heredoc_template_trim":
        body, origin = _text.dedent(body)
    first_line = (token.line or 1) + 1
    starts = _text.line_starts(value[value.index("\n") + 1:])

    def index_pos(index: int) -> SourceRange:
        raw = origin[index] if index < len(origin) else (origin[-1] + 1 if origin else 0)
        line = _text.line_of(starts, raw)
        return ctx.pos(first_line + line, raw - starts[line] + 1)
    fn, _ = compile_template_text(body, ctx, index_pos)
    return fn


def compile_template_text(text: str, ctx: Ctx, index_pos: Callable[[int], SourceRange]
                           ) -> tuple[Fn, tuple | None]:
    """Compile raw template text (heredoc body, YAML string); also its static traversal
    when the text is exactly one `${traversal}`."""
    escaped, origin = _text.escape_template(text, index_pos)
    width = len(_text.TEMPLATE_PREFIX)

    def pos(line: int, column: int) -> SourceRange:
        j = column - 1 - width if line == 1 else len(origin)
        if 0 <= j < len(origin):
            return index_pos(origin[j])
        return index_pos(len(text) if j >= len(origin) else 0)

    sub = ctx.with_pos(pos)
    expression = _text.parse_single(_text.TEMPLATE_PREFIX + escaped + '"', pos)
    string = expression.children[0] if expression.data == "expr_term" else None
    if not isinstance(string, Tree) or string.data != "string":
        raise ExprError("Invalid template", "The text could not be read as a template.",
                        index_pos(0))
    parts = [c.children[0] for c in string.children
             if isinstance(c, Tree) and c.data == "string_part"]
    traversal = None
    if len(parts) == 1 and isinstance(parts[0], Tree) and parts[0].data == "interpolation":
        traversal = static_traversal_of(trees(parts[0])[0], sub.bound)
    return _template(parts, sub), traversal


RULES.update({
    "string": _c_string,
    "heredoc_template": _c_heredoc,
    "heredoc_template_trim": _c_heredoc,
})
