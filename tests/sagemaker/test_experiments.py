"""Endpoint variants and experiments on the sagemaker provider, against the emulator:
the calls and their order for variants (a Model per variant, one EndpointConfig with the
weights, the Endpoint), a shadow test (ShadowProductionVariants), weight changes and
bandit steps (UpdateEndpointWeightsAndCapacities), the bandit's weights never reported
as drift, canary analysis as guardrail alarms (PutMetricAlarm, then UpdateEndpoint with
AutoRollbackConfiguration; a rollback fails the apply with the measured values), the
experiment records read from SageMaker's data capture, and what SageMaker cannot do as
located diagnostics."""

from __future__ import annotations

import json

import pytest

from mlform.plan.diff import changed_paths
from mlform.providers.base import Desired, LiveObject, ProviderError
from mlform.providers.kit import calls as contract
from mlform.refresh import keep_service_managed

from ._provider import BUCKET, apply, build
from .test_endpoints import MODEL, _model, _ref

ADDRESS = "endpoint.fraud"
PACKAGE = "arn:aws:sagemaker:us-east-1:123456789012:model-package/fraud/{}"


@pytest.fixture
def setup(aws, tmp_path):
    events: list = []
    provider = build(aws, tmp_path, progress=events.append)
    v1 = _model(provider, f"s3://{BUCKET}/runs/a/model.tar.gz")
    v2 = _model(provider, f"s3://{BUCKET}/runs/b/model.tar.gz", v1)
    return provider, v1, v2, events


def _sagemaker_mutations(aws) -> list[tuple[str, str | None]]:
    return [(c["action"], c["name"]) for c in aws.mutating_calls() if c["service"] == "sagemaker"]


def _weights(aws, name: str) -> dict[str, float]:
    desc = aws.client("sagemaker").describe_endpoint(EndpointName=name)
    return {v["VariantName"]: v["DesiredWeight"] for v in desc["ProductionVariants"]}


def _errors(provider, attrs: dict) -> list[str]:
    found = contract.validate(provider, Desired(ADDRESS, "endpoint", "fraud", attrs))
    return [d.summary for d in found if d.severity == "error"]


# -- variants ------------------------------------------------------------------------------

def test_variants_make_a_model_each_then_one_config_with_the_weights_then_the_endpoint(aws, setup):
    provider, _, _, _ = setup
    attrs = {"variants": {"a": {"model": PACKAGE.format(1), "weight": 70},
                          "b": {"model": PACKAGE.format(2), "weight": 30}},
             "experiment": {"type": "ab"}, "replicas": 2}
    aws.clear_calls()
    live = apply(provider, "endpoint", ADDRESS, attrs)
    name = provider.env.name(ADDRESS)
    config = live.attributes["endpoint_config"]
    mutations = _sagemaker_mutations(aws)
    assert [a for a, _ in mutations] == ["CreateModel", "CreateModel", "CreateEndpointConfig",
                                         "CreateEndpoint"]
    assert mutations[2:] == [("CreateEndpointConfig", config), ("CreateEndpoint", name)]
    described = aws.client("sagemaker").describe_endpoint_config(EndpointConfigName=config)
    variants = {v["VariantName"]: v for v in described["ProductionVariants"]}
    assert {k: v["InitialVariantWeight"] for k, v in variants.items()} == {"a": 0.7, "b": 0.3}
    assert {v["InitialInstanceCount"] for v in variants.values()} == {2}
    created = [n for a, n in mutations if a == "CreateModel"]
    assert sorted(v["ModelName"] for v in variants.values()) == sorted(created)
    assert live.attributes["traffic"] == {"a": 0.7, "b": 0.3} == _weights(aws, name)
    assert live.attributes["model_version"] == 1
    assert live.attributes["variant_versions"] == {"a": 1, "b": 2}
    # read back: nothing changed, so nothing to plan
    again = provider.read(live)
    assert again.attributes == live.attributes
    planned = contract.plan(provider, Desired(ADDRESS, "endpoint", "fraud", attrs), again)
    assert not changed_paths(again.attributes, planned.attributes) and planned.reasons == ()
    # delete removes both of the endpoint's own Models with its config
    provider.delete(live)
    left = {m["ModelName"] for m in aws.client("sagemaker").list_models()["Models"]}
    assert not left & set(created)


