"""The test control plane itself: what the kubernetes provider's tests rely on.

A Deployment's pods are scheduled onto kwok nodes and become Ready (the controller
manager, the scheduler and kwok all take part); a Job completes once the pod harness
has run its pod; the GPU nodes advertise nvidia.com/gpu; the audit log records every
mutating request.
"""

from __future__ import annotations

import json

import pytest

from _waiting import wait_until
from control_plane import NODES

pytestmark = pytest.mark.timeout(300)


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
    assert {p["spec"]["nodeName"] for p in pods} <= set(NODES)
    assert all(p["status"]["phase"] == "Running" for p in pods)


def test_a_job_completes(control_plane, pod_harness, namespace):
    # Nothing completes a Job's pod but the harness (kwok's pod-complete stage is off).
    pod_spec = {**_pod_spec(), "restartPolicy": "Never"}
    pod_spec["containers"][0]["command"] = ["python", "-c", "print('ok')"]
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
           "spec": {"completions": 1, "backoffLimit": 0,
                    "template": {"metadata": {"labels": {"mlform.dev/role": "train"}},
                                 "spec": pod_spec}}}
    with control_plane.api() as api:
        api.post(f"/apis/batch/v1/namespaces/{namespace}/jobs", json=job).raise_for_status()

        def complete():
            conditions = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/once"
                                 ).json().get("status", {}).get("conditions") or []
            return any(c["type"] == "Complete" and c["status"] == "True" for c in conditions)
        wait_until(complete, 60, "the job to complete", interval=0.2)


def test_the_gpu_nodes_advertise_their_gpus(control_plane):
    with control_plane.api() as api:
        for name in ("kwok-gpu-0", "kwok-gpu-1"):
            node = api.get(f"/api/v1/nodes/{name}").json()
            assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
            assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == \
                "NVIDIA-H100-80GB-HBM3"
            assert node["metadata"]["labels"]["nvidia.com/gpu.count"] == "2"


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
