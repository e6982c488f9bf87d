"""The SageMaker emulator itself (tests/emulator/moto_plugin.py over moto's server).

Each test drives the emulator over HTTP with boto3, as the sagemaker provider does,
and checks one feature of the plugin: the call log, status scripts and failure
injection, the calls moto lacks, tags, throttling, the other services mlform uses,
and reset.
"""

from __future__ import annotations

import json

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from fixture import ROLE_ARN

CONTAINER = {"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/serve:1",
             "ModelDataUrl": "s3://mlform-test/model.tar.gz"}


def variant(name: str, weight: float = 1.0, count: int = 1) -> dict:
    return {"VariantName": name, "ModelName": "m1", "InstanceType": "ml.m5.large",
            "InitialInstanceCount": count, "InitialVariantWeight": weight}


def with_configs(sm, **configs: list[dict]) -> None:
    """A model `m1` and one endpoint config per keyword (name=variants)."""
    sm.create_model(ModelName="m1", ExecutionRoleArn=ROLE_ARN, PrimaryContainer=CONTAINER)
    for name, variants in configs.items():
        sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=variants)


def training_job(sm, name: str) -> None:
    sm.create_training_job(
        TrainingJobName=name, RoleArn=ROLE_ARN,
        AlgorithmSpecification={"TrainingImage": CONTAINER["Image"], "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": "s3://mlform-test/out"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 3600})


def model_package(sm, group: str) -> str:
    return sm.create_model_package(
        ModelPackageGroupName=group, ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [CONTAINER],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]},
    )["ModelPackageArn"]


def variants_of(sm, endpoint: str) -> dict[str, dict]:
    answer = sm.describe_endpoint(EndpointName=endpoint)
    return {v["VariantName"]: v for v in answer["ProductionVariants"]}


def statuses(describe, key: str, times: int) -> list[str]:
    return [describe()[key] for _ in range(times)]


def error_of(excinfo) -> tuple[str, str]:
    error = excinfo.value.response["Error"]
    return error["Code"], error["Message"]


# --- 1. call log ----------------------------------------------------------------------------

