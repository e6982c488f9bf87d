"""Experiments on a `local` endpoint, end to end: the CLI (`mlform apply`, `plan`) in a
fresh process, the real model server, real HTTP.

The stack registers two tiny TorchScript MLPs (`model.m1`, `model.m2`, built from
different seeds, so their answers differ) and serves them as the variants `a` and `b`
of `endpoint.fraud`:

* ab: the split follows the weights, a sticky key keeps a user on one variant, the
  capture agrees with the answers' `x-mlform-variant` header, a re-plan is a no-op,
  and a weight change is planned with its reason and applied by a hot reload;
* shadow: callers only ever get `a`'s answers; half the requests are mirrored to `b`,
  whose answers are captured beside `a`'s under the same request id;
* bandit: rewards posted back move the traffic toward the better variant; the moved
  weights are not drift; a killed server, restarted by the next apply, resumes the
  policy from its files;
* the bearer token: a sensitive variable guards the inference route and is written
  nowhere it should not be (CLI output, state files, server log);
* other frameworks: a scikit-learn model (skops) and an ONNX model served side by side.

Every test destroys its stack and checks that nothing it started is left running.
"""

from __future__ import annotations

import json
import os
import random
import signal
from collections import Counter
from pathlib import Path

import httpx
import pytest
from _metrics import samples, value
from _waiting import wait_until
from e2e.harness import run_mlform
from kit.test_serving_runtime import _onnx_export

from ._cli import alive, mlform, resource, stack_processes, teardown, wait_gone
from .test_endpoints import oip, save_mlp

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
              pytest.mark.timeout(600)]

ADDRESS = "endpoint.fraud"

MODELS = """\
provider "local" {}

model "m1" {
  artifact = "./runs/m1"
  stage    = "production"
}

model "m2" {
  artifact = "./runs/m2"
  stage    = "production"
}

"""


def ab_endpoint(a: int, b: int) -> str:
    return f"""\
endpoint "fraud" {{
  variants = {{
    a = {{ model = model.m1, weight = {a} }}
    b = {{ model = model.m2, weight = {b} }}
  }}
  experiment = {{ type = "ab", sticky_key = "header:x-user" }}
  capture    = {{ sample_percent = 100 }}
}}
"""


SHADOW = """\
endpoint "fraud" {
  variants = {
    a = { model = model.m1, weight = 100 }
    b = { model = model.m2, weight = 0 }
  }
  experiment = { type = "shadow", shadow = "b", shadow_percent = 50 }
  capture    = { sample_percent = 100 }
}
"""

BANDIT = """\
endpoint "fraud" {
  variants = {
    a = { model = model.m1, weight = 50 }
    b = { model = model.m2, weight = 50 }
  }
  experiment = { type = "bandit", reward = "binary", floor_percent = 5 }
  capture    = { sample_percent = 100 }
}
"""


# ------------------------------------------------------------------ helpers

@pytest.fixture
def stack(tmp_path: Path):
    """A stack directory with the two models' artifacts under runs/; destroyed after."""
    directory = tmp_path / "stack"
    directory.mkdir()
    save_mlp(directory / "runs" / "m1", seed=1)
    save_mlp(directory / "runs" / "m2", seed=2)
    yield directory
    left = teardown(directory)
    assert not left, f"still running after destroy: {left}"


@pytest.fixture
def client():
    with httpx.Client(timeout=30, trust_env=False) as c:
        yield c


def write(stack: Path, endpoint: str, extra: str = "") -> None:
    (stack / "main.hcl").write_text(MODELS + extra + endpoint)


def apply(stack: Path) -> str:
    """`mlform apply`; returns the endpoint's URL."""
    run = mlform(stack, "apply", "--auto-approve")
    assert run.code == 0, run
    assert "Traceback" not in run.output
    return resource(stack, ADDRESS)["url"]


def origin(url: str) -> str:
    return url.split("/v2/")[0]


def status(client: httpx.Client, url: str) -> dict:
    return client.get(f"{origin(url)}/v2/admin/status").json()


def weights(client: httpx.Client, url: str) -> dict[str, float]:
    """The variants' weights the server routes by now (percent)."""
    return {v["name"]: v["weight"] for v in status(client, url)["variants"]}


def endpoint_files(stack: Path) -> Path:
    (folder,) = (stack / ".mlform" / "local" / "default" / "endpoints").iterdir()
    return folder


def captured(stack: Path) -> list[dict]:
    """Every whole line of the endpoint's capture (rotated files first)."""
    folder = endpoint_files(stack)
    files = sorted(folder.glob("capture.jsonl.*"), key=lambda p: -int(p.suffix[1:]))
    lines = []
    for path in [*files, folder / "capture.jsonl"]:
        if path.exists():
            text = path.read_text()
            lines += [json.loads(x) for x in text[:text.rfind("\n") + 1].splitlines()]
    return lines


