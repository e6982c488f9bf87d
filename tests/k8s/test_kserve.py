"""`settings { serving = "kserve" }` on an endpoint: a KServe InferenceService instead of
the Deployment, Service and HPA.

KServe's CustomResourceDefinition (tests/k8s/cluster/crds/kserve.yaml, the kind and scope
as KServe declares them) is installed into the test cluster; KServe's controller is not
there, so what is checked is what mlform writes, reads back and heals, not serving.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _kube import BUCKET, ENDPOINT, create, install_crds
from mlform.providers.base import Desired, LiveObject
from mlform.providers.kit import calls

pytestmark = pytest.mark.timeout(300)

CRDS = Path(__file__).parent / "cluster" / "crds" / "kserve.yaml"
KSERVE = "/apis/serving.kserve.io/v1beta1/namespaces/default/inferenceservices"
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture(scope="module")
def kserve_crds(control_plane):
    install_crds(control_plane, CRDS)


def test_a_kserve_endpoint_is_an_inference_service_read_for_drift_healed_and_deleted(
        k8s, kserve_crds, control_plane):
    attrs = {**ENDPOINT, "settings": {"serving": "kserve"},
             "rollout": {"strategy": "canary", "canary_percent": 20, "bake_seconds": 0}}
    live = create(k8s, "endpoint", attrs)
    name = live.id.split("/")[-1]
    assert live.id == f"InferenceService/default/{name}"
    assert live.attributes["objects"] == {live.id: "applied"}
    assert live.attributes["url"] == f"http://{name}.default.svc.cluster.local/v2/models/x"
    with control_plane.api() as api:
        isvc = api.get(f"{KSERVE}/{name}").json()
        assert api.get(f"/apis/apps/v1/namespaces/default/deployments/{name}"
                       ).status_code == 404, "a kserve endpoint made a Deployment"
        assert api.get(f"/api/v1/namespaces/default/services/{name}").status_code == 404
    assert isvc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlform"
    assert isvc["metadata"]["annotations"]["mlform.dev/address"] == "endpoint.x"
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 2)
    assert predictor["canaryTrafficPercent"] == 20
    [container] = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["command"] == ["python", "-m", "mlform.providers.kubernetes.pod", "serve"]
    assert container["ports"] == [{"name": "http1", "containerPort": 8080}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready",
                                                      "port": 8080}
    env = {e["name"]: e["value"] for e in container["env"]}
    work = json.loads(env["MLFORM_POD"])
    assert work["name"] == "x" and work["models"][0]["version"] == 1
    assert env["PROTOCOL"] == "v2"

    # applied as planned; a hand edit is drift, and the apply heals it
    assert set(k8s.read(live).attributes["objects"].values()) == {"applied"}
    with control_plane.api() as api:
        api.patch(f"{KSERVE}/{name}", json={"spec": {"predictor": {"minReplicas": 5}}},
                  headers=MERGE).raise_for_status()
    found = k8s.read(live)
    assert "spec.predictor.minReplicas (2 → 5" in found.attributes["objects"][live.id]
    assert found.attributes["replicas"] == 5
    desired = Desired("endpoint.x", "endpoint", "x", attrs)
    healed = k8s.update(found, calls.plan(k8s, desired, found))
    assert set(k8s.read(healed).attributes["objects"].values()) == {"applied"}
    assert k8s.read(healed).attributes["replicas"] == 2

    # a new model version goes to KServe (its canary), with no canary Deployment of mlform's
    second = Desired("endpoint.x", "endpoint", "x", {
        **attrs, "model": {"address": "model.m", "version": 2, "uri": f"s3://{BUCKET}/m2/"}})
    rolled = k8s.update(healed, calls.plan(k8s, second, healed))
    assert rolled.attributes["model_version"] == 2
    with control_plane.api() as api:
        isvc = api.get(f"{KSERVE}/{name}").json()
        deployments = api.get("/apis/apps/v1/namespaces/default/deployments", params={
            "labelSelector": f"mlform.dev/stack={k8s.context.stack}"}).json()["items"]
    assert not deployments
    env = {e["name"]: e["value"] for e in isvc["spec"]["predictor"]["containers"][0]["env"]}
    assert json.loads(env["MLFORM_POD"])["models"][0]["version"] == 2
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 20

    # attributes lost (a crashed create): found again from the InferenceService
    lost = LiveObject("endpoint.x", "endpoint", None, {})
    assert k8s.read(lost).attributes["settings"] == {"serving": "kserve"}

    k8s.made.remove(live)
    k8s.delete(lost)
    with control_plane.api() as api:
        assert api.get(f"{KSERVE}/{name}").status_code == 404