def test_call_log_records_every_service_with_name_status_and_error(aws):
    s3, sm = aws.client("s3"), aws.client("sagemaker")
    s3.create_bucket(Bucket="mlform-test")
    s3.put_object(Bucket="mlform-test", Key="state/prod.json", Body=b"{}")
    s3.get_object(Bucket="mlform-test", Key="state/prod.json")
    with_configs(sm, c1=[variant("main")])
    sm.create_endpoint(EndpointName="e1", EndpointConfigName="c1")
    sm.describe_endpoint(EndpointName="e1")
    with pytest.raises(ClientError):
        sm.describe_endpoint(EndpointName="absent")

    calls = aws.calls()
    def slim(c): return (c["service"], c["action"], c["name"], c["status"], c["error"])
    assert [slim(c) for c in calls] == [
        ("s3", "CreateBucket", "mlform-test", None, None),
        ("s3", "PutObject", "state/prod.json", None, None),
        ("s3", "GetObject", "state/prod.json", None, None),
        ("sagemaker", "CreateModel", "m1", None, None),
        ("sagemaker", "CreateEndpointConfig", "c1", None, None),
        ("sagemaker", "CreateEndpoint", "e1", None, None),
        ("sagemaker", "DescribeEndpoint", "e1", "InService", None),
        ("sagemaker", "DescribeEndpoint", "absent", None, "ValidationException"),
    ]
    assert [c["action"] for c in aws.mutating_calls()] == [
        "CreateBucket", "PutObject", "CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
    aws.clear_calls()
    assert aws.calls() == []


# --- 2. status scripts and failure injection ------------------------------------------------

def test_endpoint_is_creating_for_n_describes_then_in_service(aws):
    sm = aws.client("sagemaker")
    aws.control(steps={"endpoint": 2})
    with_configs(sm, c1=[variant("main")])
    sm.create_endpoint(EndpointName="e1", EndpointConfigName="c1")
    assert sm.list_endpoints()["Endpoints"][0]["EndpointStatus"] == "Creating"
    describe = lambda: sm.describe_endpoint(EndpointName="e1")  # noqa: E731
    assert statuses(describe, "EndpointStatus", 4) == [
        "Creating", "Creating", "InService", "InService"]
    logged = [c["status"] for c in aws.calls() if c["action"] == "DescribeEndpoint"]
    assert logged == ["Creating", "Creating", "InService", "InService"]


def test_endpoint_create_failure_is_injected_by_name(aws):
    sm = aws.client("sagemaker")
    aws.control(steps={"endpoint": 1}, fail_endpoint={"broken": "Image cannot be pulled"})
    with_configs(sm, c1=[variant("main")])
    sm.create_endpoint(EndpointName="broken-ep", EndpointConfigName="c1")
    sm.create_endpoint(EndpointName="fine-ep", EndpointConfigName="c1")
    assert statuses(lambda: sm.describe_endpoint(EndpointName="broken-ep"),
                    "EndpointStatus", 2) == ["Creating", "Failed"]
    assert sm.describe_endpoint(EndpointName="broken-ep")["FailureReason"] == \
        "Image cannot be pulled"
    answers = [sm.describe_endpoint(EndpointName="fine-ep") for _ in range(2)]
    assert [a["EndpointStatus"] for a in answers] == ["Creating", "InService"]
    assert "FailureReason" not in answers[-1]


def test_training_job_runs_then_completes_with_configured_metrics(aws):
    sm = aws.client("sagemaker")
    aws.control(steps={"training_job": 2}, training_metrics={"accuracy": 0.93, "loss": 0.2})
    training_job(sm, "train-1")
    first = sm.describe_training_job(TrainingJobName="train-1")
    assert first["TrainingJobStatus"] == "InProgress"
    assert "FinalMetricDataList" not in first and "TrainingEndTime" not in first
    assert sm.describe_training_job(TrainingJobName="train-1")["TrainingJobStatus"] == "InProgress"
    done = sm.describe_training_job(TrainingJobName="train-1")
    assert done["TrainingJobStatus"] == "Completed" and done["SecondaryStatus"] == "Completed"
    metrics = {m["MetricName"]: m["Value"] for m in done["FinalMetricDataList"]}
    assert metrics == {"accuracy": 0.93, "loss": 0.2}
    assert all("Timestamp" in m for m in done["FinalMetricDataList"])
    assert [c["status"] for c in aws.calls() if c["action"] == "DescribeTrainingJob"] == [
        "InProgress", "InProgress", "Completed"]


def test_training_job_failure_is_injected_by_name_substring(aws):
    sm = aws.client("sagemaker")
    aws.control(steps={"training_job": 1}, fail_training={"-bad-": "AlgorithmError: loss is NaN"})
    training_job(sm, "run-bad-1")
    training_job(sm, "run-good-1")
    assert statuses(lambda: sm.describe_training_job(TrainingJobName="run-bad-1"),
                    "TrainingJobStatus", 2) == ["InProgress", "Failed"]
    failed = sm.describe_training_job(TrainingJobName="run-bad-1")
    assert failed["FailureReason"] == "AlgorithmError: loss is NaN"
    assert "FinalMetricDataList" not in failed
    assert statuses(lambda: sm.describe_training_job(TrainingJobName="run-good-1"),
                    "TrainingJobStatus", 2) == ["InProgress", "Completed"]


def test_training_job_describes_environment_and_metric_definitions_as_sent(aws):
    sm = aws.client("sagemaker")
    environment = {"MLFORM_OUTPUT_DIR": "/opt/ml/model", "SEED": "7"}
    definitions = [{"Name": "accuracy", "Regex": "accuracy=([0-9.]+)"}]
    sm.create_training_job(
        TrainingJobName="t-env", RoleArn=ROLE_ARN, Environment=environment,
        AlgorithmSpecification={"TrainingImage": CONTAINER["Image"], "TrainingInputMode": "File",
                                "MetricDefinitions": definitions},
        OutputDataConfig={"S3OutputPath": "s3://mlform-test/out"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 3600})
    described = sm.describe_training_job(TrainingJobName="t-env")
    assert described["Environment"] == environment
    assert described["AlgorithmSpecification"]["MetricDefinitions"] == definitions
    # nothing sent, nothing described (moto would report Environment absent but its own
    # "test:dcg" metric definition)
    training_job(sm, "t-plain")
    plain = sm.describe_training_job(TrainingJobName="t-plain")
    assert "Environment" not in plain
    assert "MetricDefinitions" not in plain["AlgorithmSpecification"]


def test_model_package_is_in_progress_for_n_describes(aws):
    sm = aws.client("sagemaker")
    aws.control(steps={"model_package": 1})
    sm.create_model_package_group(ModelPackageGroupName="g1")
    arn = model_package(sm, "g1")
    assert statuses(lambda: sm.describe_model_package(ModelPackageName=arn),
                    "ModelPackageStatus", 3) == ["InProgress", "Completed", "Completed"]


def test_steps_default_to_moto_behaviour_and_bad_control_counts_as_empty(aws):
    sm = aws.client("sagemaker")
    aws.control_file.write_text("{not json")
    with_configs(sm, c1=[variant("main")])
    sm.create_endpoint(EndpointName="e1", EndpointConfigName="c1")
    assert sm.describe_endpoint(EndpointName="e1")["EndpointStatus"] == "InService"
    aws.control_file.write_text(json.dumps({"steps": "three", "throttle": [1], "whatever": 1}))
    training_job(sm, "t1")
    assert sm.describe_training_job(TrainingJobName="t1")["TrainingJobStatus"] == "Completed"


# --- 3. calls moto lacks ----------------------------------------------------------------------

BLUE_GREEN = {"BlueGreenUpdatePolicy": {
    "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 60},
    "TerminationWaitInSeconds": 120, "MaximumExecutionTimeoutInSeconds": 1800}}


def test_update_endpoint_switches_to_the_new_config(aws):
    sm = aws.client("sagemaker")
    with_configs(sm, c1=[variant("main")],
                 c2=[variant("main", weight=0.9), variant("canary", weight=0.1)])
    sm.create_endpoint(EndpointName="e1", EndpointConfigName="c1")
    aws.control(steps={"endpoint": 1})
    sm.update_endpoint(EndpointName="e1", EndpointConfigName="c2", DeploymentConfig=BLUE_GREEN)

    updating = sm.describe_endpoint(EndpointName="e1")
    assert updating["EndpointStatus"] == "Updating"
    assert updating["EndpointConfigName"] == "c1"
    assert updating["PendingDeploymentSummary"]["EndpointConfigName"] == "c2"
    done = sm.describe_endpoint(EndpointName="e1")
    assert done["EndpointStatus"] == "InService" and done["EndpointConfigName"] == "c2"
    assert "PendingDeploymentSummary" not in done
    assert done["LastDeploymentConfig"] == BLUE_GREEN
    assert [(v["VariantName"], v["CurrentWeight"], v["CurrentInstanceCount"])
            for v in done["ProductionVariants"]] == [("main", 0.9, 1), ("canary", 0.1, 1)]


def test_update_endpoint_is_refused_unless_in_service(aws):
    sm = aws.client("sagemaker")
    with_configs(sm, c1=[variant("main")], c2=[variant("main", count=2)])
    aws.control(steps={"endpoint": 1})
    sm.create_endpoint(EndpointName="e1", EndpointConfigName="c1")
    with pytest.raises(ClientError) as excinfo:
        sm.update_endpoint(EndpointName="e1", EndpointConfigName="c2")
    code, message = error_of(excinfo)
    assert code == "ValidationException" and "Creating" in message
    with pytest.raises(ClientError) as excinfo:
        sm.update_endpoint(EndpointName="absent", EndpointConfigName="c2")
    assert "Could not find endpoint" in error_of(excinfo)[1]
    sm.describe_endpoint(EndpointName="e1")
    sm.describe_endpoint(EndpointName="e1")          # now InService
    with pytest.raises(ClientError) as excinfo:
        sm.update_endpoint(EndpointName="e1", EndpointConfigName="absent")
    assert "Could not find endpoint configuration" in error_of(excinfo)[1]
    sm.update_endpoint(EndpointName="e1", EndpointConfigName="c2")
    assert sm.describe_endpoint(EndpointName="e1")["EndpointStatus"] == "Updating"


def test_failed_update_rolls_back_to_the_old_config(aws):
    sm = aws.client("sagemaker")
    with_configs(sm, c1=[variant("main")], c2_bad=[variant("main", count=3)])
    sm.create_endpoint(EndpointName="e1", EndpointConfigName="c1")
    aws.control(steps={"endpoint": 1}, fail_endpoint={"bad": "Health check failed"})
    sm.update_endpoint(EndpointName="e1", EndpointConfigName="c2_bad")
    answers = [sm.describe_endpoint(EndpointName="e1") for _ in range(4)]
    assert [a["EndpointStatus"] for a in answers] == [
        "Updating", "RollingBack", "InService", "InService"]
    assert answers[-1]["EndpointConfigName"] == "c1"
    assert answers[-1]["FailureReason"] == "Health check failed"
    assert answers[-1]["ProductionVariants"][0]["CurrentInstanceCount"] == 1


def test_weights_and_capacities_go_through_updating(aws):
    sm = aws.client("sagemaker")
    with_configs(sm, c1=[variant("main", weight=1.0), variant("canary", weight=0.0)])
    sm.create_endpoint(EndpointName="e1", EndpointConfigName="c1")
    first = variants_of(sm, "e1")
    assert first["canary"]["CurrentWeight"] == 0.0 and first["main"]["CurrentInstanceCount"] == 1
    aws.control(steps={"endpoint": 1})
    sm.update_endpoint_weights_and_capacities(EndpointName="e1", DesiredWeightsAndCapacities=[
        {"VariantName": "canary", "DesiredWeight": 0.5},
        {"VariantName": "main", "DesiredInstanceCount": 2}])
    updating = sm.describe_endpoint(EndpointName="e1")
    variants = {v["VariantName"]: v for v in updating["ProductionVariants"]}
    assert updating["EndpointStatus"] == "Updating"
    assert (variants["canary"]["CurrentWeight"], variants["canary"]["DesiredWeight"]) == (0.0, 0.5)
    done = sm.describe_endpoint(EndpointName="e1")
    variants = {v["VariantName"]: v for v in done["ProductionVariants"]}
    assert done["EndpointStatus"] == "InService"
    assert variants["canary"]["CurrentWeight"] == 0.5
    assert variants["main"]["CurrentWeight"] == 1.0                # untouched field kept
    assert variants["main"]["CurrentInstanceCount"] == 2

    aws.control(steps={"endpoint": 0})    # a redeploy keeping the live weights and counts
    sm.update_endpoint(EndpointName="e1", EndpointConfigName="c1", RetainAllVariantProperties=True)
    kept = variants_of(sm, "e1")
    assert (kept["canary"]["CurrentWeight"], kept["main"]["CurrentInstanceCount"]) == (0.5, 2)


def test_stop_training_job_goes_stopping_then_stopped(aws):
    sm = aws.client("sagemaker")
    aws.control(steps={"training_job": 1})
    training_job(sm, "t1")
    sm.stop_training_job(TrainingJobName="t1")
    assert statuses(lambda: sm.describe_training_job(TrainingJobName="t1"),
                    "TrainingJobStatus", 2) == ["Stopping", "Stopped"]
    with pytest.raises(ClientError) as excinfo:
        sm.stop_training_job(TrainingJobName="t1")
    assert "Stopped" in error_of(excinfo)[1]


def test_model_package_and_group_deletes(aws):
    sm = aws.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName="g1")
    first, second = model_package(sm, "g1"), model_package(sm, "g1")
    with pytest.raises(ClientError) as excinfo:
        sm.delete_model_package_group(ModelPackageGroupName="g1")
    assert error_of(excinfo)[0] == "ConflictException"

    sm.delete_model_package(ModelPackageName=first)
    with pytest.raises(ClientError) as excinfo:
        sm.describe_model_package(ModelPackageName=first)
    with pytest.raises(ClientError) as excinfo:
        sm.delete_model_package(ModelPackageName=first)
    assert "does not exist" in error_of(excinfo)[1]
    third = model_package(sm, "g1")                # versions are never reused (moto: len+1)
    assert sm.describe_model_package(ModelPackageName=third)["ModelPackageVersion"] == 3
    assert sm.describe_model_package(ModelPackageName=second)["ModelPackageVersion"] == 2
    assert [p["ModelPackageVersion"] for p in sm.list_model_packages(
        ModelPackageGroupName="g1", SortBy="CreationTime")["ModelPackageSummaryList"]] == [2, 3]

    sm.delete_model_package(ModelPackageName=second)
    sm.delete_model_package(ModelPackageName=third)
    sm.delete_model_package_group(ModelPackageGroupName="g1")
    with pytest.raises(ClientError) as excinfo:
        sm.describe_model_package_group(ModelPackageGroupName="g1")
    assert "does not exist" in error_of(excinfo)[1]


