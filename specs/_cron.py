"""Cron: the one parser of 5-field schedules, for validation, the local scheduler and
the conversion to AWS's schedule syntax.

`minute hour day-of-month month day-of-week`; each field is `*`, a value, a range
`a-b`, a step `*/n`, `a-b/n` or `a/n` (from a to the end of the field, as Vixie cron
reads it), or a comma list of these; months and weekdays also by name (`JAN`, `MON`);
weekday 0 and 7 are Sunday.  As in Vixie cron, when both day fields are restricted a
day matches if either does.

`parse_cron` returns a `Cron`: the set of values each field allows, which answers
`matches(moment)` and `next_after(moment)` and is what providers render into their
service's syntax.  `validate_cron` is the same parse, answering with the problem in
words (or None).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["Cron", "CronError", "parse_cron", "validate_cron", "CRON_FIELDS"]

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

#: (name, lowest, highest, names of the values from `lowest` (or 1 for months) on)
CRON_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day-of-month", 1, 31, ()),
               ("month", 1, 12, MONTHS), ("day-of-week", 0, 7, WEEKDAYS))

_ITEM = re.compile(r"^(?:(\*)|([0-9A-Za-z]+)(?:-([0-9A-Za-z]+))?)(?:/([0-9]+))?$")

#: The search for the next match gives up after this long (`0 0 30 2 *` never matches).
_HORIZON = timedelta(days=366 * 5)


class CronError(ValueError):
    """A schedule that is not a valid 5-field cron expression; the message says why."""


def _value(part: str, text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if part.isdigit():
        number = int(part)
    elif names and part.upper() in names:
        number = names.index(part.upper()) + (1 if name == "month" else 0)
    else:
        raise CronError(f'schedule {name} field "{text}" is not valid cron syntax')
    if not low <= number <= high:
        raise CronError(f"schedule {name} value {part} is out of range {low}-{high}")
    return number


def _field(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> frozenset[int]:
    """The set of values one field allows."""
    allowed: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if not match:
            raise CronError(f'schedule {name} field "{text}" is not valid cron syntax')
        star, first, last, step_text = match.groups()
        step = int(step_text) if step_text is not None else None
        if step == 0:
            raise CronError(f'schedule {name} field "{text}" has a step of 0')
        if star:
            start, end = low, high
        else:
            start = _value(first, text, name, low, high, names)
            if last is not None:
                end = _value(last, text, name, low, high, names)
                if start > end:
                    raise CronError(f'schedule {name} field "{text}" has a range that runs '
                                    "backwards")
            else:
                end = high if step else start      # `5/15` means 5-59/15, as Vixie cron
        allowed.update(range(start, end + 1, step or 1))
    return frozenset(allowed)


@dataclass(frozen=True)
class Cron:
    """A parsed 5-field cron expression: the values each field allows."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]     # 0 = Sunday (7 is folded into 0)
    any_day: bool                # day-of-month is `*` (or `*/n`)
    any_weekday: bool            # day-of-week is `*` (or `*/n`)

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
        raise CronError(f'schedule "{self.expression}" matches no time in the next five years')


def parse_cron(expression: str) -> Cron:
    """Parse `minute hour day-of-month month day-of-week`; CronError says what is wrong."""
    parts = expression.split()
    if len(parts) != 5:
        raise CronError(f'schedule must be a 5-field cron expression such as "*/10 * * * *", '
                        f'got "{expression}"')
    sets = [_field(text, *spec) for text, spec in zip(parts, CRON_FIELDS)]
    weekdays = frozenset(d % 7 for d in sets[4])
    return Cron(expression, sets[0], sets[1], sets[2], sets[3], weekdays,
                any_day=parts[2].startswith("*"), any_weekday=parts[4].startswith("*"))


def validate_cron(expression: str) -> str | None:
    """The problem with a 5-field cron expression, or None when it is valid."""
    try:
        parse_cron(expression)
    except CronError as exc:
        return str(exc)
    return None
