"""The sagemaker `endpoint` kind against the emulator: waits, failures, blue/green updates
with rollback, drift of weights, counts and tags, autoscaling, ownership, delete."""

from __future__ import annotations

import pytest

from mlform.expr.values import UNKNOWN, contains_unknown
from mlform.providers.base import Desired, LiveObject, ProviderError
from mlform.providers.kit import calls as contract

from ._provider import BUCKET, apply, build, settings_summaries

ADDRESS = "endpoint.fraud"
MODEL = "model.fraud"


def _model(provider, artifact: str, prior: LiveObject | None = None) -> LiveObject:
    attrs = {"artifact": {"address": "pipeline.train", "model_uri": artifact,
                          "fingerprint": "sha256:aa"}}
    return apply(provider, "model", MODEL, attrs, prior)


def _ref(model: LiveObject) -> dict:
    a = model.attributes
    return {"address": MODEL, "uri": a["uri"], "version": a["version"], "approval": "approved"}


def _endpoint(model: LiveObject, **extra) -> dict:
    return {"model": _ref(model), **extra}


@pytest.fixture
def setup(aws, tmp_path):
    events: list = []
    provider = build(aws, tmp_path, progress=events.append)
    v1 = _model(provider, f"s3://{BUCKET}/runs/a/model.tar.gz")
    return provider, v1, events


def _statuses(aws, action: str = "DescribeEndpoint") -> list:
    return [c.get("status") for c in aws.calls() if c["action"] == action]


def test_create_waits_for_in_service_and_reads_back(aws, setup):
    provider, v1, events = setup
    aws.control(steps={"endpoint": 3})
    aws.clear_calls()
    live = apply(provider, "endpoint", ADDRESS, _endpoint(v1, replicas=2, tags={"team": "risk"}))
    assert _statuses(aws)[-4:] == ["Creating", "Creating", "Creating", "InService"]
    assert any("InService" in e.message for e in events)
    name = provider.env.name(ADDRESS)
    attrs = live.attributes
    assert live.id == name
    assert attrs["url"] == f"https://runtime.sagemaker.us-east-1.amazonaws.com/endpoints/{name}/invocations"
    assert attrs["model_version"] == 1 and attrs["traffic"] == {"primary": 1.0}
    config = aws.client("sagemaker").describe_endpoint_config(EndpointConfigName=attrs["endpoint_config"])
    variant = config["ProductionVariants"][0]
    assert variant == {**variant, "VariantName": "primary", "InitialInstanceCount": 2,
                       "InstanceType": "ml.m5.large",
                       "ModelName": provider.env.model_name(MODEL, 1)}
    assert not config.get("DataCaptureConfig")
    assert provider.read(live).attributes == attrs
    lost = provider.read(LiveObject(ADDRESS, "endpoint", None, {}))
    assert lost.id == name and lost.attributes == attrs
    # a retried create adopts: no second endpoint, no change
    aws.clear_calls()
    again = apply(provider, "endpoint", ADDRESS, _endpoint(v1, replicas=2, tags={"team": "risk"}))
    assert again.attributes == attrs
    assert not [c for c in aws.mutating_calls() if c["service"] == "sagemaker"]


def test_plan_names_the_config_and_leaves_the_arn_unknown(aws, setup):
    provider, v1, _ = setup
    planned = contract.plan(provider, Desired(ADDRESS, "endpoint", "fraud", _endpoint(v1)), None)
    assert planned.attributes["arn"] is UNKNOWN
    assert planned.attributes["endpoint_config"].startswith(provider.env.name(ADDRESS)[:20])
    unknown_model = contract.plan(provider, Desired(ADDRESS, "endpoint", "fraud",
                                          {"model": {"address": MODEL, "version": UNKNOWN}}), None)
    assert unknown_model.attributes["endpoint_config"] is UNKNOWN
    assert provider.kinds["endpoint"].replace_paths == ()