def test_creating_under_a_name_in_use_is_refused(aws):
    sm = aws.client("sagemaker")
    with_configs(sm, c1=[variant("main")])
    sm.create_endpoint(EndpointName="e1", EndpointConfigName="c1")
    training_job(sm, "t1")
    sm.create_model_package_group(ModelPackageGroupName="g1")
    attempts = {
        "model": lambda: sm.create_model(ModelName="m1", ExecutionRoleArn=ROLE_ARN,
                                         PrimaryContainer=CONTAINER),
        "endpoint configuration": lambda: sm.create_endpoint_config(
            EndpointConfigName="c1", ProductionVariants=[variant("main")]),
        "endpoint": lambda: sm.create_endpoint(EndpointName="e1", EndpointConfigName="c1"),
        "training job": lambda: training_job(sm, "t1"),
        "Model Package Group": lambda: sm.create_model_package_group(ModelPackageGroupName="g1"),
    }
    for what, attempt in attempts.items():
        with pytest.raises(ClientError) as excinfo:
            attempt()
        assert what in error_of(excinfo)[1] and "already exist" in error_of(excinfo)[1]


def test_tags_work_on_every_arn_kind_mlform_uses(aws):
    sm = aws.client("sagemaker")
    with_configs(sm, c1=[variant("main")])
    sm.create_endpoint(EndpointName="e1", EndpointConfigName="c1")
    training_job(sm, "t1")
    sm.create_model_package_group(ModelPackageGroupName="g1")
    sm.create_pipeline(PipelineName="p1", RoleArn=ROLE_ARN,
                       PipelineDefinition=json.dumps({"Version": "2020-12-01", "Steps": []}))
    arns = [sm.describe_model(ModelName="m1")["ModelArn"],
            sm.describe_endpoint_config(EndpointConfigName="c1")["EndpointConfigArn"],
            sm.describe_endpoint(EndpointName="e1")["EndpointArn"],
            sm.describe_training_job(TrainingJobName="t1")["TrainingJobArn"],
            sm.describe_model_package_group(ModelPackageGroupName="g1")["ModelPackageGroupArn"],
            model_package(sm, "g1"),
            sm.describe_pipeline(PipelineName="p1")["PipelineArn"]]
    for arn in arns:
        sm.add_tags(ResourceArn=arn, Tags=[{"Key": "mlform:stack", "Value": "a"},
                                           {"Key": "team", "Value": "ml"}])
        sm.add_tags(ResourceArn=arn, Tags=[{"Key": "mlform:stack", "Value": "b"}])
        sm.delete_tags(ResourceArn=arn, TagKeys=["team"])
        assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "mlform:stack", "Value": "b"}], arn
    with pytest.raises(ClientError) as excinfo:
        sm.list_tags(ResourceArn=arns[2].replace("endpoint/e1", "endpoint/absent"))
    assert error_of(excinfo)[0] == "ValidationException"
    assert "does not exist" in error_of(excinfo)[1]


