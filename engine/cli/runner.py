"""Runs a command body and turns every failure into a diagnostic and an exit code.

No traceback reaches a user: DiagnosticErrors are rendered; anything else is
reported as an internal error (MLFORM_DEBUG=1 re-raises it for developers).
"""

from __future__ import annotations

import os
import sys

import typer

from mlform.cli import output as out
from mlform.diagnostics import DiagnosticError, error
from mlform.state import StateError


def show_diagnostics(diags) -> None:
    from mlform.views import render_diagnostics
    if not diags:
        return
    diags = list(dict.fromkeys(diags))  # one failure seen by several resources is shown once
    text = render_diagnostics(diags, color=False)
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()
    for d in diags:
        out.log.info("diagnostic %s: %s (%s)", d.severity, d.summary, d.source)


def guarded(fn, *args, **kwargs) -> None:
    try:
        code = fn(*args, **kwargs)
    except typer.Exit:
        raise
    except DiagnosticError as exc:
        show_diagnostics(exc.diagnostics or [error("operation failed")])
        raise typer.Exit(1)
    except StateError as exc:      # a backend problem (S3 unreachable...), not a bug
        show_diagnostics([exc.diagnostic()])
        raise typer.Exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        raise typer.Exit(1)
    except RecursionError:
        show_diagnostics([error("The spec is nested too deeply to evaluate",
                                hint="Simplify deeply nested expressions.")])
        raise typer.Exit(1)
    except Exception as exc:  # the last line of defence: never a traceback for users
        if os.environ.get("MLFORM_DEBUG"):
            raise
        show_diagnostics([error(f"internal error: {type(exc).__name__}: {exc}",
                                hint="This is a bug in mlform; rerun with MLFORM_DEBUG=1 and report it.")])
        raise typer.Exit(1)
    raise typer.Exit(code or 0)
