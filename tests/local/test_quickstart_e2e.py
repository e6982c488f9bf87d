"""The quickstart stack, end to end on the `local` provider, through the CLI.

One copy of `stacks/quickstart` is applied once for the module (a real torch training
run, a registry version, an endpoint server and a monitor scheduler) and taken through a
life in order: predictions and a no-op plan; a new dataset that re-runs the pipeline and
rolls version 2 out; a killed server found by `drift` and restarted by `apply`; drifted
traffic that the monitor reports and that makes the next plan re-train; a gate the model
cannot meet; and `destroy`.  The module finalizer destroys the stack again and fails if
any server or scheduler of it is left running.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from _waiting import wait_until

pytest.importorskip("torch")
pytest.importorskip("fastapi")

from ._cli import (  # noqa: E402
    REPO, alive, copy_stack, infer, mlform, port_free, recorded_pids, resource, stack_processes,
    state, teardown, wait_gone,
)

FEATURES = ["amount", "hour", "merchant_risk", "distance_km"]
EXAMPLES = [[4.5, 13, 0.1, 0.8], [62.0, 19, 0.2, 3.0], [480.0, 3, 0.95, 140.0]]


def make_data(stack: Path, *args: str) -> None:
    subprocess.run([sys.executable, str(stack / "make_data.py"), *args], check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The quickstart copy, applied; destroyed (and checked empty) after the module."""
    directory = copy_stack(REPO / "stacks" / "quickstart",
                           tmp_path_factory.mktemp("quickstart") / "stack")
    make_data(directory)
    try:
        applied = mlform(directory, "apply", "--auto-approve")
        assert applied.code == 0, applied
        yield directory
    finally:
        left = teardown(directory)
        assert not left, f"still running after destroy: {left}"


def endpoint_url(stack: Path) -> str:
    return state(stack)["outputs"]["endpoint_url"]["value"]


def changes(plan: dict) -> dict[str, dict]:
    return {c["address"]: c for c in plan["resource_changes"]}


def assert_noop(stack: Path) -> None:
    run = mlform(stack, "plan", "--detailed-exitcode")
    assert run.code == 0 and "No changes" in run.stdout, run


def test_apply_serves_predictions_and_a_second_plan_is_a_no_op(stack):
    answer = infer(endpoint_url(stack), EXAMPLES)
    assert answer["model_name"] == "fraud" and answer["model_version"] == "1"
    out = answer["outputs"][0]
    assert out["shape"] == [3, 2] and len(out["data"]) == 6
    probs = out["data"]
    assert all(abs(probs[2 * i] + probs[2 * i + 1] - 1) < 1e-4 for i in range(3))
    assert probs[5] > probs[1], "the risky night purchase should look more like fraud"
    assert resource(stack, "model.fraud")["version"] == 1
    assert_noop(stack)


def test_new_dataset_content_reruns_the_pipeline_and_rolls_out_version_2(stack):
    before = resource(stack, "dataset.transactions")["digest"]
    make_data(stack, "--seed", "11")
    planned = mlform(stack, "plan", "--format", "json")
    assert planned.code == 0, planned
    rc = changes(planned.json())

    assert rc["dataset.transactions"]["change"]["actions"] == ["update"]
    assert any(before[:8] in r for r in rc["dataset.transactions"]["reasons"])
    train = rc["pipeline.train"]
    assert train["change"]["actions"] == ["update"]
    assert any("must be re-run: dataset.transactions content changed" in r
               for r in train["reasons"]), train["reasons"]
    assert train["change"]["after_unknown"]["model_uri"] is True
    model = rc["model.fraud"]
    assert model["change"]["actions"] == ["update"] and model["reasons"]
    assert model["change"]["after_unknown"]["version"] is True
    assert model["change"]["before"]["version"] == 1
    endpoint = rc["endpoint.fraud"]
    assert endpoint["change"]["actions"] == ["update"] and endpoint["reasons"]
    assert endpoint["change"]["after_unknown"]["model_version"] is True
    assert rc["training_cluster.cpu"]["change"]["actions"] == ["no-op"]

    pid = resource(stack, "endpoint.fraud")["pid"]
    applied = mlform(stack, "apply", "--auto-approve")
    assert applied.code == 0, applied
    assert resource(stack, "model.fraud")["version"] == 2
    assert infer(endpoint_url(stack), EXAMPLES)["model_version"] == "2"
    assert resource(stack, "endpoint.fraud")["pid"] == pid, "a rollout switches the running server"
    assert_noop(stack)


