"""Serving overhead of a `local` endpoint: a small MLP over HTTP versus a direct call.

The model is a TorchScript MLP (16 -> 64 -> 64 -> 2, softmax), one row per
request.  The endpoint is started through the provider's handlers (a registry
version, then a detached server on 127.0.0.1) and driven over keep-alive
connections at concurrency 1, 8 and 32 by the minimal asyncio HTTP/1.1 client of
`_load.py`, so that the server rather than the client is measured; one httpx figure at
concurrency 1 shows what a typical Python client sees.  The reference is the
same module's forward pass called directly in this process, one row per call,
one torch thread, as the server runs it.

Figures: requests/s and p50/p99 latency per concurrency, the direct calls/s and
p50/p99, and `serving_overhead_ratio` = direct calls/s / served requests/s at
concurrency 1.  The client and the server share the machine's cores, so the
served figures include the client's own cost (as any loopback benchmark does).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mlform.providers.base import Desired, ProviderContext
from mlform.providers.local.env import LocalEnv, default_python
from mlform.providers.local import endpoints as endpoints_module
from mlform.providers.local.endpoints import EndpointHandler
from mlform.providers.local.models import ModelHandler
from mlform.providers.kit import calls as contract

from . import _load
from ._load import percentile as _percentile
from ._mlp import FEATURES, save_mlp
from ._mlp import rows as mlp_rows
from ._support import record

torch = pytest.importorskip("torch")

# The run contract saves TorchScript; torch 2.x marks torch.jit deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
httpx = pytest.importorskip("httpx")

CONCURRENCY = (1, 8, 32)
REQUESTS = {1: 2000, 8: 4000, 32: 4000}     # bounded: a few seconds per level on 2 cores
WARMUP = 100
DIRECT_CALLS = 5000


def _mlp(directory: Path) -> str:
    return save_mlp(directory).parent.as_uri()


def _drive(port: int, path: str, body: bytes, concurrency: int,
           total: int) -> tuple[float, list[float]]:
    """`total` requests over `concurrency` keep-alive connections from the shared asyncio
    client (`tests/bench/_load.py`); (wall s, latencies ms).  Every answer must be 200."""
    load = _load.run(port, path, body, concurrency, total, warmup=WARMUP)
    assert not load.errors, load.failures
    return load.wall_s, load.latencies_ms


def _httpx_reference(url: str, body: bytes, total: int) -> tuple[float, list[float]]:
    """The same requests from httpx, one at a time: what a typical Python client sees."""
    latencies = []
    with httpx.Client(timeout=30, trust_env=False) as client:
        for _ in range(WARMUP):
            client.post(url, content=body, headers={"content-type": "application/json"})
        t0 = time.perf_counter()
        for _ in range(total):
            t = time.perf_counter()
            response = client.post(url, content=body, headers={"content-type": "application/json"})
            assert response.status_code == 200, response.text
            latencies.append((time.perf_counter() - t) * 1000)
        return time.perf_counter() - t0, latencies


def test_serving_throughput_and_latency(tmp_path):
    context = ProviderContext(name="local", alias=None, stack="bench", env="bench",
                              stack_dir=tmp_path, config={})
    env = LocalEnv(context=context, root=tmp_path / ".mlform" / "local", host="127.0.0.1",
                   python=default_python(), ready_timeout=60)
    models, endpoints = ModelHandler(env), EndpointHandler(env)
    uri = _mlp(tmp_path / "run")
    model_want = Desired("model.mlp", "model", "mlp", {"artifact": uri, "framework": "torch"})
    model = models.create(contract.plan(models, model_want, None))
    ref = {"address": "model.mlp", "uri": model.attributes["uri"],
           "version": model.attributes["version"], "approval": "approved"}
    endpoint_want = Desired("endpoint.mlp", "endpoint", "mlp", {"model": ref})
    live = endpoints.create(contract.plan(endpoints, endpoint_want, None))
    try:
        url = live.attributes["url"] + "/infer"
        port, path = live.attributes["port"], urlsplit(url).path
        row = [0.1 * i for i in range(FEATURES)]
        body = json.dumps({"inputs": [{"name": "input", "shape": [1, FEATURES],
                                       "datatype": "FP32", "data": row}]}).encode()
        served_rps = {}
        for concurrency in CONCURRENCY:
            wall, latencies = _drive(port, path, body, concurrency, REQUESTS[concurrency])
            rps = len(latencies) / wall
            served_rps[concurrency] = rps
            common = dict(concurrency=concurrency, requests=len(latencies), model="mlp-16-64-64-2")
            record("serving_requests_per_s", round(rps, 1), "req/s", **common)
            record("serving_latency_p50", round(_percentile(latencies, 50), 3), "ms", **common)
            record("serving_latency_p99", round(_percentile(latencies, 99), 3), "ms", **common)
        wall, latencies = _httpx_reference(url, body, REQUESTS[1] // 2)
        common = dict(concurrency=1, requests=len(latencies), client="httpx.Client")
        record("serving_httpx_requests_per_s", round(len(latencies) / wall, 1), "req/s", **common)
        record("serving_httpx_latency_p50", round(_percentile(latencies, 50), 3), "ms", **common)
    finally:
        endpoints.delete(live)

    # The same module, called directly, as the server calls it.
    torch.set_num_threads(1)
    module = torch.jit.load(str(Path(model.attributes["uri"][7:]) / "model.pt"))
    x = torch.tensor([row])
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(WARMUP):
            module(x)
        t0 = time.perf_counter()
        for _ in range(DIRECT_CALLS):
            t = time.perf_counter()
            module(x).tolist()
            times.append((time.perf_counter() - t) * 1000)
        wall = time.perf_counter() - t0
    direct_rps = DIRECT_CALLS / wall
    record("direct_forward_calls_per_s", round(direct_rps, 1), "calls/s", calls=DIRECT_CALLS)
    record("direct_forward_p50", round(statistics.median(times), 4), "ms")
    record("direct_forward_p99", round(_percentile(times, 99), 4), "ms")
    record("serving_overhead_ratio", round(direct_rps / served_rps[1], 1), "x",
           meaning="direct calls/s over served requests/s at concurrency 1")


BATCH_ROWS = (1, 32)
BATCH_CONCURRENCY = 8
BATCH_REQUESTS = 4000


def _body(rows: int) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "shape": [rows, FEATURES],
                                   "datatype": "FP32", "data": mlp_rows(rows)}]}).encode()


def _metric(port: int, name: str) -> float | None:
    """One sample of the server's /metrics (Prometheus text), None when it has none."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, trust_env=False).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_serving_with_capture_one_and_32_rows(tmp_path, monkeypatch):
    """Concurrency 8 with capture on (every request sampled), one-row and 32-row bodies:
    requests/s and p50/p99, and the capture's size on disk afterwards.

    ``MLFORM_BENCH_SERVER=PATH`` serves with another server program (an older version,
    saved with `git show`), so that versions can be measured interleaved in one session;
    its figures carry ``server=PATH``."""
    other = os.environ.get("MLFORM_BENCH_SERVER")
    if other:
        monkeypatch.setattr(endpoints_module, "SERVER_PROGRAM", Path(other))
    context = ProviderContext(name="local", alias=None, stack="bench", env="bench",
                              stack_dir=tmp_path, config={})
    env = LocalEnv(context=context, root=tmp_path / ".mlform" / "local", host="127.0.0.1",
                   python=default_python(), ready_timeout=60)
    models, endpoints = ModelHandler(env), EndpointHandler(env)
    uri = _mlp(tmp_path / "run")
    model = models.create(contract.plan(
        models, Desired("model.mlp", "model", "mlp", {"artifact": uri, "framework": "torch"}), None))
    ref = {"address": "model.mlp", "uri": model.attributes["uri"],
           "version": model.attributes["version"], "approval": "approved"}
    want = Desired("endpoint.mlp", "endpoint", "mlp",
                   {"model": ref, "capture": {"sample_percent": 100}})
    live = endpoints.create(contract.plan(endpoints, want, None))
    try:
        port = live.attributes["port"]
        path = urlsplit(live.attributes["url"] + "/infer").path
        for rows in BATCH_ROWS:
            wall, latencies = _drive(port, path, _body(rows), BATCH_CONCURRENCY,
                                     BATCH_REQUESTS)
            common = dict(concurrency=BATCH_CONCURRENCY, rows=rows, capture=True,
                          requests=len(latencies), model="mlp-16-64-64-2",
                          measured="whole server process over loopback, asyncio client",
                          server=other or "this version")
            record("serving_capture_requests_per_s", round(len(latencies) / wall, 1), "req/s",
                   **common)
            record("serving_capture_latency_p50", round(_percentile(latencies, 50), 3), "ms",
                   **common)
            record("serving_capture_latency_p99", round(_percentile(latencies, 99), 3), "ms",
                   **common)
        dropped = _metric(port, "mlform_capture_dropped_total")
        directory = tmp_path / ".mlform" / "local" / "endpoints"
        size = sum(p.stat().st_size for p in directory.rglob("capture.jsonl*"))
        record("serving_capture_bytes_on_disk", size, "bytes",
               requests=len(BATCH_ROWS) * (BATCH_REQUESTS + WARMUP),
               dropped=dropped, server=other or "this version")
    finally:
        endpoints.delete(live)
