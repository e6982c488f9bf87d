"""Renderers of run records and lineage: `mlform runs list|show|compare`, `mlform lineage`.

Text for the terminal and Markdown (a pull-request comment); the JSON forms are the
models of `mlform.runs` and `mlform.lineage`, and the HTML page is `views.runs_html`.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from mlform.lineage import Lineage, Node
from mlform.providers.kit.run_records import RunRecord
from mlform.runs import RunComparison

__all__ = ["render_list", "render_show", "render_compare", "render_compare_markdown",
           "render_lineage", "value_text", "short"]


def short(digest: Any, n: int = 12) -> str:
    """``sha256:1a2b…`` or a bare hex digest, shortened; other values as they are."""
    text = str(digest)
    head, _, tail = text.rpartition(":")
    if len(tail) >= 32 and all(c in "0123456789abcdef" for c in tail.lower()):
        return (head + ":" if head else "") + tail[:n] + "…"
    return text


def value_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return short(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _metrics(values: dict[str, Any], limit: int = 4) -> str:
    items = [f"{k}={value_text(v)}" for k, v in values.items()]
    return " ".join(items[:limit]) + (" …" if len(items) > limit else "") or "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(header), *(line(r) for r in rows)]


def render_list(records: list[RunRecord]) -> str:
    if not records:
        return "No runs recorded in this stack environment."
    rows = [[r.run_id, r.pipeline, r.status, (r.started or "-").replace("+00:00", "Z"),
             _duration(r.duration_seconds),
             " ".join(f"{k}={short(v, 8)}" for k, v in r.data_digests.items()) or "-",
             _metrics(r.metrics, 3)] for r in records]
    return "\n".join(_table(["RUN", "PIPELINE", "STATUS", "STARTED", "DURATION", "DATA",
                             "METRICS"], rows))


def render_show(r: RunRecord) -> str:
    lines = [f"Run {r.run_id} of {r.pipeline} ({r.provider or 'unknown provider'})",
             f"  status       {r.status}"]
    if r.failure:
        first, *rest = r.failure.splitlines() or [""]
        lines.append(f"  failure      {first}")
        lines += [f"               {line}" for line in rest[:5]]
    lines += [f"  started      {r.started or '-'}", f"  finished     {r.finished or '-'}",
              f"  duration     {_duration(r.duration_seconds)}",
              f"  fingerprint  {r.fingerprint or '-'}",
              f"  code         {r.entrypoint or '-'} (sha256 {r.code_digest or '-'})"]
    cluster = r.cluster or "-"
    if r.accelerator:
        cluster += f" ({r.accelerator}, {r.nodes} node(s) × {r.gpus_per_node} GPU(s))"
    lines.append(f"  cluster      {cluster}, {r.processes} process(es)")
    if r.sweep:
        lines.append(f"  sweep        trial {r.sweep.get('trial')} of {r.sweep.get('run_id')}")
    sections = [("data", {k: f"{r.inputs.get(k) or '?'} {v}" for k, v in r.data_digests.items()}),
                ("parameters", r.parameters), ("metrics", r.metrics), ("artifacts", r.artifacts)]
    for title, values in sections:
        lines.append(f"  {title}:" + ("" if values else " -"))
        lines += [f"    {k} = {value_text(v) if title != 'data' else v}"
                  for k, v in values.items()]
    if r.steps:
        names = list(dict.fromkeys(n for s in r.steps for n in s.metrics))
        last = r.steps[-1]
        lines.append(f"  steps: {len(r.steps)} reported ({', '.join(names)}), last "
                     f"step {last.step}: {_metrics(last.metrics)}")
    if r.model_uri:
        lines.append(f"  model        {r.model_uri}")
    return "\n".join(lines)


def _compare_rows(c: RunComparison) -> list[list[str]]:
    return [[("* " if row.differs else "  ") + row.field, *map(value_text, row.values)]
            for row in c.rows]


def render_compare(c: RunComparison) -> str:
    lines = _table(["  FIELD", *c.runs], _compare_rows(c))
    differing = sum(row.differs for row in c.rows)
    lines.append("")
    lines.append(f"* marks the {differing} field(s) that differ." if differing
                 else "The runs agree on every field.")
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_compare_markdown(c: RunComparison) -> str:
    lines = [f"### Runs compared: {', '.join(f'`{r}`' for r in c.runs)}", "",
             "| field | " + " | ".join(f"`{r}`" for r in c.runs) + " |",
             "| --- |" + " --- |" * len(c.runs)]
    for row in c.rows:
        cells = [_md(value_text(v)) for v in row.values]
        if row.differs:
            cells = [f"**{cell}**" for cell in cells]
        name = f"**{row.field}** ⚠" if row.differs else row.field
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Bold rows differ between the runs."]
    return "\n".join(lines)


def _node_line(node: Node) -> list[str]:
    d = node.details
    bits = {
        "dataset": lambda: f"sha256 {short(d.get('digest'))}" + (
            f"  (changed since {', '.join(node.changed_since_run)})" if node.changed_since_run
            else "") + (f"  read {short(d['digest_read'])}" if d.get("digest_read") else ""),
        "pipeline": lambda: f"run {d.get('run_id', '-')}",
        "model": lambda: f"version {d.get('version', '-')}" + (
            f" ({d['stage']})" if d.get("stage") else ""),
        "endpoint": lambda: str(d.get("url") or "") + (
            f"  version {d['model_version']}" if d.get("model_version") is not None else ""),
        "training_cluster": lambda: f"{d.get('accelerator', '-')}",
    }.get(node.kind, lambda: "")()
    lines = [f"    {node.address:<28} {bits}".rstrip()]
    if node.run is not None:
        lines += _run_lines(node.run, "      ")
    return lines


def _run_lines(run: RunRecord, indent: str) -> list[str]:
    out = [f"{indent}run {run.run_id}: {run.status}, started {run.started or '-'}, "
           f"{_duration(run.duration_seconds)}",
           f"{indent}code {run.entrypoint or '-'} sha256 {short(run.code_digest)}"]
    for name, digest in run.data_digests.items():
        out.append(f"{indent}data {name} <- {run.inputs.get(name) or '?'} sha256 {short(digest)}")
    if run.parameters:
        out.append(f"{indent}parameters {_metrics(run.parameters, 8)}")
    if run.metrics:
        out.append(f"{indent}metrics {_metrics(run.metrics, 8)}")
    return out


def render_lineage(l: Lineage) -> str:
    title = f"Lineage of {l.subject}" + (f" ({l.kind})" if l.kind else "")
    lines = [title, "  upstream:" + ("" if l.upstream else " none")]
    for node in sorted(l.upstream, key=lambda n: (-n.depth, n.address)):
        lines += _node_line(node)
    if l.kind == "run" and l.run is not None:
        lines.append(f"  > {l.run.pipeline}")
        lines += _run_lines(l.run, "      ")
    elif l.address:
        lines.append(f"  > {l.address}")
        if l.kind == "pipeline" and l.run is not None:
            lines += _run_lines(l.run, "      ")
    lines.append("  downstream:" + ("" if l.downstream else " none"))
    for node in sorted(l.downstream, key=lambda n: (n.depth, n.address)):
        lines += _node_line(node)
    lines += [f"  note: {note}" for note in l.notes]
    return "\n".join(lines)


def records_json(records: Iterable[RunRecord]) -> list[dict]:
    return [r.model_dump(mode="json") for r in records]
