"""Failures through the CLI on the test cluster, as a user meets them: a training pod
that fails, a cluster asking for more GPUs than a node has, a change the API server can
only make by replacement, and an API server that cannot be reached.  Each is a
diagnostic or a failed apply with the reason; never a traceback.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from e2e.harness import CLI, Run, cli_env
from fixture import AWS_ENV

pytestmark = pytest.mark.timeout(600)

BUCKET = "mlform-k8s-cli"


def _stack(directory: Path, plane, aws, body: str, kubeconfig: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.hcl").write_text(textwrap.dedent(f'''
        provider "kubernetes" {{
          kubeconfig   = "{kubeconfig or plane.kubeconfig}"
          storage      = "s3://{BUCKET}/{{stack}}"
          endpoint_url = "{aws.url}"
          poll_seconds = 0.1
        }}
    ''') + textwrap.dedent(body))
    if not any(b["Name"] == BUCKET for b in aws.client("s3").list_buckets()["Buckets"]):
        aws.client("s3").create_bucket(Bucket=BUCKET)
    return directory


def mlform(stack: Path, *args, timeout: float = 300) -> Run:
    proc = subprocess.run([*CLI, "-C", str(stack), *map(str, args)], env=cli_env(AWS_ENV),
                          input="", capture_output=True, text=True, timeout=timeout)
    return Run(tuple(args), proc.returncode, proc.stdout, proc.stderr)


def _no_traceback(run: Run) -> None:
    assert "Traceback" not in run.output, run.output


def test_a_failing_training_pod_fails_the_apply_with_its_termination_message(
        control_plane, pod_harness, aws, tmp_path):
    stack = _stack(tmp_path / "failing", control_plane, aws, '''
        pipeline "train" {
          entrypoint = "train.py"
          gate       = { metric = "accuracy", min = 0.5 }
        }
    ''')
    (stack / "train.py").write_text("raise SystemExit('CUDA error: out of memory at step 3')\n")
    try:
        applied = mlform(stack, "apply", "--auto-approve")
        assert applied.code == 1, applied
        _no_traceback(applied)
        assert "pipeline.train" in applied.output
        assert "exited with code 1" in applied.output
        assert "CUDA error: out of memory at step 3" in applied.output
    finally:
        assert mlform(stack, "destroy", "--auto-approve").code == 0


def test_four_gpus_per_node_on_nodes_with_two_fails_the_plan_naming_the_nodes(
        control_plane, aws, tmp_path):
    stack = _stack(tmp_path / "gpus", control_plane, aws, '''
        training_cluster "big" {
          accelerator   = "nvidia-h100"
          gpus_per_node = 4
          nodes         = 1
        }
    ''')
    plan = mlform(stack, "plan")
    assert plan.code == 1, plan
    _no_traceback(plan)
    assert "0 node(s) with 4 allocatable nvidia-h100 GPU(s)" in plan.output
    assert "kwok-gpu-0: 2 × NVIDIA-H100-80GB-HBM3" in plan.output
    assert "main.hcl" in plan.output          # the block's file and line


def test_an_immutable_change_plans_a_replacement_with_the_api_servers_reason(
        control_plane, aws, tmp_path):
    body = '''
        endpoint "api" {
          model    = "s3://%s/m/"
          replicas = 1
          settings { cluster_ip = %s }
        }
    '''
    stack = _stack(tmp_path / "immutable", control_plane, aws, body % (BUCKET, "null"))
    try:
        assert mlform(stack, "apply", "--auto-approve").code == 0
        (stack / "main.hcl").write_text((stack / "main.hcl").read_text().replace(
            "cluster_ip = null", 'cluster_ip = "10.0.0.99"'))
        plan = mlform(stack, "plan")
        assert plan.code == 0, plan
        _no_traceback(plan)
        assert "must be replaced" in plan.output
        assert "may not change once set" in plan.output
    finally:
        assert mlform(stack, "destroy", "--auto-approve").code == 0


def test_an_unreachable_api_server_is_a_plan_diagnostic_naming_kubeconfig_and_context(
        control_plane, aws, tmp_path):
    config = tmp_path / "gone.kubeconfig"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "far-away",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "far-away", "context": {"cluster": "c", "user": "u"}}]}))
    stack = _stack(tmp_path / "unreachable", control_plane, aws, '''
        model "m" {
          artifact  = "s3://%s/runs/1/"
          framework = "torch"
        }
    ''' % BUCKET, kubeconfig=str(config))
    plan = mlform(stack, "plan")
    assert plan.code == 1, plan
    _no_traceback(plan)
    assert f"kubeconfig {config}, context far-away" in plan.output
