"""`mlform experiment report ADDR` and `mlform experiment step ADDR`.

The endpoint is found in the state (read-only: no lock, nothing recovered or written),
as `monitor run` does.  Its provider answers through `Provider.action`:

* ``experiment_records`` gives the experiment, the variants with their weights now, and
  the captured requests and feedback (the same shape from every provider); the
  statistics are computed here, once for every provider, by
  `providers.kit.experiment_stats.summarize` (the kit, not a provider: the layer
  contracts allow the engine to use it), and rendered by `views.experiment`.
* ``experiment_step`` moves a bandit's weights where the service does not do it itself.

Exit codes: 0 done, 1 error (not in the state, not an endpoint, no experiment).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlform.cli import output as out
from mlform.cli.actions import run_action
from mlform.diagnostics import DiagnosticError


def _check_records(address: str, records: Any) -> dict:
    if not isinstance(records, dict) or not isinstance(records.get("variants"), list):
        raise DiagnosticError.single(f"The provider of {address} answered no experiment records",
                                     hint="This is a bug in the provider; report it.")
    names = {v.get("name") for v in records["variants"] if isinstance(v, dict)}
    if records.get("experiment") is None and len(names) < 2:
        raise DiagnosticError.single(
            f"{address} runs no experiment: it serves one model and declares no variants",
            address=address,
            hint="Declare `variants` (and an `experiment` block) on the endpoint and apply it; "
                 "see docs/cli.md, mlform experiment report.")
    return records


def summarize(records: dict) -> dict:
    """The report's statistics (`kit.experiment_stats.summarize`) of the provider's records."""
    from mlform.providers.kit.experiment_stats import summarize as stats
    experiment = records.get("experiment") or {}
    live = [v["name"] for v in records["variants"]
            if isinstance(v, dict) and v.get("role", "live") == "live"]
    return stats(records.get("captures") or [], records.get("feedback") or [],
                 reward=experiment.get("reward"), experiment_type=experiment.get("type"),
                 variants=list(dict.fromkeys(live)))


def report(address: str, env: str | None, vars: list[str], var_files: list[Path],
           format: str, out_file: Path | None) -> int:
    records = _check_records(address, run_action(
        address, "endpoint", "experiment_records", command="experiment report", env=env,
        vars=vars, var_files=var_files, failure="Reading the experiment of"))
    from mlform.views import experiment as view
    summary = summarize(records)
    if format == "json":
        text = json.dumps(view.report_json(address, records, summary), indent=2, sort_keys=True,
                          default=str)
    elif format == "markdown":
        text = view.render_markdown(address, records, summary)
    elif format == "html":
        from mlform.views.experiment_html import render_html
        text = render_html(address, records, summary)
    else:
        text = view.render_human(address, records, summary,
                                 color=out.color() and out_file is None)
    out.write_or_print(text, out_file, f"the {format} report of {address}")
    return 0


def step(address: str, env: str | None, vars: list[str], var_files: list[Path],
         as_json: bool) -> int:
    result = run_action(address, "endpoint", "experiment_step", command="experiment step",
                        env=env, vars=vars, var_files=var_files, failure="Stepping")
    if as_json:
        out.raw(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        out.raw(result.get("summary") or json.dumps(result, indent=2, sort_keys=True, default=str))
    return 0
