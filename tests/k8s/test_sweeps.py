"""Hyperparameter sweeps on the kubernetes provider: Optuna in the apply, trials as Jobs.

The cluster is the session's test control plane; the pod harness runs each trial's pod
as a local process, storage is moto's S3.  The training script (no torch) reports an
accuracy that depends on the learning rate it gets (0.5 is the planted better value),
prints a step line per "epoch" and appends its run id to a counter file on every start,
so the tests see which trials ran, and how often.  Environment variables make the first
trials wait for each other (they must run at once) or hold until a file goes (the
apply is killed while they run).
"""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from _kube import BUCKET, pipeline_desired
from _waiting import wait_until
from e2e.harness import CLI, cli_env
from fixture import AWS_ENV
from mlform.expr.values import UNKNOWN
from mlform.providers.base import Desired, LiveObject, ProviderError
from mlform.providers.kit import calls
from mlform.providers.kit.run_records import RunRecord

pytestmark = pytest.mark.timeout(600)

from _sweep_script import SCRIPT  # noqa: E402  (tests/ is on sys.path)

# seed 2 draws lr 0.001, 0.001, 0.001, then 0.5: only the last trial finds the better one
SWEEP = {"objective": "accuracy", "direction": "maximize", "trials": 4, "parallel": 2,
         "seed": 2, "pruning": "none",
         "parameters": {"lr": {"type": "categorical", "values": [0.001, 0.5]}}}


def _started(counter: Path) -> list[str]:
    return counter.read_text().split() if counter.exists() else []


def _trials(k8s, sweep_run: str) -> dict[int, dict]:
    return {r["sweep"]["trial"]: r for r in k8s.run_records("pipeline.train")
            if (r.get("sweep") or {}).get("run_id") == sweep_run}


def test_a_sweep_runs_its_trials_as_jobs_and_finds_the_better_learning_rate(
        k8s, pod_harness, tmp_path, control_plane):
    counter = tmp_path / "runs.txt"
    desired = pipeline_desired(k8s, tmp_path, SCRIPT, sweep=SWEEP, environment={
        "RUN_COUNTER": str(counter), "MEET": "2"})   # trials 0 and 1 must run at once
    assert not [d for d in calls.validate(k8s, desired) if d.severity == "error"]
    planned = calls.plan(k8s, desired)
    assert planned.attributes["best_parameters"] is UNKNOWN
    assert "sweep of 4 trials over lr (2 at a time)" in planned.reasons

    live = k8s.create(planned)
    k8s.made.append(live)
    sweep_run = live.attributes["run_id"]
    assert live.attributes["best_parameters"] == {"lr": 0.5}
    assert live.attributes["metrics"] == {"accuracy": 0.9}
    assert sorted(_started(counter)) == [f"{sweep_run}-t{n}" for n in range(4)]

    # the best trial's own output is the model, with the lineage the registry reads
    model_uri = live.attributes["model_uri"]
    best_run = f"{sweep_run}-t3"
    runs = k8s.env.store.key("runs", k8s.env.name("pipeline.train"))
    assert model_uri == f"s3://{BUCKET}/{runs}/{best_run}/output/"
    key = model_uri.removeprefix(f"s3://{BUCKET}/")
    assert k8s.env.store.get_bytes(key + "model.pt") == b"model of lr=0.5 epochs=3"
    lineage = k8s.env.store.get_json(key.removesuffix("output/") + "lineage.json")
    assert lineage["run_id"] == best_run and lineage["metrics"] == {"accuracy": 0.9}

    # one Job per trial, named and labelled for it
    with control_plane.api() as api:
        jobs = api.get("/apis/batch/v1/namespaces/default/jobs", params={
            "labelSelector": f"mlform.dev/sweep={sweep_run}"}).json()["items"]
    assert sorted(j["metadata"]["name"] for j in jobs) == [f"{sweep_run}-t{n}" for n in range(4)]
    assert {j["metadata"]["labels"]["mlform.dev/trial"] for j in jobs} == {"0", "1", "2", "3"}

    # a record per trial and one for the sweep
    trials = _trials(k8s, sweep_run)
    assert sorted(trials) == [0, 1, 2, 3]
    for number, record in trials.items():
        RunRecord.model_validate(record)
        lr = record["sweep"]["parameters"]["lr"]
        assert record["status"] == "succeeded" and record["run_id"] == f"{sweep_run}-t{number}"
        assert record["parameters"] == {"epochs": 3, "lr": lr}
        assert record["metrics"] == {"accuracy": 0.9 if lr == 0.5 else 0.6}
        assert [s["step"] for s in record["steps"]] == [0, 1, 2]
    [summary] = [r for r in k8s.run_records("pipeline.train") if r["run_id"] == sweep_run]
    RunRecord.model_validate(summary)
    assert summary["status"] == "succeeded" and summary["model_uri"] == model_uri
    assert summary["sweep"]["best_trial"] == 3
    assert summary["sweep"]["best_parameters"] == {"lr": 0.5}
    assert summary["parameters"] == {"epochs": 3, "lr": 0.5}

    # read finds the pipeline as it was: the plan keeps it, nothing runs again
    found = k8s.read(live)
    assert found.attributes == live.attributes
    kept = calls.plan(k8s, desired, found)
    assert kept.attributes["best_parameters"] == {"lr": 0.5} and kept.reasons == ()
    k8s.update(found, kept)
    assert len(_started(counter)) == 4


