"""Helpers over nested attribute values (dicts, lists, leaves, `UNKNOWN`).

The memory provider needs three questions answered about a planned value:
what it looks like on disk (`to_plain`), how to turn its `UNKNOWN` leaves into
concrete ones without touching a known leaf (`fill_unknowns`), and whether a
stored object already is what the plan asks for (`realizes`), which is how a
retried create or a repeated update adopts instead of acting twice.
"""

from __future__ import annotations

from collections.abc import Mapping  # not typing.Mapping: isinstance on it is ~5x slower
from typing import Any, Callable

from mlform.providers.base import UNKNOWN, contains_unknown

__all__ = ["MISSING", "to_plain", "copy_plain", "fill_unknowns", "pick_from", "realizes"]

#: "no value at this path" (distinct from a stored None)
MISSING: Any = object()

Path = tuple


def to_plain(value: Any) -> Any:
    """JSON-ready copy: tuples as lists, keys as strings."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if value is UNKNOWN:
        raise ValueError("an unknown value cannot be stored")
    return value


def copy_plain(value: Any) -> Any:
    """Deep copy of JSON data, much cheaper than `copy.deepcopy`."""
    if isinstance(value, dict):
        return {k: copy_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_plain(v) for v in value]
    return value


def fill_unknowns(value: Any, pick: Callable[[Path], Any], path: Path = ()) -> Any:
    """`value` with every UNKNOWN leaf replaced by ``pick(path)``; known leaves untouched.

    Containers keep their type (a tuple stays a tuple) so the result compares
    equal to the plan wherever the plan was known.
    """
    if value is UNKNOWN:
        return pick(path)
    if isinstance(value, Mapping):
        return {k: fill_unknowns(v, pick, path + (k,)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(fill_unknowns(v, pick, path + (i,)) for i, v in enumerate(value))
    return value


def _at(value: Any, path: Path) -> Any:
    """The value at `path` (keys and list indexes), or MISSING."""
    for step in path:
        if isinstance(value, Mapping) and step in value:
            value = value[step]
        elif isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value):
            value = value[step]
        else:
            return MISSING
    return value


def pick_from(source: Any, fallback: Callable[[Path], Any]) -> Callable[[Path], Any]:
    """A `pick` for `fill_unknowns`: the concrete value at the same path in `source`, else fallback."""
    def pick(path: Path) -> Any:
        found = _at(source, path)
        if found is MISSING or contains_unknown(found):
            return fallback(path)
        return found
    return pick


def realizes(planned: Any, live: Any) -> bool:
    """True when `live` (stored, plain JSON) already is what `planned` asks for.

    Known leaves must be equal, UNKNOWN leaves may be anything that exists,
    and mappings must have the same keys (an extra live key is a difference).
    """
    if planned is UNKNOWN:
        return live is not MISSING
    if isinstance(planned, Mapping):
        return (isinstance(live, Mapping) and planned.keys() == live.keys()
                and all(realizes(v, live[k]) for k, v in planned.items()))
    if isinstance(planned, (list, tuple)):
        return (isinstance(live, (list, tuple)) and len(planned) == len(live)
                and all(realizes(p, q) for p, q in zip(planned, live)))
    # True == 1 in Python; a bool that became a number (or back) is still a change
    return planned == live and isinstance(planned, bool) == isinstance(live, bool)
