"""The test control plane itself: what the kubernetes provider's tests rely on.

A Deployment's pods are scheduled onto kwok nodes and become Ready (the controller
manager, the scheduler and kwok all take part); a Job completes; a GPU node
advertises nvidia.com/gpu; the audit log records every mutating request.
"""

from __future__ import annotations

import json
import uuid

import pytest

from _waiting import wait_until

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def namespace(control_plane):
    name = f"t-{uuid.uuid4().hex[:8]}"
    with control_plane.api() as api:
        api.post("/api/v1/namespaces",
                 json={"metadata": {"name": name}}).raise_for_status()
    yield name
    with control_plane.api() as api:
        api.delete(f"/api/v1/namespaces/{name}")


def _pod_spec() -> dict:
    return {"containers": [{"name": "main", "image": "registry.invalid/mlform-test:1"}],
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists",
                             "effect": "NoSchedule"}]}


def test_a_deployment_becomes_available_on_kwok_nodes(control_plane, namespace):
    labels = {"app": "smoke"}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "smoke"},
                  "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                           "template": {"metadata": {"labels": labels}, "spec": _pod_spec()}}}
    with control_plane.api() as api:
        api.post(f"/apis/apps/v1/namespaces/{namespace}/deployments",
                 json=deployment).raise_for_status()

        def available():
            status = api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/smoke"
                             ).json().get("status", {})
            return status.get("availableReplicas") == 2
        wait_until(available, 60, "the deployment to have 2 available replicas", interval=0.2)
        pods = api.get(f"/api/v1/namespaces/{namespace}/pods").json()["items"]
    assert len(pods) == 2
    assert {p["spec"]["nodeName"] for p in pods} <= {"kwok-cpu-0", "kwok-gpu-0"}
    assert all(p["status"]["phase"] == "Running" for p in pods)


def test_a_job_completes(control_plane, namespace):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
           "spec": {"completions": 1, "backoffLimit": 0,
                    "template": {"spec": {**_pod_spec(), "restartPolicy": "Never"}}}}
    with control_plane.api() as api:
        api.post(f"/apis/batch/v1/namespaces/{namespace}/jobs", json=job).raise_for_status()

        def complete():
            conditions = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/once"
                                 ).json().get("status", {}).get("conditions") or []
            return any(c["type"] == "Complete" and c["status"] == "True" for c in conditions)
        wait_until(complete, 60, "the job to complete", interval=0.2)


def test_a_gpu_node_advertises_its_gpus(control_plane):
    with control_plane.api() as api:
        node = api.get("/api/v1/nodes/kwok-gpu-0").json()
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"


def test_the_audit_log_records_mutating_requests(control_plane, namespace):
    with control_plane.api() as api:
        api.post(f"/api/v1/namespaces/{namespace}/configmaps",
                 json={"metadata": {"name": "audited"}, "data": {"k": "v"}}).raise_for_status()

    def recorded():
        for line in control_plane.audit_log.read_text().splitlines():
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if (event.get("verb") == "create" and ref.get("resource") == "configmaps"
                    and ref.get("name") == "audited" and event.get("stage") == "ResponseComplete"):
                return event
        return None
    event = wait_until(recorded, 30, "the configmap create in the audit log")
    assert event["user"]["username"] == "admin"
