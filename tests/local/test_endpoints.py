"""The local provider's endpoints: real server processes serving a TorchScript MLP over HTTP.

Every endpoint a test starts is deleted by the `served` fixture's finalizer, and
any pid still alive after that is killed, so no server outlives its test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from _metrics import value
from _waiting import wait_until

torch = pytest.importorskip("torch")

# The run contract saves TorchScript; torch 2.x marks torch.jit deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

from mlform.expr.values import UNKNOWN  # noqa: E402
from mlform.providers.base import Desired, LiveObject, ProviderError  # noqa: E402
from mlform.providers.local import processes  # noqa: E402
from mlform.providers.local.endpoints import (  # noqa: E402
    TOKEN_HEADER, EndpointHandler, capture_path, endpoint_dir,
)
from mlform.providers.local.models import ModelHandler  # noqa: E402
from mlform.providers.kit import calls as contract

FEATURES = ["amount", "hour", "age", "score"]
ADDRESS = "endpoint.fraud"
MODEL = "model.fraud"


# ----------------------------------------------------------------- helpers

def save_mlp(directory: Path, seed: int, signature: bool = True) -> str:
    """A training run's output dir: a scripted 4 -> 16 -> 2 MLP; returns its file:// URI."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(len(FEATURES), 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 2), torch.nn.Softmax(dim=1))
    directory.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(net), str(directory / "model.pt"))
    if signature:
        (directory / "signature.json").write_text(json.dumps({"inputs": FEATURES,
                                                              "outputs": ["p0", "p1"]}))
    (directory / "metrics.json").write_text('{"accuracy": 0.9}')
    return directory.as_uri()


def oip(rows: list[list[float]]) -> dict:
    return {"inputs": [{"name": "input", "shape": [len(rows), len(rows[0])], "datatype": "FP32",
                        "data": [v for row in rows for v in row]}]}


def model_ref(model: LiveObject) -> dict:
    """The endpoint's `model` attribute as the engine projects `model.fraud`."""
    a = model.attributes
    return {"address": MODEL, **{k: a[k] for k in ("uri", "version", "stage", "framework",
                                                   "approval") if k in a}}


class Stack:
    """A model registry and an endpoint handler on one provider root."""

    def __init__(self, env, tmp_path: Path) -> None:
        self.env, self.tmp = env, tmp_path
        self.models = ModelHandler(env)
        self.endpoints = EndpointHandler(env)
        self.model: LiveObject | None = None
        self.live: dict[str, LiveObject] = {}
        self.pids: set[int] = set()

    def register(self, seed: int, **extra) -> LiveObject:
        uri = save_mlp(self.tmp / "runs" / f"run-{seed}", seed)
        want = Desired(MODEL, "model", "fraud", {"artifact": uri, "framework": "torch",
                                                 "stage": "production", **extra})
        planned = contract.plan(self.models, want, self.model)
        self.model = (self.models.create(planned) if self.model is None
                      else self.models.update(self.model, planned))
        return self.model

    def desired(self, address: str = ADDRESS, **attrs) -> Desired:
        attrs.setdefault("model", model_ref(self.model))
        return Desired(address, "endpoint", address.split(".")[1], attrs)

    def apply(self, want: Desired) -> LiveObject:
        prior = self.live.get(want.address)
        planned = contract.plan(self.endpoints, want, prior)
        live = (self.endpoints.create(planned) if prior is None
                else self.endpoints.update(prior, planned))
        for key, value in planned.attributes.items():   # the engine's consistency check
            if value is not UNKNOWN:
                assert live.attributes[key] == value, key
        self.live[want.address] = live
        self.pids.add(live.attributes["pid"])
        return live

    def close(self) -> None:
        for live in self.live.values():
            self.endpoints.delete(live)
        for pid in self.pids:       # belt and braces: nothing outlives the test
            if processes.is_ours(pid, "server.json"):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def served(local_env, tmp_path):
    stack = Stack(local_env, tmp_path)
    yield stack
    stack.close()


@pytest.fixture
def client():
    with httpx.Client(timeout=10, trust_env=False) as c:
        yield c


def status(client: httpx.Client, live: LiveObject) -> dict:
    base = live.attributes["url"].split("/v2/")[0]
    return client.get(f"{base}/v2/admin/status").json()


# ----------------------------------------------------------------- plan