# --- 4. throttling and 5xx ------------------------------------------------------------------

def test_throttles_and_server_errors_are_retried_transparently(aws):
    retrying = Config(retries={"mode": "standard", "max_attempts": 5})
    sm, s3 = aws.client("sagemaker", config=retrying), aws.client("s3", config=retrying)
    s3.create_bucket(Bucket="mlform-test")
    aws.control(throttle={"CreateModel": 2, "PutObject": 1}, server_error={"DescribeModel": 1})
    with_configs(sm)
    assert sm.describe_model(ModelName="m1")["ModelName"] == "m1"
    s3.put_object(Bucket="mlform-test", Key="k", Body=b"x")

    def attempts(action): return [c["error"] for c in aws.calls() if c["action"] == action]
    assert attempts("CreateModel") == ["ThrottlingException", "ThrottlingException", None]
    assert attempts("DescribeModel") == ["InternalFailure", None]
    assert attempts("PutObject") == ["ThrottlingException", None]
    spent = json.loads(aws.control_file.read_text())
    assert spent["throttle"] == {"CreateModel": 0, "PutObject": 0}


def test_injected_errors_reach_a_client_that_does_not_retry(aws):
    once = Config(retries={"mode": "standard", "total_max_attempts": 1})
    sm = aws.client("sagemaker", config=once)
    aws.control(throttle={"ListEndpoints": 1}, server_error={"ListModels": 1})
    with pytest.raises(ClientError) as excinfo:
        sm.list_endpoints()
    assert error_of(excinfo)[0] == "ThrottlingException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as excinfo:
        sm.list_models()
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert sm.list_endpoints()["Endpoints"] == []                 # counts are spent
    aws.control(throttle={"ListEndpoints": 1})                    # and re-armed when set again
    with pytest.raises(ClientError):
        sm.list_endpoints()