def test_capture_writes_under_the_capture_prefix(aws, setup):
    provider, v1, _ = setup
    live = apply(provider, "endpoint", ADDRESS, _endpoint(v1, capture={"sample_percent": 30}))
    config = aws.client("sagemaker").describe_endpoint_config(
        EndpointConfigName=live.attributes["endpoint_config"])
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] is True and capture["InitialSamplingPercentage"] == 30
    assert capture["DestinationS3Uri"] == provider.env.s3_uri("capture", provider.env.name(ADDRESS))
    assert {o["CaptureMode"] for o in capture["CaptureOptions"]} == {"Input", "Output"}
    assert provider.read(live).attributes["capture"] == {"sample_percent": 30}


def test_failed_create_carries_the_failure_reason(aws, setup):
    provider, v1, _ = setup
    name = provider.env.name(ADDRESS)
    aws.control(fail_endpoint={name: "CUDA out of memory in the model container"})
    with pytest.raises(ProviderError, match="CUDA out of memory") as caught:
        apply(provider, "endpoint", ADDRESS, _endpoint(v1))
    partial = caught.value.partial
    assert partial is not None and partial.id == name
    assert not contains_unknown(dict(partial.attributes))
    provider.delete(caught.value.partial)
    assert provider.read(caught.value.partial) is None
    assert not aws.client("sagemaker").list_endpoint_configs()["EndpointConfigs"]


def test_new_model_version_deploys_canary_and_deletes_the_old_config_after(aws, setup):
    provider, v1, events = setup
    rollout = {"strategy": "canary", "canary_percent": 20, "bake_seconds": 120}
    live = apply(provider, "endpoint", ADDRESS, _endpoint(v1, rollout=rollout))
    old_config = live.attributes["endpoint_config"]
    v2 = _model(provider, f"s3://{BUCKET}/runs/b/model.tar.gz", v1)
    planned = contract.plan(provider, Desired(ADDRESS, "endpoint", "fraud", _endpoint(v2, rollout=rollout)),
                            live)
    assert planned.attributes["endpoint_config"] != old_config
    assert planned.reasons == ("new EndpointConfig: model version 1 → 2 "
                               "(canary 20%, bake 120 s, then all)",)
    aws.control(steps={"endpoint": 2})
    aws.clear_calls()
    updated = provider.update(live, planned)
    assert updated.attributes["model_version"] == 2
    assert updated.attributes["endpoint_config"] == planned.attributes["endpoint_config"]
    sm = aws.client("sagemaker")
    desc = sm.describe_endpoint(EndpointName=live.id)
    routing = desc["LastDeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing == {"Type": "CANARY", "WaitIntervalInSeconds": 120,
                       "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20}}
    calls = aws.calls()
    actions = [c["action"] for c in calls]
    update_at = actions.index("UpdateEndpoint")
    delete_at = next(i for i, c in enumerate(calls)
                     if c["action"] == "DeleteEndpointConfig" and c.get("name") == old_config)
    in_service = [i for i, c in enumerate(calls) if c["action"] == "DescribeEndpoint"
                  and c.get("status") == "InService" and i > update_at]
    updating = [c.get("status") for c in calls[update_at:delete_at]
                if c["action"] == "DescribeEndpoint"]
    assert "Updating" in updating
    assert in_service and in_service[0] < delete_at
    names = [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]]
    assert names == [updated.attributes["endpoint_config"]]


def test_rolled_back_update_fails_and_keeps_the_old_config(aws, setup):
    provider, v1, _ = setup
    live = apply(provider, "endpoint", ADDRESS, _endpoint(v1))
    old_config = live.attributes["endpoint_config"]
    v2 = _model(provider, f"s3://{BUCKET}/runs/b/model.tar.gz", v1)
    planned = contract.plan(provider, Desired(ADDRESS, "endpoint", "fraud", _endpoint(v2)), live)
    new_config = planned.attributes["endpoint_config"]
    aws.control(fail_endpoint={new_config: "alarm mlform-latency fired during baking"})
    with pytest.raises(ProviderError, match="rolled back.*alarm mlform-latency fired"):
        provider.update(live, planned)
    sm = aws.client("sagemaker")
    assert sm.describe_endpoint(EndpointName=live.id)["EndpointConfigName"] == old_config
    names = [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]]
    assert names == [old_config]
    assert provider.read(live).attributes["model_version"] == 1


