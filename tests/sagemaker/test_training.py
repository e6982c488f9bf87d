"""`pipeline` on the sagemaker provider: training jobs against the emulator.

The emulator runs no code: a job goes InProgress for `steps["training_job"]` describes,
then Completed with `training_metrics` as its FinalMetricDataList, or Failed with the
reason `fail_training` gives for a substring of its name (tests/emulator/moto_plugin.py).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest

from mlform.expr.values import UNKNOWN
from mlform.providers.base import Desired, LiveObject, ProgressEvent, ProviderError
from mlform.providers.sagemaker.pipelines import metric_regex
from mlform.providers.kit import calls as contract

from ._provider import BUCKET, apply, build, count, keys, settings_summaries

ADDRESS = "pipeline.train"
FP1 = "sha256:" + "a1" * 32
FP2 = "sha256:" + "b2" * 32
TRAIN = 'import json\nprint(json.dumps({"accuracy": 0.93}))\n'


@pytest.fixture
def provider(aws, tmp_path):
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tx.csv").write_text("amount,label\n1,0\n2,1\n")
    aws.control(training_metrics={"accuracy": 0.93, "loss": 0.2})
    return build(aws, tmp_path)


def _attrs(tmp_path, fingerprint: str = FP1, **extra) -> dict:
    return {"fingerprint": fingerprint, "entrypoint": "train.py",
            "entrypoint_sha256": hashlib.sha256((tmp_path / "train.py").read_bytes()).hexdigest(),
            "hyperparameters": {"epochs": 5, "lr": 0.01, "optimizer": "adam"},
            "gate": {"metric": "accuracy", "min": 0.85}, **extra}


def _desired(attrs: dict) -> Desired:
    return Desired(ADDRESS, "pipeline", "train", attrs)


def _describe(aws, name: str) -> dict:
    return aws.client("sagemaker").describe_training_job(TrainingJobName=name)


def _tags(aws, arn: str) -> dict:
    return {t["Key"]: t["Value"] for t in aws.client("sagemaker").list_tags(ResourceArn=arn)["Tags"]}


def test_training_job_request_from_cluster_profile_and_inputs(aws, provider, tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "helpers.py").write_text("X = 1\n")
    dataset = apply(provider, "dataset", "dataset.tx", {"source": "./data/tx.csv"})
    apply(provider, "training_cluster", "training_cluster.gpu",
          {"accelerator": "nvidia-a10g", "gpus_per_node": 1, "nodes": 2, "spot": True,
           "max_runtime_seconds": 7200, "settings": {"max_wait_seconds": 10800, "volume_gb": 80}})
    attrs = _attrs(tmp_path,
                   cluster={"address": "training_cluster.gpu", "accelerator": "nvidia-a10g",
                            "gpus_per_node": 1, "nodes": 2, "instance_type": None},
                   inputs={"train": {"address": "dataset.tx", "uri": dataset.id,
                                     "digest": dataset.attributes["digest"], "format": "csv"},
                           "extra": "s3://raw-data/features/"},
                   environment={"LOG_LEVEL": "debug"}, timeout_seconds=3600,
                   tags={"team": "risk"},
                   settings={"image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/train:1",
                             "source_dir": "lib", "sagemaker_pipeline": True})
    assert contract.validate(provider, _desired(attrs)) == []
    planned = contract.plan(provider, _desired(attrs), None)
    name = planned.attributes["run_id"]
    assert name.endswith(f"-{FP1[7:17]}-1") and len(name) <= 63
    live = provider.create(planned)
    assert live.id == name and live.attributes["metrics"] == {"accuracy": 0.93, "loss": 0.2}
    assert live.attributes["model_uri"].endswith(f"/{name}/output/model.tar.gz")
    assert live.attributes["stale"] is None

    job = _describe(aws, name)
    assert job["AlgorithmSpecification"]["TrainingImage"] == attrs["settings"]["image"]
    assert job["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert job["RoleArn"] == "arn:aws:iam::123456789012:role/mlform-test"
    assert {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
            for c in job["InputDataConfig"]} == {"train": dataset.id,
                                                  "extra": "s3://raw-data/features/"}
    hyper = job["HyperParameters"]
    assert {k: json.loads(v) for k, v in hyper.items() if not k.startswith("sagemaker_")} == \
        attrs["hyperparameters"]
    assert hyper["optimizer"] == '"adam"' and hyper["epochs"] == "5"
    assert json.loads(hyper["sagemaker_program"]) == "train.py"
    code_uri = json.loads(hyper["sagemaker_submit_directory"])
    assert code_uri.startswith(f"s3://{BUCKET}/mlform/shop/test/code/")
    assert job["ResourceConfig"] == {"InstanceType": "ml.g5.xlarge", "InstanceCount": 2,
                                     "VolumeSizeInGB": 80}
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 10800}
    assert job["EnableManagedSpotTraining"] is True
    assert job["CheckpointConfig"]["S3Uri"].endswith(f"/{name}/checkpoints/")
    assert job["OutputDataConfig"]["S3OutputPath"] == \
        f"s3://{BUCKET}/mlform/shop/test/runs/{provider.env.name(ADDRESS)}/"
    env = job["Environment"]
    assert env["LOG_LEVEL"] == "debug" and env["MLFORM_OUTPUT_DIR"] == "/opt/ml/model"
    assert env["MLFORM_INPUT_TRAIN"] == "/opt/ml/input/data/train/tx.csv"
    assert env["MLFORM_INPUT_EXTRA"] == "/opt/ml/input/data/extra"
    assert env["MLFORM_DEVICE"] == "cuda" and env["MLFORM_RUN_ID"] == name
    assert json.loads(env["MLFORM_HYPERPARAMETERS"]) == attrs["hyperparameters"]
    # the gate's metric, matched in the JSON line the run contract prints
    assert job["AlgorithmSpecification"]["MetricDefinitions"] == [
        {"Name": "accuracy", "Regex": metric_regex("accuracy")}]
    # the SageMaker Pipeline's step is the same request
    step = json.loads(aws.client("sagemaker").describe_pipeline(
        PipelineName=provider.env.name(ADDRESS, "pl"))["PipelineDefinition"])["Steps"][0]
    assert {k: step["Arguments"][k] for k in ("Environment", "HyperParameters")} == \
        {"Environment": env, "HyperParameters": hyper}
    assert step["Arguments"]["AlgorithmSpecification"] == job["AlgorithmSpecification"]
    assert _tags(aws, job["TrainingJobArn"]) == {
        "mlform:stack": "shop", "mlform:env": "test", "mlform:address": ADDRESS, "team": "risk"}

    # the code archive: the entrypoint beside source_dir's files, reproducible bytes
    key = code_uri.split(f"s3://{BUCKET}/", 1)[1]
    archive = aws.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive))) as tar:
        assert sorted(tar.getnames()) == ["helpers.py", "train.py"]
        assert tar.extractfile("train.py").read().decode() == TRAIN
    assert key == f"mlform/shop/test/code/{hashlib.sha256(archive).hexdigest()}/sourcedir.tar.gz"


def test_no_cluster_runs_on_one_cpu_instance(aws, provider, tmp_path):
    live = apply(provider, "pipeline", ADDRESS, _attrs(tmp_path))
    job = _describe(aws, live.id)
    assert job["ResourceConfig"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1,
                                     "VolumeSizeInGB": 30}
    assert job["EnableManagedSpotTraining"] is False
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    assert job["AlgorithmSpecification"]["TrainingImage"].startswith(
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:")


def test_cluster_not_applied_is_an_error(aws, provider, tmp_path):
    attrs = _attrs(tmp_path, cluster={"address": "training_cluster.nope", "accelerator": "cpu",
                                      "gpus_per_node": 0, "nodes": 1, "instance_type": None})
    with pytest.raises(ProviderError, match="the profile of training_cluster.nope is not in"):
        apply(provider, "pipeline", ADDRESS, attrs)
    assert count(aws, "CreateTrainingJob") == 0


def test_status_progress_and_retried_create_adopts(aws, provider, tmp_path):
    aws.control(steps={"training_job": 3})
    events: list[ProgressEvent] = []
    provider = build(aws, tmp_path, progress=events.append)
    planned = contract.plan(provider, _desired(_attrs(tmp_path)), None)
    live = provider.create(planned)
    messages = [e.message for e in events]
    assert f"training job {live.id}: InProgress" in messages
    assert f"training job {live.id}: Completed" in messages
    again = provider.create(planned)                     # a retried create
    assert again.id == live.id and again.attributes == live.attributes
    assert count(aws, "CreateTrainingJob") == 1


class _Killed(BaseException):
    """Stands for the process being killed while it waits on the job."""


def test_create_cut_off_while_waiting_is_recovered_and_adopted(aws, tmp_path):
    (tmp_path / "train.py").write_text(TRAIN)
    aws.control(steps={"training_job": 2}, training_metrics={"accuracy": 0.9})

    def kill_on_wait(event: ProgressEvent) -> None:
        if event.message.endswith(": InProgress"):
            raise _Killed()

    crashing = build(aws, tmp_path, progress=kill_on_wait)
    attrs = _attrs(tmp_path, tags={"team": "risk"})
    with pytest.raises(_Killed):
        crashing.create(contract.plan(crashing, _desired(attrs), None))

    provider = build(aws, tmp_path)
    found = provider.read(LiveObject(ADDRESS, "pipeline", None, {}))   # the engine's recovery
    assert found is not None and found.attributes["model_uri"] is None
    assert {k: found.attributes[k] for k in attrs} == attrs            # from the run record
    planned = contract.plan(provider, _desired(attrs), found)
    assert planned.reasons == (f"its run {found.id} did not complete",)
    assert planned.attributes["run_id"] == found.id
    live = provider.update(found, planned)
    assert live.id == found.id and live.attributes["metrics"] == {"accuracy": 0.9}
    assert count(aws, "CreateTrainingJob") == 1
    assert provider.read(LiveObject(ADDRESS, "pipeline", None, {})).attributes == live.attributes


def test_failed_job_reports_the_reason_and_the_next_create_starts_attempt_2(aws, provider, tmp_path):
    aws.control(fail_training={f"{FP1[7:17]}-1": "AlgorithmError: CUDA out of memory"})
    planned = contract.plan(provider, _desired(_attrs(tmp_path)), None)
    first = planned.attributes["run_id"]
    with pytest.raises(ProviderError) as caught:
        provider.create(planned)
    assert str(caught.value) == f"training job {first} ended Failed: AlgorithmError: CUDA out of memory"
    assert provider.read(LiveObject(ADDRESS, "pipeline", None, {})) is None   # nothing usable

    planned = contract.plan(provider, _desired(_attrs(tmp_path)), None)
    assert planned.attributes["run_id"] == first[:-1] + "2"
    live = provider.create(planned)
    assert live.id == first[:-1] + "2" and count(aws, "CreateTrainingJob") == 2


def test_gate_miss_publishes_nothing(aws, provider, tmp_path):
    aws.control(training_metrics={"accuracy": 0.8})
    planned = contract.plan(provider, _desired(_attrs(tmp_path)), None)
    with pytest.raises(ProviderError) as caught:
        provider.create(planned)
    name = planned.attributes["run_id"]
    assert str(caught.value) == f"gate failed: accuracy 0.80 < min 0.85 (training job {name})"
    assert "print(json.dumps(metrics))" in caught.value.service_message

    # the gate is not in the fingerprint: a looser gate judges the same job, no new run
    looser = _attrs(tmp_path, gate={"metric": "accuracy", "min": 0.75})
    live = apply(provider, "pipeline", ADDRESS, looser)
    assert live.id == name and count(aws, "CreateTrainingJob") == 1

    missing = _attrs(tmp_path, gate={"metric": "auc", "min": 0.5})
    with pytest.raises(ProviderError, match=r"gate failed: metric 'auc' was not reported "
                                            r"\(metrics: accuracy\)"):
        provider.update(live, contract.plan(provider, _desired(missing), live))


def test_fingerprint_change_is_a_new_job_and_tags_change_in_place(aws, provider, tmp_path):
    live = apply(provider, "pipeline", ADDRESS, _attrs(tmp_path, tags={"team": "risk"}))
    unchanged = contract.plan(provider, _desired(_attrs(tmp_path, tags={"team": "risk"})), live)
    assert unchanged.attributes == {**live.attributes}

    aws.clear_calls()
    retagged = apply(provider, "pipeline", ADDRESS, _attrs(tmp_path, tags={"owner": "ana"}),
                     prior=live)
    assert retagged.id == live.id
    assert [c["action"] for c in aws.mutating_calls() if c["service"] == "sagemaker"] == [
        "AddTags", "DeleteTags"]
    assert _tags(aws, live.attributes["job_arn"])["owner"] == "ana"
    assert "team" not in _tags(aws, live.attributes["job_arn"])

    planned = contract.plan(provider, _desired(_attrs(tmp_path, FP2, tags={"owner": "ana"})), retagged)
    assert planned.attributes["run_id"].endswith(f"-{FP2[7:17]}-1")
    assert planned.attributes["model_uri"] is UNKNOWN
    updated = provider.update(retagged, planned)
    assert updated.id == planned.attributes["run_id"] != live.id
    assert count(aws, "CreateTrainingJob") == 1          # since the calls were cleared


def test_plan_is_read_only_and_unknown_fingerprint_leaves_outputs_unknown(aws, provider, tmp_path):
    aws.clear_calls()
    planned = contract.plan(provider, _desired(_attrs(tmp_path, UNKNOWN)), None)
    assert all(planned.attributes[k] is UNKNOWN for k in ("run_id", "model_uri", "metrics",
                                                          "job_arn"))
    contract.plan(provider, _desired(_attrs(tmp_path)), None)
    assert aws.mutating_calls() == []


def test_validate_settings_and_inputs(provider, tmp_path):
    assert settings_summaries("pipeline", ADDRESS, {"imag": "x"}) == [
        'Invalid settings for pipeline.train: unknown setting "imag"']
    found = contract.validate(provider, _desired(_attrs(tmp_path,
                                                        inputs={"train": "./data/tx.csv"})))
    assert [d.summary for d in found] == [
        "pipeline.train: inputs.train is './data/tx.csv', but SageMaker training reads S3: give "
        "a dataset (on the sagemaker provider) or an s3:// URI"]
    big = _attrs(tmp_path, hyperparameters={"vocab": "x" * 600})
    assert "more than the 512 SageMaker allows" in contract.validate(provider, _desired(big))[0].summary


def test_sagemaker_pipeline_definition(aws, provider, tmp_path):
    attrs = _attrs(tmp_path, settings={"sagemaker_pipeline": True, "metrics": ["loss"]})
    live = apply(provider, "pipeline", ADDRESS, attrs)
    name = provider.env.name(ADDRESS, "pl")
    described = aws.client("sagemaker").describe_pipeline(PipelineName=name)
    definition = json.loads(described["PipelineDefinition"])
    [step] = definition["Steps"]
    assert step["Type"] == "Training"
    args = step["Arguments"]
    assert args["AlgorithmSpecification"]["MetricDefinitions"] == [
        {"Name": "accuracy", "Regex": '"accuracy":\\s*(-?[0-9]+(?:\\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)'},
        {"Name": "loss", "Regex": '"loss":\\s*(-?[0-9]+(?:\\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)'}]
    assert args["HyperParameters"] == _describe(aws, live.id)["HyperParameters"]
    assert "TrainingJobName" not in args
    assert described["RoleArn"] == "arn:aws:iam::123456789012:role/mlform-test"
    assert _tags(aws, described["PipelineArn"])["mlform:address"] == ADDRESS

    # a new run updates the definition; switching the setting off deletes it
    live = apply(provider, "pipeline", ADDRESS, _attrs(tmp_path, FP2, settings=attrs["settings"]),
                 prior=live)
    assert count(aws, "UpdatePipeline") == 1
    apply(provider, "pipeline", ADDRESS, _attrs(tmp_path, FP2), prior=live)
    assert count(aws, "DeletePipeline") == 1
    assert aws.client("sagemaker").list_pipelines()["PipelineSummaries"] == []


def test_metric_regex_matches_the_json_line_the_run_contract_prints():
    import re

    line = json.dumps({"accuracy": 0.9312, "val_loss": -1.5e-07, "epochs": 5})
    assert re.search(metric_regex("accuracy"), line).group(1) == "0.9312"
    assert re.search(metric_regex("val_loss"), line).group(1) == "-1.5e-07"
    assert re.search(metric_regex("epochs"), line).group(1) == "5"
    assert re.search(metric_regex("loss"), line) is None


def test_delete_stops_tags_and_read_treats_as_gone(aws, provider, tmp_path):
    attrs = _attrs(tmp_path, settings={"sagemaker_pipeline": True})
    live = apply(provider, "pipeline", ADDRESS, attrs)
    # a second job of the address, still running when the pipeline is destroyed
    aws.control(steps={"training_job": 50})
    running = provider.env.name(ADDRESS, suffix=f"{FP2[7:17]}-1")
    aws.client("sagemaker").create_training_job(
        TrainingJobName=running, RoleArn="arn:aws:iam::123456789012:role/mlform-test",
        AlgorithmSpecification={"TrainingImage": "x", "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/out/"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 60}, Tags=provider.env.tags(ADDRESS))
    aws.control(steps={"training_job": 1})

    provider.delete(live)
    assert count(aws, "StopTrainingJob") == 1
    assert _describe(aws, running)["TrainingJobStatus"] == "Stopped"
    for name in (live.id, running):
        assert _tags(aws, _describe(aws, name)["TrainingJobArn"])["mlform:deleted"] == "true"
    assert aws.client("sagemaker").list_pipelines()["PipelineSummaries"] == []
    assert provider.read(live) is None
    assert provider.read(LiveObject(ADDRESS, "pipeline", None, {})) is None
    provider.delete(live)                                   # absent already: success

    # created again: a new attempt, never the deleted job
    again = apply(provider, "pipeline", ADDRESS, attrs)
    assert again.id == live.id[:-1] + "2"


def test_stale_marker_marks_the_current_job_and_plan_reruns(aws, provider, tmp_path):
    from mlform.providers.sagemaker.env import stale_key
    from mlform.providers.sagemaker.pipelines import mark_stale

    live = apply(provider, "pipeline", ADDRESS, _attrs(tmp_path))
    assert provider.read(live).attributes["stale"] is None
    mark_stale(provider.env, ADDRESS, reason="drift: psi amount = 0.47 > 0.2", run_id=live.id)
    stale = provider.read(live)
    assert stale.attributes["stale"] == "drift: psi amount = 0.47 > 0.2"
    planned = contract.plan(provider, _desired(_attrs(tmp_path)), stale)
    assert planned.reasons == ("drift: psi amount = 0.47 > 0.2",)
    assert planned.attributes["run_id"] == live.id[:-1] + "2"
    rerun = provider.update(stale, planned)
    assert rerun.id == live.id[:-1] + "2" and rerun.attributes["stale"] is None
    assert provider.read(rerun).attributes["stale"] is None
    assert stale_key(provider.env, ADDRESS) in keys(aws)


def test_foreign_or_untagged_job_under_the_name_is_refused(aws, provider, tmp_path):
    name = contract.plan(provider, _desired(_attrs(tmp_path)), None).attributes["run_id"]
    sm = aws.client("sagemaker")
    sm.create_training_job(
        TrainingJobName=name, RoleArn="arn:aws:iam::123456789012:role/mlform-test",
        AlgorithmSpecification={"TrainingImage": "x", "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/out/"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 60},
        Tags=[{"Key": "mlform:stack", "Value": "other"}, {"Key": "mlform:env", "Value": "test"},
              {"Key": "mlform:address", "Value": ADDRESS}])
    with pytest.raises(ProviderError, match="belongs to stack 'other'"):
        provider.read(LiveObject(ADDRESS, "pipeline", name, {}))
    with pytest.raises(ProviderError, match="belongs to stack 'other'"):
        provider.create(contract.plan(provider, _desired(_attrs(tmp_path)), None))
    arn = _describe(aws, name)["TrainingJobArn"]
    sm.delete_tags(ResourceArn=arn, TagKeys=["mlform:stack", "mlform:env", "mlform:address"])
    with pytest.raises(ProviderError, match="carries no mlform ownership tags"):
        provider.read(LiveObject(ADDRESS, "pipeline", name, {}))


def test_marker_written_by_the_drift_check_names_the_fingerprint(aws, provider, tmp_path):
    from mlform.providers.sagemaker.env import stale_key

    live = apply(provider, "pipeline", ADDRESS, _attrs(tmp_path))
    other = apply(provider, "pipeline", "pipeline.other", _attrs(tmp_path))
    # what providers/sagemaker/drift_check.py writes on a breach: untagged, no run_id
    aws.client("s3").put_object(Bucket=BUCKET, Key=stale_key(provider.env, ADDRESS),
                                Body=json.dumps({"reason": "monitor.drift found drift: psi",
                                                 "fingerprint": FP1}).encode())
    stale = provider.read(live)
    assert stale.attributes["stale"] == "monitor.drift found drift: psi"
    assert provider.read(other).attributes["stale"] is None
    planned = contract.plan(provider, _desired(_attrs(tmp_path)), stale)
    assert planned.reasons == ("monitor.drift found drift: psi",)
    assert planned.attributes["run_id"] == live.id[:-1] + "2"
    # a marker naming another fingerprint leaves the current job alone
    aws.client("s3").put_object(Bucket=BUCKET, Key=stale_key(provider.env, ADDRESS),
                                Body=json.dumps({"reason": "old", "fingerprint": FP2}).encode())
    assert provider.read(live).attributes["stale"] is None
