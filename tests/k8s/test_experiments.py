"""Variants and experiments on the kubernetes provider, against the test control plane.

Every serving pod runs the kit server and serves every variant (the server routes), so
what is checked here is what the provider controls: the Deployment's pod spec carries
each variant's model and the experiment, a change of weights is planned with its reason
and rolls the pods, a bandit runs in one pod and its moving weights are never drift, and
the report's records are read from what the pods upload to storage.  The server itself
runs for real in `test_a_serving_pod_serves_both_variants_and_uploads_their_rewards`:
the pod harness plays the container of the endpoint's own pod (``pod serve``), and the
test sends real HTTP requests and rewards to it.
"""

from __future__ import annotations

import json

import httpx
import pytest
from _waiting import wait_until

from mlform.providers.base import Desired
from mlform.providers.kit import calls

from _kube import BUCKET, create, pod_serve

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")]

COMPUTED = ("objects", "url", "model_version", "variant_versions")


def model(name: str, version: int) -> dict:
    return {"address": f"model.{name}", "version": version, "uri": f"s3://{BUCKET}/{name}/",
            "framework": "torch"}


AB = {"variants": {"a": {"model": model("fraud", 3), "weight": 70},
                   "b": {"model": model("fraud2", 1), "weight": 30}},
      "experiment": {"type": "ab", "sticky_key": "header:x-user-id", "reward": "binary"},
      "capture": {"sample_percent": 100}, "replicas": 2}


def desired_of(attrs: dict, name: str = "x") -> Desired:
    return Desired(f"endpoint.{name}", "endpoint", name,
                   {k: v for k, v in attrs.items() if k not in COMPUTED})


def serve_pods(control_plane, stack: str) -> list[dict]:
    with control_plane.api() as api:
        return api.get("/api/v1/namespaces/default/pods", params={
            "labelSelector": f"mlform.dev/role=serve,mlform.dev/stack={stack}"}).json()["items"]


def work_of(pod_spec: dict) -> dict:
    [container] = pod_spec["containers"]
    return json.loads(next(e["value"] for e in container["env"] if e["name"] == "MLFORM_POD"))


def deployment(control_plane, live) -> dict:
    with control_plane.api() as api:
        return api.get(f"/apis/apps/v1/namespaces/default/deployments/"
                       f"{live.id.split('/')[-1]}").json()


def test_every_pod_serves_every_variant_and_the_experiment(k8s, control_plane):
    live = create(k8s, "endpoint", AB)
    assert live.attributes["model_version"] == 3            # variant a, the heaviest
    assert live.attributes["variant_versions"] == {"a": 3, "b": 1}
    work = work_of(deployment(control_plane, live)["spec"]["template"]["spec"])
    assert work["models"] == [
        {"variant": "a", "role": "live", "weight": 70, "version": 3, "framework": "torch",
         "uri": f"s3://{BUCKET}/fraud/"},
        {"variant": "b", "role": "live", "weight": 30, "version": 1, "framework": "torch",
         "uri": f"s3://{BUCKET}/fraud2/"}]
    assert work["experiment"]["type"] == "ab"
    assert work["experiment"]["sticky_key"] == "header:x-user-id"
    assert work["feedback"]["uri"] == \
        f"s3://{BUCKET}/{k8s.env.store.key('feedback', k8s.env.name('endpoint.x'))}/"
    pods = serve_pods(control_plane, k8s.context.stack)
    assert len(pods) == 2 and all(work_of(p["spec"]) == work for p in pods)
    found = k8s.read(live)
    assert set(found.attributes["objects"].values()) == {"applied"}
    planned = calls.plan(k8s, desired_of(AB), found)
    assert planned.attributes == found.attributes and planned.reasons == ()


def test_a_weight_change_is_planned_with_its_reason_and_rolls_the_pods(k8s, control_plane):
    live = create(k8s, "endpoint", AB)
    changed = {**AB, "variants": {"a": {"model": model("fraud", 3), "weight": 50},
                                  "b": {"model": model("fraud2", 2), "weight": 50}}}
    planned = calls.plan(k8s, desired_of(changed), k8s.read(live))
    [reason] = planned.reasons
    assert "variant a: weight 70% -> weight 50%" in reason
    assert "variant b serves model version 2 instead of 1" in reason
    assert "rolling update" in reason
    updated = k8s.update(live, planned)
    assert updated.attributes["variant_versions"] == {"a": 3, "b": 2}

    def rolled() -> bool:
        pods = [p for p in serve_pods(control_plane, k8s.context.stack)
                if not p["metadata"].get("deletionTimestamp")]
        return len(pods) == 2 and all(
            [(m["variant"], m["weight"], m["version"]) for m in work_of(p["spec"])["models"]]
            == [("a", 50, 3), ("b", 50, 2)] for p in pods)
    wait_until(rolled, 60, "the pods to be replaced by ones serving the new weights")
    assert set(k8s.read(updated).attributes["objects"].values()) == {"applied"}