def test_a_weight_change_alone_keeps_the_fleet_and_says_why(aws, setup):
    provider, v1, v2, _ = setup
    attrs = {"variants": {"a": {"model": _ref(v1), "weight": 50},
                          "b": {"model": _ref(v2), "weight": 50}}, "experiment": {"type": "ab"}}
    live = apply(provider, "endpoint", ADDRESS, attrs)
    moved = {**attrs, "variants": {"a": {"model": _ref(v1), "weight": 80},
                                   "b": {"model": _ref(v2), "weight": 20}}}
    planned = contract.plan(provider, Desired(ADDRESS, "endpoint", "fraud", moved), live)
    assert planned.attributes["endpoint_config"] == live.attributes["endpoint_config"]
    assert planned.reasons == ("variant weights: variant a: weight 50% -> weight 80%; variant b: "
                               "weight 50% -> weight 20% (UpdateEndpointWeightsAndCapacities, "
                               "same fleet)",)
    aws.clear_calls()
    updated = provider.update(live, planned)
    assert [a for a, _ in _sagemaker_mutations(aws)] == ["UpdateEndpointWeightsAndCapacities"]
    assert updated.attributes["traffic"] == {"a": 0.8, "b": 0.2} == _weights(aws, live.id)
    # a new model version for one variant is a new config, and the plan names the variant
    v3 = _model(provider, f"s3://{BUCKET}/runs/c/model.tar.gz", v2)
    newer = {**moved, "variants": {**moved["variants"], "b": {"model": _ref(v3), "weight": 20}}}
    planned = contract.plan(provider, Desired(ADDRESS, "endpoint", "fraud", newer), updated)
    assert planned.attributes["endpoint_config"] != updated.attributes["endpoint_config"]
    assert planned.reasons == ("new EndpointConfig: variant b serves model version 3 instead "
                               "of 2 (all at once)",)


