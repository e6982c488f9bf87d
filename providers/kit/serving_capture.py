"""The model server's capture writer: captured requests (and an experiment's feedback)
appended as JSON lines off the request path, rotated by size and age.

Standalone, like `serving.py` (which runs by file path with providers/kit/ first on
sys.path and imports this module by name): stdlib, and orjson when installed.

* `CaptureLog(path, limits)`: a bounded queue and one writer thread; `submit` never
  blocks (a full queue drops and counts), rotation ``path`` -> ``path.1`` -> ...
* `CaptureLimits.of(spec["capture"])`: bytes per file, files kept, age, queue size.
* `rotated_name(path, n)`: the N-th newest rotated file.
* `Sampler`: exact percent sampling (any 100 consecutive calls take p).
* `capture_record(...)`: what one captured answer becomes, built in the writer thread.
* `dumps` / `loads`: the server's JSON (orjson when installed, else json).

`serving.py` re-exports `CaptureLog`, `CaptureLimits` and `rotated_name`: tests,
`kit.monitor_check` and the kubernetes pod tests name them there too.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:        # the `local` extra brings orjson; plain json when it is not installed
    import orjson
except ImportError:  # pragma: no cover - exercised only without the extra
    orjson = None


def dumps(doc: Any) -> bytes:
    """Compact JSON: orjson when installed (numpy arrays encoded whole), else json."""
    if orjson is not None:
        return orjson.dumps(doc, default=str,
                            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    return json.dumps(doc, separators=(",", ":"), default=_plain).encode()


def _plain(value: Any) -> Any:
    """json's fallback for what orjson encodes natively: numpy arrays, else str()."""
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else str(value)


def loads(body: bytes) -> Any:
    return orjson.loads(body) if orjson is not None else json.loads(body)


#: Capture limits when the spec's ``capture`` names none (the `local` provider's
#: endpoint settings and the pods' defaults): 64 MB per file, 4 files (the live one
#: and 3 rotated ones), no age limit, 10,000 records waiting for the writer.
CAPTURE_MAX_BYTES = 64 * 1024 * 1024
CAPTURE_MAX_FILES = 4
CAPTURE_QUEUE = 10_000


def rotated_name(path: str, n: int) -> str:
    """``capture.jsonl`` -> ``capture.jsonl.N``: the N-th newest rotated file (1 = newest).
    `kit.monitor_check.capture_files` lists them in the same order (this module imports
    nothing of mlform, so the rule is written in both places)."""
    return f"{path}.{n}"


@dataclass(frozen=True)
class CaptureLimits:
    """How much capture one endpoint keeps on disk, and how many records may wait."""

    max_bytes: int = CAPTURE_MAX_BYTES
    max_files: int = CAPTURE_MAX_FILES
    max_age_s: float | None = None
    queue: int = CAPTURE_QUEUE

    @classmethod
    def of(cls, capture: dict) -> "CaptureLimits":
        age = capture.get("max_age_seconds")
        return cls(max_bytes=int(capture.get("max_bytes") or CAPTURE_MAX_BYTES),
                   max_files=max(1, int(capture.get("max_files") or CAPTURE_MAX_FILES)),
                   max_age_s=float(age) if age else None,
                   queue=max(1, int(capture.get("queue") or CAPTURE_QUEUE)))


class Sampler:
    """Exact sampling, not random: with p percent, call n is taken when floor(n*p/100)
    steps up, so any 100 consecutive calls take p of them (thread-safe)."""

    def __init__(self) -> None:
        self._seen = itertools.count(1)     # next() is atomic under the GIL

    def take(self, percent: int) -> bool:
        n = next(self._seen)
        return (n * percent) // 100 > ((n - 1) * percent) // 100


