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
