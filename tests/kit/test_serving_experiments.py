"""Experiments in the model server (`kit.serving`), over real HTTP to a real server process:
A/B splits and sticky keys, shadow mirroring, a bandit moved by feedback and resumed
after a restart, feedback errors, the bearer token, hooks, batching and the metrics.

Each server runs from `providers/kit/serving.py` by its path, as the providers start it,
with a hand-written ``server.json``.  The models are tiny TorchScript modules whose
answer names them (a constant per model), so an answer shows which model gave it.
Nothing sleeps to synchronise: every wait is for something the test can see.
"""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from _metrics import kinds, samples, value
from _waiting import wait_until

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

SERVER = Path(__file__).resolve().parents[2] / "providers" / "kit" / "serving.py"
NAME = "fraud"
FEATURES = ["amount", "hour"]
TOKEN = "s3cret-token-value"


# ----------------------------------------------------------------- models

class _Constant(torch.nn.Module):
    """Answers `value` for every row: the answer says which model gave it."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * 0.0 + self.value


class _FailsOnPositive(torch.nn.Module):
    """Fails on any row whose first feature is positive (the warm-up's zeros pass)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0] > 0).any()):
            raise ValueError("this shadow model fails on purpose")
        return x[:, :1]


def save(module: torch.nn.Module, directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(module), str(directory / "model.pt"))
    (directory / "signature.json").write_text(json.dumps({"inputs": FEATURES, "outputs": ["p"]}))
    return str(directory)


def body(amount: float = 1.0, **extra) -> dict:
    return {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32",
                        "data": [amount, 2.0]}], **extra}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ----------------------------------------------------------------- a server process

