"""Canary analysis on SageMaker: `rollout.analysis` as the deployment guardrails' alarms.

SageMaker judges a blue/green canary itself: while the new fleet bakes
(WaitIntervalInSeconds), any alarm of the update's ``AutoRollbackConfiguration`` that
goes to ALARM rolls the endpoint back to the old fleet.  So each threshold of
`analysis` becomes one CloudWatch metric-math alarm per live variant, on the
variant's own invocation metrics (namespace ``AWS/SageMaker``, dimensions
EndpointName and VariantName):

* ``max_error_rate``: ``(Invocation4XXErrors + Invocation5XXErrors) / Invocations``
  (non-2xx answers, as the local server counts them) > the limit;
* ``max_p99_ms``: ``ModelLatency`` p99 (SageMaker reports microseconds) / 1000 > the limit;
* ``metrics = { NAME = { min, max } }``: the average of the ``AWS/SageMaker`` metric NAME
  (e.g. ``OverheadLatency``) < min or > max, one alarm per bound.

Each alarm's expression answers the limit itself (never breaching) for a period with
fewer than ``min_requests`` invocations, so a quiet period is skipped, not failed.
``interval_seconds`` becomes the alarm period, rounded up to whole minutes (SageMaker
publishes invocation metrics per minute); ``failures_allowed`` + 1 breaching periods
(EvaluationPeriods = DatapointsToAlarm) set the alarm off.  Missing data is not
breaching.

Alarm names are deterministic, ``env.name(address, "canary-<variant>-<check>")``
(CloudWatch allows 255 characters), and the description carries a hash of the
definition, so an apply puts only alarms that are missing or changed and deletes the
ones the analysis no longer names.  `explain` turns the alarms in ALARM after a
rollback into `kit.canary.Check`s, so the apply fails with the same summary line as on
`local` (``canary version 4 failed analysis: error_rate 0.2 > max 0.01 (...)``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from mlform.providers.kit import canary
from mlform.providers.kit.names import content_hash, short_hash

from .env import SageMakerEnv

__all__ = ["wanted_alarms", "ensure_alarms", "delete_alarms", "alarm_names", "explain",
           "NAMESPACE", "MAX_ROLLBACK_ALARMS"]

NAMESPACE = "AWS/SageMaker"
#: AutoRollbackConfiguration accepts at most 10 alarms (ours and the monitors' together)
MAX_ROLLBACK_ALARMS = 10
ALARM_NAME_LIMIT = 255
MARK = "mlform canary analysis"


def _analysis(attrs: Mapping) -> dict | None:
    rollout = attrs.get("rollout") if isinstance(attrs.get("rollout"), Mapping) else {}
    analysis = rollout.get("analysis")
    return canary.settings(analysis) if isinstance(analysis, Mapping) else None


def _period(seconds: Any) -> int:
    return max(60, int(math.ceil(float(seconds or 60) / 60.0)) * 60)


def _checks(analysis: Mapping) -> list[dict]:
    """[{"key", "metric", "bound", "limit"}]: one per threshold of the analysis."""
    found = []
    if analysis.get("max_error_rate") is not None:
        found.append({"key": "errors", "metric": "error_rate", "bound": "max",
                      "limit": float(analysis["max_error_rate"])})
    if analysis.get("max_p99_ms") is not None:
        found.append({"key": "p99", "metric": "p99_ms", "bound": "max",
                      "limit": float(analysis["max_p99_ms"])})
    for name, bounds in sorted((analysis.get("metrics") or {}).items()):
        for bound in ("min", "max"):
            if isinstance(bounds, Mapping) and bounds.get(bound) is not None:
                found.append({"key": f"m{short_hash(name, length=6)}-{bound}", "metric": name,
                              "bound": bound, "limit": float(bounds[bound])})
    return found


def _stat(ident: str, metric: str, dims: list[dict], period: int, stat: str) -> dict:
    return {"Id": ident, "ReturnData": False,
            "MetricStat": {"Metric": {"Namespace": NAMESPACE, "MetricName": metric,
                                      "Dimensions": dims},
                           "Period": period, "Stat": stat}}


def _queries(check: Mapping, dims: list[dict], period: int, min_requests: int) -> list[dict]:
    """The alarm's metric math: the value judged, or the limit itself in a quiet period."""
    limit = check["limit"]
    requests = _stat("requests", "Invocations", dims, period, "Sum")
    if check["key"] == "errors":
        parts = [_stat("errors4", "Invocation4XXErrors", dims, period, "Sum"),
                 _stat("errors5", "Invocation5XXErrors", dims, period, "Sum")]
        value = "(FILL(errors4, 0) + FILL(errors5, 0)) / requests"
    elif check["key"] == "p99":
        parts = [_stat("latency", "ModelLatency", dims, period, "p99")]
        value = "latency / 1000"           # ModelLatency is in microseconds
    else:
        parts = [_stat("value", check["metric"], dims, period, "Average")]
        value = "value"
    expression = f"IF(requests >= {min_requests}, {value}, {limit!r})"
    return [requests, *parts, {"Id": "judged", "Expression": expression,
                               "Label": check["metric"], "ReturnData": True}]


