"""The one load generator of the serving benchmarks: a minimal asyncio HTTP/1.1 client
that sends the same POST over keep-alive connections at a bounded concurrency.

Used by `tests/bench/test_serving.py` and by the KServe/MLServer peer benchmark
(`tests/bench/peers/serving.py`), so that every server is driven by the same client.
It is deliberately small: an httpx client costs several times what the server does per
request, and on a 2-core machine it would be the client that is measured.  It reads the
status line and the ``content-length`` body of each answer, which is all that the
servers measured send on a keep-alive connection.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

WARMUP = 100


@dataclass(frozen=True)
class Load:
    """One load level's result: requests/s over the measured requests, latency
    percentiles in ms, and the answers that were not 200 (count and the first few)."""

    requests: int
    wall_s: float
    latencies_ms: list[float] = field(repr=False)
    errors: int
    failures: list[bytes] = field(repr=False)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-100) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def drive(port: int, path: str, body: bytes, concurrency: int, total: int,
                warmup: int = WARMUP, host: str = "127.0.0.1") -> Load:
    """``total`` requests (``total // concurrency`` on each of ``concurrency`` keep-alive
    connections), after ``warmup`` unmeasured ones spread over as many connections."""
    request = (f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
               f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
               ).encode() + body
    latencies: list[float] = []
    failures: list[bytes] = []
    errors = 0

    async def connection(count: int, keep: bool) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for _ in range(count):
                t0 = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), None)
                if length is None:
                    raise RuntimeError(f"an answer without content-length: {head[:300]!r}")
                answer = await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
                    if len(failures) < 3:
                        failures.append(head + answer)
                if keep:
                    latencies.append((time.perf_counter() - t0) * 1000)
        finally:
            writer.close()

    await asyncio.gather(*(connection(warmup // concurrency + 1, False)
                           for _ in range(concurrency)))
    t0 = time.perf_counter()
    await asyncio.gather(*(connection(total // concurrency, True) for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return Load(len(latencies), wall, latencies, errors, failures)


def run(port: int, path: str, body: bytes, concurrency: int, total: int,
        warmup: int = WARMUP, host: str = "127.0.0.1") -> Load:
    """`drive` on a fresh event loop, for callers outside asyncio."""
    return asyncio.run(drive(port, path, body, concurrency, total, warmup, host))
