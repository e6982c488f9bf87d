"""Policy as code: `policy` blocks checked against a plan once it is computed.

A policy's `condition` is an expression in the module's own scope (`var`, `local`,
`env.name`, resources...) plus two roots this module adds:

* `plan`: the whole plan: `totals` (GPUs requested, instances by type, cost),
  `summary`, `changes`, `env`, `mode`;
* `change`: one resource change: `address`, `kind`, `action`, `before`, `after`,
  `tags`, `settings`, `cost`...  A condition that refers to `change` is checked once
  per resource change its `kinds`/`actions` filters let through; one that does not is
  checked once for the plan.

The condition must be true.  A failing `mandatory` policy is an error diagnostic (the
plan cannot be applied, `plan` and `apply` exit 1); a failing `advisory` one a
warning.  A condition that depends on values known only after apply cannot be decided
at plan time: it is reported as undecided (a warning), as Terraform defers such
preconditions.  Checking is pure: it reads the plan, its cost report and the
evaluated scopes the planner left; it runs after the planner and cost estimate
(`mlform.operations.plan`), so totals include cost.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Iterable, Mapping

from mlform.config.model import POLICY_LEVELS, Policy
from mlform.diagnostics import Diagnostic, DiagnosticError, error, warning
from mlform.expr import UNKNOWN, ExprError, Scope, Sensitive
from mlform.expr.values import contains_unknown, get_path, set_path
from mlform.plan.model import Action, Change, Plan, PolicyResult
from mlform.specs import did_you_mean

#: the attributes of `change`, of `plan`, of `plan.totals` and of `plan.totals.cost`:
#: a reference to any other is a located error before anything is evaluated
CHANGE_KEYS = ("address", "kind", "name", "module", "provider", "action", "actions",
               "before", "after", "tags", "settings", "cost", "reasons")
PLAN_KEYS = ("totals", "summary", "changes", "env", "mode")
TOTALS_KEYS = ("gpus", "gpus_before", "instances", "cost", "resources")
COST_KEYS = ("hourly", "monthly", "monthly_max", "monthly_before", "monthly_delta",
             "monthly_delta_max", "per_run", "unknown")
SUMMARY_KEYS = ("add", "change", "destroy")
_NESTED = {("plan",): PLAN_KEYS, ("plan", "totals"): TOTALS_KEYS,
           ("plan", "totals", "cost"): COST_KEYS, ("plan", "summary"): SUMMARY_KEYS,
           ("change",): CHANGE_KEYS}

#: `Diagnostic.code` of a failed mandatory policy (reconcile counts them)
POLICY_FAILED = "policy_failed"

_ACTION_NAMES = {
    Action.NOOP: "no-op", Action.READ: "read", Action.CREATE: "create",
    Action.UPDATE: "update", Action.DELETE: "delete", Action.DELETE_CREATE: "replace",
    Action.CREATE_DELETE: "replace",
}
_DEFAULT_ACTIONS = ("create", "update", "replace", "delete")
_TRACE_LINES = 8


def policy_name(module_path: str, name: str) -> str:
    return f"{module_path}.policy.{name}" if module_path else f"policy.{name}"


def declared(graph) -> list[tuple[str, Policy]]:
    """Every policy of the stack and its modules, as (module path, policy)."""
    return [(path, p) for path, module in sorted(graph.modules.items())
            for p in module.policies.values()]


# ------------------------------------------------------------------ static checks

def static_diagnostics(graph) -> list[Diagnostic]:
    """Problems visible without evaluating: references to attributes `change` or `plan`
    do not have, `change` where there is no change.  `mlform validate` reports them;
    `check_policies` skips a policy that has any."""
    diags: list[Diagnostic] = []
    for path, policy in declared(graph):
        diags.extend(_static(path, policy))
    return diags


def _static(path: str, policy: Policy) -> list[Diagnostic]:
    name = policy_name(path, policy.name)
    diags = []
    per_change = _per_change(policy)
    for attr, expr in _expressions(policy):
        for ref in expr.references:
            parts = tuple(str(p) for p in ref.parts)
            if parts[0] == "change" and (attr in ("enabled", "level") or
                                         (attr == "message" and not per_change)):
                diags.append(error(
                    f'{name}: "change" cannot be used in {attr}', source=ref.source,
                    detail="There is one change per check only where the condition refers "
                           "to change; enabled and level are decided once per policy.",
                    hint="Refer to change in the condition (and then in the message)."))
                continue
            for depth in range(1, len(parts)):
                allowed = _NESTED.get(parts[:depth])
                if allowed is None:
                    break
                if parts[depth] not in allowed:
                    where = ".".join(parts[:depth])
                    diags.append(error(
                        f'{name}: {where} has no attribute "{parts[depth]}"', source=ref.source,
                        detail=f"{where} has: {', '.join(allowed)}.",
                        hint=did_you_mean(parts[depth], allowed)
                        or "See docs/gitops.md, Policies, for what a policy can read."))
                    break
    return diags


def _expressions(policy: Policy) -> Iterable[tuple[str, Any]]:
    for attr in ("condition", "message", "enabled", "level"):
        expr = getattr(policy, attr)
        if expr is not None:
            yield attr, expr


def _per_change(policy: Policy) -> bool:
    return any(ref.parts and ref.parts[0] == "change" for ref in policy.condition.references)


# ------------------------------------------------------------------ checking

def check_policies(plan: Plan, graph, evaluator) -> Plan:
    """`plan` with every declared policy's verdicts and the diagnostics they raise.

    `evaluator` is the planner's (`mlform.plan.evaluate.Evaluator`): its module scopes
    hold what the walk evaluated.  Plans that already failed, and refresh-only plans
    (nothing changes), are returned unchecked.
    """
    policies = declared(graph)
    if not policies or plan.errored or plan.mode == "refresh-only":
        return plan
    _evaluate_variables(graph, evaluator, {path for path, _ in policies})
    scopes: Mapping[str, Scope] = evaluator.scopes
    view = PlanView(plan)
    results: list[PolicyResult] = []
    diags: list[Diagnostic] = []
    for path, policy in policies:
        problems = _static(path, policy)
        if problems:
            diags.extend(problems)
            continue
        scope = scopes.get(path)
        if scope is None:  # a module the walk did not reach (--target): nothing to check
            continue
        checked, found = _check(path, policy, scope.child(plan=view.plan), view)
        results.extend(checked)
        diags.extend(found)
    return replace(plan, policies=tuple(results), diagnostics=(*plan.diagnostics, *diags))


def _evaluate_variables(graph, evaluator, modules: set[str]) -> None:
    """Evaluate the variables and locals of the policies' modules that the walk left out
    (a destroy plan walks no configuration).  One that cannot be evaluated stays unset:
    the policy that reads it reports it."""
    from mlform.graph import NODE_LOCAL, NODE_VARIABLE
    for node in graph.topological():
        if node.type not in (NODE_VARIABLE, NODE_LOCAL) or node.module not in modules:
            continue
        table = evaluator.roots[node.module]["var" if node.type == NODE_VARIABLE else "local"]
        if node.name in table:
            continue
        try:
            evaluator.evaluate_node(node)
        except DiagnosticError:
            continue


def _check(path: str, policy: Policy, scope: Scope,
           view: "PlanView") -> tuple[list[PolicyResult], list[Diagnostic]]:
    name = policy_name(path, policy.name)
    try:
        level = _level(policy, scope, name)
        if policy.enabled is not None and _enabled(policy, scope, name) is False:
            return [], []
    except _Broken as exc:
        return [], [exc.diagnostic]
    if not _per_change(policy):
        return _verdict(name, level, policy, scope, "")
    results, diags = [], []
    wanted = policy.actions or _DEFAULT_ACTIONS
    for change, value in view.changes:
        if policy.kinds and change.kind not in policy.kinds:
            continue
        if _ACTION_NAMES[change.action] not in wanted:
            continue
        r, d = _verdict(name, level, policy, scope.child(change=value), change.address)
        results.extend(r)
        diags.extend(d)
    return results, diags


class _Broken(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic


def _evaluate(expr, scope: Scope, name: str, address: str = "") -> Any:
    try:
        value = expr.evaluate(scope)
    except ExprError as exc:
        d = exc.diagnostic()
        where = f" for {address}" if address else ""
        raise _Broken(error(
            f"{name} could not be evaluated{where}: {d.summary}", d.detail,
            source=d.source or expr.source, address=address or None,
            hint="Values that only some resources have can be read with try(), e.g. "
                 "try(change.after.settings.auth, null).")) from None
    return value.value if isinstance(value, Sensitive) else value


def _level(policy: Policy, scope: Scope, name: str) -> str:
    if policy.level is None:
        return "mandatory"
    level = _evaluate(policy.level, scope, name)
    if level not in POLICY_LEVELS:
        raise _Broken(error(f"{name}: level must be \"advisory\" or \"mandatory\"",
                            f"Got {level!r}.", source=policy.level.source))
    return level


def _enabled(policy: Policy, scope: Scope, name: str) -> bool | None:
    value = _evaluate(policy.enabled, scope, name)
    if value is UNKNOWN:
        return None
    if not isinstance(value, bool):
        raise _Broken(error(f"{name}: enabled must be true or false", f"Got {value!r}.",
                            source=policy.enabled.source))
    return value


def _verdict(name: str, level: str, policy: Policy, scope: Scope,
             address: str) -> tuple[list[PolicyResult], list[Diagnostic]]:
    try:
        value = _evaluate(policy.condition, scope, name, address)
    except _Broken as exc:
        return [PolicyResult(name, level, False, address, exc.diagnostic.summary)], \
            [exc.diagnostic]
    source = policy.condition.source
    target = f" for {address}" if address else ""
    if contains_unknown(value):
        message = "depends on values known only after apply"
        return [PolicyResult(name, level, None, address, message)], [warning(
            f"{name} cannot be decided{target} until apply", f"The condition {message}.",
            source=source, address=address or None,
            hint="It is checked again by the next plan, once those values are known.")]
    if not isinstance(value, bool):
        d = error(f"{name}: the condition must be true or false{target}",
                  f"Got {_shown(value)}.", source=source, address=address or None,
                  hint="Compare values (==, <=, contains(...)) to make a condition.")
        return [PolicyResult(name, level, False, address, d.summary)], [d]
    if value:
        return [PolicyResult(name, level, True, address)], []
    message = _message(policy, scope, name)
    detail = "\n".join([message, *_trace(policy, scope)])
    if level == "mandatory":
        d = error(f"Policy {name} failed{target}", detail, source=policy.source,
                  address=address or None, code=POLICY_FAILED,
                  hint="A mandatory policy: change the spec (or the policy) and plan again.")
    else:
        d = warning(f"Advisory policy {name} failed{target}", detail, source=policy.source,
                    address=address or None)
    return [PolicyResult(name, level, False, address, message)], [d]


def _message(policy: Policy, scope: Scope, name: str) -> str:
    if policy.message is not None:
        try:
            value = policy.message.evaluate(scope)
        except ExprError:
            value = None
        if isinstance(value, Sensitive):
            return "(the message holds a sensitive value)"
        if isinstance(value, str) and not contains_unknown(value):
            return value
    return policy.description or f"The condition {policy.condition.source_text()} is false."


def _trace(policy: Policy, scope: Scope) -> list[str]:
    """`ref = value` for what the condition read from change and plan: the values that
    made it fail, as Sentinel's trace shows them."""
    lines, seen = [], set()
    for ref in policy.condition.references:
        text = str(ref)
        if ref.parts[0] not in ("change", "plan", "var") or text in seen:
            continue
        seen.add(text)
        try:
            value = scope.lookup(str(ref.parts[0]))
            for part in ref.parts[1:]:
                value = value.value if isinstance(value, Sensitive) else value
                value = value[part] if isinstance(value, (dict, list)) else None
        except (ExprError, KeyError, IndexError, TypeError):
            continue
        lines.append(f"  {text} = {_shown(value)}")
        if len(lines) == _TRACE_LINES:
            break
    return lines