def test_plan_before_create_and_with_known_port(served):
    served.register(seed=1)
    planned = contract.plan(served.endpoints, served.desired(), None)
    a = planned.attributes
    assert a["url"] is UNKNOWN and a["pid"] is UNKNOWN and a["port"] is UNKNOWN
    assert a["model_version"] == 1 and a["serving"] == [{"version": 1, "weight": 100}]
    fixed = contract.plan(served.endpoints, served.desired(port=18123), None).attributes
    assert fixed["url"] == "http://127.0.0.1:18123/v2/models/fraud"
    # the model is being re-registered: the version is known only after apply
    ref = {**model_ref(served.model), "version": UNKNOWN, "uri": UNKNOWN}
    unknown = contract.plan(served.endpoints, served.desired(model=ref), None).attributes
    assert unknown["model_version"] is UNKNOWN and unknown["serving"] is UNKNOWN
    assert not endpoint_dir(served.env, ADDRESS).exists()      # plan made nothing


def test_endpoint_without_version_follows_the_alias(served):
    served.register(seed=1)
    ref = {"address": MODEL, "stage": "production"}
    assert contract.plan(served.endpoints, served.desired(model=ref), None).attributes["model_version"] == 1


def test_rejected_versions_are_refused(served):
    served.register(seed=1, approval="rejected")
    problems = contract.validate(served.endpoints, served.desired())
    assert [d.severity for d in problems] == ["error"] and "rejected" in problems[0].summary
    planned = contract.plan(served.endpoints, served.desired(), None)
    with pytest.raises(ProviderError, match="rejected"):
        served.endpoints.create(planned)
    assert not list(endpoint_dir(served.env, ADDRESS).glob("process.json"))


# ----------------------------------------------------------------- serving

def test_serves_open_inference_protocol(served, client, progress):
    served.register(seed=1)
    live = served.apply(served.desired())
    a = live.attributes
    url, pid = a["url"], a["pid"]
    assert url == f"http://127.0.0.1:{a['port']}/v2/models/fraud"
    assert processes.is_ours(pid, str(endpoint_dir(served.env, ADDRESS) / "server.json"))
    assert any(e.message == "waiting for the server to be ready" and e.waiting_on for e in progress)
    base = url.split("/v2/")[0]
    assert client.get(f"{base}/v2/health/live").status_code == 200
    assert client.get(f"{base}/v2/health/ready").status_code == 200

    meta = client.get(url).json()
    assert meta["name"] == "fraud" and meta["versions"] == ["1"]
    assert meta["platform"] == "pytorch_torchscript"
    assert meta["inputs"][0]["shape"] == [-1, 4] and meta["inputs"][0]["datatype"] == "FP32"
    assert meta["inputs"][0]["features"] == FEATURES
    assert meta["outputs"][0]["shape"] == [-1, 2]
    assert client.get(f"{url}/versions/1").status_code == 200

    rows = [[120.0, 3.0, 41.0, 0.2], [5.5, 23.0, 19.0, 0.9], [0.0, 0.0, 0.0, 0.0]]
    answer = client.post(f"{url}/infer", json=oip(rows))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_name"] == "fraud" and body["model_version"] == "1"
    out = body["outputs"][0]
    assert out["shape"] == [3, 2] and out["datatype"] == "FP32" and len(out["data"]) == 6
    local = torch.jit.load(str(Path(served.model.attributes["uri"][7:]) / "model.pt"))
    expected = local(torch.tensor(rows)).reshape(-1).tolist()
    assert out["data"] == pytest.approx(expected, abs=1e-6)
    # one tensor per feature, named as in the signature, is accepted too
    columns = {"inputs": [{"name": f, "shape": [3], "datatype": "FP64",
                           "data": [row[i] for row in rows]} for i, f in enumerate(FEATURES)]}
    assert client.post(f"{url}/infer", json=columns).json()["outputs"][0]["data"] == \
        pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("body, fragment", [
    ({"inputs": []}, "non-empty list"),
    ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
     "takes 4 features"),
    ({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3]}]},
     "needs 8 values"),
    ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "BYTES", "data": ["a"] * 4}]},
     "not supported"),
    ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ["a"] * 4}]},
     "not a list of numbers"),
])
def test_bad_requests_get_oip_errors(served_once, client, body, fragment):
    answer = client.post(f"{served_once}/infer", json=body)
    assert answer.status_code == 400
    assert fragment in answer.json()["error"]


def test_not_json_and_unknown_model(served_once, client):
    answer = client.post(f"{served_once}/infer", content=b"{nope",
                         headers={"content-type": "application/json"})
    assert answer.status_code == 400 and "not JSON" in answer.json()["error"]
    other = served_once.rsplit("/", 1)[0] + "/other"
    assert client.post(f"{other}/infer", json=oip([[1, 2, 3, 4]])).status_code == 404
    assert "error" in client.get(other).json()


