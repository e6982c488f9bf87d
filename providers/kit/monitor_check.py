"""A monitor's check on files: captured requests and a baseline, judged, reported.

The drift and health check every provider that has the data on a file system runs the
same way: the `local` provider on this machine (its scheduler and `mlform monitor run`),
the `kubernetes` provider's monitor pods after fetching the capture and the baseline from
storage.  `run_check(spec)` reads the captured requests (JSON lines, one request each, as
the kit's model server writes them: `inputs`, `status`, `latency_ms`, `time`) from
``spec["endpoint"]["capture"]``, the baseline from ``spec["baseline"]["path"]``, measures
every check (`kit.monitoring`, `kit.drift_stats`), writes the report under
``spec["dir"]/reports/`` (``latest.json``, ``latest.txt``, one file per run) and acts on a
breach (`on_breach`: a stale marker at ``spec["stale_marker"]``, an alert line, nothing).

Each run looks at the requests captured since the previous report (by byte offset and
inode of the capture file; a replaced file is read from the start), or with
``settings.window_rows = N`` at the last N input rows.  The server rotates its capture
(``capture.jsonl`` -> ``capture.jsonl.1`` -> ``.2`` ..., `capture_files`): a rename
keeps the inode, so a run finds the file it stopped in among the rotated ones and reads
on from there through the newer ones.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .monitoring import (
    NO_CAPTURE, breach_reason, drift_results, finding, result, stale_marker, summary_line,
)

__all__ = ["MonitorError", "MonitorSettings", "run_check", "render_summary", "METRICS",
           "ON_BREACH", "write_json_atomic", "read_json", "capture_files"]


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write-then-rename so a reader (or a kill) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _stats():
    """The statistics module (numpy), imported only when a check runs."""
    from . import drift_stats
    return drift_stats


class MonitorError(Exception):
    """A check could not run (unreadable baseline, missing files): said to the user as is."""


class MonitorSettings(BaseModel):
    """`settings { }` of a monitor whose check runs on files (local, kubernetes)."""

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


def capture_files(path: Path) -> list[Path]:
    """The files of a capture, oldest first: the rotated ``path.N`` ... ``path.1``
    (as `kit.serving_capture.CaptureLog` names them), then ``path`` itself, those that exist."""
    rotated = []
    for other in path.parent.glob(glob_escape(path.name) + ".*"):
        suffix = other.name[len(path.name) + 1:]
        if suffix.isdigit() and other.is_file():
            rotated.append((int(suffix), other))
    files = [other for _, other in sorted(rotated, reverse=True)]
    return files + [path] if path.is_file() else files


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _read_lines(path: Path, offset: int, live: bool) -> tuple[list[bytes], int, int]:
    """Whole lines of `path` from `offset`, the bytes they span, and 1 when a rotated
    (finished) file ends in a torn line (a crash mid-write): skipped, not waited for."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return [], 0, 0
    lines, used = _complete_lines(data)
    return lines, used, int(not live and used < len(data) and bool(data[used:].strip()))


def _read_since(path: Path, previous: Mapping | None) -> _Window:
    """Requests appended since the previous report: from where it stopped, in the file it
    stopped in (found by inode among the rotated ones), through every newer file.  A file
    that is gone or was truncated is read from the start, as is every file after it."""
    files = [(f, st) for f in capture_files(path) if (st := _stat(f)) is not None]
    if not files:
        return _Window([], "since_last_report", 0, 0, None)
    first, offset = 0, 0
    if previous:
        prev_end, prev_inode = previous.get("capture_offset_end"), previous.get("capture_inode")
        for index, (_, st) in enumerate(files):
            if prev_inode in (None, st.st_ino) and (prev_inode is not None or index == len(files) - 1):
                first = index
                if isinstance(prev_end, int) and 0 <= prev_end <= st.st_size:
                    offset = prev_end
                break
    requests: list[dict] = []
    bad = 0
    start, end = offset, offset
    for index in range(first, len(files)):
        live = index == len(files) - 1
        lines, used, torn = _read_lines(files[index][0], offset if index == first else 0, live)
        got, _, skipped = _parse_requests(lines)
        requests += got
        bad += skipped + torn
        end = (offset if index == first else 0) + used
    return _Window(requests, "since_last_report", start, end, files[-1][1].st_ino, bad)


def _read_last(path: Path, rows: int) -> _Window:
    """The newest whole requests that hold at least `rows` input rows (reading rotated
    files, newest first, only as far back as needed)."""
    files = [(f, st) for f in capture_files(path) if (st := _stat(f)) is not None]
    if not files:
        return _Window([], "last_rows", 0, 0, None)
    kept: list[dict] = []
    bad, count, start, end = 0, 0, 0, 0
    for index in range(len(files) - 1, -1, -1):
        live = index == len(files) - 1
        lines, used, torn = _read_lines(files[index][0], 0, live)
        requests, where, skipped = _parse_requests(lines)
        bad += skipped + torn
        if live:
            end = used
        first = len(requests)
        while first > 0 and count < rows:
            first -= 1
            count += len(_input_rows(requests[first]))
        kept = requests[first:] + kept
        # byte offset of the first kept line (lines were split on b"\n", one byte each)
        start = sum(len(line) + 1 for line in lines[:where[first]]) if first < len(requests) else used
        if count >= rows:
            break
    return _Window(kept, "last_rows", start, end, files[-1][1].st_ino, bad)


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
