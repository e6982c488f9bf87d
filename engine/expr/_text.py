"""Text-level helpers of the expression compiler: python-hcl2 parsing and templates.

Everything here works on text or on the raw lark tree and knows nothing about
evaluation: parsing ``__x = <expression>`` with python-hcl2 (cached, with lark's
syntax errors turned into `ExprError`), HCL string escapes, heredoc dedenting,
and turning raw template text (a heredoc body, a YAML string) into the body of
an HCL quoted string so the same parser reads its ``${...}`` sequences.
"""

from __future__ import annotations

import bisect
import functools
import re
from typing import Callable

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from mlform.diagnostics import SourceRange
from mlform.expr.errors import ExprError

PosFn = Callable[[int, int], SourceRange]

PREFIX = "__x = "
TEMPLATE_PREFIX = '__x = "'


_ESCAPE_RE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.)|$)", re.S)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def unescape(text: str, src: SourceRange | None) -> str:
    if "\\" not in text:
        return text

    def replace(m: re.Match) -> str:
        hex_code = m.group(1) or m.group(2)
        if hex_code:
            code = int(hex_code, 16)
            if code > 0x10FFFF:
                raise ExprError("Invalid escape sequence",
                                f"\\U{hex_code} is not a valid Unicode code point.", src)
            return chr(code)
        char = m.group(3)
        if char is not None and char in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[char]
        raise ExprError("Invalid escape sequence",
                        f'The symbol "{char or ""}" is not a valid escape sequence selector.',
                        src, hint='Write "\\\\" for a literal backslash.')
    return _ESCAPE_RE.sub(replace, text)




def line_starts(text: str) -> list[int]:
    if "\n" not in text:      # the common case: a one-line value
        return [0]
    return [0, *(m.end() for m in re.finditer("\n", text))]


def line_of(starts: list[int], index: int) -> int:
    return max(0, bisect.bisect_right(starts, index) - 1)


def dedent(body: str) -> tuple[str, list[int]]:
    """`<<-` heredocs: remove the common leading whitespace, keeping an origin map."""
    lines = body.split("\n")
    indents = [len(line) - len(line.lstrip(" \t")) for line in lines if line.strip()]
    cut = min(indents) if indents else 0
    out: list[str] = []
    origin: list[int] = []
    offset = 0
    for n, line in enumerate(lines):
        lead = len(line) - len(line.lstrip(" \t"))
        drop = min(cut, lead)
        kept = line[drop:]
        out.append(kept)
        origin.extend(range(offset + drop, offset + len(line)))
        if n < len(lines) - 1:
            origin.append(offset + len(line))
        offset += len(line) + 1
    return "\n".join(out), origin


def _find_close(text: str, start: int) -> int:
    """Index of the `}` closing a `${`/`%{` opened just before `start`, or -1."""
    depth = 0
    i, n = start, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i = _skip_string(text, i + 1)
            if i < 0:
                return -1
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return -1


def _skip_string(text: str, i: int) -> int:
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
        elif c == '"':
            return i + 1
        elif c in "$%" and text.startswith("{", i + 1) and not text.startswith(c, i - 1):
            end = _find_close(text, i + 2)
            if end < 0:
                return -1
            i = end + 1
        else:
            i += 1
    return -1


