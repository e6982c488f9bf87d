"""Canonical formatting of HCL spec files (``mlform fmt``), keeping comments.

`format_hcl` rewrites only whitespace, the way ``terraform fmt`` does:

* two spaces of indentation per nesting level; a line that starts with a
  closing bracket lines up with the line that opened it;
* one space on each side of an ``=`` that assigns (attributes, object
  elements), and the ``=`` of consecutive single-line assignments at the same
  level aligned;
* runs of blank lines collapsed to one, none at the start or end of the
  file, no trailing whitespace, one final newline; CRLF becomes LF.

Comments (``#``, ``//``, ``/* */``) stay where they are.  Quoted strings,
heredocs and the inside of block comments are left exactly as written.  The
text is parsed with python-hcl2's grammar first, so invalid HCL raises
`FormatError`; the result is checked to mean the same as the input (what
``hcl2.loads`` returns, up to the whitespace inside comment text: python-hcl2
reports adjacent comments as one value that includes the indentation between
them).

The layout pass is a small lexical scanner over the validated text: it only
needs to know, for each line, whether it starts inside a string, heredoc or
comment, which brackets are open and where the assigning ``=`` signs are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["FormatError", "format_hcl"]

_HEREDOC = re.compile(
    r"<<-?(?P<id>[a-zA-Z][a-zA-Z0-9._-]*)\r?\n(?:(?:.|\n)*?\r?\n)??\s*(?P=id)\r?\n")
_KEY = re.compile(r'^(?:[A-Za-z_][A-Za-z0-9_-]*|"(?:[^"\\$%]|\\.)*")$')
_OPEN = "{[("
_CLOSE = "}])"
_PUNCTUATION = {
    "RBRACE": "}", "LBRACE": "{", "RSQB": "]", "LSQB": "[", "RPAR": ")", "LPAR": "(",
    "DBLQUOTE": '"', "EQ": "=", "COMMA": ",", "COLON": ":", "NL_OR_COMMENT": "a new line",
}


class FormatError(ValueError):
    """The text is not valid HCL (or could not be formatted safely)."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        super().__init__(message, line, column)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        if self.line:
            return f"{self.message} (line {self.line}, column {self.column})"
        return self.message


# ------------------------------------------------------------------ validation

def _describe_parse_error(exc: Exception) -> FormatError:
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

    line = getattr(exc, "line", 0) or 0
    column = getattr(exc, "column", 0) or 0
    if isinstance(exc, UnexpectedCharacters):
        return FormatError(f'unexpected character "{exc.char}"', line, column)
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        expected = set(exc.expected or ())
        if token.type == "$END":
            if {"DBLQUOTE", "STRING_CHARS"} <= expected:
                return FormatError("unterminated string", line, column)
            what = "unexpected end of file"
        elif token.type == "STRING_CHARS":
            what = f'unexpected character "{str(token)[:1]}"'
        else:
            text = str(token).strip().splitlines()[0] if str(token).strip() else token.type
            what = f'unexpected "{text[:20]}"'
        shown = [_PUNCTUATION[name] for name in sorted(expected) if name in _PUNCTUATION]
        if shown and len(expected) <= 3:
            what += "; expected " + " or ".join(f'"{s}"' if len(s) == 1 else s for s in shown)
        return FormatError(what, line, column)
    if isinstance(exc, UnexpectedEOF):
        return FormatError("unexpected end of file", line, column)
    return FormatError(str(exc).splitlines()[0], line, column)


def _comparable(data: object) -> object:
    """`data` from hcl2.loads with the whitespace inside comment values collapsed.

    python-hcl2 reports adjacent comments as one value that includes the
    indentation between them, so reindenting changes that text but not the
    comments themselves.
    """
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if key in ("__comments__", "__inline_comments__") and isinstance(value, list):
                value = [{**c, "value": " ".join(str(c.get("value", "")).split())}
                         if isinstance(c, dict) else c for c in value]
            out[key] = _comparable(value)
        return out
    if isinstance(data, list):
        return [_comparable(item) for item in data]
    return data


