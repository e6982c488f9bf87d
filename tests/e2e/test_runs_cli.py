"""`mlform runs list|show|compare` and `mlform lineage` through the CLI, on the memory
provider: two applies with different hyperparameters leave two runs; every JSON form is
checked against its schema (`mlform.runs.json_schemas`); mistakes are diagnostics."""

from __future__ import annotations

import jsonschema
import pytest

from mlform.runs import json_schemas

from .harness import memory_provider

pytestmark = pytest.mark.timeout(300)

STACK = memory_provider() + """
variable "lr" {
  type    = number
  default = 0.1
}
dataset "train" {
  source = "data.csv"
  format = "csv"
}
training_cluster "cpu" {
  accelerator = "cpu"
}
pipeline "train" {
  cluster         = training_cluster.cpu
  entrypoint      = "train.py"
  inputs          = { train = dataset.train }
  hyperparameters = { lr = var.lr, epochs = 3 }
  settings {
    metrics = { accuracy = 0.9 }
  }
}
model "clf" {
  artifact = pipeline.train.model_uri
  stage    = "production"
}
endpoint "clf" {
  model = model.clf
}
monitor "drift" {
  endpoint = endpoint.clf
  baseline = dataset.train
  checks   = [{ metric = "psi", threshold = 0.2 }]
  schedule = "0 * * * *"
}
"""
SCHEMAS = json_schemas()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from .harness import make_stack, run_mlform
    stack = make_stack(tmp_path_factory.mktemp("runs"), STACK,
                       files={"data.csv": "a,b\n1,2\n", "train.py": "print(1)\n"})
    for lr in ("0.1", "0.2"):
        applied = run_mlform("apply", "--auto-approve", "--var", f"lr={lr}", cwd=stack)
        assert applied.code == 0, applied
    listed = run_mlform("runs", "list", "--json", cwd=stack)
    assert listed.code == 0, listed
    jsonschema.validate(listed.json(), SCHEMAS["runs list"])
    return stack, [r["run_id"] for r in listed.json()["runs"]]


def test_runs_list_and_show(two_runs, mlform):
    stack, (first, second) = two_runs
    listed = mlform("runs", "list", cwd=stack)
    assert listed.code == 0 and first in listed.stdout and second in listed.stdout
    assert mlform("runs", "list", "pipeline.other", "--json", cwd=stack).json() == {"runs": []}
    shown = mlform("runs", "show", second[:10], "--json", cwd=stack)
    assert shown.code == 0, shown
    jsonschema.validate(shown.json(), SCHEMAS["runs show"])
    assert shown.json()["parameters"] == {"lr": 0.2, "epochs": 3}
    human = mlform("runs", "show", second, cwd=stack)
    assert f"Run {second} of pipeline.train" in human.stdout and "lr = 0.2" in human.stdout


def test_runs_compare_in_every_format(two_runs, mlform, tmp_path):
    stack, runs = two_runs
    as_json = mlform("runs", "compare", *runs, "--format", "json", cwd=stack)
    assert as_json.code == 0, as_json
    jsonschema.validate(as_json.json(), SCHEMAS["runs compare"])
    rows = {row["field"]: row for row in as_json.json()["rows"]}
    assert rows["param.lr"]["differs"] and rows["param.lr"]["values"] == [0.1, 0.2]
    assert not rows["param.epochs"]["differs"] and not rows["data.train"]["differs"]
    human = mlform("runs", "compare", *runs, cwd=stack).stdout
    assert "* param.lr" in human and "  param.epochs" in human
    markdown = mlform("runs", "compare", *runs, "--format", "markdown", cwd=stack).stdout
    assert "| **param.lr** ⚠ |" in markdown
    page = tmp_path / "compare.html"
    wrote = mlform("runs", "compare", *runs, "--format", "html", "--out", page, cwd=stack)
    assert wrote.code == 0, wrote
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "accuracy across the runs" in html
    assert 'class="differs"' in html


def test_lineage_of_the_endpoint_and_of_a_run(two_runs, mlform):
    stack, (first, second) = two_runs
    found = mlform("lineage", "endpoint.clf", "--json", cwd=stack)
    assert found.code == 0, found
    doc = found.json()
    jsonschema.validate(doc, SCHEMAS["lineage"])
    assert doc["run"]["run_id"] == second
    assert {n["address"] for n in doc["upstream"]} >= {"dataset.train", "pipeline.train", "model.clf"}
    assert [n["address"] for n in doc["downstream"]] == ["monitor.drift"]
    human = mlform("lineage", "endpoint.clf", cwd=stack).stdout
    assert f"run {second}" in human and "data train <- dataset.train sha256" in human
    old = mlform("lineage", first, "--json", cwd=stack).json()
    assert old["kind"] == "run" and old["downstream"] == []


@pytest.mark.parametrize("args, message", [
    (["runs", "show", "run-nope"], 'No run "run-nope"'),
    (["runs", "compare", "RUN0", "RUN0"], "at least two different runs"),
    (["runs", "compare", "RUN0", "RUN1", "--metric", "auc"], 'reported the metric "auc"'),
    (["lineage", "model.nope"], "neither a resource in the state nor a recorded run"),
    (["lineage", "model.clf@9"], "not 9"),
])
def test_mistakes_are_diagnostics(two_runs, mlform, args, message):
    stack, runs = two_runs
    args = [runs[int(a[3:])] if a.startswith("RUN") else a for a in args]
    failed = mlform(*args, cwd=stack)
    assert failed.code == 1 and message in failed.stderr, failed
    assert "Traceback" not in failed.output
