"""The local provider's `monitor` kind, its scheduler and `mlform monitor run`.

Captured requests are written by hand in the endpoint server's format (one JSON line
per request), so these tests do not depend on a running endpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mlform import registry
from mlform.cli.app import app
from mlform.expr.values import UNKNOWN
from mlform.providers.base import Desired, LiveObject, ProviderContext, ProviderError
from mlform.providers.local import LocalProvider, processes
from mlform.providers.local import scheduler as sched
from mlform.providers.local.monitors import run_id_of
from mlform.state import ResourceState, State
from mlform.plan.planner import settings_problems
from mlform.providers.kit import calls as contract

ADDRESS = "monitor.drift"
RUN_ID = "run-0123456789ab"


# ------------------------------------------------------------------ fixtures

def make_provider(stack: Path) -> LocalProvider:
    context = ProviderContext(name="local", alias=None, stack=stack.name, env="default",
                              stack_dir=stack, config={})
    return LocalProvider(context)


@pytest.fixture
def stack(tmp_path) -> Path:
    path = tmp_path / "stack"
    path.mkdir()
    return path


@pytest.fixture
def provider(stack):
    p = make_provider(stack)
    yield p
    p.close()
    # a failed test must not leave a scheduler behind (stop() signals only ours)
    for record in (p.env.root / "monitors").glob("*/scheduler.json"):
        processes.stop(json.loads(record.read_text()).get("pid"), str(record.parent / "monitor.json"))


def write_baseline(stack: Path, n: int = 2000) -> Path:
    rng = np.random.default_rng(1)
    path = stack / "baseline.csv"
    lines = ["amount,age,label"] + [f"{a:.3f},{b:.2f},{int(a > 100)}"
                                    for a, b in zip(rng.normal(100, 20, n), rng.normal(40, 10, n))]
    path.write_text("\n".join(lines) + "\n")
    return path


def capture_path(provider: LocalProvider, endpoint: str = "endpoint.fraud") -> Path:
    return provider.env.root / "endpoints" / provider.env.slug(endpoint) / "capture.jsonl"


def write_capture(provider: LocalProvider, *, shift: float = 0.0, requests: int = 50,
                  rows_per_request: int = 4, status: int = 200, latency: float = 12.0,
                  seed: int = 2) -> Path:
    """Append requests in the endpoint server's capture format."""
    rng = np.random.default_rng(seed)
    path = capture_path(provider)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        for i in range(requests):
            rows = [{"amount": float(rng.normal(100 + shift, 20)), "age": float(rng.normal(40, 10))}
                    for _ in range(rows_per_request)]
            fh.write(json.dumps({"time": time.time() + i * 0.001, "version": 1,
                                 "latency_ms": latency + i % 3, "status": status,
                                 "inputs": rows, "outputs": [0] * len(rows)}) + "\n")
    return path


def monitor_attrs(provider: LocalProvider, baseline: Path, **overrides) -> dict:
    root = provider.env.root
    attrs = {
        "endpoint": {"address": "endpoint.fraud", "url": "http://127.0.0.1:9/", "model_version": 1},
        "baseline": {"address": "dataset.transactions", "uri": baseline.as_uri(),
                     "digest": "sha256:abc", "format": "csv"},
        "checks": [{"metric": "psi", "threshold": 0.2},
                   {"metric": "ks", "threshold": 0.3, "feature": "amount"},
                   {"metric": "latency_p99_ms", "threshold": 500},
                   {"metric": "error_rate", "threshold": 0.1}],
        "on_breach": "retrain",
        "pipeline": {"address": "pipeline.train", "fingerprint": "f1",
                     "model_uri": (root / "runs" / "pipeline.train-123456" / RUN_ID / "output").as_uri()},
    }
    attrs.update(overrides)
    return {k: v for k, v in attrs.items() if v is not None}


def create(provider: LocalProvider, attrs: dict, address: str = ADDRESS) -> LiveObject:
    desired = Desired(address, "monitor", address.split(".")[-1], attrs)
    assert contract.validate(provider, desired) == []
    return provider.create(contract.plan(provider, desired, None))


def stale_marker(provider: LocalProvider) -> Path:
    return provider.env.root / "stale" / f"{provider.env.slug('pipeline.train')}.json"


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# ------------------------------------------------------------------ checks and reports

