"""What a monitor check produces, in one format and one wording for every provider.

A check (``{metric, threshold, feature?}``) gives one *result* per feature for the
drift metrics (`psi`, `ks`) and one for the health metrics (`latency_p99_ms`,
`error_rate`): ``{"metric", "feature", "value", "threshold", "status", "detail", ...}``
with status ``ok``, ``breach`` (value > threshold) or ``skipped`` (with the reason in
``detail``).  `finding` and `summary_line` render results; `breach_reason` is the
sentence a retrain request carries (and so the reason the next plan gives for
re-running the pipeline); `stale_marker` is that request's document.

`drift_results` measures one drift check: it picks the features
(`drift_stats.features_to_check`), skips those without enough captured values, and
computes PSI or KS.  The statistics module is passed in (`stats`): only the code that
runs a check imports numpy.

This module imports nothing of mlform: the sagemaker provider uploads it, with
`drift_stats.py`, beside the drift check it runs in AWS.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["DRIFT_METRICS", "HEALTH_METRICS", "BASELINE_FORMATS", "NO_CAPTURE", "result",
           "finding", "summary_line", "breach_reason", "drift_results", "stale_marker"]

DRIFT_METRICS = ("psi", "ks")
HEALTH_METRICS = ("latency_p99_ms", "error_rate")
#: dataset formats a baseline may have (what `drift_stats.read_table` reads)
BASELINE_FORMATS = ("csv", "jsonl", "json")

#: why a drift check is skipped when the window holds no captured request
NO_CAPTURE = "no captured requests in the window"


def result(check: Mapping[str, Any], value: float | None, *, feature: str | None = None,
           skip: str = "", **extra: Any) -> dict:
    """One result of a check: `value` against its threshold, or skipped (`skip` says why)."""
    threshold = float(check["threshold"])
    if skip or value is None:
        status = "skipped"
    else:
        status = "breach" if value > threshold else "ok"
    return {"metric": check["metric"], "feature": feature, "value": value,
            "threshold": threshold, "status": status, "detail": skip, **extra}


def _num(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def finding(res: Mapping[str, Any]) -> str:
    """`psi(amount) = 0.4712 > 0.2` / `latency_p99_ms = 812 > 500`."""
    name = f"{res['metric']}({res['feature']})" if res.get("feature") else res["metric"]
    sign = ">" if res["status"] == "breach" else "<="
    return f"{name} = {_num(res['value'])} {sign} {_num(res['threshold'])}"


def summary_line(res: Mapping[str, Any]) -> str:
    """A report line: `BREACH psi amount = 0.4712 > 0.2`, `ok ...`, `SKIP ...: why`."""
    label = f"{res['metric']} {res['feature']}" if res.get("feature") else res["metric"]
    if res["status"] == "skipped":
        return f"SKIP   {label}: {res['detail']}"
    tag = "BREACH" if res["status"] == "breach" else "ok    "
    sign = ">" if res["status"] == "breach" else "<="
    return f"{tag} {label} = {_num(res['value'])} {sign} {_num(res['threshold'])}"


def breach_reason(address: str, breaches: list[Mapping[str, Any]]) -> str:
    """`monitor.drift found drift: psi(amount) = 0.47 > 0.2` (the pipeline's re-run reason)."""
    what = "drift" if any(b["metric"] in DRIFT_METRICS for b in breaches) else "a breach"
    return f"{address} found {what}: " + "; ".join(finding(b) for b in breaches)


def drift_results(check: Mapping[str, Any], baseline: Mapping[str, list],
                  current: Mapping[str, list], *, min_rows: int, bins: int, stats: Any) -> list[dict]:
    """One result per feature of a psi/ks check (the one it names, or every numeric
    feature in both samples); `stats` is `drift_stats`."""
    features = stats.features_to_check(check, baseline, current)
    if not features:
        return [result(check, None, skip=stats.NO_COMMON_FEATURE)]
    out = []
    for feature in features:
        got = len(current.get(feature, ()))
        if feature not in baseline:
            out.append(result(check, None, feature=feature,
                              skip="not a numeric column of the baseline"))
        elif got < min_rows:
            out.append(result(check, None, feature=feature, rows=got,
                              skip=f"only {got} captured values (settings.min_rows = {min_rows})"))
        elif check["metric"] == "psi":
            out.append(result(check, stats.psi(baseline[feature], current[feature], bins=bins),
                              feature=feature, rows=got))
        else:
            ks = stats.ks(baseline[feature], current[feature])
            out.append(result(check, ks.statistic, feature=feature, rows=got,
                              p_value=ks.p_value))
    return out


def stale_marker(reason: str, *, monitor: str, pipeline: str | None, time: Any,
                 report: str | None, run_id: str | None = None,
                 fingerprint: str | None = None) -> dict:
    """The document of a retrain request (read back by `kit.reruns.StaleMarker`): it names
    the run it judged, or, where the monitor cannot know the run, its fingerprint."""
    return {"reason": reason, "run_id": run_id, "fingerprint": fingerprint,
            "monitor": monitor, "pipeline": pipeline, "time": time, "report": report}
