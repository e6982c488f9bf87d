"""JSON spec text as lazily scanned nodes that know where they start.

`json.loads` is fast (C) but keeps no positions, and diagnostics need the
line and column of every block key, label and attribute.  Reading JSON
through PyYAML's composer gave positions at pure-Python speed (tens of
seconds for a 10,000-resource file).  No maintained library gives JSON
positions at C speed: `json-source-map` and `json-position-mapper` are
pure-Python tokenizers of the whole document (`json-source-map`, unchanged
since 2022, spends 2.7 s of CPU on that file's positions alone; this module
0.3 s on its keys, positions and decoded values); the C parsers (json,
orjson, ujson, simdjson, rapidjson, msgspec, ijson's yajl backend) report
no positions; tree-sitter's JSON grammar has them, but its parse plus a
Python walk of the keys costs as much before any value is decoded, for two
compiled dependencies.

So this module scans only the structure that the spec decoder walks: the
objects that are bodies and blocks are read key by key with two compiled
regular expressions, and every attribute value is decoded whole, from its
offset, by json's C scanner (what `JSONDecoder.raw_decode` calls).  Each
character of an attribute value is read once, in C; lines are found by
bisecting the offsets of the newlines.  The nodes are walked by
`syntax._tree_body`, the same walk as YAML's, so both formats give the same
`Body` (same blocks, same positions) for the same structure.

The text must already be valid JSON (`parse_json` runs `json.loads` first,
which also gives the error messages for invalid files); the scanner relies
on that and checks nothing itself.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import re
from typing import Any, Iterator

from mlform.diagnostics import SourceRange

MAPPING, SEQUENCE, SCALAR = "mapping", "sequence", "scalar"

# A key and its colon: `"name" :`, then the blanks before the value.
_KEY = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"[ \t\n\r]*:[ \t\n\r]*', re.S)
# What follows a member or an element: a comma or the closing bracket.
_NEXT = re.compile(r"[ \t\n\r]*([,}\]])[ \t\n\r]*")
_BLANKS = re.compile(r"[ \t\n\r]*")


class JsonValueError(ValueError):
    """A value JSON allows but a spec does not (NaN, an infinite number)."""

    def __init__(self, message: str, source: SourceRange) -> None:
        super().__init__(message)
        self.message = message
        self.source = source


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number (infinite and NaN numbers are not supported)")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is too large (infinite numbers are not supported)")
    return value


class JsonDocument:
    """One valid JSON text: decodes values at offsets and turns offsets into positions."""

    def __init__(self, text: str, file: str) -> None:
        self.text = text
        self.file = file
        # Line n (1-based) starts at offset _starts[n - 1] (json, too, counts only "\n"):
        # the running sum of the lines' lengths plus their newline, summed in C.
        self._starts = [0, *itertools.accumulate(map((1).__add__, map(len, text.split("\n"))))]
        # The decoders' C scanners, called without raw_decode's Python frame: scan(text,
        # offset) -> (value, end offset).
        self._scan = json.JSONDecoder(parse_constant=_refuse_constant,
                                      parse_float=_finite_float).scan_once
        self._skip = json.JSONDecoder().scan_once

    def root(self) -> "JsonNode":
        return JsonNode(self, _BLANKS.match(self.text).end())

    def line_col(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self._starts, offset)
        return line, offset - self._starts[line - 1] + 1

    def position(self, offset: int) -> SourceRange:
        return SourceRange(self.file, *self.line_col(offset))


class JsonNode:
    """The value that starts at `offset`; `end` is set once it has been read or skipped.

    `entries()` (an object's members) and `items()` (an array's elements) scan one
    member at a time: a member the caller did not read is skipped by the C decoder
    before the next one is scanned.
    """

    __slots__ = ("doc", "offset", "end")

    def __init__(self, doc: JsonDocument, offset: int) -> None:
        self.doc = doc
        self.offset = offset
        self.end: int | None = None

    @property
    def pos(self) -> SourceRange:
        return self.doc.position(self.offset)

    @property
    def line_col(self) -> tuple[int, int]:
        """Where the value's text starts: a string's after its opening quote, so that
        positions inside `${...}` count from its first character."""
        return self.doc.line_col(self.offset + (self.doc.text[self.offset] == '"'))

    @property
    def kind(self) -> str:
        first = self.doc.text[self.offset]
        return MAPPING if first == "{" else SEQUENCE if first == "[" else SCALAR

    def value(self) -> Any:
        try:
            value, self.end = self.doc._scan(self.doc.text, self.offset)
        except ValueError as exc:  # from the hooks: the text itself is valid JSON
            raise JsonValueError(str(exc), self.pos) from None
        return value

    def entries(self) -> Iterator[tuple[str, SourceRange, "JsonNode"]]:
        """(key, where the key starts, value) per member of an object, in file order
        (a key written twice comes twice)."""
        text, doc, starts, file = self.doc.text, self.doc, self.doc._starts, self.doc.file
        pos = _BLANKS.match(text, self.offset + 1).end()
        if text[pos] == "}":
            self.end = pos + 1
            return
        while True:
            key_match = _KEY.match(text, pos)
            key = key_match.group(1)
            if "\\" in key:
                key = json.loads(f'"{key}"')
            child = JsonNode(doc, key_match.end())
            line = bisect.bisect_right(starts, pos)   # doc.position(pos), inlined: once per key
            yield key, SourceRange(file, line, pos - starts[line - 1] + 1), child
            after = _NEXT.match(text, child._end())
            if after.group(1) != ",":
                self.end = after.end(1)
                return
            pos = after.end()

    def items(self) -> Iterator["JsonNode"]:
        """The elements of an array, in order."""
        text, doc = self.doc.text, self.doc
        pos = _BLANKS.match(text, self.offset + 1).end()
        if text[pos] == "]":
            self.end = pos + 1
            return
        while True:
            child = JsonNode(doc, pos)
            yield child
            after = _NEXT.match(text, child._end())
            if after.group(1) != ",":
                self.end = after.end(1)
                return
            pos = after.end()

    def _end(self) -> int:
        if self.end is None:  # not read by the caller: skip it (a duplicate, an error)
            self.end = self.doc._skip(self.doc.text, self.offset)[1]
        return self.end


__all__ = ["JsonDocument", "JsonNode", "JsonValueError", "MAPPING", "SEQUENCE", "SCALAR"]