def test_monitor_breach_on_shifted_inputs_marks_pipeline_stale(provider, stack):
    live = create(provider, monitor_attrs(provider, write_baseline(stack)))
    assert live.attributes["breached"] is False and live.attributes["last_report"] is None
    write_capture(provider, shift=60.0)

    report = provider.action(live, "run", {})

    assert report["breached"] is True
    psi_amount = next(c for c in report["checks"] if c["metric"] == "psi" and c["feature"] == "amount")
    assert psi_amount["status"] == "breach" and psi_amount["value"] > 0.2
    psi_age = next(c for c in report["checks"] if c["metric"] == "psi" and c["feature"] == "age")
    assert psi_age["status"] == "ok"                      # unshifted feature stays quiet
    assert [c["feature"] for c in report["checks"] if c["metric"] == "psi"] == ["age", "amount"]
    ks_amount = next(c for c in report["checks"] if c["metric"] == "ks")
    assert ks_amount["status"] == "breach" and ks_amount["p_value"] < 0.01
    assert report["window"]["rows"] == 200 and report["window"]["requests"] == 50
    assert f"psi(amount) = {psi_amount['value']:.4g} > 0.2" in report["breaches"]

    # report files: one per run, latest.json and a readable latest.txt
    reports = Path(report["report_path"]).parent
    assert json.loads(Path(report["report_path"]).read_text())["breached"] is True
    assert json.loads((reports / "latest.json").read_text())["report_path"] == report["report_path"]
    text = (reports / "latest.txt").read_text()
    assert f"BREACH psi amount = {psi_amount['value']:.4g} > 0.2" in text
    assert "ok     psi age = " in text and "action: marked pipeline.train stale" in text

    # the stale marker the pipeline handler reads
    marker = json.loads(stale_marker(provider).read_text())
    assert marker["run_id"] == RUN_ID and marker["monitor"] == ADDRESS
    assert marker["reason"].startswith(f"{ADDRESS} found drift: psi(amount) = {psi_amount['value']:.4g} > 0.2")

    read = provider.read(live)
    assert read.attributes["breached"] is True
    assert read.attributes["last_report"] == str(reports / "latest.json")


def test_no_breach_on_unshifted_inputs(provider, stack):
    live = create(provider, monitor_attrs(provider, write_baseline(stack)))
    write_capture(provider, shift=0.0, requests=100)
    report = provider.action(live, "run", {})
    assert report["breached"] is False, report["summary"]
    assert {c["status"] for c in report["checks"]} == {"ok"}
    assert report["action"] is None
    assert not stale_marker(provider).exists()
    assert provider.read(live).attributes["breached"] is False


def test_health_checks_breach_on_latency_and_errors(provider, stack):
    live = create(provider, monitor_attrs(provider, write_baseline(stack), on_breach="alert"))
    write_capture(provider, requests=40, status=500, latency=900.0)
    report = provider.action(live, "run", {})
    by_metric = {c["metric"]: c for c in report["checks"] if c["feature"] is None}
    assert by_metric["latency_p99_ms"]["status"] == "breach"
    assert by_metric["latency_p99_ms"]["value"] == pytest.approx(np.percentile([900 + i % 3 for i in range(40)], 99))
    assert by_metric["error_rate"]["value"] == 1.0 and by_metric["error_rate"]["status"] == "breach"
    assert report["action"]["kind"] == "alert"
    alerts = (provider.env.root / "monitors" / provider.env.slug(ADDRESS) / "alerts.jsonl").read_text()
    assert "error_rate = 1 > 0.1" in alerts
    assert not stale_marker(provider).exists()       # alert does not retrain


def test_each_run_reads_the_requests_captured_since_the_last_report(provider, stack):
    live = create(provider, monitor_attrs(provider, write_baseline(stack)))
    write_capture(provider, shift=60.0, requests=30)
    assert provider.action(live, "run", {})["window"]["rows"] == 120
    again = provider.action(live, "run", {})
    assert again["window"]["rows"] == 0 and again["breached"] is False
    assert all(c["status"] == "skipped" for c in again["checks"])
    # a line the server is still writing waits for the next run
    with open(capture_path(provider), "a") as fh:
        fh.write('{"time": 1, "status": 200, "inputs": [{"amount": 1')
    write_capture(provider, requests=0)
    assert provider.action(live, "run", {})["window"]["rows"] == 0
    with open(capture_path(provider), "a") as fh:
        fh.write('.0}], "latency_ms": 3}\n')
    assert provider.action(live, "run", {})["window"]["rows"] == 1


