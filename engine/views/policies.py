"""The policy checks section of a rendered plan (human and Markdown).

Only what needs a reader's eye is listed (failures, and checks that cannot be decided
until apply); passes are counted.  The diagnostics say the same with the trace of
values; this section is the summary a reviewer reads under the plan.
"""

from __future__ import annotations

from mlform.plan.model import Plan, PolicyResult

_MARKS = {"mandatory": "✗", "advisory": "!"}


def policy_counts(plan: Plan) -> str:
    """`3 passed, 1 advisory failed, 2 mandatory failed` (only the counts that are not 0)."""
    results = plan.policies
    counts = [
        (sum(r.passed is True for r in results), "passed"),
        (sum(r.passed is False and r.level == "advisory" for r in results), "advisory failed"),
        (sum(r.passed is False and r.level == "mandatory" for r in results), "mandatory failed"),
        (sum(r.passed is None for r in results), "undecided until apply"),
    ]
    return ", ".join(f"{n} {what}" for n, what in counts if n) or "none checked"


def _listed(plan: Plan) -> list[PolicyResult]:
    return [r for r in plan.policies if r.passed is not True]


def policy_text_lines(plan: Plan) -> list[str]:
    """Plain lines for the human plan; [] when the stack declares no policy."""
    if not plan.policies:
        return []
    lines = [f"Policy checks: {policy_counts(plan)}."]
    for r in _listed(plan):
        mark = "?" if r.passed is None else _MARKS.get(r.level, "!")
        where = f" {r.address}" if r.address else ""
        lines.append(f"  {mark} {r.policy} ({r.level}){where}: {r.message}")
    return lines


def policy_markdown_lines(plan: Plan, cell) -> list[str]:
    """A Markdown section; `cell` escapes text for a table cell."""
    if not plan.policies:
        return []
    out = [f"#### Policy checks: {policy_counts(plan)}", ""]
    listed = _listed(plan)
    if listed:
        out += ["| result | policy | level | resource | message |", "| --- | --- | --- | --- | --- |"]
        for r in listed:
            # words, as the rest of the comment: they read the same in every client
            mark = "undecided" if r.passed is None else (
                "**failed**" if r.level == "mandatory" else "warning")
            out.append(f"| {mark} | `{cell(r.policy)}` | {r.level} | "
                       f"{f'`{cell(r.address)}`' if r.address else '(plan)'} | {cell(r.message)} |")
        out.append("")
    return out