def forward(stack: Path, model: str, rows: list[list[float]]) -> list[float]:
    """The model's own answer for `rows`, in this process, flattened."""
    net = torch.jit.load(str(stack / "runs" / model / "model.pt"))
    with torch.no_grad():
        return net(torch.tensor(rows, dtype=torch.float32)).reshape(-1).tolist()


def rows(n: int, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.uniform(-3, 3) for _ in range(4)] for _ in range(n)]


# ------------------------------------------------------------------ ab

def test_ab_split_sticky_users_and_a_weight_change_by_hot_reload(stack, client):
    write(stack, ab_endpoint(70, 30))
    url = apply(stack)
    pid = resource(stack, ADDRESS)["pid"]
    assert resource(stack, ADDRESS)["serving"] == [
        {"variant": "a", "version": 1, "weight": 70}, {"variant": "b", "version": 1, "weight": 30}]

    # 2,000 users, one request each: the split by the answers' header ...
    answered: dict[str, str] = {}
    for i in range(2000):
        r = client.post(f"{url}/infer", json=oip([[float(i % 7), 1.0, 2.0, 3.0]]),
                        headers={"x-user": f"user-{i}"})
        assert r.status_code == 200, r.text
        answered[r.json()["id"]] = r.headers["x-mlform-variant"]
    assert len(answered) == 2000                        # every answer has its own id
    split = Counter(answered.values())
    assert abs(split["a"] / 20 - 70) <= 3 and abs(split["b"] / 20 - 30) <= 3, split

    # ... and by the capture, which names the same variant for each request id
    lines = wait_until(lambda: len(x := [c for c in captured(stack)
                                         if c.get("request_id") in answered]) >= 2000 and x,
                       30, "2,000 captured requests")
    assert {c["request_id"]: c["variant"] for c in lines} == answered
    assert {c["role"] for c in lines} == {"live"}

    # a user always meets the same variant (and users do meet both)
    met = {}
    for user in range(30):
        seen = {client.post(f"{url}/infer", json=oip([[1.0, 2.0, 3.0, 4.0]]),
                            headers={"x-user": f"sticky-{user}"}).headers["x-mlform-variant"]
                for _ in range(6)}
        assert len(seen) == 1, f"user sticky-{user} met {seen}"
        met[user] = seen.pop()
    assert set(met.values()) == {"a", "b"}

    # nothing drifted: the plan is empty
    again = mlform(stack, "plan", "--detailed-exitcode")
    assert again.code == 0, again

    # 50/50: planned as a variant weight change with its reason, applied in place
    write(stack, ab_endpoint(50, 50))
    planned = mlform(stack, "plan", "--detailed-exitcode")
    assert planned.code == 2, planned
    assert "variant a: weight 70% -> weight 50%" in planned.stdout
    assert "variant b: weight 30% -> weight 50%" in planned.stdout
    doc = mlform(stack, "plan", "--format", "json").json()
    (change,) = [c for c in doc["resource_changes"] if c["change"]["actions"] != ["no-op"]]
    assert change["address"] == ADDRESS and change["change"]["actions"] == ["update"]
    assert set(change["reasons"]) >= {"variant a: weight 70% -> weight 50%",
                                      "variant b: weight 30% -> weight 50%"}
    assert apply(stack) == url
    assert resource(stack, ADDRESS)["pid"] == pid                     # a hot reload
    assert weights(client, url) == {"a": 50, "b": 50}
    # requests without the sticky header: the weighted round robin
    plain = Counter(client.post(f"{url}/infer", json=oip([[1.0, 2.0, 3.0, 4.0]]))
                    .headers["x-mlform-variant"] for _ in range(400))
    assert abs(plain["a"] / 4 - 50) <= 3, plain
    assert mlform(stack, "plan", "--detailed-exitcode").code == 0


# ------------------------------------------------------------------ shadow