@pytest.fixture(scope="module")
def served_once(tmp_path_factory):
    """One endpoint shared by the request-validation tests (a server start is seconds)."""
    from mlform.providers.base import ProviderContext
    from mlform.providers.local.env import LocalEnv, default_python
    stack_dir = tmp_path_factory.mktemp("shared")
    context = ProviderContext(name="local", alias=None, stack="stack", env="test",
                              stack_dir=stack_dir, config={})
    env = LocalEnv(context=context, root=stack_dir / ".mlform" / "local", host="127.0.0.1",
                   python=default_python(), ready_timeout=30.0)
    stack = Stack(env, stack_dir)
    try:
        stack.register(seed=1)
        yield stack.apply(stack.desired()).attributes["url"]
    finally:
        stack.close()


def test_capture_logs_sampled_requests(served, client):
    served.register(seed=1)
    live = served.apply(served.desired(capture={"sample_percent": 50}))
    url = live.attributes["url"]
    for i in range(9):
        client.post(f"{url}/infer", json=oip([[float(i), 1.0, 2.0, 3.0]]))
    client.post(f"{url}/infer", json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                                                  "data": [1.0]}]})      # a 400, captured too
    path = capture_path(served.env, ADDRESS)
    # the capture is written by the server's writer thread, after the answers
    lines = wait_until(lambda: len(x := path.read_text().splitlines()) >= 5 and x, 10,
                       "five captured requests")
    lines = [json.loads(x) for x in lines]
    assert len(lines) == 5                       # exactly half of 10
    ok = [x for x in lines if x["status"] == 200]
    assert ok and set(ok[0]) >= {"time", "version", "latency_ms", "status", "inputs", "outputs"}
    assert list(ok[0]["inputs"][0]) == FEATURES and ok[0]["version"] == 1
    assert len(ok[0]["outputs"][0]) == 2
    assert status(client, live)["capture"] == {
        "path": str(path), "sample_percent": 50, "max_bytes": 64 * 1024 * 1024, "max_files": 4,
        "max_age_seconds": None, "queue": 10_000}
    metrics = client.get(live.attributes["url"].split("/v2/")[0] + "/metrics").text
    assert value(metrics, "mlform_capture_dropped_total") == 0
    assert value(metrics, "mlform_capture_written_total") == 5


def test_metrics_count_each_request_by_version_and_status(served, client):
    """`/metrics`, read by prometheus_client's parser: every answer counted once under
    its model, version and status code, its latency and rows in the histograms."""
    served.register(seed=1)
    url = served.apply(served.desired()).attributes["url"]
    name = url.rsplit("/", 1)[-1]
    for i in range(6):
        rows = [[float(i), 1.0, 2.0, 3.0]] * (i + 1)
        assert client.post(f"{url}/infer", json=oip(rows)).status_code == 200
    for _ in range(3):
        assert client.post(f"{url}/infer", content=b"{nope",
                           headers={"content-type": "application/json"}).status_code == 400
    text = client.get(url.split("/v2/")[0] + "/metrics").text
    labels = {"model": name, "version": "1", "variant": "primary"}
    assert value(text, "mlform_requests_total", code="200", **labels) == 6
    assert value(text, "mlform_requests_total", code="400", **labels) == 3
    assert value(text, "mlform_request_latency_seconds_count", **labels) == 9
    assert value(text, "mlform_request_latency_seconds_bucket", le="+Inf", **labels) == 9
    assert 0 < value(text, "mlform_request_latency_seconds_sum", **labels) < 9 * 5.0
    assert value(text, "mlform_request_rows_count", **labels) == 6     # bodies that parsed
    assert value(text, "mlform_request_rows_sum", **labels) == 1 + 2 + 3 + 4 + 5 + 6
    assert value(text, "mlform_request_rows_bucket", le="4.0", **labels) == 4


def test_capture_settings_reach_the_server_by_reload(served, client):
    served.register(seed=1)
    live = served.apply(served.desired(capture={"sample_percent": 100}))
    pid = live.attributes["pid"]
    again = served.apply(served.desired(capture={"sample_percent": 100},
                                        settings={"capture_max_mb": 1, "capture_max_files": 2,
                                                  "capture_max_age_seconds": 600}))
    assert again.attributes["pid"] == pid                     # a hot reload, not a restart
    got = status(client, again)["capture"]
    assert (got["max_bytes"], got["max_files"], got["max_age_seconds"]) == (1024 * 1024, 2, 600)


