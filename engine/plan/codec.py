"""The JSON plan document (`plan --format json`, `show --json`, plan files): a plan as
plain data and back (pure; `mlform.views` renders it, `mlform.planfile` saves it).

Shaped like Terraform's `show -json` where the ideas match, so tools that read
`resource_changes[].change.actions` work unchanged.  `plan_from_json` is the
inverse; with `include_internal=True` the document also carries what apply
needs (variables, config digest, state lineage/serial, ...), which is the
plan file.

Sensitive values never appear: the value at each sensitive path is written as
`null` (or marked unknown in `after_unknown` when it was unknown), and the
`*_sensitive` trees say where they were.  A plan read back therefore has
`None` at those paths; apply must take sensitive values from elsewhere.

Canonical order on the way back: dict keys and output changes sorted,
sensitive paths in tree order (sorted keys, ascending indexes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterable

from mlform import __version__
from mlform._gc import paused_gc
from mlform.cost import CostReport
from mlform.diagnostics import Diagnostic, SourceRange
from mlform.expr.values import (
    UNKNOWN, Sensitive, contains_unknown, known_part, merge_unknown, unknown_tree,
)
from mlform.plan.model import Action, Change, OutputChange, Plan, PolicyResult

FORMAT_VERSION = "1.0"


# ---------------------------------------------------------------------------
# plain data and redaction


_SCALARS = frozenset({str, int, float, bool, type(None)})


def plain(value: Any) -> Any:
    """JSON-shaped copy: tuples -> lists, Mappings -> dicts.  UNKNOWN stays;
    a stray `Sensitive` wrapper becomes None so it can never leak."""
    # Exact types first: a big plan is hundreds of thousands of plain dicts and strings,
    # and one set lookup is cheaper than the isinstance chain below.
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        return {k: plain(v) for k, v in value.items()}
    if kind is list:
        return [plain(v) for v in value]
    if value is UNKNOWN or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Sensitive):
        return None
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _has_path(value: Any, path: tuple) -> bool:
    for step in path:
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif (isinstance(value, list) and isinstance(step, int)
              and 0 <= step < len(value)):
            value = value[step]
        else:
            return False
    return True


def _replace_at(value: Any, path: tuple, make: Callable[[Any], Any]) -> Any:
    if not path:
        return make(value)
    head, rest = path[0], path[1:]
    if isinstance(value, list):
        out = list(value)
    else:
        out = dict(value)
    out[head] = _replace_at(value[head], rest, make)
    return out


def redact(value: Any, paths: Iterable[tuple], make: Callable[[Any], Any]) -> Any:
    """`value` (made plain) with the value at each sensitive path replaced by
    `make(raw)`.  Shorter paths go first: once a prefix is redacted the longer
    paths under it no longer exist and are skipped."""
    out = plain(value)
    for path in sorted({tuple(p) for p in paths}, key=len):
        if _has_path(out, path):
            out = _replace_at(out, path, make)
    return out


def redact_for_json(value: Any, paths: Iterable[tuple]) -> Any:
    # Keep "this is unknown" (not a secret; apply needs it), drop the value.
    return redact(value, paths, lambda raw: UNKNOWN if contains_unknown(raw) else None)





# ---------------------------------------------------------------------------
# sensitive paths <-> Terraform's sensitive trees


def sensitive_tree(paths: Iterable[tuple]) -> Any:
    """Terraform-shaped tree: True at each sensitive path, `False` when none."""
    paths = [tuple(p) for p in paths]
    if not paths:
        return False
    if any(not p for p in paths):
        return True
    heads = {p[0] for p in paths}
    if all(isinstance(h, int) and not isinstance(h, bool) for h in heads):
        return [sensitive_tree([p[1:] for p in paths if p[0] == i]) if i in heads else False
                for i in range(max(heads) + 1)]
    return {str(h): sensitive_tree([p[1:] for p in paths if p[0] == h])
            for h in sorted(heads, key=str)}


def sensitive_paths(tree: Any, prefix: tuple = ()) -> tuple[tuple, ...]:
    """Inverse of `sensitive_tree`, in tree order."""
    if tree is True:
        return (prefix,)
    if isinstance(tree, dict):
        return tuple(p for k in sorted(tree) for p in sensitive_paths(tree[k], prefix + (k,)))
    if isinstance(tree, list):
        return tuple(p for i, v in enumerate(tree) for p in sensitive_paths(v, prefix + (i,)))
    return ()


def _paths_json(paths: Iterable[tuple]) -> list[list]:
    return [list(p) for p in paths]


def _paths_tuple(paths: Iterable[Iterable] | None) -> tuple[tuple, ...]:
    return tuple(tuple(p) for p in paths or ())


def _sorted_keys(value: Any) -> Any:
    """Same value with every dict's keys sorted, so the bytes are stable."""
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