def test_window_rows_and_min_rows_settings(provider, stack):
    baseline = write_baseline(stack)
    live = create(provider, monitor_attrs(provider, baseline, settings={"window_rows": 40, "min_rows": 50}))
    write_capture(provider, shift=60.0, requests=30)          # 120 rows
    report = provider.action(live, "run", {})
    assert report["window"]["mode"] == "last_rows" and report["window"]["rows"] == 40
    drift = [c for c in report["checks"] if c["metric"] in ("psi", "ks")]
    assert drift and all(c["status"] == "skipped" for c in drift)   # 40 < min_rows
    assert "settings.min_rows = 50" in report["summary"]
    # the on-demand run can ask for a larger window
    report = provider.action(live, "run", {"window_rows": 100})
    assert report["window"]["rows"] == 100 and report["breached"] is True


def test_feature_check_on_a_feature_the_capture_lacks(provider, stack):
    live = create(provider, monitor_attrs(provider, write_baseline(stack), on_breach="none",
                                          checks=[{"metric": "psi", "threshold": 0.2, "feature": "label"}]))
    write_capture(provider)
    report = provider.action(live, "run", {})
    assert report["checks"][0]["status"] == "skipped" and report["breached"] is False


def test_run_errors_are_provider_errors(provider, stack):
    baseline = write_baseline(stack)
    live = create(provider, monitor_attrs(provider, baseline))
    write_capture(provider)
    baseline.unlink()
    with pytest.raises(ProviderError, match="baseline"):
        provider.action(live, "run", {})
    with pytest.raises(ProviderError, match="no action"):
        provider.action(live, "explode", {})
    with pytest.raises(ProviderError, match="apply"):
        provider.action(LiveObject("monitor.other", "monitor", None, {}), "run", {})


# ------------------------------------------------------------------ validate and plan

def diagnostics(provider, attrs) -> list[str]:
    return [d.summary for d in contract.validate(provider, Desired(ADDRESS, "monitor", "drift", attrs))]


def test_validate(provider, stack):
    baseline = write_baseline(stack)
    ok = monitor_attrs(provider, baseline)
    assert diagnostics(provider, ok) == []
    no_pipeline = dict(ok)
    del no_pipeline["pipeline"]
    assert any("needs the pipeline" in s for s in diagnostics(provider, no_pipeline))
    assert diagnostics(provider, {**no_pipeline, "on_breach": "alert"}) == []
    # settings are checked by the engine, once, against the kind's settings model
    model = provider.kinds["monitor"].settings_model
    [bins] = settings_problems(model, {"bins": 1}, ADDRESS, None, "local", "monitor")
    assert bins.summary == "Invalid settings for monitor.drift: bins: must be at least 2, got 1"
    [nope] = settings_problems(model, {"nope": 1}, ADDRESS, None, "local", "monitor")
    assert nope.summary == 'Invalid settings for monitor.drift: unknown setting "nope"'
    assert any("endpoint as a reference" in s
               for s in diagnostics(provider, {**ok, "endpoint": "http://example.com/x"}))
    assert diagnostics(provider, {**ok, "endpoint": "http://example.com/x",
                                  "settings": {"capture_path": "capture.jsonl"}}) == []
    parquet = {**ok["baseline"], "format": "parquet"}
    assert any('"parquet"' in s for s in diagnostics(provider, {**ok, "baseline": parquet}))
    assert any("not a name in quotes" in s
               for s in diagnostics(provider, {**ok, "baseline": "dataset.transactions"}))
    assert diagnostics(provider, {**ok, "baseline": "baseline.csv"}) == []
    # values known only after apply are not judged yet
    assert diagnostics(provider, {**ok, "baseline": {"address": "dataset.x", "uri": UNKNOWN,
                                                     "format": "csv"}, "pipeline": UNKNOWN}) == []


def test_plan_keeps_the_recorded_finding(provider, stack):
    attrs = monitor_attrs(provider, write_baseline(stack))
    desired = Desired(ADDRESS, "monitor", "drift", attrs)
    planned = contract.plan(provider, desired, None)
    assert planned.attributes["breached"] is UNKNOWN and planned.attributes["last_report"] is UNKNOWN
    prior = LiveObject(ADDRESS, "monitor", "id", {**attrs, "breached": True, "last_report": "/x"})
    again = contract.plan(provider, desired, prior)
    assert again.attributes["breached"] is True and again.attributes["last_report"] == "/x"
    assert not (provider.env.root / "monitors").exists()          # plan has no side effects


