"""Turn python-hcl2's (lark's) syntax errors into diagnostics a person can act on.

lark reports where parsing stopped, which is often far from the mistake: an
unterminated string swallows the lines after it, a missing ``}`` is noticed at
the end of the file.  When parsing fails, a small scanner (strings, comments,
heredocs and brackets only; not a second grammar) finds the usual culprits and
the diagnostic points at them instead.
"""

from __future__ import annotations

import re

from mlform.diagnostics import Diagnostic, SourceRange, error

# How lark's terminal names read in a message.
_TERMINALS = {
    "RBRACE": '"}"', "LBRACE": '"{"', "RSQB": '"]"', "LSQB": '"["', "RPAR": '")"',
    "LPAR": '"("', "EQ": '"="', "COMMA": '","', "COLON": '":"', "DOT": '"."',
    "QMARK": '"?"', "DBLQUOTE": '"\\""', "NAME": "a name", "$END": "the end of the file",
    "NL_OR_COMMENT": "a new line", "INT_LITERAL": "a number", "FLOAT_LITERAL": "a number",
    "FOR_OBJECT_ARROW": '"=>"', "ELLIPSIS": '"..."',
}
_CLOSERS = {"{": "}", "[": "]", "(": ")", "${": "}", "%{": "}"}
_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_HEREDOC = re.compile(r"<<-?(" + _NAME + r")\r?\n")


class _Scan:
    """What a quick pass over the text found: an unterminated string, unclosed
    brackets (innermost last) or a closer with no opener, as character offsets."""

    def __init__(self, text: str) -> None:
        self.unterminated: int | None = None
        self.interpolation: int | None = None  # an unclosed "${" inside a string
        self.unopened: int | None = None
        self.mismatch: tuple[str, int, int] | None = None  # (opener, its offset, closer's)
        self.opens: list[tuple[str, int]] = []
        self._run(text)

    def _run(self, text: str) -> None:
        opens: list[tuple[str, int, int | None]] = []  # (opener, offset, string start)
        string: int | None = None  # offset of the open quote while inside a string
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            if string is not None:
                if c == "\\":
                    i += 2
                    continue
                if c in "\r\n":
                    self.unterminated = string
                    if opens and opens[-1][0] in ("${", "%{"):
                        self.interpolation = opens[-1][1]
                    break
                if c == '"':
                    string = None
                elif text.startswith(("$${", "%%{"), i):
                    i += 3
                    continue
                elif text.startswith(("${", "%{"), i):
                    opens.append((text[i:i + 2], i, string))
                    string = None
                    i += 2
                    continue
                i += 1
                continue
            if c == "#" or text.startswith("//", i):
                end = text.find("\n", i)
                i = n if end < 0 else end + 1
                continue
            if text.startswith("/*", i):
                end = text.find("*/", i + 2)
                i = n if end < 0 else end + 2
                continue
            heredoc = _HEREDOC.match(text, i) if c == "<" else None
            if heredoc:
                marker = re.compile(r"^[ \t]*" + re.escape(heredoc.group(1)) + r"[ \t]*\r?$",
                                    re.MULTILINE)
                end = marker.search(text, heredoc.end())
                i = n if end is None else end.end()
                continue
            if c == '"':
                string = i
            elif c in "{[(":
                opens.append((c, i, None))
            elif c in "}])":
                if opens and _CLOSERS[opens[-1][0]] == c:
                    _, _, string = opens.pop()
                elif not opens and self.unopened is None:
                    self.unopened = i
                elif opens and self.mismatch is None:
                    self.mismatch = (opens[-1][0], opens[-1][1], i)
            i += 1
        if string is not None and self.unterminated is None:
            self.unterminated = string
        self.opens = [(o, at) for o, at, _ in opens]


def _line_col(text: str, offset: int) -> tuple[int, int]:
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


def _offset(text: str, line: int, column: int) -> int:
    start = 0
    for _ in range(line - 1):
        start = text.find("\n", start) + 1
        if start == 0:
            return len(text)
    return start + max(column - 1, 0)


def _line(text: str, line: int) -> str:
    lines = text.split("\n")
    return lines[line - 1].strip() if 0 < line <= len(lines) else ""


def _shown(token: str) -> str:
    first = token.strip().splitlines()[0] if token.strip() else ""
    return first if len(first) <= 20 else first[:17] + "..."


def _expected(names: list[str]) -> str:
    words = [_TERMINALS[n] for n in names if n in _TERMINALS]
    if not words or len(words) != len(names) or len(words) > 4:
        return ""
    words = list(dict.fromkeys(words))
    return "Expected " + (words[0] if len(words) == 1 else
                          ", ".join(words[:-1]) + " or " + words[-1]) + " here."


# A line that starts a statement: `name = ...` or a block header `type "label" {`.
_STATEMENT = re.compile(r"[ \t]*" + _NAME +
                        r'(?:[ \t]*=[^=>]|(?:[ \t]+(?:"[^"\n]*"|' + _NAME + r"))*[ \t]*\{)")


