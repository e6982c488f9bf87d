"""Waiting in tests: poll a condition until it holds, or fail saying what never happened.

A test never sleeps a fixed time to let something happen elsewhere (a thread, a
server, a process): it waits for the thing itself, with a timeout that is only the
point at which the test gives up.

    from _waiting import wait_until
    wait_until(lambda: log.exists(), 10, "the scheduler's log")

(`tests/` is on `sys.path`: see tests/conftest.py.)
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")

__all__ = ["wait_until"]


def wait_until(predicate: Callable[[], T], timeout: float, what: str,
               interval: float = 0.02) -> T:
    """Call `predicate` until it returns something truthy and return that.

    Raises AssertionError naming `what` when `timeout` seconds pass first (the
    predicate is always asked once at or after the deadline before giving up).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