# --- 5. the other services mlform uses -----------------------------------------------------------

def test_s3_conditional_put_refuses_an_existing_key(aws):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="mlform-test")
    s3.put_object(Bucket="mlform-test", Key="state.json", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket="mlform-test", Key="state.json", Body=b"2", IfNoneMatch="*")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert error_of(excinfo)[0] == "PreconditionFailed"
    assert s3.get_object(Bucket="mlform-test", Key="state.json")["Body"].read() == b"1"


def test_cloudwatch_alarms(aws):
    cw = aws.client("cloudwatch")
    cw.put_metric_alarm(AlarmName="a1", Namespace="AWS/SageMaker", MetricName="ModelLatency",
                        Statistic="Average", Period=60, EvaluationPeriods=1, Threshold=500.0,
                        ComparisonOperator="GreaterThanThreshold",
                        Dimensions=[{"Name": "EndpointName", "Value": "e1"}],
                        Tags=[{"Key": "mlform:stack", "Value": "a"}])
    alarm = cw.describe_alarms(AlarmNames=["a1"])["MetricAlarms"][0]
    assert alarm["Threshold"] == 500.0
    assert cw.list_tags_for_resource(ResourceARN=alarm["AlarmArn"])["Tags"] == [
        {"Key": "mlform:stack", "Value": "a"}]
    cw.set_alarm_state(AlarmName="a1", StateValue="ALARM", StateReason="drill")
    assert cw.describe_alarms(AlarmNames=["a1"])["MetricAlarms"][0]["StateValue"] == "ALARM"
    cw.delete_alarms(AlarmNames=["a1"])
    assert cw.describe_alarms(AlarmNames=["a1"])["MetricAlarms"] == []
    assert ("cloudwatch", "PutMetricAlarm", "a1") in [
        (c["service"], c["action"], c["name"]) for c in aws.calls()]


