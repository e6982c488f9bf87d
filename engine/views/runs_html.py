"""`mlform runs compare --format html`: the comparison as one self-contained page.

The table of parameters, digests and metrics (differing rows marked), a chart of the
compared metric's final value across the runs, and, when the runs reported steps, a
chart of that metric per step, one line per run.  Drawn as the experiment report's
charts are (`views.experiment_html.chart`: inline SVG, a sandboxed Jinja2 template with
autoescaping, so a run id or a parameter value cannot inject markup).
"""

from __future__ import annotations

from mlform.runs import RunComparison
from mlform.views.experiment_html import (
    CHART_CSS, CHARTS, PALETTE, chart, sandboxed_environment,
)
from mlform.views.runs import value_text

__all__ = ["render_compare_html"]

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mlform runs compared: {{ runs|join(", ") }}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 80em; padding: 0 1em; color: #1b1b1b; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: .3em .7em; border-bottom: 1px solid #ddd; text-align: left; }
th { background: #f5f5f5; }
tr.differs td { background: #fff4d6; font-weight: 600; }
""" + CHART_CSS + """
</style>
</head>
<body>
<h1>Runs compared</h1>
<table>
<thead><tr><th>field</th>{% for r in runs %}<th><code>{{ r }}</code></th>{% endfor %}</tr></thead>
<tbody>
{% for row in rows %}<tr{% if row.differs %} class="differs"{% endif %}><td>{{ row.field }}{% if row.differs %} ⚠{% endif %}</td>{% for v in row.cells %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>
<p class="note">Highlighted rows differ between the runs.</p>
<p class="legend">{% for name, colour in legend %}<span><i style="background: {{ colour }}"></i>{{ name }}</span>{% endfor %}</p>
""" + CHARTS + """
</body>
</html>
"""


def _dots(drawn: dict) -> dict:
    """Each line's points as circles too: a chart of few runs reads as points."""
    for line in drawn["lines"]:
        line["dots"] = [tuple(p.split(",")) for p in line["points"].split()]
    return drawn


def render_compare_html(c: RunComparison) -> str:
    colours = {run: PALETTE[i % len(PALETTE)] for i, run in enumerate(c.runs)}
    charts = []
    if c.metric is not None:
        positions = [float(i + 1) for i in range(len(c.runs))]
        values = [r.metrics.get(c.metric) for r in c.records]
        labels = {float(i + 1): run[-8:] for i, run in enumerate(c.runs)}
        charts.append(_dots(chart(
            f"{c.metric} across the runs", positions, {c.metric: values},
            {c.metric: PALETTE[0]}, percent=False, empty="No run reported it.",
            x_label=lambda x: labels.get(x, ""))))
        steps = {r.run_id: {s.step: s.metrics.get(c.metric) for s in r.steps} for r in c.records}
        every = sorted({step for by_step in steps.values() for step in by_step})
        if every:
            charts.append(_dots(chart(
                f"{c.metric} per step", [float(s) for s in every],
                {run: [steps[run].get(s) for s in every] for run in c.runs}, colours,
                percent=False, empty="No run reported steps of it.",
                x_label=lambda x: f"{x:g}")))
    rows = [{"field": row.field, "differs": row.differs,
             "cells": [value_text(v) for v in row.values]} for row in c.rows]
    return sandboxed_environment().from_string(_PAGE).render(
        runs=c.runs, rows=rows, charts=charts, legend=list(colours.items()))
