"""The pure diff: prior attributes + planned attributes + rules → an action.

No I/O and no provider calls here: everything arrives as values, so the
whole decision table is tested without a provider (as pyinfra tests its fact
parsers without a host).  Equality is checked cheaply first; deepdiff only
describes what differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from mlform.expr.values import UNKNOWN, get_path, set_path
from mlform.plan.model import Action


@dataclass(frozen=True)
class DiffInput:
    prior: Mapping[str, Any] | None          # refreshed attributes (masked), None if absent
    prior_tainted: bool
    planned: Mapping[str, Any]               # provider-planned attributes (masked), may hold UNKNOWN
    replace_paths: tuple[tuple, ...]         # declared + provider-decided paths that force replacement
    computed: tuple[str, ...] = ()           # attributes the provider fills in
    ignore_changes: tuple[tuple, ...] | str = ()
    create_before_destroy: bool = False
    force_replace: str = ""                  # "" or a reason code: replace_by_request / replace_by_triggers


@dataclass(frozen=True)
class DiffResult:
    action: Action
    after: Mapping[str, Any]
    changed_paths: tuple[tuple, ...] = ()
    replace_paths: tuple[tuple, ...] = ()
    action_reason: str = ""


def apply_ignore_changes(prior: Mapping[str, Any], planned: Mapping[str, Any],
                         ignore: tuple[tuple, ...] | str, computed: Iterable[str]) -> dict:
    """Keep the prior value at each ignored path (Terraform's `ignore_changes`)."""
    if ignore == "all":
        computed = set(computed)
        out = dict(planned)
        for key, value in prior.items():
            if key not in computed:
                out[key] = value
        return out
    out: Any = dict(planned)
    for path in ignore:
        prior_value = get_path(prior, path, _MISSING)
        if prior_value is _MISSING:
            continue
        out = set_path(out, path, prior_value)
    return out


_MISSING = object()


def _walk_paths(a: Any, b: Any, path: tuple, out: list) -> None:
    """Changed leaf paths between two values (UNKNOWN differs from everything).

    DeepDiff cannot see our UNKNOWN marker as a value, so unknown leaves are
    found here and deepdiff describes the rest.
    """
    if a is UNKNOWN or b is UNKNOWN:
        if a is not b:
            out.append(path)
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a.keys() | b.keys():
            if key not in a or key not in b:
                out.append(path + (key,))
            elif a[key] != b[key] or _has_unknown(a[key]) or _has_unknown(b[key]):
                _walk_paths(a[key], b[key], path + (key,), out)
        return
    if _has_unknown(a) or _has_unknown(b):
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                _walk_paths(x, y, path + (i,), out)
        else:
            out.append(path)
        return
    if a == b:
        return
    from deepdiff import DeepDiff  # imported on first real difference: it costs ~0.3 s to load
    diff = DeepDiff(a, b, ignore_order=False, view="tree", verbose_level=0)
    found = False
    for items in diff.values():
        for item in items:
            found = True
            out.append(path + tuple(item.path(output_format="list")))
    if not found:
        out.append(path)


def _has_unknown(value: Any) -> bool:
    if value is UNKNOWN:
        return True
    if isinstance(value, dict):
        return any(_has_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_unknown(v) for v in value)
    return False


def changed_paths(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> tuple[tuple, ...]:
    if before is None or after is None:
        return ()
    if before == after:  # prior values are never UNKNOWN, so equality means no change
        return ()
    out: list[tuple] = []
    _walk_paths(dict(before), dict(after), (), out)
    return tuple(sorted(set(out), key=lambda p: tuple(str(x) for x in p)))


def _forces_replacement(path: tuple, replace_paths: tuple[tuple, ...]) -> tuple | None:
    for rp in replace_paths:
        n = min(len(rp), len(path))
        if tuple(path[:n]) == tuple(rp[:n]):
            return rp
    return None


def diff(inp: DiffInput) -> DiffResult:
    """Decide the action for one instance that the configuration declares."""
    planned = dict(inp.planned)
    if inp.prior is None:
        return DiffResult(Action.CREATE, planned)
    replace = Action.CREATE_DELETE if inp.create_before_destroy else Action.DELETE_CREATE
    if inp.ignore_changes:
        planned = apply_ignore_changes(inp.prior, planned, inp.ignore_changes, inp.computed)
    paths = changed_paths(inp.prior, planned)
    if inp.prior_tainted:
        return DiffResult(replace, planned, paths, (), "replace_because_tainted")
    if inp.force_replace:
        return DiffResult(replace, planned, paths, (), inp.force_replace)
    if not paths:
        return DiffResult(Action.NOOP, planned)
    forcing = tuple(sorted({rp for p in paths if (rp := _forces_replacement(p, inp.replace_paths))},
                           key=lambda p: tuple(map(str, p))))
    if forcing:
        return DiffResult(replace, planned, paths, forcing, "replace_because_cannot_update")
    return DiffResult(Action.UPDATE, planned, paths)


def dotted(path: Iterable) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def parse_dotted(text: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in text.split(".") if p)


__all__ = ["DiffInput", "DiffResult", "diff", "changed_paths", "apply_ignore_changes",
           "dotted", "parse_dotted"]
