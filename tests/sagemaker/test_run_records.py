"""Run records on the sagemaker provider: one object per training job in the bucket,
written before the job starts and closed when it ends, listed with one S3 listing
(against the emulator: moto in server mode, tests/emulator)."""

from __future__ import annotations

import hashlib

import pytest

from mlform.providers.base import Desired, ProviderError
from mlform.providers.kit import calls as contract
from mlform.providers.kit.run_records import RunRecord

from ._provider import BUCKET, build, count

ADDRESS = "pipeline.train"
FP1 = "sha256:" + "c3" * 32
FP2 = "sha256:" + "d4" * 32


@pytest.fixture
def provider(aws, tmp_path):
    (tmp_path / "train.py").write_text('import json\nprint(json.dumps({"accuracy": 0.93}))\n')
    aws.control(training_metrics={"accuracy": 0.93, "loss": 0.2})
    return build(aws, tmp_path)


def _desired(tmp_path, fingerprint: str = FP1, **extra) -> Desired:
    attrs = {"fingerprint": fingerprint, "entrypoint": "train.py",
             "entrypoint_sha256": hashlib.sha256((tmp_path / "train.py").read_bytes()).hexdigest(),
             "hyperparameters": {"epochs": 5, "lr": 0.01},
             "inputs": {"extra": "s3://raw-data/features/"},
             "gate": {"metric": "accuracy", "min": 0.85}, **extra}
    return Desired(ADDRESS, "pipeline", "train", attrs)


def _record_keys(aws) -> list[str]:
    listed = aws.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="mlform/shop/test/records/")
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_a_finished_job_is_on_record_and_listing_is_one_s3_listing(aws, provider, tmp_path):
    planned = contract.plan(provider, _desired(tmp_path), None)
    live = provider.create(planned)
    name = live.id

    aws.clear_calls()
    [record] = provider.run_records()
    assert count(aws, "ListObjectsV2") == 1 and count(aws, "DescribeTrainingJob") == 0
    RunRecord.model_validate(record)
    assert record["run_id"] == name and record["pipeline"] == ADDRESS
    assert record["provider"] == "sagemaker" and record["status"] == "succeeded"
    assert record["failure"] is None and record["fingerprint"] == FP1
    assert record["parameters"] == {"epochs": 5, "lr": 0.01}
    assert record["metrics"] == {"accuracy": 0.93, "loss": 0.2}
    assert record["inputs"] == {"extra": None}
    assert record["code_digest"] == planned.attributes["entrypoint_sha256"]
    assert record["model_uri"] == live.attributes["model_uri"]
    assert record["artifacts"]["model"] == live.attributes["model_uri"]
    assert record["artifacts"]["output"].endswith(f"/{name}/output/")
    assert record["started"] and record["finished"] and record["duration_seconds"] >= 0
    assert record["steps"] == []   # the provider does not read the job's log
    assert provider.run_records(ADDRESS) == [record]
    assert provider.run_records("pipeline.other") == []

    # the object is the stack environment's, tagged as every object the provider writes
    [key] = _record_keys(aws)
    assert key.endswith(f"/{name}.json")
    tags = {t["Key"]: t["Value"] for t in aws.client("s3").get_object_tagging(
        Bucket=BUCKET, Key=key)["TagSet"]}
    assert tags == provider.env.tag_map(ADDRESS)


def test_a_failed_job_stays_on_record_and_the_retry_is_a_second_record(aws, provider, tmp_path):
    aws.control(fail_training={f"{FP1[7:17]}-1": "AlgorithmError: CUDA out of memory"})
    with pytest.raises(ProviderError):
        provider.create(contract.plan(provider, _desired(tmp_path), None))
    [failed] = provider.run_records(ADDRESS)
    assert failed["status"] == "failed"
    assert failed["failure"] == "AlgorithmError: CUDA out of memory"
    assert failed["model_uri"] is None and failed["finished"]

    live = provider.create(contract.plan(provider, _desired(tmp_path), None))
    records = provider.run_records(ADDRESS)
    assert [(r["run_id"], r["status"]) for r in records] == [
        (failed["run_id"], "failed"), (live.id, "succeeded")]


def test_a_gate_miss_is_a_failed_record_with_its_metrics(aws, provider, tmp_path):
    aws.control(training_metrics={"accuracy": 0.8})
    with pytest.raises(ProviderError, match="gate failed"):
        provider.create(contract.plan(provider, _desired(tmp_path), None))
    [record] = provider.run_records()
    assert record["status"] == "failed" and record["metrics"] == {"accuracy": 0.8}
    assert record["failure"] == "gate failed: accuracy 0.80 < min 0.85"
    assert record["model_uri"] is None


def test_a_run_whose_apply_stopped_is_reported_as_its_job_is(aws, provider, tmp_path):
    """The apply is cut off right after CreateTrainingJob: the record is there, running;
    a listing reports the job's outcome without writing it; the next apply closes it."""
    aws.control(steps={"training_job": 3})
    planned = contract.plan(provider, _desired(tmp_path, FP2), None)
    handler = provider.handler("pipeline")
    handler._start(ADDRESS, dict(planned.attributes), planned.attributes["run_id"])
    name = planned.attributes["run_id"]

    [record] = provider.run_records()
    assert (record["run_id"], record["status"], record["finished"]) == (name, "running", None)
    assert record["processes"] == 1 and record["parameters"] == {"epochs": 5, "lr": 0.01}

    client = aws.client("sagemaker")
    while client.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] != "Completed":
        pass   # each describe moves the emulator's job one step
    [reported] = provider.run_records()
    assert reported["status"] == "succeeded" and reported["metrics"]["accuracy"] == 0.93
    stored = aws.client("s3").get_object(Bucket=BUCKET, Key=_record_keys(aws)[0])
    assert b'"status": "running"' in stored["Body"].read()   # listing writes nothing

    live = provider.create(contract.plan(provider, _desired(tmp_path, FP2), None))
    assert live.id == name and count(aws, "CreateTrainingJob") == 1   # adopted
    aws.clear_calls()
    [closed] = provider.run_records()
    assert closed["status"] == "succeeded" and count(aws, "DescribeTrainingJob") == 0
