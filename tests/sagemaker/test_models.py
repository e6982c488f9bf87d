"""The sagemaker `model` kind against the emulator: versions, adoption, approval, stage, delete."""

from __future__ import annotations

import pytest

from mlform.expr.values import UNKNOWN
from mlform.providers.base import Desired, LiveObject, ProviderError
from mlform.providers.kit import calls as contract

from ._provider import BUCKET, apply, build, settings_summaries

ADDRESS = "model.fraud"
A1 = f"s3://{BUCKET}/runs/a/model.tar.gz"
A2 = f"s3://{BUCKET}/runs/b/model.tar.gz"


def _attrs(artifact=A1, **extra) -> dict:
    return {"artifact": {"address": "pipeline.train", "model_uri": artifact,
                         "fingerprint": "sha256:aa"}, "framework": "torch", **extra}


def _package(aws, arn: str) -> dict:
    return aws.client("sagemaker").describe_model_package(ModelPackageName=arn)


def _group(provider) -> str:
    return provider.env.name(ADDRESS)


def test_create_registers_a_version_and_a_model(aws, tmp_path):
    provider = build(aws, tmp_path)
    live = apply(provider, "model", ADDRESS, _attrs(stage="staging", description="first"))
    attrs = live.attributes
    assert attrs["version"] == 1 and live.id == attrs["uri"]
    assert attrs["model_name"] == provider.env.model_name(ADDRESS, 1)
    package = _package(aws, attrs["uri"])
    container = package["InferenceSpecification"]["Containers"][0]
    assert container["ModelDataUrl"] == A1
    assert container["Image"] == provider.env.config.image("serving")
    assert package["InferenceSpecification"]["SupportedContentTypes"] == ["application/json"]
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["CustomerMetadataProperties"] == {
        "mlform:stage": "staging", "mlform:artifact": A1, "mlform:description": "first"}
    model = aws.client("sagemaker").describe_model(ModelName=attrs["model_name"])
    assert model["PrimaryContainer"]["ModelPackageName"] == attrs["uri"]
    assert model["ExecutionRoleArn"] == provider.env.config.role_arn
    # read finds the same, with and without the id
    assert provider.read(live).attributes == attrs
    lost = provider.read(LiveObject(ADDRESS, "model", None, {}))
    assert lost.id == live.id and lost.attributes == attrs


def test_plan_of_create_leaves_computed_unknown_and_keeps_the_spec(aws, tmp_path):
    provider = build(aws, tmp_path)
    aws.clear_calls()
    desired = Desired(ADDRESS, "model", "fraud", _attrs())
    planned = contract.plan(provider, desired, None)
    for key in ("version", "uri", "model_name", "group_arn"):
        assert planned.attributes[key] is UNKNOWN
    assert planned.attributes["artifact"] == desired.attributes["artifact"]
    assert not aws.mutating_calls()


def test_retried_create_adopts_the_package(aws, tmp_path):
    provider = build(aws, tmp_path)
    first = apply(provider, "model", ADDRESS, _attrs())
    second = apply(provider, "model", ADDRESS, _attrs())
    assert second.id == first.id and second.attributes == first.attributes
    listed = aws.client("sagemaker").list_model_packages(ModelPackageGroupName=_group(provider))
    assert len(listed["ModelPackageSummaryList"]) == 1


@pytest.mark.parametrize("approval, status", [("approved", "Approved"),
                                              ("pending", "PendingManualApproval"),
                                              ("rejected", "Rejected")])
def test_approval_maps_to_sagemaker_status(aws, tmp_path, approval, status):
    provider = build(aws, tmp_path)
    live = apply(provider, "model", ADDRESS, _attrs(approval=approval))
    assert _package(aws, live.id)["ModelApprovalStatus"] == status
    assert provider.read(live).attributes["approval"] == approval


def test_new_artifact_registers_a_new_version_and_keeps_the_old_model(aws, tmp_path):
    provider = build(aws, tmp_path)
    v1 = apply(provider, "model", ADDRESS, _attrs(stage="production"))
    planned = contract.plan(provider, Desired(ADDRESS, "model", "fraud", _attrs(A2, stage="production")), v1)
    assert planned.attributes["version"] is UNKNOWN
    assert any("new model package version" in r for r in planned.reasons)
    v2 = provider.update(v1, planned)
    assert v2.attributes["version"] == 2 and v2.id != v1.id
    assert v2.attributes["model_name"] == provider.env.model_name(ADDRESS, 2)
    sm = aws.client("sagemaker")
    sm.describe_model(ModelName=provider.env.model_name(ADDRESS, 1))   # kept
    # the stage alias moved to version 2
    assert "mlform:stage" not in (_package(aws, v1.id).get("CustomerMetadataProperties") or {})
    assert _package(aws, v2.id)["CustomerMetadataProperties"]["mlform:stage"] == "production"
    # rolling the artifact back re-selects version 1 instead of registering a third
    back = contract.plan(provider, Desired(ADDRESS, "model", "fraud", _attrs(A1)), v2)
    assert back.attributes["version"] == 1
    v1_again = provider.update(v2, back)
    assert v1_again.id == v1.id
    assert len(sm.list_model_packages(ModelPackageGroupName=_group(provider))[
        "ModelPackageSummaryList"]) == 2