def test_the_server_runs_on_uvloop_and_httptools_when_installed(served_once, client):
    answer = client.get(served_once.split("/v2/")[0] + "/v2/admin/status").json()
    try:
        import uvloop  # noqa: F401
    except ImportError:
        assert answer["event_loop"].startswith("asyncio.")
    else:
        assert answer["event_loop"].startswith("uvloop."), answer["event_loop"]
    try:
        import httptools  # noqa: F401
    except ImportError:
        assert "h11" in answer["http"]
    else:
        assert "httptools" in answer["http"], answer["http"]


# ----------------------------------------------------------------- updates

def test_model_update_has_no_failed_request(served, client):
    served.register(seed=1)
    live = served.apply(served.desired())
    url, pid = live.attributes["url"], live.attributes["pid"]
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        # A fresh client per batch: new connections during the switch as well as kept-alive ones.
        while not stop.is_set():
            with httpx.Client(timeout=10, trust_env=False) as c:
                for _ in range(20):
                    try:
                        r = c.post(f"{url}/infer", json=oip([[1.0, 2.0, 3.0, 4.0]]))
                        if r.status_code != 200:
                            failures.append(f"{r.status_code} {r.text}")
                        else:
                            seen.append(r.json()["model_version"])
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))

    def answered() -> int:
        return len(seen) + len(failures)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        wait_until(answered, 30, "the first answers (from version 1)")
        served.register(seed=2)
        updated = served.apply(served.desired())
        after = answered()
        wait_until(lambda: answered() >= after + 20, 30, "20 answers after the update")
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert updated.attributes["pid"] == pid                     # no restart
    assert updated.attributes["model_version"] == 2
    assert "1" in seen and seen[-1] == "2"
    assert served.endpoints.read(updated).attributes == updated.attributes


def test_canary_splits_traffic_then_promotes(served, client):
    served.register(seed=1)
    # long enough for 200 requests on a busy 2-core machine; the test waits it out once
    rollout = {"strategy": "canary", "canary_percent": 10, "bake_seconds": 6}
    live = served.apply(served.desired(rollout=rollout))
    url = live.attributes["url"]
    served.register(seed=2)
    planned = contract.plan(served.endpoints, served.desired(rollout=rollout), live)
    assert any("canary 10%" in r for r in planned.reasons)
    result: dict = {}
    updater = threading.Thread(target=lambda: result.update(
        live=served.endpoints.update(live, planned)))
    updater.start()
    try:
        wait_until(lambda: len(status(client, live)["versions"]) >= 2, 30,
                   "the canary split to start")
        split = {v["version"]: v["weight"] for v in status(client, live)["versions"]}
        assert split == {1: 90, 2: 10}
        counts = {"1": 0, "2": 0}
        for _ in range(200):
            counts[client.post(f"{url}/infer", json=oip([[1, 2, 3, 4]])).json()["model_version"]] += 1
        assert abs(counts["2"] - 20) <= 4 and counts["1"] + counts["2"] == 200
    finally:
        updater.join()
    final = result["live"]
    served.live[ADDRESS] = final
    assert final.attributes["serving"] == [{"version": 2, "weight": 100}]
    assert final.attributes["pid"] == live.attributes["pid"]
    assert {client.post(f"{url}/infer", json=oip([[1, 2, 3, 4]])).json()["model_version"]
            for _ in range(20)} == {"2"}


def test_canary_without_bake_promotes_at_once(served, client):
    served.register(seed=1)
    rollout = {"strategy": "canary", "canary_percent": 10, "bake_seconds": 0}
    live = served.apply(served.desired(rollout=rollout))
    before = status(client, live)["generation"]
    served.register(seed=2)
    final = served.apply(served.desired(rollout=rollout))
    assert final.attributes["serving"] == [{"version": 2, "weight": 100}]
    assert status(client, final)["generation"] == before + 1      # one reload, no canary step


def test_new_torch_settings_restart_on_the_same_port(served, client):
    served.register(seed=1)
    live = served.apply(served.desired())
    again = served.apply(served.desired(settings={"torch_threads": 2}))
    assert again.attributes["pid"] != live.attributes["pid"]
    assert again.attributes["url"] == live.attributes["url"]          # SO_REUSEPORT handover
    marker = str(endpoint_dir(served.env, ADDRESS) / "server.json")
    assert not processes.is_ours(live.attributes["pid"], marker)     # the old one was stopped
    assert status(client, again)["torch_threads"] == 2


# ----------------------------------------------------------------- read, drift, adoption

