"""Runs on several nodes: an Indexed Job with a headless Service (run by the pod harness,
one process per pod), a JobSet (its CRD installed; JobSet's controller is not in the test
cluster, so the API server's acceptance is what is checked), and a PyTorchJob whose CRD
is missing (a plan-time diagnostic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from _kube import install_crds, pipeline_desired
from mlform.providers.base import Desired
from mlform.providers.kit import calls

pytestmark = pytest.mark.timeout(300)

_TWO_NODES = """\
import json, os, pathlib
out = pathlib.Path(os.environ["MLFORM_OUTPUT_DIR"])
(out / "model.pt").write_bytes(b"model")
(out / "metrics.json").write_text(json.dumps({
    "accuracy": 0.9, "world_size": int(os.environ["WORLD_SIZE"]),
    "master": os.environ["MASTER_ADDR"],
    "contract": [os.environ["MLFORM_WORLD_SIZE"], os.environ["MLFORM_DIST_BACKEND"],
                 os.environ["LOCAL_RANK"], os.environ["RANK"] == os.environ["NODE_RANK"]]}))
"""

CLUSTER = {"address": "training_cluster.c", "namespace": "default", "accelerator": "cpu",
           "gpus_per_node": 0, "nodes": 2}


def test_two_nodes_are_an_indexed_job_with_a_headless_service(k8s, pod_harness,
                                                              control_plane, tmp_path):
    desired = pipeline_desired(k8s, tmp_path, _TWO_NODES, cluster=CLUSTER)
    live = k8s.create(calls.plan(k8s, desired))
    k8s.made.append(live)
    run = live.attributes["run_id"]
    assert live.attributes["metrics"]["world_size"] == 2
    assert live.attributes["metrics"]["master"] == f"{run}-0.{run}.default.svc"
    # the run contract's distributed variables, one process per node
    assert live.attributes["metrics"]["contract"] == ["2", "gloo", "0", True]
    with control_plane.api() as api:
        job = api.get(f"/apis/batch/v1/namespaces/default/jobs/{run}").json()
        service = api.get(f"/api/v1/namespaces/default/services/{run}").json()
        pods = api.get("/api/v1/namespaces/default/pods",
                       params={"labelSelector": f"batch.kubernetes.io/job-name={run}"}).json()
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    assert service["spec"]["clusterIP"] == "None"
    assert len(pods["items"]) == 2
    assert {p["spec"]["subdomain"] for p in pods["items"]} == {run}


def test_a_jobset_run_is_accepted_by_the_api_server(k8s, control_plane, tmp_path):
    install_crds(control_plane, Path(__file__).parent / "cluster" / "crds" / "training.yaml")
    desired = pipeline_desired(k8s, tmp_path, _TWO_NODES, cluster=CLUSTER,
                               settings={"distributed": "jobset"})
    assert not calls.validate(k8s, desired)
    handler = k8s.handler("pipeline")
    [jobset] = handler.job_manifests("pipeline.train", desired.attributes, "default", "run-1",
                                     "sha256:" + "ab" * 32, 1, "s3://b/code/t.py", "t.py")
    assert jobset["kind"] == "JobSet"
    [workers] = jobset["spec"]["replicatedJobs"]
    assert workers["template"]["spec"]["completions"] == 2
    env = {e["name"]: e["value"] for e in
           workers["template"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MASTER_ADDR"] == "run-1-workers-0-0.run-1.default.svc"
    stored = k8s.env.kube.apply(jobset, dry_run=True)     # the API server takes it as is
    assert stored["spec"]["replicatedJobs"][0]["name"] == "workers"


def test_a_pytorchjob_without_its_crd_is_a_plan_time_diagnostic(k8s, tmp_path):
    desired = pipeline_desired(k8s, tmp_path, _TWO_NODES, cluster=CLUSTER,
                               settings={"distributed": "pytorchjob"})
    [problem] = calls.validate(k8s, Desired(desired.address, "pipeline", "train",
                                            desired.attributes))
    assert "settings.distributed = 'pytorchjob'" in problem.summary
    assert "CustomResourceDefinition installed" in problem.summary
