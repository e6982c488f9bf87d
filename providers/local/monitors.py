"""The `monitor` kind of the `local` provider: drift and health checks on captured requests.

A monitor compares the requests its endpoint captured (`root/endpoints/<slug>/capture.jsonl`,
one JSON line per request, written by the endpoint server when `capture` is on) with its
baseline dataset, and checks serving health:

* `psi`, `ks` - per numeric feature present in both the baseline and the capture (a check
  with `feature` looks at that one only); the value of `ks` is the KS statistic D (0-1),
  its p-value is reported beside it; see `drift_stats`.
* `latency_p99_ms`, `error_rate` - over the captured requests (error = HTTP status >= 400).

A check breaches when its value is greater than its threshold.  Each run looks at the
requests captured since the previous report (`settings.window_rows = N`: the last N input
rows instead) and writes, under `root/monitors/<slug>/`:

    monitor.json                 what the monitor checks (written by create/update; read by
                                 `mlform monitor run` and by the scheduler)
    scheduler.json, .log         the detached scheduler's pid and log, when `schedule` is set
    reports/<UTC time>.json      one report per run; reports/latest.json is the newest
    reports/latest.txt           the same, readable: `BREACH psi amount = 0.4712 > 0.2`
    alerts.jsonl                 one line per breach when on_breach = "alert"

With `on_breach = "retrain"` a breach writes the pipeline's stale marker
`root/stale/<slug of the pipeline address>.json` = {"reason", "run_id", "monitor", "time",
"pipeline", "report"}: the pipeline handler reports it as `stale`, so the next plan re-runs
the pipeline with the monitor's finding as the reason.  The local provider needs the
`pipeline` attribute for this (validate says so); `run_id` is the name of the directory that
holds the pipeline's `model_uri` (`file://.../runs/<slug>/<run_id>/output`), so a marker
written against an older run is recognisably out of date once the pipeline has re-run.

Computed attributes: `breached` (the latest report breached) and `last_report` (the path of
`reports/latest.json`, null before the first report).  A scheduler that should run but is not
alive (or is not ours) reads as gone, so the next plan re-creates the monitor, which adopts
its files and starts a new scheduler.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlform.providers.base import (
    UNKNOWN, Desired, Diagnostic, Facts, KindSchema, LiveObject, Planned, ProviderError,
    Timeouts, contains_unknown, error,
)
from mlform.providers.kit.monitoring import (
    BASELINE_FORMATS, NO_CAPTURE, breach_reason, drift_results, finding, result, stale_marker,
    summary_line,
)
from mlform.providers.kit.plans import plan_of
from mlform.specs import address_kind, looks_like_address

from . import processes
from .env import LocalHandler, read_json, write_json_atomic

__all__ = ["MonitorHandler", "MonitorSettings", "MonitorError", "run_check", "run_id_of",
           "SPEC_VERSION"]

SPEC_VERSION = 1
COMPUTED = ("breached", "last_report")


def _stats():
    """The statistics module (numpy), imported only when a check runs."""
    from mlform.providers.kit import drift_stats
    return drift_stats


class MonitorError(Exception):
    """A check could not run (unreadable baseline, missing files): said to the user as is."""


class MonitorSettings(BaseModel):
    """`settings { }` of a local monitor."""

    model_config = ConfigDict(extra="forbid")

    window_rows: int | None = Field(
        None, ge=1, description="Check the last N captured input rows instead of the rows "
                                "captured since the previous report.")
    min_rows: int = Field(
        20, ge=1, description="With fewer captured input rows than this, drift checks are "
                              "skipped (reported as SKIP, never a breach): PSI of a handful "
                              "of rows is noise.")
    bins: int = Field(10, ge=2, le=100, description="Quantile bins of the baseline for PSI.")
    capture_path: str | None = Field(
        None, description="Read captured requests from this JSON-lines file (relative to the "
                          "stack) instead of the endpoint's capture.")


# ===================================================================== the check

@dataclass
class _Window:
    """The captured requests one run looks at."""

    requests: list[dict]
    mode: str                  # "since_last_report" | "last_rows"
    offset_start: int
    offset_end: int
    inode: int | None
    skipped_lines: int = 0

    @cached_property
    def rows(self) -> list[dict]:
        out: list[dict] = []
        for request in self.requests:
            out.extend(_input_rows(request))
        return out

    def describe(self) -> dict:
        times = [r["time"] for r in self.requests if isinstance(r.get("time"), (int, float))]
        return {"mode": self.mode, "requests": len(self.requests), "rows": len(self.rows),
                "from": min(times) if times else None, "to": max(times) if times else None,
                "capture_offset_start": self.offset_start, "capture_offset_end": self.offset_end,
                "capture_inode": self.inode, "skipped_lines": self.skipped_lines}


def _input_rows(request: Mapping) -> list[dict]:
    inputs = request.get("inputs")
    if isinstance(inputs, Mapping):
        return [dict(inputs)]
    if isinstance(inputs, list):
        return [row for row in inputs if isinstance(row, Mapping)]
    return []


def _complete_lines(data: bytes) -> tuple[list[bytes], int]:
    """Whole lines of `data` and how many bytes they span: a line the server is still
    writing (no newline yet) is left for the next run."""
    end = data.rfind(b"\n") + 1
    return data[:end].split(b"\n")[:-1], end


def _parse_requests(lines: list[bytes]) -> tuple[list[dict], list[int], int]:
    """The request records of `lines`, the index of the line each came from, and how
    many lines were not request records (a corrupt line is skipped, not fatal)."""
    requests, where, bad = [], [], 0
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(record, dict):
            requests.append(record)
            where.append(index)
        else:
            bad += 1
    return requests, where, bad


def _read_since(path: Path, previous: Mapping | None) -> _Window:
    """Requests appended since the previous report (by byte offset; a capture file that
    was replaced or truncated is read from the start)."""
    try:
        stat = path.stat()
    except OSError:
        return _Window([], "since_last_report", 0, 0, None)
    offset = 0
    if previous:
        prev_end = previous.get("capture_offset_end")
        same_file = previous.get("capture_inode") in (None, stat.st_ino)
        if isinstance(prev_end, int) and same_file and 0 <= prev_end <= stat.st_size:
            offset = prev_end
    with open(path, "rb") as fh:
        fh.seek(offset)
        lines, used = _complete_lines(fh.read())
    requests, _, bad = _parse_requests(lines)
    return _Window(requests, "since_last_report", offset, offset + used, stat.st_ino, bad)


def _read_last(path: Path, rows: int) -> _Window:
    """The newest whole requests that hold at least `rows` input rows."""
    try:
        stat = path.stat()
        data = path.read_bytes()
    except OSError:
        return _Window([], "last_rows", 0, 0, None)
    lines, used = _complete_lines(data)
    requests, where, bad = _parse_requests(lines)
    first, count = len(requests), 0
    while first > 0 and count < rows:
        first -= 1
        count += len(_input_rows(requests[first]))
    # byte offset of the first kept line (lines were split on b"\n", one byte each)
    start = sum(len(line) + 1 for line in lines[:where[first]]) if first < len(requests) else used
    return _Window(requests[first:], "last_rows", start, used, stat.st_ino, bad)


@dataclass
class _CheckData:
    """What the metric functions look at; the baseline is read only when a drift check needs it."""

    spec: Mapping[str, Any]
    window: _Window
    settings: MonitorSettings

    @cached_property
    def baseline(self) -> dict[str, list[float]]:
        base = self.spec["baseline"]
        path = Path(base["path"])
        if not path.exists():
            raise MonitorError(f"the baseline {path} does not exist"
                               + (f" ({base['address']} may need an apply)" if base.get("address") else ""))
        try:
            return _stats().read_table(path, base.get("format") or "csv")
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise MonitorError(f"cannot read the baseline {path}: {exc}") from None

    @cached_property
    def current(self) -> dict[str, list[float]]:
        return _stats().numeric_columns(self.window.rows)


def _drift(check: Mapping, data: _CheckData) -> list[dict]:
    """psi / ks: one result per feature (`kit.monitoring.drift_results`)."""
    if not data.window.rows:
        return [result(check, None, feature=check.get("feature"), skip=NO_CAPTURE)]
    return drift_results(check, data.baseline, data.current, min_rows=data.settings.min_rows,
                         bins=data.settings.bins, stats=_stats())


def _latency(check: Mapping, data: _CheckData) -> list[dict]:
    values = [r.get("latency_ms") for r in data.window.requests]
    value = _stats().p99([v for v in values if isinstance(v, (int, float))])
    return [result(check, value, requests=len(data.window.requests),
                   skip="" if value is not None else "no captured requests with a latency")]


def _errors(check: Mapping, data: _CheckData) -> list[dict]:
    value = _stats().error_rate([r.get("status") for r in data.window.requests])
    return [result(check, value, requests=len(data.window.requests),
                   skip="" if value is not None else "no captured requests with a status")]


#: metric -> the function that measures it (one result per feature for drift metrics).
METRICS: dict[str, Callable[[Mapping, _CheckData], list[dict]]] = {
    "psi": _drift, "ks": _drift, "latency_p99_ms": _latency, "error_rate": _errors,
}


# -- what a breach does ------------------------------------------------------

def _mark_stale(spec: Mapping, report: dict) -> dict:
    pipeline = spec.get("pipeline")
    marker = spec.get("stale_marker")
    if not pipeline or not marker:   # validate requires it; an old monitor.json may lack it
        return {"kind": "retrain", "done": False,
                "detail": "no pipeline to retrain: set `pipeline` on the monitor"}
    reason = breach_reason(spec["address"], report["breaches_detail"])
    write_json_atomic(Path(marker), stale_marker(
        reason, monitor=spec["address"], pipeline=pipeline["address"], time=report["time"],
        report=report["report_path"], run_id=pipeline.get("run_id")))
    return {"kind": "retrain", "done": True, "pipeline": pipeline["address"],
            "run_id": pipeline.get("run_id"), "stale_marker": marker, "reason": reason}


def _alert(spec: Mapping, report: dict) -> dict:
    path = Path(spec["dir"]) / "alerts.jsonl"
    line = {"time": report["time"], "monitor": spec["address"], "report": report["report_path"],
            "breaches": [finding(b) for b in report["breaches_detail"]]}
    with open(path, "a") as fh:     # one short line per write: appends do not interleave
        fh.write(json.dumps(line, sort_keys=True) + "\n")
    return {"kind": "alert", "done": True, "alerts": str(path)}


def _nothing(spec: Mapping, report: dict) -> dict:
    return {"kind": "none", "done": True}


#: on_breach -> what a breach does.
ON_BREACH: dict[str, Callable[[Mapping, dict], dict]] = {
    "retrain": _mark_stale, "alert": _alert, "none": _nothing,
}


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One check at a time per monitor (the scheduler and `mlform monitor run` may overlap)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _stamp(now: float) -> str:
    moment = datetime.fromtimestamp(now, timezone.utc)
    return moment.strftime("%Y%m%dT%H%M%S") + f".{moment.microsecond:06d}Z"


def _iso(now: float) -> str:
    return datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def render_summary(report: Mapping) -> str:
    """The readable form of a report (reports/latest.txt, `mlform monitor run`)."""
    window = report["window"]
    source = ("captured since the previous report" if window["mode"] == "since_last_report"
              else "the newest captured rows")
    lines = [f"{report['monitor']}  {report['time_iso']}  "
             f"{'BREACH' if report['breached'] else 'OK'}",
             f"window: {window['rows']} rows in {window['requests']} requests ({source})"]
    lines += [summary_line(res) for res in report["checks"]]
    action = report.get("action")
    if action and action.get("kind") == "retrain":
        lines.append(f"action: marked {action['pipeline']} stale (run {action.get('run_id') or '?'})"
                     if action.get("done") else f"action: retrain not done: {action.get('detail')}")
    elif action and action.get("kind") == "alert":
        lines.append(f"action: alert written to {action['alerts']}")
    lines.append(f"report: {report['report_path']}")
    return "\n".join(lines) + "\n"


def run_check(spec: Mapping[str, Any], *, now: float | None = None,
              window_rows: int | None = None) -> dict:
    """Run the monitor described by `spec` (its monitor.json) once; write and return the report.

    The same code runs for `mlform monitor run`, the `run` action and the scheduler.
    Raises MonitorError when the check cannot run at all.
    """
    try:
        settings = MonitorSettings.model_validate(spec.get("settings") or {})
    except ValidationError as exc:
        raise MonitorError(f"invalid settings: {exc.errors()[0]['msg']}") from None
    directory = Path(spec["dir"])
    reports = directory / "reports"
    with _locked(directory / ".lock"):
        now = time.time() if now is None else now
        previous = read_json(reports / "latest.json")
        rows = window_rows or settings.window_rows
        capture = Path(spec["endpoint"]["capture"])
        window = (_read_last(capture, rows) if rows
                  else _read_since(capture, (previous or {}).get("window")))
        data = _CheckData(spec, window, settings)
        results = [result for check in spec["checks"]
                   for result in METRICS[check["metric"]](check, data)]
        breaches = [r for r in results if r["status"] == "breach"]
        path = reports / f"{_stamp(now)}.json"
        report: dict[str, Any] = {
            "version": 1, "monitor": spec["address"], "time": now, "time_iso": _iso(now),
            "endpoint": {"address": spec["endpoint"].get("address"), "capture": str(capture)},
            "baseline": {k: spec["baseline"].get(k) for k in ("address", "path", "format", "digest")},
            "window": window.describe(), "checks": results, "breached": bool(breaches),
            "breaches": [finding(b) for b in breaches], "breaches_detail": breaches,
            "on_breach": spec.get("on_breach", "alert"), "action": None,
            "report_path": str(path),
        }
        if breaches:
            report["action"] = ON_BREACH[report["on_breach"]](spec, report)
        del report["breaches_detail"]
        report["summary"] = render_summary(report)
        write_json_atomic(path, report)
        write_json_atomic(reports / "latest.json", report)
        tmp = reports / ".latest.txt.tmp"
        tmp.write_text(report["summary"])
        os.replace(tmp, reports / "latest.txt")
    return report


# ===================================================================== the handler

_RUN_ID = re.compile(r"/([^/]+)/output/?$")


def run_id_of(model_uri: Any) -> str | None:
    """The pipeline run behind a local `model_uri` (`file://.../runs/<slug>/<run_id>/output`)."""
    if not isinstance(model_uri, str):
        return None
    match = _RUN_ID.search(urlparse(model_uri).path or model_uri)
    return unquote(match.group(1)) if match else None


def _address_of(value: Any, kind: str) -> str | None:
    """The address a reference names: a compact reference dict, or an address string."""
    if isinstance(value, Mapping) and isinstance(value.get("address"), str):
        return value["address"]
    if isinstance(value, str) and looks_like_address(value) and address_kind(value) == kind:
        return value
    return None


@dataclass
class _Resolved:
    """Where a monitor's inputs are on disk, or why they cannot be found."""

    capture: Path | None = None
    baseline: Path | None = None
    baseline_format: str | None = None
    problems: list[tuple[str, str, str]] = field(default_factory=list)   # (summary, detail, hint)


