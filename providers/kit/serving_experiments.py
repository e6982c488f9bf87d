"""The model server's experiments, apart from HTTP: the spec's ``experiment`` checked,
the routes and sticky keys, the ids of answers that feedback may name, the shadow's
mirror thread and feedback checked before it is recorded.

Standalone, like `serving.py` (which runs by file path with providers/kit/ first on
sys.path and imports this module by name): stdlib, `bandit` and `serving_capture`.

* `Experiment.of(spec["experiment"])`: the experiment, checked (ValueError says what
  is wrong); `status()` for /v2/admin/status.
* `Route`: one model served as one variant in one role (live or shadow).
* `sticky_point(key)`, `by_point(point, weights)`, `sticky_value(sticky, doc, request)`:
  a sticky key's place in [0, 1) (blake2b: the same in every process) mapped onto
  cumulative weights, and where a request carries its key.
* `IssuedIds`: request id -> the variant that answered (the newest 100,000), read back
  from the capture's tail at start (`recover`).
* `Mirror`: the shadow's calls on one thread behind a bounded queue.
* `read_feedback(experiment, body, issued)`: a ``POST .../feedback`` body -> (request
  id, variant, reward), or `FeedbackRefused` with the HTTP status; `feedback_line`
  is what an A/B or shadow experiment appends, `record_feedback` a bandit's update.

`serving.py` routes requests with these (`Server.pick`, `Server.mirror_request`) and
binds them as its own names, so the request path reads module globals as before.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

try:
    from . import bandit
    from .serving_capture import Handoff, Sampler, loads, rotated_name
except ImportError:
    import bandit
    from serving_capture import Handoff, Sampler, loads, rotated_name

EXPERIMENT_TYPES = ("ab", "shadow", "bandit")
REWARDS = ("binary", "continuous")
#: the variant of a spec's model that names none (an endpoint with one `model`)
DEFAULT_VARIANT = "primary"


@dataclass(frozen=True)
class Experiment:
    """The spec's ``experiment``, checked: how requests are split, what feedback does."""

    type: str
    sticky: tuple[str, str] | None      # ("header", lower-cased name) | ("input", name)
    shadow_percent: int
    reward: str
    floor_percent: float
    state_path: str | None
    feedback_path: str | None

    @classmethod
    def of(cls, doc: dict | None) -> "Experiment | None":
        if not doc:
            return None
        kind = doc.get("type")
        if kind not in EXPERIMENT_TYPES:
            raise ValueError(f"experiment type {kind!r} is not one of {', '.join(EXPERIMENT_TYPES)}")
        sticky = None
        if doc.get("sticky_key"):
            source, _, field = str(doc["sticky_key"]).partition(":")
            if source not in ("header", "input") or not field:
                raise ValueError(f"sticky_key {doc['sticky_key']!r} must be "
                                 "'header:NAME' or 'input:NAME'")
            sticky = (source, field.lower() if source == "header" else field)
        percent = int(doc.get("shadow_percent") or 0)
        if not 0 <= percent <= 100:
            raise ValueError(f"shadow_percent {percent} is not within 0-100")
        # a bandit's posterior needs to know; other experiments take any number unless
        # told the rewards are binary
        reward = doc.get("reward") or ("binary" if kind == "bandit" else "continuous")
        if reward not in REWARDS:
            raise ValueError(f"reward {reward!r} is not one of {', '.join(REWARDS)}")
        floor = doc.get("floor_percent")
        return cls(kind, sticky, percent, reward, 5.0 if floor is None else float(floor),
                   doc.get("state_path"), doc.get("feedback_path"))

    def status(self) -> dict:
        return {"type": self.type,
                "sticky_key": ":".join(self.sticky) if self.sticky else None,
                "shadow_percent": self.shadow_percent, "reward": self.reward,
                "floor_percent": self.floor_percent, "state_path": self.state_path,
                "feedback_path": self.feedback_path}


@dataclass(frozen=True)
class Route:
    """One model the endpoint serves, as one variant in one role."""

    variant: str
    role: str                   # "live" (answers callers) | "shadow" (mirrored to)
    weight: int
    model: Any                  # serving_runtime.Predictor


