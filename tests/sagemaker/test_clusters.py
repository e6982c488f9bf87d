"""`training_cluster` on the sagemaker provider: instance table checks and the profile in S3."""

from __future__ import annotations

import json

import pytest

from mlform.expr.values import UNKNOWN
from mlform.providers.base import Desired, LiveObject, ProviderError

from mlform.providers.sagemaker import bucket
from mlform.providers.kit import calls as contract

from ._provider import BUCKET, apply, build, keys, settings_summaries

ADDRESS = "training_cluster.gpu"


@pytest.fixture
def provider(aws, tmp_path):
    return build(aws, tmp_path)


def _desired(attrs: dict) -> Desired:
    return Desired(ADDRESS, "training_cluster", "gpu", attrs)


def _summaries(provider, attrs: dict) -> list[str]:
    return [d.summary for d in contract.validate(provider, _desired(attrs))]


def test_unknown_instance_type_suggests_the_nearest(provider):
    found = contract.validate(provider, _desired({"accelerator": "nvidia-a10g", "gpus_per_node": 1,
                                        "instance_type": "ml.g5.xlarg"}))
    assert [d.summary for d in found] == [
        "training_cluster.gpu: ml.g5.xlarg is not a SageMaker training instance type mlform knows"]
    assert found[0].detail == 'Did you mean "ml.g5.xlarge"?'


def test_accelerator_or_gpu_count_that_the_instance_lacks(provider):
    assert _summaries(provider, {"accelerator": "nvidia-h100", "gpus_per_node": 4,
                                 "instance_type": "ml.p5.48xlarge"}) == [
        "training_cluster.gpu: ml.p5.48xlarge has 8 × NVIDIA H100 80GB HBM3, but the cluster "
        "asks for 4 × nvidia-h100 per node"]
    assert _summaries(provider, {"accelerator": "nvidia-a100", "gpus_per_node": 1,
                                 "instance_type": "ml.g5.xlarge"}) == [
        "training_cluster.gpu: ml.g5.xlarge has 1 × NVIDIA A10G, but the cluster asks for "
        "1 × nvidia-a100 per node"]
    assert _summaries(provider, {"accelerator": "cpu", "instance_type": "ml.g4dn.xlarge"}) == [
        "training_cluster.gpu: ml.g4dn.xlarge has 1 × NVIDIA T4, but the cluster asks for "
        'accelerator = "cpu" (gpus_per_node = 0)']
    assert _summaries(provider, {"accelerator": "nvidia-h100", "gpus_per_node": 8,
                                 "instance_type": "ml.m5.xlarge"}) == [
        "training_cluster.gpu: ml.m5.xlarge has no accelerator (CPU only: 4 vCPUs, 16 GiB), but "
        "the cluster asks for 8 × nvidia-h100 per node"]


@pytest.mark.parametrize("accelerator,gpus,nodes,picked", [
    ("cpu", 0, 1, "ml.m5.xlarge"),
    ("any-gpu", 1, 1, "ml.g4dn.xlarge"),
    ("nvidia-l4", 4, 2, "ml.g6.12xlarge"),
    ("nvidia-a100", 8, 2, "ml.p4d.24xlarge"),
    ("nvidia-a100-80gb", 8, 1, "ml.p4de.24xlarge"),
    ("nvidia-h200", 8, 1, "ml.p5e.48xlarge"),
    ("aws-trainium", 16, 1, "ml.trn1.32xlarge"),
])
def test_instance_type_is_picked_when_unset(provider, accelerator, gpus, nodes, picked):
    attrs = {"accelerator": accelerator, "gpus_per_node": gpus, "nodes": nodes}
    assert contract.validate(provider, _desired(attrs)) == []
    planned = contract.plan(provider, _desired(attrs), None)
    assert planned.attributes["instance_type"] == picked
    assert planned.attributes["gpus_total"] == gpus * nodes


def test_no_instance_with_that_many_gpus(provider):
    found = contract.validate(provider, _desired({"accelerator": "nvidia-h100", "gpus_per_node": 2}))
    assert [d.summary for d in found] == [
        "training_cluster.gpu: no SageMaker training instance type has 2 × nvidia-h100 per node"]
    assert found[0].detail == ("instance types with nvidia-h100: ml.p5.48xlarge (8); "
                               "gpus_per_node can be 8.")
    with pytest.raises(ProviderError, match="no SageMaker training instance type has 2"):
        contract.plan(provider, _desired({"accelerator": "nvidia-h100", "gpus_per_node": 2}), None)