def test_pipelines_and_their_schedule(aws):
    sm, scheduler = aws.client("sagemaker"), aws.client("scheduler")
    definition = json.dumps({"Version": "2020-12-01", "Steps": []})
    arn = sm.create_pipeline(PipelineName="p1", PipelineDefinition=definition,
                             RoleArn=ROLE_ARN)["PipelineArn"]
    sm.update_pipeline(PipelineName="p1", PipelineDescription="v2")
    assert sm.describe_pipeline(PipelineName="p1")["PipelineDescription"] == "v2"
    execution = sm.start_pipeline_execution(
        PipelineName="p1", PipelineParameters=[{"Name": "epochs", "Value": "3"}])
    assert execution["PipelineExecutionArn"].startswith(arn)

    target = {"Arn": arn, "RoleArn": ROLE_ARN, "SageMakerPipelineParameters": {
        "PipelineParameterList": [{"Name": "epochs", "Value": "3"}]}}
    scheduler.create_schedule(Name="retrain", ScheduleExpression="rate(1 day)",
                              FlexibleTimeWindow={"Mode": "OFF"}, Target=target)
    target["SageMakerPipelineParameters"]["PipelineParameterList"][0]["Value"] = "5"
    scheduler.update_schedule(Name="retrain", ScheduleExpression="rate(7 days)",
                              FlexibleTimeWindow={"Mode": "OFF"}, Target=target)
    schedule = scheduler.get_schedule(Name="retrain")
    assert schedule["ScheduleExpression"] == "rate(7 days)"
    parameters = schedule["Target"]["SageMakerPipelineParameters"]
    assert parameters == target["SageMakerPipelineParameters"]
    scheduler.delete_schedule(Name="retrain")
    with pytest.raises(ClientError):
        scheduler.get_schedule(Name="retrain")
    sm.delete_pipeline(PipelineName="p1")
    with pytest.raises(ClientError):
        sm.describe_pipeline(PipelineName="p1")
    assert ("scheduler", "UpdateSchedule", "retrain") in [
        (c["service"], c["action"], c["name"]) for c in aws.calls()]