def escape_template(text: str, index_pos: Callable[[int], SourceRange]
                     ) -> tuple[str, list[int]]:
    """Turn raw template text into the body of an HCL quoted string.

    Literal text is escaped; `${...}` and `%{...}` sequences are copied verbatim
    (HCL allows nested quotes inside them).  Returns the escaped text and, per
    output character, the index of the input character it came from.
    """
    out: list[str] = []
    origin: list[int] = []
    i, n = 0, len(text)

    def emit(piece: str, at: int) -> None:
        out.append(piece)
        origin.extend([at] * len(piece))

    while i < n:
        c = text[i]
        if c in "$%" and text.startswith("{", i + 1):
            end = _find_close(text, i + 2)
            if end < 0:
                raise ExprError("Unterminated template sequence",
                                f'The "{c}{{" sequence has no closing "}}".', index_pos(i))
            chunk = text[i:end + 1].replace("\r", " ").replace("\n", " ")
            out.append(chunk)
            origin.extend(range(i, end + 1))
            i = end + 1
            continue
        if c in "$%" and text.startswith(c + "{", i + 1):
            # $${ / %%{ are escapes for a literal ${ / %{; \u0024 keeps the parser
            # from seeing an interpolation there.
            emit("\\u0024" if c == "$" else "\\u0025", i)
            i += 2
            continue
        if c == '"':
            emit('\\"', i)
        elif c == "\\":
            emit("\\\\", i)
        elif c == "\n":
            emit("\\n", i)
        elif c == "\r":
            emit("\\r", i)
        else:
            emit(c, i)
        i += 1
    return "".join(out), origin




@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Tree | UnexpectedInput:
    import hcl2

    try:
        return hcl2.parses_to_tree(text)
    except UnexpectedInput as err:
        return err


def _describe_token(token: Token) -> str:
    if token.type == "$END":
        return "end of expression"
    value = str(token.value).strip()
    if not value:
        return "newline"
    return repr(value[:20])


def parse_single(text: str, pos: PosFn) -> Tree:
    """Parse `__x = <expression>` and return the expression subtree."""
    try:
        result = _parse_cached(text)
    except RecursionError:
        raise ExprError("Expression too complex", "It is nested too deeply.",
                        pos(1, len(PREFIX) + 1)) from None
    except Exception as err:  # python-hcl2/lark failures other than syntax errors
        raise ExprError("Invalid expression", f"{type(err).__name__}: {err}",
                        pos(1, len(PREFIX) + 1)) from None
    if isinstance(result, UnexpectedInput):
        line, column = result.line or 1, result.column or 1
        if isinstance(result, UnexpectedToken):
            detail = f"Unexpected {_describe_token(result.token)}."
        elif isinstance(result, UnexpectedCharacters):
            detail = f"Unexpected character {text[result.pos_in_stream]!r}." \
                if 0 <= result.pos_in_stream < len(text) else "Unexpected character."
        elif isinstance(result, UnexpectedEOF):
            detail = "Unexpected end of expression."
        else:
            detail = str(result).splitlines()[0]
        if line < 1 or line > text.count("\n") + 1:
            line, column = text.count("\n") + 1, len(text.rsplit("\n", 1)[-1]) + 1
        raise ExprError("Invalid expression", detail, pos(line, column))
    body = result.children[0]
    attributes = [c for c in body.children
                  if isinstance(c, Tree) and c.data != "new_line_or_comment"]
    if len(attributes) != 1 or attributes[0].data != "attribute":
        where = attributes[1] if len(attributes) > 1 else body
        raise ExprError("Invalid expression", "Extra characters after the end of the "
                        "expression.", pos(*_line_col(where)))
    return attributes[0].children[-1]


def reconstruct(node: Tree | Token) -> str:
    """Source text of a subtree from its tokens and their positions."""
    tokens = [node] if isinstance(node, Token) else \
        list(node.scan_values(lambda v: isinstance(v, Token)))
    out: list[str] = []
    end: tuple[int, int] | None = None
    for token in tokens:
        if token.type == "NL_OR_COMMENT":
            continue
        value = str(token.value).strip() if token.type not in ("STRING_CHARS",) \
            else str(token.value)
        if end is not None and (token.line, token.column) != end and out:
            out.append(" ")
        out.append(value)
        if token.end_line is not None:
            end = (token.end_line, token.end_column)
    return "".join(out)




def _line_col(node: Tree) -> tuple[int, int]:
    meta = node.meta
    return (meta.line, meta.column) if not meta.empty else (1, 1)
