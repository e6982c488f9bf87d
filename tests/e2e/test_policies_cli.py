"""Policies through the CLI: exit codes, the plan shown with its checks, JSON and
Markdown sections, apply refused, and a real `opa` evaluating a Terraform-style Rego
policy over `mlform plan --format json` (the JSON plan is what OPA users' policies read).
"""

from __future__ import annotations

import json
import subprocess

from tests._tools import tool

from . import harness

STACK = harness.memory_provider() + """
variable "replicas" {
  type    = number
  default = 1
}
variable "level" { default = "mandatory" }
endpoint "web" {
  model         = "s3://bucket/model"
  instance_type = "ml.g5.xlarge"
  replicas      = var.replicas
}
policy "replicas" {
  level     = var.level
  kinds     = ["endpoint"]
  condition = change.after.replicas <= 2
  message   = "${change.address} asks for ${change.after.replicas} replicas; at most 2"
}
"""


def test_a_mandatory_failure_exits_1_shows_the_plan_and_apply_changes_nothing(make_stack, mlform):
    stack = make_stack(STACK)
    run = mlform("plan", "--var", "replicas=3", "--out", "p.json", cwd=stack)
    assert run.code == 1, run
    assert "error: Policy policy.replicas failed for endpoint.web" in run.stderr
    assert "endpoint.web asks for 3 replicas; at most 2" in run.stderr
    assert "  # endpoint.web will be created" in run.stdout     # the plan is shown
    assert ("  ✗ policy.replicas (mandatory) endpoint.web: endpoint.web asks for 3 replicas; "
            "at most 2") in run.stdout
    assert not (stack / "p.json").exists()          # a refused plan is never saved
    applied = mlform("apply", "--auto-approve", "--var", "replicas=3", cwd=stack)
    assert applied.code == 1, applied
    assert "error: Policy policy.replicas failed for endpoint.web" in applied.stderr
    assert not (stack / harness.STORE).exists()     # no provider call was made


def test_an_advisory_failure_warns_and_exits_0_or_2(make_stack, mlform):
    stack = make_stack(STACK)
    run = mlform("plan", "--var", "replicas=3", "--var", "level=advisory", cwd=stack)
    assert run.code == 0, run
    assert "warning: Advisory policy policy.replicas failed for endpoint.web" in run.stderr
    detailed = mlform("plan", "--var", "replicas=3", "--var", "level=advisory",
                      "--detailed-exitcode", cwd=stack)
    assert detailed.code == 2, detailed
    applied = mlform("apply", "--auto-approve", "--var", "replicas=3", "--var",
                     "level=advisory", cwd=stack)
    assert applied.code == 0, applied


def test_json_and_markdown_carry_the_policy_checks(make_stack, mlform):
    stack = make_stack(STACK)
    doc = mlform("plan", "--format", "json", "--var", "replicas=3", cwd=stack).json()
    assert doc["errored"] is True
    assert doc["policies"] == [{"policy": "policy.replicas", "level": "mandatory",
                                "passed": False, "address": "endpoint.web",
                                "message": "endpoint.web asks for 3 replicas; at most 2"}]
    ok = mlform("plan", "--format", "json", cwd=stack).json()
    assert [p["passed"] for p in ok["policies"]] == [True]
    md = mlform("plan", "--format", "markdown", "--var", "replicas=3", cwd=stack)
    assert md.code == 1
    assert "#### Policy checks: 1 mandatory failed" in md.stdout
    assert ("| **failed** | `policy.replicas` | mandatory | `endpoint.web` | endpoint.web asks "
            "for 3 replicas; at most 2 |") in md.stdout


REGO = """
package mlform.guard

import rego.v1

# Terraform-style: what every Terraform policy library reads.
deny contains msg if {
    some rc in input.resource_changes
    rc.type == "endpoint"
    "delete" in rc.change.actions
    msg := sprintf("%s would be deleted", [rc.address])
}

deny contains msg if {
    some rc in input.resource_changes
    rc.change.actions == ["create"]
    rc.change.after.replicas > 2
    msg := sprintf("%s creates %d replicas", [rc.address, rc.change.after.replicas])
}
"""


def _opa(policy, plan_json) -> list[str]:
    proc = subprocess.run([str(tool("opa")), "eval", "--format", "json", "--data", str(policy),
                           "--input", str(plan_json), "data.mlform.guard.deny"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)["result"]
    return sorted(result[0]["expressions"][0]["value"])


def test_opa_evaluates_a_terraform_style_policy_over_the_json_plan(make_stack, mlform, tmp_path):
    stack = make_stack(STACK.split('policy "replicas"')[0])
    policy = tmp_path / "guard.rego"
    policy.write_text(REGO)
    create = tmp_path / "create.json"
    create.write_text(mlform("plan", "--format", "json", "--var", "replicas=3", cwd=stack).stdout)
    assert _opa(policy, create) == ["endpoint.web creates 3 replicas"]
    small = tmp_path / "small.json"
    small.write_text(mlform("plan", "--format", "json", cwd=stack).stdout)
    assert _opa(policy, small) == []
    assert mlform("apply", "--auto-approve", cwd=stack).code == 0
    destroy = tmp_path / "destroy.json"
    destroy.write_text(mlform("plan", "--destroy", "--format", "json", cwd=stack).stdout)
    assert _opa(policy, destroy) == ["endpoint.web would be deleted"]