BANDIT = {**AB, "experiment": {"type": "bandit", "reward": "binary", "floor_percent": 10}}


def test_a_bandit_on_several_pods_is_refused_with_the_reason(k8s):
    desired = desired_of(BANDIT, "bandit")
    [problem] = [d for d in calls.validate(k8s, desired) if d.severity == "error"]
    assert problem.address == "endpoint.bandit"
    assert "runs in one serving pod (replicas = 2" in problem.summary
    assert "replicas = 1" in problem.hint
    scaled = desired_of({**BANDIT, "replicas": 1, "autoscaling": {"min": 1, "max": 3}}, "b")
    [problem] = [d for d in calls.validate(k8s, scaled) if d.severity == "error"]
    assert "autoscaling asks for several" in problem.summary


def test_a_bandit_keeps_its_declared_weights_in_the_state_and_is_no_drift(k8s, control_plane):
    attrs = {**BANDIT, "replicas": 1}
    live = create(k8s, "endpoint", attrs)
    work = work_of(deployment(control_plane, live)["spec"]["template"]["spec"])
    assert work["experiment"]["type"] == "bandit"
    assert [m["weight"] for m in work["models"]] == [70, 30]   # where the policy starts
    # the policy's weights live in the server: the objects say the declared ones
    found = k8s.read(live)
    assert set(found.attributes["objects"].values()) == {"applied"}
    assert found.attributes["variants"] == attrs["variants"]
    assert calls.plan(k8s, desired_of(attrs), found).attributes == found.attributes
    stepped = k8s.action(live, "experiment_step", {})
    assert stepped["changed"] is False
    assert stepped["weights"]["after"] == {"a": 70.0, "b": 30.0}    # no rewards yet


def test_the_records_are_every_pods_uploads_by_time(k8s, aws):
    attrs = {**AB, "experiment": {"type": "shadow", "shadow": "b", "shadow_percent": 50},
             "variants": {"a": {"model": model("fraud", 3), "weight": 100},
                          "b": {"model": model("fraud2", 1), "weight": 0}}}
    live = create(k8s, "endpoint", attrs)
    store = k8s.env.store
    name = k8s.env.name("endpoint.x")
    lines = {"pod-1": [(1.0, "r1", "a", "live"), (1.0, "r1", "b", "shadow"),
                       (3.0, "r3", "a", "live")],
             "pod-2": [(2.0, "r2", "a", "live")]}
    for pod, rows in lines.items():
        body = "".join(json.dumps({"time": t, "request_id": r, "variant": v, "role": role,
                                   "version": 3 if v == "a" else 1, "status": 200,
                                   "latency_ms": 2.0, "inputs": [{"x0": 1.0}],
                                   "outputs": [[0.2, 0.8]]}) + "\n"
                       for t, r, v, role in rows)
        store.put_bytes(store.key("capture", name, f"{pod}.jsonl"), body.encode() + b'{"torn')
    store.put_bytes(store.key("feedback", name, "pod-2.jsonl"), json.dumps(
        {"time": 2.5, "request_id": "r2", "variant": "a", "reward": 1.0}).encode() + b"\n")
    records = k8s.action(live, "experiment_records", {})
    assert records["experiment"]["type"] == "shadow"
    assert records["variants"] == [{"name": "a", "version": 3, "weight": 100.0, "role": "live"},
                                   {"name": "b", "version": 1, "weight": 0, "role": "shadow"}]
    assert [(c["time"], c["request_id"], c["role"]) for c in records["captures"]] == [
        (1.0, "r1", "live"), (1.0, "r1", "shadow"), (2.0, "r2", "live"), (3.0, "r3", "live")]
    assert "inputs" not in records["captures"][0]
    assert records["captures"][0]["outputs"] == [[0.2, 0.8]]     # a shadow's are compared
    assert records["feedback"] == [{"time": 2.5, "request_id": "r2", "variant": "a",
                                    "reward": 1.0}]


def _torch_model(aws, key: str, seed: int) -> None:
    import io

    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Softmax(dim=1))
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    aws.client("s3").put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue())