def _shown(value: Any) -> str:
    if isinstance(value, Sensitive):
        return "(sensitive value)"
    if value is UNKNOWN:
        return "(known after apply)"
    text = json.dumps(_printable(value), sort_keys=True, ensure_ascii=False)
    return text if len(text) <= 200 else text[:197] + "..."


def _printable(value: Any) -> Any:
    if isinstance(value, Sensitive):
        return "(sensitive value)"
    if value is UNKNOWN:
        return "(known after apply)"
    if isinstance(value, dict):
        return {str(k): _printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable(v) for v in value]
    return value


# ------------------------------------------------------------------ what policies read

class PlanView:
    """The `plan` and `change` values policies read, built once per plan."""

    def __init__(self, plan: Plan) -> None:
        report = plan.cost.to_json() if plan.cost is not None else {}
        costs = {r.get("address"): r for r in report.get("resources", ())}
        self.changes: list[tuple[Change, dict]] = [
            (c, _change_value(c, costs.get(c.address))) for c in plan.changes
            if not c.deposed]
        s = plan.summary
        self.plan = {
            "totals": _totals(report.get("total") or {}, [v for _, v in self.changes]),
            "summary": {"add": s.add, "change": s.change, "destroy": s.destroy},
            "changes": [v for _, v in self.changes],
            "env": plan.env,
            "mode": plan.mode,
        }