def test_runs_and_lineage_show_both_runs_and_what_the_endpoint_serves(stack):
    """After the dataset change above: two runs with different data digests, compared, and
    the endpoint's lineage naming the digest and the run behind the model it serves."""
    import jsonschema
    from mlform.runs import json_schemas
    schemas = json_schemas()
    listed = mlform(stack, "runs", "list", "pipeline.train", "--json")
    assert listed.code == 0, listed
    jsonschema.validate(listed.json(), schemas["runs list"])
    first, second = listed.json()["runs"]
    assert first["status"] == second["status"] == "succeeded"
    assert first["data_digests"]["train"] != second["data_digests"]["train"]
    assert second["data_digests"]["train"] == resource(stack, "dataset.transactions")["digest"]
    assert [s["step"] for s in second["steps"]] == [1, 2, 3, 4, 5], "train.py's step lines"
    assert second["duration_seconds"] > 0 and second["parameters"]["epochs"] == 5

    compared = mlform(stack, "runs", "compare", first["run_id"], second["run_id"], "--format", "json")
    assert compared.code == 0, compared
    jsonschema.validate(compared.json(), schemas["runs compare"])
    rows = {row["field"]: row for row in compared.json()["rows"]}
    assert rows["data.train"]["differs"] and rows["fingerprint"]["differs"]
    assert not rows["code"]["differs"] and not rows["param.epochs"]["differs"]
    human = mlform(stack, "runs", "compare", first["run_id"], second["run_id"]).stdout
    assert "* data.train" in human

    found = mlform(stack, "lineage", "endpoint.fraud", "--json")
    assert found.code == 0, found
    jsonschema.validate(found.json(), schemas["lineage"])
    doc = found.json()
    assert doc["run"]["run_id"] == second["run_id"] == resource(stack, "pipeline.train")["run_id"]
    assert doc["run"]["data_digests"]["train"] == second["data_digests"]["train"]
    up = {n["address"]: n for n in doc["upstream"]}
    assert up["model.fraud"]["details"]["version"] == 2
    assert up["dataset.transactions"]["details"]["digest"] == second["data_digests"]["train"]
    assert "monitor.drift" in {n["address"] for n in doc["downstream"]}
    text = mlform(stack, "lineage", "endpoint.fraud").stdout
    assert f"run {second['run_id']}" in text and "data train <- dataset.transactions" in text


def test_killed_endpoint_is_drift_and_apply_restarts_it(stack):
    pid, url = resource(stack, "endpoint.fraud")["pid"], endpoint_url(stack)
    os.kill(pid, signal.SIGKILL)
    assert not wait_gone([pid])

    drift = mlform(stack, "drift")
    assert drift.code == 2, drift
    assert "endpoint.fraud" in drift.stdout and "deleted outside mlform" in drift.stdout

    applied = mlform(stack, "apply", "--auto-approve")
    assert applied.code == 0, applied
    restarted = resource(stack, "endpoint.fraud")
    assert restarted["pid"] != pid and alive(restarted["pid"])
    assert restarted["model_version"] == 2
    assert endpoint_url(stack) == url, "the restarted server keeps its port"
    again = mlform(stack, "drift")
    assert again.code == 0, again
    assert infer(endpoint_url(stack), EXAMPLES)["model_version"] == "2"
    assert_noop(stack)


def _clear_of_the_scheduler(stack: Path) -> None:
    """The monitor's scheduler runs the same check at */10 minutes (local time) and would
    take the window of captured requests first: wait until the next check it announced
    (it logs "next check at" before it sleeps, and again after each check) is at least
    10 s away, i.e. until the check due now, if any, is done."""
    [log] = stack.glob(".mlform/local/*/monitors/*/scheduler.log")

    def clear() -> bool:
        announced = re.findall(r"next check at (\d{4}-\d\d-\d\dT\d\d:\d\d)", log.read_text())
        return bool(announced) and \
            datetime.fromisoformat(announced[-1]) - datetime.now() >= timedelta(seconds=10)

    wait_until(clear, 60, "the monitor's scheduler to be 10 s or more from its next check")


