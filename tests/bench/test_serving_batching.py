"""Dynamic batching of a `local` endpoint: throughput and latency with and without it,
against the same model's forward pass in this process.

The endpoint serves the MLP of `_mlp.py` (TorchScript, 16 -> 64 -> 64 -> 2), one row
per request, started through the provider's handlers as `test_serving.py` starts it,
in three configurations of its `settings`:

* ``none``: ``max_batch_size = 1``, one inference worker (each request its own
  forward pass);
* ``dynamic``: ``max_batch_size = 32``, ``max_delay_ms = 2``, one inference worker
  (concurrent requests joined into one forward pass);
* ``dynamic-nowait``: the same with ``max_delay_ms = 0`` (a batch is what queued while
  the worker was busy: no request waits for others to arrive).

Each is driven by the shared asyncio client (`_load.py`) at concurrency 1, 8 and 64
for about ``MLFORM_BENCH_SERVING_SECONDS`` (default 3) per level: a short probe at the same
concurrency sizes the measured run, so that every level takes about the same time
however fast the machine is.  The mean batch size is what the server itself counted,
``mlform_batch_size`` (rows per forward pass) on its /metrics, read before and after
the measured run; it covers the measured requests and the client's one warm-up request
per connection.

The reference is the same artifact loaded in this process by the server's own loader
(`serving_runtime.load_predictor`, one torch thread as the server runs it), called on
one row at a time and on batches of 32 rows, in rows/s.  Each served run reports its
rows/s over both (``serving_batching_ratio_to_inprocess``, ``inprocess_rows_per_call``
1 and 32).  The client shares the machine's cores with the server, so served figures
include the client's own cost, as any loopback benchmark does.

The test asserts only correctness: every answer is 200, a served answer equals the
in-process one, and the unbatched server never ran a forward pass of more than one row.
"""

from __future__ import annotations

import json
import os
import time
from urllib.parse import urlsplit

import pytest

from mlform.providers.base import Desired, ProviderContext
from mlform.providers.kit import calls as contract
from mlform.providers.kit.artifacts import uri_to_path
from mlform.providers.kit.serving_runtime import load_predictor
from mlform.providers.local.endpoints import EndpointHandler
from mlform.providers.local.env import LocalEnv, default_python
from mlform.providers.local.models import ModelHandler

from _metrics import samples as metric_samples
from . import _load
from ._mlp import FEATURES, save_mlp
from ._mlp import rows as mlp_rows
from ._support import record

torch = pytest.importorskip("torch")
numpy = pytest.importorskip("numpy")
httpx = pytest.importorskip("httpx")

# The run contract saves TorchScript; torch 2.x marks torch.jit deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

MODEL = "mlp-16-64-64-2"
CONCURRENCY = (1, 8, 64)
CONFIGS = {
    "none": {"workers": 1, "max_batch_size": 1},
    "dynamic": {"workers": 1, "max_batch_size": 32, "max_delay_ms": 2},
    "dynamic-nowait": {"workers": 1, "max_batch_size": 32, "max_delay_ms": 0},
}
BATCH_ROWS = 32           # the in-process batched reference: the dynamic config's largest batch
SECONDS = float(os.environ.get("MLFORM_BENCH_SERVING_SECONDS", "3"))
PROBE_PER_CONNECTION = 20     # the sizing probe: a fraction of a second at any concurrency


def _calls_for(run, minimum: int = 100) -> int:
    """How many calls of `run` fill about SECONDS, from the rate of a short probe."""
    t0, calls = time.perf_counter(), 0
    while calls < minimum or time.perf_counter() - t0 < 0.2:
        run()
        calls += 1
    return max(minimum, int(calls / (time.perf_counter() - t0) * SECONDS))


def _inprocess_rows_per_s(predictor, rows: int) -> float:
    """Rows/s of the server's own predictor called here, `rows` rows per call."""
    x = numpy.asarray(mlp_rows(rows), dtype=numpy.float32)
    calls = _calls_for(lambda: predictor.predict(x))
    t0 = time.perf_counter()
    for _ in range(calls):
        predictor.predict(x)
    return calls * rows / (time.perf_counter() - t0)