def test_a_sweep_whose_script_never_reports_the_objective_fails_with_each_trials_reason(
        k8s, pod_harness, tmp_path):
    counter = tmp_path / "runs.txt"
    desired = pipeline_desired(k8s, tmp_path, SCRIPT, sweep={**SWEEP, "trials": 2},
                               environment={"RUN_COUNTER": str(counter), "METRIC": "auc"})
    # deleted afterwards, with its trial Jobs
    k8s.made.append(LiveObject("pipeline.train", "pipeline", None, desired.attributes))
    with pytest.raises(ProviderError) as caught:
        k8s.create(calls.plan(k8s, desired))
    message = caught.value.message
    assert "no trial of the sweep completed (2 tried)" in message
    assert message.count("train.py never reported metric 'accuracy', the sweep's "
                         "objective (metrics.json has: auc)") == 2, message
    records = k8s.run_records("pipeline.train")
    trials = [r for r in records if "trial" in (r.get("sweep") or {})]
    assert len(trials) == 2 and all(r["status"] == "failed" for r in trials)
    assert all("never reported metric 'accuracy'" in r["failure"] for r in trials)
    [summary] = [r for r in records if "trials" in (r.get("sweep") or {})]
    assert summary["status"] == "failed" and "no trial" in summary["failure"]


def test_median_pruning_is_refused_at_validate(k8s, tmp_path):
    desired = Desired("pipeline.train", "pipeline", "train", {
        "entrypoint": "train.py", "sweep": {**SWEEP, "pruning": "median"}})
    [problem] = [d for d in calls.validate(k8s, desired) if d.severity == "error"]
    assert 'sweep.pruning = "median"' in problem.summary
    assert problem.address == "pipeline.train" and 'pruning = "none"' in problem.hint


# -- an apply killed mid-sweep --------------------------------------------------------

STACK = '''
provider "kubernetes" {{
  kubeconfig   = "{kubeconfig}"
  storage      = "s3://{bucket}/{{stack}}"
  endpoint_url = "{endpoint}"
  poll_seconds = 0.1
}}

pipeline "train" {{
  entrypoint      = "train.py"
  hyperparameters = {{ epochs = 3 }}
  environment     = {{ RUN_COUNTER = "{counter}", HOLD_FILE = "{hold}", HOLD_TRIALS = "2,3" }}
  sweep = {{
    objective  = "accuracy"
    direction  = "maximize"
    trials     = 5
    parallel   = 2
    seed       = 7
    parameters = {{
      lr = {{ type = "categorical", values = [0.001, 0.5] }}
    }}
  }}
}}
'''


def test_a_killed_apply_resumes_the_study_and_adopts_the_trial_jobs(
        control_plane, pod_harness, aws, tmp_path):
    bucket = "mlform-k8s-sweeps"
    if not any(b["Name"] == bucket for b in aws.client("s3").list_buckets()["Buckets"]):
        aws.client("s3").create_bucket(Bucket=bucket)
    counter, hold = tmp_path / "runs.txt", tmp_path / "hold"
    (tmp_path / "main.hcl").write_text(textwrap.dedent(STACK.format(
        kubeconfig=control_plane.kubeconfig, bucket=bucket, endpoint=aws.url,
        counter=counter, hold=hold)))
    (tmp_path / "train.py").write_text(SCRIPT)
    hold.write_text("")

    def mlform(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, "-C", str(tmp_path), *args], env=cli_env(AWS_ENV),
                              input="", capture_output=True, text=True, timeout=400)

    proc = subprocess.Popen([*CLI, "-C", str(tmp_path), "apply", "--auto-approve"],
                            env=cli_env(AWS_ENV), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        try:
            def held() -> bool:
                assert proc.poll() is None, proc.communicate()[0].decode()
                return len(_started(counter)) == 4   # trials 0 and 1 done, 2 and 3 held

            wait_until(held, 300, "trials 0 and 1 to finish and 2 and 3 to start")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        first = _started(counter)
        sweep_run = first[0].rsplit("-t", 1)[0]
        assert sorted(first) == [f"{sweep_run}-t{n}" for n in range(4)]
        hold.unlink()   # the held trials' pods go on and finish with no apply watching

        applied = mlform("apply", "--auto-approve")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        output = applied.stdout + applied.stderr
        assert "Traceback" not in output, output
        # the study went on: 0 and 1 were not run again, the Jobs of 2 and 3 were adopted
        # (each started once), and only trial 4 was asked
        assert sorted(_started(counter)) == [f"{sweep_run}-t{n}" for n in range(5)]
        assert "resuming sweep" in output and "adopting its Job" in output, output

        listed = mlform("runs", "list", "pipeline.train", "--json")
        assert listed.returncode == 0, listed.stderr
        runs = {r["run_id"]: r for r in json.loads(listed.stdout)["runs"]}
        trials = {r["sweep"]["trial"]: r for r in runs.values()
                  if (r.get("sweep") or {}).get("run_id") == sweep_run}
        assert sorted(trials) == [0, 1, 2, 3, 4]
        assert all(r["status"] == "succeeded" for r in trials.values())
        summary = runs[sweep_run]
        assert summary["status"] == "succeeded"
        assert summary["sweep"]["best_parameters"] == {"lr": 0.5}
    finally:
        if hold.exists():
            hold.unlink()
        destroyed = mlform("destroy", "--auto-approve")
        assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
