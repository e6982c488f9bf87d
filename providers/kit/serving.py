"""mlform's model server (Open Inference Protocol v2): the `local` provider starts one
detached process per endpoint, the `kubernetes` provider's endpoint pods run it.

Run as ``python -m mlform.providers.kit.serving SPEC_JSON`` (or by this file's
path, which is how the provider starts it: the module imports nothing of
mlform, so any interpreter with torch, fastapi and uvicorn can serve).
``SPEC_JSON`` is ``<root>/endpoints/<slug>/server.json``; its path on the
command line is also how the provider recognises the process as its own.

The spec (written by `endpoints.py`, mode 0600 because it holds the admin token)::

    {"address", "name", "host", "port", "token", "torch_threads", "generation",
     "models": [{"version": 3, "path": ".../versions/3", "weight": 90, "variant": "a",
                 "framework": "torch", "role": "live"}, ...],
     "capture": {"path": ".../capture.jsonl", "sample_percent": 100, "max_bytes",
                 "max_files", "max_age_seconds", "queue"} | null,
     "experiment": {"type": "ab"|"shadow"|"bandit", "sticky_key", "shadow_percent",
                    "reward", "floor_percent", "state_path", "feedback_path"} | null,
     "workers": 1, "worker_processes": 0, "max_batch_size": 1, "max_delay_ms": 5,
     "hooks": "/abs/hooks.py" | null, "auth_token": "..." | null,
     "device": "cpu" | "cuda"}   (cuda: torch models on the one GPU the process sees)

(everything after ``models`` is optional: an older spec serves as before, its models
one variant "primary"; the capture limits default as in
`serving_capture.CaptureLimits`, see `serving_capture.CaptureLog` for the queue, the
writer thread and rotation).

Routing (`Server.pick`): without an experiment, and for ``shadow``, the live models
share requests by a smooth weighted round robin (during a canary, two versions of one
variant).  ``ab`` does the same, or with ``sticky_key`` maps a blake2b hash of the key
onto the cumulative weights, so one key always meets one variant, in any process and
across restarts while the weights stay.  ``bandit`` asks `bandit.Policy.choose`; with a
``sticky_key`` the hash is mapped onto the policy's weights of the moment instead, so a
key keeps its variant only while the weights do not move past it.  ``shadow`` mirrors
``shadow_percent`` of requests (exact sampling, as the capture) to the shadow variant
on a background thread behind a bounded queue (`serving_experiments.Mirror`): the
caller never waits for it, a full queue drops and counts, and the shadow's answer or
error goes to the capture (role "shadow", the live request's id) and metrics only.

Every inference answer carries ``"id"`` (the caller's, else a fresh uuid4) and the
header ``x-mlform-variant``.  With an experiment the ids issued are remembered (a
bounded map rebuilt at start from the capture files' tail,
`serving_experiments.IssuedIds`) so that ``POST /v2/models/{name}/feedback`` can credit
a reward to the variant that answered; each accepted reward is appended to
``feedback_path`` by a writer thread (`CaptureLog`) and, for a bandit, updates the
policy, whose state lives in ``state_path``.

The module holds the app, the `Server`, loading and the request path; its companions
(standalone too, imported by name) hold the rest: `serving_experiments` (the
experiment spec, routes and sticky keys, issued ids, the shadow's mirror, feedback
checks), `serving_capture` (the capture and feedback writer, JSON), `serving_runtime`
(predictors, worker pool, batcher, hooks) and `bandit` (the policy).

Inference runs off the event loop in `serving_runtime`'s worker pool (threads, or
``worker_processes`` processes each holding the models), through its dynamic batcher
when ``max_batch_size`` > 1; torch, sklearn and onnx artifacts load through
`serving_runtime.load_predictor`; the optional ``hooks`` module's ``preprocess(doc)``
and ``postprocess(doc, result)`` run around parsing and encoding.  With ``auth_token``
the inference and feedback routes need ``Authorization: Bearer <token>``; health,
metadata and metrics stay open, and the token is never logged nor reported.

Routes (Open Inference Protocol v2, plus two admin routes):

* ``GET  /v2/health/live``, ``GET /v2/health/ready`` (200 once models are loaded)
* ``GET  /v2/models/{name}`` and ``/v2/models/{name}/versions/{v}`` (metadata)
* ``POST /v2/models/{name}/infer`` and ``/v2/models/{name}/versions/{v}/infer``
* ``POST /v2/models/{name}/feedback``  ``{"request_id", "reward"}`` for an experiment
* ``GET  /v2/admin/status``  what is served (versions, variants and their weights now,
  the experiment, generation, pid, capture, the event loop and HTTP implementation)
* ``GET  /metrics``  Prometheus text (prometheus_client): inference requests by model,
  version, variant and status code, their latency and rows per request as histograms,
  rows per forward pass, shadow calls, feedback, variant weights, capture written /
  dropped / failed / rotated and the capture queue depth
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
import re
import signal
import socket
import sys
import threading
import time
import uuid
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

# The server runs by file path with providers/kit/ as sys.path[0], or as a module of
# the package: its helpers are imported either way (they import nothing of mlform).
try:
    from . import bandit
except ImportError:
    import bandit
try:
    from . import serving_runtime as runtime
except ImportError:
    import serving_runtime as runtime
try:
    from . import serving_capture
except ImportError:
    import serving_capture
try:
    from . import serving_experiments
except ImportError:
    import serving_experiments

# What moved to the two companions, bound to this module's names: the request path
# reads them as module globals, as it did before they moved (no attribute look-up per
# request); tests, `kit.monitor_check` and the kubernetes pod tests name
# `serving.CaptureLog` and `serving.CaptureLimits`.
_dumps = serving_capture.dumps
_loads = serving_capture.loads
_capture_record = serving_capture.capture_record
CaptureLimits = serving_capture.CaptureLimits
CaptureLog = serving_capture.CaptureLog
rotated_name = serving_capture.rotated_name
DEFAULT_VARIANT = serving_experiments.DEFAULT_VARIANT
Experiment = serving_experiments.Experiment
Route = serving_experiments.Route
IssuedIds = serving_experiments.IssuedIds
Mirror = serving_experiments.Mirror
sticky_point = serving_experiments.sticky_point
by_point = serving_experiments.by_point
sticky_value = serving_experiments.sticky_value

# TorchScript is what the run contract saves; torch's notice that it is deprecated
# would only fill every server log.
warnings.filterwarnings("ignore", message=r"`torch\.jit", category=DeprecationWarning)

TOKEN_HEADER = "x-mlform-token"

#: OIP datatypes accepted on input, and the torch dtype read before casting to float32.
DATATYPES: dict[str, torch.dtype] = {
    "FP32": torch.float32, "FP64": torch.float64, "FP16": torch.float16,
    "INT8": torch.int64, "INT16": torch.int64, "INT32": torch.int64, "INT64": torch.int64,
    "UINT8": torch.int64, "UINT16": torch.int64, "UINT32": torch.int64, "BOOL": torch.bool,
}



def _device(spec: dict) -> str:
    """Where torch models run: ``cuda`` (the process's one visible GPU) or ``cpu``."""
    return "cuda" if spec.get("device") == "cuda" else "cpu"

class BadRequest(Exception):
    """The request does not fit the model: answered 400 with an OIP error body."""


def _json(doc: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(_dumps(doc), status_code=status, media_type="application/json",
                    headers=headers)


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


# ----------------------------------------------------------------- models

#: A model version in memory: `serving_runtime.Predictor` (torch, sklearn or onnx), with
#: its feature names, output labels and metadata; `predict(x)` gives float32 [N, O].
LoadedVersion = runtime.Predictor


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


# ----------------------------------------------------------------- serving state

@dataclass(frozen=True)
class Serving:
    """An immutable snapshot: what one request sees from start to end."""

    generation: int
    live: tuple[Route, ...]         # the routes that answer callers, in spec order
    schedule: tuple[int, ...]       # indices into `live`: the weighted round robin
    capture_percent: int | None     # None: capture off
    experiment: Experiment | None = None
    shadow: Route | None = None
    #: live variant -> (its routes, their round robin): a bandit picks a variant first
    variants: dict = None
    #: `live` in (variant, version) order: what sticky keys are mapped onto, so that the
    #: spec's order does not move a key
    sticky_order: tuple[Route, ...] = ()
    #: id() of the models whose forward pass runs on the event loop (see `inline_models`)
    inline: frozenset = frozenset()
    #: routed by the weighted round robin alone (no sticky key, no bandit)
    plain: bool = True

    @property
    def versions(self) -> tuple["LoadedVersion", ...]:
        return tuple(route.model for route in self.live)

    @property
    def weights(self) -> tuple[int, ...]:
        return tuple(route.weight for route in self.live)

    def route_of(self, wanted: str) -> Route | None:
        """The route of version `wanted` (a live one first, else the shadow)."""
        for route in self.live + ((self.shadow,) if self.shadow else ()):
            if str(route.model.version) == wanted:
                return route
        return None

    def by_version(self, wanted: str) -> "LoadedVersion | None":
        route = self.route_of(wanted)
        return route.model if route else None


def make_serving(generation: int, routes: list[Route], capture_percent: int | None,
                 experiment: Experiment | None, inline: frozenset = frozenset()) -> Serving:
    """Check the routes against the experiment and precompute the schedules."""
    live = tuple(r for r in routes if r.role == "live")
    shadows = [r for r in routes if r.role == "shadow"]
    schedule = weighted_schedule([r.weight for r in live])
    if not schedule:
        raise ValueError("no live model version has a positive weight")
    if len(shadows) > 1:
        raise ValueError(f"only one shadow variant is served, the spec names {len(shadows)}")
    shadow = shadows[0] if shadows else None
    if experiment is not None and experiment.type == "shadow" and shadow is None:
        raise ValueError("a shadow experiment needs a model with role 'shadow'")
    variants: dict[str, tuple] = {}
    for name in sorted({r.variant for r in live}):
        mine = tuple(r for r in live if r.variant == name)
        variants[name] = (mine, weighted_schedule([r.weight for r in mine])
                          or weighted_schedule([1] * len(mine)))
    order = tuple(sorted(live, key=lambda r: (r.variant, str(r.model.version))))
    plain = experiment is None or experiment.type == "shadow" or (
        experiment.type == "ab" and experiment.sticky is None)
    return Serving(generation, live, schedule, capture_percent, experiment, shadow,
                   variants, order, inline, plain)


#: A forward pass shorter than this runs on the event loop when the pool would only add
#: a thread hop (one worker thread, no batching): handing a one-row request to a thread
#: and back costs 50-150 us, a third or more of a small model's whole answer, while the
#: loop is held for less than this at a time.
INLINE_FORWARD_S = 0.001


def inline_models(models: list[LoadedVersion], spec: dict) -> frozenset:
    """id() of the models to run on the event loop: none unless the spec asks for one
    worker thread and no batching, then those whose one-row forward pass (timed now,
    the best of five after the loader's warm-up) is under `INLINE_FORWARD_S`."""
    if int(spec.get("workers") or 1) != 1 or int(spec.get("worker_processes") or 0) != 0 \
            or int(spec.get("max_batch_size") or 1) != 1:
        return frozenset()
    fast = set()
    for model in models:
        if not model.n_features:
            continue
        row = numpy.zeros((1, model.n_features), numpy.float32)
        best = math.inf
        try:
            for _ in range(5):
                t0 = time.perf_counter()
                model.predict(row)
                best = min(best, time.perf_counter() - t0)
        except Exception:       # a model that fails on zeros is timed by its requests instead
            continue
        if best < INLINE_FORWARD_S:
            fast.add(id(model))
    return frozenset(fast)


#: latency buckets (seconds): loopback answers take ~0.3 ms, a slow model seconds
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
#: rows per request buckets
ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)


class Telemetry:
    """The server's Prometheus metrics, in a registry of its own (prometheus_client).

    Per inference request, by model, version, variant and HTTP status code: a count
    (``mlform_requests_total``), and by model, version and variant its latency
    (``mlform_request_latency_seconds``) and rows (``mlform_request_rows``) as
    histograms; rows per forward pass (``mlform_batch_size``, by model and version: with
    dynamic batching several requests make one pass); shadow calls by variant and
    outcome (ok, error, dropped), feedback accepted by variant.  The capture's counters
    and the variants' weights are read when scraped (`collect`), so the request path
    only adds to the metrics above; their labelled children are looked up once per
    label set and kept.
    """

    def __init__(self, server: "Server") -> None:
        self._server = server
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter("mlform_requests", "inference requests answered",
                                 ("model", "version", "variant", "code"),
                                 registry=self.registry)
        self._latency = Histogram("mlform_request_latency_seconds",
                                  "time from reading the request to its answer",
                                  ("model", "version", "variant"), buckets=LATENCY_BUCKETS,
                                  registry=self.registry)
        self._rows = Histogram("mlform_request_rows", "rows per inference request",
                               ("model", "version", "variant"), buckets=ROWS_BUCKETS,
                               registry=self.registry)
        self._batch = Histogram("mlform_batch_size", "rows per forward pass of a model",
                                ("model", "version"), buckets=ROWS_BUCKETS,
                                registry=self.registry)
        self._shadow = Counter("mlform_shadow_requests",
                               "requests mirrored to the shadow variant, by outcome",
                               ("variant", "outcome"), registry=self.registry)
        self._feedback = Counter("mlform_feedback", "rewards accepted by POST .../feedback",
                                 ("variant",), registry=self.registry)
        self._children: dict[tuple, tuple] = {}
        self._batches: dict[Any, Any] = {}
        self.registry.register(_CaptureCollector(server))
        self.registry.register(_VariantCollector(server))

    def observe(self, model: str, version: Any, code: int, seconds: float, rows: int,
                variant: str = DEFAULT_VARIANT) -> None:
        """One answered request (the request path: a dict look-up and three adds)."""
        key = (model, version, variant, code)
        children = self._children.get(key)
        if children is None:
            labels = (model, str(version), variant)
            children = self._children[key] = (
                self._requests.labels(*labels, str(code)), self._latency.labels(*labels),
                self._rows.labels(*labels))
        count, latency, rows_seen = children
        count.inc()
        latency.observe(seconds)
        if rows:
            rows_seen.observe(rows)

    def batch(self, model: str, version: Any, rows: int) -> None:
        """One forward pass of `rows` rows."""
        child = self._batches.get(version)
        if child is None:
            child = self._batches[version] = self._batch.labels(model, str(version))
        child.observe(rows)

    def shadow(self, variant: str, outcome: str) -> None:
        self._shadow.labels(variant, outcome).inc()

    def feedback(self, variant: str) -> None:
        self._feedback.labels(variant).inc()


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


class _VariantCollector:
    """Each variant's share of traffic now, in percent: the spec's weights, or a bandit's
    policy of the moment; a shadow variant's share is 0."""

    def __init__(self, server: "Server") -> None:
        self._server = server

    def describe(self) -> list:
        return []

    def collect(self):
        gauge = GaugeMetricFamily("mlform_variant_weight",
                                  "share of requests each variant answers now (percent)",
                                  labels=["variant"])
        serving = getattr(self._server, "serving", None)
        if serving is not None:
            for name, weight in self._server.variant_weights(serving).items():
                gauge.add_metric([name], weight)
        yield gauge


class Server:
    """The process's state: the spec, the current `Serving` snapshot, the loader, and
    what outlives a snapshot (the capture, the worker pool, the bandit's policy)."""

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
        self.hooks = runtime.Hooks()
        self.auth: bytes | None = None       # the bearer token inference needs, if any
        self.pool: Any = None                # runtime.WorkerPool
        self.shadow_pool: Any = None         # runtime.WorkerPool of one process, for the shadow
        self.batcher: Any = None             # runtime.Batcher over `pool`
        self._pool_settings: tuple | None = None
        self.policy: Any = None              # bandit.Policy of a bandit experiment
        self.feedback_log: CaptureLog | None = None   # feedback of an experiment that is no bandit
        self.issued = IssuedIds()
        self._issued_from: str | None = None  # the capture the ids were read back from
        self.mirror: Mirror | None = None

    # -- loading ------------------------------------------------------------

    def load_async(self, spec: dict) -> None:
        self.loading_generation = spec.get("generation", 0)
        threading.Thread(target=self._load, args=(spec,), name="model-loader", daemon=True).start()

    def _load(self, spec: dict) -> None:
        """Load every version the spec names (reusing ones already in memory), then swap."""
        generation = spec.get("generation", 0)
        with self._load_lock:
            try:
                experiment = Experiment.of(spec.get("experiment"))
                hooks = runtime.load_hooks(spec.get("hooks"))
                threads = int(spec.get("torch_threads", 1))
                routes, cache = [], {}
                for entry in spec["models"]:
                    framework = entry.get("framework") or "torch"
                    key = (str(entry["version"]), entry["path"], framework)
                    loaded = self._cache.get(key) or cache.get(key)
                    if loaded is None:
                        loaded = runtime.load_predictor(entry["version"], entry["path"],
                                                        framework, threads, _device(spec))
                    cache[key] = loaded
                    role = entry.get("role") or "live"
                    if role not in ("live", "shadow"):
                        raise ValueError(f"model role {role!r} is not 'live' or 'shadow'")
                    routes.append(Route(str(entry.get("variant") or DEFAULT_VARIANT), role,
                                        int(entry.get("weight", 100)) if role == "live" else 0,
                                        loaded))
                capture = spec.get("capture")
                serving = make_serving(generation, routes,
                                       int(capture.get("sample_percent", 100)) if capture else None,
                                       experiment, inline_models(list(cache.values()), spec))
                if capture:
                    limits = CaptureLimits.of(capture)
                    if self.capture is None or (self.capture.path, self.capture.limits) \
                            != (capture["path"], limits):
                        old, self.capture = self.capture, CaptureLog(capture["path"], limits)
                        if old is not None:
                            old.close()
                self._ready_experiment(serving, capture)
                self._ready_workers(spec)
                self.hooks = hooks
                token = spec.get("auth_token")
                self.auth = str(token).encode() if token else None
                # Keep only what the new snapshot serves; the old one stays referenced
                # by requests still in flight until they finish.
                self._cache = cache
                self.spec = spec
                self.serving = serving          # the atomic switch
                self.error = None
                print(f"serving generation {generation}: " + ", ".join(
                    f"{r.variant}:v{r.model.version}={r.weight if r.role == 'live' else 'shadow'}"
                    for r in routes) + (f" ({experiment.type})" if experiment else ""), flush=True)
            except Exception as exc:  # reported through /v2/admin/status, old models keep serving
                # a hook module's own traceback is the message: it is what the user must fix
                message = (str(exc) if isinstance(exc, runtime.HookError)
                           else f"{type(exc).__name__}: {exc}")
                self.error = {"generation": generation, "message": message}
                print(f"loading generation {generation} failed: {message}", flush=True)
            finally:
                if self.loading_generation == generation:
                    self.loading_generation = None

    def _ready_experiment(self, serving: Serving, capture: dict | None) -> None:
        """The experiment's companions: the ids issued before this process started, the
        bandit's policy (its snapshot and the feedback after it), the feedback writer of
        other experiments, the shadow's mirror thread."""
        experiment = serving.experiment
        if experiment is None:
            return
        if capture and self._issued_from != capture["path"]:
            recovered = IssuedIds(self.issued.limit)
            recovered.recover(capture["path"], CaptureLimits.of(capture).max_files)
            recovered.update(self.issued)       # ids issued meanwhile are newer
            self.issued, self._issued_from = recovered, capture["path"]
        feedback_path = experiment.feedback_path or (
            str(Path(capture["path"]).with_name("feedback.jsonl")) if capture else None)
        if experiment.type == "bandit":
            variants = list(serving.variants)
            old = self.policy
            if old is None or (old.variants, old.reward, old.floor_percent, old.state_path,
                               old.feedback_path) != (variants, experiment.reward,
                                                      experiment.floor_percent,
                                                      experiment.state_path, feedback_path):
                if old is not None:
                    old.close()
                if self.feedback_log is not None:       # the policy writes the log now
                    self.feedback_log.close()
                    self.feedback_log = None
                self.policy = bandit.Policy.load(variants, experiment.reward,
                                                 experiment.floor_percent,
                                                 experiment.state_path, feedback_path)
                if self.policy.restore_error:
                    print(f"bandit: the saved state was not used ({self.policy.restore_error}); "
                          "replayed the feedback log instead", flush=True)
        else:
            if self.policy is not None:
                self.policy.close()
                self.policy = None
            if feedback_path and (self.feedback_log is None
                                  or self.feedback_log.path != feedback_path):
                old, self.feedback_log = self.feedback_log, CaptureLog(feedback_path)
                if old is not None:
                    old.close()
        if serving.shadow is not None and self.mirror is None:
            self.mirror = Mirror(self._shadow_calls)
            # The shadow's forward passes run in a process of their own: in this one they
            # would take the GIL and the cores from the live model's answers (measured:
            # p99 x3 at concurrency 1 with a one-row MLP), and a caller must not pay for it.
            self.shadow_pool = runtime.WorkerPool(
                processes=1, threads=max(1, int(self.spec.get("torch_threads") or 1)),
                device=_device(self.spec))
            # start the process and load the shadow there now, so the first mirrored
            # requests do not wait for an interpreter to start (not a mirror job: the
            # mirror's queue is the callers')
            threading.Thread(target=_warm, name="shadow-warm", daemon=True,
                             args=(self.shadow_pool, serving.shadow.model)).start()

    def _ready_workers(self, spec: dict) -> None:
        """The worker pool and the batcher, made again only when their settings change."""
        settings = (max(1, int(spec.get("workers") or 1)),
                    max(0, int(spec.get("worker_processes") or 0)),
                    int(spec.get("torch_threads", 1)), _device(spec))
        batching = (max(1, int(spec.get("max_batch_size") or 1)),
                    float(spec["max_delay_ms"]) if spec.get("max_delay_ms") is not None else 5.0)
        if self._pool_settings != settings + batching:
            old = self.pool
            if self._pool_settings is None or self._pool_settings[:4] != settings:
                self.pool = runtime.WorkerPool(*settings)
            self.batcher = runtime.Batcher(self.pool, *batching, on_batch=self._batched)
            self._pool_settings = settings + batching
            if old is not None and old is not self.pool:
                # requests in flight on the old pool finish there: it is closed once they have
                threading.Thread(target=old.close, kwargs={"wait": True}, name="pool-closer",
                                 daemon=True).start()

    def _batched(self, predictor: LoadedVersion, rows: int) -> None:
        self.telemetry.batch(self.name, predictor.version, rows)

    # -- admin --------------------------------------------------------------

    def variant_weights(self, serving: Serving) -> dict[str, float]:
        """Each variant's share of requests now, in percent (a shadow's is 0)."""
        if self.policy is not None and serving.experiment is not None \
                and serving.experiment.type == "bandit":
            weights = self.policy.weights()
        else:
            total = sum(r.weight for r in serving.live) or 1
            weights = {}
            for route in serving.live:
                weights[route.variant] = weights.get(route.variant, 0.0) + 100.0 * route.weight / total
        if serving.shadow is not None:
            weights.setdefault(serving.shadow.variant, 0.0)
        return weights

    def status(self, loop: Any = None) -> dict:
        serving = self.serving
        spec = self.spec
        return {
            "event_loop": _qualified(type(loop)) if loop is not None else None,
            "http": _qualified(getattr(self.config, "http_protocol_class", None)),
            "name": self.name, "pid": os.getpid(), "started": self.started,
            "host": spec["host"], "port": spec["port"],
            "torch_threads": torch.get_num_threads(),
            "ready": serving is not None,
            "generation": serving.generation if serving else None,
            "loading": self.loading_generation, "error": self.error,
            "versions": ([{"version": r.model.version, "weight": r.weight, "path": r.model.path,
                           "variant": r.variant, "framework": r.model.framework,
                           "on_event_loop": id(r.model) in serving.inline}
                          for r in serving.live] if serving else []),
            "variants": self._variants_status(serving) if serving else [],
            "experiment": self._experiment_status(serving) if serving else None,
            "workers": {"workers": int(spec.get("workers") or 1),
                        "worker_processes": int(spec.get("worker_processes") or 0),
                        "max_batch_size": int(spec.get("max_batch_size") or 1),
                        "max_delay_ms": spec.get("max_delay_ms", 5)},
            "hooks": self.hooks.path,
            "auth": self.auth is not None,      # whether a token is needed, never the token
            "capture": (self._capture_status(serving.capture_percent)
                        if serving and serving.capture_percent is not None and self.capture else None),
            "requests": self.served,
        }

    def _variants_status(self, serving: Serving) -> list[dict]:
        """One entry per model served: its variant, version, role and share now (a
        variant's share split between its versions by their weights)."""
        shares = self.variant_weights(serving)
        out = []
        for name, (routes, _) in serving.variants.items():
            total = sum(r.weight for r in routes)
            for route in routes:
                part = route.weight / total if total else 1 / len(routes)
                out.append({"name": name, "version": route.model.version, "role": "live",
                            "weight": round(shares.get(name, 0.0) * part, 3)})
        if serving.shadow is not None:
            out.append({"name": serving.shadow.variant, "version": serving.shadow.model.version,
                        "role": "shadow", "weight": 0})
        return out

    def _experiment_status(self, serving: Serving) -> dict | None:
        experiment = serving.experiment
        if experiment is None:
            return None
        doc = experiment.status()
        doc["issued_ids"] = len(self.issued)
        if experiment.type == "bandit" and self.policy is not None:
            doc["prob_best"] = self.policy.prob_best()
            doc["stats"] = self.policy.stats()
            doc["feedback"] = self.policy.feedback_lines
        if experiment.type == "shadow" and self.mirror is not None:
            doc["mirror"] = {"pending": self.mirror.pending, "dropped": self.mirror.dropped}
        return doc

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

    def close(self) -> None:
        """After the last request: write out the capture, the feedback and the policy."""
        for log in (self.capture, self.feedback_log):
            if log is not None:
                log.close()
        if self.policy is not None:
            self.policy.close()
        for pool in (self.pool, self.shadow_pool):
            if pool is not None:
                pool.close(wait=False)

    # -- inference ----------------------------------------------------------

    def pick(self, serving: Serving, doc: Any = None, request: Any = None) -> Route:
        """The route that answers a request (see the module doc for the rules)."""
        if serving.plain:
            n = next(self.requests)     # itertools.count: atomic under the GIL
            return serving.live[serving.schedule[n % len(serving.schedule)]]
        experiment = serving.experiment
        key = sticky_value(experiment.sticky, doc, request) if experiment.sticky else None
        if experiment.type == "ab":
            if key is None:
                n = next(self.requests)
                return serving.live[serving.schedule[n % len(serving.schedule)]]
            order = serving.sticky_order
            return order[by_point(sticky_point(key), [r.weight for r in order])]
        policy = self.policy
        if key is None:
            variant = policy.choose()
        else:
            names = list(serving.variants)
            weights = policy.weights()
            variant = names[by_point(sticky_point(key), [weights.get(n, 0.0) for n in names])]
        found = serving.variants.get(variant)
        if found is None:   # a reload just gave the policy variants this snapshot lacks
            return serving.live[serving.schedule[next(self.requests) % len(serving.schedule)]]
        routes, schedule = found
        if len(routes) == 1:
            return routes[0]
        return routes[schedule[next(self.requests) % len(schedule)]]

    def mirror_request(self, serving: Serving, name: str, request_id: str, doc: Any,
                       x: Any = None) -> bool:
        """Hand `doc` to the shadow variant on the mirror thread; False (counted) when its
        queue is full. `x` is the live model's parsed input when the shadow takes the same
        features (not parsed again). The shadow's answer goes to the capture and metrics
        only."""
        capture = self.capture if serving.capture_percent is not None else None
        if self.mirror.submit((serving.shadow, name, request_id, doc, capture, x)):
            return True
        self.telemetry.shadow(serving.shadow.variant, "dropped")
        return False

    def _shadow_calls(self, jobs: list) -> None:
        """The mirror thread: the waiting mirrored requests through the shadow, one forward
        pass for all those of one model (in the shadow's own process), each answer or error
        to the capture and metrics. If the batch fails, each request runs alone, so an
        error is the request's own."""
        t0 = time.perf_counter()
        parsed = []
        for job in jobs:
            shadow, doc, x = job[0], job[3], job[5]
            if x is not None:
                parsed.append((job, x.numpy()))
                continue
            try:
                x, _ = parse_inputs(doc, shadow.model)
                parsed.append((job, x.numpy()))
            except BadRequest as exc:
                self._shadow_done(job, t0, 400, None, None, str(exc))
        by_model: dict[int, list] = {}
        for item in parsed:
            by_model.setdefault(id(item[0][0].model), []).append(item)
        for items in by_model.values():
            model = items[0][0][0].model
            try:
                y = self._shadow_predict(model, numpy.concatenate([x for _, x in items]))
            except Exception:
                y = None
            if y is not None and len(y) == sum(len(x) for _, x in items):
                start = 0
                for job, x in items:
                    self._shadow_done(job, t0, 200, x, y[start:start + len(x)], None)
                    start += len(x)
                continue
            for job, x in items:        # one at a time: each error is its own request's
                try:
                    self._shadow_done(job, t0, 200, x, self._shadow_predict(model, x), None)
                except runtime.PredictError as exc:
                    self._shadow_done(job, t0, 400, x, None, str(exc))
                except Exception as exc:    # whatever the shadow does, it stays here
                    self._shadow_done(job, t0, 500, x, None, f"{type(exc).__name__}: {exc}")

    def _shadow_predict(self, model: Any, x: Any) -> Any:
        pool = self.shadow_pool
        return pool.call(model, x) if pool is not None else model.predict(x)

    def _shadow_done(self, job: tuple, t0: float, status: int, x: Any, y: Any,
                     problem: str | None) -> None:
        shadow, name, request_id, _, capture, _ = job
        self.telemetry.shadow(shadow.variant, "ok" if status == 200 else "error")
        if capture is not None:
            # no inputs: they are the live line's, under the same request_id
            capture.submit(_capture_record(
                time.time(), name, request_id, shadow, round((time.perf_counter() - t0) * 1000, 3),
                status, None, y, problem))


def _warm(pool: Any, model: Any) -> None:
    """One row of zeros through `model` in `pool` (starting its process); a model that
    refuses zeros is fine: the process has started and loaded it all the same."""
    try:
        pool.call(model, numpy.zeros((1, model.n_features or 1), dtype=numpy.float32))
    except Exception:
        pass


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
        if server.auth is not None and not _bearer(request):
            return _unauthorized()
        # on its way to the batcher while its body is awaited: a batch may wait for it
        # (nothing awaits between the body and batcher.infer, see runtime.Batcher)
        batcher = server.batcher
        batcher.arriving += 1
        try:
            body = await request.body()
        finally:
            batcher.arriving -= 1
        x = y = doc = None
        n = 0
        problem_text = None
        try:
            doc = _loads(body)
        except ValueError as exc:
            problem_text = f"the body is not JSON: {exc}"
        # routed before the inputs are read: a sticky key may be one of them
        route = serving.route_of(version) if version is not None \
            else server.pick(serving, doc, request)
        model = route.model
        given = doc.get("id") if isinstance(doc, dict) else None
        request_id = given if isinstance(given, str) and given else uuid.uuid4().hex
        headers = {"x-mlform-variant": route.variant}
        hooks = server.hooks
        try:
            if problem_text:
                raise BadRequest(problem_text)
            if hooks.preprocess is not None:
                doc = hooks.pre(doc)
            x, n = parse_inputs(doc, model)
            if id(model) in serving.inline:
                y = model.predict(x.numpy())
                server.telemetry.batch(name, model.version, n)
            else:
                y, _ = await server.batcher.infer(model, x.numpy())
            # The whole batch is encoded at once: a float64 array (the values tolist() of
            # a float32 array gives) that orjson writes without a Python float per value.
            data = y.reshape(-1).astype(numpy.float64)
            result = {"model_name": name, "model_version": str(model.version), "id": request_id,
                      "outputs": [{"name": "output", "shape": list(y.shape), "datatype": "FP32",
                                   "data": data}]}
            if hooks.postprocess is not None:
                result["outputs"][0]["data"] = data.tolist()    # plain JSON for user code
                result = hooks.post(doc, result)
                result["id"] = request_id       # feedback names it: a hook does not change it
            status, response = 200, _json(result, 200, headers)
        except (BadRequest, runtime.PredictError) as exc:
            problem_text = str(exc)
            status, response = 400, _json({"error": problem_text}, 400, headers)
        except runtime.HookCallError as exc:
            problem_text = str(exc)
            print(f"{problem_text}\n{exc.traceback}", flush=True)
            status, response = 500, _json(exc.body(), 500, headers)
        except Exception as exc:    # a broken worker, a model crashing in native code
            problem_text = f"inference failed: {type(exc).__name__}: {exc}"
            print(problem_text, flush=True)
            status, response = 500, _json({"error": problem_text}, 500, headers)
        server.served += 1
        server.telemetry.observe(name, model.version, status, time.perf_counter() - t0, n,
                                 route.variant)
        experiment = serving.experiment
        mirrored = False
        if experiment is not None:
            if status == 200:
                server.issued.add(request_id, route.variant)
            if serving.shadow is not None and version is None and isinstance(doc, dict) \
                    and server.mirror is not None \
                    and server.mirror.sampler.take(experiment.shadow_percent):
                mirrored = server.mirror_request(serving, name, request_id, doc,
                                                 x if model.inputs == serving.shadow.model.inputs
                                                 else None)
        capture = server.capture
        if serving.capture_percent is not None and capture is not None \
                and (capture.sampled(serving.capture_percent) or mirrored):
            # a mirrored request is always captured: its live answer sits by the shadow's
            capture.submit(_capture_record(
                time.time(), name, request_id, route,
                round((time.perf_counter() - t0) * 1000, 3), status,
                x if y is not None else None, y, problem_text))
        return response

    @app.post("/v2/models/{name}/feedback")
    async def feedback(name: str, request: Request) -> Response:
        if server.auth is not None and not _bearer(request):
            return _unauthorized()
        serving, problem = _versions_of(name, None)
        if problem:
            return problem
        experiment = serving.experiment
        if experiment is None:
            return _error(f"endpoint {name!r} runs no experiment: there is nothing to give "
                          "feedback to (declare an experiment block)", 409)
        try:
            request_id, variant, reward = serving_experiments.read_feedback(
                experiment, await request.body(), server.issued)
        except serving_experiments.FeedbackRefused as exc:
            return _error(str(exc), exc.status)
        policy = server.policy
        if experiment.type == "bandit" and policy is not None:
            # the policy appends the line and moves the posterior under one lock: in a
            # thread, since it writes a file
            try:
                record = await asyncio.get_running_loop().run_in_executor(
                    None, serving_experiments.record_feedback, policy, request_id, variant,
                    reward)
            except ValueError as exc:
                return _error(str(exc), 400)
        else:
            record = serving_experiments.feedback_line(request_id, variant, reward)
            if server.feedback_log is not None:
                server.feedback_log.submit(record)
        server.telemetry.feedback(variant)
        return _json({"request_id": request_id, "variant": variant, "reward": record["reward"]})

    def _bearer(request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                  server.auth)

    def _unauthorized() -> Response:
        return _json({"error": "this endpoint needs a bearer token: "
                               "send the header Authorization: Bearer <token>"}, 401,
                     {"www-authenticate": "Bearer"})

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
        self._server.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
