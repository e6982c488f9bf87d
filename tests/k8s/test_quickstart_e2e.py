"""The quickstart stack on Kubernetes, end to end through the CLI, on the test cluster.

The same `stacks/quickstart` that runs on `local` is applied with its shipped
`environments/kubernetes.hcl` (polling fast) against the session's control plane, with
moto's S3 as storage; the pod harness runs the training pod's command (a real torch
run).  One copy is taken through a life in order: apply, a no-op plan with zero
mutating requests in the audit log, out-of-band changes found by `drift` and healed by
`apply`, a changed dataset that re-runs the pipeline and rolls a new model version out
through the canary, and `destroy`, which must leave no object with mlform's labels.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.harness import CLI, Run, cli_env
from fixture import AWS_ENV
from _kube import kubectl_changes
from local._cli import REPO, copy_stack

pytest.importorskip("torch")
pytestmark = pytest.mark.timeout(900)

BUCKET = "mlform-k8s-quickstart"
STACK = "k8s-quickstart"
LABELLED = ("/api/v1/namespaces", "/api/v1/services", "/api/v1/configmaps",
            "/api/v1/resourcequotas", "/apis/apps/v1/deployments", "/apis/batch/v1/jobs",
            "/apis/batch/v1/cronjobs", "/apis/autoscaling/v2/horizontalpodautoscalers")


def _vars(plane, aws) -> dict:
    return {**AWS_ENV, "MLFORM_VAR_k8s_kubeconfig": str(plane.kubeconfig),
            "MLFORM_VAR_k8s_storage": f"s3://{BUCKET}/{{stack}}/{{env}}",
            "MLFORM_VAR_k8s_endpoint_url": aws.url}


class Cli:
    def __init__(self, stack: Path, plane, aws) -> None:
        self.stack, self.plane, self.aws = stack, plane, aws

    def __call__(self, *args, timeout: float = 600) -> Run:
        proc = subprocess.run([*CLI, "-C", str(self.stack), *map(str, args), "--env",
                               "kubernetes"], env=cli_env(_vars(self.plane, self.aws)),
                              input="", capture_output=True, text=True, timeout=timeout)
        return Run(tuple(args), proc.returncode, proc.stdout, proc.stderr)


def _labelled(plane) -> list[str]:
    """Every object of this stack carrying mlform's labels."""
    found = []
    selector = f"app.kubernetes.io/managed-by=mlform,mlform.dev/stack={STACK}"
    with plane.api() as api:
        for path in LABELLED:
            for item in api.get(path, params={"labelSelector": selector}).json()["items"]:
                found.append(f"{path.rsplit('/', 1)[-1]}/{item['metadata']['name']}")
    return found


@pytest.fixture(scope="module")
def cli(tmp_path_factory, moto_server, control_plane, pod_harness):
    moto_server.reset()
    moto_server.client("s3").create_bucket(Bucket=BUCKET)
    stack = copy_stack(REPO / "stacks" / "quickstart", tmp_path_factory.mktemp("k8s") / STACK)
    subprocess.run([sys.executable, str(stack / "make_data.py")], check=True, cwd=stack,
                   capture_output=True)
    env_file = stack / "environments" / "kubernetes.hcl"
    env_file.write_text(env_file.read_text().replace(
        "  endpoint_url = var.k8s_endpoint_url\n",
        "  endpoint_url = var.k8s_endpoint_url\n  poll_seconds = 0.1\n"))
    run = Cli(stack, control_plane, moto_server)
    try:
        applied = run("apply", "--auto-approve")
        assert applied.code == 0, applied
        yield run
    finally:
        destroyed = run("destroy", "--auto-approve")
        assert destroyed.code == 0, destroyed
        assert not _labelled(control_plane), "destroy left objects with mlform's labels"


def _state(cli) -> dict:
    return {r["address"]: r["attributes"] for r in json.loads(
        (cli.stack / ".mlform" / "state" / "kubernetes.json").read_text())["resources"]}


def test_apply_runs_the_job_and_rolls_out_the_deployment_and_a_plan_is_a_no_op(cli):
    state = _state(cli)
    run_id = state["pipeline.train"]["run_id"]
    namespace = state["training_cluster.cpu"]["namespace"]
    deployment = state["endpoint.fraud"]["objects"]
    with cli.plane.api() as api:
        job = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{run_id}").json()
        [name] = [k.split("/")[-1] for k in deployment if k.startswith("Deployment/")]
        status = api.get(f"/apis/apps/v1/namespaces/default/deployments/{name}").json()["status"]
    assert any(c["type"] == "Complete" and c["status"] == "True"
               for c in job["status"]["conditions"])
    assert status["availableReplicas"] == 1
    assert state["pipeline.train"]["metrics"]["accuracy"] >= 0.85
    since = cli.plane.audit_offset()
    plan = cli("plan", "--detailed-exitcode")
    assert plan.code == 0 and "No changes" in plan.stdout, plan
    assert cli.plane.mutating_requests(since) == [], "a no-op plan made mutating requests"