def test_monitor_alarms_become_rollback_alarms(aws, setup):
    provider, v1, _ = setup
    live = apply(provider, "endpoint", ADDRESS, _endpoint(v1))
    alarm = provider.env.name("monitor.drift", "alarm")
    aws.client("cloudwatch").put_metric_alarm(
        AlarmName=alarm, Namespace="mlform/Monitor", MetricName="Breach", Statistic="Maximum",
        Period=300, EvaluationPeriods=1, Threshold=1.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        Dimensions=[{"Name": "Monitor", "Value": alarm},
                    {"Name": "EndpointName", "Value": live.id}])
    updated = apply(provider, "endpoint", ADDRESS,
                    _endpoint(v1, replicas=2, rollout={"strategy": "linear", "step_percent": 50}),
                    live)
    deployment = aws.client("sagemaker").describe_endpoint(EndpointName=updated.id)[
        "LastDeploymentConfig"]
    assert deployment["AutoRollbackConfiguration"] == {"Alarms": [{"AlarmName": alarm}]}
    assert deployment["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["LinearStepSize"] \
        == {"Type": "CAPACITY_PERCENT", "Value": 50}


def test_weight_and_count_drift_is_read_and_healed(aws, setup):
    provider, v1, _ = setup
    live = apply(provider, "endpoint", ADDRESS, _endpoint(v1))
    aws.client("sagemaker").update_endpoint_weights_and_capacities(
        EndpointName=live.id, DesiredWeightsAndCapacities=[
            {"VariantName": "primary", "DesiredWeight": 0.5, "DesiredInstanceCount": 3}])
    read = provider.read(live)
    assert read.attributes["traffic"] == {"primary": 0.5}
    assert read.attributes["replicas"] == 3
    planned = contract.plan(provider, Desired(ADDRESS, "endpoint", "fraud", _endpoint(v1)), read)
    assert planned.attributes["traffic"] == {"primary": 1.0}
    assert planned.attributes["endpoint_config"] == live.attributes["endpoint_config"]
    aws.clear_calls()
    healed = provider.update(read, planned)
    assert [c["action"] for c in aws.mutating_calls() if c["service"] == "sagemaker"] == \
        ["UpdateEndpointWeightsAndCapacities"]
    assert healed.attributes["traffic"] == {"primary": 1.0}
    assert provider.read(healed).attributes == live.attributes


def test_tag_drift_is_read_and_healed(aws, setup):
    provider, v1, _ = setup
    live = apply(provider, "endpoint", ADDRESS, _endpoint(v1, tags={"team": "risk"}))
    sm = aws.client("sagemaker")
    arn = live.attributes["arn"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "team", "Value": "ops"},
                                       {"Key": "extra", "Value": "x"}])
    read = provider.read(live)
    assert read.attributes["tags"] == {"team": "ops", "extra": "x"}
    healed = apply(provider, "endpoint", ADDRESS, _endpoint(v1, tags={"team": "risk"}), read)
    assert provider.read(healed).attributes["tags"] == {"team": "risk"}
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}
    assert tags["mlform:address"] == ADDRESS and "extra" not in tags


