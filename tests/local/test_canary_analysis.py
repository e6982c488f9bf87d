"""Canary analysis on the local provider, over real HTTP: a canary that fails on part of
its traffic is rolled back while callers of the stable version see no failure; a clean
canary is promoted.

Version 2 of the model is a TorchScript module that raises for rows whose first
feature is above 0.7 (the server answers those with an error status); a client thread
sends random rows during the bake and stops when the apply returns.
"""

from __future__ import annotations

import json
import random
import threading

import httpx
import pytest
from _metrics import samples
from _waiting import wait_until

from mlform.providers.base import Desired, ProviderError
from mlform.providers.kit import calls as contract

from .test_endpoints import ADDRESS, MODEL, Stack, oip, save_mlp

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


class Flaky(torch.nn.Module):
    """An MLP that raises for any row whose first feature is above 0.7."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0] > 0.7).any()):
            raise RuntimeError("amount out of range")
        return self.net(x)


def register_flaky(stack: Stack) -> None:
    """Register version 2: version 1's kind of MLP, wrapped in `Flaky`."""
    directory = stack.tmp / "runs" / "flaky"
    save_mlp(directory, seed=2)
    net = torch.jit.load(str(directory / "model.pt"))
    torch.jit.save(torch.jit.script(Flaky(net)), str(directory / "model.pt"))
    want = Desired(MODEL, "model", "fraud", {"artifact": directory.as_uri(), "framework": "torch",
                                             "stage": "production"})
    stack.model = stack.models.update(stack.model, contract.plan(stack.models, want, stack.model))


class Traffic:
    """A client thread sending one random row per request until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[int, str | None]] = []    # (status, model_version when 200)
        self.broken: list[str] = []                         # requests that got no answer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        rng = random.Random(12)
        with httpx.Client(timeout=10, trust_env=False) as client:
            while not self._stop.is_set():
                row = [rng.random(), rng.random(), rng.random(), rng.random()]
                try:
                    r = client.post(f"{self.url}/infer", json=oip([row]))
                except httpx.HTTPError as exc:
                    self.broken.append(repr(exc))
                    continue
                self.answers.append((r.status_code, r.json().get("model_version")
                                     if r.status_code == 200 else None))

    def __enter__(self) -> "Traffic":
        self._thread.start()
        wait_until(lambda: len(self.answers) >= 5, 30, "the first answers")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def rollout(**analysis) -> dict:
    return {"strategy": "canary", "canary_percent": 50, "bake_seconds": 3,
            "analysis": {"interval_seconds": 1, "min_requests": 5, **analysis}}


def requests_by_version_and_code(base: str) -> dict[tuple[str, str], float]:
    """mlform_requests_total summed by (version, code), from the server's /metrics."""
    found: dict[tuple[str, str], float] = {}
    text = httpx.get(f"{base}/metrics", trust_env=False).text
    for (name, labels), value in samples(text).items():
        if name == "mlform_requests_total":
            key = (dict(labels)["version"], dict(labels)["code"])
            found[key] = found.get(key, 0) + value
    return found


@pytest.fixture
def served(local_env, tmp_path):
    stack = Stack(local_env, tmp_path)
    yield stack
    stack.close()


def test_failing_canary_rolls_back_and_fails_the_apply(served, progress):
    served.register(seed=1)
    spec = rollout(max_error_rate=0.05)
    live = served.apply(served.desired(rollout=spec))
    url = live.attributes["url"]
    base = url.split("/v2/")[0]
    register_flaky(served)
    planned = contract.plan(served.endpoints, served.desired(rollout=spec), live)
    with Traffic(url) as traffic:
        with pytest.raises(ProviderError) as failure:
            served.endpoints.update(live, planned)
    message = failure.value.message
    assert "canary version 2 failed analysis: error_rate" in message and "> max 0.05" in message
    assert message.endswith("rolled back to version 1")
    report = json.loads(failure.value.service_message)
    assert report["rollback"] and report["checks"][-1]["status"] == "failed"
    assert any("rolling back to version 1" in e.message for e in progress)

    # The old version alone serves, in the same process; rows version 2 refused are fine.
    status = httpx.get(f"{base}/v2/admin/status", trust_env=False).json()
    assert [(v["version"], v["weight"]) for v in status["versions"]] == [(1, 100)]
    assert status["pid"] == live.attributes["pid"]
    for _ in range(20):
        r = httpx.post(f"{url}/infer", json=oip([[0.9, 0.5, 0.5, 0.5]]), trust_env=False)
        assert (r.status_code, r.json()["model_version"]) == (200, "1")
    assert served.endpoints.read(live).attributes["model_version"] == 1

    # Callers of version 1 saw no failure: every error was version 2's, by the server's count.
    assert traffic.broken == []
    served_by = {version for code, version in traffic.answers if code == 200}
    assert served_by == {"1", "2"}
    counts = requests_by_version_and_code(base)
    assert {code for version, code in counts if version == "1"} == {"200"}
    errors_of_2 = sum(n for (version, code), n in counts.items()
                      if version == "2" and not code.startswith("2"))
    assert errors_of_2 > 0
    assert sum(1 for code, _ in traffic.answers if code != 200) == errors_of_2


def test_clean_canary_is_promoted(served, progress):
    served.register(seed=1)
    spec = rollout(max_error_rate=0.05, max_p99_ms=20_000)
    live = served.apply(served.desired(rollout=spec))
    url = live.attributes["url"]
    served.register(seed=2)
    planned = contract.plan(served.endpoints, served.desired(rollout=spec), live)
    with Traffic(url) as traffic:
        final = served.endpoints.update(live, planned)
    served.live[ADDRESS] = final
    assert final.attributes["model_version"] == 2
    assert {r.json()["model_version"] for r in
            (httpx.post(f"{url}/infer", json=oip([[0.9, 0.5, 0.5, 0.5]]), trust_env=False)
             for _ in range(10))} == {"2"}
    assert traffic.broken == [] and {code for code, _ in traffic.answers} == {200}
    checks = [e.message for e in progress if e.message.startswith("canary version 2 analysis:")]
    assert any(m.startswith("canary version 2 analysis: passed") and "over the whole bake" in m
               for m in checks), checks
    assert not any(": failed" in m for m in checks), checks
    summary = [e.message for e in progress if "passed analysis" in e.message]
    assert summary and "error_rate 0 <= max 0.05" in summary[-1] and "p99_ms" in summary[-1]

