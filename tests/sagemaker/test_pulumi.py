"""The sagemaker provider's half of `mlform export pulumi` and `mlform import-state pulumi`.

A small stack (a local dataset, a model, an endpoint with capture, autoscaling and a
canary analysis, a drift monitor) is applied with the real provider against the
emulator; the exported Pulumi resources are then compared with what the emulator
reports for the live objects (names, tags, variants, alarms, schedule, definition),
their import ids checked, every argument name checked against the pulumi_aws classes
(nested ones included), and the program rendered from them run under Pulumi's mocks
in a subprocess (tests/_pulumi.py).  Claims are checked on a hand-made stack export.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from pathlib import Path
from typing import Any, Mapping

import pytest

from mlform.providers.base import (
    UNKNOWN, Desired, ExportObject, LiveObject, PulumiAsset, PulumiInput, PulumiRef,
    PulumiResource,
)
from mlform.providers.kit import calls as contract
from mlform.providers.kit.names import Owner, short_hash
from mlform.providers.sagemaker.pulumi_export import TOKENS, logical_name

from _pulumi import needs_pulumi, run_program

from ._provider import BUCKET, apply, build
from .test_endpoints import _model, _ref

pytestmark = needs_pulumi

CSV = "amount,label\n1.5,0\n2.5,1\n3.5,0\n"
ANALYSIS = {"max_error_rate": 0.05, "interval_seconds": 60, "failures_allowed": 0,
            "min_requests": 10}
ROLLOUT = {"strategy": "canary", "canary_percent": 20, "bake_seconds": 120, "analysis": ANALYSIS}


def _endpoint_attrs(model: LiveObject, **extra) -> dict:
    return {"model": _ref(model), "replicas": 2, "instance_type": "ml.m5.xlarge",
            "capture": {"sample_percent": 50}, "autoscaling": {"min": 1, "max": 4, "target_rps": 5},
            "rollout": ROLLOUT, "tags": {"team": "risk"}, **extra}


def _monitor_attrs(endpoint: LiveObject, dataset: LiveObject) -> dict:
    return {"endpoint": {"address": "endpoint.fraud", "url": endpoint.attributes["url"]},
            "baseline": {"address": "dataset.tx", "uri": dataset.attributes["uri"],
                         "format": "csv"},
            "checks": [{"metric": "psi", "threshold": 0.2}], "schedule": "*/30 * * * *",
            "tags": {"team": "risk"}}


@pytest.fixture
def stack(aws, tmp_path):
    """The applied stack: {address: (kind, the attributes applied, the live object)}.
    The endpoint is updated once (model v1 -> v2), so its live deployment config is
    the one mlform sent."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tx.csv").write_text(CSV)
    provider = build(aws, tmp_path)
    dataset_attrs = {"source": "data/tx.csv", "format": "csv", "tags": {"team": "risk"}}
    dataset = apply(provider, "dataset", "dataset.tx", dataset_attrs)
    cluster_attrs = {"accelerator": "cpu", "gpus_per_node": 0, "nodes": 1}
    cluster = apply(provider, "training_cluster", "training_cluster.cpu", cluster_attrs)
    v1 = _model(provider, f"s3://{BUCKET}/runs/a/model.tar.gz")
    v2 = _model(provider, f"s3://{BUCKET}/runs/b/model.tar.gz", v1)
    model_attrs = {"artifact": {"address": "pipeline.train",
                                "model_uri": f"s3://{BUCKET}/runs/b/model.tar.gz",
                                "fingerprint": "sha256:aa"}}
    first = apply(provider, "endpoint", "endpoint.fraud", _endpoint_attrs(v1))
    endpoint = apply(provider, "endpoint", "endpoint.fraud", _endpoint_attrs(v2), first)
    monitor_attrs = _monitor_attrs(endpoint, dataset)
    monitor = apply(provider, "monitor", "monitor.drift", monitor_attrs)
    return provider, {
        "dataset.tx": ("dataset", dataset_attrs, dataset),
        "training_cluster.cpu": ("training_cluster", cluster_attrs, cluster),
        "model.fraud": ("model", model_attrs, v2),
        "endpoint.fraud": ("endpoint", _endpoint_attrs(v2), endpoint),
        "monitor.drift": ("monitor", monitor_attrs, monitor),
    }


