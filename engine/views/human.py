"""Human-readable, Terraform-like text for plans, drift, diagnostics and
apply results.

Every function returns a string; the CLI decides where it goes.  Lines are
built as (text, style) segments: without colour they are joined as is (so
the plain bytes are exact and stable), with colour rich turns the styles into
ANSI codes.  No markup is parsed, so a value can never inject styling.
"""

from __future__ import annotations

import io
from typing import Any, Iterable

from mlform._gc import paused_gc
from mlform.plan.model import Action, Change, Plan
from mlform.views.cost import cost_text_lines
from mlform.views.policies import policy_text_lines
from mlform.views._lines import (
    SENSITIVE_TEXT, Line, align_outputs, change_lines, fmt, fmt_key, output_line, plain,
)

Segment = tuple[str, "str | None"]

_SYMBOL_STYLES = {
    "+": "green", "~": "yellow", "-": "red", "-/+": "red", "+/-": "green", "<=": "cyan",
}

# Legend entries in Terraform's order; only the symbols a plan uses are shown.
_LEGEND = (
    (Action.CREATE, "create"),
    (Action.UPDATE, "update in-place"),
    (Action.DELETE, "destroy"),
    (Action.DELETE_CREATE, "destroy and then create replacement"),
    (Action.CREATE_DELETE, "create replacement and then destroy"),
    (Action.READ, "read (data resources)"),
)

_HEADLINES = {
    Action.CREATE: "will be created",
    Action.READ: "will be read during apply",
    Action.UPDATE: "will be updated in-place",
    Action.DELETE_CREATE: "must be replaced",
    Action.CREATE_DELETE: "must be replaced",
    Action.DELETE: "will be destroyed",
    Action.NOOP: "has no changes",
}

_DRIFT_HEADLINES = {
    Action.DELETE: "has been deleted",
    Action.CREATE: "has been created",
}

_NO_CHANGES = {
    "normal": "No changes. Your infrastructure matches the configuration.",
    "destroy": "No changes. No objects need to be destroyed.",
    "refresh-only": "No changes. Your infrastructure still matches the configuration.",
}

_REFRESH_ONLY_NOTE = (
    "This is a refresh-only plan, so mlform will not take any actions to undo these. "
    "If you were expecting these changes then you can apply this plan to record the "
    "updated values in the mlform state without changing any remote objects."
)

_SEVERITY_STYLES = {"error": "bold red", "warning": "bold yellow"}


# ---------------------------------------------------------------------------
# output assembly


def _emit(lines: list[list[Segment] | str], color: bool) -> str:
    """The document; a line is its segments, or a str: the text of a line without
    styles (what a plan's attribute lines are when there is no colour to add)."""
    # Sections end with a blank separator; the document ends with one newline.
    while lines and not _line_text(lines[-1]):
        lines = lines[:-1]
    if not color:
        return "\n".join(map(_line_text, lines)) + "\n" if lines else ""
    # imported here: output that is not a terminal never needs rich (16 ms of imports)
    from rich.console import Console
    from rich.text import Text
    text = Text()
    for line in lines:
        if isinstance(line, str):
            text.append(line)
        else:
            for part, style in line:
                text.append(part, style=style or "")
        text.append("\n")
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, color_system="standard",
                      width=100_000, legacy_windows=False)
    console.print(text, end="", soft_wrap=True, highlight=False)
    return buf.getvalue()


def _line_text(line: list[Segment] | str) -> str:
    return line if isinstance(line, str) else "".join([text for text, _ in line])


def _plain_line(text: str = "", style: str | None = None) -> list[Segment]:
    return [(text, style)]


def _pad(depth: int, symbol: str) -> str:
    return " " * (3 + 4 * depth - len(symbol))


def _layout(line: Line) -> list[Segment]:
    """Terraform's indentation: the symbol right-aligned before the key column."""
    out: list[Segment] = [(_pad(line.depth, line.symbol), None),
                          (line.symbol, _SYMBOL_STYLES.get(line.symbol)),
                          (" " + line.text, None)]
    if line.note:
        out.append((" " + line.note, "bold"))
    return out


def _layout_text(line: Line) -> str:
    """`_layout(line)` without styles, as one string: a 10,000-resource plan has a
    hundred thousand of these lines, and nothing to colour when output is not a terminal."""
    depth, symbol, text, note = line
    if note:
        return f"{_pad(depth, symbol)}{symbol} {text} {note}"
    return f"{_pad(depth, symbol)}{symbol} {text}"


def _change_block(change: Change, headline: str, color: bool = True) -> list:
    name = f"{change.address} (deposed object {change.deposed})" if change.deposed \
        else change.address
    out: list = [_plain_line(f"  # {name} {headline}", "bold")]
    out += [_plain_line(f"  # ({reason})") for reason in change.reasons]
    out += map(_layout if color else _layout_text, change_lines(change))
    out.append(_plain_line())
    return out


def _drift_lines(plan: Plan, color: bool = True) -> list:
    out = [
        _plain_line("Note: Objects have changed outside of mlform", "bold"),
        _plain_line(),
        _plain_line("mlform detected the following changes made outside of mlform "
                    'since the last "mlform apply":'),
        _plain_line(),
    ]
    for change in plan.drift:
        out += _change_block(change, _DRIFT_HEADLINES.get(change.action, "has changed"), color)
    return out


