"""`settings { kueue = true }` on a training cluster: Kueue's objects, and queued runs.

Kueue's CustomResourceDefinitions (tests/k8s/cluster/crds/kueue.yaml, kinds and scopes
as Kueue declares them) are installed into the test cluster; Kueue's controller is not
there, so what is checked is what mlform writes and the API server accepts, not
admission by Kueue.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from _kube import create, install_crds

pytestmark = pytest.mark.timeout(300)

CRDS = Path(__file__).parent / "cluster" / "crds" / "kueue.yaml"
KUEUE = "/apis/kueue.x-k8s.io/v1beta1"


@pytest.fixture(scope="module")
def kueue_crds(control_plane):
    install_crds(control_plane, CRDS)


def test_a_kueue_cluster_is_a_flavor_a_cluster_queue_and_a_local_queue(k8s, kueue_crds,
                                                                        control_plane):
    live = create(k8s, "training_cluster", {"accelerator": "nvidia-h100", "gpus_per_node": 2,
                                            "nodes": 1, "settings": {"kueue": True}})
    namespace = live.attributes["namespace"]
    with control_plane.api() as api:
        flavor = api.get(f"{KUEUE}/resourceflavors/{namespace}").json()
        queue = api.get(f"{KUEUE}/clusterqueues/{namespace}").json()
        local = api.get(f"{KUEUE}/namespaces/{namespace}/localqueues/mlform").json()
    assert flavor["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlform"
    [group] = queue["spec"]["resourceGroups"]
    quotas = {r["name"]: r["nominalQuota"] for r in group["flavors"][0]["resources"]}
    assert quotas["nvidia.com/gpu"] == "2"
    assert local["spec"]["clusterQueue"] == namespace
    assert set(k8s.read(live).attributes["objects"].values()) == {"applied"}

    # its runs are created suspended, labelled with the queue, for Kueue to admit
    pipeline = k8s.handler("pipeline")
    [job] = pipeline.job_manifests(
        "pipeline.train", {"cluster": {"address": "training_cluster.x", **live.attributes,
                                       "settings": {"kueue": True}}},
        namespace, "run-1", "sha256:" + "ab" * 32, 1, "s3://b/code/train.py", "train.py")
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "mlform"

    k8s.made.remove(live)
    k8s.delete(live)
    with control_plane.api() as api:
        assert api.get(f"{KUEUE}/resourceflavors/{namespace}").status_code == 404
        assert api.get(f"{KUEUE}/clusterqueues/{namespace}").status_code == 404