def test_create_is_idempotent_and_read_agrees(provider, stack):
    attrs = monitor_attrs(provider, write_baseline(stack))
    first = create(provider, attrs)
    second = create(provider, attrs)
    assert first == second == provider.read(LiveObject(ADDRESS, "monitor", None, {}))
    provider.delete(first)
    assert provider.read(first) is None
    provider.delete(first)                                        # absent already = success


@pytest.mark.parametrize("uri,expected", [
    ("file:///s/.mlform/local/default/runs/pipeline.train-1a2b3c/run-abc/output", "run-abc"),
    ("file:///s/runs/p/run-abc-2/output/", "run-abc-2"),
    ("s3://bucket/model.tar.gz", None),
    (None, None),
])
def test_run_id_of(uri, expected):
    assert run_id_of(uri) == expected


# ------------------------------------------------------------------ the scheduler process

def scheduler_record(provider) -> dict:
    path = provider.env.root / "monitors" / provider.env.slug(ADDRESS) / "scheduler.json"
    return json.loads(path.read_text()) if path.exists() else {}


def spec_marker(provider) -> str:
    return str(provider.env.root / "monitors" / provider.env.slug(ADDRESS) / "monitor.json")


def test_scheduler_starts_is_recorded_and_stops_on_delete(provider, stack):
    live = create(provider, monitor_attrs(provider, write_baseline(stack), schedule="*/5 * * * *"))
    pid = scheduler_record(provider)["pid"]
    assert processes.is_ours(pid, spec_marker(provider))
    log = provider.env.root / "monitors" / provider.env.slug(ADDRESS) / "scheduler.log"
    assert wait_for(lambda: log.exists() and "next check at" in log.read_text()), \
        log.read_text() if log.exists() else "no log"
    assert processes.is_ours(pid, spec_marker(provider))      # it stays up, waiting
    assert provider.read(live) is not None

    # same schedule: kept; a new schedule: restarted
    desired = Desired(ADDRESS, "monitor", "drift", {**dict(live.attributes), "checks": live.attributes["checks"][:1]})
    provider.update(live, contract.plan(provider, desired, live))
    assert scheduler_record(provider)["pid"] == pid
    desired = Desired(ADDRESS, "monitor", "drift", {**desired.attributes, "schedule": "0 * * * *"})
    updated = provider.update(live, contract.plan(provider, desired, live))
    new_pid = scheduler_record(provider)["pid"]
    assert new_pid != pid and processes.is_ours(new_pid, spec_marker(provider))
    assert not processes.is_ours(pid, spec_marker(provider))

    provider.delete(updated)
    assert not processes.is_ours(new_pid, spec_marker(provider))
    assert not (provider.env.root / "monitors" / provider.env.slug(ADDRESS)).exists()


def test_a_dead_scheduler_reads_as_gone_and_create_restarts_it(provider, stack):
    attrs = monitor_attrs(provider, write_baseline(stack), schedule="*/5 * * * *")
    live = create(provider, attrs)
    pid = scheduler_record(provider)["pid"]
    processes.stop(pid, spec_marker(provider))
    assert provider.read(live) is None                        # drift: the next plan creates it
    create(provider, attrs)
    assert processes.is_ours(scheduler_record(provider)["pid"], spec_marker(provider))
    provider.delete(live)


def test_a_process_not_ours_is_never_killed(provider, stack, monkeypatch):
    signalled: list[tuple[int, int]] = []
    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        signalled.append((pid, sig))
        real_kill(pid, sig)

    attrs = monitor_attrs(provider, write_baseline(stack), schedule="*/5 * * * *")
    live = create(provider, attrs)
    processes.stop(scheduler_record(provider)["pid"], spec_marker(provider))
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # the recorded pid now belongs to someone else (pid reuse)
        record_path = provider.env.root / "monitors" / provider.env.slug(ADDRESS) / "scheduler.json"
        record_path.write_text(json.dumps({"pid": stranger.pid, "schedule": "*/5 * * * *"}))
        assert provider.read(live) is None                    # not ours: not our scheduler
        with monkeypatch.context() as patched:
            patched.setattr(os, "kill", kill)
            provider.delete(live)
        assert [sig for pid, sig in signalled if pid == stranger.pid] == []
        assert stranger.poll() is None                        # still running
    finally:
        stranger.kill()
        stranger.wait()