def _missing_closer(text: str, file: str, opener: str, at: int,
                    closer_at: int | None = None) -> Diagnostic:
    line, column = _line_col(text, at)
    closer = _CLOSERS[opener]
    lines = text.split("\n")
    if closer_at is not None:
        before = f' before the "{text[closer_at]}" on line {_line_col(text, closer_at)[0]}'
    else:  # the first statement indented no deeper than the opening line
        indent = len(lines[line - 1]) - len(lines[line - 1].lstrip())
        before = ""
        for n, ln in enumerate(lines[line:], start=line + 1):
            if _STATEMENT.match(ln) and len(ln) - len(ln.lstrip()) <= indent:
                before = f" before line {n}"
                break
    return error(f'Invalid HCL syntax: missing "{closer}"',
                 detail=f'The "{opener}" opened on line {line} is never closed.',
                 source=SourceRange(file, line, column),
                 hint=f'Add "{closer}"{before or " where it ends"}.')


def hcl_syntax_error(exc: Exception, file: str, text: str) -> Diagnostic:
    """The diagnostic for a lark error while parsing `text` (the whole file)."""
    line = getattr(exc, "line", 0) or 0
    column = getattr(exc, "column", 0) or 0
    token = getattr(exc, "token", None)
    kind = getattr(token, "type", None)
    expected = sorted(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or [])
    at_end = kind == "$END" or line <= 0
    stop = len(text) if at_end else _offset(text, line, column)
    scan = _Scan(text)

    if scan.interpolation is not None and scan.interpolation <= stop:
        iline, icol = _line_col(text, scan.interpolation)
        opener = text[scan.interpolation:scan.interpolation + 2]
        return error(f'Invalid HCL syntax: unterminated "{opener}"',
                     detail=_line(text, iline), source=SourceRange(file, iline, icol),
                     hint='Close it with "}" before the string\'s closing quote.')
    if scan.unterminated is not None and scan.unterminated <= stop:
        sline, scol = _line_col(text, scan.unterminated)
        return error("Invalid HCL syntax: unterminated string",
                     detail=_line(text, sline), source=SourceRange(file, sline, scol),
                     hint='Close the string with " on the same line.')
    if at_end and scan.opens:
        return _missing_closer(text, file, *scan.opens[-1])
    if scan.mismatch is not None and scan.mismatch[2] <= stop:
        return _missing_closer(text, file, scan.mismatch[0], scan.mismatch[1], scan.mismatch[2])
    if kind in ("RBRACE", "RSQB", "RPAR") and scan.unopened is not None \
            and scan.unopened <= stop and "$END" in expected:
        uline, ucol = _line_col(text, scan.unopened)
        return error(f'Invalid HCL syntax: unexpected "{token}"', detail=_line(text, uline),
                     source=SourceRange(file, uline, ucol),
                     hint=f'This "{token}" closes nothing; remove it or add the opening one.')

    # `name "label"` then a new line: read as a block header, so "{" was expected.
    lines = text.split("\n")
    prev_no = min(line, len(lines) + 1) - 1
    while prev_no > 0 and not lines[prev_no - 1].strip():
        prev_no -= 1
    prev = lines[prev_no - 1] if prev_no > 0 else ""
    header = re.match(r"^(\s*)(" + _NAME + r')\s+"', prev)
    if expected == ["LBRACE"] and header and prev.rstrip().endswith('"'):
        name = header.group(2)
        return error(f'Invalid HCL syntax: missing "=" after "{name}"', detail=prev.strip(),
                     source=SourceRange(file, prev_no, len(header.group(1)) + 1),
                     hint=f'Write {name} = VALUE for an attribute; a block needs "{{ ... }}" '
                          "after its labels.")
    before = _line_in_file(text, line)[:max(column - 1, 0)]
    lone = re.match(r"^(\s*)(" + _NAME + r")\s+(" + _NAME + r"\s*)?$", before)
    if "EQ" in expected and lone:
        name = lone.group(2)
        return error(f'Invalid HCL syntax: missing "=" after "{name}"',
                     detail=_line(text, line),
                     source=SourceRange(file, line, len(lone.group(1)) + 1),
                     hint=f"Attributes are written {name} = VALUE.")

    if re.search(r"[^=!<>]=\s*$", before) and not at_end:
        return error('Invalid HCL syntax: missing value after "="', detail=_line(text, line),
                     source=SourceRange(file, line, column),
                     hint="Write a value after the =, or remove the line.")
    near = "" if at_end or token is None else _shown(str(token))
    summary = ("Invalid HCL syntax: unexpected end of file" if at_end else
               f'Invalid HCL syntax near "{near}"' if near else "Invalid HCL syntax")
    hint = _expected(expected) or \
        "Check for a missing closing brace, quote or '=' on this line or the one before."
    return error(summary, detail=_line(text, line), source=SourceRange(file, line, column),
                 hint=hint)


def _line_in_file(text: str, line: int) -> str:
    lines = text.split("\n")
    return lines[line - 1] if 0 < line <= len(lines) else ""


__all__ = ["hcl_syntax_error"]