def _legend(changes: list[Change]) -> list[list[Segment]]:
    used = {c.action for c in changes}
    out = [_plain_line("Resource actions are indicated with the following symbols:")]
    for action, label in _LEGEND:
        if action in used:
            out.append([(f"{action.symbol:>3}", _SYMBOL_STYLES[action.symbol]),
                        (f" {label}", None)])
    out.append(_plain_line())
    return out


def _outputs(plan: Plan) -> list[list[Segment]]:
    lines = [ln for o in plan.output_changes
             if (ln := output_line(o.name, o.action, o.before, o.after, o.sensitive))]
    if not lines:
        return []
    return ([_plain_line("Changes to Outputs:")]
            + [_layout(Line(0, ln.symbol, ln.text)) for ln in align_outputs(lines)]
            + [_plain_line()])


# ---------------------------------------------------------------------------
# public


def render_plan(plan: Plan, *, color: bool = False) -> str:
    """The whole plan as Terraform prints it."""
    # Bounded, I/O-free and allocation-heavy (a line object per attribute): the cyclic
    # collector's passes would walk them all for nothing (mlform._gc).
    with paused_gc():
        return _render_plan(plan, color)


def _render_plan(plan: Plan, color: bool) -> str:
    out: list = []
    if plan.drift:
        out += _drift_lines(plan, color)
    if plan.mode == "refresh-only":
        out += ([_plain_line(_REFRESH_ONLY_NOTE), _plain_line()] if plan.drift
                else [_plain_line(_NO_CHANGES["refresh-only"], "bold"), _plain_line()])
        out += _outputs(plan)
        return _emit(out, color)

    changes = [c for c in plan.changes if c.is_change]
    if changes:
        out += _legend(changes)
        out += [_plain_line("mlform will perform the following actions:"), _plain_line()]
        for change in changes:
            out += _change_block(change, _HEADLINES[change.action], color)
        s = plan.summary
        out += [_plain_line(f"Plan: {s.add} to add, {s.change} to change, "
                            f"{s.destroy} to destroy.", "bold"), _plain_line()]
    outputs = _outputs(plan)
    if not changes and not outputs:
        out += [_plain_line(_NO_CHANGES.get(plan.mode, _NO_CHANGES["normal"]), "bold"),
                _plain_line()]
    out += outputs
    if plan.cost is not None and plan.cost.resources and plan.mode != "refresh-only":
        out += [_plain_line(line) for line in cost_text_lines(plan.cost)] + [_plain_line()]
    if plan.policies:
        out += [_plain_line(line) for line in policy_text_lines(plan)] + [_plain_line()]
    if plan.errored:
        out += [_plain_line("The plan is incomplete because of errors.", "bold red"),
                _plain_line()]
    return _emit(out, color)


def render_drift(plan: Plan, *, color: bool = False) -> str:
    """Only the drift (for `mlform drift`)."""
    if not plan.drift:
        return _emit([_plain_line(_NO_CHANGES["refresh-only"], "bold")], color)
    return _emit(_drift_lines(plan, color), color)


def render_diagnostics(diags: Iterable, *, color: bool = False) -> str:
    """`error: <summary>` / `  at FILE:LINE:COL` / detail / `  hint: ...`, a
    blank line between diagnostics."""
    out: list[list[Segment]] = []
    for d in diags:
        if out:
            out.append(_plain_line())
        out.append([(f"{d.severity}:", _SEVERITY_STYLES.get(d.severity)),
                    (f" {d.summary}", "bold")])
        if d.source is not None:
            out.append(_plain_line(f"  at {d.source}"))
        if d.address:
            out.append(_plain_line(f"  with {d.address}"))
        out += [_plain_line(f"  {ln}" if ln else "") for ln in d.detail.splitlines()]
        if d.hint:
            out.append(_plain_line(f"  hint: {d.hint}", "dim" if color else None))
    return _emit(out, color)


def _unique(items: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set = set()
    return [x for x in items if not (x in seen or seen.add(x))]


def _output_value(value: Any, sensitive: bool) -> str:
    return SENSITIVE_TEXT if sensitive else fmt(plain(value))


def render_apply_summary(result: Any, *, color: bool = False) -> str:
    """`Apply complete! Resources: ...` (for a destroy, Terraform's `Destroy complete!
    Resources: N destroyed.`) and the outputs, or `Apply failed!` / `Destroy failed!`
    with each root cause once (outputs are not shown after a failure)."""
    if result.mode == "destroy":
        verb, counts = "Destroy", f"Resources: {result.destroyed} destroyed."
    else:
        verb, counts = "Apply", (f"Resources: {result.added} added, {result.changed} changed, "
                                 f"{result.destroyed} destroyed.")
    failed = _unique(tuple(f) for f in result.failed)
    if failed:
        out = [_plain_line(f"{verb} failed! {counts}", "bold red"), _plain_line()]
        for address, message, *more in failed:
            out.append([("error:", "bold red"), (f" {address}: {message}", None)])
            source, hint = (more + ["", ""])[:2]
            if source:
                out.append(_plain_line(f"  at {source}"))
            if hint:
                out.append(_plain_line(f"  hint: {hint}", "dim" if color else None))
        return _emit(out, color)
    out = [_plain_line(f"{verb} complete! {counts}", "bold green")]
    if result.outputs:
        out += [_plain_line(), _plain_line("Outputs:", "bold"), _plain_line()]
        names = sorted(result.outputs)
        width = max(len(fmt_key(n)) for n in names)
        for name in names:
            value, sensitive = result.outputs[name]
            out.append(_plain_line(f"{fmt_key(name).ljust(width)} = "
                                   f"{_output_value(value, sensitive)}"))
    return _emit(out, color)