def test_killed_server_is_drift_that_apply_heals(served, client):
    served.register(seed=1)
    live = served.apply(served.desired())
    assert served.endpoints.read(live).attributes == live.attributes
    os.kill(live.attributes["pid"], signal.SIGKILL)
    wait_until(lambda: served.endpoints.read(live) is None, 10, "read to find the server gone")
    # the engine plans a create for a resource that is gone
    del served.live[ADDRESS]
    healed = served.apply(served.desired())
    assert healed.attributes["pid"] != live.attributes["pid"]
    assert healed.attributes["url"] == live.attributes["url"]      # its old port was free
    assert client.post(f"{healed.attributes['url']}/infer",
                       json=oip([[1, 2, 3, 4]])).status_code == 200


def test_read_reports_a_different_served_version(served, client):
    served.register(seed=1)
    live = served.apply(served.desired())
    v1 = served.model
    served.register(seed=2)
    # someone points the server at version 2 behind mlform's back
    spec_path = endpoint_dir(served.env, ADDRESS) / "server.json"
    spec = json.loads(spec_path.read_text())
    v2_path = served.model.attributes["uri"][7:]
    spec.update(models=[{"version": 2, "path": v2_path, "weight": 100}],
                generation=spec["generation"] + 1)
    spec_path.write_text(json.dumps(spec))
    base = live.attributes["url"].split("/v2/")[0]
    assert client.post(f"{base}/v2/admin/reload").status_code == 403      # token required
    assert client.post(f"{base}/v2/admin/reload",
                       headers={TOKEN_HEADER: spec["token"]}).status_code == 202
    wait_until(lambda: status(client, live)["generation"] == spec["generation"], 20,
               "the server to reload its spec")
    drifted = served.endpoints.read(live)
    assert drifted.attributes["model_version"] == 2
    assert drifted.attributes["serving"] == [{"version": 2, "weight": 100}]
    # the next apply (the spec still wants version 1) puts it back, in place
    served.model = v1
    served.live[ADDRESS] = drifted
    back = served.apply(served.desired())
    assert back.attributes["model_version"] == 1 and back.attributes["pid"] == live.attributes["pid"]


def test_retried_create_adopts_the_running_server(served):
    served.register(seed=1)
    live = served.apply(served.desired())
    again = served.endpoints.create(contract.plan(served.endpoints, served.desired(), None))
    assert again.attributes["pid"] == live.attributes["pid"]
    assert again.id == live.id == served.env.object_id(ADDRESS)
    # read by address alone (lost id, import) finds it too
    found = served.endpoints.read(LiveObject(ADDRESS, "endpoint", None, {}))
    assert found is not None and found.attributes["pid"] == live.attributes["pid"]


def test_port_taken_by_someone_else_is_an_error(served):
    served.register(seed=1)
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        planned = contract.plan(served.endpoints, served.desired(port=port), None)
        with pytest.raises(ProviderError, match="in use"):
            served.endpoints.create(planned)


# ----------------------------------------------------------------- delete

def test_delete_stops_the_server_and_frees_the_port(served, client):
    served.register(seed=1)
    live = served.apply(served.desired())
    pid, port = live.attributes["pid"], live.attributes["port"]
    served.endpoints.delete(live)
    del served.live[ADDRESS]
    marker = str(endpoint_dir(served.env, ADDRESS) / "server.json")
    assert not processes.is_ours(pid, marker)
    assert not processes.port_open("127.0.0.1", port)
    assert not endpoint_dir(served.env, ADDRESS).exists()
    assert served.endpoints.read(live) is None
    served.endpoints.delete(live)            # absent already = success


def test_never_stops_a_process_it_did_not_start(served, monkeypatch):
    signalled: list[tuple[int, int]] = []
    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        signalled.append((pid, sig))
        real_kill(pid, sig)

    stranger = subprocess.Popen(["sleep", "100"])
    try:
        files = endpoint_dir(served.env, ADDRESS)
        files.mkdir(parents=True)
        (files / "server.json").write_text(json.dumps({"name": "fraud", "host": "127.0.0.1",
                                                       "port": 1, "models": []}))
        (files / "process.json").write_text(json.dumps({"pid": stranger.pid, "host": "127.0.0.1",
                                                        "port": 1}))
        recorded = LiveObject(ADDRESS, "endpoint", served.env.object_id(ADDRESS),
                              {"pid": stranger.pid, "port": 1})
        assert served.endpoints.read(recorded) is None      # not ours: gone, as far as we know
        with monkeypatch.context() as patched:
            patched.setattr(os, "kill", kill)
            served.endpoints.delete(recorded)
        assert [sig for pid, sig in signalled if pid == stranger.pid] == []
        assert stranger.poll() is None                       # still running
    finally:
        stranger.kill()
        stranger.wait()