def test_stage_approval_and_description_change_in_place(aws, tmp_path):
    provider = build(aws, tmp_path)
    live = apply(provider, "model", ADDRESS, _attrs(stage="staging", approval="pending"))
    aws.clear_calls()
    desired = _attrs(stage="production", approval="approved", description="promoted")
    planned = contract.plan(provider, Desired(ADDRESS, "model", "fraud", desired), live)
    assert planned.attributes["version"] == 1 and planned.attributes["uri"] == live.id
    updated = provider.update(live, planned)
    assert updated.id == live.id
    mutating = [c["action"] for c in aws.mutating_calls() if c["service"] == "sagemaker"]
    assert mutating == ["UpdateModelPackage"]
    package = _package(aws, live.id)
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["CustomerMetadataProperties"]["mlform:stage"] == "production"
    assert package["CustomerMetadataProperties"]["mlform:description"] == "promoted"
    read = provider.read(updated).attributes
    assert (read["stage"], read["approval"], read["description"]) == \
        ("production", "approved", "promoted")
    # removing the stage removes the metadata property
    dropped = apply(provider, "model", ADDRESS, _attrs(description="promoted"), updated)
    assert "stage" not in provider.read(dropped).attributes
    # an idempotent update makes no sagemaker changes
    aws.clear_calls()
    apply(provider, "model", ADDRESS, _attrs(description="promoted"), dropped)
    assert not [c for c in aws.mutating_calls() if c["service"] == "sagemaker"]


def test_out_of_band_approval_and_tags_read_as_drift_and_heal(aws, tmp_path):
    provider = build(aws, tmp_path)
    live = apply(provider, "model", ADDRESS, _attrs(tags={"team": "risk"}))
    sm = aws.client("sagemaker")
    sm.update_model_package(ModelPackageArn=live.id, ModelApprovalStatus="Rejected")
    group_arn = live.attributes["group_arn"]
    sm.add_tags(ResourceArn=group_arn, Tags=[{"Key": "team", "Value": "ops"}])
    read = provider.read(live)
    assert read.attributes["approval"] == "rejected"
    assert read.attributes["tags"] == {"team": "ops"}
    healed = apply(provider, "model", ADDRESS, _attrs(tags={"team": "risk"}), read)
    assert provider.read(healed).attributes["approval"] == "approved"
    assert provider.read(healed).attributes["tags"] == {"team": "risk"}


def test_deleted_model_reads_as_drift_and_update_recreates_it(aws, tmp_path):
    provider = build(aws, tmp_path)
    live = apply(provider, "model", ADDRESS, _attrs())
    aws.client("sagemaker").delete_model(ModelName=live.attributes["model_name"])
    read = provider.read(live)
    assert read.attributes["model_name"] is None
    planned = contract.plan(provider, Desired(ADDRESS, "model", "fraud", _attrs()), read)
    assert planned.attributes["model_name"] == provider.env.model_name(ADDRESS, 1)
    provider.update(read, planned)
    aws.client("sagemaker").describe_model(ModelName=live.attributes["model_name"])


def test_foreign_group_is_refused(aws, tmp_path):
    provider = build(aws, tmp_path)
    aws.client("sagemaker").create_model_package_group(
        ModelPackageGroupName=_group(provider),
        Tags=[{"Key": "mlform:stack", "Value": "other"}, {"Key": "mlform:env", "Value": "prod"},
              {"Key": "mlform:address", "Value": ADDRESS}])
    with pytest.raises(ProviderError, match="belongs to stack 'other'"):
        apply(provider, "model", ADDRESS, _attrs())


def test_validate_refuses_non_s3_artifacts_and_bad_settings(aws, tmp_path):
    provider = build(aws, tmp_path)
    found = contract.validate(provider, Desired(ADDRESS, "model", "fraud",
                                                {"artifact": "file:///tmp/model"}))
    assert "not an s3:// URI" in " ".join(d.detail for d in found)
    assert settings_summaries("model", ADDRESS, {"gpu": 1}) == [
        f'Invalid settings for {ADDRESS}: unknown setting "gpu"']
    assert contract.validate(provider, Desired(ADDRESS, "model", "fraud", _attrs())) == []


def test_delete_removes_models_packages_and_group(aws, tmp_path):
    provider = build(aws, tmp_path)
    v1 = apply(provider, "model", ADDRESS, _attrs())
    v2 = apply(provider, "model", ADDRESS, _attrs(A2), v1)
    provider.delete(v2)
    sm = aws.client("sagemaker")
    assert not sm.list_models()["Models"]
    assert not sm.list_model_package_groups()["ModelPackageGroupSummaryList"]
    assert provider.read(v2) is None
    assert provider.read(LiveObject(ADDRESS, "model", None, {})) is None
    provider.delete(v2)          # absent already: success