def test_application_autoscaling_for_endpoint_variants(aws):
    aas = aws.client("application-autoscaling")
    target = {"ServiceNamespace": "sagemaker", "ResourceId": "endpoint/e1/variant/main",
              "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
    aas.register_scalable_target(**target, MinCapacity=1, MaxCapacity=4)
    aas.put_scaling_policy(
        PolicyName="invocations", PolicyType="TargetTrackingScaling", **target,
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 70.0, "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}})
    found = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in found] == [
        ("endpoint/e1/variant/main", 1, 4)]
    assert len(aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]) == 1
    aas.deregister_scalable_target(**target)
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


# --- 6. reset -----------------------------------------------------------------------------------

def test_reset_forgets_the_plugins_counters(aws):
    sm = aws.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName="g1")
    model_package(sm, "g1")
    sm.delete_model_package(ModelPackageName=model_package(sm, "g1"))
    assert sm.describe_model_package(ModelPackageName=model_package(sm, "g1"))[
        "ModelPackageVersion"] == 3
    aws.control(steps={"endpoint": 5}, throttle={"ListModels": 3})
    aws.reset()
    assert aws.calls() == [] and json.loads(aws.control_file.read_text()) == {}
    sm.create_model_package_group(ModelPackageGroupName="g1")
    assert sm.describe_model_package(ModelPackageName=model_package(sm, "g1"))[
        "ModelPackageVersion"] == 1
    assert sm.list_models()["Models"] == []
