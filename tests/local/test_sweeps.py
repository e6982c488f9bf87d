"""Hyperparameter sweeps on the local provider: Optuna trials as real runs.

The training script is written by the test and needs no torch: its accuracy depends on
the learning rate it gets (0.5 is the planted better value), it prints a step line per
"epoch" and appends its run id to a counter file on every start, so the tests see which
trials ran, and how often.  Environment variables (not part of the fingerprint) make
chosen trials wait for each other (parallelism), hold until a file goes (a kill
mid-sweep), report bad step values (pruning), or report another metric (a missing
objective).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from _waiting import wait_until
from mlform.expr.values import UNKNOWN
from mlform.plan.fingerprints import fingerprint
from mlform.providers.base import Desired, ProviderError
from mlform.providers.kit import calls as contract
from mlform.providers.kit.digests import hash_file
from mlform.providers.kit.sweeps import sweep_of
from mlform.providers.local import gpus, processes
from mlform.providers.local.clusters import ClusterHandler
from mlform.providers.local.gpus import Gpu, Machine
from mlform.providers.local.pipelines import PipelineHandler
from mlform.providers.local.sweeps import slots

from ._cli import CLI, cli_env, mlform, resource

from _sweep_script import SCRIPT  # noqa: E402  (tests/ is on sys.path)

SWEEP = {"objective": "accuracy", "direction": "maximize", "trials": 6, "parallel": 2,
         "seed": 7, "parameters": {"lr": {"type": "categorical", "values": [0.001, 0.5]}}}


@pytest.fixture
def stack(local_env):
    (local_env.stack_dir / "train.py").write_text(SCRIPT)
    return {"env": local_env, "counter": local_env.stack_dir / "runs.txt",
            "hold": local_env.stack_dir / "hold"}


def pipeline(stack, sweep=None, gate=None, cluster=None, **environment) -> Desired:
    """Desired attributes as the engine gives them: fingerprint computed."""
    attributes = {
        "inputs": {}, "entrypoint": "train.py", "hyperparameters": {"epochs": 3},
        "environment": {"RUN_COUNTER": str(stack["counter"]), "HOLD_FILE": str(stack["hold"]),
                        **environment},
        "sweep": {**SWEEP, **(sweep or {})}, "timeout_seconds": 100,
        **({"gate": gate} if gate else {}), **({"cluster": cluster} if cluster else {}),
    }
    digest = hash_file(stack["env"].stack_dir / "train.py").digest
    attributes["entrypoint_sha256"] = digest
    attributes["fingerprint"] = fingerprint(attributes, digest)
    return Desired("pipeline.train", "pipeline", "train", attributes)


def starts(stack) -> list[str]:
    return stack["counter"].read_text().split() if stack["counter"].exists() else []


def records(handler: PipelineHandler) -> dict[str, dict]:
    return {r["run_id"]: r for r in handler.run_records("pipeline.train")}


def trials_of(handler: PipelineHandler, sweep_run: str) -> dict[int, dict]:
    return {r["sweep"]["trial"]: r for r in records(handler).values()
            if (r.get("sweep") or {}).get("run_id") == sweep_run}


def test_a_sweep_finds_the_better_learning_rate(stack, progress):
    handler = PipelineHandler(stack["env"])
    d = pipeline(stack, MEET="2")   # trials 0 and 1 meet: they must run at once
    planned = contract.plan(handler, d, None)
    assert planned.attributes["best_parameters"] is UNKNOWN
    assert "sweep of 6 trials over lr (2 at a time)" in planned.reasons

    live = handler.create(planned)
    sweep_run = live.attributes["run_id"]
    assert live.attributes["best_parameters"] == {"lr": 0.5}
    assert live.attributes["metrics"] == {"accuracy": 0.9}
    model = Path(live.attributes["model_uri"].removeprefix("file://")) / "model.pt"
    assert model.read_text() == "model of lr=0.5 epochs=3"   # the best trial's own model
    assert sorted(starts(stack)) == sorted(f"{sweep_run}-t{n}" for n in range(6))

    trials = trials_of(handler, sweep_run)
    assert sorted(trials) == list(range(6))
    assert {t["parameters"]["lr"] for t in trials.values()} == {0.001, 0.5}, "both were tried"
    for number, record in trials.items():
        assert record["status"] == "succeeded" and record["run_id"] == f"{sweep_run}-t{number}"
        assert record["parameters"] == {"epochs": 3, "lr": record["sweep"]["parameters"]["lr"]}
        assert [s["step"] for s in record["steps"]] == [0, 1, 2]
    summary = records(handler)[sweep_run]
    assert summary["status"] == "succeeded" and summary["sweep"]["best_parameters"] == {"lr": 0.5}
    assert trials[summary["sweep"]["best_trial"]]["metrics"] == {"accuracy": 0.9}

    # the plan keeps the sweep as it keeps a run: nothing runs again
    found = handler.read(live)
    assert found.attributes == live.attributes
    kept = contract.plan(handler, d, found)
    assert kept.attributes["best_parameters"] == {"lr": 0.5} and kept.reasons == ()
    handler.update(found, kept)
    assert len(starts(stack)) == 6


def test_trials_at_once_share_out_the_clusters_gpus(stack, local_env, mocker):
    machine = Machine(tuple(Gpu(i, "NVIDIA H100 80GB HBM3", 81559, "") for i in range(3)),
                      "550", "")
    mocker.patch.object(gpus, "discover", return_value=machine)
    clusters = ClusterHandler(local_env)
    spec = {"accelerator": "nvidia-h100", "gpus_per_node": 2, "nodes": 1}
    clusters.create(contract.plan(clusters, Desired("training_cluster.gpu", "training_cluster",
                                                    "gpu", spec), None))
    handler = PipelineHandler(local_env)
    d = pipeline(stack, {"trials": 2}, MEET="2",
                 cluster={"address": "training_cluster.gpu", **spec, "instance_type": None})
    live = handler.create(contract.plan(handler, d, None))
    seen = sorted(Path(r["artifacts"]["output"].removeprefix("file://"), "gpus.txt").read_text()
                  for r in trials_of(handler, live.attributes["run_id"]).values())
    assert seen == ["cuda 0", "cuda 1"]   # the two trials ran at once, one GPU each


def test_the_slots_of_trials_at_once():
    spec = sweep_of({"sweep": {**SWEEP, "parallel": 4}})
    assert slots(spec, [0, 1], processes=1) == [[0], [1]]              # one GPU each at least
    assert slots(spec, [0, 1, 2, 3, 4, 5, 6, 7, 8], 1) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    one = sweep_of({"sweep": {**SWEEP, "parallel": 1}})
    assert slots(one, [0, 1], processes=1) == [[0, 1]]                 # a trial on both
    assert slots(spec, [], processes=1, cpus=2) == [[], []]             # CPU slots
    assert slots(spec, [], processes=2, cpus=2) == [[]]                 # 2 processes a trial
    assert slots(spec, [], processes=1, cpus=16) == [[]] * 4            # at most parallel


def test_the_gate_judges_the_best_trial(stack):
    handler = PipelineHandler(stack["env"])
    d = pipeline(stack, {"trials": 2, "parallel": 1, "parameters": {
        "lr": {"type": "categorical", "values": [0.001]}}}, gate={"metric": "accuracy", "min": 0.8})
    with pytest.raises(ProviderError, match=r"gate failed: accuracy 0.60 < min 0.80 \(best trial"):
        handler.create(contract.plan(handler, d, None))
    sweep_run = next(r for r in records(handler).values() if "trials" in (r["sweep"] or {}))
    assert sweep_run["status"] == "failed"
    # the trials themselves are runs that succeeded: only the sweep's result is gated
    assert all(r["status"] == "succeeded" for r in trials_of(handler, sweep_run["run_id"]).values())


def test_a_missing_objective_fails_the_trial_and_the_sweep_goes_on(stack):
    handler = PipelineHandler(stack["env"])
    d = pipeline(stack, {"trials": 3, "parallel": 1, "objective": "auc"}, METRIC="auc")
    # trials report auc: the sweep succeeds
    live = handler.create(contract.plan(handler, d, None))
    assert live.attributes["metrics"]["auc"] in (0.6, 0.9)

    # a script that never reports the objective: each trial fails with that message, both
    # are tried, and the apply fails saying why
    d = pipeline(stack, {"trials": 2, "parallel": 1, "objective": "auc"})
    with pytest.raises(ProviderError) as caught:
        handler.create(contract.plan(handler, d, None))
    message = caught.value.message
    assert "no trial of the sweep completed (2 tried)" in message
    assert ("trial 1: train.py never reported metric 'auc', the sweep's objective "
            "(metrics.json has: accuracy) (run ") in message
    assert message.count("never reported") == 2, message
    sweep_run = next(
        r["run_id"] for r in records(handler).values()
        if "trials" in (r["sweep"] or {}) and r["status"] == "failed")
    failed = trials_of(handler, sweep_run)
    assert sorted(failed) == [0, 1]
    assert all("never reported metric 'auc'" in r["failure"] for r in failed.values())


def test_pruning_stops_a_trial_whose_steps_are_bad(stack):
    handler = PipelineHandler(stack["env"])
    # trials 5 and 6 report an accuracy of 0.05 at step 0 and then hang: the median
    # pruner (judging from the sixth trial on) must stop them
    d = pipeline(stack, {"trials": 7, "parallel": 1, "pruning": "median"}, BAD_FROM="5")
    live = handler.create(contract.plan(handler, d, None))
    trials = trials_of(handler, live.attributes["run_id"])
    for number in (5, 6):
        assert trials[number]["status"] == "failed"
        assert "pruned at step 0 (accuracy 0.05" in trials[number]["failure"]
        assert [s["step"] for s in trials[number]["steps"]] == [0]
    assert all(trials[n]["status"] == "succeeded" for n in range(5))


# -- resuming a sweep an apply left unfinished --------------------------------------------

STACK = '''provider "local" {}

pipeline "train" {
  entrypoint      = "train.py"
  hyperparameters = { epochs = 3 }
  environment     = { RUN_COUNTER = "runs.txt", HOLD_FILE = "hold", HOLD_TRIALS = "2,3" }
  sweep = {
    objective  = "accuracy"
    direction  = "maximize"
    trials     = 6
    parallel   = 2
    seed       = 7
    parameters = {
      lr = { type = "categorical", values = [0.001, 0.5] }
    }
  }
}
'''


def test_a_killed_apply_resumes_the_study(tmp_path):
    (tmp_path / "main.hcl").write_text(STACK)
    (tmp_path / "train.py").write_text(SCRIPT)
    (tmp_path / "hold").write_text("")
    counter = tmp_path / "runs.txt"

    def started() -> list[str]:
        return counter.read_text().split() if counter.exists() else []

    proc = subprocess.Popen([*CLI, "-C", str(tmp_path), "apply", "--auto-approve"],
                            env=cli_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def held() -> bool:
            assert proc.poll() is None, proc.communicate()[0].decode()
            return len(started()) == 4   # trials 0 and 1 done, 2 and 3 holding

        wait_until(held, 120, "trials 0 and 1 to finish and 2 and 3 to start")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    first = started()
    sweep_run = first[0].rsplit("-t", 1)[0]
    assert sorted(first) == [f"{sweep_run}-t{n}" for n in range(4)]
    runs = tmp_path / ".mlform" / "local" / "default" / "runs"
    pids = {}
    for number in (2, 3):   # the held trials outlive the apply that started them
        record = json.loads(next(runs.glob(f"*/{sweep_run}-t{number}/run.json")).read_text())
        pids[number] = record["pid"]
        assert processes.is_ours(record["pid"], "mlform_run_dir="), record

    applied = mlform(tmp_path, "apply", "--auto-approve")
    assert applied.code == 0, applied.output
    assert "Traceback" not in applied.output
    # the study went on: 0 and 1 were not run again, 2 and 3 were stopped and replaced
    # by the next numbers, and the same sweep run finished with 6 trials that count
    assert started()[:4] == first
    assert sorted(started()[4:]) == [f"{sweep_run}-t{n}" for n in range(4, 8)]
    assert not any(processes.is_ours(pid, "mlform_run_dir=") for pid in pids.values())
    attrs = resource(tmp_path, "pipeline.train")
    assert attrs["run_id"] == sweep_run and attrs["best_parameters"] == {"lr": 0.5}
    for number in (2, 3):
        record = json.loads(next(runs.glob(f"*/{sweep_run}-t{number}/run.json")).read_text())
        assert record["status"] == "failed"
        assert record["record"]["failure"] == ("the apply running it was stopped before the "
                                               "run finished")
