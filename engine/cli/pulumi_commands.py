"""`mlform export pulumi` and `mlform import-state pulumi`.

Both only read: `export` plans the stack without a refresh and writes a Pulumi project
(`pulumi_export`, `views.pulumi_program`); `import-state` reads a stack export and the
state and prints what to import (`pulumi_import`, `views.pulumi_import`).  Neither takes
the state lock or changes the state.  Exit codes: 0 done, 1 error.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from mlform.cli import output as out
from mlform.cli.runner import guarded
from mlform.diagnostics import DiagnosticError

__all__ = ["register", "export_pulumi", "import_state_pulumi"]

#: the files `export pulumi` writes into --out (and nothing else)
PROGRAM_FILES = ("__main__.py", "Pulumi.yaml", "requirements.txt")


class ProposalFormat(str, Enum):
    human = "human"
    json = "json"


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DiagnosticError.single(f"Cannot write {path}: {exc.strerror}",
                                     hint="Choose a writable directory for --out.")


def export_pulumi(dir: Path, env, vars, var_files, out_dir: Path,
                  import_file: Path | None) -> int:
    from mlform.pulumi_export import export_program
    from mlform.views import pulumi_program as view
    if out_dir.exists() and not out_dir.is_dir():
        raise DiagnosticError.single(f"--out {out_dir} is a file",
                                     hint="Give a directory for the Pulumi project.")
    from mlform.cli.commands import _session   # lazily, as app.py does: CLI start-up
    session = _session(Path(dir), env, vars, var_files)
    try:
        program = export_program(session)
    finally:
        session.close()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DiagnosticError.single(f"Cannot create {out_dir}: {exc.strerror}",
                                     hint="Choose a writable directory for --out.")
    header = (f"The {program.stack} stack's {program.env} environment as a Pulumi program.\n\n"
              "Written by `mlform export pulumi`: it declares the objects mlform's providers\n"
              "make, with the names, tags and configuration mlform gives them (docs/pulumi.md).\n")
    _write(out_dir / "__main__.py", view.main_py(
        header=header, resources=program.resources, notes=program.notes,
        outputs=program.outputs, inputs=program.inputs))
    _write(out_dir / "Pulumi.yaml", view.pulumi_yaml(
        project=program.project, inputs=program.inputs,
        description=f"{program.stack} ({program.env}), exported from mlform"))
    _write(out_dir / "requirements.txt", view.requirements_txt(program.packages))
    document = view.import_document(program.resources)
    if import_file is not None:
        _write(import_file, json.dumps(document, indent=2) + "\n")
    out.echo(f"Wrote a Pulumi program of {len(program.resources)} resources to {out_dir} "
             f"({', '.join(PROGRAM_FILES)}).")
    if program.inputs:
        secret = sum(1 for i in program.inputs if i.secret)
        out.echo(f"It reads {len(program.inputs)} config values ({secret} secret): "
                 f"see the top of {out_dir / '__main__.py'}.")
    if import_file is not None:
        out.echo(f"Wrote {len(document['resources'])} existing objects to {import_file}: "
                 f"pulumi import --file {import_file}")
    return 0


def import_state_pulumi(file: Path, dir: Path, env, vars, var_files, format: str) -> int:
    from mlform.pulumi_import import propose_for
    from mlform.cli.commands import _session   # lazily, as app.py does: CLI start-up
    session = _session(Path(dir), env, vars, var_files)
    try:
        proposal = propose_for(session, file)
    finally:
        session.close()
    if format == "json":
        text = json.dumps(proposal.model_dump(mode="json"), indent=2, sort_keys=True)
    else:
        from mlform.views.pulumi_import import render_proposal
        text = render_proposal(proposal)
    out.write_or_print(text, None, "")
    return 0


def register(app: typer.Typer) -> None:
    """Add `export pulumi` and `import-state pulumi` to the app (one line in app.py)."""
    export_app = typer.Typer(no_args_is_help=True, help="Write the stack for another tool.")
    import_app = typer.Typer(no_args_is_help=True,
                             help="Propose imports from another tool's state.")
    app.add_typer(export_app, name="export")
    app.add_typer(import_app, name="import-state")
    env_opt = typer.Option(None, "--env", "-e", help="Environment (environments/NAME.hcl).")
    var_opt = typer.Option(None, "--var", help="Set a variable: --var NAME=VALUE (repeatable).")
    file_opt = typer.Option(None, "--var-file", help="Read variable values from a file.")

    @export_app.command("pulumi")
    def export_pulumi_command(
            dir: Path = typer.Argument(Path("."), help="The stack directory.",
                                       show_default=False),
            env: Optional[str] = env_opt, var: Optional[List[str]] = var_opt,
            var_file: Optional[List[Path]] = file_opt,
            out_dir: Path = typer.Option(..., "--out", metavar="DIR",
                                         help="The Pulumi project directory to write."),
            import_file: Optional[Path] = typer.Option(
                None, "--import-file", metavar="FILE",
                help="Also write Pulumi's bulk-import JSON of the objects that exist.")) -> None:
        """A Pulumi Python program declaring the stack environment's objects."""
        guarded(export_pulumi, dir, env, var or [], var_file or [], out_dir, import_file)

    @import_app.command("pulumi")
    def import_state_pulumi_command(
            file: Path = typer.Argument(..., metavar="STACK_EXPORT.json",
                                        help="The output of `pulumi stack export`."),
            dir: Path = typer.Option(Path("."), "--dir", help="The stack directory.",
                                     show_default=False),
            env: Optional[str] = env_opt, var: Optional[List[str]] = var_opt,
            var_file: Optional[List[Path]] = file_opt,
            format: ProposalFormat = typer.Option(ProposalFormat.human, "--format")) -> None:
        """The mlform import commands for a Pulumi stack's objects, and what has no
        equivalent."""
        guarded(import_state_pulumi, file, dir, env, var or [], var_file or [], format.value)