def test_settings_and_spot_rules(provider):
    assert settings_summaries("training_cluster", "training_cluster.gpu",
                              {"warm_pool_seconds": 4000}) == [
        "Invalid settings for training_cluster.gpu: warm_pool_seconds: must be at most 3600, "
        "got 4000"]
    assert settings_summaries("training_cluster", "training_cluster.gpu", {"volume": 30}) == [
        'Invalid settings for training_cluster.gpu: unknown setting "volume"']
    assert _summaries(provider, {"settings": {"max_wait_seconds": 7200}}) == [
        "training_cluster.gpu: settings.max_wait_seconds applies only to spot training "
        "(spot = true)"]
    assert _summaries(provider, {"spot": True, "max_runtime_seconds": 3600,
                                 "settings": {"max_wait_seconds": 60, "warm_pool_seconds": 60}}) == [
        "training_cluster.gpu: warm pools do not work with spot training "
        "(settings.warm_pool_seconds = 60 with spot = true)",
        "training_cluster.gpu: settings.max_wait_seconds = 60 is less than the max runtime "
        "3600; SageMaker requires the wait to cover the runtime"]
    assert _summaries(provider, {"max_runtime_seconds": 30 * 24 * 3600}) == [
        "training_cluster.gpu: max_runtime_seconds = 2592000 is more than SageMaker's limit "
        "of 2419200 (28 days)"]


def test_unknown_shape_plans_unknowns_without_calls(aws, provider):
    aws.clear_calls()
    planned = contract.plan(provider, _desired({"accelerator": UNKNOWN, "gpus_per_node": 1}), None)
    assert planned.attributes["gpus_total"] is UNKNOWN
    assert planned.attributes["instance_type"] is UNKNOWN
    assert aws.calls() == []


def test_profile_written_read_updated_in_place_and_deleted(aws, provider):
    attrs = {"accelerator": "nvidia-a10g", "gpus_per_node": 1, "nodes": 2, "spot": True,
             "max_runtime_seconds": 3600, "settings": {"max_wait_seconds": 7200, "volume_gb": 100},
             "tags": {"team": "ml"}}
    live = apply(provider, "training_cluster", ADDRESS, attrs)
    key = [k for k in keys(aws) if "/clusters/" in k][0]
    assert live.id == f"s3://{BUCKET}/{key}"
    assert key == f"mlform/shop/test/clusters/{provider.env.name(ADDRESS)}.json"
    profile = json.loads(aws.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert {k: profile[k] for k in ("instance_type", "instance_count", "spot",
                                    "max_runtime_seconds", "max_wait_seconds",
                                    "warm_pool_seconds", "volume_gb", "gpus_per_instance")} == {
        "instance_type": "ml.g5.xlarge", "instance_count": 2, "spot": True,
        "max_runtime_seconds": 3600, "max_wait_seconds": 7200, "warm_pool_seconds": 0,
        "volume_gb": 100, "gpus_per_instance": 1}
    assert live.attributes["gpus_total"] == 2
    assert provider.read(LiveObject(ADDRESS, "training_cluster", None, {})).attributes == live.attributes

    # another accelerator: the same profile rewritten, no replacement
    assert provider.kinds["training_cluster"].replace_paths == ()
    changed = apply(provider, "training_cluster", ADDRESS,
                    {"accelerator": "nvidia-l4", "gpus_per_node": 1}, prior=live)
    assert changed.id == live.id and changed.attributes["instance_type"] == "ml.g6.xlarge"

    provider.delete(changed)
    assert provider.read(changed) is None
    provider.delete(changed)


def test_profile_of_another_stack_is_refused(aws, provider):
    key = bucket.cluster_profile(provider.env, ADDRESS)
    aws.client("s3").put_object(Bucket=BUCKET, Key=key, Body=b"{}",
                                Tagging="mlform:stack=other&mlform:env=test&"
                                        f"mlform:address={ADDRESS}")
    with pytest.raises(ProviderError, match="belongs to stack 'other'"):
        provider.read(LiveObject(ADDRESS, "training_cluster", None, {}))
    with pytest.raises(ProviderError, match="refusing to adopt it"):
        apply(provider, "training_cluster", ADDRESS, {})
    with pytest.raises(ProviderError, match="refusing to adopt it"):
        provider.delete(LiveObject(ADDRESS, "training_cluster", None, {}))