def _as_inputs(address: str, value: Any, path: tuple = ()) -> Any:
    """UNKNOWN values as the engine hands them over: `PulumiInput`s."""
    if value is UNKNOWN:
        return PulumiInput("_".join([address.replace(".", "_"), *map(str, path)]))
    if isinstance(value, Mapping):
        return {k: _as_inputs(address, v, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_inputs(address, v, (*path, i)) for i, v in enumerate(value)]
    return value


def _export(provider, address: str, kind: str, attrs: dict,
            live: LiveObject | None) -> list[PulumiResource]:
    """What `mlform export pulumi` asks of the provider for one instance: the plan's
    attributes, the state's id and attributes."""
    planned = contract.plan(provider, Desired(address, kind, address.split(".", 1)[1], attrs),
                            live)
    obj = ExportObject(address=address, kind=kind, name=address.split(".", 1)[1],
                       attributes=_as_inputs(address, dict(planned.attributes)),
                       id=live.id if live else None,
                       recorded=dict(live.attributes) if live else None)
    return provider.pulumi_resources(obj)


def _export_all(provider, stack: dict) -> dict[str, list[PulumiResource]]:
    return {address: _export(provider, address, kind, attrs, live)
            for address, (kind, attrs, live) in stack.items()}


def _by(resources: list[PulumiResource], cls: str) -> list[PulumiResource]:
    return [r for r in resources if f"{r.module}.{r.cls}" == cls]


def _one(resources: list[PulumiResource], cls: str) -> PulumiResource:
    [found] = _by(resources, cls)
    return found


def _tags(tag_list: list[dict]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tag_list if not t["Key"].startswith("aws:")}


# -- the export against the live objects --------------------------------------------------

def test_dataset_exports_its_uploaded_object_and_the_cluster_nothing(aws, stack):
    provider, applied = stack
    exported = _export_all(provider, applied)
    assert exported["training_cluster.cpu"] == []
    [obj] = exported["dataset.tx"]
    s3 = aws.client("s3")
    data = [k["Key"] for k in s3.list_objects_v2(Bucket=BUCKET)["Contents"]
            if k["Key"].endswith("/tx.csv")]
    assert obj.token == "aws:s3/bucketObjectv2:BucketObjectv2"
    assert obj.args["bucket"] == BUCKET and [obj.args["key"]] == data
    assert obj.import_id == f"{BUCKET}/{data[0]}"
    head = s3.head_object(Bucket=BUCKET, Key=data[0])
    assert obj.args["metadata"] == head["Metadata"]
    assert obj.args["tags"] == _tags(s3.get_object_tagging(Bucket=BUCKET, Key=data[0])["TagSet"])
    assert obj.args["source"] == PulumiAsset(str(Path(provider.env.context.stack_dir)
                                                 / "data" / "tx.csv"))
    # an s3:// source is read where it is: nothing to declare
    assert _export(provider, "dataset.ext", "dataset",
                   {"source": f"s3://{BUCKET}/{data[0]}", "format": "csv"}, None) == []


def test_model_exports_its_group_and_the_versions_model(aws, stack):
    provider, applied = stack
    resources = _export_all(provider, applied)["model.fraud"]
    sm = aws.client("sagemaker")
    live = applied["model.fraud"][2].attributes
    group = _one(resources, "aws.sagemaker.ModelPackageGroup")
    desc = sm.describe_model_package_group(ModelPackageGroupName=group.args["model_package_group_name"])
    assert desc["ModelPackageGroupArn"] == live["group_arn"]
    assert group.args["model_package_group_description"] == desc["ModelPackageGroupDescription"]
    assert group.args["tags"] == _tags(sm.list_tags(ResourceArn=desc["ModelPackageGroupArn"])["Tags"])
    assert group.import_id == group.args["model_package_group_name"]
    model = _one(resources, "aws.sagemaker.Model")
    described = sm.describe_model(ModelName=model.args["name"])
    assert model.args["name"] == live["model_name"] == model.import_id
    assert model.args["primary_container"] == {
        "model_package_name": described["PrimaryContainer"]["ModelPackageName"]}
    assert model.args["execution_role_arn"] == described["ExecutionRoleArn"]
    assert model.args["tags"] == _tags(sm.list_tags(ResourceArn=described["ModelArn"])["Tags"])
    assert "no resource for model packages" in model.comment


def test_endpoint_exports_config_endpoint_scaling_and_canary_alarms(aws, stack):
    provider, applied = stack
    exported = _export_all(provider, applied)
    resources = exported["endpoint.fraud"]
    sm = aws.client("sagemaker")
    live = applied["endpoint.fraud"][2]
    endpoint = _one(resources, "aws.sagemaker.Endpoint")
    desc = sm.describe_endpoint(EndpointName=endpoint.args["name"])
    assert endpoint.import_id == endpoint.args["name"] == live.id
    assert endpoint.args["tags"] == _tags(sm.list_tags(ResourceArn=desc["EndpointArn"])["Tags"])

    config = _one(resources, "aws.sagemaker.EndpointConfiguration")
    assert endpoint.args["endpoint_config_name"] == PulumiRef(config.name, "name")
    assert config.args["name"] == desc["EndpointConfigName"] == config.import_id
    described = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
    [variant] = config.args["production_variants"]
    [live_variant] = described["ProductionVariants"]
    model = _one(exported["model.fraud"], "aws.sagemaker.Model")
    assert variant == {"variant_name": live_variant["VariantName"],
                       "model_name": PulumiRef(model.name, "name"),
                       "initial_instance_count": live_variant["InitialInstanceCount"],
                       "instance_type": live_variant["InstanceType"],
                       "initial_variant_weight": live_variant["InitialVariantWeight"]}
    assert (variant["initial_instance_count"], variant["instance_type"]) == (2, "ml.m5.xlarge")
    assert model.args["name"] == live_variant["ModelName"]
    capture = described["DataCaptureConfig"]
    assert config.args["data_capture_config"] == {
        "enable_capture": True, "initial_sampling_percentage": capture["InitialSamplingPercentage"],
        "destination_s3_uri": capture["DestinationS3Uri"],
        "capture_options": [{"capture_mode": o["CaptureMode"]} for o in capture["CaptureOptions"]],
        "capture_content_type_header": {"json_content_types": ["application/json"]}}
    assert config.args["tags"] == _tags(sm.list_tags(ResourceArn=described["EndpointConfigArn"])["Tags"])

    # the canary alarms, and the deployment config the update sent, naming them
    cloudwatch = aws.client("cloudwatch")
    alarms = _by(resources, "aws.cloudwatch.MetricAlarm")
    live_alarms = {a["AlarmName"]: a for a in cloudwatch.describe_alarms(
        AlarmNamePrefix=provider.env.name("endpoint.fraud", "canary", limit=255))["MetricAlarms"]}
    assert sorted(a.args["name"] for a in alarms) == sorted(live_alarms) != []
    for alarm in alarms:
        found = live_alarms[alarm.args["name"]]
        assert alarm.import_id == alarm.args["name"]
        assert alarm.args["alarm_description"] == found["AlarmDescription"]
        assert alarm.args["threshold"] == found["Threshold"] == 0.05
        assert len(alarm.args["metric_queries"]) == len(found["Metrics"])
        assert alarm.args["tags"] == _tags(cloudwatch.list_tags_for_resource(
            ResourceARN=found["AlarmArn"])["Tags"])
    sent = desc["LastDeploymentConfig"]
    routing = sent["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    deployment = endpoint.args["deployment_config"]
    assert deployment["blue_green_update_policy"]["traffic_routing_configuration"] == {
        "type": routing["Type"], "wait_interval_in_seconds": routing["WaitIntervalInSeconds"],
        "canary_size": {"type": routing["CanarySize"]["Type"],
                        "value": routing["CanarySize"]["Value"]}}
    assert deployment["auto_rollback_configuration"] == {
        "alarms": [{"alarm_name": PulumiRef(a.name, "name")} for a in alarms]}
    assert sorted(a["AlarmName"] for a in sent["AutoRollbackConfiguration"]["Alarms"]) == \
        sorted(a.args["name"] for a in alarms)

    scaler = aws.client("application-autoscaling")
    target = _one(resources, "aws.appautoscaling.Target")
    [live_target] = scaler.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert {k: target.args[k] for k in ("resource_id", "min_capacity", "max_capacity",
                                        "scalable_dimension", "service_namespace")} == {
        "resource_id": live_target["ResourceId"], "min_capacity": live_target["MinCapacity"],
        "max_capacity": live_target["MaxCapacity"],
        "scalable_dimension": live_target["ScalableDimension"], "service_namespace": "sagemaker"}
    assert target.import_id == f"sagemaker/{live_target['ResourceId']}/{live_target['ScalableDimension']}"
    policy = _one(resources, "aws.appautoscaling.Policy")
    [live_policy] = scaler.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert policy.args["name"] == live_policy["PolicyName"]
    assert policy.args["resource_id"] == PulumiRef(target.name, "resource_id")
    tracking = live_policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy.args["target_tracking_scaling_policy_configuration"]["target_value"] == \
        tracking["TargetValue"] == 300.0
    assert policy.import_id == f"{target.import_id}/{live_policy['PolicyName']}"


def test_monitor_exports_check_pipeline_schedule_alarm_and_scripts(aws, stack):
    provider, applied = stack
    resources = _export_all(provider, applied)["monitor.drift"]
    live = applied["monitor.drift"][2].attributes
    sm = aws.client("sagemaker")
    pipeline = _one(resources, "aws.sagemaker.Pipeline")
    desc = sm.describe_pipeline(PipelineName=live["check_pipeline"])
    assert pipeline.args["pipeline_name"] == live["check_pipeline"] == pipeline.import_id
    assert json.loads(pipeline.args["pipeline_definition"]) == json.loads(desc["PipelineDefinition"])
    assert pipeline.args["pipeline_description"] == desc["PipelineDescription"]
    assert pipeline.args["role_arn"] == desc["RoleArn"] == provider.env.config.role_arn
    assert pipeline.args["tags"] == _tags(sm.list_tags(ResourceArn=desc["PipelineArn"])["Tags"])

    schedule = _one(resources, "aws.scheduler.Schedule")
    found = aws.client("scheduler").get_schedule(Name=live["schedule_name"])
    assert schedule.import_id == f"default/{live['schedule_name']}"
    assert schedule.args["schedule_expression"] == found["ScheduleExpression"] == \
        "cron(0,30 * * * ? *)"
    assert schedule.args["description"] == found["Description"]
    assert schedule.args["flexible_time_window"] == {"mode": "OFF"}
    target = schedule.args["target"]
    assert target["arn"] == PulumiRef(pipeline.name, "arn")
    assert found["Target"]["Arn"] == desc["PipelineArn"]
    assert target["sagemaker_pipeline_parameters"]["pipeline_parameters"] == [
        {"name": p["Name"], "value": p["Value"]} for p in
        found["Target"]["SageMakerPipelineParameters"]["PipelineParameterList"]]

    alarm = _one(resources, "aws.cloudwatch.MetricAlarm")
    cloudwatch = aws.client("cloudwatch")
    [found_alarm] = cloudwatch.describe_alarms(AlarmNames=[live["alarm_name"]])["MetricAlarms"]
    assert alarm.import_id == alarm.args["name"] == live["alarm_name"]
    assert alarm.args["dimensions"] == {d["Name"]: d["Value"] for d in found_alarm["Dimensions"]}
    assert (alarm.args["namespace"], alarm.args["metric_name"], alarm.args["statistic"]) == \
        (found_alarm["Namespace"], found_alarm["MetricName"], found_alarm["Statistic"])
    assert alarm.args["tags"] == _tags(cloudwatch.list_tags_for_resource(
        ResourceARN=found_alarm["AlarmArn"])["Tags"])

    scripts = _by(resources, "aws.s3.BucketObjectv2")
    s3 = aws.client("s3")
    for script in scripts:
        head = s3.head_object(Bucket=BUCKET, Key=script.args["key"])
        assert script.args["metadata"] == head["Metadata"]
        assert script.import_id == f"{BUCKET}/{script.args['key']}"
        assert Path(script.args["source"].path).read_bytes() == \
            s3.get_object(Bucket=BUCKET, Key=script.args["key"])["Body"].read()
    assert {Path(s.args["key"]).name for s in scripts} == {
        "drift_check.py", "drift_stats.py", "monitoring.py"}


def test_import_ids_only_for_objects_the_state_says_exist(aws, stack):
    provider, applied = stack
    kind, attrs, live = applied["endpoint.fraud"]
    # a change of instance type: a new config (no id yet) on the same endpoint
    changed = _export(provider, "endpoint.fraud", kind, {**attrs, "instance_type": "ml.c5.xlarge"},
                      live)
    assert _one(changed, "aws.sagemaker.EndpointConfiguration").import_id is None
    assert _one(changed, "aws.sagemaker.Endpoint").import_id == live.id
    assert all(a.import_id for a in _by(changed, "aws.cloudwatch.MetricAlarm"))
    # never applied: nothing to import, and what is known only after apply is a config value
    fresh = _export(provider, "endpoint.other", kind, {"model": {"address": "model.fraud",
                                                                 "version": UNKNOWN}}, None)
    assert [r.import_id for r in fresh] == [None, None]
    config = _one(fresh, "aws.sagemaker.EndpointConfiguration")
    assert config.args["name"] == PulumiInput("endpoint_other_endpoint_config")
    assert config.args["production_variants"][0]["model_name"] == PulumiRef(
        logical_name("model.fraud", "model"), "name")


def test_a_sensitive_value_reaches_the_args_unchanged(aws, stack):
    provider, applied = stack
    secret = PulumiInput("endpoint_fraud_tags_team", secret=True, description="sensitive")
    kind, attrs, live = applied["endpoint.fraud"]
    planned = contract.plan(provider, Desired("endpoint.fraud", kind, "fraud", attrs), live)
    obj = ExportObject("endpoint.fraud", kind, "fraud",
                       {**planned.attributes, "tags": {"team": secret}}, live.id,
                       dict(live.attributes))
    resources = provider.pulumi_resources(obj)
    for cls in ("aws.sagemaker.Endpoint", "aws.sagemaker.EndpointConfiguration"):
        assert _one(resources, cls).args["tags"]["team"] is secret
    owner = provider.env.owner_tags("endpoint.fraud")
    assert _one(resources, "aws.sagemaker.Endpoint").args["tags"] == {**owner, "team": secret}


PACKAGE = "arn:aws:sagemaker:us-east-1:123456789012:model-package/fraud/{}"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # pulumi_aws.s3's own, on import
def test_a_shadow_test_of_package_arns_exports_the_endpoints_own_models(aws, tmp_path):
    provider = build(aws, tmp_path)
    attrs = {"variants": {"live": {"model": PACKAGE.format(1), "weight": 100},
                          "next": {"model": PACKAGE.format(2), "weight": 0}},
             "experiment": {"type": "shadow", "shadow": "next", "shadow_percent": 25}}
    resources = _export(provider, "endpoint.fraud", "endpoint", attrs, None)
    models = {r.args["primary_container"]["model_package_name"]: r
              for r in _by(resources, "aws.sagemaker.Model")}
    assert sorted(models) == [PACKAGE.format(1), PACKAGE.format(2)]
    assert models[PACKAGE.format(1)].args["name"] == provider.env.name(
        "endpoint.fraud", suffix="m-" + short_hash(PACKAGE.format(1)))
    config = _one(resources, "aws.sagemaker.EndpointConfiguration")
    assert config.args["production_variants"] == [{
        "variant_name": "live", "model_name": PulumiRef(models[PACKAGE.format(1)].name, "name"),
        "initial_instance_count": 1, "instance_type": "ml.m5.large", "initial_variant_weight": 1.0}]
    [shadow] = config.args["shadow_production_variants"]
    assert (shadow["variant_name"], shadow["initial_variant_weight"]) == ("next", 0.25)
    assert shadow["model_name"] == PulumiRef(models[PACKAGE.format(2)].name, "name")
    assert all(r.import_id is None for r in resources)
    assert _check_args("sagemaker", importlib.import_module("pulumi_aws.sagemaker")
                       .EndpointConfigurationArgs, config.args, config.name) == []


# -- the SDK accepts them -------------------------------------------------------------------

def _check_args(module: str, args_cls: type, args: Mapping[str, Any], where: str) -> list[str]:
    """Argument names `args_cls` does not take, nested `*Args` classes included."""
    params = dict(list(inspect.signature(args_cls.__init__).parameters.items())[1:])
    problems = []
    for key, value in args.items():
        if key not in params:
            problems.append(f"{where}.{key}")
            continue
        nested = re.findall(r"'(\w+Args)'", str(params[key].annotation))
        if not nested:
            continue
        inner = getattr(importlib.import_module(f"pulumi_aws.{module}._inputs"), nested[0])
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            if isinstance(item, Mapping):
                problems += _check_args(module, inner, item, f"{where}.{key}[{i}]")
    return problems


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # pulumi_aws.s3's own, on import
def test_every_argument_name_is_one_the_sdk_takes(aws, stack):
    provider, applied = stack
    resources = [r for rs in _export_all(provider, applied).values() for r in rs]
    assert {f"{r.module}.{r.cls}" for r in resources} == set(TOKENS)
    problems = []
    for r in resources:
        module = r.module.split(".", 1)[1]
        args_cls = getattr(importlib.import_module(f"pulumi_aws.{module}"), f"{r.cls}Args")
        problems += _check_args(module, args_cls, r.args, r.name)
    assert problems == []


def _inputs_in(value: Any) -> list[PulumiInput]:
    if isinstance(value, PulumiInput):
        return [value]
    if isinstance(value, Mapping):
        return [i for v in value.values() for i in _inputs_in(v)]
    if isinstance(value, list):
        return [i for v in value for i in _inputs_in(v)]
    return []


def test_the_program_runs_under_pulumi_mocks(aws, stack, tmp_path):
    from mlform.views import pulumi_program as views
    provider, applied = stack
    kind, attrs, live = applied["endpoint.fraud"]
    planned = contract.plan(provider, Desired("endpoint.fraud", kind, "fraud", attrs), live)
    secret = PulumiInput("endpoint_fraud_tags_team", secret=True)
    exported = _export_all(provider, applied)
    exported["endpoint.fraud"] = provider.pulumi_resources(ExportObject(
        "endpoint.fraud", kind, "fraud", {**planned.attributes, "tags": {"team": secret}},
        live.id, dict(live.attributes)))
    resources = [r for rs in exported.values() for r in rs]
    inputs = sorted({i.key: i for r in resources for i in _inputs_in(r.args)}.values(),
                    key=lambda i: i.key)
    program = tmp_path / "program"
    program.mkdir()
    (program / "__main__.py").write_text(views.main_py(
        header="test", resources=resources, notes=[], outputs={}, inputs=inputs))
    (program / "Pulumi.yaml").write_text(views.pulumi_yaml(project="shop-test",
                                                           description="test", inputs=inputs))
    registered = run_program(program, secrets={"endpoint_fraud_tags_team": "risk"})
    # registration is asynchronous: compare what, not in which order
    assert sorted((r.type, r.name) for r in registered) == sorted((r.token, r.name)
                                                                  for r in resources)
    by_name = {r.name: r.inputs for r in registered}
    endpoint = by_name[logical_name("endpoint.fraud")]
    # Pulumi marks the whole map secret when one of its values is
    assert endpoint["tags"] == {"secret": {**provider.env.owner_tags("endpoint.fraud"),
                                           "team": "risk"}}
    config = by_name[logical_name("endpoint.fraud", "config")]
    assert config["productionVariants"][0]["instanceType"] == "ml.m5.xlarge"
    assert config["dataCaptureConfig"]["destinationS3Uri"].startswith(f"s3://{BUCKET}/")
    model = by_name[logical_name("model.fraud", "model")]
    assert model["primaryContainer"]["modelPackageName"].endswith("/2")


# -- claims over a stack export -------------------------------------------------------------

def _resource(token: str, logical: str, id_: str, outputs: dict) -> dict:
    return {"urn": f"urn:pulumi:prod::infra::{token}::{logical}", "type": token, "id": id_,
            "inputs": outputs, "outputs": outputs}


def test_claims_over_a_stack_export(aws, tmp_path):
    provider = build(aws, tmp_path)        # stack "shop", environment "test"
    ours = {"tags": Owner("shop", "test", "endpoint.fraud").tags()}
    theirs = {"tags": Owner("other", "test", "endpoint.fraud").tags()}
    model_tags = {"tags": Owner("shop", "test", "model.fraud").tags()}
    group = provider.env.name("model.fraud")
    package = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{group}/3"
    doc = [
        _resource("aws:sagemaker/endpoint:Endpoint", "fraud", "shop-test-fraud",
                  {"name": "shop-test-fraud", "endpointConfigName": "cfg-1", **ours}),
        _resource("aws:sagemaker/endpointConfiguration:EndpointConfiguration", "cfg", "cfg-1",
                  {"name": "cfg-1", **ours}),
        _resource("aws:sagemaker/endpoint:Endpoint", "fraud-prod", "fraud-prod",
                  {"name": "fraud-prod", "endpointConfigName": "prod-cfg"}),
        _resource("aws:sagemaker/endpointConfiguration:EndpointConfiguration", "prod-cfg",
                  "prod-cfg", {"name": "prod-cfg",
                               "productionVariants": [{"modelName": "prod-model"}]}),
        _resource("aws:sagemaker/model:Model", "prod-model", "prod-model", {"name": "prod-model"}),
        _resource("aws:sagemaker/endpoint:Endpoint", "elsewhere", "other-fraud",
                  {"name": "other-fraud", **theirs}),
        _resource("aws:sagemaker/modelPackageGroup:ModelPackageGroup", "group", group,
                  {"modelPackageGroupName": group, **model_tags}),
        _resource("aws:sagemaker/modelPackageGroup:ModelPackageGroup", "made-by-hand",
                  "churn-models", {"modelPackageGroupName": "churn-models"}),
        _resource("aws:sagemaker/pipeline:Pipeline", "etl", "etl", {"pipelineName": "etl"}),
        _resource("aws:sagemaker/model:Model", "v3", "m-v3",
                  {"name": "m-v3", "primaryContainer": {"modelPackageName": package},
                   **model_tags}),
        _resource("aws:appautoscaling/target:Target", "scale", "t",
                  {"resourceId": "endpoint/fraud-prod/variant/primary"}),
        _resource("aws:scheduler/schedule:Schedule", "sched", "default/s",
                  {"name": "s", "description": "mlform stack=shop env=test address=monitor.drift"}),
        _resource("aws:iam/role:Role", "role", "sagemaker-role", {"name": "sagemaker-role"}),
        _resource("aws:ec2/vpc:Vpc", "vpc", "vpc-123", {"cidrBlock": "10.0.0.0/16"}),
    ]
    claims = {c.urn.rsplit("::", 1)[1]: c for c in provider.pulumi_claims(doc)}
    assert set(claims) == {"fraud", "cfg", "fraud-prod", "prod-cfg", "prod-model", "group", "v3",
                           "scale", "sched", "made-by-hand"}
    assert (claims["fraud"].address, claims["fraud"].kind, claims["fraud"].import_id) == \
        ("endpoint.fraud", "endpoint", "shop-test-fraud")
    assert (claims["cfg"].address, claims["cfg"].import_id) == ("endpoint.fraud", None)
    untagged = claims["fraud-prod"]
    assert (untagged.address, untagged.import_id) == ("endpoint.fraud_prod", "fraud-prod")
    assert "no ownership marks" in untagged.note and "spec" in untagged.note
    for part in ("prod-cfg", "prod-model", "scale"):
        assert (claims[part].address, claims[part].import_id) == ("endpoint.fraud_prod", None)
    # a model is imported by the newest package a Model of the export serves
    assert (claims["group"].address, claims["group"].kind, claims["group"].import_id) == \
        ("model.fraud", "model", package)
    assert (claims["v3"].address, claims["v3"].import_id) == ("model.fraud", None)
    assert (claims["sched"].address, claims["sched"].kind) == ("monitor.drift", "monitor")
    # a model group made outside mlform: mlform registers its own, so it is to re-create
    by_hand = claims["made-by-hand"]
    assert (by_hand.address, by_hand.kind, by_hand.import_id) == ("model.churn_models", "model",
                                                                  None)
    assert "write the model block for model.churn_models and apply" in by_hand.note


def test_a_model_imported_by_its_group_name_reads_its_newest_version(aws, tmp_path):
    provider = build(aws, tmp_path)
    _model(provider, f"s3://{BUCKET}/runs/a/model.tar.gz")
    v1 = provider.read(LiveObject("model.fraud", "model", None, {}))
    v2 = _model(provider, f"s3://{BUCKET}/runs/b/model.tar.gz", v1)
    found = provider.import_("model", "model.fraud", provider.env.name("model.fraud"))
    assert found is not None and found.id == v2.id and found.attributes["version"] == 2
    assert provider.import_("model", "model.fraud", "some-other-group") is None
