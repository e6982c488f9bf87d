"""The monitor scheduler: `python -m mlform.providers.local.scheduler MONITOR_JSON`.

A detached process the local provider starts for a monitor with a `schedule`.  It sleeps
until the next minute the 5-field cron expression matches (local time), runs the same
check as `mlform monitor run` (`monitors.run_check`), and loops; it re-reads monitor.json
before every run, so an update that keeps the schedule needs no restart.  SIGTERM (or
SIGINT) ends it cleanly after the check in progress, if any; it also ends when its
monitor.json is gone (the monitor was deleted).  It logs to `scheduler.log` next to
monitor.json.  The path of monitor.json on its command line is how the provider
recognises it as its own (see `processes.is_ours`).

The schedule is parsed by `mlform.specs.parse_cron`, the one cron parser (DESIGN.md
section 6: the provider kit and specs hold what providers share).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path

from mlform.specs import parse_cron

__all__ = ["serve", "main"]

# ------------------------------------------------------------------ the program


def _logger(path: Path) -> logging.Logger:
    log = logging.getLogger("mlform.monitor.scheduler")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def _wait_until(when: datetime, stop: threading.Event) -> None:
    """Sleep until `when`, in short naps so a changed clock or a stop is noticed."""
    while not stop.is_set():
        left = (when - datetime.now()).total_seconds()
        if left <= 0:
            return
        stop.wait(min(left, 30.0))


def serve(spec_path: Path, stop: threading.Event, log: logging.Logger) -> int:
    """The scheduler loop (separate from `main` so it can be driven in a test)."""
    from mlform.providers.local.env import read_json
    from mlform.providers.local.monitors import MonitorError, run_check

    while not stop.is_set():
        spec = read_json(spec_path)
        if not isinstance(spec, dict):
            log.info("%s is gone: the monitor was deleted; exiting", spec_path)
            return 0
        if not spec.get("schedule"):
            log.info("%s has no schedule any more; exiting", spec.get("address"))
            return 0
        try:
            when = parse_cron(spec["schedule"]).next_after(datetime.now())
        except ValueError as exc:
            log.error("%s: bad schedule %r: %s; exiting", spec.get("address"), spec["schedule"], exc)
            return 1
        log.info("%s: next check at %s", spec["address"], when.isoformat(timespec="minutes"))
        _wait_until(when, stop)
        if stop.is_set():
            break
        spec = read_json(spec_path)          # it may have changed while we slept
        if not isinstance(spec, dict):
            continue
        try:
            report = run_check(spec)
        except MonitorError as exc:
            log.error("%s: check failed: %s", spec["address"], exc)
            continue
        except Exception:                    # keep scheduling: one bad run must not end it
            log.exception("%s: check crashed", spec["address"])
            continue
        verdict = "BREACH " + "; ".join(report["breaches"]) if report["breached"] else "ok"
        log.info("%s: %s (%s)", spec["address"], verdict, report["report_path"])
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m mlform.providers.local.scheduler MONITOR_JSON\n")
        return 2
    spec_path = Path(args[0]).resolve()
    log = _logger(spec_path.parent / "scheduler.log")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("started for %s", spec_path)
    return serve(spec_path, stop, log)


if __name__ == "__main__":
    sys.exit(main())