def test_shadow_maps_to_shadow_production_variants_with_the_share_as_weight(aws, setup):
    provider, v1, v2, _ = setup
    attrs = {"variants": {"live": {"model": _ref(v1), "weight": 100},
                          "next": {"model": _ref(v2), "weight": 0}},
             "experiment": {"type": "shadow", "shadow": "next", "shadow_percent": 20}}
    aws.clear_calls()
    live = apply(provider, "endpoint", ADDRESS, attrs)
    assert [a for a, _ in _sagemaker_mutations(aws)] == ["CreateEndpointConfig", "CreateEndpoint"]
    sm = aws.client("sagemaker")
    config = sm.describe_endpoint_config(EndpointConfigName=live.attributes["endpoint_config"])
    assert [(v["VariantName"], v["InitialVariantWeight"]) for v in config["ProductionVariants"]] \
        == [("live", 1.0)]
    assert [(v["VariantName"], v["InitialVariantWeight"], v["ModelName"])
            for v in config["ShadowProductionVariants"]] == \
        [("next", 0.2, provider.env.model_name(MODEL, 2))]
    desc = sm.describe_endpoint(EndpointName=live.id)
    assert [v["VariantName"] for v in desc["ShadowProductionVariants"]] == ["next"]
    assert live.attributes["traffic"] == {"live": 1.0}
    assert live.attributes["variant_versions"] == {"live": 1, "next": 2}
    assert provider.read(live).attributes == live.attributes
    # the emulator refuses what AWS refuses: a shadow beside two production variants
    with pytest.raises(Exception, match="exactly one variant"):
        sm.create_endpoint_config(
            EndpointConfigName="two-live", ProductionVariants=[
                {"VariantName": n, "ModelName": provider.env.model_name(MODEL, 1),
                 "InstanceType": "ml.m5.large", "InitialInstanceCount": 1} for n in "ab"],
            ShadowProductionVariants=[{"VariantName": "s",
                                       "ModelName": provider.env.model_name(MODEL, 2),
                                       "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}])


# -- bandit ----------------------------------------------------------------------------------

def _capture_line(request_id: str, when: str) -> str:
    return json.dumps({"captureData": {
        "endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                          "data": json.dumps({"instances": [{"amount": 1}]}), "encoding": "JSON"},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                           "data": json.dumps({"predictions": [0.1]}), "encoding": "JSON"}},
        "eventMetadata": {"eventId": f"e-{request_id}", "inferenceId": request_id,
                          "inferenceTime": when}, "eventVersion": "0"})


def _bandit(v1, v2) -> dict:
    return {"variants": {"a": {"model": _ref(v1), "weight": 50},
                         "b": {"model": _ref(v2), "weight": 50}},
            "experiment": {"type": "bandit", "reward": "binary", "floor_percent": 10},
            "capture": {"sample_percent": 100}}


def test_bandit_step_moves_weights_from_feedback_and_they_are_never_drift(aws, setup):
    provider, v1, v2, _ = setup
    attrs = _bandit(v1, v2)
    live = apply(provider, "endpoint", ADDRESS, attrs)
    name = live.id
    assert live.attributes["bandit_weights"] == {"a": 0.5, "b": 0.5}
    s3 = aws.client("s3")
    capture = provider.env.key("capture", name)
    feedback = []
    for variant, rate in (("a", 0.3), ("b", 0.6)):
        ids = [f"{variant}-{i}" for i in range(100)]
        s3.put_object(Bucket=BUCKET, Key=f"{capture}/{name}/{variant}/2024/01/01/00/part-0.jsonl",
                      Body="\n".join(_capture_line(i, "2024-01-01T00:00:01Z")
                                     for i in ids).encode())
        # the application names no variant: the step finds it from the capture
        feedback += [{"request_id": i, "reward": int(n < rate * 100)} for n, i in enumerate(ids)]
    feedback.append({"request_id": "never-captured", "reward": 1})
    s3.put_object(Bucket=BUCKET, Key=f"{capture}/feedback/app-1.jsonl",
                  Body="\n".join(json.dumps(f) for f in feedback).encode())

    aws.clear_calls()
    stepped = provider.action(live, "experiment_step", {})
    assert [a for a, _ in _sagemaker_mutations(aws)] == ["UpdateEndpointWeightsAndCapacities"]
    assert stepped["changed"] and stepped["feedback"] == 200
    after = stepped["weights"]["after"]
    assert after["b"] > 80 and after["a"] >= 10 - 1e-6       # toward b, floor kept
    assert _weights(aws, name) == pytest.approx({k: w / 100 for k, w in after.items()}, abs=1e-4)
    assert stepped["summary"].startswith(f"{ADDRESS}: bandit step from 200 rewards: a 50% -> ")

    # refresh: the moved weights are the bandit's, not drift; the plan changes nothing
    read = provider.read(live)
    assert read.attributes["traffic"] == {"a": 0.5, "b": 0.5}
    assert read.attributes["bandit_weights"] != live.attributes["bandit_weights"]
    managed = provider.kinds["endpoint"].service_managed
    refreshed = keep_service_managed(dict(live.attributes), dict(read.attributes), managed)
    assert not changed_paths(live.attributes, refreshed)
    planned = contract.plan(provider, Desired(ADDRESS, "endpoint", "fraud", attrs),
                            LiveObject(ADDRESS, "endpoint", name, refreshed))
    assert not changed_paths(refreshed, planned.attributes) and planned.reasons == ()

    # the report's records: captured requests by inference id and variant, feedback joined
    records = provider.action(live, "experiment_records", {})
    assert records["experiment"]["type"] == "bandit" and records["served"]
    assert {v["name"]: v["version"] for v in records["variants"]} == {"a": 1, "b": 2}
    assert sum(v["weight"] for v in records["variants"]) == pytest.approx(100)
    assert len(records["captures"]) == 200
    assert records["captures"][0] == {**records["captures"][0], "status": 200, "role": "live"}
    by_id = {c["request_id"]: c["variant"] for c in records["captures"]}
    assert len(records["feedback"]) == 200
    assert all(by_id[f["request_id"]] == f["variant"] for f in records["feedback"])


def test_bandit_step_without_feedback_moves_nothing(aws, setup):
    provider, v1, v2, _ = setup
    live = apply(provider, "endpoint", ADDRESS, _bandit(v1, v2))
    aws.clear_calls()
    stepped = provider.action(live, "experiment_step", {})
    assert not stepped["changed"] and not _sagemaker_mutations(aws)
    assert "no usable feedback" in stepped["summary"]


# -- canary analysis -------------------------------------------------------------------------

ANALYSIS = {"max_error_rate": 0.01, "max_p99_ms": 250, "interval_seconds": 30,
            "failures_allowed": 1, "min_requests": 20}
CANARY = {"strategy": "canary", "canary_percent": 10, "bake_seconds": 300}


def test_analysis_puts_guardrail_alarms_before_the_update_that_names_them(aws, setup):
    provider, v1, v2, _ = setup
    live = apply(provider, "endpoint", ADDRESS, {"model": _ref(v1), "rollout": CANARY})
    rollout = {**CANARY, "analysis": ANALYSIS}
    planned = contract.plan(provider, Desired(ADDRESS, "endpoint", "fraud",
                                              {"model": _ref(v2), "rollout": rollout}), live)
    aws.clear_calls()
    updated = provider.update(live, planned)
    calls = [(c["action"], c["name"]) for c in aws.mutating_calls()
             if c["action"] in ("PutMetricAlarm", "UpdateEndpoint")]
    names = sorted(n for a, n in calls if a == "PutMetricAlarm")
    assert [a for a, _ in calls] == ["PutMetricAlarm", "PutMetricAlarm", "UpdateEndpoint"]
    assert all("-canary-primary-" in n for n in names)
    desc = aws.client("sagemaker").describe_endpoint(EndpointName=live.id)
    rollback = desc["LastDeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
    assert sorted(a["AlarmName"] for a in rollback) == names
    alarms = {a["AlarmName"].rsplit("-", 1)[1]: a for a in aws.client("cloudwatch").describe_alarms(
        AlarmNames=names)["MetricAlarms"]}
    errors, p99 = alarms["errors"], alarms["p99"]
    assert errors["Threshold"] == 0.01 and p99["Threshold"] == 250
    assert errors["EvaluationPeriods"] == errors["DatapointsToAlarm"] == 2
    assert errors["ComparisonOperator"] == "GreaterThanThreshold"
    judged = {m["Id"]: m for m in errors["Metrics"]}["judged"]["Expression"]
    assert judged == "IF(requests >= 20, (FILL(errors4, 0) + FILL(errors5, 0)) / requests, 0.01)"
    stat = {m["Id"]: m for m in p99["Metrics"]}["latency"]["MetricStat"]
    assert stat["Stat"] == "p99" and stat["Period"] == 60
    assert {d["Name"]: d["Value"] for d in stat["Metric"]["Dimensions"]} == \
        {"EndpointName": live.id, "VariantName": "primary"}
    # an apply that changes nothing in them puts none again; delete removes them
    aws.clear_calls()
    provider.update(updated, contract.plan(provider, Desired(ADDRESS, "endpoint", "fraud",
                                           {"model": _ref(v2), "rollout": rollout}), updated))
    assert not [c for c in aws.mutating_calls() if c["service"] != "s3"]
    provider.delete(updated)
    assert not aws.client("cloudwatch").describe_alarms(AlarmNames=names)["MetricAlarms"]


def test_a_failing_analysis_rolls_back_and_fails_the_apply_naming_the_metric(aws, setup):
    provider, v1, v2, _ = setup
    rollout = {**CANARY, "analysis": ANALYSIS}
    live = apply(provider, "endpoint", ADDRESS, {"model": _ref(v1), "rollout": rollout})
    planned = contract.plan(provider, Desired(ADDRESS, "endpoint", "fraud",
                                              {"model": _ref(v2), "rollout": rollout}), live)
    new_config = planned.attributes["endpoint_config"]
    errors_alarm = next(a["AlarmName"] for a in aws.client("cloudwatch").describe_alarms()[
        "MetricAlarms"] if a["AlarmName"].endswith("-errors"))
    # what SageMaker does when a guardrail alarm fires during the bake: it rolls back
    aws.client("cloudwatch").set_alarm_state(
        AlarmName=errors_alarm, StateValue="ALARM", StateReason="Threshold Crossed",
        StateReasonData=json.dumps({"version": "1.0", "recentDatapoints": [0.2, 0.05]}))
    aws.control(fail_endpoint={new_config: f"Alarm {errors_alarm} went to ALARM"})
    with pytest.raises(ProviderError) as caught:
        provider.update(live, planned)
    assert caught.value.message.endswith(
        "canary version 2 failed analysis: error_rate 0.05 > max 0.01 "
        "(2 of 2 checks failed, 1 allowed) on variant primary")
    desc = aws.client("sagemaker").describe_endpoint(EndpointName=live.id)
    assert desc["EndpointConfigName"] == live.attributes["endpoint_config"]   # the old one serves


# -- what SageMaker cannot do ------------------------------------------------------------------

def test_what_sagemaker_cannot_serve_is_a_located_diagnostic(aws, setup):
    provider, v1, v2, _ = setup
    two = {"a": {"model": _ref(v1), "weight": 50}, "b": {"model": _ref(v2), "weight": 50}}
    assert _errors(provider, {"variants": {**two, "c": {"model": "./model.pt", "weight": 0}},
                              "experiment": {"type": "ab"}}) == [
        f"The sagemaker provider cannot serve the model of {ADDRESS} (variant c)"]
    shadow = {"variants": {**two, "s": {"model": _ref(v2), "weight": 0}},
              "experiment": {"type": "shadow", "shadow": "s"}}
    assert _errors(provider, shadow) == [
        f"{ADDRESS}: a SageMaker shadow test has exactly one live variant, not 2 (a, b)"]
    assert _errors(provider, {"variants": two, "experiment": {"type": "ab"},
                              "autoscaling": {"min": 1, "max": 3}}) == [
        f"{ADDRESS}: the sagemaker provider autoscales single-model endpoints only"]
    assert _errors(provider, {"model": _ref(v1), "rollout": {
        **CANARY, "analysis": {"metrics": {'mlform_requests_total{code="503"}': {"max": 1}}}}}) == [
        f'{ADDRESS}: rollout.analysis.metrics "mlform_requests_total{{code="503"}}" is not a '
        "CloudWatch metric name"]
    sticky = contract.validate(provider, Desired(ADDRESS, "endpoint", "fraud", {
        "variants": two, "experiment": {"type": "ab", "sticky_key": "header:x-user"}}))
    assert [(d.severity, d.address) for d in sticky] == [("warning", ADDRESS)]
    assert "TargetVariant" in sticky[0].hint