def _batch_totals(port: int) -> tuple[float, float]:
    """(rows, forward passes) the server has counted in `mlform_batch_size`, all models."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, trust_env=False).text
    found = metric_samples(text)
    rows = sum(v for (name, _), v in found.items() if name == "mlform_batch_size_sum")
    passes = sum(v for (name, _), v in found.items() if name == "mlform_batch_size_count")
    return rows, passes


def _drive(port: int, path: str, body: bytes, concurrency: int) -> tuple[_load.Load, float]:
    """About SECONDS of one-row requests at `concurrency`, sized by a probe at the same
    concurrency (which also warms the server); (the load, the server's mean batch size)."""
    probe = _load.run(port, path, body, concurrency, PROBE_PER_CONNECTION * concurrency)
    assert not probe.errors, probe.failures
    per_connection = max(PROBE_PER_CONNECTION, int(probe.requests_per_s * SECONDS / concurrency))
    rows0, passes0 = _batch_totals(port)
    load = _load.run(port, path, body, concurrency, per_connection * concurrency, warmup=0)
    rows1, passes1 = _batch_totals(port)
    assert not load.errors, load.failures
    return load, (rows1 - rows0) / (passes1 - passes0)


def _served_answer(url: str, row: list[float]) -> list[float]:
    body = {"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP32",
                        "data": row}]}
    answer = httpx.post(url, json=body, timeout=30, trust_env=False)
    assert answer.status_code == 200, answer.text
    return answer.json()["outputs"][0]["data"]


def test_serving_with_and_without_dynamic_batching(tmp_path):
    context = ProviderContext(name="local", alias=None, stack="bench", env="bench",
                              stack_dir=tmp_path, config={})
    env = LocalEnv(context=context, root=tmp_path / ".mlform" / "local", host="127.0.0.1",
                   python=default_python(), ready_timeout=60)
    models, endpoints = ModelHandler(env), EndpointHandler(env)
    uri = save_mlp(tmp_path / "run").parent.as_uri()
    want = Desired("model.mlp", "model", "mlp", {"artifact": uri, "framework": "torch"})
    model = models.create(contract.plan(models, want, None))
    ref = {"address": "model.mlp", "uri": model.attributes["uri"],
           "version": model.attributes["version"], "approval": "approved"}
    torch.set_num_threads(1)                # as the server runs it (torch_threads = 1)
    predictor = load_predictor("bench", str(uri_to_path(model.attributes["uri"], tmp_path)),
                               "torch")

    # The reference first, before any server competes with it for the cores.
    inprocess = {rows: _inprocess_rows_per_s(predictor, rows) for rows in (1, BATCH_ROWS)}
    for rows, rate in inprocess.items():
        record("inprocess_forward_rows_per_s", round(rate, 1), "rows/s", rows_per_call=rows,
               model=MODEL, measured="serving_runtime predictor in the bench process, 1 thread")

    row = mlp_rows(1)[0]
    expected = predictor.predict(numpy.asarray([row], dtype=numpy.float32)).ravel()
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, FEATURES],
                                   "datatype": "FP32", "data": row}]}).encode()
    for config, settings in CONFIGS.items():
        want = Desired(f"endpoint.{config}", "endpoint", config,
                       {"model": ref, "settings": settings})
        live = endpoints.create(contract.plan(endpoints, want, None))
        try:
            url = live.attributes["url"] + "/infer"
            port, path = live.attributes["port"], urlsplit(url).path
            assert numpy.allclose(_served_answer(url, row), expected, atol=1e-5)
            for concurrency in CONCURRENCY:
                load, mean_batch = _drive(port, path, body, concurrency)
                if settings["max_batch_size"] == 1:
                    assert mean_batch == 1.0, mean_batch
                common = dict(config=config, concurrency=concurrency, requests=load.requests,
                              seconds=round(load.wall_s, 2), model=MODEL, **settings)
                rps = load.requests_per_s
                record("serving_batching_requests_per_s", round(rps, 1), "req/s", **common)
                record("serving_batching_latency_p50", round(load.p50_ms, 3), "ms", **common)
                record("serving_batching_latency_p99", round(load.p99_ms, 3), "ms", **common)
                record("serving_batching_mean_batch_size", round(mean_batch, 2), "rows",
                       **common)
                for rows, rate in inprocess.items():
                    record("serving_batching_ratio_to_inprocess", round(rps / rate, 4), "x",
                           **common, inprocess_rows_per_call=rows,
                           meaning="served rows/s over in-process rows/s")
        finally:
            endpoints.delete(live)