def wanted_alarms(env: SageMakerEnv, address: str, endpoint_name: str, attrs: Mapping,
                  variants: list[str]) -> list[dict]:
    """PutMetricAlarm arguments of every alarm the endpoint's analysis asks for (none
    without `rollout.analysis`), one per threshold and live variant."""
    analysis = _analysis(attrs)
    if analysis is None:
        return []
    period = _period(analysis["interval_seconds"])
    periods = int(analysis["failures_allowed"]) + 1
    alarms = []
    for variant in variants:
        dims = [{"Name": "EndpointName", "Value": endpoint_name},
                {"Name": "VariantName", "Value": variant}]
        for check in _checks(analysis):
            body = {"Metrics": _queries(check, dims, period, int(analysis["min_requests"])),
                    "ComparisonOperator": ("GreaterThanThreshold" if check["bound"] == "max"
                                           else "LessThanThreshold"),
                    "Threshold": check["limit"], "EvaluationPeriods": periods,
                    "DatapointsToAlarm": periods, "TreatMissingData": "notBreaching"}
            what = {"variant": variant, "metric": check["metric"], "bound": check["bound"],
                    "limit": check["limit"]}
            alarms.append({
                "AlarmName": env.name(address, f"canary-{variant}-{check['key']}",
                                      limit=ALARM_NAME_LIMIT),
                # the description says what the alarm judges (read back by `explain`) and
                # hashes the definition (compared by `ensure_alarms`)
                "AlarmDescription": f"{MARK} of {address} " + json.dumps(what, sort_keys=True)
                                    + f" #{content_hash(body)}",
                "ActionsEnabled": False, **body})
    return alarms


def _ours(env: SageMakerEnv, address: str) -> dict[str, dict]:
    """This endpoint's canary alarms that exist, by name."""
    marker = f"-{short_hash(env.context.stack, env.context.env, address)}-canary-"
    return {a["AlarmName"]: a for a in env.aws.pages(
        "cloudwatch", "describe_alarms", "MetricAlarms", address=address,
        # with 255 characters the readable part is never cut, so this is every name's start
        AlarmNamePrefix=env.name(address, "canary", limit=ALARM_NAME_LIMIT),
        AlarmTypes=["MetricAlarm"]) if marker in a["AlarmName"]}


def alarm_names(alarms: list[dict]) -> list[str]:
    return [a["AlarmName"] for a in alarms]


def ensure_alarms(env: SageMakerEnv, address: str, alarms: list[dict]) -> list[str]:
    """Put the alarms that are missing or changed, delete the ones no longer wanted;
    the names of the wanted ones."""
    live = _ours(env, address)
    for alarm in alarms:
        found = live.get(alarm["AlarmName"])
        if found is None or found.get("AlarmDescription") != alarm["AlarmDescription"]:
            env.aws.call("cloudwatch", "put_metric_alarm", address=address,
                         Tags=env.tags(address), **alarm)
    stale = sorted(set(live) - set(alarm_names(alarms)))
    if stale:
        env.aws.call("cloudwatch", "delete_alarms", address=address, AlarmNames=stale)
    return alarm_names(alarms)


def delete_alarms(env: SageMakerEnv, address: str) -> None:
    ensure_alarms(env, address, [])


def _what(alarm: Mapping) -> dict | None:
    text = str(alarm.get("AlarmDescription") or "")
    if not text.startswith(MARK):
        return None
    try:
        return json.loads(text[text.index("{"):text.rindex("}") + 1])
    except ValueError:
        return None


def _datapoints(alarm: Mapping) -> list[float]:
    """The values that set the alarm off (CloudWatch's StateReasonData), newest first."""
    try:
        data = json.loads(alarm.get("StateReasonData") or "{}")
    except ValueError:
        return []
    points = data.get("recentDatapoints") if isinstance(data, dict) else None
    return [float(p) for p in points or [] if isinstance(p, (int, float))]


def explain(env: SageMakerEnv, address: str, attrs: Mapping, version: Any) -> str | None:
    """The analysis summary (`kit.canary.Analysis.summary`) from this endpoint's canary
    alarms in ALARM; None when none is (the rollback had another cause)."""
    analysis = _analysis(attrs)
    if analysis is None:
        return None
    firing = [a for a in _ours(env, address).values() if a.get("StateValue") == "ALARM"]
    if not firing:
        return None
    verdict = canary.Analysis(analysis, version)
    named = []
    for alarm in sorted(firing, key=lambda a: a["AlarmName"]):
        what = _what(alarm)
        if what is None:
            continue
        named.append((what, alarm["AlarmName"]))
        for point in _datapoints(alarm):
            threshold = canary.Threshold(what["metric"], point, float(what["limit"]),
                                         what["bound"])
            verdict.add(canary.Check("passed" if threshold.ok else "failed", 0, (threshold,),
                                     int(analysis["min_requests"])))
    if not named:
        return None
    variants = ", ".join(sorted({str(what["variant"]) for what, _ in named}))
    if verdict.rollback:
        return f"{verdict.summary()} on variant {variants}"
    # CloudWatch gave no datapoints: the alarms' state is the verdict
    said = ", ".join(f"{what['metric']} beyond {what['bound']} {float(what['limit']):g} "
                     f"(alarm {name})" for what, name in named)
    return f"canary version {version} failed analysis: {said} on variant {variants}"
