"""`mlform reconcile`: the command, its signals, its log lines and its metrics server.

The loop itself is `mlform.reconcile`; this module owns what only a CLI may do:
signal handlers, printing one line per cycle, and exit codes.

Signals: the first SIGTERM or SIGINT lets the cycle in flight finish (an apply runs to
its end) and starts no new one; the process then exits 0.  A second one cancels the
apply in flight (operations already started finish and are recorded); a third exits
at once (the state journal keeps what was done, as for `mlform apply`).

Exit codes: 0 when stopped by a signal; with `--once` or `--cycles N`, 1 when the last
cycle failed or was refused, else 0.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
import time
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from mlform.cli import output as out
from mlform.cli.runner import guarded, show_diagnostics
from mlform.diagnostics import DiagnosticError

__all__ = ["register", "reconcile"]


class AutoApply(str, Enum):
    none = "none"
    drift = "drift"
    all = "all"


def register(app: typer.Typer) -> None:
    """Add `reconcile` to the app (one line in app.py)."""

    @app.command("reconcile")
    def reconcile_command(
        dir: Path = typer.Argument(Path("."), show_default=False,
                                   help="The stack directory (with --git: its path in the repository)."),
        env: Optional[str] = typer.Option(None, "--env", "-e", help="Environment (environments/NAME.hcl)."),
        var: Optional[List[str]] = typer.Option(None, "--var", help="Set a variable: --var NAME=VALUE (repeatable)."),
        var_file: Optional[List[Path]] = typer.Option(None, "--var-file", help="Read variable values from a file."),
        interval: str = typer.Option("60s", "--interval", help="Time between cycles: 60s, 5m, 1h."),
        auto_apply: AutoApply = typer.Option(AutoApply.none, "--auto-apply",
                                             help="What to apply: none (report only), drift (only "
                                                  "changes that heal drift), all."),
        git: Optional[str] = typer.Option(None, "--git", help="Pull this git repository each cycle."),
        branch: Optional[str] = typer.Option(None, "--branch", help="The branch to follow (default: the remote's)."),
        checkout: Optional[Path] = typer.Option(None, "--checkout",
                                                help="Where to keep the clone (default: .mlform/reconcile/<hash of URL>)."),
        metrics_addr: str = typer.Option("127.0.0.1:9464", "--metrics-addr",
                                         help="HOST:PORT for /metrics and /healthz, or 'off'."),
        once: bool = typer.Option(False, "--once", help="Run one cycle and exit."),
        cycles: Optional[int] = typer.Option(None, "--cycles", min=1, help="Run N cycles and exit."),
        parallelism: int = typer.Option(10, "--parallelism", min=1, help="Provider operations at once."),
    ) -> None:
        """Pull, plan and apply at an interval (GitOps): metrics, health, audit."""
        guarded(reconcile, dir, env=env, vars=var or [], var_files=var_file or [],
                interval=interval, auto_apply=auto_apply.value, git=git, branch=branch,
                checkout=checkout, metrics_addr=metrics_addr, once=once, cycles=cycles,
                parallelism=parallelism)


def reconcile(dir: Path, *, env, vars, var_files, interval: str, auto_apply: str, git, branch,
              checkout, metrics_addr: str, once: bool, cycles, parallelism: int) -> int:
    from mlform.reconcile import (DirectorySource, GitSource, ReconcileOptions, Reconciler,
                                  parse_duration)
    from mlform.reconcile_metrics import Health, MetricsServer, ReconcileMetrics, parse_address
    if once and cycles is not None:
        raise DiagnosticError.single("--once and --cycles cannot be combined")
    if (branch or checkout) and not git:
        raise DiagnosticError.single("--branch and --checkout need --git")
    if git and Path(dir).is_absolute():
        raise DiagnosticError.single(f"With --git, DIR is the stack's path inside the repository, "
                                     f"not {dir}", hint="Give a relative path, e.g. stacks/fraud.")
    interval_s = parse_duration(interval)
    count = 1 if once else cycles
    if git:
        where = checkout or Path(".mlform") / "reconcile" / hashlib.sha256(
            git.encode()).hexdigest()[:12]
        source = GitSource(git, Path(where).absolute(), branch=branch, subdir=Path(dir))
    else:
        source = DirectorySource(Path(dir))
    options = ReconcileOptions(env=env, vars=tuple(vars), var_files=tuple(var_files),
                               auto_apply=auto_apply, interval_s=interval_s,
                               parallelism=parallelism)
    metrics, health = ReconcileMetrics(), Health(interval_s)
    reconciler = Reconciler(source, options, metrics, health, progress=_progress)
    server = None
    if metrics_addr.lower() not in ("off", "none", ""):
        host, port = parse_address(metrics_addr)
        server = MetricsServer(metrics, health, host, port).start()
    every = "once" if once else (f"{count} cycles" if count else f"every {interval}")
    _line(f"reconciling {source.describe()} ({options.env or 'default'} environment), "
          f"{every}, auto-apply {auto_apply}"
          + (f"; metrics on {server.url}/metrics, health on {server.url}/healthz" if server else ""))
    signals = _Signals(reconciler)
    try:
        with signals:
            last = reconciler.run(_report, cycles=count)
    finally:
        if server is not None:
            server.stop()
    if signals.count:
        _line("stopped")
        return 0
    return 0 if last is None or last.ok else 1


class _Signals:
    """SIGTERM/SIGINT: first finish the cycle, then cancel the apply, then exit now."""

    def __init__(self, reconciler) -> None:
        self.reconciler = reconciler
        self.count = 0
        self.previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.count == 1:
            self.reconciler.stop()
            _line(f"{name} received: finishing the cycle in flight, then stopping "
                  "(send it again to cancel the apply in flight)", err=True)
        elif self.count == 2:
            if self.reconciler.cancel_apply():
                _line(f"{name} received again: finishing the operations in flight, starting "
                      "no more", err=True)
        else:
            _line("exiting now; the state journal keeps what was done", err=True)
            os._exit(1)

    def __exit__(self, *exc) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)


# reentrant: a signal handler prints on the main thread, which may be printing already
_print_lock = threading.RLock()


def _line(text: str, *, err: bool = False) -> None:
    """One log line, timestamped (UTC), written whole (workers report progress too)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    stream = sys.stderr if err else sys.stdout
    with _print_lock:
        stream.write(f"{stamp} {text}\n")
        stream.flush()
    out.log.info("reconcile: %s", text)


def _progress(event) -> None:
    suffix = f" (waiting on {event.waiting_on})" if event.waiting_on else ""
    _line(f"  {event.address}: {event.message}{suffix}")


def _report(result) -> None:
    """The cycle's one line (stdout when it succeeded, stderr otherwise), then its
    diagnostics (errors, and warnings such as advisory policies)."""
    parts = [f"cycle {result.number} {result.outcome}"]
    if result.revision:
        parts.append(f"at {result.revision[:12]}")
    timing = [f"drift {result.drifted}"] if result.plan_s is not None else []
    if result.plan_s is not None:
        timing.append(f"plan {result.plan_s:.2f}s")
    if result.apply_s is not None:
        timing.append(f"apply {result.apply_s:.2f}s")
    text = " ".join(parts) + f": {result.message}" + (f" ({', '.join(timing)})" if timing else "")
    _line(text, err=not result.ok)
    if result.diagnostics:
        show_diagnostics(result.diagnostics)
