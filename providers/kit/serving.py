"""mlform's model server (Open Inference Protocol v2): the `local` provider starts one
detached process per endpoint, the `kubernetes` provider's endpoint pods run it.

Run as ``python -m mlform.providers.kit.serving SPEC_JSON`` (or by this file's
path, which is how the provider starts it: the module imports nothing of
mlform, so any interpreter with torch, fastapi and uvicorn can serve).
``SPEC_JSON`` is ``<root>/endpoints/<slug>/server.json``; its path on the
command line is also how the provider recognises the process as its own.

The spec (written by `endpoints.py`, mode 0600 because it holds the admin token)::

    {"address", "name", "host", "port", "token", "torch_threads", "generation",
     "models": [{"version": 3, "path": ".../versions/3", "weight": 90}, ...],
     "capture": {"path": ".../capture.jsonl", "sample_percent": 100, "max_bytes",
                 "max_files", "max_age_seconds", "queue"} | null}

(the capture limits are optional: `CaptureLimits` has the defaults; see `CaptureLog`
for the queue, the writer thread and rotation).

Routes (Open Inference Protocol v2, plus two admin routes):

* ``GET  /v2/health/live``, ``GET /v2/health/ready`` (200 once models are loaded)
* ``GET  /v2/models/{name}`` and ``/v2/models/{name}/versions/{v}`` (metadata)
* ``POST /v2/models/{name}/infer`` and ``/v2/models/{name}/versions/{v}/infer``
* ``GET  /v2/admin/status``  what is served (versions, weights, generation, pid, capture,
  the event loop and HTTP implementation in use)
* ``GET  /metrics``  Prometheus text (prometheus_client): inference requests by model,
  version and status code, their latency and rows per request as histograms, capture
  written / dropped / failed / rotated and the capture queue depth
* ``POST /v2/admin/reload``  re-read the spec, load new versions in a background
  thread and swap them in atomically once loaded (header ``x-mlform-token``).

Why a hot reload rather than a restart: every request reads the current
`Serving` snapshot once, so requests in flight finish on the old models and new
ones start on the new models; nothing is refused while a model is updated.

The listening socket is bound with SO_REUSEPORT so that a replacement process
(new torch settings, a hung server) can take over the same port before the old
one is stopped; the provider checks the port is free, or held by its own old
process, before it starts one.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import math
import os
import queue
import re
import signal
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import numpy
import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

try:        # the `local` extra brings orjson; plain json when it is not installed
    import orjson
except ImportError:  # pragma: no cover - exercised only without the extra
    orjson = None

# TorchScript is what the run contract saves; torch's notice that it is deprecated
# would only fill every server log.
warnings.filterwarnings("ignore", message=r"`torch\.jit", category=DeprecationWarning)

PLATFORM = "pytorch_torchscript"
TOKEN_HEADER = "x-mlform-token"

#: OIP datatypes accepted on input, and the torch dtype read before casting to float32.
DATATYPES: dict[str, torch.dtype] = {
    "FP32": torch.float32, "FP64": torch.float64, "FP16": torch.float16,
    "INT8": torch.int64, "INT16": torch.int64, "INT32": torch.int64, "INT64": torch.int64,
    "UINT8": torch.int64, "UINT16": torch.int64, "UINT32": torch.int64, "BOOL": torch.bool,
}


class BadRequest(Exception):
    """The request does not fit the model: answered 400 with an OIP error body."""


def _dumps(doc: Any) -> bytes:
    """Compact JSON: orjson when installed (numpy arrays encoded whole), else json."""
    if orjson is not None:
        return orjson.dumps(doc, default=str,
                            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    return json.dumps(doc, separators=(",", ":"), default=_plain).encode()


def _plain(value: Any) -> Any:
    """json's fallback for what orjson encodes natively: numpy arrays, else str()."""
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else str(value)


def _loads(body: bytes) -> Any:
    return orjson.loads(body) if orjson is not None else json.loads(body)


