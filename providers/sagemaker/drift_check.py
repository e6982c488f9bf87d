"""The drift check a sagemaker `monitor` runs: one SageMaker Processing step of its Pipeline.

Not imported by mlform itself: `monitors.py` uploads this file and the provider kit's
`drift_stats.py` and `monitoring.py` (the PSI/KS math and the results, findings and stale
markers: shared so every provider measures and reports drift the same way) to S3, and
the processing container runs ``python3 drift_check.py``.  It needs numpy and boto3
only.  Everything it needs comes in environment variables, each bound to a pipeline
parameter (so a schedule or `mlform monitor run` can override them):

| variable | meaning |
| --- | --- |
| MLFORM_CHECKS | JSON list of {"metric", "threshold", "feature"} |
| MLFORM_BASELINE_URI, MLFORM_BASELINE_FORMAT | the baseline dataset (an object or a prefix) |
| MLFORM_CAPTURE_URI | where SageMaker data capture writes this endpoint's requests |
| MLFORM_ENDPOINT, MLFORM_MONITOR | the endpoint, and the monitor's alarm name (metric dimensions) |
| MLFORM_REPORT_PREFIX | s3:// prefix of the reports (``<time>.json`` and ``latest.json``) |
| MLFORM_ON_BREACH | alert / retrain / none |
| MLFORM_STALE_URI, MLFORM_PIPELINE_ADDRESS, MLFORM_PIPELINE_FINGERPRINT | the retrain marker |
| MLFORM_MIN_ROWS, MLFORM_BINS, MLFORM_WINDOW_HOURS | sampling knobs |
| MLFORM_ADDRESS | the monitor's address (for reports and the marker's reason) |

What one run does: reads the captured requests of the last `MLFORM_WINDOW_HOURS` hours,
computes each check (psi / ks per numeric feature against the baseline; latency_p99_ms and
error_rate from the endpoint's CloudWatch metrics, as capture records hold neither), writes
the report, puts the metric ``mlform/Monitor Breach`` = 1 or 0 (dimensions Monitor,
EndpointName: the monitor's CloudWatch alarm watches it) and, on a breach with
on_breach = "retrain", writes the pipeline's stale marker naming the fingerprint it judged.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

NAMESPACE = "mlform/Monitor"
METRIC = "Breach"
VARIANT = "primary"


def _kit_module(name: str):
    """The kit's `name`.py: uploaded next to this file, or the kit's own (tests)."""
    here = Path(__file__).resolve().parent
    for path in (here / f"{name}.py", here.parent / "kit" / f"{name}.py"):
        if path.exists():
            spec = importlib.util.spec_from_file_location(f"mlform_kit_{name}", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules.setdefault(f"mlform_kit_{name}", module)
            spec.loader.exec_module(module)
            return module
    raise RuntimeError(f"{name}.py is missing next to drift_check.py")


def split_s3(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3":
        raise ValueError(f"not an s3:// URI: {uri}")
    return parts.netloc, parts.path.lstrip("/")


def _objects(s3, uri: str) -> list[dict]:
    bucket, key = split_s3(uri)
    found, token = [], None
    while True:
        kwargs = {"Bucket": bucket, "Prefix": key}
        if token:
            kwargs["ContinuationToken"] = token
        page = s3.list_objects_v2(**kwargs)
        found += [dict(o, Bucket=bucket) for o in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            return found


# -- captured requests ---------------------------------------------------------------------

def rows_of(body: Any) -> list[dict]:
    """Input rows of one request body: {"inputs"|"instances"|"data"|"rows": rows}, a list of
    row objects, one row object, or Open Inference Protocol tensors (name + data)."""
    doc = body
    if isinstance(doc, Mapping):
        for key in ("inputs", "instances", "data", "rows"):
            if key in doc:
                doc = doc[key]
                break
        else:
            return [dict(doc)]
    if isinstance(doc, Mapping):
        return [dict(doc)]
    if not isinstance(doc, list):
        return []
    tensors = [t for t in doc if isinstance(t, Mapping) and "name" in t and "data" in t
               and isinstance(t["data"], list)]
    if tensors and len(tensors) == len(doc):
        length = max(len(t["data"]) for t in tensors)
        return [{t["name"]: t["data"][i] for t in tensors if i < len(t["data"])}
                for i in range(length)]
    return [dict(row) for row in doc if isinstance(row, Mapping)]


def capture_rows(lines: list[str]) -> tuple[list[dict], int]:
    """Input rows of SageMaker data-capture lines, and how many lines could not be read."""
    rows, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            captured = record["captureData"]["endpointInput"]
            data = captured.get("data") or ""
            if str(captured.get("encoding", "")).upper() == "BASE64":
                data = base64.b64decode(data).decode()
            rows += rows_of(json.loads(data))
        except (ValueError, KeyError, TypeError, AttributeError):
            bad += 1
    return rows, bad


def read_capture(s3, uri: str, since: datetime) -> tuple[list[dict], dict]:
    objects = [o for o in _objects(s3, uri) if o["LastModified"] >= since]
    lines: list[str] = []
    for obj in objects:
        lines += s3.get_object(Bucket=obj["Bucket"], Key=obj["Key"])["Body"].read() \
            .decode(errors="replace").splitlines()
    rows, bad = capture_rows(lines)
    return rows, {"files": len(objects), "rows": len(rows), "skipped_lines": bad,
                  "since": since.isoformat(timespec="seconds")}


def read_baseline(s3, uri: str, fmt: str, stats) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        objects = [o for o in _objects(s3, uri) if not o["Key"].endswith("/")]
        bucket, key = split_s3(uri)
        exact = [o for o in objects if o["Key"] == key]
        if exact:
            objects = exact
        if not objects:
            raise RuntimeError(f"the baseline {uri} has no objects")
        for index, obj in enumerate(objects):
            target = Path(tmp) / f"{index:05d}.{fmt}"
            s3.download_file(obj["Bucket"], obj["Key"], str(target))
        return stats.read_table(Path(tmp), fmt)


# -- checks --------------------------------------------------------------------------------

def health_result(check: Mapping, cloudwatch, endpoint: str, start: datetime,
                  end: datetime, results) -> dict:
    """latency_p99_ms / error_rate from the endpoint's AWS/SageMaker metrics."""
    period = max(60, int((end - start).total_seconds()) // 60 * 60)
    dims = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": VARIANT}]

    def stat(metric: str, **kwargs: Any) -> list[dict]:
        return cloudwatch.get_metric_statistics(
            Namespace="AWS/SageMaker", MetricName=metric, Dimensions=dims, StartTime=start,
            EndTime=end, Period=period, **kwargs).get("Datapoints", [])

    if check["metric"] == "latency_p99_ms":
        points = [p["ExtendedStatistics"]["p99"] for p in
                  stat("ModelLatency", ExtendedStatistics=["p99"]) if "ExtendedStatistics" in p]
        if not points:
            return results.result(check, None, skip="no ModelLatency datapoints in the window")
        return results.result(check, max(points) / 1000.0)   # ModelLatency is in microseconds
    calls = sum(p.get("Sum", 0.0) for p in stat("Invocations", Statistics=["Sum"]))
    if not calls:
        return results.result(check, None, skip="no invocations in the window")
    errors = sum(p.get("Sum", 0.0) for name in ("Invocation4XXErrors", "Invocation5XXErrors")
                 for p in stat(name, Statistics=["Sum"]))
    return results.result(check, errors / calls, requests=calls)


# -- one run -------------------------------------------------------------------------------

def run(env: Mapping[str, str], s3=None, cloudwatch=None, now: datetime | None = None) -> dict:
    """Run the checks once; write the report, the metric and (retrain) the stale marker."""
    import boto3

    s3 = s3 or boto3.client("s3")
    cloudwatch = cloudwatch or boto3.client("cloudwatch")
    stats, results = _kit_module("drift_stats"), _kit_module("monitoring")
    now = now or datetime.now(timezone.utc)
    checks = json.loads(env["MLFORM_CHECKS"])
    since = now - timedelta(hours=float(env.get("MLFORM_WINDOW_HOURS") or 1))
    min_rows, bins = int(env.get("MLFORM_MIN_ROWS") or 20), int(env.get("MLFORM_BINS") or 10)
    endpoint = env["MLFORM_ENDPOINT"]
    rows, window = read_capture(s3, env["MLFORM_CAPTURE_URI"], since)
    current = stats.numeric_columns(rows)
    baseline: dict | None = None
    found: list[dict] = []
    for check in checks:
        if check["metric"] in results.DRIFT_METRICS:
            if not rows:
                found.append(results.result(check, None, feature=check.get("feature"),
                                            skip=results.NO_CAPTURE))
                continue
            if baseline is None:
                baseline = read_baseline(s3, env["MLFORM_BASELINE_URI"],
                                         env.get("MLFORM_BASELINE_FORMAT") or "csv", stats)
            found += results.drift_results(check, baseline, current, min_rows=min_rows,
                                           bins=bins, stats=stats)
        else:
            found.append(health_result(check, cloudwatch, endpoint, since, now, results))
    breaches = [r for r in found if r["status"] == "breach"]
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    bucket, prefix = split_s3(env["MLFORM_REPORT_PREFIX"].rstrip("/") + "/")
    report_key = f"{prefix}{stamp}.json"
    report_uri = f"s3://{bucket}/{report_key}"
    address = env.get("MLFORM_ADDRESS", "")
    report: dict[str, Any] = {
        "version": 1, "monitor": address, "time": now.isoformat(timespec="seconds"),
        "endpoint": endpoint, "baseline": env.get("MLFORM_BASELINE_URI"), "window": window,
        "checks": found, "breached": bool(breaches),
        "breaches": [results.finding(b) for b in breaches],
        "on_breach": env.get("MLFORM_ON_BREACH"),
        "action": None, "report": report_uri}
    if breaches and env.get("MLFORM_ON_BREACH") == "retrain" and env.get("MLFORM_STALE_URI"):
        reason = results.breach_reason(address, breaches)
        marker_bucket, marker_key = split_s3(env["MLFORM_STALE_URI"])
        marker = results.stale_marker(
            reason, monitor=address, pipeline=env.get("MLFORM_PIPELINE_ADDRESS"),
            time=report["time"], report=report_uri,
            fingerprint=env.get("MLFORM_PIPELINE_FINGERPRINT") or None)
        s3.put_object(Bucket=marker_bucket, Key=marker_key, Body=json.dumps(marker).encode(),
                      ContentType="application/json")
        report["action"] = {"kind": "retrain", "stale_marker": env["MLFORM_STALE_URI"],
                            "reason": reason}
    elif breaches:
        report["action"] = {"kind": env.get("MLFORM_ON_BREACH") or "alert",
                            "alarm": env.get("MLFORM_MONITOR")}
    body = json.dumps(report, indent=1, default=str).encode()
    s3.put_object(Bucket=bucket, Key=report_key, Body=body, ContentType="application/json")
    s3.put_object(Bucket=bucket, Key=f"{prefix}latest.json", ContentType="application/json",
                  Body=json.dumps({"report": report_uri, "breached": report["breached"],
                                   "time": report["time"]}).encode())
    cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=[{
        "MetricName": METRIC, "Value": 1.0 if breaches else 0.0, "Unit": "Count",
        "Dimensions": [{"Name": "Monitor", "Value": env["MLFORM_MONITOR"]},
                       {"Name": "EndpointName", "Value": endpoint}]}])
    return report


def main() -> int:
    started = time.time()
    report = run(dict(os.environ))
    print(json.dumps({"breached": report["breached"], "breaches": report["breaches"],
                      "report": report["report"], "seconds": round(time.time() - started, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
