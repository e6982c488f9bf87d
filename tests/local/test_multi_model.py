"""`stacks/multi-model`: the `tabular-classifier` module called twice (fraud and churn).

The stack and the module are copied side by side into tmp (`stacks/multi-model`,
`modules/tabular-classifier`), so the module's relative `source` resolves as in the repo.
The plan runs on the memory provider (`--env memory`); the apply runs for real on
`local` (two torch runs, two endpoint servers, two monitor schedulers) and is destroyed,
with a check that nothing of it is left running.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ._cli import REPO, copy_stack, infer, mlform, resource, stack_processes, state, teardown

MODULE = "modules/tabular-classifier"
FRAUD = [[4.5, 13, 0.1, 0.8], [480.0, 3, 0.95, 140.0]]   # amount, hour, merchant_risk, distance
CHURN = [[60, 25.0, 0, 0], [2, 110.0, 6, 1]]             # tenure, charges, calls, monthly


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    directory = copy_stack(REPO / "stacks" / "multi-model", tmp_path / "stacks" / "multi-model")
    shutil.copytree(REPO / MODULE, tmp_path / MODULE,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, str(directory / "make_data.py")], check=True,
                   capture_output=True)
    return directory


def changes(run) -> dict[str, dict]:
    return {c["address"]: c for c in run.json()["resource_changes"]}


def test_plan_on_the_memory_provider_has_both_chains(stack):
    run = mlform(stack, "plan", "--env", "memory", "--format", "json")
    assert run.code == 0, run
    rc = changes(run)
    assert run.json()["summary"] == {"add": 12, "change": 0, "destroy": 0}
    for name in ("fraud", "churn"):
        for kind, block in [("dataset", "data"), ("training_cluster", "compute"),
                            ("pipeline", "train"), ("model", "classifier"),
                            ("endpoint", "classifier"), ("monitor", "drift")]:
            change = rc[f"module.{name}.{kind}.{block}"]
            assert change["change"]["actions"] == ["create"]
            assert change["provider_name"] == "memory"
    fraud = rc["module.fraud.pipeline.train"]["change"]["after"]
    churn = rc["module.churn.pipeline.train"]["change"]["after"]
    # the module's train.py, handed to the provider relative to the stack
    assert fraud["entrypoint"] == "train.py"
    assert fraud["entrypoint_path"] == "../../modules/tabular-classifier/train.py"
    assert fraud["hyperparameters"]["features"] == ""
    assert churn["hyperparameters"]["features"] == \
        "tenure_months,monthly_charges,support_calls,monthly_contract"
    assert fraud["hyperparameters"]["epochs"] == 2     # environments/memory.hcl
    assert fraud["gate"] == {"metric": "accuracy", "min": 0.85}
    assert churn["gate"] == {"metric": "accuracy", "min": 0.8}
    assert fraud["fingerprint"] != churn["fingerprint"]
    data = rc["module.churn.dataset.data"]["change"]["after"]
    assert data["source"] == "./data/churn.csv"
    assert data["tags"] == {"model": "churn", "team": "growth"}
    assert not (stack / ".mlform" / "local").exists(), "a memory plan touched the local provider"


def _metadata(url: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return json.loads(response.read())


def test_apply_on_local_serves_both_models_then_destroys(stack):
    pytest.importorskip("torch")
    pytest.importorskip("fastapi")
    try:
        applied = mlform(stack, "apply", "--auto-approve")
        assert applied.code == 0, applied
        outputs = {k: v["value"] for k, v in state(stack)["outputs"].items()}
        assert outputs["model_versions"] == {"fraud": 1, "churn": 1}
        assert outputs["accuracy"]["fraud"] >= 0.85 and outputs["accuracy"]["churn"] >= 0.8
        assert outputs["fraud_url"] != outputs["churn_url"]

        # each endpoint serves its own model, with the features of its own csv
        assert _metadata(outputs["fraud_url"])["inputs"][0]["features"] == \
            ["amount", "hour", "merchant_risk", "distance_km"]
        assert _metadata(outputs["churn_url"])["inputs"][0]["features"] == \
            ["tenure_months", "monthly_charges", "support_calls", "monthly_contract"]
        for url, rows in ((outputs["fraud_url"], FRAUD), (outputs["churn_url"], CHURN)):
            answer = infer(url, rows)
            assert answer["model_version"] == "1"
            p = answer["outputs"][0]["data"]
            assert answer["outputs"][0]["shape"] == [2, 2]
            assert p[3] > p[1], "the second row is the risky one"
        assert len(stack_processes(stack)) == 4         # two servers, two schedulers

        again = mlform(stack, "plan", "--detailed-exitcode")
        assert again.code == 0, again

        # new churn data re-runs the churn chain only
        subprocess.run([sys.executable, str(stack / "make_data.py"), "--only", "churn",
                        "--seed", "3"], check=True, capture_output=True)
        planned = mlform(stack, "plan", "--format", "json")
        assert planned.code == 0, planned
        rc = changes(planned)
        assert any("must be re-run: module.churn.dataset.data content changed" in r
                   for r in rc["module.churn.pipeline.train"]["reasons"])
        assert rc["module.churn.endpoint.classifier"]["change"]["actions"] == ["update"]
        assert {a for a, c in rc.items() if a.startswith("module.fraud.")
                and c["change"]["actions"] != ["no-op"]} == set()
        assert resource(stack, "module.fraud.endpoint.classifier")["model_version"] == 1
    finally:
        left = teardown(stack)
    assert not left, f"still running after destroy: {left}"
    assert state(stack)["resources"] == []