class Handoff:
    """A bounded queue its producers never wait on: `submit` returns at once, and when
    the queue is full the item is dropped and counted (`dropped`). The request path hands
    work to a background thread this way (the capture writer, the shadow's mirror)."""

    def __init__(self, size: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._drops = threading.Lock()
        self.dropped = 0

    def submit(self, item: Any) -> bool:
        """Queue `item`; False, and counted as dropped, when the queue is full."""
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            with self._drops:
                self.dropped += 1
            return False

    @property
    def pending(self) -> int:
        return self._queue.qsize()


class CaptureLog(Handoff):
    """Captured requests, written off the request path.

    A request hands its record to `submit`, which puts it on a bounded queue and
    returns at once; one writer thread turns records into JSON lines and appends
    them to ``path``.  When the queue is full the record is dropped and counted
    (`dropped`, served as ``mlform_capture_dropped_total``): a slow disk never
    slows an answer.  The file is rotated (``path`` -> ``path.1`` -> ``path.2`` ...)
    when the next line would take it past `max_bytes` or it is older than
    `max_age_s`, and only `max_files` files are kept, the oldest deleted.  A line is
    written whole with one write call and flushed whenever the queue runs empty,
    so a reader sees whole lines except at most a torn last one after a crash.

    Sampling is exact (`Sampler`). The feedback log is one of these too: it is a
    generic JSON-lines writer. `submit` (from `Handoff`) takes a record: a dict, or a
    callable that makes one in the writer thread.
    """

    def __init__(self, path: str, limits: CaptureLimits = CaptureLimits()) -> None:
        self.path = path
        self.limits = limits
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")
        self._size = self._file.tell()
        if self._size and not _ends_with_newline(path):
            # a crash left a torn last line: end it, so it stays one skipped line
            # instead of spoiling the first record written now
            self._file.write(b"\n")
            self._size += 1
        self._opened = self._birth(path)
        self._sampler = Sampler()
        super().__init__(limits.queue)
        self.written = 0
        self.rotations = 0
        self.failed = 0
        self._writer = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._writer.start()

    @staticmethod
    def _birth(path: str) -> float:
        """When the live file was started: its first line's time would do, but its
        change time is cheaper and as good for an age limit of minutes or more."""
        try:
            return min(os.stat(path).st_ctime, time.time())
        except OSError:
            return time.time()

    def sampled(self, percent: int) -> bool:
        return self._sampler.take(percent)

    # -- the writer thread ------------------------------------------------------

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            if record is _STOP:
                break
            self._write(record)
            if self._queue.empty():
                self._flush()       # monitors read the file while the server runs
        self._flush()

    def _write(self, record: Any) -> None:
        try:
            doc = record() if callable(record) else record
            line = dumps(doc) + b"\n"
        except Exception as exc:     # a record that cannot be written is counted, not fatal
            self.failed += 1
            print(f"capture: a record could not be written: {type(exc).__name__}: {exc}",
                  flush=True)
            return
        limits = self.limits
        if self._size and (self._size + len(line) > limits.max_bytes or (
                limits.max_age_s is not None and time.time() - self._opened >= limits.max_age_s)):
            self._rotate()
        try:
            self._file.write(line)
        except OSError as exc:
            self.failed += 1
            print(f"capture: writing {self.path} failed: {exc}", flush=True)
            return
        self._size += len(line)
        self.written += 1

    def _flush(self) -> None:
        try:
            self._file.flush()
        except OSError:
            pass

    def _rotate(self) -> None:
        """path.(N-1) is deleted, path.k becomes path.(k+1), path becomes path.1."""
        self._file.close()
        keep = self.limits.max_files - 1
        try:
            if keep < 1:
                os.unlink(self.path)
            else:
                try:
                    os.unlink(rotated_name(self.path, keep))
                except FileNotFoundError:
                    pass
                for n in range(keep - 1, 0, -1):
                    try:
                        os.replace(rotated_name(self.path, n), rotated_name(self.path, n + 1))
                    except FileNotFoundError:
                        pass
                os.replace(self.path, rotated_name(self.path, 1))
        except OSError as exc:
            print(f"capture: rotating {self.path} failed: {exc}", flush=True)
        self._file = open(self.path, "ab")
        self._size = self._file.tell()
        self._opened = time.time()
        self.rotations += 1

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then close (waits at most `timeout` seconds)."""
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:      # the writer is stuck: give up on what waits
            return
        self._writer.join(timeout)
        if not self._writer.is_alive():
            self._file.close()


_STOP = object()


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def capture_record(when: float, name: str, request_id: str, route: Any, latency_ms: float,
                   status: int, x: Any, y: Any, problem: str | None):
    """What the capture writer thread turns into one JSON line: the rows become
    {feature: value} objects there, not on the request path.  ``request_id``,
    ``variant`` and ``role`` come first, in this order: `serving_experiments.IssuedIds.
    recover` finds them there without parsing the line.  `route` is a
    `serving_experiments.Route`, `x` the input rows and `y` the outputs (or None)."""
    model = route.model

    def record() -> dict:
        doc = {"time": when, "request_id": request_id, "variant": route.variant,
               "role": route.role, "endpoint": name, "version": model.version,
               "latency_ms": latency_ms, "status": status,
               "inputs": ([dict(zip(model.inputs, row)) for row in x.tolist()]
                          if x is not None else None),
               "outputs": y.tolist() if y is not None else None}
        if problem:
            doc["error"] = problem
        return doc
    return record
