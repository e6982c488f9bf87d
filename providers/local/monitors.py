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

import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import unquote, urlparse


from mlform.providers.base import (
    UNKNOWN, Desired, Diagnostic, Facts, KindSchema, LiveObject, Planned, ProviderError,
    Timeouts, contains_unknown, error,
)
from mlform.providers.kit.monitor_check import (
    MonitorError, MonitorSettings, run_check,
)
from mlform.providers.kit.monitoring import BASELINE_FORMATS
from mlform.providers.kit.plans import plan_of
from mlform.specs import address_kind, looks_like_address

from . import processes
from .env import LocalHandler, read_json, write_json_atomic

__all__ = ["MonitorHandler", "MonitorSettings", "MonitorError", "run_check", "run_id_of",
           "SPEC_VERSION"]

SPEC_VERSION = 1
COMPUTED = ("breached", "last_report")


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