def test_scheduler_loop_runs_the_check_and_exits_on_stop(provider, stack, monkeypatch):
    create(provider, monitor_attrs(provider, write_baseline(stack)))
    write_capture(provider, shift=60.0)
    calls = []

    class Immediately:
        def next_after(self, moment):
            calls.append(moment)
            return moment if len(calls) == 1 else moment.replace(year=moment.year + 1)

    monkeypatch.setattr(sched, "parse_cron", lambda expression: Immediately())
    spec_path = Path(spec_marker(provider))
    spec = json.loads(spec_path.read_text())
    spec_path.write_text(json.dumps({**spec, "schedule": "* * * * *"}))
    stop = threading.Event()
    logger = sched.logging.getLogger("test-scheduler")
    result = []
    thread = threading.Thread(target=lambda: result.append(sched.serve(spec_path, stop, logger)))
    thread.start()
    latest = spec_path.parent / "reports" / "latest.json"
    try:
        assert wait_for(lambda: len(calls) >= 2)
    finally:
        stop.set()
        thread.join(10)
    assert result == [0]
    assert json.loads(latest.read_text())["breached"] is True
    assert stale_marker(provider).exists()
    assert "BREACH psi amount = " in (spec_path.parent / "reports" / "latest.txt").read_text()


def test_scheduler_program_exits_cleanly_on_sigterm(provider, stack):
    create(provider, monitor_attrs(provider, write_baseline(stack)))
    spec_path = Path(spec_marker(provider))
    spec_path.write_text(json.dumps({**json.loads(spec_path.read_text()), "schedule": "0 0 1 1 *"}))
    proc = subprocess.Popen([sys.executable, "-m", "mlform.providers.local.scheduler", str(spec_path)])
    log = spec_path.parent / "scheduler.log"
    try:
        assert wait_for(lambda: log.exists() and "next check at" in log.read_text())
        proc.terminate()
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    assert log.read_text().rstrip().endswith("stopped")


def test_scheduler_exits_when_its_monitor_is_gone(tmp_path):
    stop = threading.Event()
    assert sched.serve(tmp_path / "monitor.json", stop, sched.logging.getLogger("t")) == 0


# ------------------------------------------------------------------ mlform monitor run

@pytest.fixture
def cli_stack(stack, monkeypatch):
    """A stack whose state holds a local monitor; the CLI runs in it."""
    (stack / "main.hcl").write_text('provider "local" {}\n')
    real_get = registry.get
    # the entry point may not be installed in this checkout: resolve "local" to the class
    monkeypatch.setattr(registry, "get", lambda name: LocalProvider if name == "local" else real_get(name))
    monkeypatch.chdir(stack)
    return stack


def write_state(stack: Path, live: LiveObject, kind: str = "monitor", provider: str = "local") -> None:
    state = State(serial=1, lineage="4a1d6b8e-0000-4000-8000-000000000001")
    name = live.address.split(".")[-1]
    state.set(ResourceState(address=live.address, kind=kind, name=name, provider=provider,
                            id=live.id, attributes=dict(live.attributes)))
    path = stack / ".mlform" / "state" / "default.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(state.dumps())


def test_cli_monitor_run_reports_breach_with_exit_2(cli_stack):
    provider = make_provider(cli_stack)
    live = create(provider, monitor_attrs(provider, write_baseline(cli_stack)))
    write_capture(provider, shift=60.0)
    write_state(cli_stack, live)
    result = CliRunner().invoke(app, ["monitor", "run", ADDRESS])
    assert result.exit_code == 2, result.output
    assert "BREACH psi amount = " in result.output and "Traceback" not in result.output

    write_capture(provider, shift=0.0, requests=100, seed=5)
    result = CliRunner().invoke(app, ["monitor", "run", ADDRESS, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["breached"] is False and report["monitor"] == ADDRESS


def test_cli_monitor_run_errors_are_diagnostics(cli_stack):
    provider = make_provider(cli_stack)
    live = create(provider, monitor_attrs(provider, write_baseline(cli_stack)))
    write_state(cli_stack, LiveObject("dataset.transactions", "dataset", "x", {}), kind="dataset")
    runner = CliRunner()
    for args, message in [(["monitor", "run", "monitor.nope"], "No resource at monitor.nope"),
                          (["monitor", "run", "dataset.transactions"], "is a dataset, not a monitor")]:
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    write_state(cli_stack, live, provider="memory")
    result = runner.invoke(app, ["monitor", "run", ADDRESS])
    assert result.exit_code == 1 and "no action" in result.output, result.output