class Output:
    """A process's output, line by line, read by a thread."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self.fresh: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            self.fresh.put(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class Served:
    """One server process over a spec file; `start` again after `stop` is a restart."""

    def __init__(self, tmp: Path, spec: dict, launcher: str | None = None) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.spec = {"address": f"endpoint.{NAME}", "name": NAME, "host": "127.0.0.1",
                     "port": self.port, "token": "admin", "torch_threads": 1,
                     "generation": 1, "capture": None, **spec}
        self.spec_path = tmp / "server.json"
        self.spec_path.write_text(json.dumps(self.spec))
        self.launcher = launcher
        self.proc: subprocess.Popen | None = None
        self.output: Output | None = None
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/v2/models/{NAME}"
        self.client = httpx.Client(timeout=30, trust_env=False)

    def start(self) -> "Served":
        # a launcher gets the spec and the folder to import `serving` from: by file path,
        # with providers/kit first on sys.path, as the providers start it
        command = ([sys.executable, "-c", self.launcher, str(self.spec_path), str(SERVER.parent)]
                   if self.launcher else [sys.executable, str(SERVER), str(self.spec_path)])
        self.proc = subprocess.Popen(command,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.output = Output(self.proc.stdout)

        def ready() -> bool:
            assert self.proc.poll() is None, f"the server exited: {self.output.text}"
            try:
                return self.client.get(f"{self.base}/v2/health/ready").status_code == 200
            except httpx.TransportError:
                return False
        wait_until(ready, 90, "the server to load its models")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def infer(self, doc: dict | None = None, **kwargs) -> httpx.Response:
        return self.client.post(f"{self.url}/infer", json=doc or body(), **kwargs)

    def feedback(self, doc: dict, **kwargs) -> httpx.Response:
        return self.client.post(f"{self.url}/feedback", json=doc, **kwargs)

    def status(self) -> dict:
        return self.client.get(f"{self.base}/v2/admin/status").json()

    def metrics(self) -> str:
        return self.client.get(f"{self.base}/metrics").text


@pytest.fixture
def serve(tmp_path):
    started: list[Served] = []

    def make(spec: dict, launcher: str | None = None, start: bool = True) -> Served:
        served = Served(tmp_path, spec, launcher)
        started.append(served)
        return served.start() if start else served
    yield make
    for served in started:
        if served.proc is not None and served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
        served.client.close()


def two_variants(tmp: Path, weights=(30, 70), b_role: str = "live", b_model=None) -> list[dict]:
    return [{"version": 1, "path": save(_Constant(1.0), tmp / "a"), "weight": weights[0],
             "variant": "a", "framework": "torch", "role": "live"},
            {"version": 2, "path": save(b_model or _Constant(2.0), tmp / "b"),
             "weight": weights[1] if b_role == "live" else 0, "variant": "b",
             "framework": "torch", "role": b_role}]


def capture_of(tmp: Path) -> dict:
    return {"path": str(tmp / "capture.jsonl"), "sample_percent": 100}


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# ----------------------------------------------------------------- A/B

def test_ab_split_follows_the_weights_and_sticky_keys_keep_their_variant(serve, tmp_path):
    served = serve({"models": two_variants(tmp_path),
                    "experiment": {"type": "ab", "sticky_key": "header:x-user-id"}})
    # without the key: the weighted schedule, within 3 points of 30/70 over 2,000
    seen = Counter()
    for _ in range(2000):
        answer = served.infer()
        assert answer.status_code == 200, answer.text
        variant = answer.headers["x-mlform-variant"]
        assert answer.json()["outputs"][0]["data"] == [{"a": 1.0, "b": 2.0}[variant]]
        seen[variant] += 1
    assert abs(seen["a"] / 2000 * 100 - 30) <= 3, seen

    # with the key: every user always lands on one variant, users split near the weights
    by_user: dict[str, set] = {}
    for user in range(400):
        for _ in range(2):
            answer = served.infer(headers={"x-user-id": f"user-{user}"})
            by_user.setdefault(f"user-{user}", set()).add(answer.headers["x-mlform-variant"])
    assert all(len(variants) == 1 for variants in by_user.values())
    share_a = sum(v == {"a"} for v in by_user.values()) / len(by_user) * 100
    assert abs(share_a - 30) <= 6, share_a       # 400 users: a binomial share, sd 2.3 points

    # the same users meet the same variants in another process
    first = {user: next(iter(v)) for user, v in by_user.items()}
    served.stop()
    served.start()
    again = {user: served.infer(headers={"x-user-id": user}).headers["x-mlform-variant"]
             for user in list(first)[:100]}
    assert again == {user: first[user] for user in again}


def test_sticky_input_key_reads_parameters_or_the_named_tensor(serve, tmp_path):
    served = serve({"models": two_variants(tmp_path, (50, 50)),
                    "experiment": {"type": "ab", "sticky_key": "input:user"}})
    for user in range(40):
        by_parameter = {served.infer(body(parameters={"user": user}))
                        .headers["x-mlform-variant"] for _ in range(3)}
        assert len(by_parameter) == 1
        as_tensor = body()
        as_tensor["inputs"].append({"name": "user", "shape": [1], "datatype": "INT64",
                                    "data": [user]})
        # a tensor named like the key is the key too (the model's own inputs are per
        # feature or one [N, F] tensor: this request names its features one by one)
        as_tensor["inputs"] = [{"name": "amount", "shape": [1], "datatype": "FP32", "data": [1.0]},
                               {"name": "hour", "shape": [1], "datatype": "FP32", "data": [2.0]},
                               as_tensor["inputs"][1]]
        answer = served.infer(as_tensor)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-mlform-variant"] in by_parameter


# ----------------------------------------------------------------- shadow

#: the server with its shadow mirror held until a line arrives on stdin, and a small
#: mirror queue, so that the test sees calls waiting and dropped while callers are served
HELD_MIRROR = """
import sys
sys.path.insert(0, sys.argv[2])
import serving
import serving_experiments
serving_experiments.SHADOW_QUEUE = 4
run = serving_experiments.Mirror._run

def held(self):
    print("mirror held", flush=True)
    sys.stdin.readline()
    run(self)

