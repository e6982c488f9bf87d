"""A plan as a pull-request comment (GitHub-flavoured Markdown).

A title with the summary, a table of changes, then one collapsible
```` ```diff ```` block per resource with the symbol in the first column so
the forge colours `+`/`-` lines.  Same lines as the human view, so sensitive
values are redacted the same way.
"""

from __future__ import annotations

import html
import re

from mlform.plan.model import Action, Change, Plan
from mlform.views._lines import Line, align_outputs, change_lines, output_line
from mlform.views.cost import cost_markdown_lines
from mlform.views.policies import policy_markdown_lines

# Plain words, no symbols or emoji: they read the same in every client.
_ACTION_WORDS = {
    Action.NOOP: "no-op",
    Action.CREATE: "create",
    Action.READ: "read",
    Action.UPDATE: "update",
    Action.DELETE_CREATE: "replace",
    Action.CREATE_DELETE: "replace",
    Action.DELETE: "destroy",
}

_DRIFT_WORDS = {Action.DELETE: "deleted", Action.CREATE: "created"}

_NO_CHANGES = {
    "normal": "No changes. Your infrastructure matches the configuration.",
    "destroy": "No changes. No objects need to be destroyed.",
    "refresh-only": "No changes. Your infrastructure still matches the configuration.",
}

_TITLES = {
    "normal": "mlform plan",
    "destroy": "mlform destroy plan",
    "refresh-only": "mlform refresh-only plan",
}


def _cell(text: str) -> str:
    """Text safe inside a table cell."""
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def _diff_line(line: Line) -> str:
    # Symbol in column 0 (the diff highlighter keys on it), then the nesting.
    text = f"{line.symbol:<3} {'    ' * line.depth}{line.text}"
    if line.note:
        text += f" {line.note}"
    return text.rstrip()


def _fence(body: str) -> str:
    """A code fence longer than any backtick run in `body`."""
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    return "`" * max(3, longest + 1)


def _diff_block(lines: list[Line]) -> list[str]:
    body = "\n".join(_diff_line(ln) for ln in lines)
    fence = _fence(body)
    return [f"{fence}diff", body, fence]


def _name(change: Change) -> str:
    return f"{change.address} (deposed object {change.deposed})" if change.deposed \
        else change.address


def _details(change: Change, label: str) -> list[str]:
    summary = html.escape(f"{_name(change)} ({label})")
    out = [f"<details><summary>{summary}</summary>", ""]
    out += [f"> {_cell(reason)}" for reason in change.reasons]
    if change.reasons:
        out.append("")
    out += _diff_block(change_lines(change))
    return out + ["", "</details>", ""]


def _reason(change: Change) -> str:
    parts = list(change.reasons)
    if change.replace_paths:
        forced = ", ".join(".".join(str(s) for s in p) for p in change.replace_paths)
        if f"forces replacement: {forced}" not in parts:   # the planner may have said it
            parts.append(f"forces replacement: {forced}")
    return "; ".join(parts)


def _changes_section(changes: list[Change]) -> list[str]:
    out = ["| Action | Resource | Reason |", "| --- | --- | --- |"]
    out += [f"| {_ACTION_WORDS[c.action]} | `{_cell(_name(c))}` | {_cell(_reason(c))} |"
            for c in changes]
    out.append("")
    for c in changes:
        out += _details(c, _ACTION_WORDS[c.action])
    return out


def _drift_section(plan: Plan) -> list[str]:
    out = ["#### Objects changed outside of mlform", ""]
    for c in plan.drift:
        out += _details(c, _DRIFT_WORDS.get(c.action, "drifted"))
    return out


def _outputs_section(plan: Plan) -> list[str]:
    lines = [ln for o in plan.output_changes
             if (ln := output_line(o.name, o.action, o.before, o.after, o.sensitive))]
    if not lines:
        return []
    return ["#### Changes to outputs", "", *_diff_block(
        [Line(0, ln.symbol, ln.text) for ln in align_outputs(lines)]), ""]


def _diagnostics_section(plan: Plan) -> list[str]:
    if not plan.diagnostics:
        return []
    out = ["#### Diagnostics", ""]
    for d in plan.diagnostics:
        where = f" (at `{_cell(str(d.source))}`)" if d.source else ""
        out.append(f"- **{d.severity}**: {_cell(d.summary)}{where}")
        if d.detail:
            out.append(f"  {_cell(d.detail)}")
        if d.hint:
            out.append(f"  hint: {_cell(d.hint)}")
    return out + [""]


def render_plan_markdown(plan: Plan) -> str:
    """The plan as a pull-request comment."""
    title = f"### {_TITLES.get(plan.mode, 'mlform plan')} (env `{_cell(plan.env)}`)"
    changes = [c for c in plan.changes if c.is_change]
    out: list[str]
    if plan.mode == "refresh-only":
        out = [title, "", f"{len(plan.drift)} resource(s) changed outside of mlform."
               if plan.drift else _NO_CHANGES["refresh-only"], ""]
    elif changes:
        s = plan.summary
        out = [f"{title}: {s.add} to add, {s.change} to change, {s.destroy} to destroy", ""]
        out += _changes_section(changes)
    else:
        out = [title, "", _NO_CHANGES.get(plan.mode, _NO_CHANGES["normal"]), ""]
    if plan.drift:
        out += _drift_section(plan)
    out += _outputs_section(plan)
    out += cost_markdown_lines(plan.cost, _cell)
    out += policy_markdown_lines(plan, _cell)
    out += _diagnostics_section(plan)
    return "\n".join(out).rstrip("\n") + "\n"
