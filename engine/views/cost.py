"""The cost section of a rendered plan (human and Markdown) and `mlform cost`'s breakdown.

Money is USD as the price tables give it; always-on resources show per hour and per
month (730 hours), runs show per run; an autoscaling range shows as min–max.  A cost
that cannot be known reads "unknown (why)", never $0.  The JSON section is
`CostReport.to_json` (the plan codec writes it).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Callable

from mlform.cost import CostReport, ResourceCost

__all__ = ["money", "cost_text_lines", "cost_markdown_lines", "state_cost_lines"]

_DASH = "–"
_CENT = Decimal("0.01")


def money(value: float | None, *, signed: bool = False) -> str:
    """`$1,234.56`; sub-dollar prices keep their digits (`$0.115`); None is `unknown`."""
    if value is None:
        return "unknown"
    sign = ("+" if value > 0 else "-" if value < 0 else "") if signed else (
        "-" if value < 0 else "")
    amount = Decimal(repr(abs(value)))   # repr: the shortest decimal, so 1.845 rounds up
    text = f"{amount.quantize(_CENT, ROUND_HALF_UP):,.2f}"
    if amount < 1 and amount.quantize(_CENT) != amount.quantize(Decimal("0.0001")):
        text = f"{amount.quantize(Decimal('0.0001'), ROUND_HALF_UP):.4f}".rstrip("0")
    return f"{sign}${text}"


def _range(low: float | None, high: float | None, *, signed: bool = False) -> str:
    if low is None or high is None:
        return "unknown"
    if round(low, 4) == round(high, 4):
        return money(high, signed=signed)
    return f"{money(low, signed=signed)}{_DASH}{money(high, signed=signed)}"


def _what(r: ResourceCost) -> str:
    low, high = r.instances
    count = str(high) if low == high else f"{low}{_DASH}{high}"
    unit = " nodes" if r.per_run and high != 1 else (" node" if r.per_run else "")
    return f"{r.instance_type or '?'} × {count}{unit}"


def _duration(seconds: float | None, source: str) -> str:
    if seconds is None:
        return ""
    minutes = seconds / 60
    text = f"{minutes / 60:g} h" if minutes >= 60 else f"{minutes:g} min"
    how = {"measured": "last run took", "max_runtime": "at most"}.get(source, "")
    return f"{how} {text}".strip()


def _hourly(r: ResourceCost) -> tuple[str, str, str]:
    """(per hour, per month, monthly change) of an always-on resource."""
    after, delta = r.after.hourly, r.monthly_delta
    monthly = r.monthly_after
    return (_range(*(after or (None, None))) + "/h",
            _range(*(monthly or (None, None))) + "/mo",
            _range(*(delta or (None, None)), signed=True) + "/mo")


def _resource_text(r: ResourceCost) -> str:
    if r.unknown is not None:
        return f"unknown ({r.unknown})"
    if r.per_run:
        detail = _duration(r.after.run_seconds, r.after.duration_source)
        before = r.before.per_run
        change = ("" if before is None or round(before, 4) == round(r.after.per_run or 0, 4)
                  or not before else f", was {money(before)}")
        runs = "; runs in this apply" if r.will_run else ""
        return (f"{money(r.after.per_run)} per run"
                f"{f' ({detail})' if detail else ''}{change}{runs}")
    hourly, monthly, delta = _hourly(r)
    return f"{hourly}, {monthly} ({delta})"


def _total_text(report: CostReport, *, delta: bool = True) -> str:
    t = report.total
    parts = [f"{_range(t.hourly_after_min, t.hourly_after)}/h",
             f"{_range(t.monthly_after_min, t.monthly_after_max)}/mo"]
    if delta:
        parts.append(f"change {_range(t.monthly_delta_min, t.monthly_delta_max, signed=True)}/mo"
                     f" (now {money(t.monthly_before)}/mo)")
    if any(r.per_run for r in report.resources):
        parts.append(f"{money(t.per_run_after)} per run of every pipeline"
                     + (f", {money(t.per_run_planned)} for the runs this apply starts"
                        if delta and t.per_run_planned else ""))
    text = ", ".join(parts)
    if t.unknown:
        text += f"; unknown: {', '.join(t.unknown)} (not in the total)"
    return text


def _sources(report: CostReport) -> str:
    return "; ".join(f"{p.provider}: {p.source}" + (f" ({p.date})" if p.date else "")
                     for p in report.prices)


def cost_text_lines(report: CostReport | None) -> list[str]:
    """Plain lines for the human plan; [] when nothing in the plan is priced."""
    if report is None or not report.resources:
        return []
    width = max(len(r.address) for r in report.resources)
    lines = [f"Cost estimate ({report.currency}, on demand; a month is 730 h):"]
    for r in report.resources:
        lines.append(f"  {r.address.ljust(width)}  {_what(r)}: {_resource_text(r)}")
    lines.append(f"  Total: {_total_text(report)}")
    if report.prices:
        lines.append(f"  Prices: {_sources(report)}")
    return lines


def state_cost_lines(report: CostReport) -> list[str]:
    """`mlform cost`: what the current state costs, per resource and in total."""
    if not report.resources:
        return ["Nothing in the state is priced (no provider prices its resources)."]
    width = max(len(r.address) for r in report.resources)
    lines = [f"Cost of the current state ({report.currency}, on demand; a month is 730 h):"]
    for r in report.resources:
        if r.unknown is not None:
            text = f"unknown ({r.unknown})"
        elif r.per_run:
            detail = _duration(r.after.run_seconds, r.after.duration_source)
            text = f"{money(r.after.per_run)} per run" + (f" ({detail})" if detail else "")
        else:
            hourly, monthly, _ = _hourly(r)
            text = f"{hourly}, {monthly}"
        lines.append(f"  {r.address.ljust(width)}  {_what(r)}: {text}")
    lines.append(f"  Total: {_total_text(report, delta=False)}")
    if report.prices:
        lines.append(f"  Prices: {_sources(report)}")
    return lines


def cost_markdown_lines(report: CostReport | None, cell: Callable[[str], str]) -> list[str]:
    """A Markdown table for the plan comment; `cell` escapes text for a table cell."""
    if report is None or not report.resources:
        return []
    t = report.total
    out = [f"#### Cost estimate ({report.currency})", "",
           "| resource | instances | hourly | monthly | monthly change | per run |",
           "| --- | --- | --- | --- | --- | --- |"]
    for r in report.resources:
        if r.unknown is not None:
            figures = f"unknown ({cell(r.unknown)}) | | | "
        elif r.per_run:
            detail = _duration(r.after.run_seconds, r.after.duration_source)
            figures = (f" | | | {money(r.after.per_run)}"
                       + (f" ({cell(detail)})" if detail else ""))
        else:
            hourly, monthly, delta = _hourly(r)
            figures = f"{hourly} | {monthly} | {delta} | "
        out.append(f"| `{cell(r.address)}` | {cell(_what(r))} | {figures} |")
    runs = money(t.per_run_after) if any(r.per_run for r in report.resources) else ""
    out.append(f"| **total** | | {_range(t.hourly_after_min, t.hourly_after)}/h | "
               f"{_range(t.monthly_after_min, t.monthly_after_max)}/mo | "
               f"{_range(t.monthly_delta_min, t.monthly_delta_max, signed=True)}/mo | {runs} |")
    out.append("")
    if t.unknown:
        out += [f"Cost unknown for {', '.join(f'`{cell(a)}`' for a in t.unknown)} "
                "(not in the total).", ""]
    if report.prices:
        out += [f"Prices: {cell(_sources(report))}.", ""]
    return out
