"""Shared core of the text renderers: redaction, value formatting and the
attribute diff of one change as structured lines.

The human, markdown and JUnit renderers only differ in layout, so the walk
over before/after lives here once and yields `Line` values (depth, symbol,
text); each renderer decides indentation and colour.

Sensitive values are replaced by `Redacted` *before* anything is walked, so
no formatting path can reach a clear value by accident.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping  # not typing.Mapping: isinstance on it is ~5x slower
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any, Callable, Iterable, NamedTuple

from mlform.expr.values import UNKNOWN, Sensitive
from mlform.plan.codec import plain, redact
from mlform.plan.model import Action, Change

SENSITIVE_TEXT = "(sensitive value)"
UNKNOWN_TEXT = "(known after apply)"
FORCES = "# forces replacement"


class Redacted:
    """Stands for a sensitive value.  It compares like the hidden value (so an
    unchanged secret is still "unchanged") but never formats it."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Redacted) and self._raw == other._raw

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return SENSITIVE_TEXT


_ABSENT = object()   # a key missing on one side of a diff


def redact_for_display(value: Any, paths: Iterable[tuple]) -> Any:
    return redact(value, paths, Redacted)


# ---------------------------------------------------------------------------
# formatting


def _fmt_dict(value: dict) -> str:
    items = sorted(value.items(), key=lambda kv: str(kv[0]))
    # encode_basestring(_ascii) is what json.dumps(str) runs, without building an encoder
    # per call (a 10,000-resource plan formats hundreds of thousands of values).
    return "{" + ", ".join(f"{encode_basestring_ascii(str(k))}: {fmt(v)}"
                           for k, v in items) + "}"


_FORMATTERS: dict[type, Callable[[Any], str]] = {
    bool: lambda v: "true" if v else "false",
    str: encode_basestring,                  # json.dumps(v, ensure_ascii=False)
    int: int.__repr__,                       # json.dumps(v)
    float: lambda v: json.dumps(v),
    type(None): lambda v: "null",
    list: lambda v: "[" + ", ".join(fmt(x) for x in v) + "]",
    tuple: lambda v: "[" + ", ".join(fmt(x) for x in v) + "]",
    dict: _fmt_dict,
    Redacted: lambda v: SENSITIVE_TEXT,
    Sensitive: lambda v: SENSITIVE_TEXT,
    type(UNKNOWN): lambda v: UNKNOWN_TEXT,
}


def fmt(value: Any) -> str:
    """One value on one line: strings JSON-quoted, null, nested lists/dicts."""
    formatter = _FORMATTERS.get(type(value))
    if formatter is None:
        formatter = _FORMATTERS[dict] if isinstance(value, Mapping) else repr
    return formatter(value)


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_KEYS: dict[str, str] = {}        # the few attribute names of a plan, formatted once each


def fmt_key(key: Any) -> str:
    key = str(key)
    shown = _KEYS.get(key)
    if shown is None:
        shown = key if _IDENT.match(key) else json.dumps(key, ensure_ascii=False)
        if len(_KEYS) < 4096:
            _KEYS[key] = shown
    return shown


# ---------------------------------------------------------------------------
# structured lines


class Line(NamedTuple):
    """One line of a change block.  depth 0 is the resource header/closing
    brace, 1 a top-level attribute, 2 an attribute of a nested dict...
    (A named tuple: a big plan has hundreds of thousands of lines, and a frozen
    dataclass costs several times more to build.)"""

    depth: int
    symbol: str
    text: str
    note: str = ""


class _Entry(NamedTuple):
    symbol: str
    key: str
    value: str               # text after "key = "
    note: str = ""
    children: list[Line] | None = None   # a nested block, closed by "}"


def _is_block(value: Any) -> bool:
    return isinstance(value, dict) and bool(value)


def _forced(path: tuple, forces: frozenset, *, exact: bool) -> str:
    if not forces:
        return ""
    if exact:
        return FORCES if path in forces else ""
    return FORCES if any(f[:len(path)] == path for f in forces) else ""


def _create_entry(key, b, a, depth, path, forces) -> _Entry | None:
    if a is None or a is _ABSENT:
        return None   # Terraform hides null attributes of a new object
    if _is_block(a):
        return _Entry("+", key, "{", _forced(path, forces, exact=True),
                      _block(None, a, "create", depth + 1, path, forces))
    return _Entry("+", key, fmt(a), _forced(path, forces, exact=False))


def _delete_entry(key, b, a, depth, path, forces) -> _Entry | None:
    if b is None or b is _ABSENT:
        return None
    if _is_block(b):
        return _Entry("-", key, "{", "", _block(b, None, "delete", depth + 1, path, forces))
    return _Entry("-", key, f"{fmt(b)} -> null")