class MonitorHandler(LocalHandler):
    # A monitor's findings change as traffic arrives: they are its output, not drift of
    # the infrastructure, so refresh records them without reporting a change.
    schema = KindSchema(settings_model=MonitorSettings, computed=COMPUTED,
                        service_managed=("breached", "last_report"),
                        timeouts=Timeouts(create=120.0, update=120.0, delete=60.0))

    def __init__(self, env) -> None:
        super().__init__(env)
        # name -> operation outside plan/apply (`mlform monitor run ADDR` calls "run").
        self._actions: dict[str, Callable[[LiveObject, dict], dict]] = {"run": self._action_run}

    # -------------------------------------------------------------- paths

    def _dir(self, address: str) -> Path:
        return self.env.root / "monitors" / self.env.slug(address)

    def _spec_path(self, address: str) -> Path:
        return self._dir(address) / "monitor.json"

    # -------------------------------------------------------------- resolving references

    def _resolve(self, attrs: Mapping[str, Any]) -> _Resolved:
        """Find the capture file and the baseline; UNKNOWN values are left unresolved."""
        out = _Resolved()
        settings = attrs.get("settings") or {}
        endpoint = attrs.get("endpoint")
        capture_path = settings.get("capture_path") if isinstance(settings, Mapping) else None
        if isinstance(capture_path, str):
            out.capture = self.env.resolve(capture_path)
        elif endpoint is not UNKNOWN and endpoint is not None:
            address = _address_of(endpoint, "endpoint")
            if address is None:
                out.problems.append((
                    "the local monitor needs the endpoint as a reference",
                    f"endpoint = {endpoint!r} names no endpoint resource, so its request "
                    "capture cannot be found.",
                    "Write endpoint = endpoint.NAME, or set settings.capture_path."))
            else:
                out.capture = self.env.root / "endpoints" / self.env.slug(address) / "capture.jsonl"
        baseline = attrs.get("baseline")
        if baseline is UNKNOWN or baseline is None:
            return out
        if isinstance(baseline, Mapping):
            uri, fmt = baseline.get("uri"), baseline.get("format")
            if uri is UNKNOWN or fmt is UNKNOWN:
                return out
            if not isinstance(uri, str):
                out.problems.append(("the baseline dataset has no uri",
                                     f"{baseline.get('address')} reports no uri.", ""))
                return out
        elif _address_of(baseline, "dataset"):
            out.problems.append((
                "the local monitor needs the baseline as a reference, not a name in quotes",
                f'baseline = "{baseline}" carries no location.',
                f"Write baseline = {baseline} (no quotes), or a file path."))
            return out
        else:
            uri, fmt = str(baseline), None
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            out.baseline = self.env.resolve(unquote(parsed.path) if parsed.scheme else uri)
        else:
            out.problems.append((
                "the local monitor reads baselines from local files",
                f"The baseline {uri} is not a local path or file:// URI.",
                "Use a dataset served by the local provider."))
            return out
        fmt = fmt or out.baseline.suffix.lstrip(".").lower() or "csv"
        if fmt not in BASELINE_FORMATS:
            out.problems.append((
                f'the local monitor cannot read a "{fmt}" baseline',
                f"Readable formats: {', '.join(BASELINE_FORMATS)}.", ""))
        out.baseline_format = fmt
        return out

    # -------------------------------------------------------------- contract

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        attrs = desired.attributes
        diags: list[Diagnostic] = []

        def problem(summary: str, detail: str = "", hint: str = "") -> None:
            diags.append(error(f"Invalid monitor {desired.address}: {summary}", detail,
                               address=desired.address, hint=hint))

        settings = attrs.get("settings") or {}
        if attrs.get("on_breach") == "retrain" and attrs.get("pipeline") is None:
            problem('on_breach = "retrain" needs the pipeline to retrain',
                    "The local provider does not infer it from the endpoint's model.",
                    "Add pipeline = pipeline.NAME to the monitor.")
        if not contains_unknown(settings):
            for summary, detail, hint in self._resolve(attrs).problems:
                problem(summary, detail, hint)
        return diags

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        if prior is None:
            # A new monitor may adopt files (and reports) a crashed create left behind.
            return plan_of(desired, {key: UNKNOWN for key in COMPUTED})
        # The finding changes out of band (scheduler, `mlform monitor run`): keep what
        # refresh read, so a breach never shows as a change the monitor will make.
        return plan_of(desired, {"breached": bool(prior.attributes.get("breached", False)),
                                 "last_report": prior.attributes.get("last_report")})

    def create(self, planned: Planned) -> LiveObject:
        spec = self._write_spec(planned)
        try:
            self._ensure_scheduler(spec)
        except OSError as exc:
            raise ProviderError(f"could not start the monitor scheduler: {exc}",
                                address=planned.address, retryable=True,
                                partial=self._live(planned.address, spec)) from None
        return self._live(planned.address, spec)

    def read(self, prior: LiveObject) -> LiveObject | None:
        spec = read_json(self._spec_path(prior.address))
        if not isinstance(spec, dict) or spec.get("address") != prior.address:
            return None
        if spec.get("schedule") and not self._scheduler_alive(spec):
            return None        # drift: the next apply re-creates it (adopting its files)
        return self._live(prior.address, spec)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        spec = self._write_spec(planned)
        try:
            self._ensure_scheduler(spec)
        except OSError as exc:
            raise ProviderError(f"could not start the monitor scheduler: {exc}",
                                address=planned.address, retryable=True) from None
        live = self._live(planned.address, spec)
        # Known planned findings stay as planned (apply does not re-check); refresh reads anew.
        attrs = dict(live.attributes)
        for key in COMPUTED:
            if key in planned.attributes and planned.attributes[key] is not UNKNOWN:
                attrs[key] = planned.attributes[key]
        return LiveObject(live.address, live.kind, live.id, attrs)

    def delete(self, prior: LiveObject) -> None:
        directory = self._dir(prior.address)
        spec_path = self._spec_path(prior.address)
        record = read_json(directory / "scheduler.json") or {}
        # stop() signals only a process whose command line names this monitor.json
        processes.stop(record.get("pid"), str(spec_path))
        shutil.rmtree(directory, ignore_errors=True)

    def action(self, live: LiveObject, name: str, args: dict) -> dict:
        handler = self._actions.get(name)
        if handler is None:
            raise NotImplementedError(name)
        return handler(live, args)

    # -------------------------------------------------------------- actions

    def _action_run(self, live: LiveObject, args: dict) -> dict:
        spec = read_json(self._spec_path(live.address))
        if not isinstance(spec, dict):
            raise ProviderError(f"{live.address} has no local monitor files: run mlform apply "
                                f"to create it first", address=live.address,
                                service_message=f"{self._spec_path(live.address)} does not exist.")
        try:
            return run_check(spec, window_rows=args.get("window_rows"))
        except MonitorError as exc:
            raise ProviderError(f"{live.address}: {exc}", address=live.address) from None
        except OSError as exc:
            raise ProviderError(f"{live.address}: {exc}", address=live.address,
                                retryable=True) from None

    # -------------------------------------------------------------- internals

    def _write_spec(self, planned: Planned) -> dict:
        attrs = {k: v for k, v in planned.attributes.items() if k not in COMPUTED}
        if contains_unknown(attrs):
            raise ProviderError("the monitor's attributes are not all known at apply time",
                                address=planned.address)
        resolved = self._resolve(attrs)
        if resolved.problems:
            summary, detail, _ = resolved.problems[0]
            raise ProviderError(summary, address=planned.address, service_message=detail)
        directory = self._dir(planned.address)
        pipeline = attrs.get("pipeline")
        pipeline_address = _address_of(pipeline, "pipeline")
        endpoint = attrs.get("endpoint")
        baseline = attrs.get("baseline")
        spec = {
            "version": SPEC_VERSION,
            "address": planned.address,
            "id": self.env.object_id(planned.address),
            "dir": str(directory),
            "attributes": attrs,
            "endpoint": {"address": _address_of(endpoint, "endpoint"),
                         "url": endpoint.get("url") if isinstance(endpoint, Mapping) else endpoint,
                         "capture": str(resolved.capture)},
            "baseline": {"address": baseline.get("address") if isinstance(baseline, Mapping) else None,
                         "digest": baseline.get("digest") if isinstance(baseline, Mapping) else None,
                         "path": str(resolved.baseline), "format": resolved.baseline_format},
            "checks": [{"metric": c["metric"], "threshold": float(c["threshold"]),
                        "feature": c.get("feature")} for c in attrs.get("checks", [])],
            "schedule": attrs.get("schedule"),
            "on_breach": attrs.get("on_breach", "alert"),
            "settings": MonitorSettings.model_validate(attrs.get("settings") or {}).model_dump(),
            "pipeline": None if pipeline_address is None else {
                "address": pipeline_address,
                "model_uri": pipeline.get("model_uri") if isinstance(pipeline, Mapping) else None,
                "run_id": run_id_of(pipeline.get("model_uri")) if isinstance(pipeline, Mapping) else None},
            "stale_marker": None if pipeline_address is None else
                str(self.env.root / "stale" / f"{self.env.slug(pipeline_address)}.json"),
        }
        write_json_atomic(directory / "monitor.json", spec)
        return spec

    def _scheduler_alive(self, spec: Mapping) -> bool:
        record = read_json(Path(spec["dir"]) / "scheduler.json") or {}
        return processes.is_ours(record.get("pid"), str(Path(spec["dir"]) / "monitor.json"))

    def _ensure_scheduler(self, spec: Mapping) -> None:
        """Run the scheduler when there is a schedule, restarted when the schedule it was
        started with differs (it re-reads everything else itself); never signal a process
        that is not ours."""
        directory = Path(spec["dir"])
        spec_path = directory / "monitor.json"
        record_path = directory / "scheduler.json"
        record = read_json(record_path) or {}
        pid = record.get("pid")
        alive = processes.is_ours(pid, str(spec_path))
        if alive and record.get("schedule") != spec.get("schedule"):
            processes.stop(pid, str(spec_path))
            alive = False
        if not spec.get("schedule"):
            record_path.unlink(missing_ok=True)
            return
        if alive:
            return
        # mlform's own interpreter (not settings' `python`): the scheduler imports mlform.
        argv = [sys.executable, "-m", "mlform.providers.local.scheduler", str(spec_path)]
        pid = processes.spawn(argv, directory / "scheduler.log", env=dict(os.environ), cwd=directory)
        write_json_atomic(record_path, {"pid": pid, "schedule": spec["schedule"],
                                        "argv": argv, "started": time.time()})

    def _live(self, address: str, spec: Mapping) -> LiveObject:
        latest_path = Path(spec["dir"]) / "reports" / "latest.json"
        latest = read_json(latest_path)
        attrs = dict(spec["attributes"])
        attrs["breached"] = bool(latest.get("breached")) if isinstance(latest, dict) else False
        attrs["last_report"] = str(latest_path) if isinstance(latest, dict) else None
        return LiveObject(address, "monitor", spec["id"], attrs)
