"""The kubernetes provider against the test control plane, kind by kind.

Storage is the moto S3 of the SageMaker tests (`aws`); the cluster is the session's
control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok nodes).
Each test uses its own stack name, so objects of one never meet another's.
"""

from __future__ import annotations

import json

import pytest

from mlform.providers.base import Desired, LiveObject, ProviderContext, ProviderError
from mlform.providers.kit import calls
from mlform.providers.kubernetes import KubernetesProvider

from _kube import (
    BUCKET, ENDPOINT, TRAIN, create, kubectl_changes, make_provider,
    pipeline_desired,
)

pytestmark = pytest.mark.timeout(300)

# -- training_cluster ------------------------------------------------------------------

def test_a_cluster_is_a_namespace_with_a_gpu_quota(k8s, control_plane):
    live = create(k8s, "training_cluster", {"accelerator": "nvidia-h100", "gpus_per_node": 2,
                                             "nodes": 2})
    namespace = live.attributes["namespace"]
    with control_plane.api() as api:
        quota = api.get(f"/api/v1/namespaces/{namespace}/resourcequotas/mlform-gpus").json()
        ns = api.get(f"/api/v1/namespaces/{namespace}").json()
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "4"
    assert ns["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlform"
    assert ns["metadata"]["annotations"]["mlform.dev/address"] == "training_cluster.x"
    assert live.attributes["gpus_total"] == 4


def test_a_cluster_asking_for_more_gpus_than_a_node_has_fails_at_plan(k8s):
    desired = Desired("training_cluster.big", "training_cluster", "big",
                      {"accelerator": "nvidia-h100", "gpus_per_node": 4, "nodes": 1})
    [problem] = [d for d in calls.validate(k8s, desired) if d.severity == "error"]
    assert "0 node(s) with 4 allocatable nvidia-h100" in problem.summary
    assert "kwok-gpu-0: 2 × NVIDIA-H100-80GB-HBM3" in problem.detail
    assert "kwok-gpu-1: 2 × NVIDIA-H100-80GB-HBM3" in problem.detail


# -- endpoint: drift, healing, immutable fields, ownership ----------------------------


def test_an_endpoint_is_a_deployment_and_a_service_and_a_noop_plan_mutates_nothing(
        k8s, control_plane):
    live = create(k8s, "endpoint", ENDPOINT)
    assert set(live.attributes["objects"].values()) == {"applied"}
    service = live.id.split("/")[-1]
    assert live.attributes["url"] == \
        f"http://{service}.default.svc.cluster.local/v2/models/x"   # endpoint.x serves "x"
    since = control_plane.audit_offset()
    desired = Desired("endpoint.x", "endpoint", "x", ENDPOINT)
    found = k8s.read(live)
    planned = calls.plan(k8s, desired, found)
    assert planned.attributes == found.attributes       # nothing to do
    assert control_plane.mutating_requests(since) == [], "a no-op plan changed the cluster"


def test_kubectl_scale_a_deleted_service_and_an_edited_label_are_drift_and_apply_heals(
        k8s, control_plane):
    live = create(k8s, "endpoint", ENDPOINT)
    name = live.id.split("/")[-1]
    kubectl_changes(control_plane, name, ("mlform.dev/env", "tampered"))
    found = k8s.read(live)
    assert found.attributes["replicas"] == 3
    deployment = found.attributes["objects"][f"Deployment/default/{name}"]
    assert "spec.replicas (2 → 3" in deployment
    assert 'metadata.labels.mlform.dev/env ("test" → "tampered"' in deployment
    assert found.attributes["objects"][f"Service/default/{name}"] == "missing"
    desired = Desired("endpoint.x", "endpoint", "x", ENDPOINT)
    healed = k8s.update(found, calls.plan(k8s, desired, found))
    assert set(k8s.read(healed).attributes["objects"].values()) == {"applied"}
    assert k8s.read(healed).attributes["replicas"] == 2


def test_replicas_an_hpa_owns_are_not_drift(k8s, control_plane):
    attrs = {**ENDPOINT, "autoscaling": {"min": 1, "max": 4}}
    live = create(k8s, "endpoint", attrs)
    name = live.id.split("/")[-1]
    with control_plane.api() as api:
        api.patch(f"/apis/apps/v1/namespaces/default/deployments/{name}/scale",
                  json={"spec": {"replicas": 4}},
                  headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()
        hpa = api.get(f"/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/"
                      f"{name}").json()
    assert hpa["spec"]["maxReplicas"] == 4
    assert set(k8s.read(live).attributes["objects"].values()) == {"applied"}


def test_an_immutable_change_is_planned_as_a_replacement_with_the_api_servers_reason(k8s):
    live = create(k8s, "endpoint", ENDPOINT)
    changed = Desired("endpoint.x", "endpoint", "x",
                      {**ENDPOINT, "settings": {"cluster_ip": "10.0.0.77"}})
    planned = calls.plan(k8s, changed, k8s.read(live))
    assert planned.replace_paths == ("settings",)
    [reason] = planned.reasons
    assert "may not change once set" in reason and "spec.clusterIPs[0]" in reason


def test_an_object_another_stack_owns_is_refused(control_plane, aws, tmp_path):
    first = make_provider(control_plane, aws, tmp_path, stack="owner-a")
    # the same names in another stack: a second provider whose names collide by design
    second = make_provider(control_plane, aws, tmp_path, stack="owner-b")
    second.env.name = first.env.name      # as if two stacks chose the same names
    desired = Desired("endpoint.x", "endpoint", "x", ENDPOINT)
    live = first.create(calls.plan(first, desired))
    try:
        [problem] = [d for d in calls.validate(second, desired) if d.severity == "error"]
        assert "belongs to stack 'owner-a'" in problem.summary
        with pytest.raises(ProviderError, match="refusing to adopt"):
            second.create(calls.plan(second, desired))
    finally:
        first.delete(live)
        first.close()
        second.close()


# -- model and dataset ---------------------------------------------------------------

def test_models_are_immutable_configmaps_one_per_version(k8s, control_plane):
    first = create(k8s, "model", {"artifact": f"s3://{BUCKET}/runs/1/", "framework": "torch",
                                   "stage": "staging"})
    desired = Desired("model.x", "model", "x", {"artifact": f"s3://{BUCKET}/runs/2/",
                                                "framework": "torch", "stage": "production"})
    second = k8s.update(first, calls.plan(k8s, desired, first))
    k8s.made.append(second)
    assert (first.attributes["version"], second.attributes["version"]) == (1, 2)
    with control_plane.api() as api:
        items = api.get("/api/v1/namespaces/default/configmaps",
                        params={"labelSelector": "mlform.dev/address=model.x"}).json()["items"]
    mine = [c for c in items if c["metadata"]["annotations"]["mlform.dev/stack"]
            == k8s.context.stack]
    assert sorted(c["data"]["version"] for c in mine) == ["1", "2"]
    assert all(c["immutable"] for c in mine)
    assert {c["metadata"]["labels"]["mlform.dev/approval"] for c in mine} == \
        {"pending", "approved"}


def test_a_dataset_is_uploaded_once_per_digest(k8s, aws, tmp_path):
    (tmp_path / "d.csv").write_text("amount,label\n1.5,0\n2.0,1\n")
    attrs = {"source": "./d.csv", "format": "csv", "checks": {"min_rows": 1}}
    live = create(k8s, "dataset", attrs)
    assert live.attributes["rows"] == 2 and live.attributes["uri"].startswith(f"s3://{BUCKET}/")
    aws.clear_calls()
    again = create(k8s, "dataset", attrs, name="y")     # same content, another dataset
    assert again.attributes["uri"] == live.attributes["uri"]
    uploads = [c for c in aws.mutating_calls() if c["action"] == "PutObject"
               and "records" not in json.dumps(c)]
    assert not uploads, "the same content was uploaded twice"


# -- the connection ----------------------------------------------------------------------

def test_an_unreachable_api_server_is_a_diagnostic_naming_kubeconfig_and_context(
        aws, tmp_path):
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "c", "user": "u"}}]}))
    provider = KubernetesProvider(ProviderContext(
        name="kubernetes", alias=None, stack="s", env="e", stack_dir=tmp_path,
        config={"kubeconfig": str(config), "storage": "s3://b"}))
    desired = Desired("endpoint.x", "endpoint", "x", ENDPOINT)
    [problem] = calls.validate(provider, desired)
    assert "cannot reach the Kubernetes API server https://127.0.0.1:9" in problem.summary
    assert f"kubeconfig {config}, context gone" in problem.summary


