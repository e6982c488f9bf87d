"""The `monitor` kind of the `sagemaker` provider: a scheduled drift check and an alarm.

SageMaker Model Monitor (monitoring schedules) is closed to new customers, so a monitor is
built from three general-purpose parts, all named from the monitor's address:

* a **SageMaker Pipeline** ``env.name(address, "check")`` with one Processing step that runs
  `drift_check.py` (uploaded with the kit's `drift_stats.py` and `monitoring.py`, the
  same PSI/KS math and results as every provider's, under
  ``env.key("monitors", <name>, "code")``).  Thresholds, features, the baseline,
  the capture location and the retrain target are pipeline parameters (see drift_check.py
  for what one run does: report under ``monitors/<name>/reports/``, metric
  ``mlform/Monitor Breach``, stale marker `env.stale_key` on retrain);
* an **EventBridge Scheduler schedule** ``env.name(address, "sched")`` that starts the
  pipeline (SageMakerPipelineParameters) on `schedule`, converted from 5-field cron to
  AWS's 6-field form (`aws_cron`), or ``rate(1 hour)`` when unset.  The provider's
  `role_arn` is the schedule's role: it must trust scheduler.amazonaws.com and may call
  sagemaker:StartPipelineExecution.  Schedules cannot carry tags, so their Description
  names the owner;
* a **CloudWatch alarm** ``env.name(address, "alarm")`` on ``mlform/Monitor Breach``
  (Maximum >= 1, dimensions Monitor = the alarm name and EndpointName), tagged.  Endpoint
  updates hand the alarms watching them to SageMaker as auto-rollback alarms
  (`rollback_alarms`).

The watched endpoint must capture data: create and update read the endpoint named in the
endpoint reference's URL and its config, and stop with a hint when capture is off.

Computed: `alarm_name`, `schedule_name`, `check_pipeline`, and, service-managed (a breach
is the monitor's finding, not infrastructure drift), `last_report` (the newest report's
S3 URI) and `breached` (the alarm is in ALARM).  A part deleted or changed outside mlform
reads as a changed attribute, so the next plan updates the monitor and puts it back; all
parts gone reads as gone.  The id is the check pipeline's name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mlform.providers.base import (
    UNKNOWN, Desired, Diagnostic, Facts, KindSchema, LiveObject, Planned, ProviderError,
    Timeouts, contains_unknown, error,
)
from mlform.providers.kit.monitoring import BASELINE_FORMATS
from mlform.providers.kit.plans import plan_of
from mlform.specs import parse_cron

from .aws import Missing
from .bucket import capture_prefix, delete_record, load_record, monitor_code, save_record
from .env import (
    SageMakerEnv, SageMakerHandler, name_from_url, stale_key, tag_dict, user_tags,
)
from .drift_check import METRIC, NAMESPACE

__all__ = ["MonitorHandler", "MonitorSettings", "aws_cron", "rollback_alarms", "alarm_name",
           "code_files", "code_uri", "CODE_TYPE",
           "NAMESPACE", "METRIC", "DEFAULT_SCHEDULE"]

COMPUTED = ("last_report", "breached", "alarm_name", "schedule_name", "check_pipeline")
SERVICE_MANAGED = ("last_report", "breached")
DEFAULT_SCHEDULE = "rate(1 hour)"
HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "drift_check.py"
#: the kit's modules the check runs with (they import nothing of mlform)
KIT_FILES = tuple(HERE.parent / "kit" / name for name in ("drift_stats.py", "monitoring.py"))
CODE_DIR = "/opt/ml/processing/code"
CODE_TYPE = "text/x-python"


class MonitorSettings(BaseModel):
    """`settings { }` of a sagemaker monitor."""

    model_config = ConfigDict(extra="forbid")

    instance_type: str = Field("ml.t3.medium", description="Instance of the check's "
                                                            "processing job.")
    image: str | None = Field(None, min_length=1, description="Image of the check (python3 with "
                                                               "numpy and boto3); default: the "
                                                               "provider's training image.")
    window_hours: float = Field(1.0, gt=0, le=24 * 31, description="Check the requests captured "
                                                                    "in the last N hours.")
    min_rows: int = Field(20, ge=1, description="Fewer captured values than this: a drift check "
                                                "is skipped, never a breach.")
    bins: int = Field(10, ge=2, le=100, description="Quantile bins of the baseline for PSI.")
    max_runtime_seconds: int = Field(3600, ge=60, le=86400, description="Stop a check after this.")
    alarm_actions: list[str] = Field(default_factory=list,
                                     description="ARNs notified when the alarm fires (SNS...).")


# -- cron ------------------------------------------------------------------------------------

def _runs(values: list[int]) -> list[str]:
    """Sorted values as AWS list items: runs of three or more become ranges."""
    parts, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else
                     f"{values[i]},{values[j]}" if j == i + 1 else f"{values[i]}-{values[j]}")
        i = j + 1
    return parts


def _aws_field(allowed: frozenset[int], low: int, high: int) -> str:
    """One of minute / hour / day-of-month / month in AWS's syntax, from the values the
    parsed field allows: `*`, `a/step` (a step to the end of the field), or a list."""
    values = sorted(allowed)
    if values == list(range(low, high + 1)):
        return "*"
    if len(values) > 2:
        step = values[1] - values[0]
        if step > 1 and values == list(range(values[0], high + 1, step)):
            return f"{values[0]}/{step}"
    return ",".join(_runs(values))


def aws_cron(expression: str | None) -> str:
    """An EventBridge schedule expression for a 5-field cron expression (None: the default).

    The expression is parsed by `mlform.specs.parse_cron` (the one cron parser) and its
    fields rendered in AWS's six-field form (a year last), which needs ``?`` in
    day-of-month or day-of-week; AWS numbers the days of the week 1-7 from Sunday and
    allows no steps there.  Standard cron runs when *either* restricted day field
    matches; AWS cannot say that, so such an expression is refused (ValueError) rather
    than silently changed.
    """
    if expression is None:
        return DEFAULT_SCHEDULE
    cron = parse_cron(expression)          # CronError is a ValueError
    every_weekday = cron.weekdays == frozenset(range(7))
    every_day = cron.days == frozenset(range(1, 32))
    if not every_weekday and not every_day:
        raise ValueError(
            f'schedule "{expression}" restricts both day-of-month and day-of-week, which cron '
            "reads as either; AWS schedules support one of them")
    fields = [_aws_field(cron.minutes, 0, 59), _aws_field(cron.hours, 0, 23)]
    if every_weekday:
        fields += [_aws_field(cron.days, 1, 31), _aws_field(cron.months, 1, 12), "?"]
    else:
        fields += ["?", _aws_field(cron.months, 1, 12),
                   ",".join(_runs(sorted(d + 1 for d in cron.weekdays)))]
    return f"cron({' '.join(fields + ['*'])})"


# -- alarms for endpoint rollbacks -------------------------------------------------------------

def alarm_name(env: SageMakerEnv, address: str) -> str:
    return env.name(address, "alarm")


def rollback_alarms(env: SageMakerEnv, endpoint_name: str, limit: int = 10) -> list[str]:
    """Names of this stack/env's monitor alarms that watch `endpoint_name` (at most the 10
    SageMaker's AutoRollbackConfiguration accepts): found by the name prefix every name of
    the stack/env starts with, then by namespace, metric and EndpointName dimension."""
    prefix = env.name_prefix[:24]
    found = []
    for alarm in env.aws.pages("cloudwatch", "describe_alarms", "MetricAlarms",
                               AlarmNamePrefix=prefix, AlarmTypes=["MetricAlarm"]):
        dims = {d["Name"]: d["Value"] for d in alarm.get("Dimensions") or []}
        if (alarm.get("Namespace") == NAMESPACE and alarm.get("MetricName") == METRIC
                and dims.get("EndpointName") == endpoint_name
                and alarm["AlarmName"].endswith("-alarm")):
            found.append(alarm["AlarmName"])
    return sorted(found)[:limit]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _holds(live: Any, want: Any) -> bool:
    """`live` has every value of `want` (AWS adds defaults, such as a target's RetryPolicy)."""
    if isinstance(want, Mapping):
        return isinstance(live, Mapping) and all(_holds(live.get(k), v) for k, v in want.items())
    return live == want


def _canonical(definition: Any) -> str:
    if isinstance(definition, str):
        try:
            definition = json.loads(definition)
        except ValueError:
            return definition
    return json.dumps(definition, sort_keys=True, separators=(",", ":"))


def code_files(env: SageMakerEnv, address: str) -> list[tuple[str, Path]]:
    """(S3 key, local file) of each drift check script a monitor uploads (create uploads
    them, the Pulumi export declares them)."""
    prefix = monitor_code(env, address)
    return [(f"{prefix}/{path.name}", path) for path in (SCRIPT, *KIT_FILES)]


def code_uri(env: SageMakerEnv, address: str) -> str:
    """The S3 folder of the scripts, as the check pipeline's ProcessingInput reads it."""
    return f"s3://{env.config.bucket}/{monitor_code(env, address)}/"


class MonitorHandler(SageMakerHandler):
    """`monitor` resources: drift-check Pipeline + Scheduler schedule + CloudWatch alarm."""

    schema = KindSchema(settings_model=MonitorSettings, replace_paths=(), computed=COMPUTED,
                        service_managed=SERVICE_MANAGED,
                        timeouts=Timeouts(create=300.0, update=300.0, delete=300.0))

    # -- names -------------------------------------------------------------------------

    def _names(self, address: str) -> dict[str, str]:
        return {"alarm_name": alarm_name(self.env, address),
                "schedule_name": self.env.name(address, "sched"),
                "check_pipeline": self.env.name(address, "check")}

    def _slug(self, address: str) -> str:
        return self.env.name(address)

    def _owner_text(self, address: str) -> str:
        ctx = self.env.context
        return f"mlform stack={ctx.stack} env={ctx.env} address={address}"

    # -- pure half ----------------------------------------------------------------------

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        address, attrs = desired.address, desired.attributes
        found: list[Diagnostic] = []

        def problem(summary: str, detail: str = "", hint: str = "") -> None:
            found.append(error(f"Invalid monitor {address}: {summary}", detail,
                               address=address, hint=hint))

        endpoint = attrs.get("endpoint")
        url = endpoint.get("url") if isinstance(endpoint, Mapping) else endpoint
        if isinstance(url, str) and name_from_url(url) is None:
            problem("the endpoint is not a SageMaker endpoint",
                    f'"{url}" is not a SageMaker invocation URL (…/endpoints/NAME/invocations).',
                    "Write endpoint = endpoint.NAME for an endpoint of the sagemaker provider.")
        baseline = attrs.get("baseline")
        uri = baseline.get("uri") if isinstance(baseline, Mapping) else baseline
        fmt = baseline.get("format") if isinstance(baseline, Mapping) else None
        if isinstance(uri, str) and not uri.startswith("s3://"):
            problem("the drift check reads its baseline from S3",
                    f'The baseline "{uri}" is not an s3:// URI.',
                    "Use a dataset of the sagemaker provider, or an s3:// URI.")
        if isinstance(fmt, str) and fmt not in BASELINE_FORMATS:
            problem(f'the drift check cannot read a "{fmt}" baseline',
                    f"Readable formats: {', '.join(BASELINE_FORMATS)}.")
        if attrs.get("on_breach") == "retrain" and attrs.get("pipeline") is None:
            problem('on_breach = "retrain" needs the pipeline to retrain',
                    "The sagemaker provider does not infer it from the endpoint's model.",
                    "Add pipeline = pipeline.NAME to the monitor.")
        schedule = attrs.get("schedule")
        if isinstance(schedule, str):
            try:
                aws_cron(schedule)
            except ValueError as exc:
                problem(str(exc), hint='Restrict only one of the two, e.g. "0 6 * * 1" or '
                                       '"0 6 1 * *".')
        return found

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        computed: dict[str, Any] = dict(self._names(desired.address))
        if prior is None:
            computed.update(last_report=UNKNOWN, breached=UNKNOWN)
        else:
            # findings change out of band: keep what refresh read, never a planned change
            computed.update(last_report=prior.attributes.get("last_report"),
                            breached=bool(prior.attributes.get("breached", False)))
        return plan_of(desired, computed)

    # -- apply --------------------------------------------------------------------------

    def create(self, planned: Planned) -> LiveObject:
        return self._converge(planned)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        return self._converge(planned)

    def _converge(self, planned: Planned) -> LiveObject:
        address = planned.address
        attrs = {k: v for k, v in planned.attributes.items() if k not in COMPUTED}
        if contains_unknown(attrs):
            raise ProviderError("the monitor's attributes are not all known at apply time",
                                address=address)
        settings = MonitorSettings.model_validate(dict(attrs.get("settings") or {}))
        names = self._names(address)
        endpoint = self._endpoint_name(attrs, address)
        capture = self._capture_uri(address, attrs, endpoint)
        tags = self.env.tags(address, attrs.get("tags") or {})
        code = self._upload_code(address)
        params = self._parameters(address, attrs, settings, endpoint, capture)
        definition = self._definition(settings, params, code)
        arn = self._ensure_pipeline(address, names["check_pipeline"], definition, tags)
        self._ensure_schedule(address, names["schedule_name"], arn, attrs.get("schedule"), params)
        self._ensure_alarm(address, names["alarm_name"], endpoint, tags, settings)
        live = self._read_parts(address, attrs)
        if live is None:
            raise ProviderError(f"the parts of {address} disappeared while applying it",
                                address=address, retryable=True)
        save_record(self.env, "monitor", address, attrs)
        return LiveObject(address, planned.kind, names["check_pipeline"], live)

    def _endpoint_name(self, attrs: Mapping, address: str) -> str:
        endpoint = attrs.get("endpoint")
        url = endpoint.get("url") if isinstance(endpoint, Mapping) else endpoint
        name = name_from_url(url) if isinstance(url, str) else None
        if name is None:
            raise ProviderError(f"{address}: the endpoint {url!r} is not a SageMaker endpoint URL",
                                address=address)
        return name

    def _capture_uri(self, address: str, attrs: Mapping, endpoint: str) -> str:
        """Where data capture writes the endpoint's requests; refuses an endpoint without it."""
        where = attrs["endpoint"].get("address") if isinstance(attrs["endpoint"], Mapping) \
            else endpoint
        desc = self.aws.find("sagemaker", "describe_endpoint", address=address,
                             EndpointName=endpoint)
        if desc is None:
            raise ProviderError(f"{address} watches endpoint {endpoint}, which does not exist",
                                address=address,
                                service_message=f"Apply {where} first.")
        config = self.aws.find("sagemaker", "describe_endpoint_config", address=address,
                               EndpointConfigName=desc["EndpointConfigName"]) or {}
        capture = config.get("DataCaptureConfig") or {}
        if not capture.get("EnableCapture") or not capture.get("DestinationS3Uri"):
            raise ProviderError(
                f"{address} needs data capture on {where}, which captures nothing",
                address=address,
                service_message=f"Add `capture {{ sample_percent = 100 }}` to {where} and apply "
                                "it: the drift check reads the captured requests.")
        return capture_prefix(capture["DestinationS3Uri"], endpoint)

    def _upload_code(self, address: str) -> str:
        """drift_check.py and the kit's drift_stats.py and monitoring.py under the monitor's
        code prefix (only when changed)."""
        store = self.env.store
        for key, path in code_files(self.env, address):
            data = path.read_bytes()
            head = store.head(key, address=address)
            if head is not None and (head.get("Metadata") or {}).get("sha256") == _sha(data):
                continue
            # put_object itself: the sha256 metadata is what the check above reads
            store.call("put_object", address=address, Bucket=store.bucket, Key=key, Body=data,
                       ContentType=CODE_TYPE, Metadata={"sha256": _sha(data)})
        return code_uri(self.env, address)

    def _parameters(self, address: str, attrs: Mapping, settings: MonitorSettings,
                    endpoint: str, capture: str) -> dict[str, str]:
        baseline = attrs.get("baseline")
        uri = baseline.get("uri") if isinstance(baseline, Mapping) else baseline
        fmt = (baseline.get("format") if isinstance(baseline, Mapping) else None) \
            or (str(uri).rsplit(".", 1)[-1] if str(uri).rsplit(".", 1)[-1] in BASELINE_FORMATS
                else "csv")
        pipeline = attrs.get("pipeline")
        pipeline_address = pipeline.get("address") if isinstance(pipeline, Mapping) else None
        checks = [{"metric": c["metric"], "threshold": float(c["threshold"]),
                   "feature": c.get("feature")} for c in attrs.get("checks") or []]
        on_breach = attrs.get("on_breach") or "alert"
        return {
            "Checks": json.dumps(checks, sort_keys=True, separators=(",", ":")),
            "BaselineUri": str(uri), "BaselineFormat": fmt, "CaptureUri": capture,
            "EndpointName": endpoint, "MonitorName": alarm_name(self.env, address),
            "ReportPrefix": self.env.s3_uri("monitors", self._slug(address), "reports") + "/",
            "OnBreach": on_breach,
            "StaleMarkerUri": (f"s3://{self.env.config.bucket}/"
                               f"{stale_key(self.env, pipeline_address)}"
                               if pipeline_address and on_breach == "retrain" else ""),
            "PipelineAddress": pipeline_address or "",
            "PipelineFingerprint": str(pipeline.get("fingerprint") or "")
            if isinstance(pipeline, Mapping) else "",
            "MinRows": str(settings.min_rows), "Bins": str(settings.bins),
            "WindowHours": f"{settings.window_hours:g}", "MonitorAddress": address,
        }

    _ENV = {"Checks": "MLFORM_CHECKS", "BaselineUri": "MLFORM_BASELINE_URI",
            "BaselineFormat": "MLFORM_BASELINE_FORMAT", "CaptureUri": "MLFORM_CAPTURE_URI",
            "EndpointName": "MLFORM_ENDPOINT", "MonitorName": "MLFORM_MONITOR",
            "ReportPrefix": "MLFORM_REPORT_PREFIX", "OnBreach": "MLFORM_ON_BREACH",
            "StaleMarkerUri": "MLFORM_STALE_URI", "PipelineAddress": "MLFORM_PIPELINE_ADDRESS",
            "PipelineFingerprint": "MLFORM_PIPELINE_FINGERPRINT", "MinRows": "MLFORM_MIN_ROWS",
            "Bins": "MLFORM_BINS", "WindowHours": "MLFORM_WINDOW_HOURS",
            "MonitorAddress": "MLFORM_ADDRESS"}

    def _definition(self, settings: MonitorSettings, params: Mapping[str, str],
                    code: str) -> str:
        """The pipeline definition (SageMaker's JSON schema 2020-12-01): one Processing step."""
        definition = {
            "Version": "2020-12-01",
            "Metadata": {},
            "Parameters": [{"Name": name, "Type": "String", "DefaultValue": value}
                           for name, value in params.items()],
            "Steps": [{
                "Name": "DriftCheck",
                "Type": "Processing",
                "Arguments": {
                    "ProcessingResources": {"ClusterConfig": {
                        "InstanceType": settings.instance_type, "InstanceCount": 1,
                        "VolumeSizeInGB": 30}},
                    "AppSpecification": {
                        "ImageUri": settings.image or self.env.config.image("training"),
                        "ContainerEntrypoint": ["python3", f"{CODE_DIR}/drift_check.py"]},
                    "RoleArn": self.env.config.role_arn,
                    "ProcessingInputs": [{
                        "InputName": "code", "AppManaged": False,
                        "S3Input": {"S3Uri": code, "LocalPath": CODE_DIR,
                                    "S3DataType": "S3Prefix", "S3InputMode": "File",
                                    "S3DataDistributionType": "FullyReplicated"}}],
                    "Environment": {env: {"Get": f"Parameters.{name}"}
                                    for name, env in self._ENV.items()},
                    "StoppingCondition": {"MaxRuntimeInSeconds": settings.max_runtime_seconds},
                },
            }],
        }
        return _canonical(definition)

    def _description(self, address: str, definition: str) -> str:
        # the definition's hash: read compares it with the live definition (edited = drift)
        return f"{self._owner_text(address)} definition={_sha(definition.encode())[:16]}"

    def _alarm_tags(self, arn: str, address: str) -> dict[str, str]:
        return tag_dict(self.aws.call("cloudwatch", "list_tags_for_resource", address=address,
                                      ResourceARN=arn).get("Tags") or [])

    def _ensure_pipeline(self, address: str, name: str, definition: str,
                         tags: list[dict]) -> str:
        description = self._description(address, definition)
        found = self.aws.find("sagemaker", "describe_pipeline", address=address,
                              PipelineName=name)
        if found is None:
            return self.aws.call("sagemaker", "create_pipeline", address=address,
                                 PipelineName=name, PipelineDefinition=definition,
                                 PipelineDescription=description,
                                 RoleArn=self.env.config.role_arn, Tags=tags)["PipelineArn"]
        live_tags = self.sagemaker_tags(found["PipelineArn"], address)
        self.env.check_owner(live_tags, address, f"pipeline {name}")
        self.heal_tags(found["PipelineArn"], live_tags, tags, address)
        if (_canonical(found.get("PipelineDefinition") or "") != definition
                or found.get("PipelineDescription") != description
                or found.get("RoleArn") != self.env.config.role_arn):
            self.aws.call("sagemaker", "update_pipeline", address=address, PipelineName=name,
                          PipelineDefinition=definition, PipelineDescription=description,
                          RoleArn=self.env.config.role_arn)
        return found["PipelineArn"]

    def _schedule_spec(self, address: str, pipeline_arn: str, schedule: str | None,
                       params: Mapping[str, str]) -> dict:
        return {
            "ScheduleExpression": aws_cron(schedule),
            "ScheduleExpressionTimezone": "UTC",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": "ENABLED",
            "Description": self._owner_text(address),
            "Target": {
                "Arn": pipeline_arn, "RoleArn": self.env.config.role_arn,
                "SageMakerPipelineParameters": {"PipelineParameterList": [
                    # SageMaker pipeline parameter values are at most 1024 characters: a
                    # longer one is left to the pipeline's default (the same value)
                    {"Name": k, "Value": v} for k, v in params.items() if v and len(v) <= 1024]},
            },
        }

    def _ensure_schedule(self, address: str, name: str, pipeline_arn: str,
                         schedule: str | None, params: Mapping[str, str]) -> None:
        spec = self._schedule_spec(address, pipeline_arn, schedule, params)
        found = self.aws.find("scheduler", "get_schedule", address=address, Name=name)
        if found is None:
            self.aws.call("scheduler", "create_schedule", address=address, Name=name, **spec)
            return
        if found.get("Description") != spec["Description"]:
            raise ProviderError(
                f"EventBridge schedule {name} exists but is not this monitor's "
                f"({found.get('Description') or 'no description'}); refusing to adopt it",
                address=address)
        if not _holds(found, spec):
            self.aws.call("scheduler", "update_schedule", address=address, Name=name, **spec)

    def _alarm(self, name: str, address: str) -> dict | None:
        found = self.aws.call("cloudwatch", "describe_alarms", address=address,
                              AlarmNames=[name]).get("MetricAlarms") or []
        return found[0] if found else None

    def _alarm_spec(self, address: str, name: str, endpoint: str,
                    settings: MonitorSettings) -> dict:
        return {
            "AlarmName": name,
            "AlarmDescription": f"drift check breach of {address} ({self._owner_text(address)})",
            "Namespace": NAMESPACE, "MetricName": METRIC,
            "Dimensions": [{"Name": "Monitor", "Value": name},
                           {"Name": "EndpointName", "Value": endpoint}],
            "Statistic": "Maximum", "Period": 300, "EvaluationPeriods": 1,
            "Threshold": 1.0, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            # between checks there is no data: the state of the last check stands
            "TreatMissingData": "ignore",
            "ActionsEnabled": bool(settings.alarm_actions),
            "AlarmActions": list(settings.alarm_actions),
        }

    def _ensure_alarm(self, address: str, name: str, endpoint: str, tags: list[dict],
                      settings: MonitorSettings) -> None:
        spec = self._alarm_spec(address, name, endpoint, settings)
        found = self._alarm(name, address)
        if found is None:
            self.aws.call("cloudwatch", "put_metric_alarm", address=address, Tags=tags, **spec)
            return
        live_tags = self._alarm_tags(found["AlarmArn"], address)
        self.env.check_owner(live_tags, address, f"CloudWatch alarm {name}")
        dims = sorted((d["Name"], d["Value"]) for d in found.get("Dimensions") or [])
        same = all(found.get(k) == v for k, v in spec.items()
                   if k not in ("Dimensions", "AlarmActions")) \
            and dims == sorted((d["Name"], d["Value"]) for d in spec["Dimensions"]) \
            and list(found.get("AlarmActions") or []) == spec["AlarmActions"]
        if not same:
            self.aws.call("cloudwatch", "put_metric_alarm", address=address, **spec)
        want = {t["Key"]: t["Value"] for t in tags}
        add = [{"Key": k, "Value": v} for k, v in sorted(want.items()) if live_tags.get(k) != v]
        drop = sorted(k for k in live_tags if k not in want)
        if add:
            self.aws.call("cloudwatch", "tag_resource", address=address,
                          ResourceARN=found["AlarmArn"], Tags=add)
        if drop:
            self.aws.call("cloudwatch", "untag_resource", address=address,
                          ResourceARN=found["AlarmArn"], TagKeys=drop)

    # -- read / delete / actions --------------------------------------------------------

    def _last_report(self, address: str) -> str | None:
        doc = self.env.store.get_json(self.env.key("monitors", self._slug(address), "reports",
                                                    "latest.json"), address=address)
        return doc.get("report") if isinstance(doc, dict) else None

    def _read_parts(self, address: str, base: Mapping) -> dict | None:
        """Live attributes, or None when every part is gone; a missing or changed part shows
        as a changed attribute (its name null, or the live schedule expression)."""
        names = self._names(address)
        pipeline = self.aws.find("sagemaker", "describe_pipeline", address=address,
                                 PipelineName=names["check_pipeline"])
        schedule = self.aws.find("scheduler", "get_schedule", address=address,
                                 Name=names["schedule_name"])
        alarm = self._alarm(names["alarm_name"], address)
        if pipeline is None and schedule is None and alarm is None:
            return None
        live = {k: v for k, v in base.items() if k not in COMPUTED}
        live.update(names)
        if pipeline is None:
            live["check_pipeline"] = None
        else:
            definition = _canonical(pipeline.get("PipelineDefinition") or "")
            if pipeline.get("PipelineDescription") != self._description(address, definition):
                live["check_pipeline"] = None          # edited outside mlform
            theirs = user_tags(self.sagemaker_tags(pipeline["PipelineArn"], address))
            if "tags" in base or theirs:
                live["tags"] = theirs
        if schedule is None:
            live["schedule_name"] = None
        else:
            try:
                want = aws_cron(base.get("schedule"))
            except ValueError:
                want = None
            target = (schedule.get("Target") or {}).get("Arn")
            if schedule.get("ScheduleExpression") != want:
                live["schedule"] = schedule.get("ScheduleExpression")
            elif pipeline is not None and target != pipeline.get("PipelineArn"):
                live["schedule_name"] = None
            if schedule.get("State") != "ENABLED":
                live["schedule_name"] = None
        if alarm is None:
            live["alarm_name"] = None
        live["breached"] = bool(alarm and alarm.get("StateValue") == "ALARM")
        live["last_report"] = self._last_report(address)
        return live

    def read(self, prior: LiveObject) -> LiveObject | None:
        address = prior.address
        base = {k: v for k, v in prior.attributes.items() if k not in COMPUTED} \
            or dict(load_record(self.env, "monitor", address).get("attributes") or {})
        live = self._read_parts(address, base)
        if live is None:
            return None
        return LiveObject(address, prior.kind, self._names(address)["check_pipeline"], live)

    def delete(self, prior: LiveObject) -> None:
        address = prior.address
        names = self._names(address)
        for service, operation, kwargs in (
                ("scheduler", "delete_schedule", {"Name": names["schedule_name"]}),
                ("sagemaker", "delete_pipeline", {"PipelineName": names["check_pipeline"]})):
            try:
                self.aws.call(service, operation, address=address, **kwargs)
            except Missing:
                pass
        self.aws.call("cloudwatch", "delete_alarms", address=address,
                      AlarmNames=[names["alarm_name"]])
        prefix = self.env.key("monitors", self._slug(address)) + "/"
        self.env.store.delete_prefix(prefix, address=address)
        delete_record(self.env, "monitor", address)

    def action(self, live: LiveObject, name: str, args: dict) -> dict:
        if name != "run":
            raise NotImplementedError(name)
        pipeline = self._names(live.address)["check_pipeline"]
        try:
            started = self.aws.call("sagemaker", "start_pipeline_execution",
                                    address=live.address, PipelineName=pipeline,
                                    PipelineExecutionDescription="mlform monitor run")
        except Missing:
            raise ProviderError(f"{live.address} has no drift-check pipeline {pipeline}: "
                                "run mlform apply to create it first",
                                address=live.address) from None
        arn = started["PipelineExecutionArn"]
        desc = self.aws.find("sagemaker", "describe_pipeline_execution", address=live.address,
                             PipelineExecutionArn=arn) or {}
        return {"execution_arn": arn, "status": desc.get("PipelineExecutionStatus", "Executing")}