def test_a_serving_pod_serves_both_variants_and_uploads_their_rewards(
        k8s, aws, pod_harness, control_plane):
    pytest.importorskip("torch")
    from mlform.cli.experiment_commands import summarize

    _torch_model(aws, "fraud/model.pt", 0)
    _torch_model(aws, "fraud2/model.pt", 1)
    live = create(k8s, "endpoint", {**AB, "replicas": 1,
                                    "settings": {"capture_upload_seconds": 0.2}}, name="e")
    [pod] = serve_pods(control_plane, k8s.context.stack)
    port = pod_harness.serve("default", pod["metadata"]["name"])
    answered: dict[str, str] = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, trust_env=False) as client:
        wait_until(lambda: client.get("/v2/health/ready").status_code == 200, 120,
                   "the endpoint pod to load both variants")
        for n in range(40):
            user = {"x-user-id": f"user-{n}"}
            body = {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32",
                                "data": [float(n), 1.0]}]}
            first = client.post("/v2/models/e/infer", json=body, headers=user)
            again = client.post("/v2/models/e/infer", json=body, headers=user)
            assert first.status_code == again.status_code == 200, first.text
            # sticky: one user meets one variant
            assert first.headers["x-mlform-variant"] == again.headers["x-mlform-variant"]
            answered[first.json()["id"]] = first.headers["x-mlform-variant"]
            reward = client.post("/v2/models/e/feedback",
                                 json={"request_id": first.json()["id"], "reward": n % 2})
            assert reward.status_code == 200, reward.text
            assert reward.json()["variant"] == answered[first.json()["id"]]
    assert set(answered.values()) == {"a", "b"}, answered

    def uploaded() -> bool:
        found = k8s.action(live, "experiment_records", {})
        return len(found["captures"]) == 80 and len(found["feedback"]) == 40
    wait_until(uploaded, 60, "the serving pod to upload its capture and rewards")
    records = k8s.action(live, "experiment_records", {})
    assert {f["request_id"]: f["variant"] for f in records["feedback"]} == answered
    captured = {c["request_id"]: (c["variant"], c["version"]) for c in records["captures"]}
    assert all(captured[rid] == (v, 3 if v == "a" else 1) for rid, v in answered.items())
    summary = summarize(records)
    shares = {v: sum(1 for c in records["captures"] if c["variant"] == v) for v in "ab"}
    assert {v: s["requests"] for v, s in summary["variants"].items()} == shares
    assert sum(s["rewards"] for s in summary["variants"].values()) == 40


def test_a_restarted_bandit_pod_resumes_from_every_reward_uploaded(aws, tmp_path, monkeypatch):
    """`pod serve` run here as the harness would run it: its own object and a replaced
    pod's are in storage; the policy counts each reward once, and the next upload keeps
    the old lines with the new."""
    pytest.importorskip("torch")
    aws.client("s3").create_bucket(Bucket=BUCKET) if not any(
        b["Name"] == BUCKET for b in aws.client("s3").list_buckets()["Buckets"]) else None
    _torch_model(aws, "seed/a/model.pt", 0)
    _torch_model(aws, "seed/b/model.pt", 1)
    s3 = aws.client("s3")
    rewards = "seed/feedback/endpoint-e/"

    def lines(variant: str, reward: int, count: int, start: int) -> bytes:
        return b"".join(json.dumps({"time": float(i), "request_id": f"{variant}{i}",
                                    "variant": variant, "reward": reward}).encode() + b"\n"
                        for i in range(start, start + count))
    s3.put_object(Bucket=BUCKET, Key=rewards + "pod-old.jsonl",
                  Body=lines("b", 1, 30, 0) + lines("a", 0, 10, 30))
    s3.put_object(Bucket=BUCKET, Key=rewards + "pod-a.jsonl", Body=lines("b", 0, 5, 40))
    work = {"name": "e", "address": "endpoint.e",
            "models": [{"variant": v, "role": "live", "weight": 50, "version": 1,
                        "framework": "torch", "uri": f"s3://{BUCKET}/seed/{v}/"} for v in "ab"],
            "experiment": {"type": "bandit", "sticky_key": None, "reward": "binary",
                           "floor_percent": 5.0, "shadow": None, "shadow_percent": 100},
            "feedback": {"uri": f"s3://{BUCKET}/{rewards}"},
            "capture": {"uri": f"s3://{BUCKET}/seed/capture/endpoint-e/", "sample_percent": 100}}
    with pod_serve(work, tmp_path / "work", "the pod's server to load both variants",
                   env={"AWS_ENDPOINT_URL_S3": aws.url}) as client:
        status = client.get("/v2/admin/status").json()
        stats = status["experiment"]["stats"]
        # the replaced pod's 40 rewards from the state file, this pod's 5 from its log
        assert (stats["a"]["n"], stats["b"]["n"], stats["b"]["successes"]) == (10, 35, 30)
        answer = client.post("/v2/models/e/infer", json={"inputs": [
            {"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 1.0]}]})
        assert answer.status_code == 200, answer.text
        client.post("/v2/models/e/feedback", json={"request_id": answer.json()["id"],
                                                   "reward": 1}).raise_for_status()
    own = s3.get_object(Bucket=BUCKET, Key=rewards + "pod-a.jsonl")["Body"].read().splitlines()
    assert [json.loads(line)["request_id"] for line in own] == \
        [f"b{i}" for i in range(40, 45)] + [answer.json()["id"]]
