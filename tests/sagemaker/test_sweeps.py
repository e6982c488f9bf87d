"""A sagemaker pipeline's `sweep`: a HyperParameterTuningJob, against the emulator.

The emulator (tests/emulator/tuning.py) runs a tuning job's trials as its training jobs,
which run no code: each completes with `training_metrics`, plus the `planted_metrics`
of its hyperparameter values, here a better accuracy for lr = 0.5 than for lr = 0.001.
Categorical values are walked as a grid, so the first two trials try both.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from mlform.expr.values import UNKNOWN
from mlform.providers.base import Desired, LiveObject, ProviderError
from mlform.providers.kit import calls as contract
from mlform.providers.kit.run_records import RunRecord
from mlform.providers.kit.sweeps import sweep_of
from mlform.providers.sagemaker import tuning

from ._provider import build, count
from .test_quickstart_e2e import mlform as cli, stack  # noqa: F401  (stack: the fixture)

ADDRESS = "pipeline.train"
FP1 = "sha256:" + "e5" * 32
FP2 = "sha256:" + "f6" * 32
TRAIN = '''import json, os
print(json.dumps({"hp": json.loads(os.environ["MLFORM_HYPERPARAMETERS"]),
                  "run": os.environ.get("MLFORM_RUN_ID"), "name": __name__}))
'''
SWEEP = {"objective": "accuracy", "direction": "maximize", "trials": 6, "parallel": 2,
         "seed": 7, "pruning": "median",
         "parameters": {"lr": {"type": "categorical", "values": [0.001, 0.5]},
                        "layers": {"type": "int", "min": 1, "max": 8, "log": True},
                        "width": {"type": "int", "min": 16, "max": 64, "step": 16},
                        "dropout": {"type": "float", "min": 0.1, "max": 0.5},
                        "opt": {"type": "categorical", "values": ["adam", "sgd"]}}}
PLANTED = {"lr": {"0.001": {"accuracy": 0.6}, "0.5": {"accuracy": 0.9}}}


@pytest.fixture
def provider(aws, tmp_path):
    (tmp_path / "train.py").write_text(TRAIN)
    aws.control(training_metrics={"accuracy": 0.5, "loss": 0.2}, planted_metrics=PLANTED)
    return build(aws, tmp_path)


def _desired(tmp_path, fingerprint: str = FP1, sweep: dict | None = None, **extra) -> Desired:
    attrs = {"fingerprint": fingerprint, "entrypoint": "train.py",
             "entrypoint_sha256": hashlib.sha256((tmp_path / "train.py").read_bytes()).hexdigest(),
             "hyperparameters": {"epochs": 5},
             "gate": {"metric": "accuracy", "min": 0.85},
             "sweep": SWEEP if sweep is None else sweep, **extra}
    return Desired(ADDRESS, "pipeline", "train", attrs)


def _tuning(aws, name: str) -> dict:
    return aws.client("sagemaker").describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name)


def _tuning_names(aws) -> list[str]:
    listed = aws.client("sagemaker").list_hyper_parameter_tuning_jobs()
    return sorted(j["HyperParameterTuningJobName"]
                  for j in listed["HyperParameterTuningJobSummaries"])


def test_a_sweep_is_a_tuning_job_and_its_best_training_job_is_the_run(aws, provider, tmp_path):
    desired = _desired(tmp_path)
    assert contract.validate(provider, desired) == []
    planned = contract.plan(provider, desired, None)
    assert planned.attributes["best_parameters"] is UNKNOWN
    assert planned.attributes["run_id"] is UNKNOWN   # the best job: known when it ended
    assert "sweep of 6 trials over lr, layers, width, dropout, opt (2 at a time)" in planned.reasons

    live = provider.create(planned)
    [name] = _tuning_names(aws)
    assert len(name) <= 32 and name.endswith(f"-{FP1[7:15]}-1")
    assert count(aws, "CreateHyperParameterTuningJob") == 1
    assert count(aws, "CreateTrainingJob") == 0   # SageMaker starts the trials

    # the better value of the planted pair wins; the values come back typed
    best = live.attributes["best_parameters"]
    assert best["lr"] == 0.5 and isinstance(best["lr"], float)
    assert isinstance(best["layers"], int) and 1 <= best["layers"] <= 8
    assert best["width"] in (16, 32, 48, 64)
    assert isinstance(best["dropout"], float) and 0.1 <= best["dropout"] <= 0.5
    assert best["opt"] in ("adam", "sgd")
    desc = _tuning(aws, name)
    assert desc["HyperParameterTuningJobStatus"] == "Completed"
    best_job = desc["BestTrainingJob"]["TrainingJobName"]
    assert live.id == live.attributes["run_id"] == best_job and best_job.startswith(name + "-")
    assert live.attributes["metrics"] == {"accuracy": 0.9, "loss": 0.2}
    job = aws.client("sagemaker").describe_training_job(TrainingJobName=best_job)
    assert live.attributes["model_uri"] == job["ModelArtifacts"]["S3ModelArtifacts"]
    assert job["HyperParameters"]["lr"] == "0.5" and job["HyperParameters"]["epochs"] == "5"

    # the request, as the emulator kept it
    config = desc["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian" and config["RandomSeed"] == 7
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize",
                                                          "MetricName": "accuracy"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 6,
                                        "MaxParallelTrainingJobs": 2}
    assert config["TrainingJobEarlyStoppingType"] == "Auto"
    assert config["ParameterRanges"] == {
        "ContinuousParameterRanges": [{"Name": "dropout", "MinValue": "0.1", "MaxValue": "0.5",
                                       "ScalingType": "Linear"}],
        "IntegerParameterRanges": [{"Name": "layers", "MinValue": "1", "MaxValue": "8",
                                    "ScalingType": "Logarithmic"}],
        "CategoricalParameterRanges": [
            {"Name": "lr", "Values": ["0.001", "0.5"]},
            {"Name": "width", "Values": ["16", "32", "48", "64"]},   # a stepped int range
            {"Name": "opt", "Values": ['"adam"', '"sgd"']}]}
    definition = desc["TrainingJobDefinition"]
    static = definition["StaticHyperParameters"]
    assert static["epochs"] == "5" and static["sagemaker_program"] == '"_mlform_sweep.py"'
    assert not set(SWEEP["parameters"]) & set(static)
    assert [m["Name"] for m in definition["AlgorithmSpecification"]["MetricDefinitions"]] == [
        "accuracy"]
    assert definition["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
    assert json.loads(definition["Environment"]["MLFORM_HYPERPARAMETERS"]) == {"epochs": 5}
    tags = {t["Key"]: t["Value"] for t in aws.client("sagemaker").list_tags(
        ResourceArn=desc["HyperParameterTuningJobArn"])["Tags"]}
    assert tags == provider.env.tag_map(ADDRESS)


def test_runs_list_shows_the_tuning_job_and_each_trial(aws, provider, tmp_path):
    live = provider.create(contract.plan(provider, _desired(tmp_path), None))
    [name] = _tuning_names(aws)
    records = provider.run_records(ADDRESS)
    for record in records:
        RunRecord.model_validate(record)
    [sweep] = [r for r in records if r["run_id"] == name]
    trials = sorted((r for r in records if r["run_id"] != name), key=lambda r: r["sweep"]["trial"])
    assert len(trials) == 6 and len(records) == 7
    assert sweep["status"] == "succeeded" and sweep["metrics"] == live.attributes["metrics"]
    assert sweep["model_uri"] == live.attributes["model_uri"]
    assert sweep["sweep"]["trials"] == 6 and sweep["sweep"]["best_run_id"] == live.id
    assert sweep["sweep"]["best_parameters"] == live.attributes["best_parameters"]
    assert sweep["parameters"] == {"epochs": 5, **live.attributes["best_parameters"]}
    assert [t["sweep"]["trial"] for t in trials] == [1, 2, 3, 4, 5, 6]
    assert {t["sweep"]["run_id"] for t in trials} == {name}
    assert [t["parameters"]["lr"] for t in trials[:2]] == [0.001, 0.5]
    assert all(t["parameters"]["epochs"] == 5 and t["status"] == "succeeded" for t in trials)
    assert [t["metrics"]["accuracy"] for t in trials[:2]] == [0.6, 0.9]
    assert live.id in {t["run_id"] for t in trials}

    # listing them again costs one S3 listing (every record is closed)
    aws.clear_calls()
    assert provider.run_records(ADDRESS) == records
    assert count(aws, "ListObjectsV2") == 1 and count(aws, "DescribeHyperParameterTuningJob") == 0


def _started_elsewhere(aws, provider, tmp_path, *, record: bool = False):
    """(the plan, the tuning job's name) of the first attempt's tuning job, created the
    way an apply creates it (with its run record first when `record`) but outside
    `create`: what an apply cut off after CreateHyperParameterTuningJob leaves."""
    planned = contract.plan(provider, _desired(tmp_path), None)
    handler = provider.handler("pipeline")
    spec = sweep_of(planned.attributes)
    name = tuning.tuning_name(handler, ADDRESS, FP1, 1)
    training, _ = handler.prepare(ADDRESS, planned.attributes, name, sweep=spec)
    if record:
        tuning.open_record(handler, ADDRESS, planned.attributes, spec, name)
    aws.client("sagemaker").create_hyper_parameter_tuning_job(
        **tuning.tuning_request(name, spec, training))
    return planned, name


def test_a_retried_create_adopts_the_tuning_job(aws, provider, tmp_path):
    """An apply cut off after CreateHyperParameterTuningJob: the next one adopts the
    tuning job (no second create) and the record written before the call is closed."""
    aws.control(steps={"training_job": 2})
    planned, name = _started_elsewhere(aws, provider, tmp_path, record=True)
    [running] = provider.run_records(ADDRESS)
    assert (running["run_id"], running["status"]) == (name, "running")
    while _tuning(aws, name)["HyperParameterTuningJobStatus"] != "Completed":
        pass   # each describe moves the emulator's trials one step
    # a listing reports how it ended (without writing it) while no apply watches
    [ended] = provider.run_records(ADDRESS)
    assert (ended["run_id"], ended["status"]) == (name, "succeeded") and ended["finished"]

    aws.clear_calls()
    live = provider.create(contract.plan(provider, _desired(tmp_path), None))
    assert count(aws, "CreateHyperParameterTuningJob") == 0
    assert _tuning_names(aws) == [name] and live.id.startswith(name + "-")
    [record] = [r for r in provider.run_records(ADDRESS) if r["run_id"] == name]
    assert record["status"] == "succeeded"

    # and the same plan again (a retry after the end): adopted, nothing new
    aws.clear_calls()
    again = provider.create(contract.plan(provider, _desired(tmp_path), None))
    assert again.id == live.id and count(aws, "CreateHyperParameterTuningJob") == 0


def test_a_kept_run_is_rejudged_and_a_new_fingerprint_is_a_new_tuning_job(aws, provider, tmp_path):
    live = provider.create(contract.plan(provider, _desired(tmp_path), None))
    kept = contract.plan(provider, _desired(tmp_path), live)
    assert kept.attributes["best_parameters"] == live.attributes["best_parameters"]
    aws.clear_calls()
    assert provider.update(live, kept).attributes["run_id"] == live.id
    assert count(aws, "CreateHyperParameterTuningJob") == 0

    changed = contract.plan(provider, _desired(tmp_path, FP2), live)
    assert changed.attributes["best_parameters"] is UNKNOWN
    provider.update(live, changed)
    assert count(aws, "CreateHyperParameterTuningJob") == 1 and len(_tuning_names(aws)) == 2


def test_a_failed_tuning_job_is_on_record_and_the_retry_is_the_next_attempt(aws, provider,
                                                                            tmp_path):
    aws.control(fail_training={f"{FP1[7:15]}-1-": "AlgorithmError: out of memory"})
    with pytest.raises(ProviderError, match="All training jobs failed"):
        provider.create(contract.plan(provider, _desired(tmp_path), None))
    records = provider.run_records(ADDRESS)
    assert len(records) == 7 and {r["status"] for r in records} == {"failed"}
    assert {r["failure"] for r in records if r["sweep"].get("trial")} == {
        "AlgorithmError: out of memory"}

    aws.control(fail_training={})
    live = provider.create(contract.plan(provider, _desired(tmp_path), None))
    assert live.id.startswith(tuning.tuning_name(provider.handler("pipeline"), ADDRESS, FP1, 2))


def test_a_gate_miss_fails_the_apply_and_the_tuning_jobs_record(aws, provider, tmp_path):
    with pytest.raises(ProviderError, match="gate failed: accuracy 0.90 < min 0.95"):
        provider.create(contract.plan(provider, _desired(tmp_path, gate={
            "metric": "accuracy", "min": 0.95}), None))
    [name] = _tuning_names(aws)
    [record] = [r for r in provider.run_records(ADDRESS) if r["run_id"] == name]
    assert record["status"] == "failed" and "gate failed" in record["failure"]
    assert record["model_uri"] is None


def test_delete_stops_a_running_tuning_job(aws, provider, tmp_path):
    aws.control(steps={"training_job": 50})
    planned, name = _started_elsewhere(aws, provider, tmp_path)
    provider.delete(LiveObject(ADDRESS, "pipeline", "", dict(planned.attributes)))
    assert count(aws, "StopHyperParameterTuningJob") == 1
    assert _tuning(aws, name)["HyperParameterTuningJobStatus"] == "Stopped"
    # a deleted tuning job is not adopted: the next run is the next attempt
    aws.control(steps={})
    live = provider.create(contract.plan(provider, _desired(tmp_path), None))
    second = tuning.tuning_name(provider.handler("pipeline"), ADDRESS, FP1, 2)
    assert live.id.startswith(second + "-")


def test_the_launcher_hands_the_script_a_trials_values(aws, provider, tmp_path):
    """The program SageMaker runs merges SM_HPS (the training toolkit's decoded
    hyperparameters) into MLFORM_HYPERPARAMETERS and runs the entrypoint as __main__."""
    provider.create(contract.plan(provider, _desired(tmp_path), None))
    [name] = _tuning_names(aws)
    static = _tuning(aws, name)["TrainingJobDefinition"]["StaticHyperParameters"]
    bucket, key = json.loads(static["sagemaker_submit_directory"])[5:].split("/", 1)
    archive = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    code = tmp_path / "code"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive))) as tar:
        tar.extractall(code, filter="data")
    assert sorted(p.name for p in code.iterdir()) == ["_mlform_sweep.py", "train.py"]
    env = {**os.environ, "SM_HPS": json.dumps({"lr": 0.5, "opt": "sgd", "epochs": 5,
                                               "sagemaker_program": "_mlform_sweep.py"}),
           "MLFORM_HYPERPARAMETERS": json.dumps({"epochs": 5}),
           "SM_TRAINING_ENV": json.dumps({"job_name": f"{name}-003-abcd1234"})}
    out = subprocess.run([sys.executable, "_mlform_sweep.py"], cwd=code, env=env,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"hp": {"epochs": 5, "lr": 0.5, "opt": "sgd"},
                                      "run": f"{name}-003-abcd1234", "name": "__main__"}


def test_sagemakers_limits_are_diagnostics(provider, tmp_path):
    def errors(**sweep):
        return [(d.summary, d.address, d.hint) for d in contract.validate(
            provider, _desired(tmp_path, sweep={**SWEEP, **sweep}))]

    assert errors(trials=800, parallel=120) == [
        (f"{ADDRESS}: sweep.trials is 800, more than the 750 training jobs a SageMaker tuning "
         "job runs (MaxNumberOfTrainingJobs)", ADDRESS, "Set trials to at most 750."),
        (f"{ADDRESS}: sweep.parallel is 120, more than the 100 training jobs a SageMaker "
         "tuning job runs at once (MaxParallelTrainingJobs)", ADDRESS,
         "Set parallel to at most 100.")]
    many = {f"p{i}": {"type": "float", "min": 0.0, "max": 1.0} for i in range(31)}
    assert [e[0] for e in errors(parameters=many)] == [
        f"{ADDRESS}: sweep.parameters has 31 parameters, more than the 30 ranges a SageMaker "
        "tuning job searches"]
    wide = {"c": {"type": "categorical", "values": list(range(31))},
            "s": {"type": "int", "min": 0, "max": 100, "step": 2}}
    assert [e[0] for e in errors(parameters=wide)] == [
        f"{ADDRESS}: sweep.parameters.c has 31 values, more than the 30 values a SageMaker "
        "categorical range takes",
        f"{ADDRESS}: sweep.parameters.s has 51 steps of 2 (SageMaker's integer ranges have no "
        "step, so they are searched as a categorical list), more than the 30 values a "
        "SageMaker categorical range takes"]
    assert errors(trials=750, parallel=100) == []


# -- through the CLI: the quickstart on the sagemaker environment --------------------------

CLI_SWEEP = '''  gate            = { metric = "accuracy", min = 0.85 }
  sweep = {
    objective = "accuracy"
    direction = "maximize"
    trials    = TRIALS
    parallel  = 1
    parameters = { lr = { type = "categorical", values = [0.001, 0.5] } }
  }
}'''


def _with_sweep(stack, trials: int) -> None:
    """Put a sweep of `trials` on the quickstart's pipeline (lr leaves hyperparameters)."""
    main = stack / "main.hcl"
    text = main.read_text().replace("lr = 0.01, ", "")
    gate = '  gate            = { metric = "accuracy", min = 0.85 }\n}'
    if gate in text:
        text = text.replace(gate, CLI_SWEEP)
    text = "\n".join(line if not line.startswith("    trials    =") else
                     f"    trials    = {trials}" for line in text.splitlines()) + "\n"
    main.write_text(text.replace("TRIALS", str(trials)))


def test_the_quickstart_sweeps_on_sagemaker_and_runs_list_shows_the_trials(aws, stack):
    _with_sweep(stack, 800)
    checked = cli(stack, aws, "plan")
    assert checked.code == 1 and "Traceback" not in checked.output
    assert "sweep.trials is 800, more than the 750 training jobs" in checked.output
    block = next(n for n, line in enumerate((stack / "main.hcl").read_text().splitlines(), 1)
                 if line.startswith('pipeline "train"'))
    assert f"at main.hcl:{block}:1" in checked.output, checked.output   # the pipeline's block
    assert "hint: Set trials to at most 750." in checked.output

    aws.control(training_metrics={"accuracy": 0.5}, planted_metrics=PLANTED)
    _with_sweep(stack, 3)
    applied = cli(stack, aws, "apply", "--auto-approve")
    assert applied.code == 0, applied.output
    listed = cli(stack, aws, "runs", "list", "pipeline.train", "--json")
    assert listed.code == 0, listed.output
    runs = json.loads(listed.stdout)["runs"]
    [sweep] = [r for r in runs if r["sweep"] and "tuning_job" in r["sweep"]]
    trials = [r for r in runs if r["sweep"] and "trial" in r["sweep"]]
    assert len(runs) == 4 and len(trials) == 3
    assert sweep["status"] == "succeeded" and sweep["sweep"]["best_parameters"] == {"lr": 0.5}
