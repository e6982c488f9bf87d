"""The `mlform` command line (typer).

The CLI is the only place that prints, reads the terminal, changes the
working directory (`-C DIR`) and decides exit codes:
0 success, 1 error, 2 success with changes (with --detailed-exitcode, and
always for `drift`), as Terraform does.  Errors are rendered diagnostics,
never tracebacks (set MLFORM_DEBUG=1 to see one).
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from mlform.cli import output as out
from mlform.cli.runner import guarded

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="mlform: plan and apply ML infrastructure (datasets, clusters, pipelines, "
                       "models, endpoints, monitors) from declarative specs.",
                  context_settings={"help_option_names": ["-h", "--help"]})
state_app = typer.Typer(no_args_is_help=True, help="Inspect and edit the state.")
app.add_typer(state_app, name="state")
monitor_app = typer.Typer(no_args_is_help=True, help="Run monitors on demand.")
app.add_typer(monitor_app, name="monitor")
experiment_app = typer.Typer(no_args_is_help=True, help="Report on and step endpoint experiments.")
app.add_typer(experiment_app, name="experiment")


class PlanFormat(str, Enum):
    human = "human"
    json = "json"
    markdown = "markdown"


class DriftFormat(str, Enum):
    human = "human"
    json = "json"
    markdown = "markdown"
    junit = "junit"


class ReportFormat(str, Enum):
    human = "human"
    json = "json"
    markdown = "markdown"
    html = "html"


class GraphFormat(str, Enum):
    dot = "dot"
    mermaid = "mermaid"


@app.callback()
def main_callback(
    chdir: Optional[Path] = typer.Option(None, "-C", "--chdir", help="Run as if started in DIR."),
    no_color: bool = typer.Option(False, "--no-color", help="Plain output without colour."),
) -> None:
    if chdir is not None:
        try:
            os.chdir(chdir)
        except OSError as exc:
            out.fail_now(f"cannot change to {chdir}: {exc.strerror}")
    out.configure(color=not no_color)


# Options shared by several commands.
ENV = typer.Option(None, "--env", "-e", help="Environment (environments/NAME.hcl); each has its own state.")
VARS = typer.Option(None, "--var", help="Set a variable: --var NAME=VALUE (repeatable).")
VAR_FILES = typer.Option(None, "--var-file", help="Read variable values from a .hcl/.yaml/.json file.")
TARGETS = typer.Option(None, "--target", help="Limit to this address and what it depends on (repeatable).")
REPLACES = typer.Option(None, "--replace", help="Force replacement of this instance (repeatable).")
PARALLELISM = typer.Option(10, "--parallelism", min=1, help="Provider operations at once.")
DIR = typer.Argument(Path("."), help="The stack directory.", show_default=False)


@app.command()
def validate(dir: Path = DIR, env: Optional[str] = ENV) -> None:
    """Check the spec: syntax, references, cycles, attribute names and types."""
    from mlform.cli import commands
    guarded(commands.validate, dir, env)


@app.command()
def fmt(dir: Path = DIR, check: bool = typer.Option(False, "--check", help="Exit 3 if any file needs formatting; change nothing.")) -> None:
    """Rewrite HCL spec files in canonical format (comments kept)."""
    from mlform.cli import commands
    guarded(commands.fmt, dir, check)


@app.command()
def plan(
    dir: Path = DIR, env: Optional[str] = ENV, var: Optional[List[str]] = VARS,
    var_file: Optional[List[Path]] = VAR_FILES,
    out_file: Optional[Path] = typer.Option(None, "--out", help="Save the plan to FILE for apply."),
    detailed_exitcode: bool = typer.Option(False, "--detailed-exitcode", help="Exit 2 when there are changes."),
    refresh_only: bool = typer.Option(False, "--refresh-only", help="Only update state to match live objects."),
    no_refresh: bool = typer.Option(False, "--no-refresh", help="Skip reading live objects."),
    target: Optional[List[str]] = TARGETS, replace: Optional[List[str]] = REPLACES,
    destroy: bool = typer.Option(False, "--destroy", help="Plan to destroy everything."),
    format: PlanFormat = typer.Option(PlanFormat.human, "--format"),
    parallelism: int = PARALLELISM,
    hold: Optional[str] = typer.Option(None, "--hold", metavar="ID",
                                       help="Hold the state for pull request ID (e.g. "
                                            "github:owner/repo#42) until its plan is applied "
                                            "or released; refused while another ID holds it."),
) -> None:
    """Show what apply would change."""
    from mlform.cli import commands
    guarded(commands.plan, dir, env=env, vars=var or [], var_files=var_file or [], out_file=out_file,
            detailed_exitcode=detailed_exitcode, refresh_only=refresh_only, refresh=not no_refresh,
            targets=target or [], replace=replace or [], destroy=destroy, format=format.value,
            parallelism=parallelism, hold=hold)


@app.command()
def apply(
    dir_or_plan: Path = typer.Argument(Path("."), help="A stack directory or a saved plan file.",
                                       show_default=False),
    auto_approve: bool = typer.Option(False, "--auto-approve", help="Do not ask for confirmation."),
    env: Optional[str] = ENV, var: Optional[List[str]] = VARS,
    var_file: Optional[List[Path]] = VAR_FILES,
    refresh_only: bool = typer.Option(False, "--refresh-only"),
    no_refresh: bool = typer.Option(False, "--no-refresh"),
    target: Optional[List[str]] = TARGETS, replace: Optional[List[str]] = REPLACES,
    destroy: bool = typer.Option(False, "--destroy"),
    parallelism: int = PARALLELISM,
) -> None:
    """Plan and apply (asks first), or apply a saved plan file."""
    from mlform.cli import commands
    guarded(commands.apply, dir_or_plan, auto_approve=auto_approve, env=env, vars=var or [],
            var_files=var_file or [], refresh_only=refresh_only, refresh=not no_refresh,
            targets=target or [], replace=replace or [], destroy=destroy, parallelism=parallelism)


@app.command()
def destroy(dir: Path = DIR, auto_approve: bool = typer.Option(False, "--auto-approve"),
            env: Optional[str] = ENV, var: Optional[List[str]] = VARS,
            var_file: Optional[List[Path]] = VAR_FILES, target: Optional[List[str]] = TARGETS,
            parallelism: int = PARALLELISM) -> None:
    """Destroy everything the state tracks (asks first)."""
    from mlform.cli import commands
    guarded(commands.apply, dir, auto_approve=auto_approve, env=env, vars=var or [],
            var_files=var_file or [], refresh_only=False, refresh=True, targets=target or [],
            replace=[], destroy=True, parallelism=parallelism)


@app.command()
def refresh(dir: Path = DIR, env: Optional[str] = ENV, var: Optional[List[str]] = VARS,
            var_file: Optional[List[Path]] = VAR_FILES, parallelism: int = PARALLELISM) -> None:
    """Update the state to match live objects (same as apply --refresh-only --auto-approve)."""
    from mlform.cli import commands
    guarded(commands.apply, dir, auto_approve=True, env=env, vars=var or [], var_files=var_file or [],
            refresh_only=True, refresh=True, targets=[], replace=[], destroy=False,
            parallelism=parallelism)


@app.command()
def drift(dir: Path = DIR, env: Optional[str] = ENV, var: Optional[List[str]] = VARS,
          var_file: Optional[List[Path]] = VAR_FILES,
          format: DriftFormat = typer.Option(DriftFormat.human, "--format"),
          parallelism: int = PARALLELISM) -> None:
    """Compare live objects with the state: exit 0 none, 2 drift found, 1 error."""
    from mlform.cli import commands
    guarded(commands.drift, dir, env=env, vars=var or [], var_files=var_file or [],
            format=format.value, parallelism=parallelism)


@app.command()
def show(plan_file: Optional[Path] = typer.Argument(None, help="A saved plan; default: the state."),
         json_: bool = typer.Option(False, "--json"), env: Optional[str] = ENV) -> None:
    """Show a saved plan, or the current state."""
    from mlform.cli import commands
    guarded(commands.show, plan_file, json_, env)


@app.command()
def output(name: Optional[str] = typer.Argument(None), json_: bool = typer.Option(False, "--json"),
           env: Optional[str] = ENV) -> None:
    """Print output values from the state."""
    from mlform.cli import commands
    guarded(commands.output, name, json_, env)


@app.command()
def cost(dir: Path = DIR, env: Optional[str] = ENV,
         json_: bool = typer.Option(False, "--json", help="The breakdown as JSON.")) -> None:
    """Print what the current state costs, per resource and in total (no refresh)."""
    from mlform.cli import cost_commands
    guarded(cost_commands.cost, dir, env, json_)


@app.command("import")
def import_(address: str, id: str, env: Optional[str] = ENV, var: Optional[List[str]] = VARS,
            var_file: Optional[List[Path]] = VAR_FILES) -> None:
    """Bring an existing object under management at ADDRESS."""
    from mlform.cli import commands
    guarded(commands.import_, address, id, env, var or [], var_file or [])


@app.command("force-unlock")
def force_unlock(lock_id: str, env: Optional[str] = ENV) -> None:
    """Remove a lock left by another run, or a pull request's hold (give the id reported)."""
    from mlform.cli import commands
    guarded(commands.force_unlock, lock_id, env)


