"""The sagemaker `monitor` kind against the emulator: capture required, the three parts
(check pipeline, schedule, alarm), breach read from the alarm, healing, delete; the cron
conversion; and the drift check script itself run against the emulator's S3/CloudWatch."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from mlform.providers.base import Desired, LiveObject, ProviderError
from mlform.providers.sagemaker import drift_check
from mlform.providers.sagemaker.env import stale_key
from mlform.providers.sagemaker.monitors import BASELINE_FORMATS, aws_cron, rollback_alarms
from mlform.providers.kit import calls as contract

from ._provider import BUCKET, apply, build, settings_summaries

ADDRESS = "monitor.drift"
BASELINE = f"s3://{BUCKET}/data/baseline.csv"


def _endpoint(provider, capture: bool = True) -> LiveObject:
    model = apply(provider, "model", "model.fraud", {"artifact": f"s3://{BUCKET}/runs/a/m.tar.gz"})
    attrs = {"model": {"address": "model.fraud", "version": model.attributes["version"]}}
    if capture:
        attrs["capture"] = {"sample_percent": 100}
    return apply(provider, "endpoint", "endpoint.fraud", attrs)


def _monitor(endpoint: LiveObject, **extra) -> dict:
    return {"endpoint": {"address": "endpoint.fraud", "url": endpoint.attributes["url"],
                         "model_version": 1},
            "baseline": {"address": "dataset.tx", "uri": BASELINE, "format": "csv",
                         "digest": "sha256:bb"},
            "checks": [{"metric": "psi", "threshold": 0.2},
                       {"metric": "ks", "threshold": 0.3, "feature": "amount"}], **extra}


@pytest.fixture
def provider(aws, tmp_path):
    return build(aws, tmp_path)


# -- cron ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cron, expected", [
    ("*/10 * * * *", "cron(0/10 * * * ? *)"),
    ("0 3 * * 1-5", "cron(0 3 ? * 2-6 *)"),
    ("30 6 * * MON-FRI", "cron(30 6 ? * 2-6 *)"),
    ("0 0 1 * *", "cron(0 0 1 * ? *)"),
    ("0 0 * * 0", "cron(0 0 ? * 1 *)"),
    ("0 0 * * 7", "cron(0 0 ? * 1 *)"),
    ("0 0 * * SUN,SAT", "cron(0 0 ? * 1,7 *)"),
    ("0 0 * * */2", "cron(0 0 ? * 1,3,5,7 *)"),
    ("0 0 * * 5-7", "cron(0 0 ? * 1,6,7 *)"),
    # 10-20/5 and 10/5 allow the same hours (10, 15, 20): rendered from the parsed values
    ("15 10-20/5 * JAN-MAR *", "cron(15 10/5 * 1-3 ? *)"),
    ("0 12 */2 * *", "cron(0 12 1/2 * ? *)"),
    (None, "rate(1 hour)"),
])
def test_cron_conversion(cron, expected):
    assert aws_cron(cron) == expected


@pytest.mark.parametrize("cron", ["0 0 1 * 1", "* * *", "61 * * * *"])
def test_cron_conversion_refuses_what_aws_cannot_say(cron):
    with pytest.raises(ValueError):
        aws_cron(cron)


def test_baseline_formats_match_drift_stats():
    from mlform.providers.kit import drift_stats
    assert set(BASELINE_FORMATS) == set(drift_stats.BASELINE_FORMATS)


# -- the handler -------------------------------------------------------------------------

def test_monitor_requires_capture_on_the_endpoint(aws, provider):
    endpoint = _endpoint(provider, capture=False)
    with pytest.raises(ProviderError, match="needs data capture on endpoint.fraud") as caught:
        apply(provider, "monitor", ADDRESS, _monitor(endpoint))
    assert "capture" in caught.value.service_message
    assert provider.read(LiveObject(ADDRESS, "monitor", None, {})) is None


def test_create_makes_pipeline_schedule_and_alarm(aws, provider):
    endpoint = _endpoint(provider)
    attrs = _monitor(endpoint, schedule="0 6 * * 1-5", on_breach="retrain",
                     pipeline={"address": "pipeline.train", "model_uri": "s3://x/m.tar.gz",
                               "fingerprint": "sha256:ff"}, tags={"team": "risk"})
    live = apply(provider, "monitor", ADDRESS, attrs)
    env, a = provider.env, live.attributes
    assert a["check_pipeline"] == env.name(ADDRESS, "check") == live.id
    assert a["schedule_name"] == env.name(ADDRESS, "sched")
    assert a["alarm_name"] == env.name(ADDRESS, "alarm")
    assert a["breached"] is False and a["last_report"] is None
    sm = aws.client("sagemaker")
    pipeline = sm.describe_pipeline(PipelineName=a["check_pipeline"])
    definition = json.loads(pipeline["PipelineDefinition"])
    step = definition["Steps"][0]
    assert step["Type"] == "Processing"
    params = {p["Name"]: p["DefaultValue"] for p in definition["Parameters"]}
    assert json.loads(params["Checks"])[1] == {"metric": "ks", "threshold": 0.3,
                                               "feature": "amount"}
    assert params["BaselineUri"] == BASELINE
    capture = env.s3_uri("capture", env.name("endpoint.fraud"))
    assert params["CaptureUri"] == f"{capture}/{endpoint.id}/"
    assert params["StaleMarkerUri"] == f"s3://{BUCKET}/{stale_key(env, 'pipeline.train')}"
    assert stale_key(env, "pipeline.train") == env.key("stale", env.name("pipeline.train") + ".json")
    assert params["PipelineFingerprint"] == "sha256:ff"
    assert step["Arguments"]["Environment"]["MLFORM_CHECKS"] == {"Get": "Parameters.Checks"}
    code = env.key("monitors", env.name(ADDRESS), "code")
    listed = aws.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=code)["Contents"]
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in listed) == ["drift_check.py",
                                                                   "drift_stats.py",
                                                                   "monitoring.py"]
    schedule = aws.client("scheduler").get_schedule(Name=a["schedule_name"])
    assert schedule["ScheduleExpression"] == "cron(0 6 ? * 2-6 *)"
    assert schedule["Target"]["Arn"] == pipeline["PipelineArn"]
    sent = {p["Name"]: p["Value"] for p in
            schedule["Target"]["SageMakerPipelineParameters"]["PipelineParameterList"]}
    assert sent["EndpointName"] == endpoint.id
    alarm = aws.client("cloudwatch").describe_alarms(AlarmNames=[a["alarm_name"]])["MetricAlarms"][0]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == \
        ("mlform/Monitor", "Breach", "Maximum")
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["Threshold"] == 1
    assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == \
        {"Monitor": a["alarm_name"], "EndpointName": endpoint.id}
    tags = aws.client("cloudwatch").list_tags_for_resource(ResourceARN=alarm["AlarmArn"])["Tags"]
    assert {"Key": "mlform:address", "Value": ADDRESS} in tags
    # read, with and without the id; a second apply changes nothing
    assert provider.read(live).attributes == a
    assert provider.read(LiveObject(ADDRESS, "monitor", None, {})).attributes == a
    aws.clear_calls()
    again = apply(provider, "monitor", ADDRESS, attrs, live)
    assert again.attributes == a
    assert not aws.mutating_calls()
    # the endpoint's next deployment rolls back on this alarm
    assert rollback_alarms(env, endpoint.id) == [a["alarm_name"]]


def test_default_schedule_and_schedule_change(aws, provider):
    endpoint = _endpoint(provider)
    live = apply(provider, "monitor", ADDRESS, _monitor(endpoint))
    scheduler = aws.client("scheduler")
    name = live.attributes["schedule_name"]
    assert scheduler.get_schedule(Name=name)["ScheduleExpression"] == "rate(1 hour)"
    changed = apply(provider, "monitor", ADDRESS, _monitor(endpoint, schedule="*/15 * * * *"),
                    live)
    assert scheduler.get_schedule(Name=name)["ScheduleExpression"] == "cron(0/15 * * * ? *)"
    assert provider.read(changed).attributes == changed.attributes


def test_breached_and_last_report_are_read_not_planned(aws, provider):
    endpoint = _endpoint(provider)
    live = apply(provider, "monitor", ADDRESS, _monitor(endpoint))
    aws.client("cloudwatch").set_alarm_state(AlarmName=live.attributes["alarm_name"],
                                             StateValue="ALARM", StateReason="test")
    report = provider.env.s3_uri("monitors", provider.env.name(ADDRESS), "reports", "x.json")
    aws.client("s3").put_object(
        Bucket=BUCKET, Key=provider.env.key("monitors", provider.env.name(ADDRESS), "reports",
                                            "latest.json"),
        Body=json.dumps({"report": report, "breached": True}).encode())
    read = provider.read(live)
    assert read.attributes["breached"] is True and read.attributes["last_report"] == report
    assert set(provider.kinds["monitor"].service_managed) == {"breached", "last_report"}
    planned = contract.plan(provider, Desired(ADDRESS, "monitor", "drift", _monitor(endpoint)), read)
    assert planned.attributes["breached"] is True
    assert planned.attributes["last_report"] == report


def test_a_part_deleted_out_of_band_is_healed(aws, provider):
    endpoint = _endpoint(provider)
    live = apply(provider, "monitor", ADDRESS, _monitor(endpoint))
    aws.client("cloudwatch").delete_alarms(AlarmNames=[live.attributes["alarm_name"]])
    aws.client("scheduler").delete_schedule(Name=live.attributes["schedule_name"])
    read = provider.read(live)
    assert read is not None
    assert read.attributes["alarm_name"] is None and read.attributes["schedule_name"] is None
    planned = contract.plan(provider, Desired(ADDRESS, "monitor", "drift", _monitor(endpoint)), read)
    assert planned.attributes["alarm_name"] == live.attributes["alarm_name"]
    healed = provider.update(read, planned)
    assert healed.attributes["alarm_name"] == live.attributes["alarm_name"]
    assert healed.attributes["schedule_name"] == live.attributes["schedule_name"]
    aws.client("cloudwatch").describe_alarms(AlarmNames=[live.attributes["alarm_name"]])
    # a definition edited outside mlform is drift too
    aws.client("sagemaker").update_pipeline(
        PipelineName=live.attributes["check_pipeline"],
        PipelineDefinition=json.dumps({"Version": "2020-12-01", "Steps": []}))
    assert provider.read(healed).attributes["check_pipeline"] is None


def test_run_action_starts_the_check(aws, provider):
    endpoint = _endpoint(provider)
    live = apply(provider, "monitor", ADDRESS, _monitor(endpoint))
    result = provider.action(live, "run")
    assert result["execution_arn"].startswith("arn:aws:sagemaker:")
    assert result["status"]
    with pytest.raises(ProviderError):
        provider.action(live, "explode")


def test_delete_removes_all_parts(aws, provider):
    endpoint = _endpoint(provider)
    live = apply(provider, "monitor", ADDRESS, _monitor(endpoint))
    provider.delete(live)
    assert provider.read(live) is None
    assert not aws.client("sagemaker").list_pipelines()["PipelineSummaries"]
    assert not aws.client("scheduler").list_schedules()["Schedules"]
    assert not aws.client("cloudwatch").describe_alarms()["MetricAlarms"]
    prefix = provider.env.key("monitors", provider.env.name(ADDRESS))
    assert not aws.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents")
    provider.delete(live)


def test_validate(aws, provider):
    def errors(attrs):
        return [d.summary for d in contract.validate(provider, Desired(ADDRESS, "monitor", "drift", attrs))
                if d.severity == "error"]

    url = "https://runtime.sagemaker.us-east-1.amazonaws.com/endpoints/e/invocations"
    good = {"endpoint": {"address": "endpoint.x", "url": url}, "baseline": BASELINE,
            "checks": [{"metric": "psi", "threshold": 0.2}]}
    assert errors(good) == []
    assert errors({**good, "endpoint": "http://127.0.0.1:8080/v2/models/x"})
    assert errors({**good, "baseline": "./data/tx.csv"})
    assert errors({**good, "on_breach": "retrain"})
    assert errors({**good, "schedule": "0 0 1 * 1"})
    assert settings_summaries("monitor", ADDRESS, {"unknown": 1}) == [
        f'Invalid settings for {ADDRESS}: unknown setting "unknown"']


# -- the drift check itself ----------------------------------------------------------------

def _capture_line(rows: list[dict]) -> str:
    return json.dumps({"captureData": {"endpointInput": {
        "observedContentType": "application/json", "mode": "INPUT",
        "data": json.dumps({"instances": rows}), "encoding": "JSON"}},
        "eventMetadata": {"eventId": "x"}, "eventVersion": "0"})


def test_drift_check_run_reports_breaches_and_marks_the_pipeline_stale(aws, provider):
    s3 = aws.client("s3")
    baseline = "amount\n" + "\n".join(str(i % 10) for i in range(200)) + "\n"
    s3.put_object(Bucket=BUCKET, Key="data/baseline.csv", Body=baseline.encode())
    shifted = [{"amount": 50 + i % 10} for i in range(100)]
    s3.put_object(Bucket=BUCKET, Key="capture/e/primary/2024/01/01/00/a.jsonl",
                  Body=("\n".join(_capture_line(shifted[i:i + 10]) for i in range(0, 100, 10))
                        + "\n").encode())
    marker = f"s3://{BUCKET}/{stale_key(provider.env, 'pipeline.train')}"
    env = {"MLFORM_CHECKS": json.dumps([{"metric": "psi", "threshold": 0.2, "feature": None}]),
           "MLFORM_BASELINE_URI": BASELINE, "MLFORM_BASELINE_FORMAT": "csv",
           "MLFORM_CAPTURE_URI": f"s3://{BUCKET}/capture/e/", "MLFORM_ENDPOINT": "e",
           "MLFORM_MONITOR": "m-alarm", "MLFORM_REPORT_PREFIX": f"s3://{BUCKET}/reports/",
           "MLFORM_ON_BREACH": "retrain", "MLFORM_STALE_URI": marker,
           "MLFORM_PIPELINE_ADDRESS": "pipeline.train",
           "MLFORM_PIPELINE_FINGERPRINT": "sha256:ff", "MLFORM_ADDRESS": ADDRESS,
           "MLFORM_WINDOW_HOURS": "1"}
    cloudwatch = aws.client("cloudwatch")
    report = drift_check.run(env, s3=s3, cloudwatch=cloudwatch,
                             now=datetime.now(timezone.utc) + timedelta(minutes=1))
    assert report["breached"] and report["checks"][0]["feature"] == "amount"
    assert report["checks"][0]["value"] > 0.2 and report["window"]["rows"] == 100
    latest = json.loads(s3.get_object(Bucket=BUCKET, Key="reports/latest.json")["Body"].read())
    assert latest["report"] == report["report"]
    stale = json.loads(s3.get_object(Bucket=BUCKET,
                                     Key=stale_key(provider.env, "pipeline.train"))["Body"].read())
    assert stale["fingerprint"] == "sha256:ff" and "found drift" in stale["reason"]
    metrics = cloudwatch.list_metrics(Namespace="mlform/Monitor")["Metrics"]
    assert {d["Name"]: d["Value"] for d in metrics[0]["Dimensions"]} == \
        {"Monitor": "m-alarm", "EndpointName": "e"}


def test_drift_check_reads_request_shapes():
    assert drift_check.rows_of({"instances": [{"a": 1}, {"a": 2}]}) == [{"a": 1}, {"a": 2}]
    assert drift_check.rows_of({"inputs": {"a": 1}}) == [{"a": 1}]
    assert drift_check.rows_of([{"a": 1}]) == [{"a": 1}]
    assert drift_check.rows_of({"a": 1}) == [{"a": 1}]
    tensors = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}
    assert drift_check.rows_of(tensors) == [{"a": 1}, {"a": 2}]
    rows, bad = drift_check.capture_rows([_capture_line([{"a": 1}]), "not json"])
    assert rows == [{"a": 1}] and bad == 1