def _change_value(c: Change, cost: Any) -> dict:
    before = _marked(c.before, c.before_sensitive)
    after = _marked(c.after, c.after_sensitive)
    current = after if after is not None else before
    return {
        "address": c.address, "kind": c.kind, "name": c.name, "module": c.module,
        "provider": c.provider, "action": _ACTION_NAMES[c.action],
        "actions": list(c.action.json_actions), "before": before, "after": after,
        "tags": (current or {}).get("tags") or {}, "settings": (current or {}).get("settings") or {},
        "cost": cost, "reasons": list(c.reasons),
    }


def _marked(value: Mapping | None, paths: tuple) -> dict | None:
    """The attributes with each sensitive path wrapped, so no policy message or trace can
    print them in clear."""
    if value is None:
        return None
    out = dict(value)
    for path in paths:
        out = set_path(out, tuple(path), Sensitive(get_path(out, tuple(path))))
    return out


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _gpus(attrs: Mapping | None) -> int:
    if not attrs:
        return 0
    return _count(attrs.get("gpus_per_node")) * _count(attrs.get("nodes", 1))


def _instances(kind: str, attrs: Mapping | None) -> tuple[Any, int]:
    if not attrs:
        return None, 0
    if kind == "endpoint":
        scaling = attrs.get("autoscaling")
        n = _count(scaling.get("max")) if isinstance(scaling, dict) else _count(
            attrs.get("replicas", 1))
        return attrs.get("instance_type"), n
    if kind == "training_cluster":
        return attrs.get("instance_type"), _count(attrs.get("nodes", 1))
    return None, 0


