"""Cost in the plan: per-resource estimates, totals, deltas, ranges, runs and unknowns.

Plans are made through the CLI in-process (typer's CliRunner) on memory stacks whose
provider block sets `prices`, so every figure below is known exactly; the SageMaker
table is checked through its provider's pricing module (pure, no AWS).
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlform.cli import app
from mlform.cost import CostReport, attach_cost
from mlform.plan.model import Plan
from mlform.providers.kit.pricing import PriceTable, pipeline_basis, table_cost_basis
from mlform.providers.kubernetes.config import KubernetesConfig
from mlform.providers.local.config import LocalConfig
from mlform.providers.sagemaker import pricing as sagemaker_pricing
from mlform.views import plan_from_json, plan_to_json, render_plan, render_plan_markdown
from mlform.views.cost import money

PROVIDER = """
provider "memory" {
  store  = ".mlform/memory.json"
  prices = { "ml.m5.large" = 0.115, "ml.g5.xlarge" = 1.5, "nvidia-h100" = 12.5 }
}
"""


def stack(tmp_path: Path, body: str) -> Path:
    root = tmp_path / "stack"
    root.mkdir(exist_ok=True)
    (root / "main.hcl").write_text(PROVIDER + textwrap.dedent(body))
    (root / "train.py").write_text("print('training')\n")
    return root


def cli(root: Path, *args: str) -> tuple[int, str]:
    cwd = os.getcwd()
    try:
        result = CliRunner(env={"NO_COLOR": "1", "MLFORM_DEBUG": None, "COLUMNS": "200"}).invoke(
            app, ["-C", str(root), *args], catch_exceptions=False)
    finally:
        os.chdir(cwd)   # -C changes this process's working directory
    return result.exit_code, result.output   # stdout, and stderr's diagnostics after it


def plan_json(root: Path, *args: str) -> dict:
    code, out = cli(root, "plan", "--format", "json", *args)
    assert code == 0, out
    return json.loads(out)


def apply(root: Path) -> None:
    code, out = cli(root, "apply", "--auto-approve")
    assert code == 0, out


def resource(doc: dict, address: str) -> dict:
    found = [r for r in doc["cost"]["resources"] if r["address"] == address]
    assert len(found) == 1, doc["cost"]
    return found[0]


MODEL = """
model "m" {
  artifact = "file:///models/m"
}
"""


# ------------------------------------------------------------------ golden figures


def test_endpoint_cost_is_price_times_replicas(tmp_path):
    root = stack(tmp_path, MODEL + """
        endpoint "api" {
          model         = model.m
          replicas      = 2
          instance_type = "ml.m5.large"
        }
    """)
    doc = plan_json(root)
    assert resource(doc, "endpoint.api") == {
        "address": "endpoint.api", "kind": "endpoint", "provider": "memory",
        "instance_type": "ml.m5.large", "instances": {"min": 2, "max": 2},
        "hourly": {"before": 0.0, "before_min": 0.0, "after": 0.23, "after_min": 0.23},
        "monthly": {"before": 0.0, "after_min": 167.9, "after_max": 167.9,
                    "delta_min": 167.9, "delta_max": 167.9},
        "per_run": None, "unknown": None,
    }
    assert doc["cost"]["currency"] == "USD"
    assert doc["cost"]["total"] == {
        "hourly_before": 0.0, "hourly_after_min": 0.23, "hourly_after": 0.23,
        "monthly_before": 0.0, "monthly_after_min": 167.9, "monthly_after_max": 167.9,
        "monthly_delta_min": 167.9, "monthly_delta_max": 167.9,
        "per_run_after": 0.0, "per_run_planned": 0.0, "unknown": []}
    assert doc["cost"]["prices"] == [
        {"provider": "memory", "source": 'provider "memory" prices', "date": None}]


def test_only_priced_kinds_are_listed(tmp_path):
    root = stack(tmp_path, MODEL + """
        dataset "d" {
          source = "train.py"
          format = "other"
        }
        endpoint "api" {
          model         = model.m
          instance_type = "ml.m5.large"
        }
    """)
    doc = plan_json(root)
    assert [r["address"] for r in doc["cost"]["resources"]] == ["endpoint.api"]


def test_no_prices_no_cost_section(tmp_path):
    root = tmp_path / "plain"
    root.mkdir()
    (root / "main.hcl").write_text('provider "memory" { store = ".mlform/memory.json" }\n'
                                   + MODEL + 'endpoint "api" { model = model.m }\n')
    doc = plan_json(root)
    assert "cost" not in doc
    code, out = cli(root, "plan")
    assert code == 0 and "Cost estimate" not in out


def test_delta_after_a_replica_change(tmp_path):
    body = MODEL + """
        endpoint "api" {
          model         = model.m
          replicas      = REPLICAS
          instance_type = "ml.m5.large"
        }
    """
    root = stack(tmp_path, body.replace("REPLICAS", "1"))
    apply(root)
    (root / "main.hcl").write_text(PROVIDER + textwrap.dedent(body.replace("REPLICAS", "3")))
    doc = plan_json(root)
    api = resource(doc, "endpoint.api")
    assert api["hourly"]["before"] == 0.115 and api["hourly"]["after"] == 0.345
    assert api["monthly"] == {"before": 83.95, "after_min": 251.85, "after_max": 251.85,
                              "delta_min": 167.9, "delta_max": 167.9}
    assert doc["cost"]["total"]["monthly_before"] == 83.95
    assert doc["cost"]["total"]["monthly_delta_max"] == 167.9
    code, out = cli(root, "plan")
    assert "endpoint.api  ml.m5.large × 3: $0.345/h, $251.85/mo (+$167.90/mo)" in out
    assert "change +$167.90/mo (now $83.95/mo)" in out


def test_destroy_plan_saves_the_whole_cost(tmp_path):
    root = stack(tmp_path, MODEL + """
        endpoint "api" {
          model         = model.m
          instance_type = "ml.g5.xlarge"
        }
    """)
    apply(root)
    doc = plan_json(root, "--destroy")
    api = resource(doc, "endpoint.api")
    assert api["monthly"]["after_max"] == 0.0 and api["monthly"]["delta_max"] == -1095.0
    assert doc["cost"]["total"]["monthly_delta_min"] == -1095.0


def test_autoscaling_is_a_range(tmp_path):
    root = stack(tmp_path, MODEL + """
        endpoint "api" {
          model         = model.m
          instance_type = "ml.g5.xlarge"
          autoscaling   = { min = 1, max = 4 }
        }
    """)
    doc = plan_json(root)
    api = resource(doc, "endpoint.api")
    assert api["instances"] == {"min": 1, "max": 4}
    assert (api["hourly"]["after_min"], api["hourly"]["after"]) == (1.5, 6.0)
    assert (api["monthly"]["after_min"], api["monthly"]["after_max"]) == (1095.0, 4380.0)
    assert (doc["cost"]["total"]["monthly_after_min"],
            doc["cost"]["total"]["monthly_after_max"]) == (1095.0, 4380.0)
    code, out = cli(root, "plan")
    assert "ml.g5.xlarge × 1–4: $1.50–$6.00/h, $1,095.00–$4,380.00/mo" in out


# ------------------------------------------------------------------ training runs

PIPELINE = """
training_cluster "gpu" {
  accelerator         = "nvidia-h100"
  gpus_per_node       = 1
  nodes               = 2
  max_runtime_seconds = 7200
}
pipeline "train" {
  cluster    = training_cluster.gpu
  entrypoint = "train.py"
  settings {
    metrics = { accuracy = 0.97, run_seconds = 1800 }
  }
}
"""


def test_training_cost_from_max_runtime_then_from_the_recorded_duration(tmp_path):
    root = stack(tmp_path, PIPELINE)
    first = resource(plan_json(root), "pipeline.train")
    # no run yet: the cluster's limit, 2 nodes × $12.50 × 2 h
    assert first["per_run"] == {"before": 0.0, "after": 50.0, "run_seconds": 7200.0,
                                "duration_source": "max_runtime", "will_run": True}
    assert first["hourly"]["after"] == 0.0 and first["instance_type"] == "nvidia-h100"
    assert first["instances"] == {"min": 2, "max": 2}
    apply(root)
    # the run recorded 1800 s (its metrics): 2 nodes × $12.50 × 0.5 h
    again = plan_json(root)
    run = resource(again, "pipeline.train")["per_run"]
    assert run == {"before": 12.5, "after": 12.5, "run_seconds": 1800.0,
                   "duration_source": "measured", "will_run": False}
    assert again["cost"]["total"]["per_run_after"] == 12.5
    assert again["cost"]["total"]["per_run_planned"] == 0.0
    code, out = cli(root, "plan")
    assert "pipeline.train  nvidia-h100 × 2 nodes: $12.50 per run (last run took 30 min)" in out


def test_a_run_without_any_duration_is_unknown():
    table = PriceTable({"cpu": 1.0}, source="test")
    basis = pipeline_basis({"cluster": {"nodes": 1}}, None, table)
    assert basis.hourly == 1.0 and basis.run_seconds is None
    assert "no recorded run duration" in basis.unknown
    timed = pipeline_basis({"timeout_seconds": 600, "cluster": {"max_runtime_seconds": 3600}},
                           None, table)
    assert (timed.run_seconds, timed.duration_source) == (600, "max_runtime")


# ------------------------------------------------------------------ unknown, never zero


def test_missing_instance_type_is_unknown_and_named(tmp_path):
    root = stack(tmp_path, MODEL + """
        endpoint "known" {
          model         = model.m
          instance_type = "ml.m5.large"
        }
        endpoint "odd" {
          model         = model.m
          instance_type = "ml.x9.huge"
        }
    """)
    doc = plan_json(root)
    odd = resource(doc, "endpoint.odd")
    assert odd["unknown"] == "no price for ml.x9.huge in the memory provider's prices"
    assert odd["hourly"]["after"] is None and odd["monthly"]["after_max"] is None
    assert odd["monthly"]["delta_max"] is None
    assert doc["cost"]["total"]["unknown"] == ["endpoint.odd"]
    assert doc["cost"]["total"]["monthly_after_max"] == 83.95   # the known part only
    code, out = cli(root, "plan")
    line = next(l for l in out.splitlines() if l.strip().startswith("endpoint.odd"))
    assert "unknown (no price for ml.x9.huge in the memory provider's prices)" in line
    assert "$0" not in line
    assert "unknown: endpoint.odd (not in the total)" in out
    code, md = cli(root, "plan", "--format", "markdown")
    assert "Cost unknown for `endpoint.odd`" in md
    row = next(l for l in md.splitlines() if l.startswith("| `endpoint.odd`"))
    assert "unknown (no price for ml.x9.huge" in row and "$0" not in row


def test_negative_price_is_a_located_config_error(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "main.hcl").write_text(
        'provider "memory" {\n  prices = { "cpu" = -1 }\n}\n' + MODEL)
    code, text = cli(root, "plan")
    assert code == 1
    assert "prices" in text and "negative" in text and "main.hcl:" in text
    assert "Traceback" not in text


# ------------------------------------------------------------------ renderers, round trip


def test_saved_plan_round_trips_the_cost(tmp_path):
    root = stack(tmp_path, MODEL + PIPELINE + """
        endpoint "api" {
          model         = model.m
          instance_type = "ml.g5.xlarge"
          autoscaling   = { min = 2, max = 3 }
        }
        endpoint "odd" {
          model         = model.m
          instance_type = "ml.x9.huge"
        }
    """)
    doc = plan_json(root)
    plan = plan_from_json(doc)
    assert isinstance(plan.cost, CostReport)
    assert plan_to_json(plan)["cost"] == doc["cost"]
    code, out = cli(root, "plan", "--out", "saved.plan")
    assert code == 0, out
    code, shown = cli(root, "show", "saved.plan", "--json")
    assert json.loads(shown)["cost"] == doc["cost"]


def test_markdown_table(tmp_path):
    root = stack(tmp_path, MODEL + PIPELINE + """
        endpoint "api" {
          model         = model.m
          instance_type = "ml.g5.xlarge"
          autoscaling   = { min = 1, max = 4 }
        }
    """)
    code, md = cli(root, "plan", "--format", "markdown")
    assert code == 0, md
    section = md[md.index("#### Cost estimate (USD)"):].splitlines()
    assert section[2] == "| resource | instances | hourly | monthly | monthly change | per run |"
    rows = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]]
            for l in section[4:] if l.startswith("|")}
    assert rows["`endpoint.api`"] == ["ml.g5.xlarge × 1–4", "$1.50–$6.00/h",
                                      "$1,095.00–$4,380.00/mo", "+$1,095.00–+$4,380.00/mo", ""]
    assert rows["`pipeline.train`"] == ["nvidia-h100 × 2 nodes", "", "", "",
                                        "$50.00 (at most 2 h)"]
    assert rows["**total**"] == ["", "$1.50–$6.00/h", "$1,095.00–$4,380.00/mo",
                                 "+$1,095.00–+$4,380.00/mo", "$50.00"]
    assert all(len(cells) == 5 for cells in rows.values())


def test_money():
    assert money(1.845) == "$1.85"
    assert money(0.115) == "$0.115"
    assert money(1234.5) == "$1,234.50"
    assert money(-3.2, signed=True) == "-$3.20"
    assert money(None) == "unknown"


def test_attach_cost_keeps_the_plan_and_skips_unpriced_changes():
    plan = Plan(changes=())
    with_cost = attach_cost(plan, providers=None, state=None)
    assert with_cost.cost == CostReport() and with_cost.changes == ()
    assert "cost" not in plan_to_json(with_cost)
    assert "Cost estimate" not in render_plan(with_cost)
    assert "Cost estimate" not in render_plan_markdown(with_cost)


# ------------------------------------------------------------------ providers' prices


def test_sagemaker_table_prices_endpoints_and_runs():
    endpoint = sagemaker_pricing.cost_basis("us-east-1", "endpoint", {"replicas": 2}, None)
    assert (endpoint.instance_type, endpoint.hourly, endpoint.instances_max) == (
        "ml.m5.large", 0.115, 2)   # the provider's default instance type
    doc = sagemaker_pricing.price_document()
    assert doc["date"] and doc["source"].startswith("https://aws.amazon.com/")
    assert endpoint.date == doc["date"] and endpoint.source == doc["source"]
    run = sagemaker_pricing.cost_basis(
        "us-east-1", "pipeline",
        {"cluster": {"accelerator": "nvidia-a10g", "gpus_per_node": 1, "nodes": 2}}, None)
    assert (run.instance_type, run.per_run, run.run_seconds) == ("ml.g5.xlarge", True, 86400)


def test_sagemaker_table_missing_type_or_region_is_unknown():
    h100 = sagemaker_pricing.cost_basis(
        "us-east-1", "pipeline",
        {"cluster": {"accelerator": "nvidia-h100", "gpus_per_node": 8, "nodes": 1,
                     "instance_type": "ml.p5.48xlarge"}},
        {"metrics": {"run_seconds": 600}})
    assert h100.hourly is None
    assert h100.unknown.startswith("no price for ml.p5.48xlarge in the SageMaker training")
    elsewhere = sagemaker_pricing.cost_basis("ap-south-2", "endpoint", {}, None)
    assert elsewhere.hourly is None and "no inference prices for ap-south-2" in elsewhere.unknown
    assert sagemaker_pricing.cost_basis("us-east-1", "dataset", {}, None) is None


def test_sagemaker_table_covers_the_provider_defaults():
    table = sagemaker_pricing.price_document()["regions"]["us-east-1"]
    assert "ml.m5.large" in table["inference"]      # endpoints' default
    assert "ml.m5.xlarge" in table["training"]      # pipelines' default compute
    assert all(price > 0 for use in table.values() for price in use.values())


def test_kubernetes_and_local_prices_come_from_their_blocks():
    config = KubernetesConfig(storage="s3://bucket", prices={"gpu-h100": 12.5, "cpu": 0.05})
    from mlform.providers.kit.pricing import config_table
    table = config_table("kubernetes", config.prices)
    run = table_cost_basis(table, "pipeline",
                           {"cluster": {"instance_type": "gpu-h100", "nodes": 4,
                                        "max_runtime_seconds": 3600}}, None)
    assert (run.hourly, run.instances_max, run.run_seconds) == (12.5, 4, 3600)
    served = table_cost_basis(table, "endpoint", {"replicas": 3}, None)
    assert (served.instance_type, served.hourly) == ("cpu", 0.05)
    missing = table_cost_basis(table, "endpoint", {"instance_type": "gpu-a100"}, None)
    assert missing.hourly is None and "the kubernetes provider's prices" in missing.unknown
    assert table_cost_basis(config_table("local", LocalConfig().prices), "endpoint", {},
                            None) is None          # local: nothing unless prices are set
    with pytest.raises(ValueError, match="negative"):
        LocalConfig(prices={"cpu": -0.1})


def test_values_known_only_after_apply_make_the_cost_unknown():
    from mlform.providers.base import UNKNOWN
    table = PriceTable({"ml.m5.large": 0.115}, source="test")
    basis = table_cost_basis(table, "endpoint",
                             {"instance_type": "ml.m5.large", "replicas": UNKNOWN}, None)
    assert basis.hourly is None and basis.unknown == "replicas known only after apply"
    run = table_cost_basis(table, "pipeline",
                           {"cluster": {"instance_type": UNKNOWN, "max_runtime_seconds": 60}},
                           None)
    assert run.hourly is None and "known only after apply" in run.unknown


def test_the_sagemaker_provider_prices_from_its_region(tmp_path):
    from mlform.providers.base import ProviderContext
    from mlform.providers.sagemaker import SageMakerProvider
    config = {"region": "us-west-2", "role_arn": "arn:aws:iam::123456789012:role/x",
              "bucket": "bucket"}
    provider = SageMakerProvider(ProviderContext(
        name="sagemaker", alias=None, stack="s", env="default", stack_dir=tmp_path,
        config=config))
    try:
        basis = provider.cost_basis(
            "endpoint", {"instance_type": "ml.g5.xlarge", "autoscaling": {"min": 1, "max": 3}})
        assert (basis.hourly, basis.instances_min, basis.instances_max) == (1.408, 1, 3)
        assert provider.cost_basis("model", {}) is None
        assert provider.cost_basis("dataset", {}) is None
    finally:
        provider.close()


def test_sensitive_values_never_reach_the_cost_section(tmp_path):
    secret = "hunter2-cost-SECRET"
    root = stack(tmp_path, MODEL + """
        variable "token" {
          type      = string
          sensitive = true
        }
        endpoint "api" {
          model         = model.m
          instance_type = "ml.m5.large"
          tags          = { token = var.token }
        }
    """)
    code, out = cli(root, "plan", "--format", "json", "--var", f"token={secret}")
    assert code == 0, out
    assert secret not in out
    assert resource(json.loads(out), "endpoint.api")["hourly"]["after"] == 0.115
