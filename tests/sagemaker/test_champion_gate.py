"""The champion/challenger gate on the sagemaker provider, against the emulator: the
registry records each version's lineage as package metadata, and a training job must
beat the package in the stage (tests/emulator: a job completes with `training_metrics`)."""

from __future__ import annotations

import hashlib

import pytest

from mlform.providers.base import Desired, ProviderError
from mlform.providers.kit import calls as contract

from ._provider import BUCKET, apply, build

PIPELINE, MODEL = "pipeline.train", "model.fraud"
GATE = {"metric": "auc", "must_beat": "production", "margin": 0.01}


@pytest.fixture
def provider(aws, tmp_path):
    (tmp_path / "train.py").write_text('import json\nprint(json.dumps({"auc": 0.8}))\n')
    return build(aws, tmp_path)


def _attrs(tmp_path, number: int, gate: dict) -> dict:
    return {"fingerprint": "sha256:" + f"{number:02d}" * 32, "entrypoint": "train.py",
            "entrypoint_sha256": hashlib.sha256((tmp_path / "train.py").read_bytes()).hexdigest(),
            "inputs": {"train": {"address": "dataset.tx", "digest": "sha256:" + "d" * 64,
                                 "uri": f"s3://{BUCKET}/data/tx.csv"}},
            "hyperparameters": {"n": number}, "gate": gate}


def _model(run) -> dict:
    return {"artifact": run.attributes["model_uri"], "framework": "torch", "stage": "production"}


def _stages(aws, group: str) -> dict[int, str | None]:
    sm = aws.client("sagemaker")
    out = {}
    for p in sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]:
        meta = sm.describe_model_package(ModelPackageName=p["ModelPackageArn"]).get(
            "CustomerMetadataProperties") or {}
        out[p["ModelPackageVersion"]] = meta.get("mlform:stage")
    return out


def test_a_worse_job_publishes_nothing_and_a_better_one_is_promoted(aws, provider, tmp_path):
    # the first run: no champion, a warning at plan, the job passes and is registered
    aws.control(training_metrics={"auc": 0.80})
    first = Desired(PIPELINE, "pipeline", "train", _attrs(tmp_path, 1, GATE))
    [warning] = contract.validate(provider, first)
    assert warning.severity == "warning" and "'production'" in warning.summary
    run1 = apply(provider, "pipeline", PIPELINE, _attrs(tmp_path, 1, GATE))
    model = apply(provider, "model", MODEL, _model(run1))
    group = provider.env.name(MODEL)
    meta = aws.client("sagemaker").describe_model_package(
        ModelPackageName=model.attributes["uri"])["CustomerMetadataProperties"]
    # the registry recorded the job's metrics, data and code digests
    assert meta["mlform:metric:auc"] == "0.8" and meta["mlform:run"] == run1.attributes["run_id"]
    assert meta["mlform:pipeline"] == PIPELINE and meta["mlform:data:train"] == "sha256:" + "d" * 64
    assert meta["mlform:code"] == run1.attributes["entrypoint_sha256"]

    # a worse job: nothing is published, both numbers are said
    aws.control(training_metrics={"auc": 0.805})
    worse = _attrs(tmp_path, 2, GATE)
    planned = contract.plan(provider, Desired(PIPELINE, "pipeline", "train", worse), run1)
    assert planned.reasons[-1] == ("the run must beat production (model.fraud version 1) "
                                   "auc 0.8 + margin 0.01")
    with pytest.raises(ProviderError) as caught:
        provider.update(run1, planned)
    assert str(caught.value).startswith(
        "gate failed: auc 0.805 does not beat production (model.fraud version 1) "
        "auc 0.80 + margin 0.01 (training job ")
    assert _stages(aws, group) == {1: "production"}

    # a better one passes; the model moves the stage to its new version
    aws.control(training_metrics={"auc": 0.82})
    run3 = apply(provider, "pipeline", PIPELINE, _attrs(tmp_path, 3, GATE), run1)
    assert run3.attributes["metrics"] == {"auc": 0.82}
    promoted = apply(provider, "model", MODEL, _model(run3), model)
    assert promoted.attributes["version"] == 2
    assert _stages(aws, group) == {1: None, 2: "production"}


def test_minimize_against_the_models_fed_by_this_pipeline(aws, provider, tmp_path):
    gate = {"metric": "loss", "must_beat": "production", "goal": "minimize"}
    aws.control(training_metrics={"loss": 0.30})
    run1 = apply(provider, "pipeline", PIPELINE, _attrs(tmp_path, 1, gate))
    apply(provider, "model", MODEL, _model(run1))
    aws.control(training_metrics={"loss": 0.31})
    with pytest.raises(ProviderError, match=r"^gate failed: loss 0.31 does not beat production "
                                            r"\(model.fraud version 1\) loss 0.30 \(training"):
        apply(provider, "pipeline", PIPELINE, _attrs(tmp_path, 2, gate), run1)
    aws.control(training_metrics={"loss": 0.2})
    assert apply(provider, "pipeline", PIPELINE, _attrs(tmp_path, 3, gate), run1) \
        .attributes["metrics"] == {"loss": 0.2}
