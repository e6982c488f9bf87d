"""An endpoint experiment's report as text: a terminal table, JSON and Markdown.

The figures come from `providers.kit.experiment_stats.summarize` (the CLI computes
them); these functions only lay them out and never print.  `report_json` is the
document behind ``--format json``; the HTML page is `views.experiment_html`.

A figure that cannot be known (no feedback yet, no latency captured) reads "–", never 0.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping
from typing import Any

__all__ = ["report_json", "render_human", "render_markdown", "rows", "columns", "verdict",
           "headline", "footnote", "TEXT_COLUMNS"]

DASH = "–"
_COLUMNS = ("variant", "role", "version", "weight", "requests", "share", "errors", "p50 ms",
            "p99 ms", "rewards", "reward mean", "95% CI", "P(best)")
#: Left-aligned columns; the others are figures, right-aligned.
TEXT_COLUMNS = ("variant", "role", "version", "95% CI")
AGREEMENT = "agrees with live"


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _count(value: Any) -> str:
    return f"{value:,}" if _real(value) else DASH


def _ms(value: Any) -> str:
    return f"{value:,.1f}" if _real(value) else DASH


def _mean(value: Any) -> str:
    return f"{value:.4f}" if _real(value) else DASH


def _percent(fraction: Any) -> str:
    return f"{100 * fraction:.1f}%" if _real(fraction) else DASH


def _declared(records: Mapping) -> list[Mapping]:
    return [v for v in records.get("variants") or () if isinstance(v, Mapping)]


def _versions(records: Mapping, name: str) -> str:
    versions = [v.get("version") for v in _declared(records) if v.get("name") == name]
    return ", ".join(str(v) for v in versions if v is not None) or DASH


def _weight(records: Mapping, name: str, role: str) -> str:
    if role == "shadow":
        return "shadow"
    weights = [v.get("weight") for v in _declared(records) if v.get("name") == name]
    numbers = [w for w in weights if _real(w)]
    return f"{sum(numbers):g}%" if numbers else DASH


def columns(summary: Mapping) -> tuple[str, ...]:
    """The table's columns: `AGREEMENT` only when a shadow was captured."""
    return _COLUMNS + ((AGREEMENT,) if summary.get("shadow") else ())


def rows(records: Mapping, summary: Mapping) -> list[dict]:
    """One dict of display strings per variant: the live ones in the summary's order
    (the control first), then the shadows, then declared variants nothing was seen of."""
    live = summary.get("variants") or {}
    shadow = summary.get("shadow") or {}
    roles = {v.get("name"): v.get("role") or "live" for v in _declared(records)}
    order = [(n, "live") for n in live] + [(n, "shadow") for n in shadow]
    order += [(n, r) for n, r in roles.items() if n not in live and n not in shadow]
    out = []
    for name, role in order:
        s = (shadow if role == "shadow" else live).get(name) or {}
        ci = s.get("reward_ci95")
        errors = _count(s.get("errors", 0))
        if s.get("requests"):
            errors += f" ({_percent(s.get('error_rate'))})"
        row = {
            "variant": str(name), "role": role, "version": _versions(records, name),
            "weight": _weight(records, name, role),
            "requests": _count(s.get("requests", 0)), "share": _percent(s.get("traffic_share")),
            "errors": errors, "p50 ms": _ms(s.get("latency_p50_ms")),
            "p99 ms": _ms(s.get("latency_p99_ms")),
            "rewards": _count(s.get("rewards")) if role == "live" else DASH,
            "reward mean": _mean(s.get("reward_mean")),
            "95% CI": f"[{_mean(ci[0])}, {_mean(ci[1])}]" if ci else DASH,
            "P(best)": _percent(s.get("prob_best")),
        }
        if summary.get("shadow"):
            row[AGREEMENT] = (f"{_percent(s.get('agreement'))} of {s.get('compared', 0):,}"
                              if role == "shadow" and s.get("compared") else DASH)
        out.append(row)
    return out


def headline(address: str, records: Mapping, summary: Mapping) -> str:
    experiment = records.get("experiment") or {}
    kind = experiment.get("type") or summary.get("experiment_type") or "split by weight"
    parts = [f"Experiment on {address}: {kind}"]
    reward = summary.get("reward") or {}
    if reward.get("kind") and kind != "shadow":
        parts.append(f"{reward['kind']} reward" + (" (inferred)" if reward.get("inferred") else ""))
    if experiment.get("sticky_key"):
        parts.append(f"sticky on {experiment['sticky_key']}")
    if kind == "shadow":
        parts.append(f"{experiment.get('shadow_percent', 100)}% of requests mirrored")
    if kind == "bandit" and experiment.get("floor_percent") is not None:
        parts.append(f"floor {experiment['floor_percent']:g}%")
    return ", ".join(parts) + "."


