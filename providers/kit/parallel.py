"""Running many independent reads at once: refresh, fact reads, a provider's lookups.

`run_parallel(items, fn, parallelism)` maps `fn` over `items` (results in order).
Threads only help calls that wait (network, disk, a provider's latency): under the
GIL, calls that never wait (an in-memory provider) run 2-3x slower on a pool than
inline.  So calls run inline, in growing batches, for as long as they keep the CPU
busy; as soon as a batch spends its time waiting, the rest goes to the pool (chunked,
so short calls don't drown in overhead).  A waiting provider pays one inline call for
the probe.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from typing import Callable, Iterable, TypeVar

__all__ = ["run_parallel"]

# The work one pool task should carry at least (see `run_parallel`).
_CHUNK_S = 0.005

T = TypeVar("T")
R = TypeVar("R")


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def run_parallel(items: list[T], fn: Callable[[T], R], parallelism: int,
                 name: str = "mlform-read") -> list[R]:
    """`[fn(x) for x in items]`, overlapping the calls that wait (see the module)."""
    if not items:
        return []
    if parallelism <= 1 or len(items) == 1:
        return [fn(x) for x in items]
    out: list = []
    pos, batch, per_item = 0, 1, 0.0
    while pos < len(items):
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        done = items[pos:pos + batch]
        out.extend(fn(x) for x in done)
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        pos += batch
        batch = min(batch * 2, 256)
        per_item = wall / len(done)
        if wall > 2 * cpu + 0.002:
            break                       # the calls wait on something: overlap the rest
    rest = items[pos:]
    if not rest:
        return out
    # A chunk costs the pool ~50 us: calls that take longer than _CHUNK_S go one by one,
    # so no thread is left with a long chunk while the others have finished.
    chunk = max(1, min(64, len(rest) // (parallelism * 4), int(_CHUNK_S / per_item)))
    with cf.ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix=name) as pool:
        parts = pool.map(lambda part: [fn(x) for x in part], _chunks(rest, chunk))
        return out + [r for part in parts for r in part]