serving_experiments.Mirror._run = held
sys.exit(serving.main(["serving", sys.argv[1]]))
"""


def test_shadow_gets_its_share_and_never_reaches_the_caller(serve, tmp_path):
    served = serve({"models": two_variants(tmp_path, (100, 0), b_role="shadow",
                                           b_model=_FailsOnPositive()),
                    "capture": capture_of(tmp_path),
                    "experiment": {"type": "shadow", "shadow_percent": 20}},
                   launcher=HELD_MIRROR)
    answers = [served.infer(body(float(n))) for n in range(50)]
    # every caller got the live model's answer while the shadow could not run at all
    assert [a.status_code for a in answers] == [200] * 50
    assert {a.headers["x-mlform-variant"] for a in answers} == {"a"}
    assert all(a.json()["outputs"][0]["data"] == [1.0] for a in answers)
    wait_until(lambda: "mirror held" in served.output.text, 30, "the mirror thread to start")
    text = served.metrics()
    # 20 % of 50 = 10 mirrored, exactly; 4 wait in the queue, the other 6 were dropped
    assert value(text, "mlform_shadow_requests_total", variant="b", outcome="dropped") == 6
    served.proc.stdin.write("go\n")
    served.proc.stdin.flush()

    def shadow_errors() -> float:
        found = samples(served.metrics())
        return found.get(("mlform_shadow_requests_total",
                          frozenset({"variant": "b", "outcome": "error"}.items())), 0)
    wait_until(lambda: shadow_errors() == 4, 30, "the 4 queued shadow calls")
    # the shadow fails on every positive amount: its errors are in metrics and capture only
    assert served.status()["experiment"]["mirror"] == {"pending": 0, "dropped": 6}
    served.stop()
    lines = records(tmp_path / "capture.jsonl")
    live = {r["request_id"]: r for r in lines if r["role"] == "live"}
    shadow = [r for r in lines if r["role"] == "shadow"]
    assert len(live) == 50 and len(shadow) == 4
    assert {a.json()["id"] for a in answers} == set(live)
    for record in shadow:           # side by side with the live answer of the same request
        assert record["variant"] == "b" and record["status"] >= 400
        assert "fails on purpose" in record["error"]
        assert live[record["request_id"]]["outputs"] == [[1.0]]
        assert live[record["request_id"]]["inputs"] == record["inputs"] or record["inputs"] is None


def test_shadow_answers_are_captured_beside_the_live_ones(serve, tmp_path):
    served = serve({"models": two_variants(tmp_path, (100, 0), b_role="shadow"),
                    "capture": {**capture_of(tmp_path), "sample_percent": 0},
                    "experiment": {"type": "shadow", "shadow_percent": 25}})
    ids = [served.infer(body(float(n))).json()["id"] for n in range(40)]
    done = ("mlform_shadow_requests_total", frozenset({"variant": "b", "outcome": "ok"}.items()))
    # the shadow runs in a process of its own, which may still be starting: no sample yet
    wait_until(lambda: samples(served.metrics()).get(done, 0) == 10, 60, "10 shadow calls")
    served.stop()
    lines = records(tmp_path / "capture.jsonl")
    # capture samples 0 %, yet a mirrored request is captured whole: live and shadow
    pairs = Counter(r["request_id"] for r in lines)
    assert len(pairs) == 10 and set(pairs.values()) == {2} and set(pairs) <= set(ids)
    for r in lines:
        assert r["outputs"] == ([[1.0]] if r["role"] == "live" else [[2.0]])


# ----------------------------------------------------------------- bandit

def exact_rewards(percent: int):
    """Rewards of 1 for exactly `percent` % of calls, spread evenly (no sampling noise:
    only the policy's own draws are random)."""
    n = 0

    def reward() -> int:
        nonlocal n
        n += 1
        return int((n * percent) // 100 > ((n - 1) * percent) // 100)
    return reward


def test_bandit_moves_traffic_to_the_better_variant_and_resumes_after_a_kill(serve, tmp_path):
    served = serve({"models": two_variants(tmp_path, (50, 50)),
                    "capture": capture_of(tmp_path),
                    "experiment": {"type": "bandit", "reward": "binary", "floor_percent": 5,
                                   "state_path": str(tmp_path / "bandit.json"),
                                   "feedback_path": str(tmp_path / "feedback.jsonl")}})
    reward = {"a": exact_rewards(10), "b": exact_rewards(15)}     # B better by 5 points
    chosen = []
    for _ in range(1200):
        answer = served.infer()
        variant = answer.headers["x-mlform-variant"]
        chosen.append(variant)
        given = served.feedback({"request_id": answer.json()["id"], "reward": reward[variant]()})
        assert given.status_code == 200, given.text
        assert given.json()["variant"] == variant
    assert chosen[-300:].count("b") > 0.6 * 300, Counter(chosen[-300:])
    weights = {v["name"]: v["weight"] for v in served.status()["variants"]}
    assert weights["b"] > 60, weights
    assert value(served.metrics(), "mlform_variant_weight", variant="b") > 60
    unrewarded = served.infer().json()["id"]
    before = served.status()["experiment"]["stats"]

    served.stop(signal.SIGKILL)      # no goodbye: the snapshot may lag, the log replays
    served.start()
    after = served.status()["experiment"]
    assert after["stats"] == before and after["feedback"] == 1200
    assert after["prob_best"]["b"] > 0.5
    # an answer given before the restart still takes its feedback
    late = served.feedback({"request_id": unrewarded, "reward": 1})
    assert late.status_code == 200, late.text
    lines = records(tmp_path / "feedback.jsonl")
    assert len(lines) == 1201 and lines[-1]["request_id"] == unrewarded
    assert set(lines[0]) == {"time", "request_id", "variant", "reward"}


def test_a_sticky_bandit_keeps_each_key_on_one_variant_while_the_weights_hold(serve, tmp_path):
    served = serve({"models": two_variants(tmp_path, (50, 50)),
                    "experiment": {"type": "bandit", "sticky_key": "header:x-user-id",
                                   "state_path": str(tmp_path / "bandit.json"),
                                   "feedback_path": str(tmp_path / "feedback.jsonl")}})
    by_user = {f"u{n}": {served.infer(headers={"x-user-id": f"u{n}"}).headers["x-mlform-variant"]
                         for _ in range(3)} for n in range(60)}
    assert all(len(variants) == 1 for variants in by_user.values())
    assert {next(iter(v)) for v in by_user.values()} == {"a", "b"}
    # without the key the policy draws for each request
    assert {served.infer().headers["x-mlform-variant"] for _ in range(60)} == {"a", "b"}


def test_feedback_errors_are_json_with_the_right_status(serve, tmp_path):
    served = serve({"models": two_variants(tmp_path, (50, 50)),
                    "capture": capture_of(tmp_path),
                    "experiment": {"type": "bandit", "reward": "binary",
                                   "state_path": str(tmp_path / "bandit.json"),
                                   "feedback_path": str(tmp_path / "feedback.jsonl")}})
    known = served.infer(body(id="caller-42")).json()
    assert known["id"] == "caller-42"
    for doc, status, words in (
            ({"request_id": "nobody", "reward": 1}, 404, "no answer with id"),
            ({"request_id": "caller-42", "reward": "yes"}, 400, "must be a number"),
            ({"request_id": "caller-42", "reward": 2}, 400, "binary reward is 0 or 1"),
            ({"reward": 1}, 400, "request_id")):
        answer = served.feedback(doc)
        assert answer.status_code == status, answer.text
        assert words in answer.json()["error"]
    not_json = served.client.post(f"{served.url}/feedback", content=b"{nope")
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
    assert served.feedback({"request_id": "caller-42", "reward": True}).status_code == 200
    served.stop()

    plain = serve({"models": two_variants(tmp_path / "plain", (100, 0))})
    answer = plain.feedback({"request_id": "x", "reward": 1})
    assert answer.status_code == 409 and "no experiment" in answer.json()["error"]


def test_ab_feedback_is_logged_without_a_policy(serve, tmp_path):
    served = serve({"models": two_variants(tmp_path, (50, 50)),
                    "capture": capture_of(tmp_path),
                    "experiment": {"type": "ab",
                                   "feedback_path": str(tmp_path / "feedback.jsonl")}})
    ids = {}
    for n in range(6):
        answer = served.infer()
        ids[answer.json()["id"]] = answer.headers["x-mlform-variant"]
    for request_id in ids:
        assert served.feedback({"request_id": request_id, "reward": 12.5}).status_code == 200
    served.stop()
    lines = records(tmp_path / "feedback.jsonl")
    assert {r["request_id"]: r["variant"] for r in lines} == ids
    assert {r["reward"] for r in lines} == {12.5}


# ----------------------------------------------------------------- bearer token

def test_bearer_token_guards_inference_and_feedback_only(serve, tmp_path):
    served = serve({"models": two_variants(tmp_path, (50, 50)),
                    "experiment": {"type": "ab"}, "auth_token": TOKEN})
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        for answer in (served.infer(headers=headers),
                       served.feedback({"request_id": "x", "reward": 1}, headers=headers)):
            assert answer.status_code == 401
            assert answer.headers["www-authenticate"] == "Bearer"
            assert "bearer token" in answer.json()["error"]
    good = {"authorization": f"Bearer {TOKEN}"}
    answer = served.infer(headers=good)
    assert answer.status_code == 200
    assert served.feedback({"request_id": answer.json()["id"], "reward": 1},
                           headers=good).status_code == 200
    for open_route in ("/v2/health/ready", f"/v2/models/{NAME}", "/metrics", "/v2/admin/status"):
        assert served.client.get(served.base + open_route).status_code == 200
    status = served.status()
    assert status["auth"] is True and TOKEN not in json.dumps(status)
    served.stop()
    assert TOKEN not in served.output.text


# ----------------------------------------------------------------- hooks, batching, metrics

def test_hooks_run_around_the_model_and_a_broken_module_fails_the_load(serve, tmp_path):
    hooks = tmp_path / "hooks.py"
    hooks.write_text("def preprocess(doc):\n"
                     "    doc['inputs'][0]['data'] = [x * 0 for x in doc['inputs'][0]['data']]\n"
                     "    return doc\n\n"
                     "def postprocess(doc, result):\n"
                     "    result['label'] = 'fraud' if result['outputs'][0]['data'][0] else 'ok'\n"
                     "    return result\n")
    models = [{"version": 1, "path": save(_FailsOnPositive(), tmp_path / "m"), "weight": 100}]
    served = serve({"models": models, "hooks": str(hooks)})
    answer = served.infer(body(5.0))        # the preprocess hook zeroes the amount
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] == "ok" and answer.json()["outputs"][0]["data"] == [0.0]
    assert answer.json()["id"]

    hooks.write_text("import json\n\nraise RuntimeError('the hooks module is broken')\n")
    spec = {**served.spec, "generation": 2}
    served.spec_path.write_text(json.dumps(spec))
    assert served.client.post(f"{served.base}/v2/admin/reload",
                              headers={"x-mlform-token": "admin"}).status_code == 202
    error = wait_until(lambda: served.status()["error"], 60, "the reload to fail")
    assert error["generation"] == 2
    assert "hooks.py\", line 3" in error["message"] and "the hooks module is broken" in error["message"]
    assert "the hooks module is broken" in served.output.text
    assert served.infer(body(5.0)).status_code == 200       # generation 1 keeps serving


def test_batches_form_under_concurrent_load_and_metrics_carry_the_variant(serve, tmp_path):
    served = serve({"models": two_variants(tmp_path, (100, 0)), "max_batch_size": 8,
                    "max_delay_ms": 200, "workers": 1})

    async def burst() -> list:
        async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
            return await asyncio.gather(*(client.post(f"{served.url}/infer", json=body())
                                          for _ in range(16)))
    answers = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200] * 16
    assert all(a.json()["outputs"][0]["data"] == [1.0] for a in answers)
    text = served.metrics()
    assert kinds(text)["mlform_batch_size"] == "histogram"
    assert value(text, "mlform_batch_size_sum", model=NAME, version="1") == 16
    # 16 concurrent one-row requests and a 200 ms window: fewer passes than requests
    assert value(text, "mlform_batch_size_count", model=NAME, version="1") < 16
    assert value(text, "mlform_requests_total", model=NAME, version="1", variant="a",
                 code="200") == 16
    assert value(text, "mlform_request_rows_count", model=NAME, version="1", variant="a") == 16
    assert value(text, "mlform_variant_weight", variant="a") == 100
    assert value(text, "mlform_variant_weight", variant="b") == 0


