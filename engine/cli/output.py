"""Where the CLI writes: stdout for results, stderr for diagnostics; colour when a terminal."""

from __future__ import annotations

import logging
import os
import sys

import typer

_state = {"color": None}
log = logging.getLogger("mlform")


def configure(color: bool = True) -> None:
    tty = sys.stdout.isatty()
    _state["color"] = bool(color and tty and not os.environ.get("NO_COLOR"))
    path = os.environ.get("MLFORM_LOG")
    if path and not log.handlers:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)


def color() -> bool:
    if _state["color"] is None:
        configure()
    return bool(_state["color"])


def echo(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    stream = sys.stderr if err else sys.stdout
    if color():
        from rich.console import Console
        Console(file=stream, highlight=False, soft_wrap=True).print(text, end="\n" if nl else "")
    else:
        stream.write(_strip_markup(text) + ("\n" if nl else ""))
        stream.flush()


def raw(text: str) -> None:
    """Machine-readable output (JSON, XML): never styled."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def write_or_print(text: str, out_file, what: str) -> None:
    """A report to `out_file` (saying so on stderr), or to stdout when it is None; a file
    that cannot be written is a diagnostic."""
    text = text if text.endswith("\n") else text + "\n"
    if out_file is None:
        raw(text)
        return
    from mlform.diagnostics import DiagnosticError
    try:
        out_file.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DiagnosticError.single(f"Cannot write {what} to {out_file}: {exc.strerror}",
                                     hint="Choose a writable path for --out.")
    echo(f"Wrote {what} to {out_file}.", err=True)


def _strip_markup(text: str) -> str:
    if "[" not in text:
        return text
    from rich.text import Text
    try:
        return Text.from_markup(text).plain
    except Exception:
        return text


def fail_now(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(1)
