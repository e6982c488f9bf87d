"""Policy as code: `policy` blocks and the shipped library (modules/policies).

Plans are made in-process on the memory provider, exactly as `mlform plan` makes them
(operations.plan); each shipped policy has a passing and a failing case with its exact
diagnostic.  Exit codes, JSON and Markdown are covered end to end in
tests/e2e/test_policies_cli.py.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mlform import operations
from mlform.diagnostics import DiagnosticError
from mlform.plan.inputs import PlanOptions
from mlform.session import Session, SessionOptions
from mlform.validate import validate_stack

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "modules" / "policies"

PROVIDER = 'provider "memory" { store = ".mlform/memory.json" }\n'

CLUSTER = """
training_cluster "gpu" {
  accelerator   = "nvidia-h100"
  gpus_per_node = 8
  nodes         = var.nodes
  instance_type = var.cluster_type
  tags          = var.tags
}
variable "nodes" {
  type    = number
  default = 1
}
variable "cluster_type" { default = "ml.p5.48xlarge" }
variable "tags" {
  type    = map(string)
  default = { team = "fraud" }
}
"""

ENDPOINT = """
endpoint "web" {
  model         = "s3://bucket/model"
  instance_type = var.endpoint_type
  replicas      = 2
  tags          = var.tags
  settings {
    public = var.public
    auth   = var.auth
  }
}
variable "endpoint_type" { default = "ml.g5.xlarge" }
variable "public" {
  type    = bool
  default = false
}
variable "auth" { default = null }
"""


def write(root: Path, text: str, envs: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "main.hcl").write_text(PROVIDER + textwrap.dedent(text))
    for name, body in (envs or {}).items():
        (root / "environments").mkdir(exist_ok=True)
        (root / "environments" / f"{name}.hcl").write_text(body)
    return root


def plan_of(stack: Path, *, env: str | None = None, vars=(), mode="normal"):
    session = Session(stack, SessionOptions(env=env, vars=list(vars)))
    try:
        state = operations.load_state(session)
        return operations.plan(session, state, PlanOptions(mode=mode))
    finally:
        session.close()


def apply_all(stack: Path, *, env: str | None = None, vars=()):
    session = Session(stack, SessionOptions(env=env, vars=list(vars)))
    try:
        with operations.locked(session, "apply"):
            state = operations.load_state(session)
            plan = operations.plan(session, state, PlanOptions())
            assert not plan.errored, plan.diagnostics
            result = operations.apply(session, state, plan, parallelism=4)
            assert result.ok
    finally:
        session.close()


def line_of(stack: Path, text: str) -> int:
    """The line of main.hcl where `text` first appears."""
    for n, line in enumerate((stack / "main.hcl").read_text().splitlines(), start=1):
        if text in line:
            return n
    raise AssertionError(f"{text!r} not in main.hcl")


def failures(plan, severity="error"):
    return [d for d in plan.diagnostics if d.severity == severity]


def guardrails(**inputs) -> str:
    body = "".join(f"  {k} = {v}\n" for k, v in inputs.items())
    return f'module "guard" {{\n  source = "{LIBRARY}"\n{body}}}\n'


# ------------------------------------------------------------------ the language

def test_a_plan_wide_policy_passes_and_fails_with_its_message_and_values(tmp_path):
    stack = write(tmp_path / "s", CLUSTER + """
        policy "gpu_budget" {
          condition = plan.totals.gpus <= 8
          message   = "the plan requests ${plan.totals.gpus} GPUs; the budget is 8"
        }
    """)
    ok = plan_of(stack)
    assert not ok.errored
    assert [(r.policy, r.passed, r.address) for r in ok.policies] == [
        ("policy.gpu_budget", True, "")]
    bad = plan_of(stack, vars=["nodes=3"])
    [d] = failures(bad)
    assert d.summary == "Policy policy.gpu_budget failed"
    assert d.detail == ("the plan requests 24 GPUs; the budget is 8\n"
                        "  plan.totals.gpus = 24")
    assert d.source.file.endswith("main.hcl")
    assert d.source.line == line_of(stack, 'policy "gpu_budget"')
    assert bad.errored and bad.policies[0].passed is False


def test_a_per_change_policy_is_checked_once_per_change_its_filters_let_through(tmp_path):
    stack = write(tmp_path / "s", CLUSTER + ENDPOINT + """
        policy "small_endpoints" {
          kinds     = ["endpoint"]
          condition = change.after.replicas <= 1
          message   = "${change.address} asks for ${change.after.replicas} replicas"
        }
    """)
    plan = plan_of(stack)
    assert [(r.address, r.passed) for r in plan.policies] == [("endpoint.web", False)]
    [d] = failures(plan)
    assert d.summary == "Policy policy.small_endpoints failed for endpoint.web"
    assert d.address == "endpoint.web"
    assert d.detail.splitlines() == ["endpoint.web asks for 2 replicas",
                                     "  change.after.replicas = 2"]


def test_no_op_changes_are_not_checked_unless_asked(tmp_path):
    stack = write(tmp_path / "s", CLUSTER + """
        policy "tagged" { condition = contains(keys(change.tags), "owner") }
        policy "every" {
          actions   = ["no-op"]
          condition = change.kind == "training_cluster"
        }
    """)
    (stack / "main.hcl").write_text((stack / "main.hcl").read_text().replace(
        'condition = contains(keys(change.tags), "owner")', 'condition = true || change.kind == ""'))
    apply_all(stack)
    plan = plan_of(stack)
    assert [(r.policy, r.address) for r in plan.policies] == [
        ("policy.every", "training_cluster.gpu")]


def test_advisory_failures_are_warnings_and_do_not_stop_the_plan(tmp_path):
    stack = write(tmp_path / "s", CLUSTER + """
        policy "budget" {
          level     = "advisory"
          condition = plan.totals.gpus <= 4
        }
    """)
    plan = plan_of(stack)
    assert not plan.errored
    [w] = failures(plan, "warning")
    assert w.summary == "Advisory policy policy.budget failed"
    assert w.detail.splitlines()[0] == "The condition plan.totals.gpus <= 4 is false."


def test_enabled_and_level_are_environment_aware(tmp_path):
    stack = write(tmp_path / "s", CLUSTER + """
        policy "budget" {
          enabled   = env.name != "dev"
          level     = env.name == "production" ? "mandatory" : "advisory"
          condition = plan.totals.gpus <= 4
        }
    """, envs={"dev": "", "staging": "", "production": ""})
    assert plan_of(stack, env="dev").policies == ()
    staging = plan_of(stack, env="staging")
    assert not staging.errored and staging.policies[0].level == "advisory"
    production = plan_of(stack, env="production")
    assert production.errored and production.policies[0].level == "mandatory"


def test_a_condition_that_depends_on_values_known_after_apply_is_undecided(tmp_path):
    stack = write(tmp_path / "s", """
        endpoint "a" { model = "s3://bucket/model" }
        endpoint "web" {
          model = "s3://bucket/model"
          settings { peer = endpoint.a.id }
        }
        policy "url" { condition = try(change.after.settings.peer, "none") != "" }
    """)
    plan = plan_of(stack)
    assert not plan.errored
    assert [(r.address, r.passed) for r in plan.policies] == [("endpoint.a", True),
                                                              ("endpoint.web", None)]
    r = plan.policies[1]
    assert r.message == "depends on values known only after apply"
    [w] = failures(plan, "warning")
    assert w.summary == "policy.url cannot be decided for endpoint.web until apply"


def test_sensitive_values_never_reach_a_message_or_trace(tmp_path):
    stack = write(tmp_path / "s", ENDPOINT + """
        variable "tags" { default = {} }
        variable "token" {
          default   = "hunter2-secret"
          sensitive = true
        }
        endpoint "other" {
          model    = "s3://bucket/model"
          settings { token = var.token }
        }
        policy "no_token" {
          kinds     = ["endpoint"]
          condition = try(change.after.settings.token, "") == ""
          message   = "token is ${try(change.after.settings.token, "")}"
        }
    """)
    plan = plan_of(stack)
    [d] = failures(plan)
    text = f"{d.summary} {d.detail} {plan.policies}"
    assert "hunter2" not in text
    assert d.address == "endpoint.other"
    assert "(the message holds a sensitive value)" in d.detail


# ------------------------------------------------------------------ bad policies

def test_a_reference_to_an_unknown_attribute_is_a_located_error(tmp_path):
    stack = write(tmp_path / "s", CLUSTER + """
        policy "typo" {
          condition = plan.totals.gpu <= 8
        }
        policy "typo2" { condition = change.aftr.replicas > 0 }
    """)
    session = Session(stack, SessionOptions())
    diags = [d for d in validate_stack(session) if d.severity == "error"]
    assert [(d.summary, d.source.line, d.hint) for d in diags] == [
        ('policy.typo: plan.totals has no attribute "gpu"', line_of(stack, "totals.gpu <="),
         'Did you mean "gpus"?'),
        ('policy.typo2: change has no attribute "aftr"', line_of(stack, "change.aftr"),
         'Did you mean "after"?'),
    ]
    plan = plan_of(stack)   # plan reports the same and checks nothing else of them
    assert [d.summary for d in failures(plan)] == [d.summary for d in diags]
    assert plan.policies == ()


def test_a_malformed_condition_is_a_located_parse_error(tmp_path):
    stack = write(tmp_path / "s", CLUSTER + """
        policy "broken" {
          condition = plan.totals.gpus <=
        }
    """)
    with pytest.raises(DiagnosticError) as exc:
        Session(stack, SessionOptions())
    [d] = exc.value.diagnostics
    assert d.source.file.endswith("main.hcl")
    # the parser stops at the brace after the dangling operator
    assert d.source.line == line_of(stack, "gpus <=") + 1


def test_policy_blocks_are_checked_when_decoded(tmp_path):
    stack = write(tmp_path / "s", """
        policy "no_condition" { level = "mandatory" }
        policy "bad_kind" {
          kinds     = ["endpoints"]
          condition = true
        }
        policy "bad_arg" {
          condition = true
          severity  = "high"
        }
    """)
    with pytest.raises(DiagnosticError) as exc:
        Session(stack, SessionOptions())
    got = [(d.summary, d.source.line, d.hint) for d in exc.value.diagnostics]
    assert ('Policy "no_condition" needs a condition', line_of(stack, "no_condition"),
            "Add: condition = <an expression that must be true>, e.g. plan.totals.gpus <= 8.") in got
    assert ('Unknown kind "endpoints" in kinds', line_of(stack, '"endpoints"'),
            'Did you mean "endpoint"?') in got
    assert ('Unsupported argument "severity" in policy "bad_arg"', line_of(stack, "severity"),
            "Allowed here: actions, condition, description, enabled, kinds, level, "
            "message.") in got


def test_a_condition_that_is_not_a_bool_or_fails_to_evaluate_is_an_error(tmp_path):
    stack = write(tmp_path / "s", CLUSTER + """
        policy "number" { condition = plan.totals.gpus }
        policy "missing" {
          kinds     = ["training_cluster"]
          condition = change.after.settings.zone == "a"
        }
        policy "level" {
          level     = "strict"
          condition = true
        }
    """)
    plan = plan_of(stack)
    got = sorted((d.summary, d.source.line) for d in failures(plan))
    assert got == [
        ("policy.level: level must be \"advisory\" or \"mandatory\"",
         line_of(stack, '"strict"')),
        ("policy.missing could not be evaluated for training_cluster.gpu: "
         "Unsupported attribute", line_of(stack, "settings.zone")),
        ("policy.number: the condition must be true or false",
         line_of(stack, 'policy "number"')),
    ]
    missing = next(d for d in failures(plan) if "missing" in d.summary)
    assert "try(" in missing.hint


# ------------------------------------------------------------------ the shipped library

def test_library_allowed_instance_types(tmp_path):
    text = CLUSTER + ENDPOINT + guardrails(
        allowed_instance_types='["ml.g5.xlarge", "ml.p5.48xlarge"]')
    stack = write(tmp_path / "s", text)
    assert not plan_of(stack).errored
    [d] = failures(plan_of(stack, vars=["endpoint_type=ml.p4d.24xlarge"]))
    assert d.summary == ("Policy module.guard.policy.allowed_instance_types failed for "
                         "endpoint.web")
    assert d.detail.splitlines()[0] == (
        "endpoint.web uses instance type ml.p4d.24xlarge, which is not one of: "
        "ml.g5.xlarge, ml.p5.48xlarge")


def test_library_gpu_budget_per_environment(tmp_path):
    stack = write(tmp_path / "s", CLUSTER + guardrails(gpu_budgets="{ production = 8 }"),
                  envs={"production": 'variable "nodes" { value = 2 }\n', "staging":
                        'variable "nodes" { value = 2 }\n'})
    assert not plan_of(stack, env="staging").errored   # no budget there
    ok = plan_of(stack, env="production", vars=["nodes=1"])
    assert not ok.errored and [r.passed for r in ok.policies if "gpu" in r.policy] == [True]
    [d] = failures(plan_of(stack, env="production"))
    assert d.summary == "Policy module.guard.policy.gpu_budget failed"
    assert d.detail.splitlines()[0] == "the plan requests 16 GPUs in production; the budget is 8"


def test_library_required_tags(tmp_path):
    stack = write(tmp_path / "s", CLUSTER + guardrails(required_tags='["team", "cost-center"]'))
    good = plan_of(stack, vars=['tags={"team":"a","cost-center":"42"}'])
    assert not good.errored
    [d] = failures(plan_of(stack))
    assert d.summary == "Policy module.guard.policy.required_tags failed for training_cluster.gpu"
    assert d.detail.splitlines()[0] == ("training_cluster.gpu lacks the required tag(s): "
                                        "cost-center")


def test_library_public_endpoint_needs_auth(tmp_path):
    stack = write(tmp_path / "s", ENDPOINT + 'variable "tags" { default = {} }\n' + guardrails())
    assert not plan_of(stack).errored
    assert not plan_of(stack, vars=["public=true", "auth=oidc"]).errored
    [d] = failures(plan_of(stack, vars=["public=true"]))
    assert d.summary == "Policy module.guard.policy.public_endpoint_auth failed for endpoint.web"
    assert d.detail.splitlines()[0] == ("endpoint.web is public (settings.public = true) but "
                                        "sets no settings.auth")


def test_library_prevent_destroy_on_production_endpoints(tmp_path):
    stack = write(tmp_path / "s", ENDPOINT + 'variable "tags" { default = {} }\n' + guardrails(),
                  envs={"production": "", "staging": ""})
    apply_all(stack, env="production")
    apply_all(stack, env="staging")
    assert not plan_of(stack, env="production").errored   # nothing destroyed: passes
    destroy = plan_of(stack, env="production", mode="destroy")
    [d] = failures(destroy)
    assert d.summary == ("Policy module.guard.policy.protect_production_endpoints failed for "
                         "endpoint.web")
    assert d.detail.splitlines()[0] == ("endpoint.web would be destroyed in production, a "
                                        "protected environment")
    assert not plan_of(stack, env="staging", mode="destroy").errored


def test_library_levels_turn_a_policy_advisory(tmp_path):
    stack = write(tmp_path / "s", CLUSTER + guardrails(
        required_tags='["owner"]', levels='{ required_tags = "advisory" }'))
    plan = plan_of(stack)
    assert not plan.errored
    [w] = failures(plan, "warning")
    assert w.summary == ("Advisory policy module.guard.policy.required_tags failed for "
                         "training_cluster.gpu")


def test_library_monthly_cost_ceiling(tmp_path):
    # ml.g5.xlarge at 1.0 USD an hour, 2 replicas: 2 × 730 = 1460 USD a month
    stack = write(tmp_path / "s", ENDPOINT + 'variable "tags" { default = {} }\n'
                  + guardrails(max_monthly_cost="var.ceiling")
                  + 'variable "ceiling" {\n  type    = number\n  default = 2000\n}\n')
    priced = (stack / "main.hcl").read_text().replace(
        'provider "memory" { store = ".mlform/memory.json" }',
        'provider "memory" {\n  store  = ".mlform/memory.json"\n'
        '  prices = { "ml.g5.xlarge" = 1.0 }\n}')
    (stack / "main.hcl").write_text(priced)
    ok = plan_of(stack)
    assert not ok.errored
    assert [r.passed for r in ok.policies if r.policy.endswith("monthly_cost_ceiling")] == [True]
    [d] = failures(plan_of(stack, vars=["ceiling=1000"]))
    assert d.summary == "Policy module.guard.policy.monthly_cost_ceiling failed"
    assert d.detail.splitlines()[0] == ("the plan would cost up to 1460.00 USD a month in "
                                        "default; the ceiling is 1000.00 USD")
    # a resource whose price is unknown is named, never counted as free: the ceiling
    # cannot be shown to hold
    (stack / "main.hcl").write_text(priced.replace('"ml.g5.xlarge" = 1.0', '"ml.m5.large" = 1.0'))
    [d] = failures(plan_of(stack))
    assert d.detail.splitlines()[0] == ("the plan would cost up to 0.00 USD a month in default "
                                        "plus the unknown cost of endpoint.web; the ceiling is "
                                        "2000.00 USD")


def test_policies_in_yaml_files_work_the_same(tmp_path):
    stack = write(tmp_path / "s", CLUSTER)
    (stack / "guard.mlform.yaml").write_text(
        "policy:\n"
        "  budget:\n"
        "    kinds: [training_cluster]\n"
        '    condition: "${change.after.gpus_per_node * change.after.nodes <= 4}"\n'
        '    message: "${change.address} has ${change.after.gpus_per_node} GPUs per node"\n')
    [d] = failures(plan_of(stack))
    assert d.summary == "Policy policy.budget failed for training_cluster.gpu"
    assert d.source.file.endswith("guard.mlform.yaml") and d.source.line == 2
    assert d.detail.splitlines()[0] == "training_cluster.gpu has 8 GPUs per node"
