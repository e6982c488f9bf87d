"""`mlform runs list|show|compare` and `mlform lineage`.

Read-only, like `monitor run`: the state is read without a lock and nothing is recovered
or written; the run records come from the providers (`mlform.runs.collect`), lineage is
computed from the state and those records (`mlform.lineage`), and `views.runs` /
`views.runs_html` lay them out.  Exit codes: 0 done, 1 error (an unknown run, a
resource not in the state, a file that cannot be written).
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from mlform.cli import output as out
from mlform.cli.runner import guarded, show_diagnostics
from mlform.diagnostics import DiagnosticError

__all__ = ["register"]


class CompareFormat(str, Enum):
    human = "human"
    json = "json"
    markdown = "markdown"
    html = "html"


def _gather(env: str | None, vars: list[str], var_files: list[Path],
            pipeline: str | None = None):
    """(the state, the run records) of the stack environment; warnings shown on stderr."""
    from mlform import operations, runs
    from mlform.session import Session, SessionOptions
    session = Session(Path("."), SessionOptions(env=env, vars=list(vars),
                                                var_files=[Path(f) for f in var_files]))
    try:
        state = operations.load_state(session, recover=False)
        found = runs.collect(session, state, pipeline)
    finally:
        session.close()
    if found.warnings:
        show_diagnostics(found.warnings)
    return state, found


def _dump(model) -> str:
    return json.dumps(model.model_dump(mode="json"), indent=2, sort_keys=True)


def list_runs(pipeline: str | None, env, vars, var_files, as_json: bool) -> int:
    from mlform.runs import RunList
    from mlform.views.runs import render_list
    _, found = _gather(env, vars, var_files, pipeline)
    records = found.of(pipeline)
    out.write_or_print(_dump(RunList(runs=records)) if as_json else render_list(records),
                       None, "")
    return 0


def show_run(run_id: str, env, vars, var_files, as_json: bool) -> int:
    from mlform.runs import find
    from mlform.views.runs import render_show
    _, found = _gather(env, vars, var_files)
    record = find(found, run_id)
    out.write_or_print(_dump(record) if as_json else render_show(record), None, "")
    return 0


def compare_runs(run_ids: list[str], metric: str | None, env, vars, var_files, format: str,
                 out_file: Path | None) -> int:
    from mlform.runs import compare, find
    _, found = _gather(env, vars, var_files)
    records = [find(found, ref) for ref in run_ids]
    if len({r.run_id for r in records}) < 2:
        raise DiagnosticError.single("runs compare needs at least two different runs",
                                     hint="Give two or more run ids from mlform runs list.")
    if metric is not None and not any(metric in r.metrics for r in records):
        raise DiagnosticError.single(
            f'None of the runs reported the metric "{metric}"',
            hint="Their metrics: " + (", ".join(sorted({m for r in records for m in r.metrics}))
                                      or "none"))
    comparison = compare(records, metric)
    if format == "json":
        text = _dump(comparison)
    elif format == "markdown":
        from mlform.views.runs import render_compare_markdown
        text = render_compare_markdown(comparison)
    elif format == "html":
        from mlform.views.runs_html import render_compare_html
        text = render_compare_html(comparison)
    else:
        from mlform.views.runs import render_compare
        text = render_compare(comparison)
    out.write_or_print(text, out_file, f"the {format} comparison")
    return 0


def lineage(ref: str, env, vars, var_files, as_json: bool) -> int:
    from mlform.lineage import lineage_of
    from mlform.views.runs import render_lineage
    state, found = _gather(env, vars, var_files)
    result = lineage_of(ref, state, found.records)
    out.write_or_print(_dump(result) if as_json else render_lineage(result), None, "")
    return 0


def register(app: typer.Typer) -> None:
    """Add `runs` and `lineage` to the app (one line in app.py)."""
    runs_app = typer.Typer(no_args_is_help=True,
                           help="Pipeline runs: list, show and compare their records.")
    app.add_typer(runs_app, name="runs")
    env_opt = typer.Option(None, "--env", "-e", help="Environment (environments/NAME.hcl).")
    var_opt = typer.Option(None, "--var", help="Set a variable: --var NAME=VALUE (repeatable).")
    file_opt = typer.Option(None, "--var-file", help="Read variable values from a file.")

    @runs_app.command("list")
    def runs_list(pipeline: Optional[str] = typer.Argument(None, help="Only this pipeline's runs."),
                  env: Optional[str] = env_opt, var: Optional[List[str]] = var_opt,
                  var_file: Optional[List[Path]] = file_opt,
                  json_: bool = typer.Option(False, "--json", help="Print the records as JSON.")) -> None:
        """Every recorded run, oldest first: status, times, data digests, metrics."""
        guarded(list_runs, pipeline, env, var or [], var_file or [], json_)

    @runs_app.command("show")
    def runs_show(run: str = typer.Argument(..., help="A run id (or a unique prefix of one)."),
                  env: Optional[str] = env_opt, var: Optional[List[str]] = var_opt,
                  var_file: Optional[List[Path]] = file_opt,
                  json_: bool = typer.Option(False, "--json", help="Print the record as JSON.")) -> None:
        """One run's record: parameters, digests, cluster, times, metrics, artifacts."""
        guarded(show_run, run, env, var or [], var_file or [], json_)

    @runs_app.command("compare")
    def runs_compare(runs: List[str] = typer.Argument(..., help="Two or more run ids."),
                     metric: Optional[str] = typer.Option(None, "--metric",
                                                          help="The metric to chart (html)."),
                     env: Optional[str] = env_opt, var: Optional[List[str]] = var_opt,
                     var_file: Optional[List[Path]] = file_opt,
                     format: CompareFormat = typer.Option(CompareFormat.human, "--format"),
                     out_file: Optional[Path] = typer.Option(None, "--out", metavar="FILE",
                                                             help="Write to FILE.")) -> None:
        """Parameters, digests and metrics of the runs side by side, differences marked."""
        guarded(compare_runs, runs, metric, env, var or [], var_file or [], format.value,
                out_file)

    @app.command("lineage")
    def lineage_command(subject: str = typer.Argument(
                            ..., metavar="ADDRESS_OR_VERSION",
                            help="A resource address, MODEL@VERSION, or a run id."),
                        env: Optional[str] = env_opt, var: Optional[List[str]] = var_opt,
                        var_file: Optional[List[Path]] = file_opt,
                        json_: bool = typer.Option(False, "--json", help="Print it as JSON.")) -> None:
        """Upstream (datasets and digests, code, parameters, run) and downstream (model
        versions, endpoints, monitors) of a resource or run."""
        guarded(lineage, subject, env, var or [], var_file or [], json_)