def sticky_point(key: str) -> float:
    """A key's place in [0, 1): blake2b, so the same in every process and every run
    (Python's own hash of a str is salted per process)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def by_point(point: float, weights: list[float] | tuple[float, ...]) -> int:
    """The index whose share of the cumulative weights holds `point` (in [0, 1))."""
    target = point * sum(weights)
    reached = 0.0
    last = 0
    for i, weight in enumerate(weights):
        if weight > 0:
            reached += weight
            last = i
            if target < reached:
                return i
    return last


def sticky_value(sticky: tuple[str, str], doc: Any, request: Any) -> str | None:
    """The request's sticky key: a header, else ``parameters.NAME`` or the first value of
    the input tensor named NAME; None when the request has none."""
    source, field = sticky
    if source == "header":
        return request.headers.get(field) or None
    if not isinstance(doc, dict):
        return None
    parameters = doc.get("parameters")
    if isinstance(parameters, dict) and parameters.get(field) is not None:
        return str(parameters[field])
    inputs = doc.get("inputs")
    for item in inputs if isinstance(inputs, list) else ():
        if isinstance(item, dict) and item.get("name") == field:
            data = item.get("data")
            while isinstance(data, list) and data:
                data = data[0]
            return None if data is None or isinstance(data, list) else str(data)
    return None


#: ids of answers given under an experiment that feedback may name (the newest kept)
ISSUED_MAX = 100_000
#: capture read back at start to find them again: at most this many bytes, newest first
ISSUED_READ_BYTES = 64 * 1024 * 1024
#: a live capture line's start, as `serving_capture.capture_record` writes it (json and orjson alike)
_ISSUED_LINE = re.compile(rb'"request_id":"((?:[^"\\]|\\.)*)","variant":"((?:[^"\\]|\\.)*)",'
                          rb'"role":"live"')


class IssuedIds:
    """request id -> the variant that answered it, for the newest `limit` answers.

    Touched by the event loop only (`add`, `get`), once it is serving; `recover` runs
    before then, in the loader thread."""

    def __init__(self, limit: int = ISSUED_MAX) -> None:
        self.limit = limit
        self._ids: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, request_id: str, variant: str) -> None:
        ids = self._ids
        ids[request_id] = variant
        if len(ids) > self.limit:
            ids.popitem(last=False)

    def get(self, request_id: str) -> str | None:
        return self._ids.get(request_id)

    def update(self, newer: "IssuedIds") -> None:
        """Add `newer`'s ids (oldest first), as if issued after these."""
        for request_id, variant in list(newer._ids.items()):
            self.add(request_id, variant)

    def recover(self, capture_path: str, max_files: int) -> int:
        """Read the ids of the live answers back from the end of the capture (the live file,
        then rotated ones, newest first): feedback for requests answered before a restart
        still counts. Returns how many were found."""
        found: list[tuple[str, str]] = []
        budget = ISSUED_READ_BYTES
        for path in [capture_path] + [rotated_name(capture_path, n) for n in range(1, max_files)]:
            if budget <= 0 or len(found) >= self.limit:
                break
            try:
                with open(path, "rb") as fh:
                    size = fh.seek(0, os.SEEK_END)
                    start = max(0, size - budget)
                    fh.seek(start)
                    chunk = fh.read()
            except OSError:
                continue
            budget -= len(chunk)
            if start:       # a cut first line is not a record
                chunk = chunk[chunk.find(b"\n") + 1:]
            older = [(loads(b'"' + m[1] + b'"'), loads(b'"' + m[2] + b'"'))
                     for m in _ISSUED_LINE.finditer(chunk)]
            found[:0] = older
        for request_id, variant in found[-self.limit:]:
            self._ids.setdefault(request_id, variant)
        return len(found[-self.limit:])


#: shadow calls that may wait for the mirror thread before more are dropped
SHADOW_QUEUE = 1_000


class Mirror(Handoff):
    """Shadow calls, off the request path: the request hands a job to `submit`, which
    returns at once; one thread takes the jobs waiting (up to `MIRROR_BATCH`) and hands
    them to `handle` together, so the shadow runs one forward pass for all of them. A
    full queue drops the job and counts it."""

    def __init__(self, handle: Any, size: int | None = None) -> None:
        super().__init__(size or SHADOW_QUEUE)
        self.sampler = Sampler()
        self._handle = handle
        threading.Thread(target=self._run, name="shadow-mirror", daemon=True).start()

    def _run(self) -> None:
        while True:
            jobs = [self._queue.get()]
            # Let the next mirrored requests queue up rather than waking for each: every
            # wake-up of this thread (and of the process pool's threads) takes the GIL from
            # the event loop answering callers; a shadow answer may well be late.
            time.sleep(MIRROR_GATHER_S)
            while len(jobs) < MIRROR_BATCH:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._handle(jobs)
            except Exception as exc:    # the handler reports its own errors; a last resort
                print(f"shadow: mirrored calls failed: {type(exc).__name__}: {exc}", flush=True)


#: mirrored requests the shadow answers in one forward pass, at most
MIRROR_BATCH = 256
#: how long the mirror lets requests gather before a forward pass (seconds)
MIRROR_GATHER_S = 0.005


# ----------------------------------------------------------------- feedback

class FeedbackRefused(Exception):
    """A feedback body that is not taken: the message and the HTTP status to answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def read_feedback(experiment: Experiment, body: bytes,
                  issued: IssuedIds) -> tuple[str, str, float]:
    """A ``POST .../feedback`` body -> (request id, the variant that answered it, reward);
    `FeedbackRefused` (400 bad body or reward, 404 unknown id) says why not."""
    try:
        doc = loads(body)
    except ValueError as exc:
        raise FeedbackRefused(f"the body is not JSON: {exc}", 400) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("request_id"), str) \
            or not doc["request_id"]:
        raise FeedbackRefused('the body needs "request_id": the "id" of an answer, and "reward"',
                              400)
    request_id = doc["request_id"]
    try:
        reward = bandit.validate_reward(experiment.reward, doc.get("reward"))
    except ValueError as exc:
        raise FeedbackRefused(str(exc), 400) from None
    variant = issued.get(request_id)
    if variant is None:
        raise FeedbackRefused(f"no answer with id {request_id!r} is known here (the newest "
                              f"{issued.limit} answers' ids are kept)", 404)
    return request_id, variant, reward


def feedback_line(request_id: str, variant: str, reward: float) -> dict:
    """The feedback log's record of one reward (contract section 3), for an experiment
    that is no bandit (a bandit's `Policy.record` writes its own)."""
    return {"time": time.time(), "request_id": request_id, "variant": variant,
            "reward": reward}


def record_feedback(policy: Any, request_id: str, variant: str, reward: float) -> dict:
    """A bandit's feedback, in a worker thread: the policy's log line and update, then a
    snapshot when the last one is old enough."""
    record = policy.record(request_id, variant, reward)
    policy.maybe_save()
    return record