def test_drifted_traffic_breaches_the_monitor_and_the_next_plan_retrains(stack, tmp_path):
    shifted = tmp_path / "live.csv"
    make_data(stack, "--seed", "23", "--rows", "400", "--out", str(shifted))
    with open(shifted, newline="") as fh:
        rows = [[float(r[f]) for f in FEATURES] for r in csv.DictReader(fh)]
    for row in rows:
        row[0] *= 10                     # amounts ten times what the model was trained on
    run_id = resource(stack, "pipeline.train")["run_id"]
    url = endpoint_url(stack)
    _clear_of_the_scheduler(stack)
    for i in range(0, len(rows), 100):   # more than the monitor's min_rows (20)
        infer(url, rows[i:i + 100])

    report = mlform(stack, "monitor", "run", "monitor.drift")
    assert report.code == 2, report
    found = re.search(r"BREACH psi amount = ([0-9.]+) > 0\.2", report.stdout)
    assert found and float(found.group(1)) > 0.2, report
    assert "marked pipeline.train stale" in report.stdout

    planned = mlform(stack, "plan", "--format", "json")
    assert planned.code == 0, planned
    rc = changes(planned.json())
    train = rc["pipeline.train"]
    assert train["change"]["actions"] == ["update"]
    reason = next(r for r in train["reasons"] if "must be re-run" in r)
    assert "monitor.drift" in reason and f"psi(amount) = {found.group(1)}" in reason, reason
    assert rc["dataset.transactions"]["change"]["actions"] == ["no-op"]
    assert rc["model.fraud"]["change"]["actions"] == ["update"]

    applied = mlform(stack, "apply", "--auto-approve")
    assert applied.code == 0, applied
    retrained = resource(stack, "pipeline.train")
    assert retrained["run_id"] != run_id and retrained["stale"] is None
    assert_noop(stack)


def test_a_missed_gate_fails_the_apply_and_changes_nothing_downstream(stack):
    main = stack / "main.hcl"
    original = main.read_text()
    model, endpoint = resource(stack, "model.fraud"), resource(stack, "endpoint.fraud")
    runs_before = set((stack / ".mlform").glob("local/default/runs/*/run-*"))
    main.write_text(original.replace("min = 0.85", "min = 0.999"))
    try:
        # a new run (other epochs) that misses the gate
        failed = mlform(stack, "apply", "--auto-approve", "--var", "epochs=3")
        assert failed.code == 1, failed
        assert re.search(r"gate failed: accuracy 0\.\d+ < min 0\.999", failed.output), failed
        assert "pipeline.train" in failed.output
        assert "Traceback" not in failed.output
        new_runs = set((stack / ".mlform").glob("local/default/runs/*/run-*")) - runs_before
        assert len(new_runs) == 1 and (new_runs.pop() / "rejected").is_dir()
        # the run the pipeline keeps is judged by the stricter gate too
        kept = mlform(stack, "apply", "--auto-approve")
        assert kept.code == 1 and "gate failed: accuracy" in kept.output, kept

        assert resource(stack, "model.fraud") == model
        assert resource(stack, "endpoint.fraud") == endpoint
        assert alive(endpoint["pid"])
        assert infer(endpoint_url(stack), EXAMPLES)["model_version"] == str(model["version"])
    finally:
        main.write_text(original)
    assert_noop(stack)


def test_destroy_stops_every_process_and_frees_the_port(stack):
    pids = recorded_pids(stack)
    port = resource(stack, "endpoint.fraud")["port"]
    assert pids and all(alive(p) for p in pids)
    assert not port_free(port)

    destroyed = mlform(stack, "destroy", "--auto-approve")
    assert destroyed.code == 0, destroyed
    assert state(stack)["resources"] == []
    assert not wait_gone(pids), "a process of the stack outlived destroy"
    assert not stack_processes(stack)
    assert port_free(port)
