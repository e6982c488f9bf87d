"""Value markers of the expression language: unknown and sensitive.

Values are plain Python data (None, bool, int, float, str, list, dict).  Two
markers ride along:

* ``UNKNOWN`` - a value only known after apply.  Any operation touching it
  yields UNKNOWN; it prints as ``(known after apply)``.
* ``Sensitive(v)`` - a value that must never reach disk or output in clear.
  Operations on it yield Sensitive results; `strip_sensitive` separates the
  clear value from the set of paths that were marked.
"""

from __future__ import annotations

from typing import Any, Iterator

# The markers belong to the provider contract (providers see UNKNOWN too, and may not
# import the engine); the expression language adds the operations on them.
from mlform.providers.base import UNKNOWN, Sensitive, contains_unknown, is_unknown

__all__ = ["UNKNOWN", "Sensitive", "contains_unknown", "is_unknown", "is_sensitive", "unmark",
           "strip_sensitive", "iter_paths", "get_path", "set_path", "unknown_tree", "known_part",
           "merge_unknown", "Path"]


def is_sensitive(value: Any) -> bool:
    return isinstance(value, Sensitive)


def unmark(value: Any) -> Any:
    """The clear value, with any Sensitive marker removed at the top level."""
    return value.value if isinstance(value, Sensitive) else value


Path = tuple  # a path into a value: a tuple of str keys and int indexes


def strip_sensitive(value: Any, path: Path = ()) -> tuple[Any, list[Path]]:
    """Return (clear value, paths that were marked sensitive)."""
    paths: list[Path] = []

    def walk(v: Any, p: Path) -> Any:
        if isinstance(v, Sensitive):
            paths.append(p)
            return walk_clear(v.value)
        if isinstance(v, dict):
            return {k: walk(x, p + (k,)) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, p + (i,)) for i, x in enumerate(v)]
        return v

    def walk_clear(v: Any) -> Any:
        if isinstance(v, Sensitive):
            return walk_clear(v.value)
        if isinstance(v, dict):
            return {k: walk_clear(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk_clear(x) for x in v]
        return v

    return walk(value, path), paths


def iter_paths(value: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Yield (path, leaf) for every leaf of a nested value."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from iter_paths(v, path + (k,))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from iter_paths(v, path + (i,))
    else:
        yield path, value


def get_path(value: Any, path: Path, default: Any = None) -> Any:
    for step in path:
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value):
            value = value[step]
        else:
            return default
    return value


def set_path(value: Any, path: Path, new: Any) -> Any:
    """Return a copy of `value` with `new` at `path` (containers created as needed)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, list) and isinstance(head, int):
        out = list(value)
        while len(out) <= head:
            out.append(None)
        out[head] = set_path(out[head], rest, new)
        return out
    out = dict(value) if isinstance(value, dict) else {}
    out[head] = set_path(out.get(head), rest, new)
    return out


def unknown_tree(value: Any) -> Any:
    """Terraform's `after_unknown`: True where unknown, nested like the value, else False.

    Containers without any unknown collapse to False, as Terraform does.
    """
    if value is UNKNOWN:
        return True
    if isinstance(value, dict):
        sub = {k: unknown_tree(v) for k, v in value.items()}
        sub = {k: v for k, v in sub.items() if v is not False}
        return sub or False
    if isinstance(value, list):
        sub = [unknown_tree(v) for v in value]
        return sub if any(x is not False for x in sub) else False
    return False


def known_part(value: Any) -> Any:
    """The value with UNKNOWN replaced by None (how JSON shows it in `after`)."""
    if value is UNKNOWN:
        return None
    if isinstance(value, dict):
        return {k: known_part(v) for k, v in value.items()}
    if isinstance(value, list):
        return [known_part(v) for v in value]
    return value


def merge_unknown(known: Any, unknown: Any) -> Any:
    """Inverse of (known_part, unknown_tree): rebuild a value with UNKNOWN markers."""
    if unknown is True:
        return UNKNOWN
    if isinstance(unknown, dict) and isinstance(known, dict):
        return {k: merge_unknown(known.get(k), unknown.get(k, False)) if k in unknown else v
                for k, v in known.items()} | {k: UNKNOWN for k, u in unknown.items()
                                             if u is True and k not in known}
    if isinstance(unknown, list) and isinstance(known, list):
        return [merge_unknown(v, unknown[i] if i < len(unknown) else False)
                for i, v in enumerate(known)]
    return known