def test_autoscaled_instance_counts_are_not_drift(aws, setup):
    provider, v1, _ = setup
    scaling = {"min": 1, "max": 4, "target_rps": 5}
    live = apply(provider, "endpoint", ADDRESS, _endpoint(v1, autoscaling=scaling))
    resource = f"endpoint/{live.id}/variant/primary"
    scaler = aws.client("application-autoscaling")
    target = scaler.describe_scalable_targets(ServiceNamespace="sagemaker",
                                              ResourceIds=[resource])["ScalableTargets"][0]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    policy = scaler.describe_scaling_policies(ServiceNamespace="sagemaker",
                                              ResourceId=resource)["ScalingPolicies"][0]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 300.0
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == \
        "SageMakerVariantInvocationsPerInstance"
    # the scaler moves the count: not drift
    aws.client("sagemaker").update_endpoint_weights_and_capacities(
        EndpointName=live.id, DesiredWeightsAndCapacities=[
            {"VariantName": "primary", "DesiredInstanceCount": 3}])
    assert provider.read(live).attributes == live.attributes
    # removing autoscaling deregisters the target
    plain = apply(provider, "endpoint", ADDRESS, _endpoint(v1, replicas=3), live)
    assert not scaler.describe_scalable_targets(ServiceNamespace="sagemaker",
                                                ResourceIds=[resource])["ScalableTargets"]
    assert provider.read(plain).attributes == plain.attributes


def test_foreign_endpoint_is_refused(aws, setup):
    provider, v1, _ = setup
    sm = aws.client("sagemaker")
    name = provider.env.name(ADDRESS)
    sm.create_endpoint_config(EndpointConfigName="theirs", ProductionVariants=[{
        "VariantName": "primary", "ModelName": provider.env.model_name(MODEL, 1),
        "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName="theirs",
                       Tags=[{"Key": "mlform:stack", "Value": "other"},
                             {"Key": "mlform:env", "Value": "prod"},
                             {"Key": "mlform:address", "Value": ADDRESS}])
    aws.clear_calls()
    with pytest.raises(ProviderError, match="belongs to stack 'other'"):
        apply(provider, "endpoint", ADDRESS, _endpoint(v1))
    assert not aws.mutating_calls()
    with pytest.raises(ProviderError, match="belongs to stack 'other'"):
        provider.read(LiveObject(ADDRESS, "endpoint", None, {}))


def test_model_package_arn_gets_an_own_model_deleted_with_the_endpoint(aws, setup):
    provider, v1, _ = setup
    arn = v1.attributes["uri"]
    live = apply(provider, "endpoint", ADDRESS, {"model": arn})
    assert live.attributes["model_version"] == 1
    sm = aws.client("sagemaker")
    own = [m["ModelName"] for m in sm.list_models()["Models"] if "-m-" in m["ModelName"]]
    assert len(own) == 1
    assert sm.describe_model(ModelName=own[0])["PrimaryContainer"]["ModelPackageName"] == arn
    provider.delete(live)
    assert not [m for m in sm.list_models()["Models"] if "-m-" in m["ModelName"]]
    # the model resource's own Model stays
    sm.describe_model(ModelName=provider.env.model_name(MODEL, 1))


def test_validate(aws, setup):
    provider, v1, _ = setup

    def problems(attrs):
        return [(d.severity, d.summary) for d in
                contract.validate(provider, Desired(ADDRESS, "endpoint", "fraud", attrs))]

    assert problems(_endpoint(v1)) == []
    assert problems({"model": "s3://bucket/model.tar.gz"})[0][0] == "error"
    rejected = {"model": {**_ref(v1), "approval": "rejected"}}
    assert "rejected" in problems(rejected)[0][1]
    assert problems(_endpoint(v1, replicas=0))[0][0] == "error"
    assert settings_summaries("endpoint", ADDRESS, {"nope": 1}) == [
        f'Invalid settings for {ADDRESS}: unknown setting "nope"']


def test_delete_removes_endpoint_configs_and_is_idempotent(aws, setup):
    provider, v1, _ = setup
    live = apply(provider, "endpoint", ADDRESS, _endpoint(v1, autoscaling={"max": 2}))
    aws.control(steps={"endpoint": 2})
    provider.delete(live)
    sm = aws.client("sagemaker")
    assert not sm.list_endpoints()["Endpoints"]
    assert not sm.list_endpoint_configs()["EndpointConfigs"]
    assert provider.read(live) is None
    provider.delete(live)
    provider.delete(LiveObject(ADDRESS, "endpoint", None, {}))