def _test_sentence(test: Mapping, alpha: float) -> str:
    pair = f"{test.get('variant')} vs the control {test.get('control')}"
    if not test.get("test"):
        return f"No test of {pair} yet: {test.get('reason') or 'not enough rewards'}."
    name = test["test"][0].upper() + test["test"][1:]
    p = test.get("p_value")
    if p is None:
        return f"{name}, {pair}: no p-value (the rewards do not vary)."
    diff = test.get("difference")
    change = (f"{test.get('variant')}'s reward mean is {'higher' if diff > 0 else 'lower'} "
              f"by {abs(diff):.4f}") if _real(diff) else ""
    if test.get("significant"):
        return f"{name}, {pair}: p = {p:.4g} < {alpha:g}: significant; {change}."
    return (f"{name}, {pair}: p = {p:.4g} ≥ {alpha:g}: not significant"
            + (f" ({change})." if change else "."))


def verdict(summary: Mapping) -> str:
    """The tests and their verdicts, one sentence each."""
    alpha = (summary.get("definitions") or {}).get("significance_level", 0.05)
    tests = summary.get("tests") or []
    if tests:
        return " ".join(_test_sentence(t, alpha) for t in tests)
    if summary.get("experiment_type") == "shadow":
        agreement = [f"{name} agrees with the live answer on {_percent(s.get('agreement'))} of "
                     f"{s.get('compared', 0):,} compared requests"
                     for name, s in (summary.get("shadow") or {}).items() if s.get("compared")]
        return ("A shadow is compared with the live answers, not tested: "
                + ("; ".join(agreement) if agreement else "no answers compared yet") + ".")
    return "No significance test: it needs two live variants."


def footnote(records: Mapping, summary: Mapping) -> str:
    """Where the figures come from, and what an error and the interval are."""
    rewards = sum(s.get("rewards") or 0 for s in (summary.get("variants") or {}).values())
    defs = summary.get("definitions") or {}
    text = f"From {summary.get('requests', 0):,} captured live requests and {rewards:,} rewards"
    if defs.get("error"):
        text += "; an error is an HTTP status >= 400"
    if rewards and defs.get("reward_ci95"):
        text += f"; 95% CI: {defs['reward_ci95']}"
    if records.get("served") is False:
        text += "; weights as declared (the server is not running)"
    return text + "."


def report_json(address: str, records: Mapping, summary: Mapping) -> dict:
    """The ``--format json`` document: the summary, the experiment and the variants."""
    return {"endpoint": address, "experiment": records.get("experiment"),
            "variants": records.get("variants"), "summary": dict(summary),
            "verdict": verdict(summary)}


def render_human(address: str, records: Mapping, summary: Mapping, *, color: bool = False) -> str:
    """A rich table; plain text (no ANSI codes) unless `color`."""
    from rich.box import SIMPLE_HEAD
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    heads = columns(summary)
    table = Table(box=SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  header_style="bold" if color else "")
    for column in heads:
        table.add_column(column, justify="left" if column in TEXT_COLUMNS else "right",
                         no_wrap=True)
    for row in rows(records, summary):
        table.add_row(*(Text(row[c]) for c in heads))    # Text: a cell is never parsed as markup
    buffer = io.StringIO()
    console = Console(file=buffer, width=240, force_terminal=color, no_color=not color,
                      color_system="standard" if color else None, highlight=False)
    console.print(Text(headline(address, records, summary), style="bold" if color else ""))
    console.print(table)
    console.print(Text(verdict(summary)), width=100)
    console.print(Text(footnote(records, summary), style="dim" if color else ""), width=100)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell (and in a paragraph)."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def render_markdown(address: str, records: Mapping, summary: Mapping) -> str:
    """A pull-request comment: the headline, a table with a column per variant (so it
    stays narrow however many figures there are), the tests' verdicts in one sentence
    each, and the probability that each variant is best."""
    table = rows(records, summary)
    figures = columns(summary)[1:]
    out = [f"### mlform experiment report: `{_cell(address)}`", "",
           _cell(headline(address, records, summary)), "",
           "| | " + " | ".join(f"`{_cell(r['variant'])}`" for r in table) + " |",
           "| --- | " + " | ".join("---:" for _ in table) + " |"]
    for figure in figures:
        out.append(f"| {_cell(figure)} | " + " | ".join(_cell(r[figure]) for r in table) + " |")
    out += ["", f"**Test:** {_cell(verdict(summary))}", ""]
    best = [f"`{_cell(r['variant'])}` {r['P(best)']}" for r in table if r["P(best)"] != DASH]
    if best:
        out += [f"**P(best):** {', '.join(best)}", ""]
    out += [f"<sub>{_cell(footnote(records, summary))}</sub>", ""]
    return "\n".join(out)
