"""The monitor scheduler: `python -m mlform.providers.local.scheduler MONITOR_JSON`.

A detached process the local provider starts for a monitor with a `schedule`.  It sleeps
until the next minute the 5-field cron expression matches (local time), runs the same
check as `mlform monitor run` (`monitors.run_check`), and loops; it re-reads monitor.json
before every run, so an update that keeps the schedule needs no restart.  SIGTERM (or
SIGINT) ends it cleanly after the check in progress, if any; it also ends when its
monitor.json is gone (the monitor was deleted).  It logs to `scheduler.log` next to
monitor.json.  The path of monitor.json on its command line is how the provider
recognises it as its own (see `processes.is_ours`).

Cron: `minute hour day-of-month month day-of-week`; each field is `*`, a value, a range
`a-b`, a step `*/n`, `a-b/n` or `a/n` (from a to the end), or a comma list of these;
months and weekdays also by name (`JAN`, `MON`); weekday 0 and 7 are Sunday.  As in
Vixie cron, when both day fields are restricted a day matches if either does.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

__all__ = ["Cron", "parse_cron", "main"]

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

# (name, lowest, highest, names of the values from `lowest` on)
_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day-of-month", 1, 31, ()),
           ("month", 1, 12, _MONTHS), ("day-of-week", 0, 7, _DAYS))

#: The search for the next match gives up after this long (`0 0 30 2 *` never matches).
_HORIZON = timedelta(days=366 * 5)


def _value(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if text.isdigit():
        number = int(text)
    elif text.upper() in names:
        number = names.index(text.upper()) + low
    else:
        raise ValueError(f"cron {name} field: {text!r} is not a number")
    if not low <= number <= high:
        raise ValueError(f"cron {name} field: {number} is out of range {low}-{high}")
    return number


def _field(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> frozenset[int]:
    """The set of values one field allows."""
    allowed: set[int] = set()
    for item in text.split(","):
        span, _, step_text = item.partition("/")
        step = int(step_text) if step_text.isdigit() else None
        if step_text and not step:
            raise ValueError(f"cron {name} field: bad step in {item!r}")
        if span == "*":
            start, end = low, high
        elif "-" in span:
            first, _, last = span.partition("-")
            start, end = _value(first, name, low, high, names), _value(last, name, low, high, names)
            if start > end:
                raise ValueError(f"cron {name} field: range {span!r} runs backwards")
        else:
            start = _value(span, name, low, high, names)
            end = high if step else start      # `5/15` means 5-59/15, as Vixie cron
        allowed.update(range(start, end + 1, step or 1))
    return frozenset(allowed)


@dataclass(frozen=True)
class Cron:
    """A parsed 5-field cron expression."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]     # 0 = Sunday (7 is folded into 0)
    any_day: bool                # day-of-month is `*`
    any_weekday: bool            # day-of-week is `*`

    def _day_matches(self, moment: datetime) -> bool:
        weekday = (moment.weekday() + 1) % 7          # Python: Monday = 0; cron: Sunday = 0
        by_day, by_weekday = moment.day in self.days, weekday in self.weekdays
        if self.any_day or self.any_weekday:
            return by_day and by_weekday
        return by_day or by_weekday

    def matches(self, moment: datetime) -> bool:
        return (moment.minute in self.minutes and moment.hour in self.hours
                and moment.month in self.months and self._day_matches(moment))

    def next_after(self, moment: datetime) -> datetime:
        """The first matching minute strictly after `moment` (skipping whole months, days
        and hours that cannot match, so a search is a few hundred steps at most)."""
        t = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = moment + _HORIZON
        while t <= limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t += timedelta(minutes=1)
            else:
                return t
        raise ValueError("the cron expression matches no time in the next five years")


def parse_cron(expression: str) -> Cron:
    """Parse `minute hour day-of-month month day-of-week`; ValueError says what is wrong."""
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(f"a cron expression has 5 fields, got {len(parts)}: {expression!r}")
    sets = [_field(text, *spec) for text, spec in zip(parts, _FIELDS)]
    weekdays = frozenset(d % 7 for d in sets[4])
    return Cron(sets[0], sets[1], sets[2], sets[3], weekdays,
                any_day=parts[2].startswith("*"), any_weekday=parts[4].startswith("*"))


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
    from mlform.providers.local.common import read_json
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
