"""Does a shadow variant delay the caller?  What callers of a `local` endpoint see with
and without a shadow mirroring every request (issue 12: "a shadow never delays the
caller: the primary's latency is unchanged within noise").

Three endpoints serve the MLP of `_mlp.py` (TorchScript, 16 -> 64 -> 64 -> 2), started
through the provider's handlers as `test_serving_batching.py` starts its endpoint:

* ``plain``: one ``model`` (the variant ``primary``), no capture;
* ``capture``: the same with ``capture {sample_percent = 100}``, so that the shadow's
  own cost can be told from the capture's;
* ``shadow``: ``variants = {a = {model.m1, weight 100}, b = {model.m2, weight 0}}``
  (two registered models of the same artifact) with
  ``experiment {type = "shadow", shadow = "b", shadow_percent = 100}`` and
  ``capture {sample_percent = 100}``: every request is answered by ``a`` and handed to
  ``b`` on the server's mirror thread, and both answers are captured (a mirrored request
  is always captured), so its figures include the capture's cost as well as the mirror's.

One-row requests at concurrency 1 and 8 are driven by the shared asyncio client
(`_load.py`), sized by `test_serving_batching._drive` to about
``MLFORM_BENCH_SERVING_SECONDS`` (default 3) per point; the configurations take turns
(plain, capture, shadow, three times over) so that a drift of the machine's load falls
on all of them.  Each point reports requests/s, p50 and p99 of what the callers saw
and, for the shadow, the server's ``mlform_shadow_requests_total`` by outcome over the
point (its share of the requests mirrored, the share dropped by the mirror's full queue)
and how long after the last answer the mirror thread took to finish its backlog.  The
three servers run all the time; a point starts once the previous one's mirror backlog is
done, so no point pays for another's shadow work.

The test asserts only correctness: every caller's answer is 200 from the live variant
(``a``; ``primary`` on the other endpoints), the shadow answered no request of its own,
and every request was either mirrored (and answered ``ok`` by the shadow) or dropped.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import pytest

from mlform.providers.base import Desired, ProviderContext
from mlform.providers.kit import calls as contract
from mlform.providers.local.endpoints import EndpointHandler
from mlform.providers.local.env import LocalEnv, default_python
from mlform.providers.local.models import ModelHandler

from _metrics import samples as metric_samples
from _waiting import wait_until
from ._mlp import FEATURES, save_mlp
from ._mlp import rows as mlp_rows
from ._support import record
from .test_serving_batching import MODEL, _drive

httpx = pytest.importorskip("httpx")

# The run contract saves TorchScript; torch 2.x marks torch.jit deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

CONCURRENCY = (1, 8)
ROUNDS = 3
# the variant every caller must meet, by configuration
LIVE = {"plain": "primary", "capture": "primary", "shadow": "a"}
SHADOW = "b"


def _counts(port: int) -> dict[tuple[str, str], float]:
    """(what, label) -> count from the server's /metrics: answered requests as
    ("requests", "variant:code") and shadow calls as ("shadow", outcome)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, trust_env=False).text
    counts: dict[tuple[str, str], float] = {}
    for (name, labels), value in metric_samples(text).items():
        labels = dict(labels)
        if name == "mlform_requests_total":
            key = ("requests", f"{labels['variant']}:{labels['code']}")
        elif name == "mlform_shadow_requests_total":
            key = ("shadow", labels["outcome"])
        else:
            continue
        counts[key] = counts.get(key, 0.0) + value
    return counts


def _delta(after: dict, before: dict, what: str) -> dict[str, int]:
    return {label: int(after[(kind, label)] - before.get((kind, label), 0.0))
            for kind, label in after if kind == what
            and after[(kind, label)] != before.get((kind, label), 0.0)}


def _model(models: ModelHandler, address: str, uri: str) -> dict:
    """Register the artifact as `address`; the model value the engine hands an endpoint."""
    name = address.split(".", 1)[1]
    want = Desired(address, "model", name, {"artifact": uri, "framework": "torch"})
    live = models.create(contract.plan(models, want, None))
    return {"address": address, "uri": live.attributes["uri"],
            "version": live.attributes["version"], "approval": "approved",
            "framework": "torch"}