@app.command()
def history(what: Optional[str] = typer.Argument(None, metavar="verify|DIR",
                                                 help="`verify` checks the hash chain; otherwise the stack directory."),
            dir: Optional[Path] = typer.Argument(None, metavar="DIR",
                                                 help="The stack directory, after `verify`."),
            env: Optional[str] = ENV, json_: bool = typer.Option(False, "--json"),
            expect: Optional[str] = typer.Option(None, "--expect", metavar="SEQ:HASH",
                                                 help="verify: also require record SEQ to have "
                                                      "HASH (a head an earlier verify printed, "
                                                      "kept elsewhere).")) -> None:
    """Show the audit trail (who changed what, when); `history verify` checks it is intact."""
    from mlform.cli import history_commands
    guarded(history_commands.history, what, dir, env, json_, expect)


@app.command()
def release(hold_id: str = typer.Argument(..., metavar="ID", help="The pull request's hold id."),
            dir: Path = DIR, env: Optional[str] = ENV) -> None:
    """Drop the hold of pull request ID (closed without merging); exit 0 if not held."""
    from mlform.cli import hold_commands
    guarded(hold_commands.release, hold_id, dir, env)


@app.command()
def graph(dir: Path = DIR, format: GraphFormat = typer.Option(GraphFormat.dot, "--format"),
          env: Optional[str] = ENV) -> None:
    """Print the resource dependency graph (Graphviz dot or Mermaid)."""
    from mlform.cli import commands
    guarded(commands.graph, dir, format.value, env)