# ---------------------------------------------------------------------------
# to JSON


def _known_and_unknown(value: Any) -> tuple[Any, Any]:
    """(known_part(plain(value)), unknown_tree(plain(value))) in one walk and without the
    intermediate copy: what the JSON of a value with no sensitive path needs, for every
    change of a plan."""
    kind = type(value)
    if kind in _SCALARS:
        return value, False
    if value is UNKNOWN:
        return None, True
    if kind is dict or (kind is not list and isinstance(value, Mapping)):
        known, unknown = {}, {}
        for k, v in value.items():
            known[k], u = _known_and_unknown(v)
            if u is not False:
                unknown[k] = u
        return known, unknown or False
    if kind is list or isinstance(value, tuple):
        known_items, unknown_items = [], []
        for v in value:
            k, u = _known_and_unknown(v)
            known_items.append(k)
            unknown_items.append(u)
        return known_items, (unknown_items if any(u is not False for u in unknown_items)
                             else False)
    if isinstance(value, Sensitive):
        return None, False
    return value, False


def _value_pair(before: Any, after: Any, before_sens: Iterable[tuple],
                after_sens: Iterable[tuple]) -> dict:
    before_s, after_s = tuple(before_sens), tuple(after_sens)
    if after_s:
        after_r = redact_for_json(after, after_s)
        after_known, after_unknown = known_part(after_r), unknown_tree(after_r)
    else:
        after_known, after_unknown = _known_and_unknown(after)
    return {
        "before": (known_part(redact_for_json(before, before_s)) if before_s
                   else _known_and_unknown(before)[0]),
        "after": after_known,
        "after_unknown": after_unknown,
        "before_sensitive": sensitive_tree(before_s),
        "after_sensitive": sensitive_tree(after_s),
    }


def _change_to_json(c: Change, internal: bool) -> dict:
    doc: dict = {
        "address": c.address,
        "kind": c.kind,
        "type": c.kind,               # Terraform's name for the same field
        "name": c.name,
        "provider_name": c.provider,
        "change": {
            "actions": c.action.json_actions,
            **_value_pair(c.before, c.after, c.before_sensitive, c.after_sensitive),
            "replace_paths": _paths_json(c.replace_paths),
        },
        "reasons": list(c.reasons),
    }
    if c.module:
        doc["module_address"] = c.module
    if c.index_key is not None:
        doc["index"] = c.index_key
    if c.action_reason:
        doc["action_reason"] = c.action_reason
    if c.deposed:
        doc["deposed"] = c.deposed          # Terraform's key for a deposed object's change
    if internal:
        doc["dependencies"] = list(c.dependencies)
        doc["prior_id"] = c.prior_id
        doc["changed_paths"] = _paths_json(c.changed_paths)
    return doc


def _output_to_json(o: OutputChange) -> dict:
    # A sensitive output is sensitive as a whole: the root path.
    sens = ((),) if o.sensitive else ()
    return {"actions": o.action.json_actions,
            **_value_pair(o.before, o.after, sens, sens)}


def plan_to_json(plan: Plan, *, include_internal: bool = False) -> dict:
    """The JSON document of `plan` (plain dicts/lists, keys sorted)."""
    with paused_gc():       # bounded and I/O-free, a few dicts per attribute (mlform._gc)
        return _sorted_keys(plan_document(plan, include_internal=include_internal))