def test_a_shadow_does_not_delay_the_caller(tmp_path):
    context = ProviderContext(name="local", alias=None, stack="bench", env="bench",
                              stack_dir=tmp_path, config={})
    env = LocalEnv(context=context, root=tmp_path / ".mlform" / "local", host="127.0.0.1",
                   python=default_python(), ready_timeout=60)
    models, endpoints = ModelHandler(env), EndpointHandler(env)
    uri = save_mlp(tmp_path / "run").parent.as_uri()
    m1, m2 = _model(models, "model.m1", uri), _model(models, "model.m2", uri)
    configs = {
        "plain": {"model": m1},
        "capture": {"model": m1, "capture": {"sample_percent": 100}},
        "shadow": {"variants": {"a": {"model": m1, "weight": 100},
                                SHADOW: {"model": m2, "weight": 0}},
                   "experiment": {"type": "shadow", "shadow": SHADOW, "shadow_percent": 100},
                   "capture": {"sample_percent": 100}},
    }
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, FEATURES],
                                   "datatype": "FP32", "data": mlp_rows(1)[0]}]}).encode()
    running = {}
    try:
        for config, attrs in configs.items():
            want = Desired(f"endpoint.{config}", "endpoint", config, attrs)
            running[config] = endpoints.create(contract.plan(endpoints, want, None))
        for config, live in running.items():
            answer = httpx.post(live.attributes["url"] + "/infer", content=body, timeout=30,
                                headers={"content-type": "application/json"}, trust_env=False)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-mlform-variant"] == LIVE[config]
        for turn in range(ROUNDS):
            for config, live in running.items():
                port = live.attributes["port"]
                path = urlsplit(live.attributes["url"] + "/infer").path
                for concurrency in CONCURRENCY:
                    _point(config, port, path, body, concurrency, turn)
    finally:
        for live in running.values():
            endpoints.delete(live)


def _point(config: str, port: int, path: str, body: bytes, concurrency: int,
           turn: int) -> None:
    """One measured point; the counters cover its sizing probe and warm-up too."""
    before = _counts(port)
    load, _ = _drive(port, path, body, concurrency)
    answered = time.perf_counter()
    after = _counts(port)
    requests = _delta(after, before, "requests")
    sent = sum(requests.values())
    assert requests == {f"{LIVE[config]}:200": sent}, requests
    assert sent >= load.requests
    common = dict(config=config, concurrency=concurrency, round=turn + 1,
                  requests=load.requests, seconds=round(load.wall_s, 2), model=MODEL,
                  capture=config != "plain")
    if config == "shadow":
        # the mirror thread may still be working through its queue: wait for it, so
        # the counts are complete and the next point does not pay for this one
        def settled() -> dict | None:
            now = _counts(port)
            done = _delta(now, before, "shadow")
            return done if sum(done.values()) >= sent else None
        shadow = wait_until(settled, 120, f"the shadow to see all {sent} requests")
        drained = time.perf_counter() - answered
        assert set(shadow) <= {"ok", "dropped"}, shadow
        assert shadow.get("ok", 0) + shadow.get("dropped", 0) == sent, (shadow, sent)
        common.update(shadow_percent=100)
        record("serving_shadow_mirrored_share", round(shadow.get("ok", 0) / sent, 4),
               "fraction", **common, counted=sent, dropped=shadow.get("dropped", 0),
               meaning="requests the shadow answered over requests sent "
                       "(mlform_shadow_requests_total ok / mlform_requests_total)")
        record("serving_shadow_backlog_drain_s", round(drained, 3), "s", **common,
               meaning="from the last caller's answer until the shadow had seen every request")
    rps = load.requests_per_s
    record("serving_shadow_requests_per_s", round(rps, 1), "req/s", **common)
    record("serving_shadow_latency_p50", round(load.p50_ms, 3), "ms", **common)
    record("serving_shadow_latency_p99", round(load.p99_ms, 3), "ms", **common)
