"""An endpoint experiment's report as one self-contained HTML page.

No script, no stylesheet or font from the network: the charts are inline SVG drawn here
from the summary's time series (each variant's share of traffic, and its cumulative
reward mean, per time bucket).  The page is a Jinja2 template in a sandboxed
environment with autoescaping on, so a variant name or an address can never inject
markup; the charts' coordinates are numbers computed in Python.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from mlform.views.experiment import TEXT_COLUMNS, columns, footnote, headline, rows, verdict

__all__ = ["render_html", "chart", "sandboxed_environment", "CHART_CSS", "CHARTS"]

#: Colour per variant, in order (colour-blind safe: Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 12, 36

#: the charts' styles, shared by every page that draws them (`chart`)
CHART_CSS = """figure { margin: 1.5em 0; }
figcaption { font-weight: 600; margin-bottom: .3em; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
.legend span { display: inline-block; margin-right: 1.2em; }
.legend i { display: inline-block; width: .9em; height: .9em; margin-right: .3em;
            vertical-align: -.1em; }
.note { color: #666; }"""

#: the charts of `charts` (each from `chart`) as inline SVG; a line with ``dots`` also
#: marks its points
CHARTS = """{% for c in charts %}<figure>
<figcaption>{{ c.title }}</figcaption>
{% if c.lines %}<svg xmlns="http://www.w3.org/2000/svg" width="{{ c.width }}" height="{{ c.height }}" viewBox="0 0 {{ c.width }} {{ c.height }}" role="img" aria-label="{{ c.title }}">
<rect x="{{ c.left }}" y="{{ c.top }}" width="{{ c.plot_width }}" height="{{ c.plot_height }}" fill="none" stroke="#ccc"/>
{% for tick in c.y_ticks %}<line x1="{{ c.left }}" x2="{{ c.left + c.plot_width }}" y1="{{ tick.y }}" y2="{{ tick.y }}" stroke="#eee"/>
<text x="{{ c.left - 6 }}" y="{{ tick.y + 4 }}" text-anchor="end">{{ tick.label }}</text>
{% endfor %}{% for tick in c.x_ticks %}<text x="{{ tick.x }}" y="{{ c.height - 12 }}" text-anchor="middle">{{ tick.label }}</text>
{% endfor %}{% for line in c.lines %}<polyline fill="none" stroke="{{ line.colour }}" stroke-width="2" points="{{ line.points }}"><title>{{ line.name }}</title></polyline>
{% if line.dots is defined %}{% for p in line.dots %}<circle cx="{{ p[0] }}" cy="{{ p[1] }}" r="3" fill="{{ line.colour }}"/>{% endfor %}{% endif %}
{% endfor %}</svg>{% else %}<p class="note">{{ c.empty }}</p>{% endif %}
</figure>
{% endfor %}"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mlform experiment report: {{ address }}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 70em; padding: 0 1em; color: #1b1b1b; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: .3em .7em; border-bottom: 1px solid #ddd; }
th { text-align: left; background: #f5f5f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
""" + CHART_CSS + """
</style>
</head>
<body>
<h1>Experiment report: <code>{{ address }}</code></h1>
<p>{{ headline }}</p>
<table>
<thead><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in rows %}<tr>{% for c in columns %}<td{% if c not in text_columns %} class="num"{% endif %}>{{ row[c] }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>
<p><strong>Test:</strong> {{ verdict }}</p>
<p class="legend">{% for name, colour in legend %}<span><i style="background: {{ colour }}"></i>{{ name }}</span>{% endfor %}</p>
""" + CHARTS + """<p class="note">{{ footer }}</p>
</body>
</html>
"""


def sandboxed_environment():
    """Jinja2 for self-contained pages: sandboxed, autoescaping, undefined names fail."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment
    return SandboxedEnvironment(autoescape=True, undefined=StrictUndefined,
                                trim_blocks=False, lstrip_blocks=False)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and value == value and value not in (float("inf"), float("-inf"))


def _time_label(seconds: float, span: float) -> str:
    moment = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    return moment.strftime("%H:%M:%S" if span < 600 else "%H:%M" if span < 86400 else "%m-%d %H:%M")


def chart(title: str, times: list[float], series: Mapping[str, list], colours: Mapping[str, str],
          *, percent: bool, empty: str, x_label=None) -> dict:
    """The drawing of one chart: a polyline per variant over `times` (None values are gaps,
    skipped); y from 0 to 100% for shares, else from the data's range.  `x_label(x)`
    labels the x ticks (default: `times` are epoch seconds, labelled as clock times)."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = [v for ys in series.values() for v in ys if _finite(v)]
    drawable = len(times) >= 1 and values
    base = {"title": title, "width": WIDTH, "height": HEIGHT, "left": LEFT, "top": TOP,
            "plot_width": plot_w, "plot_height": plot_h, "lines": [], "x_ticks": [],
            "y_ticks": [], "empty": empty}
    if not drawable:
        return base
    lo, hi = (0.0, 1.0) if percent else (min(values), max(values))
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    t0, t1 = times[0], times[-1]
    span = max(t1 - t0, 1e-9)

    def x(t: float) -> float:
        return LEFT + (plot_w * (t - t0) / span if len(times) > 1 else plot_w / 2)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - (v - lo) / (hi - lo))

    for name, ys in series.items():
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in zip(times, ys) if _finite(v))
        if points:
            base["lines"].append({"name": name, "colour": colours[name], "points": points})
    base["y_ticks"] = [{"y": round(y(lo + (hi - lo) * i / 4), 1),
                        "label": f"{100 * (lo + (hi - lo) * i / 4):.0f}%" if percent
                        else f"{lo + (hi - lo) * i / 4:.3g}"} for i in range(5)]
    count = min(5, len(times))
    picks = sorted({round(i * (len(times) - 1) / max(count - 1, 1)) for i in range(count)})
    label = x_label or (lambda t: _time_label(t, span))
    base["x_ticks"] = [{"x": round(x(times[i]), 1), "label": label(times[i])} for i in picks]
    return base


def render_html(address: str, records: Mapping, summary: Mapping) -> str:
    table = rows(records, summary)
    live = list(summary.get("variants") or {})
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(r["variant"] for r in table)}
    series = summary.get("series") or {}
    # each bucket is drawn at its middle
    times = [(b["start"] + b["end"]) / 2 for b in series.get("buckets") or []
             if _finite(b.get("start")) and _finite(b.get("end"))]

    def lines(key: str) -> dict[str, list]:
        found = series.get(key) or {}
        return {n: list(found.get(n) or [])[:len(times)] for n in live if n in found}

    charts = [
        chart("Share of live traffic over time (UTC)", times, lines("traffic_share"), colours,
              percent=True, empty="No captured requests yet."),
        chart("Cumulative reward mean over time (UTC)", times, lines("reward_mean"), colours,
              percent=False, empty="No rewards posted yet."),
    ]
    return sandboxed_environment().from_string(_PAGE).render(
        address=address, headline=headline(address, records, summary),
        columns=columns(summary), text_columns=TEXT_COLUMNS, rows=table,
        verdict=verdict(summary), legend=[(n, colours[n]) for n in live], charts=charts,
        footer=footnote(records, summary) + " Generated by mlform.")