def test_the_quickstart_exports_a_pulumi_program_that_agrees_with_the_plan(cli, tmp_path):
    """`mlform export pulumi` of the applied quickstart runs under Pulumi's mocks; what it
    registers agrees with the plan and the live objects, and the import file names them."""
    pytest.importorskip("pulumi_kubernetes")
    from _pulumi import run_program
    out, import_file = tmp_path / "program", tmp_path / "import.json"
    done = cli("export", "pulumi", "--out", out, "--import-file", import_file)
    assert done.code == 0, done
    planned = cli("plan", "--format", "json")
    assert planned.code == 0, planned
    plan = {c["address"]: c["change"]["after"] for c in planned.json()["resource_changes"]}
    found = {r.type: r for r in run_program(out)}
    state = _state(cli)
    [name] = [k.split("/")[-1] for k in state["endpoint.fraud"]["objects"]
              if k.startswith("Deployment/")]
    with cli.plane.api() as api:
        live = api.get(f"/apis/apps/v1/namespaces/default/deployments/{name}").json()
        service = api.get(f"/api/v1/namespaces/default/services/{name}").json()
    deployment = found["kubernetes:apps/v1:Deployment"]
    meta = deployment.inputs["metadata"]
    assert (meta["name"], meta["namespace"]) == (name, "default")
    # labels: the spec's tags and the ownership labels, as on the live Deployment
    assert meta["labels"] == live["metadata"]["labels"]
    assert meta["labels"]["name"] == plan["endpoint.fraud"]["tags"]["name"]
    assert deployment.inputs["spec"]["replicas"] == plan["endpoint.fraud"]["replicas"] == \
        live["spec"]["replicas"]
    [container] = deployment.inputs["spec"]["template"]["spec"]["containers"]
    [live_container] = live["spec"]["template"]["spec"]["containers"]
    assert container["image"] == live_container["image"]
    assert container["ports"][0]["containerPort"] == live_container["ports"][0]["containerPort"]
    svc = found["kubernetes:core/v1:Service"]
    assert svc.inputs["metadata"]["name"] == name
    assert svc.inputs["spec"]["selector"] == service["spec"]["selector"]
    assert found["kubernetes:batch/v1:CronJob"].inputs["spec"]["schedule"] == \
        plan["monitor.drift"]["schedule"]
    program = (out / "__main__.py").read_text()
    assert f'"{plan["pipeline.train"]["model_uri"]}"' in program   # the run: a comment, an output
    doc = json.loads(import_file.read_text())
    ids = {e["type"]: e["id"] for e in doc["resources"]}
    assert ids["kubernetes:apps/v1:Deployment"] == f"default/{name}"
    assert ids["kubernetes:core/v1:Service"] == f"default/{name}"
    assert (out / "requirements.txt").read_text().splitlines() == [
        "pulumi==3.272.0", "pulumi-kubernetes==4.34.2"]


def test_out_of_band_changes_are_drift_and_apply_heals_them(cli):
    objects = _state(cli)["endpoint.fraud"]["objects"]
    [name] = [k.split("/")[-1] for k in objects if k.startswith("Deployment/")]
    kubectl_changes(cli.plane, name, ("name", "renamed"))
    drift = cli("drift")
    assert drift.code == 2, drift
    assert "endpoint.fraud" in drift.stdout and "replicas" in drift.stdout
    assert f"Service/default/{name}" in drift.stdout              # deleted: missing
    assert "metadata.labels.name" in drift.stdout and "renamed" in drift.stdout
    healed = cli("apply", "--auto-approve")
    assert healed.code == 0, healed
    assert cli("drift").code == 0
    assert set(_state(cli)["endpoint.fraud"]["objects"].values()) == {"applied"}


def test_a_changed_dataset_runs_a_new_job_and_rolls_version_two_out(cli):
    before = _state(cli)
    subprocess.run([sys.executable, str(cli.stack / "make_data.py"), "--seed", "11"],
                   check=True, cwd=cli.stack, capture_output=True)
    plan = cli("plan")
    assert plan.code == 0, plan
    assert "pipeline.train must be re-run" in plan.stdout or "dataset.transactions" in plan.stdout
    applied = cli("apply", "--auto-approve")
    assert applied.code == 0, applied
    after = _state(cli)
    assert after["pipeline.train"]["run_id"] != before["pipeline.train"]["run_id"]
    assert after["model.fraud"]["version"] == before["model.fraud"]["version"] + 1
    assert after["endpoint.fraud"]["model_version"] == after["model.fraud"]["version"]
    assert "canary: version" in applied.output or "canary" in applied.output
    with cli.plane.api() as api:
        [name] = [k.split("/")[-1] for k in after["endpoint.fraud"]["objects"]
                  if k.startswith("Deployment/")]
        deployment = api.get(f"/apis/apps/v1/namespaces/default/deployments/{name}").json()
        canaries = api.get("/apis/apps/v1/namespaces/default/deployments", params={
            "labelSelector": f"mlform.dev/track=canary,mlform.dev/stack={STACK}"}).json()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["mlform.dev/model-version"] == str(after["model.fraud"]["version"])
    assert not canaries["items"], "the promoted canary was left behind"