def _json(doc: Any, status: int = 200) -> Response:
    return Response(_dumps(doc), status_code=status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


# ----------------------------------------------------------------- models

@dataclass(frozen=True)
class LoadedVersion:
    """One model version in memory, with what its metadata route reports."""

    version: Any
    path: str
    module: Any                     # torch.jit.ScriptModule
    inputs: tuple[str, ...]         # feature names (signature.json, else x0..xF-1)
    outputs: tuple[str, ...]
    n_features: int | None
    n_outputs: int | None

    def metadata(self, name: str, versions: list) -> dict:
        return {"name": name, "versions": [str(v) for v in versions], "platform": PLATFORM,
                "inputs": [{"name": "input", "datatype": "FP32",
                            "shape": [-1, self.n_features if self.n_features else -1],
                            "features": list(self.inputs)}],
                "outputs": [{"name": "output", "datatype": "FP32",
                             "shape": [-1, self.n_outputs if self.n_outputs else -1],
                             "labels": list(self.outputs)}]}


def _first_linear_width(module: Any) -> int | None:
    """Input width of the first 2-D weight: a guess at the feature count without a signature."""
    for param in module.parameters():
        if param.dim() == 2:
            return int(param.shape[1])
    return None


def load_version(version: Any, path: str) -> LoadedVersion:
    """Load `model.pt` (TorchScript, CPU) and `signature.json`, and warm the module up."""
    directory = Path(path)
    module = torch.jit.load(str(directory / "model.pt"), map_location="cpu")
    module.eval()
    signature = {}
    sig_path = directory / "signature.json"
    if sig_path.exists():
        signature = json.loads(sig_path.read_text())
    inputs = tuple(str(x) for x in signature.get("inputs") or ())
    outputs = tuple(str(x) for x in signature.get("outputs") or ())
    n_features = len(inputs) or _first_linear_width(module)
    n_outputs = len(outputs) or None
    if n_features:
        # A few calls let the TorchScript profiling executor settle before traffic arrives,
        # and tell the output width when the signature does not.
        with torch.inference_mode():
            for rows in (1, 2, 8):
                out = _first_tensor(module(torch.zeros(rows, n_features)))
        n_outputs = n_outputs or (int(out.shape[-1]) if out.dim() > 1 else 1)
    if not inputs and n_features:
        inputs = tuple(f"x{i}" for i in range(n_features))
    if not outputs and n_outputs:
        outputs = tuple(f"y{i}" for i in range(n_outputs))
    return LoadedVersion(version, path, module, inputs, outputs, n_features, n_outputs)


def _first_tensor(value: Any) -> torch.Tensor:
    """Models may return a tensor, a tuple of tensors or a dict; serve the first tensor."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value:
        return _first_tensor(value[0])
    if isinstance(value, dict) and value:
        return _first_tensor(next(iter(value.values())))
    raise BadRequest(f"the model returned {type(value).__name__}, not a tensor")


def weighted_schedule(weights: list[int]) -> tuple[int, ...]:
    """Smooth weighted round-robin (as nginx does) over gcd-reduced weights.

    90/10 gives a cycle of ten picks with the minority spread out, so any 200
    consecutive requests split exactly 180/20.
    """
    positive = [w for w in weights if w > 0]
    if not positive:
        return ()
    g = reduce(math.gcd, positive)
    reduced = [max(w, 0) // g for w in weights]
    total = sum(reduced)
    current = [0] * len(reduced)
    out = []
    for _ in range(total):
        for i, w in enumerate(reduced):
            current[i] += w
        best = max(range(len(reduced)), key=lambda i: current[i])
        current[best] -= total
        out.append(best)
    return tuple(out)


# ----------------------------------------------------------------- capture

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


class CaptureLog:
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

    Sampling is exact, not random: with p percent, request n is kept when
    floor(n*p/100) steps up.
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
        self._seen = 0
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=limits.queue)
        self.written = 0
        self.dropped = 0
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
        with self._lock:
            self._seen += 1
            n = self._seen
        return (n * percent) // 100 > ((n - 1) * percent) // 100

    def submit(self, record: Any) -> bool:
        """Queue `record` (a dict, or a callable that makes one in the writer thread);
        False, and counted as dropped, when the queue is full. Never blocks."""
        try:
            self._queue.put_nowait(record)
            return True
        except queue.Full:
            with self._lock:
                self.dropped += 1
            return False

    @property
    def pending(self) -> int:
        return self._queue.qsize()

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
            line = _dumps(doc) + b"\n"
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


# ----------------------------------------------------------------- serving state

@dataclass(frozen=True)
class Serving:
    """An immutable snapshot: what one request sees from start to end."""

    generation: int
    versions: tuple[LoadedVersion, ...]
    weights: tuple[int, ...]
    schedule: tuple[int, ...]
    capture_percent: int | None     # None: capture off

    def by_version(self, wanted: str) -> LoadedVersion | None:
        return next((lv for lv in self.versions if str(lv.version) == wanted), None)


#: latency buckets (seconds): loopback answers take ~0.3 ms, a slow model seconds
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
#: rows per request buckets
ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)


class Telemetry:
    """The server's Prometheus metrics, in a registry of its own (prometheus_client).

    Per inference request, by model, version and HTTP status code: a count
    (``mlform_requests_total``), and by model and version its latency
    (``mlform_request_latency_seconds``) and rows (``mlform_request_rows``) as
    histograms.  The capture's counters are read from the `CaptureLog` when scraped
    (`collect`), so the request path only adds to the three metrics above; their
    labelled children are looked up once per (model, version, code) and kept.
    """

    def __init__(self, server: "Server") -> None:
        self._server = server
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter("mlform_requests", "inference requests answered",
                                 ("model", "version", "code"), registry=self.registry)
        self._latency = Histogram("mlform_request_latency_seconds",
                                  "time from reading the request to its answer",
                                  ("model", "version"), buckets=LATENCY_BUCKETS,
                                  registry=self.registry)
        self._rows = Histogram("mlform_request_rows", "rows per inference request",
                               ("model", "version"), buckets=ROWS_BUCKETS,
                               registry=self.registry)
        self._children: dict[tuple, tuple] = {}
        self.registry.register(_CaptureCollector(server))

    def observe(self, model: str, version: Any, code: int, seconds: float, rows: int) -> None:
        """One answered request (the request path: a dict look-up and three adds)."""
        key = (model, version, code)
        children = self._children.get(key)
        if children is None:
            labels = (model, str(version))
            children = self._children[key] = (
                self._requests.labels(*labels, str(code)), self._latency.labels(*labels),
                self._rows.labels(*labels))
        count, latency, rows_seen = children
        count.inc()
        latency.observe(seconds)
        if rows:
            rows_seen.observe(rows)


class _CaptureCollector:
    """The capture log's counters, read when scraped."""

    def __init__(self, server: "Server") -> None:
        self._server = server

    def describe(self) -> list:
        return []       # not known before the first scrape: collected each time

    def collect(self):
        capture = self._server.capture
        for name, help_text, value in (
                ("mlform_capture_written", "captured requests written to disk",
                 capture.written if capture else 0),
                ("mlform_capture_dropped",
                 "captured requests dropped because the writer's queue was full",
                 capture.dropped if capture else 0),
                ("mlform_capture_failed", "captured requests that could not be written",
                 capture.failed if capture else 0),
                ("mlform_capture_rotations", "capture files rotated",
                 capture.rotations if capture else 0)):
            yield CounterMetricFamily(name, help_text, value=value)
        yield GaugeMetricFamily("mlform_capture_queue_depth",
                                "captured requests waiting for the writer",
                                value=capture.pending if capture else 0)


class Server:
    """The process's state: the spec, the current `Serving` snapshot, the loader."""

    def __init__(self, spec_path: Path) -> None:
        self.spec_path = spec_path
        self.spec = read_spec(spec_path)
        self.name = self.spec["name"]
        self.started = time.time()
        self.serving: Serving | None = None
        self.loading_generation: int | None = None
        self.error: dict | None = None       # {"generation", "message"} of the last failed load
        self.requests = itertools.count()
        self.served = 0
        self.telemetry = Telemetry(self)
        self._cache: dict[tuple, LoadedVersion] = {}
        self._load_lock = threading.Lock()
        self.capture: CaptureLog | None = None
        self.config: Any = None              # uvicorn.Config, once `main` made it

    # -- loading ------------------------------------------------------------

    def load_async(self, spec: dict) -> None:
        self.loading_generation = spec.get("generation", 0)
        threading.Thread(target=self._load, args=(spec,), name="model-loader", daemon=True).start()

    def _load(self, spec: dict) -> None:
        """Load every version the spec names (reusing ones already in memory), then swap."""
        generation = spec.get("generation", 0)
        with self._load_lock:
            try:
                versions, weights = [], []
                for entry in spec["models"]:
                    key = (str(entry["version"]), entry["path"])
                    loaded = self._cache.get(key)
                    if loaded is None:
                        loaded = load_version(entry["version"], entry["path"])
                    versions.append(loaded)
                    weights.append(int(entry.get("weight", 100)))
                schedule = weighted_schedule(weights)
                if not schedule:
                    raise ValueError("no model version has a positive weight")
                capture = spec.get("capture")
                if capture:
                    limits = CaptureLimits.of(capture)
                    if self.capture is None or (self.capture.path, self.capture.limits) \
                            != (capture["path"], limits):
                        old, self.capture = self.capture, CaptureLog(capture["path"], limits)
                        if old is not None:
                            old.close()
                serving = Serving(generation, tuple(versions), tuple(weights), schedule,
                                  int(capture.get("sample_percent", 100)) if capture else None)
                # Keep only what the new snapshot serves; the old one stays referenced
                # by requests still in flight until they finish.
                self._cache = {(str(v.version), v.path): v for v in versions}
                self.spec = spec
                self.serving = serving          # the atomic switch
                self.error = None
                print(f"serving generation {generation}: "
                      + ", ".join(f"v{v.version}={w}" for v, w in zip(versions, weights)), flush=True)
            except Exception as exc:  # reported through /v2/admin/status, old models keep serving
                self.error = {"generation": generation, "message": f"{type(exc).__name__}: {exc}"}
                print(f"loading generation {generation} failed: {self.error['message']}", flush=True)
            finally:
                if self.loading_generation == generation:
                    self.loading_generation = None

    # -- admin --------------------------------------------------------------

    def status(self, loop: Any = None) -> dict:
        serving = self.serving
        return {
            "event_loop": _qualified(type(loop)) if loop is not None else None,
            "http": _qualified(getattr(self.config, "http_protocol_class", None)),
            "name": self.name, "pid": os.getpid(), "started": self.started,
            "host": self.spec["host"], "port": self.spec["port"],
            "torch_threads": torch.get_num_threads(),
            "ready": serving is not None,
            "generation": serving.generation if serving else None,
            "loading": self.loading_generation, "error": self.error,
            "versions": ([{"version": v.version, "weight": w, "path": v.path}
                          for v, w in zip(serving.versions, serving.weights)] if serving else []),
            "capture": (self._capture_status(serving.capture_percent)
                        if serving and serving.capture_percent is not None and self.capture else None),
            "requests": self.served,
        }

    def _capture_status(self, percent: int) -> dict:
        limits = self.capture.limits
        return {"path": self.capture.path, "sample_percent": percent,
                "max_bytes": limits.max_bytes, "max_files": limits.max_files,
                "max_age_seconds": limits.max_age_s, "queue": limits.queue}

    def metrics(self) -> str:
        """Prometheus text exposition of the server's metrics (`Telemetry`)."""
        return generate_latest(self.telemetry.registry).decode()

    def reload(self) -> tuple[int, dict]:
        try:
            spec = read_spec(self.spec_path)
        except (OSError, ValueError, KeyError) as exc:
            return 400, {"error": f"cannot read {self.spec_path}: {exc}"}
        if (spec["host"], spec["port"]) != (self.spec["host"], self.spec["port"]):
            return 409, {"error": "host or port changed: that needs a new process"}
        self.load_async(spec)
        return 202, {"generation": spec.get("generation", 0)}

    # -- inference ----------------------------------------------------------

    def pick(self, serving: Serving) -> LoadedVersion:
        n = next(self.requests)     # itertools.count: atomic under the GIL
        return serving.versions[serving.schedule[n % len(serving.schedule)]]


def _qualified(cls: Any) -> str | None:
    return f"{cls.__module__}.{cls.__name__}" if cls is not None else None


def read_spec(path: Path) -> dict:
    spec = json.loads(path.read_text())
    for key in ("name", "host", "port", "models"):
        if key not in spec:
            raise KeyError(f"the spec has no {key!r}")
    return spec


def parse_inputs(doc: Any, model: LoadedVersion) -> tuple[torch.Tensor, int]:
    """An OIP v2 request body -> a float32 [N, F] tensor (and N).

    Accepts one tensor ``[N, F]`` (any name), or one ``[N]``/``[N, 1]`` tensor per
    feature named as in the signature, stacked in signature order.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise BadRequest('the request needs "inputs": a non-empty list of tensors')
    tensors = [_tensor(item) for item in doc["inputs"]]
    if len(tensors) == 1:
        x = tensors[0][1]
        if x.dim() == 1:
            x = x.reshape(1, -1)
        if x.dim() != 2:
            raise BadRequest(f"input shape must be [N, F], got {list(x.shape)}")
    else:
        by_name = {name: t for name, t in tensors}
        missing = [f for f in model.inputs if f not in by_name]
        if missing:
            raise BadRequest(f"inputs given per feature must name every feature; missing {missing}")
        columns = [by_name[f].reshape(-1) for f in model.inputs]
        if len({c.shape[0] for c in columns}) != 1:
            raise BadRequest("per-feature inputs must all have the same length")
        x = torch.stack(columns, dim=1)
    if model.n_features and x.shape[1] != model.n_features:
        raise BadRequest(f"the model takes {model.n_features} features "
                         f"({', '.join(model.inputs)}), got {x.shape[1]}")
    return (x if x.dtype == torch.float32 else x.to(torch.float32)), int(x.shape[0])


def _tensor(item: Any) -> tuple[str, torch.Tensor]:
    if not isinstance(item, dict):
        raise BadRequest("each input must be an object with name, shape, datatype and data")
    name, shape, datatype, data = (item.get(k) for k in ("name", "shape", "datatype", "data"))
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers")
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise BadRequest(f"input {name!r}: datatype {datatype!r} is not supported "
                         f"(use one of {', '.join(DATATYPES)})")
    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: data must be a list")
    # numpy reads the nested lists in one C pass (several times faster than
    # torch.tensor on a 32-row body); anything but numbers (strings, nulls, ragged
    # rows) comes out as another kind of array and is refused, as torch would.
    try:
        array = numpy.array(data)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"input {name!r}: data is not a list of numbers ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise BadRequest(f"input {name!r}: data is not a list of numbers "
                         f"(found {array.dtype.name} values)")
    if dtype in (torch.float32, torch.float64):     # cast to float32 by numpy, as parse_inputs would
        t = torch.from_numpy(array.astype(numpy.float32, copy=False))
    else:
        t = torch.from_numpy(array).to(dtype)
    expected = math.prod(shape)
    if t.numel() != expected:
        raise BadRequest(f"input {name!r}: shape {shape} needs {expected} values, got {t.numel()}")
    return str(name), t.reshape(shape)


def _capture_record(when: float, name: str, model: LoadedVersion, latency_ms: float,
                    status: int, x: torch.Tensor | None, y: torch.Tensor | None,
                    problem: str | None):
    """What the capture writer thread turns into one JSON line: the rows become
    {feature: value} objects there, not on the request path."""
    def record() -> dict:
        doc = {"time": when, "endpoint": name, "version": model.version,
               "latency_ms": latency_ms, "status": status,
               "inputs": ([dict(zip(model.inputs, row)) for row in x.tolist()]
                          if x is not None else None),
               "outputs": y.tolist() if y is not None else None}
        if problem:
            doc["error"] = problem
        return doc
    return record


# ----------------------------------------------------------------- the app

#: POST paths that `build_app`'s front door hands to `_infer` without FastAPI's router.
_INFER_PATH = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")


def build_app(server: Server) -> Any:
    """The ASGI app: FastAPI's routes, behind a front door for inference requests."""
    app = FastAPI(title=f"mlform endpoint {server.name}", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.get("/v2/health/live")
    async def live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        ok = server.serving is not None
        return _json({"ready": ok}, 200 if ok else 503)

    @app.get("/v2")
    async def server_metadata() -> Response:
        return _json({"name": "mlform-local", "version": "1", "extensions": []})

    def _versions_of(name: str, version: str | None):
        serving = server.serving
        if name != server.name:
            return None, _error(f"unknown model {name!r}; this endpoint serves {server.name!r}", 404)
        if serving is None:
            return None, _error("the model is still loading", 503)
        if version is not None and serving.by_version(version) is None:
            return None, _error(f"model {name!r} has no version {version!r} being served", 404)
        return serving, None

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str) -> Response:
        serving, problem = _versions_of(name, None)
        if problem:
            return problem
        main = max(zip(serving.weights, range(len(serving.versions))))[1]
        return _json(serving.versions[main].metadata(name, [v.version for v in serving.versions]))

    @app.get("/v2/models/{name}/versions/{version}")
    async def version_metadata(name: str, version: str) -> Response:
        serving, problem = _versions_of(name, version)
        if problem:
            return problem
        return _json(serving.by_version(version).metadata(name, [version]))

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Response:
        serving, problem = _versions_of(name, None)
        return problem or _json({"name": name, "ready": True})

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        return await _infer(name, None, request)

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer_version(name: str, version: str, request: Request) -> Response:
        return await _infer(name, version, request)

    async def _infer(name: str, version: str | None, request: Request) -> Response:
        t0 = time.perf_counter()
        serving, problem = _versions_of(name, version)
        if problem:
            return problem
        model = serving.by_version(version) if version is not None else server.pick(serving)
        body = await request.body()
        x = y = None
        n = 0
        problem_text = None
        try:
            try:
                doc = _loads(body)
            except ValueError as exc:
                raise BadRequest(f"the body is not JSON: {exc}") from None
            x, n = parse_inputs(doc, model)
            with torch.inference_mode():
                try:
                    y = _first_tensor(model.module(x))
                    if y.dtype != torch.float32:
                        y = y.to(torch.float32)
                except RuntimeError as exc:
                    raise BadRequest(f"the model rejected the input: {str(exc).splitlines()[0]}") from None
            # The whole batch is encoded at once: a float64 array (the values tolist() of
            # the float32 tensor gives) that orjson writes without a Python float per value.
            data = y.detach().reshape(-1).numpy().astype(numpy.float64)
            result = {"model_name": name, "model_version": str(model.version),
                      "outputs": [{"name": "output", "shape": list(y.shape), "datatype": "FP32",
                                   "data": data}]}
            if isinstance(doc.get("id"), str):
                result["id"] = doc["id"]
            status, response = 200, _json(result)
        except BadRequest as exc:
            problem_text = str(exc)
            status, response = 400, _error(problem_text, 400)
        server.served += 1
        server.telemetry.observe(name, model.version, status, time.perf_counter() - t0, n)
        capture = server.capture
        if serving.capture_percent is not None and capture is not None \
                and capture.sampled(serving.capture_percent):
            capture.submit(_capture_record(
                time.time(), name, model, round((time.perf_counter() - t0) * 1000, 3), status,
                x if y is not None else None, y, problem_text))
        return response

    def _authorized(request: Request) -> bool:
        given = request.headers.get(TOKEN_HEADER, "")
        return hmac.compare_digest(given.encode(), str(server.spec.get("token", "")).encode())

    @app.get("/v2/admin/status")
    async def admin_status() -> Response:
        return _json(server.status(asyncio.get_running_loop()))

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics(), media_type="text/plain; version=0.0.4")

    @app.post("/v2/admin/reload")
    async def admin_reload(request: Request) -> Response:
        if not _authorized(request):
            return _error("a valid x-mlform-token header is required", 403)
        status, doc = server.reload()
        return _json(doc, status)

    async def asgi(scope: dict, receive: Any, send: Any) -> None:
        """Inference requests go straight to `_infer`, around FastAPI's routing and
        parameter solving (a fifth of the server's time on a one-row request); every
        other request goes through FastAPI."""
        if scope["type"] == "http" and scope["method"] == "POST":
            found = _INFER_PATH.fullmatch(scope["path"])
            if found:
                response = await _infer(found["name"], found["version"], Request(scope, receive))
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return asgi


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only when it does,
    # and without it every response waits ~40 ms on Nagle and the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def server_config(app: Any) -> uvicorn.Config:
    """uvicorn's settings: loop and HTTP parser "auto" pick uvloop and httptools when
    installed (the `local` extra's ``uvicorn[standard]``), asyncio and h11 otherwise."""
    return uvicorn.Config(app, loop="auto", http="auto", log_level="warning",
                          access_log=False, lifespan="off", timeout_graceful_shutdown=10)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m mlform.providers.kit.serving SPEC_JSON", file=sys.stderr)
        return 2
    server = Server(Path(argv[1]).resolve())
    # One intra-op thread per process: a small model gains nothing from more, and
    # several endpoints on one machine should not fight over cores.
    torch.set_num_threads(int(server.spec.get("torch_threads", 1)))
    try:
        sock = bind(server.spec["host"], int(server.spec["port"]))
    except OSError as exc:
        print(f"cannot listen on {server.spec['host']}:{server.spec['port']}: {exc}", flush=True)
        return 3
    server.load_async(server.spec)
    server.config = config = server_config(build_app(server))
    print(f"pid {os.getpid()} listening on {server.spec['host']}:{server.spec['port']}", flush=True)
    # uvicorn drains on SIGTERM (stops listening, lets requests in flight finish, then
    # `_Uvicorn.shutdown` writes out the capture) and, once done, raises the signal again
    # to whatever handler was there before it started: this one, so that a drained server
    # exits 0 (a pod "Completed", not "Error" with 143) instead of dying by the signal.
    signal.signal(signal.SIGTERM, _drained)
    # Server.run, not asyncio.run(serve()): run makes the loop from config.loop, so
    # uvloop serves when installed ("auto"), asyncio's own loop otherwise.
    _Uvicorn(config, server).run(sockets=[sock])
    return 0


def _drained(signum: int, _frame: Any) -> None:
    raise SystemExit(0)


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, writing out the queued capture once requests have finished: after
    a SIGTERM uvicorn raises the signal again when it returns, so this is the last moment."""

    def __init__(self, config: uvicorn.Config, server: Server) -> None:
        super().__init__(config)
        self._server = server

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets=sockets)
        if self._server.capture is not None:
            self._server.capture.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