def plan_document(plan: Plan, *, include_internal: bool = False) -> dict:
    """`plan_to_json` with its dicts' keys in building order: for a caller that sorts them
    itself (`json.dumps(..., sort_keys=True)` writes the same bytes either way), such as
    the audit log's plan digest."""
    s = plan.summary
    doc: dict = {
        "format_version": FORMAT_VERSION,
        "mlform_version": __version__,
        "mode": plan.mode,
        "env": plan.env,
        "resource_changes": [_change_to_json(c, include_internal) for c in plan.changes],
        "resource_drift": [_change_to_json(c, include_internal) for c in plan.drift],
        "output_changes": {o.name: _output_to_json(o) for o in plan.output_changes},
        "summary": {"add": s.add, "change": s.change, "destroy": s.destroy},
        "diagnostics": [d.to_json() for d in plan.diagnostics],
        "errored": plan.errored,
    }
    if plan.policies:  # present when the stack declares policies (mlform.policy)
        doc["policies"] = [r.to_json() for r in plan.policies]
    if plan.cost is not None and plan.cost.resources:  # present when something is priced
        doc["cost"] = plan.cost.to_json()
    if include_internal:
        doc.update({
            "variables": plain(dict(plan.variables)),
            "sensitive_variables": dict(plan.sensitive_variables),
            "config_digest": plan.config_digest,
            "state_lineage": plan.state_lineage,
            "state_serial": plan.state_serial,
            "targets": list(plan.targets),
            "replace": list(plan.replace),
            "refreshed": known_part(plain(dict(plan.refreshed))),
        })
    return doc


# ---------------------------------------------------------------------------
# from JSON


def _change_from_json(doc: Mapping) -> Change:
    ch = doc["change"]
    return Change(
        address=doc["address"],
        kind=doc.get("kind", doc.get("type", "")),
        name=doc["name"],
        provider=doc.get("provider_name", ""),
        action=Action.from_json_actions(ch["actions"]),
        before=ch.get("before"),
        after=merge_unknown(ch.get("after"), ch.get("after_unknown", False)),
        module=doc.get("module_address", ""),
        index_key=doc.get("index"),
        replace_paths=_paths_tuple(ch.get("replace_paths")),
        action_reason=doc.get("action_reason", ""),
        reasons=tuple(doc.get("reasons", ())),
        before_sensitive=sensitive_paths(ch.get("before_sensitive", False)),
        after_sensitive=sensitive_paths(ch.get("after_sensitive", False)),
        dependencies=tuple(doc.get("dependencies", ())),
        prior_id=doc.get("prior_id"),
        changed_paths=_paths_tuple(doc.get("changed_paths")),
        deposed=doc.get("deposed", ""),
    )


def _output_from_json(name: str, doc: Mapping) -> OutputChange:
    return OutputChange(
        name=name,
        action=Action.from_json_actions(doc["actions"]),
        before=doc.get("before"),
        after=merge_unknown(doc.get("after"), doc.get("after_unknown", False)),
        sensitive=bool(doc.get("after_sensitive") or doc.get("before_sensitive")),
    )


def _diagnostic_from_json(doc: Mapping) -> Diagnostic:
    rng = doc.get("range")
    source = None
    if rng:
        start = rng.get("start", {})
        source = SourceRange(rng["filename"], start.get("line", 0), start.get("column", 0))
    return Diagnostic(doc["severity"], doc["summary"], doc.get("detail", ""), source,
                      doc.get("address"), doc.get("hint", ""))


def plan_from_json(doc: Mapping) -> Plan:
    """Rebuild a Plan from `plan_to_json` output (internal keys when present).

    Values at sensitive paths come back as None: the document never held them.
    """
    outputs = doc.get("output_changes", {})
    return Plan(
        changes=tuple(_change_from_json(c) for c in doc.get("resource_changes", ())),
        drift=tuple(_change_from_json(c) for c in doc.get("resource_drift", ())),
        output_changes=tuple(_output_from_json(n, outputs[n]) for n in sorted(outputs)),
        diagnostics=tuple(_diagnostic_from_json(d) for d in doc.get("diagnostics", ())),
        mode=doc.get("mode", "normal"),
        env=doc.get("env", "default"),
        targets=tuple(doc.get("targets", ())),
        replace=tuple(doc.get("replace", ())),
        state_lineage=doc.get("state_lineage", ""),
        state_serial=doc.get("state_serial", 0),
        config_digest=doc.get("config_digest", ""),
        variables=dict(doc.get("variables", {})),
        sensitive_variables=dict(doc.get("sensitive_variables", {})),
        refreshed=dict(doc.get("refreshed", {})),
        policies=tuple(PolicyResult.from_json(r) for r in doc.get("policies", ())),
        cost=CostReport.from_json(doc["cost"]) if doc.get("cost") else None,
    )