@app.command()
def providers() -> None:
    """List installed providers and the kinds they serve."""
    from mlform.cli import commands
    guarded(commands.providers)


@app.command()
def schema(kind: Optional[str] = typer.Argument(None, help="One kind; default: a whole stack file.")) -> None:
    """Print the JSON Schema of the spec (for editors)."""
    from mlform.cli import commands
    guarded(commands.schema, kind)


@app.command()
def init(dir: Path = typer.Argument(..., help="Directory to create the stack in."),
         template: str = typer.Option("memory", "--template", help="Template: memory.")) -> None:
    """Create a new stack from a template."""
    from mlform.cli import commands
    guarded(commands.init, dir, template)


@state_app.command("list")
def state_list(env: Optional[str] = ENV) -> None:
    """List the addresses in the state."""
    from mlform.cli import state_commands
    guarded(state_commands.list_, env)


@state_app.command("show")
def state_show(address: str, env: Optional[str] = ENV) -> None:
    """Show one resource's recorded attributes."""
    from mlform.cli import state_commands
    guarded(state_commands.show, address, env)


@state_app.command("rm")
def state_rm(address: str, env: Optional[str] = ENV) -> None:
    """Forget a resource without destroying it."""
    from mlform.cli import state_commands
    guarded(state_commands.rm, address, env)


@state_app.command("mv")
def state_mv(source: str, destination: str, env: Optional[str] = ENV) -> None:
    """Move a resource to another address (after renaming a block)."""
    from mlform.cli import state_commands
    guarded(state_commands.mv, source, destination, env)


@state_app.command("pull")
def state_pull(env: Optional[str] = ENV) -> None:
    """Print the state document."""
    from mlform.cli import state_commands
    guarded(state_commands.pull, env)


@state_app.command("push")
def state_push(file: Path, force: bool = typer.Option(False, "--force"), env: Optional[str] = ENV) -> None:
    """Replace the state with FILE (refuses another lineage or an older serial unless --force)."""
    from mlform.cli import state_commands
    guarded(state_commands.push, file, force, env)


@monitor_app.command("run")
def monitor_run(address: str, env: Optional[str] = ENV, var: Optional[List[str]] = VARS,
                var_file: Optional[List[Path]] = VAR_FILES,
                json_: bool = typer.Option(False, "--json", help="Print the whole report as JSON.")) -> None:
    """Run a monitor's checks now: exit 0 no breach, 2 breach, 1 error."""
    from mlform.cli import monitor_commands
    guarded(monitor_commands.run, address, env, var or [], var_file or [], json_)


@experiment_app.command("report")
def experiment_report(address: str, env: Optional[str] = ENV, var: Optional[List[str]] = VARS,
                      var_file: Optional[List[Path]] = VAR_FILES,
                      format: ReportFormat = typer.Option(ReportFormat.human, "--format"),
                      out_file: Optional[Path] = typer.Option(None, "--out", metavar="FILE",
                                                              help="Write the report to FILE.")) -> None:
    """Per variant: requests, errors, latency, reward with its interval, P(best), the A/B test."""
    from mlform.cli import experiment_commands
    guarded(experiment_commands.report, address, env, var or [], var_file or [], format.value,
            out_file)


@experiment_app.command("step")
def experiment_step(address: str, env: Optional[str] = ENV, var: Optional[List[str]] = VARS,
                    var_file: Optional[List[Path]] = VAR_FILES,
                    json_: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Move a bandit's weights toward the better variant now (where the service does not)."""
    from mlform.cli import experiment_commands
    guarded(experiment_commands.step, address, env, var or [], var_file or [], json_)


from mlform.cli import reconcile_commands  # noqa: E402  (its options live with its body)
reconcile_commands.register(app)


def main() -> None:
    app(prog_name="mlform")

from mlform.cli import run_commands  # noqa: E402  (runs and lineage)
run_commands.register(app)

from mlform.cli import pulumi_commands  # noqa: E402  (export / import-state pulumi)
pulumi_commands.register(app)