def test_shadow_gets_half_the_requests_and_callers_only_the_primary(stack, client):
    write(stack, SHADOW)
    url = apply(stack)
    assert weights(client, url)["a"] == 100
    inputs = rows(200, seed=5)
    primary, shadow = forward(stack, "m1", inputs), forward(stack, "m2", inputs)
    assert primary != pytest.approx(shadow, abs=1e-3)      # the two models answer differently

    ids: dict[str, list[float]] = {}      # request id -> its row
    for i, row in enumerate(inputs):
        r = client.post(f"{url}/infer", json=oip([row]))
        assert r.status_code == 200, r.text
        assert r.headers["x-mlform-variant"] == "a"
        assert r.json()["outputs"][0]["data"] == pytest.approx(primary[2 * i:2 * i + 2], abs=1e-5)
        ids[r.json()["id"]] = row

    def mirrored() -> tuple[float, float]:
        found = samples(client.get(f"{origin(url)}/metrics").text)
        count = {o: found.get(("mlform_shadow_requests_total",
                               frozenset({"variant": "b", "outcome": o}.items())), 0.0)
                 for o in ("ok", "error", "dropped")}       # a sample appears once counted
        return count["ok"], count["dropped"] + count["error"]

    # exact sampling: every second request is mirrored (none may fail; a full queue drops)
    wait_until(lambda: sum(mirrored()) == 100, 30, "100 mirrored requests")
    ok, lost = mirrored()
    assert ok >= 90, (ok, lost)
    lines = wait_until(lambda: len(x := captured(stack)) >= 200 + ok and x, 30,
                       "the live and shadow captures")
    live = [c for c in lines if c["role"] == "live"]
    shadows = [c for c in lines if c["role"] == "shadow"]
    assert {c["request_id"] for c in live} == set(ids) and {c["variant"] for c in live} == {"a"}
    assert len(shadows) == ok and {c["variant"] for c in shadows} == {"b"}
    assert {c["request_id"] for c in shadows} <= set(ids)
    for line in shadows:            # b's own answer to that very request, side by side
        assert line["status"] == 200
        row = ids[line["request_id"]]
        assert line["outputs"][0] == pytest.approx(forward(stack, "m2", [row]), abs=1e-5)
    plan = mlform(stack, "plan", "--detailed-exitcode")      # the shadow variant is no drift
    assert plan.code == 0, plan


# ------------------------------------------------------------------ bandit