def test_a_missing_kubeconfig_names_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    provider = KubernetesProvider(ProviderContext(
        name="kubernetes", alias=None, stack="s", env="e", stack_dir=tmp_path,
        config={"storage": "s3://b"}))
    [problem] = calls.validate(provider, Desired("endpoint.x", "endpoint", "x", ENDPOINT))
    assert "KUBECONFIG is not set, ~/.kube/config does not exist" in problem.summary


# -- pipeline: Jobs run by the pod harness -----------------------------------------------

def test_a_pipeline_runs_as_a_job_and_a_retried_create_adopts_it(k8s, pod_harness, tmp_path,
                                                                 control_plane):
    desired = pipeline_desired(k8s, tmp_path, TRAIN)
    planned = calls.plan(k8s, desired)
    live = k8s.create(planned)
    k8s.made.append(live)
    assert live.attributes["metrics"] == {"accuracy": 0.9, "rows": 2, "epochs": 3}
    assert live.attributes["model_uri"].endswith(f"/{live.attributes['run_id']}/output/")
    again = k8s.create(planned)
    assert again.attributes["run_id"] == live.attributes["run_id"]
    with control_plane.api() as api:
        jobs = api.get("/apis/batch/v1/namespaces/default/jobs", params={
            "labelSelector": "mlform.dev/address=pipeline.train"}).json()["items"]
    mine = [j for j in jobs if j["metadata"]["annotations"]["mlform.dev/stack"]
            == k8s.context.stack]
    assert len(mine) == 1, "a retried create started a second Job"

    # the trained model, registered and served by a real endpoint pod
    model = create(k8s, "model", {"artifact": live.attributes["model_uri"],
                                   "framework": "torch", "stage": "production"}, name="m")
    endpoint = create(k8s, "endpoint", {"model": {"address": "model.m", **model.attributes},
                                         "replicas": 1})
    name = "x"                               # the model the endpoint pod serves
    with control_plane.api() as api:
        [pod] = api.get("/api/v1/namespaces/default/pods", params={
            "labelSelector": f"mlform.dev/role=serve,app.kubernetes.io/managed-by=mlform,"
                             f"mlform.dev/stack={k8s.context.stack}"}).json()["items"]
    container = pod["spec"]["containers"][0]
    probes = (container["readinessProbe"]["httpGet"]["path"],
              container["livenessProbe"]["httpGet"]["path"])
    port = pod_harness.serve("default", pod["metadata"]["name"])
    import httpx
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        from _waiting import wait_until
        wait_until(lambda: client.get(probes[0]).status_code == 200, 60,
                   "the endpoint pod to be ready")
        assert client.get(probes[1]).status_code == 200
        answer = client.post(f"/v2/models/{name}/infer", json={"inputs": [
            {"name": "amount", "shape": [1], "datatype": "FP32", "data": [1.5]},
            {"name": "label", "shape": [1], "datatype": "FP32", "data": [0.0]}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == str(model.attributes["version"])


def test_a_failing_training_pod_fails_the_apply_with_its_last_lines(k8s, pod_harness,
                                                                    tmp_path):
    desired = pipeline_desired(k8s, tmp_path, "raise SystemExit('the loss went to NaN at epoch 2')\n")
    with pytest.raises(ProviderError) as failed:
        k8s.create(calls.plan(k8s, desired))
    assert "exited with code 1" in failed.value.message
    assert "the loss went to NaN at epoch 2" in failed.value.message
    k8s.made.append(LiveObject("pipeline.train", "pipeline", None, desired.attributes))


def test_an_image_that_cannot_be_pulled_fails_the_run_with_the_kubelets_reason(
        k8s, pod_harness, tmp_path):
    pod_harness.unpullable.add("registry.invalid/mlform:missing")
    desired = pipeline_desired(k8s, tmp_path, TRAIN,
                        settings={"image": "registry.invalid/mlform:missing"})
    with pytest.raises(ProviderError, match="ImagePullBackOff"):
        k8s.create(calls.plan(k8s, desired))
    k8s.made.append(LiveObject("pipeline.train", "pipeline", None, desired.attributes))


def test_a_monitor_finds_drift_in_captured_requests_and_marks_the_pipeline_stale(
        k8s, pod_harness, tmp_path, control_plane):
    from _waiting import wait_until
    import httpx

    desired = pipeline_desired(k8s, tmp_path, TRAIN)
    run = k8s.create(calls.plan(k8s, desired))
    k8s.made.append(run)
    model = create(k8s, "model", {"artifact": run.attributes["model_uri"],
                                   "framework": "torch"}, name="m")
    endpoint = create(k8s, "endpoint", {
        "model": {"address": "model.m", **model.attributes}, "replicas": 1,
        "capture": {"sample_percent": 100},
        "settings": {"capture_upload_seconds": 0.2}}, name="e")
    name = "e"
    with control_plane.api() as api:
        [pod] = api.get("/api/v1/namespaces/default/pods", params={
            "labelSelector": f"mlform.dev/role=serve,mlform.dev/stack={k8s.context.stack}"}
        ).json()["items"]
    port = pod_harness.serve("default", pod["metadata"]["name"])
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        wait_until(lambda: client.get("/v2/health/ready").status_code == 200, 60,
                   "the endpoint pod to be ready")
        for i in range(40):      # amounts far from the baseline's 1.5 and 2.0
            client.post(f"/v2/models/{name}/infer", json={"inputs": [
                {"name": "amount", "shape": [1], "datatype": "FP32", "data": [900.0 + i]},
                {"name": "label", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
            ).raise_for_status()
    capture = k8s.env.store.key("capture", k8s.env.name("endpoint.e")) + "/"
    wait_until(lambda: any(o["Size"] > 1000 for o in k8s.env.store.list(capture)), 30,
               "the serving pod to upload its capture")

    monitor = create(k8s, "monitor", {
        "endpoint": {"address": "endpoint.e", **endpoint.attributes},
        "baseline": {"address": "dataset.tx", "uri": desired.attributes["inputs"]["train"]["uri"],
                     "format": "csv"},
        "pipeline": {"address": "pipeline.train", "run_id": run.attributes["run_id"]},
        "checks": [{"metric": "psi", "threshold": 0.2, "feature": "amount"}],
        "schedule": "*/10 * * * *", "on_breach": "retrain",
        "settings": {"min_rows": 10}}, name="drift")
    with control_plane.api() as api:
        cron = api.get(f"/apis/batch/v1/namespaces/default/cronjobs/{monitor.id.split('/')[-1]}"
                       ).json()
    assert cron["spec"]["schedule"] == "*/10 * * * *"
    report = k8s.action(monitor, "run", {})
    assert report["breached"], report["summary"]
    assert "BREACH psi amount" in report["summary"]
    stale = k8s.read(run).attributes["stale"]
    assert stale and "monitor.drift found drift" in stale
    assert k8s.read(monitor).attributes["breached"] is True


def test_a_canary_that_cannot_run_is_rolled_back_and_the_stable_pods_keep_serving(
        k8s, control_plane):
    live = create(k8s, "endpoint", {**ENDPOINT, "rollout": {"strategy": "canary",
                                                            "canary_percent": 50,
                                                            "bake_seconds": 0}})
    # version 2, with pods no node can hold (the scheduler says why)
    changed = {**live.attributes, "model": {"address": "model.m", "version": 2,
                                            "uri": f"s3://{BUCKET}/m2/"},
               "settings": {"cpu": "500", "schedule_timeout_seconds": 0.5}}
    desired = Desired("endpoint.x", "endpoint", "x",
                      {k: v for k, v in changed.items() if k not in ("objects", "url",
                                                                     "model_version")})
    with pytest.raises(ProviderError) as failed:
        k8s.update(live, calls.plan(k8s, desired, live))
    assert "rolled back" in failed.value.message
    assert "Insufficient cpu" in failed.value.message
    name = live.id.split("/")[-1]
    with control_plane.api() as api:
        canaries = api.get("/apis/apps/v1/namespaces/default/deployments", params={
            "labelSelector": f"mlform.dev/track=canary,mlform.dev/stack={k8s.context.stack}"}
        ).json()["items"]
        stable = api.get(f"/apis/apps/v1/namespaces/default/deployments/{name}").json()
    assert not canaries, "the failed canary was left behind"
    assert stable["spec"]["template"]["metadata"]["labels"]["mlform.dev/model-version"] == "1"
    assert stable["status"]["availableReplicas"] == 2


def test_the_entrypoints_directory_ships_with_it(k8s, pod_harness, tmp_path):
    (tmp_path / "features.py").write_text("SCALE = 3\n")     # a helper module beside it
    script = TRAIN.replace("import torch\n", "import torch\nimport features\n").replace(
        '"epochs": epochs}', '"epochs": epochs * features.SCALE}')
    desired = pipeline_desired(k8s, tmp_path, script)
    live = k8s.create(calls.plan(k8s, desired))
    k8s.made.append(live)
    assert live.attributes["metrics"]["epochs"] == 9


def test_an_oom_killed_training_pod_fails_the_run_with_the_kubelets_reason(
        k8s, pod_harness, tmp_path):
    desired = pipeline_desired(k8s, tmp_path, TRAIN)
    pod_harness.fail_next("default", "OOMKilled", "", exit_code=137)
    with pytest.raises(ProviderError) as failed:
        k8s.create(calls.plan(k8s, desired))
    assert "exited with code 137 (OOMKilled)" in failed.value.message
    k8s.made.append(LiveObject("pipeline.train", "pipeline", None, desired.attributes))


def test_a_training_pod_no_node_can_hold_fails_with_the_schedulers_reason(
        k8s, pod_harness, tmp_path):
    # three GPUs a pod, on nodes with two each (a cluster planned elsewhere, or the GPUs
    # taken since the plan): the scheduler says why it cannot place the pod
    cluster = {"address": "training_cluster.g", "namespace": "default",
               "accelerator": "nvidia-h100", "gpus_per_node": 3, "nodes": 1}
    desired = pipeline_desired(k8s, tmp_path, TRAIN, cluster=cluster,
                               settings={"schedule_timeout_seconds": 0.5})
    with pytest.raises(ProviderError) as failed:
        k8s.create(calls.plan(k8s, desired))
    assert "cannot be scheduled" in failed.value.message
    assert "Insufficient nvidia.com/gpu" in failed.value.message
    k8s.made.append(LiveObject("pipeline.train", "pipeline", None, desired.attributes))