def _totals(total: Mapping, values: list[dict]) -> dict:
    gpus = gpus_before = resources = 0
    instances: dict[str, int] = {}
    for v in values:
        after = v["after"] if v["action"] != "delete" else None
        if v["kind"] == "training_cluster":
            gpus += _gpus(after)
            gpus_before += _gpus(v["before"])
        itype, n = _instances(v["kind"], after)
        if isinstance(itype, str) and n:
            instances[itype] = instances.get(itype, 0) + n
        resources += after is not None
    cost = {
        "hourly": total.get("hourly_after") or 0.0,
        "monthly": total.get("monthly_after_min") or 0.0,
        "monthly_max": total.get("monthly_after_max") or 0.0,
        "monthly_before": total.get("monthly_before") or 0.0,
        "monthly_delta": total.get("monthly_delta_min") or 0.0,
        "monthly_delta_max": total.get("monthly_delta_max") or 0.0,
        "per_run": total.get("per_run_after") or 0.0,
        "unknown": list(total.get("unknown") or ()),
    }
    return {"gpus": gpus, "gpus_before": gpus_before, "instances": instances, "cost": cost,
            "resources": resources}


__all__ = ["check_policies", "static_diagnostics", "declared", "PlanView", "POLICY_FAILED",
           "CHANGE_KEYS", "PLAN_KEYS", "TOTALS_KEYS", "COST_KEYS"]