def _load(text: str) -> object:
    """Parse `text` with python-hcl2: its meaning, or `FormatError` when invalid."""
    import hcl2
    from lark.exceptions import LarkError

    try:
        return _comparable(hcl2.loads(text))
    except LarkError as exc:
        raise _describe_parse_error(exc) from None
    except Exception as exc:  # the transformer refusing a parsed tree
        raise FormatError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) \
            from None


# -------------------------------------------------------------------- scanning

#: Line end states after which trailing whitespace may go (it is not content).
_STRIPPABLE = ("code", "line-comment")


@dataclass
class _Line:
    """What the scanner learnt about one source line."""

    text: str
    start: str = "code"   # state at line start: code | string | heredoc | comment
    end: str = "code"     # state at line end: code | line-comment | comment | string | heredoc
    open_stack: list = field(default_factory=list)  # lines that opened the brackets open here
    eqs: list = field(default_factory=list)         # columns of assigning "=" signs
    closers: list = field(default_factory=list)     # opening lines of its leading closers
    dips: bool = False    # closes a bracket opened on an earlier line
    net: int = 0          # brackets opened minus closed on this line


class _Scanner:
    """A lexical pass over valid HCL: strings, heredocs, comments, brackets, "="."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = [_Line(t) for t in text.split("\n")[:-1]]
        self.starts = [0]
        for line in self.lines[:-1]:
            self.starts.append(self.starts[-1] + len(line.text) + 1)
        self.brackets: list[int] = []   # opening line of each open structural bracket
        self.mode: list = []            # "str" or an interpolation's brace depth
        self.row = 0
        self.leading = True

    def _begin(self, row: int, start: str) -> None:
        self.row = row
        self.leading = True
        if row < len(self.lines):
            self.lines[row].start = start
            self.lines[row].open_stack = list(self.brackets)

    def _newline(self, end: str, next_start: str) -> None:
        self.lines[self.row].end = end
        self._begin(self.row + 1, next_start)

    def scan(self) -> list[_Line]:
        text, n = self.text, len(self.text)
        i = 0
        self._begin(0, "code")
        while i < n:
            ch = text[i]
            if self.mode:
                i = self._in_string(i)
                continue
            if ch == "\n":
                self._newline("code", "code")
                i += 1
            elif ch in " \t\r":
                i += 1
            elif ch == "#" or text.startswith("//", i):
                stop = text.find("\n", i)
                self._newline("line-comment", "code")
                i = stop + 1
            elif text.startswith("/*", i):
                i = self._block_comment(i)
            elif text.startswith("<<", i) and _HEREDOC.match(text, i):
                i = self._heredoc(i, _HEREDOC.match(text, i).end())
            elif ch == '"':
                self.mode.append("str")
                self.leading = False
                i += 1
            else:
                self._code_char(i)
                i += 1
        return self.lines

    def _in_string(self, i: int) -> int:
        text = self.text
        ch = text[i]
        if ch == "\n":
            self._newline("string", "string")
            return i + 1
        top = self.mode[-1]
        if top == "str":
            if ch == "\\" and text[i + 1:i + 2] != "\n":
                return i + 2
            if text.startswith(("$${", "%%{"), i):
                return i + 3
            if text.startswith(("${", "%{"), i):
                self.mode.append(0)
                return i + 2
            if ch == '"':
                self.mode.pop()
            return i + 1
        if ch == '"':
            self.mode.append("str")
        elif ch == "{":
            self.mode[-1] += 1
        elif ch == "}":
            if top == 0:
                self.mode.pop()
            else:
                self.mode[-1] -= 1
        return i + 1

    def _block_comment(self, i: int) -> int:
        self.leading = False
        end = self.text.find("*/", i + 2)
        stop = len(self.text) if end < 0 else end + 2
        for _ in range(self.text.count("\n", i, stop)):
            self._newline("comment", "comment")
        return stop

    def _heredoc(self, i: int, stop: int) -> int:
        # the heredoc runs to the newline that ends its closing marker line
        body_end = stop - 1
        self.leading = False
        for _ in range(self.text.count("\n", i, body_end)):
            self._newline("heredoc", "heredoc")
        return body_end

    def _code_char(self, i: int) -> None:
        ch = self.text[i]
        line = self.lines[self.row]
        if ch in _OPEN:
            self.brackets.append(self.row)
            line.net += 1
            self.leading = False
        elif ch in _CLOSE:
            opened = self.brackets.pop() if self.brackets else self.row
            line.net -= 1
            if opened != self.row:
                line.dips = True
            if self.leading:
                line.closers.append(opened)
        else:
            self.leading = False
            if ch == "=":
                before = self.text[i - 1] if i else ""
                after = self.text[i + 1:i + 2]
                if before not in "=!<>" and after not in ("=", ">"):
                    line.eqs.append(i - self.starts[self.row])


# ------------------------------------------------------------------- layout

def _space_eqs(text: str, columns: list[int]) -> str:
    """`text` with one space either side of each "=" at `columns`."""
    out = []
    last = 0
    for column in columns:
        out.append(text[last:column].rstrip(" \t"))
        rest = text[column + 1:]
        stripped = rest.lstrip(" \t")
        out.append(" =" + (" " if stripped else ""))
        last = column + 1 + (len(rest) - len(stripped))
    out.append(text[last:])
    return "".join(out)


def _levels(lines: list[_Line]) -> list[int]:
    """Indentation level of every line.

    A line starting with a closing bracket lines up with the line that opened
    it; any other line is one level deeper than the line that opened the
    innermost bracket still open.
    """
    levels: list[int] = []
    for line in lines:
        if line.closers:
            levels.append(levels[line.closers[0]])
        elif line.open_stack:
            levels.append(levels[line.open_stack[-1]] + 1)
        else:
            levels.append(0)
    return levels


def _layout(lines: list[_Line]) -> list[str]:
    levels = _levels(lines)
    out: list[str | None] = []                        # None marks a blank line
    assign: list[tuple[int, str, str] | None] = []    # (level, key, value) of assignments
    for line, level in zip(lines, levels):
        assign.append(None)
        if line.start != "code":      # inside a string, heredoc or block comment: as written
            out.append(line.text.rstrip() if line.end in _STRIPPABLE else line.text)
            continue
        offset = len(line.text) - len(line.text.lstrip(" \t"))
        body = line.text[offset:]
        if line.end in _STRIPPABLE:
            body = body.rstrip()
        if not body:
            out.append(None)
            continue
        eqs = [c - offset for c in line.eqs]
        formatted = _space_eqs(body, eqs)
        out.append("  " * level + formatted)
        if eqs and line.net == 0 and not line.dips and line.end in _STRIPPABLE:
            key = body[:eqs[0]].strip()
            if _KEY.match(key):
                value = formatted[formatted.index("=", len(key)) + 1:].lstrip(" ")
                assign[-1] = (level, key, value)
    _align(out, assign)
    result: list[str] = []            # blank lines: never two in a row, none at the ends
    for text in out:
        if text is None:
            if result and result[-1] != "":
                result.append("")
        else:
            result.append(text)
    while result and result[-1] == "":
        result.pop()
    return result


def _align(out: list, assign: list) -> None:
    """Align the "=" of each run of consecutive single-line assignments at one level."""
    run: list[int] = []

    def close() -> None:
        if len(run) > 1:
            width = max(len(assign[k][1]) for k in run)
            for k in run:
                level, key, value = assign[k]
                out[k] = "  " * level + key.ljust(width) + " =" + (" " + value if value else "")
        run.clear()

    for k, entry in enumerate(assign):
        if entry is None or (run and assign[run[0]][0] != entry[0]):
            close()
        if entry is not None:
            run.append(k)
    close()


def format_hcl(text: str) -> str:
    """Format HCL `text` canonically; raises `FormatError` for invalid HCL.

    Only whitespace changes; comments stay.  Idempotent:
    ``format_hcl(format_hcl(x)) == format_hcl(x)``.
    """
    source = text.replace("\r\n", "\n")
    before = _load(source)
    if not source.strip():
        return ""
    if not source.endswith("\n"):
        source += "\n"
    result = "\n".join(_layout(_Scanner(source).scan())) + "\n"
    try:
        same = _load(result) == before
    except FormatError:
        same = False
    if not same:
        raise FormatError("formatting would change the meaning of this file "
                          "(a bug in mlform fmt); the file was left unchanged")
    return result