# ----------------------------------------------------------------- frameworks and processes

def test_sklearn_and_onnx_variants_beside_torch_in_worker_processes(serve, tmp_path):
    joblib = pytest.importorskip("joblib")
    pytest.importorskip("sklearn")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import warnings

    from sklearn.linear_model import LinearRegression

    sk_dir = tmp_path / "sk"
    sk_dir.mkdir()
    # y = 3 everywhere: the answer names the model
    joblib.dump(LinearRegression().fit([[0.0, 0.0], [1.0, 1.0], [2.0, 5.0]], [3.0, 3.0, 3.0]),
                sk_dir / "model.joblib")
    (sk_dir / "signature.json").write_text(json.dumps({"inputs": FEATURES, "outputs": ["p"]}))
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # the legacy exporter's deprecation notice
        torch.onnx.export(_Constant(4.0), (torch.zeros(2, 2),), str(onnx_dir / "model.onnx"),
                          dynamo=False, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    (onnx_dir / "signature.json").write_text(json.dumps({"inputs": FEATURES, "outputs": ["p"]}))
    models = two_variants(tmp_path, (34, 33)) + [
        {"version": 3, "path": str(sk_dir), "weight": 33, "variant": "c",
         "framework": "sklearn", "role": "live"}]
    models[1] = {"version": 4, "path": str(onnx_dir), "weight": 33, "variant": "b",
                 "framework": "onnx", "role": "live"}
    served = serve({"models": models, "experiment": {"type": "ab"}, "worker_processes": 2})
    expected = {"a": 1.0, "b": 4.0, "c": 3.0}
    seen = Counter()
    for _ in range(30):
        answer = served.infer()
        assert answer.status_code == 200, answer.text
        variant = answer.headers["x-mlform-variant"]
        assert answer.json()["outputs"][0]["data"] == pytest.approx([expected[variant]])
        seen[variant] += 1
    assert set(seen) == {"a", "b", "c"}
    platforms = {served.client.get(f"{served.url}/versions/{v}").json()["platform"]
                 for v in (1, 3, 4)}
    assert platforms == {"pytorch_torchscript", "sklearn", "onnxruntime_onnx"}
    assert not any(v["on_event_loop"] for v in served.status()["versions"])
