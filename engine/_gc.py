"""Pausing Python's cyclic garbage collector around a big, I/O-free allocation burst.

The planning walk of 10,000 instances allocates about a million small dicts,
lists and dataclasses that all stay alive until the plan is returned; decoding
a 10,000-resource state file, a few hundred thousand.  The cyclic collector
cannot free any of them, yet its full passes walk every one: measured, a fifth
of a 10,000-instance plan, and growing faster than linearly with the stack.
So those bursts pause automatic collection (as `timeit` does) and resume it
afterwards; reference counting still frees everything acyclic at once, and
the few cycles left are collected by the next pass.

Only for bounded work that calls no provider I/O (decoding the state, the
planning walk): a long apply or refresh keeps the collector running.  Nesting and threads are safe:
only the outermost pause, if it found the collector enabled, turns it back on.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from typing import Iterator

_lock = threading.Lock()
_depth = 0
_resume = False


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()


__all__ = ["paused_gc"]