def _update_entry(key, b, a, depth, path, forces) -> _Entry | None:
    if b == a or (b is _ABSENT and a is None) or (b is None and a is _ABSENT):
        return None
    if b is _ABSENT or b is None:
        return _create_entry(key, b, a, depth, path, forces)
    if a is _ABSENT or a is None:
        return _delete_entry(key, b, a, depth, path, forces)
    if _is_block(b) and _is_block(a):
        return _Entry("~", key, "{", _forced(path, forces, exact=True),
                      _block(b, a, "update", depth + 1, path, forces))
    return _Entry("~", key, f"{fmt(b)} -> {fmt(a)}", _forced(path, forces, exact=False))


# Which side of the change a view walks, and how it renders one attribute.
_VIEW_ENTRIES = {
    "create": _create_entry,
    "delete": _delete_entry,
    "update": _update_entry,
}


def _block(before: Any, after: Any, view: str, depth: int, path: tuple,
           forces: frozenset) -> list[Line]:
    """Lines for the attributes of one object at `depth`."""
    b = before if isinstance(before, dict) else {}
    a = after if isinstance(after, dict) else {}
    make = _VIEW_ENTRIES[view]
    entries: list[_Entry] = []
    hidden = 0
    update = view == "update"
    for key in sorted(set(b) | set(a), key=str):
        entry = make(fmt_key(key), b.get(key, _ABSENT), a.get(key, _ABSENT),
                     depth, path + (key,), forces)
        if entry is not None:
            entries.append(entry)
        elif update and key in b and key in a:
            hidden += 1
    width = max(map(len, [e.key for e in entries]), default=0)
    lines: list[Line] = []
    for symbol, key, value, note, children in entries:
        lines.append(Line(depth, symbol, f"{key.ljust(width)} = {value}", note))
        if children is not None:
            lines.extend(children)
            lines.append(Line(depth, "", "}"))
    if hidden:
        noun = "attribute" if hidden == 1 else "attributes"
        lines.append(Line(depth, "", f"# ({hidden} unchanged {noun} hidden)"))
    return lines


# Each action shows one side of the change (Terraform's table in plan.model).
_ACTION_VIEWS = {
    Action.CREATE: "create", Action.READ: "create",
    Action.UPDATE: "update", Action.NOOP: "update",
    Action.DELETE_CREATE: "update", Action.CREATE_DELETE: "update",
    Action.DELETE: "delete",
}


def change_lines(change: Change) -> list[Line]:
    """The `SYMBOL kind "name" { ... }` block of a change, sensitive values
    redacted."""
    before = redact_for_display(change.before, change.before_sensitive)
    after = redact_for_display(change.after, change.after_sensitive)
    forces = frozenset(tuple(p) for p in change.replace_paths)
    view = _ACTION_VIEWS[change.action]
    lines = [Line(0, change.action.symbol, f'{change.kind} "{change.name}" {{')]
    if isinstance(before, Redacted) or isinstance(after, Redacted):
        # The whole object is sensitive: say so and nothing more.
        lines.append(Line(1, "", SENSITIVE_TEXT))
    else:
        lines.extend(_block(before, after, view, 1, (), forces))
    lines.append(Line(0, "", "}"))
    return lines


def changed_attributes(change: Change) -> list[str]:
    """Top-level attribute names whose value differs (names only, no values)."""
    if change.changed_paths:
        return sorted({str(p[0]) for p in change.changed_paths if p})
    b = plain(change.before) if isinstance(change.before, Mapping) else {}
    a = plain(change.after) if isinstance(change.after, Mapping) else {}
    return sorted(str(k) for k in set(b) | set(a) if b.get(k, _ABSENT) != a.get(k, _ABSENT))


def output_line(name: str, action: Action, before: Any, after: Any,
                sensitive: bool) -> Line | None:
    """One `Changes to Outputs` line, or None for a no-op."""
    if action is Action.NOOP:
        return None
    before, after = plain(before), plain(after)
    if sensitive:
        before = Redacted(before) if before is not None else None
        after = Redacted(after) if after is not None else None
    text = _OUTPUT_TEXT[action](before, after)
    return Line(1, action.symbol, f"{fmt_key(name)} = {text}")


_OUTPUT_TEXT: dict[Action, Callable[[Any, Any], str]] = {
    Action.CREATE: lambda b, a: fmt(a),
    Action.READ: lambda b, a: fmt(a),
    Action.UPDATE: lambda b, a: f"{fmt(b)} -> {fmt(a)}",
    Action.DELETE_CREATE: lambda b, a: f"{fmt(b)} -> {fmt(a)}",
    Action.CREATE_DELETE: lambda b, a: f"{fmt(b)} -> {fmt(a)}",
    Action.DELETE: lambda b, a: f"{fmt(b)} -> null",
}


def align_outputs(lines: list[Line]) -> list[Line]:
    """Align the `=` of output lines like attributes in a block."""
    width = max((len(ln.text.split(" = ", 1)[0]) for ln in lines), default=0)
    out = []
    for ln in lines:
        key, rest = ln.text.split(" = ", 1)
        out.append(Line(ln.depth, ln.symbol, f"{key.ljust(width)} = {rest}", ln.note))
    return out
