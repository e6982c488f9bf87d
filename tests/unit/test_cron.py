"""The one cron parser (`mlform.specs.parse_cron`): what the local scheduler, the
sagemaker provider's schedule conversion and spec validation all use."""

from __future__ import annotations

from datetime import datetime

import pytest

from mlform.specs import CronError, parse_cron, validate_cron

T = datetime(2024, 5, 6, 14, 30)      # a Monday


@pytest.mark.parametrize("expression,moment,expected", [
    ("* * * * *", T, True),
    ("*/10 * * * *", T, True),
    ("*/7 * * * *", T, False),
    ("30 14 * * *", T, True),
    ("0,15,30,45 * * * *", T, True),
    ("20-40 * * * *", T, True),
    ("31-40 * * * *", T, False),
    ("10-40/10 * * * *", T, True),
    ("5/25 * * * *", T, True),             # 5, 30, 55
    ("* 9-17 * * 1-5", T, True),           # office hours on a Monday
    ("* * * * 0", T, False),
    ("* * * * 7", datetime(2024, 5, 5, 1, 0), True),   # 7 is Sunday too
    ("* * * * MON", T, True),
    ("* * * MAY *", T, True),
    ("* * 1 * *", T, False),
    ("* * 1 * 1", T, True),                # both day fields restricted: either matches
    ("* * 6 * 0", T, True),
    ("* * */2 * 1", T, False),             # day-of-month starts with *: both must match
])
def test_cron_matches(expression, moment, expected):
    assert parse_cron(expression).matches(moment) is expected


@pytest.mark.parametrize("expression,expected", [
    ("*/10 * * * *", datetime(2024, 5, 6, 14, 40)),
    ("* * * * *", datetime(2024, 5, 6, 14, 31)),
    ("0 0 * * *", datetime(2024, 5, 7, 0, 0)),
    ("30 14 * * *", datetime(2024, 5, 7, 14, 30)),      # strictly after
    ("0 9 * * 0", datetime(2024, 5, 12, 9, 0)),
    ("0 0 29 2 *", datetime(2028, 2, 29, 0, 0)),
    ("15 3 1 JAN *", datetime(2025, 1, 1, 3, 15)),
])
def test_cron_next_after(expression, expected):
    assert parse_cron(expression).next_after(T.replace(second=12)) == expected


@pytest.mark.parametrize("expression", ["* * * *", "61 * * * *", "*/0 * * * *", "5-1 * * * *",
                                        "x * * * *", "* * 0 * *", "* * * 13 *"])
def test_cron_rejects(expression):
    with pytest.raises(ValueError):
        parse_cron(expression)


def test_cron_that_never_matches():
    with pytest.raises(ValueError, match="no time"):
        parse_cron("0 0 30 2 *").next_after(T)


def test_validate_cron_says_what_is_wrong():
    assert validate_cron("*/10 * * * *") is None
    assert validate_cron("* * *") == ('schedule must be a 5-field cron expression such as '
                                      '"*/10 * * * *", got "* * *"')
    assert validate_cron("61 * * * *") == "schedule minute value 61 is out of range 0-59"
    assert validate_cron("*/0 * * * *") == 'schedule minute field "*/0" has a step of 0'
    assert validate_cron("* * * FOO *") == 'schedule month field "FOO" is not valid cron syntax'


def test_cron_errors_are_value_errors():
    with pytest.raises(CronError):
        parse_cron("5-1 * * * *")
    assert issubclass(CronError, ValueError)