def reward_of(variant: str, counts: Counter) -> int:
    """Exact reward rates, no noise: b's requests earn 1 in 15 of every 100, a's in 10
    (b is better by 5 points)."""
    rate = {"a": 10, "b": 15}[variant]
    counts[variant] += 1
    n = counts[variant]
    return int(n * rate // 100 > (n - 1) * rate // 100)


def test_bandit_moves_traffic_to_the_better_variant_and_survives_a_kill(stack, client):
    write(stack, BANDIT)
    url = apply(stack)
    feedback = f"{url}/feedback"

    # the feedback route's refusals are JSON errors
    r = client.post(feedback, json={"request_id": "no-such-request", "reward": 1})
    assert r.status_code == 404 and "error" in r.json()
    rid = client.post(f"{url}/infer", json=oip([[1.0, 2.0, 3.0, 4.0]])).json()["id"]
    for bad in ("yes", 2, None):
        r = client.post(feedback, json={"request_id": rid, "reward": bad})
        assert r.status_code == 400 and "error" in r.json(), (bad, r.text)

    counts: Counter = Counter()
    served: list[str] = []
    # a bounded number of requests: at most 4,000 before b must hold 80% of the traffic
    for n in range(1, 4001):
        r = client.post(f"{url}/infer", json=oip([[1.0, 2.0, 3.0, 4.0]]))
        variant = r.headers["x-mlform-variant"]
        served.append(variant)
        answer = client.post(feedback, json={"request_id": r.json()["id"],
                                             "reward": reward_of(variant, counts)})
        assert answer.status_code == 200, answer.text
        assert answer.json()["variant"] == variant
        if n % 100 == 0 and weights(client, url)["b"] >= 80:
            break
    moved = weights(client, url)
    assert moved["b"] >= 80, (moved, counts)
    assert Counter(served[-100:])["b"] > 50, Counter(served[-100:])
    lines = (endpoint_files(stack) / "feedback.jsonl").read_text().splitlines()
    assert len(lines) == sum(counts.values())

    # the weights the bandit moved are service-managed: not drift
    plan = mlform(stack, "plan", "--detailed-exitcode")
    assert plan.code == 0, plan
    assert resource(stack, ADDRESS)["serving"] == [
        {"variant": "a", "version": 1, "weight": 50}, {"variant": "b", "version": 1, "weight": 50}]

    # kill -9; the next apply starts a new server, which resumes the policy
    pid = resource(stack, ADDRESS)["pid"]
    os.kill(pid, signal.SIGKILL)
    assert not wait_gone([pid])
    again = mlform(stack, "apply", "--auto-approve")
    assert again.code == 0, again
    new_pid = resource(stack, ADDRESS)["pid"]
    assert new_pid != pid and alive(new_pid)
    url = resource(stack, ADDRESS)["url"]
    resumed = weights(client, url)
    assert resumed["b"] >= 70, resumed
    gauge = value(client.get(f"{origin(url)}/metrics").text, "mlform_variant_weight", variant="b")
    assert gauge == pytest.approx(resumed["b"], abs=0.5)
    assert status(client, url)["pid"] == new_pid
    assert len(stack_processes(stack)) == 1


# ------------------------------------------------------------------ bearer token

SECRET = "Tok3n-for-e2e-9a7f"

TOKEN = """\
variable "token" {
  type      = string
  sensitive = true
}

"""

GUARDED = """\
endpoint "fraud" {
  model = model.m1
  settings {
    auth_token = var.token
  }
}
"""


def test_bearer_token_guards_inference_and_is_never_written_out(stack, client):
    write(stack, GUARDED, extra=TOKEN)
    env = {"MLFORM_VAR_token": SECRET}
    try:
        guarded(stack, client, env)
    finally:        # the fixture's destroy would lack the variable
        destroyed = run_mlform("destroy", "--auto-approve", cwd=stack, env=env, timeout=300)
    assert destroyed.code == 0, destroyed
    assert SECRET not in destroyed.output


def guarded(stack: Path, client: httpx.Client, env: dict) -> None:
    applied = run_mlform("apply", "--auto-approve", cwd=stack, env=env, timeout=300)
    assert applied.code == 0, applied
    url = resource(stack, ADDRESS)["url"]
    body = oip([[1.0, 2.0, 3.0, 4.0]])
    assert client.post(f"{url}/infer", json=body).status_code == 401
    assert client.post(f"{url}/infer", json=body,
                       headers={"Authorization": "Bearer not-it"}).status_code == 401
    ok = client.post(f"{url}/infer", json=body, headers={"Authorization": f"Bearer {SECRET}"})
    assert ok.status_code == 200, ok.text
    assert client.get(f"{origin(url)}/v2/health/ready").status_code == 200   # stays open

    plans = [run_mlform("plan", "--detailed-exitcode", cwd=stack, env=env),
             run_mlform("plan", "--format", "json", cwd=stack, env=env)]
    assert plans[0].code == 0, plans[0]
    for run in [applied, *plans]:
        assert SECRET not in run.output
    written = [*(stack / ".mlform" / "state").rglob("*"), endpoint_files(stack) / "server.log"]
    for path in written:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in json.dumps(status(client, url))


# ------------------------------------------------------------------ other frameworks

FRAMEWORKS = """\
provider "local" {}

model "sk" {
  artifact  = "./runs/sk"
  framework = "sklearn"
}

model "ox" {
  artifact  = "./runs/ox"
  framework = "onnx"
}

endpoint "fraud" {
  variants = {
    a = { model = model.sk, weight = 50 }
    b = { model = model.ox, weight = 50 }
  }
}
"""


def test_sklearn_and_onnx_models_are_served_end_to_end(tmp_path, client):
    """A scikit-learn model saved with skops and a torch model exported to ONNX, each
    registered with its `framework`, served side by side by one endpoint: every answer
    is what the framework itself computes for the row."""
    skops_io = pytest.importorskip("skops.io")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from sklearn.linear_model import LogisticRegression

    directory = tmp_path / "stack"
    (directory / "runs" / "sk").mkdir(parents=True)
    (directory / "runs" / "ox").mkdir(parents=True)
    train = rows(200, seed=3)
    classifier = LogisticRegression().fit(train, [int(r[0] + r[1] > 0) for r in train])
    skops_io.dump(classifier, directory / "runs" / "sk" / "model.skops")
    torch.manual_seed(4)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    _onnx_export(net, directory / "runs" / "ox" / "model.onnx")
    (directory / "main.hcl").write_text(FRAMEWORKS)
    try:
        url = apply(directory)
        seen = Counter()
        for row in rows(40, seed=5):
            r = client.post(f"{url}/infer", json=oip([row]))
            assert r.status_code == 200, r.text
            variant = r.headers["x-mlform-variant"]
            seen[variant] += 1
            got = r.json()["outputs"][0]["data"]
            if variant == "a":
                expected = classifier.predict_proba([row])[0].tolist()
            else:
                with torch.no_grad():
                    expected = net(torch.tensor([row])).reshape(-1).tolist()
            assert got == pytest.approx(expected, abs=1e-5), (variant, row)
        assert seen == {"a": 20, "b": 20}
        frameworks = {v["variant"]: v["framework"] for v in status(client, url)["versions"]}
        assert frameworks == {"a": "sklearn", "b": "onnx"}
    finally:
        left = teardown(directory)
        assert not left, f"still running after destroy: {left}"
