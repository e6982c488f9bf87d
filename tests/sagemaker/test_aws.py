"""AWS access shared by every sagemaker handler: retries with backoff, errors that say
what the service said, and whether retrying can help (against the emulator)."""

from __future__ import annotations

import pytest

from mlform.providers.base import ProviderError

from ._provider import BUCKET, apply, build

ADDRESS = "model.fraud"
ARTIFACT = {"address": "pipeline.train", "model_uri": f"s3://{BUCKET}/runs/a/model.tar.gz",
            "fingerprint": "sha256:aa"}


def _attempts(aws, action: str) -> list:
    return [c.get("error") for c in aws.calls() if c["action"] == action]


def test_throttling_and_5xx_answers_are_retried_transparently(aws, tmp_path):
    provider = build(aws, tmp_path)
    aws.clear_calls()
    aws.control(throttle={"CreateModelPackageGroup": 2}, server_error={"CreateModel": 1})
    live = apply(provider, "model", ADDRESS, {"artifact": ARTIFACT, "framework": "torch"})
    assert live.attributes["version"] == 1
    assert _attempts(aws, "CreateModelPackageGroup") == [
        "ThrottlingException", "ThrottlingException", None]
    assert _attempts(aws, "CreateModel") == ["InternalFailure", None]


def test_throttling_beyond_max_attempts_is_a_retryable_provider_error(aws, tmp_path):
    provider = build(aws, tmp_path, max_attempts=2)
    aws.control(throttle={"CreateModelPackageGroup": 5})
    with pytest.raises(ProviderError) as failed:
        apply(provider, "model", ADDRESS, {"artifact": ARTIFACT, "framework": "torch"})
    assert failed.value.retryable
    assert "CreateModelPackageGroup" in failed.value.message
    assert "ThrottlingException" in failed.value.message
    assert failed.value.address == ADDRESS


def test_an_unreachable_endpoint_is_a_retryable_provider_error(aws, tmp_path):
    provider = build(aws, tmp_path, endpoint_url="http://127.0.0.1:9", max_attempts=1)
    with pytest.raises(ProviderError) as failed:
        apply(provider, "model", ADDRESS, {"artifact": ARTIFACT, "framework": "torch"})
    assert failed.value.retryable and "127.0.0.1:9" in failed.value.message
