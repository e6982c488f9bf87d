"""`mlform reconcile` as a real process: signals, exit codes, log lines, and its
metrics and health served over real HTTP on 127.0.0.1.

Synchronisation is on what the process says (its log lines, read as they come) and on
HTTP answers, never on sleeping.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.error
import urllib.request

import pytest

from e2e.harness import assert_store_matches_state, load_state, run_mlform, start_mlform
from mlform.reconcile_metrics import Health, MetricsServer, ReconcileMetrics

from .helpers import STACK_DIR, make_repo, stack_hcl

pytestmark = pytest.mark.timeout(180)

URL = re.compile(r"metrics on (http://127\.0\.0\.1:\d+)/metrics")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def read_until(proc: subprocess.Popen, wanted: str, seen: list[str], stream=None) -> str:
    """Read the process's stdout (or `stream`) line by line until one contains `wanted`."""
    for line in stream or proc.stdout:
        seen.append(line)
        if wanted in line:
            return line
    raise AssertionError(f"the process ended without printing {wanted!r}:\n{''.join(seen)}"
                         f"\n--- stderr ---\n{proc.stderr.read()}")


def sample(metrics_text: str, name: str) -> float:
    """A sample's value; a name without labels sums all its labelled series."""
    values = [float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
              if line.startswith(name + " ") or ("{" not in name and line.startswith(name + "{"))]
    assert values, f"no sample {name} in:\n{metrics_text}"
    return sum(values)


@pytest.fixture
def slow_stack(tmp_path):
    """A memory stack whose every operation takes 1.5 s (three creates, one after another)."""
    stack = tmp_path / "stack"
    stack.mkdir()
    (stack / "main.hcl").write_text(stack_hcl(latency_ms=1500))
    return stack


def test_sigterm_during_an_apply_finishes_the_cycle_and_exits_0(slow_stack):
    proc = start_mlform("reconcile", ".", "--auto-apply", "all", "--interval", "1s",
                        "--metrics-addr", "127.0.0.1:0", cwd=slow_stack)
    seen: list[str] = []
    try:
        url = URL.search(read_until(proc, "metrics on", seen)).group(1)
        read_until(proc, "dataset.train: Creating...", seen)      # the apply is in flight
        # health and metrics answer over HTTP while the first cycle runs
        status, body = get(url + "/healthz")
        assert status == 200 and json.loads(body)["reason"] == "no cycle has finished yet"
        status, text = get(url + "/metrics")
        assert status == 200 and sample(text, "mlform_reconcile_cycles_total") == 0
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stdout = "".join(seen) + out
    assert proc.returncode == 0, stdout + err
    assert "SIGTERM received: finishing the cycle in flight" in err, err
    assert "cycle 1 applied: 3 added, 0 changed, 0 destroyed" in stdout, stdout + err
    assert "cycle 2" not in stdout + err, "no new cycle may start after SIGTERM"
    assert stdout.rstrip().endswith("stopped"), stdout
    assert "Traceback" not in err
    state = load_state(slow_stack)
    assert sorted(state.resources) == ["dataset.train", "endpoint.clf", "model.clf"]
    assert_store_matches_state(slow_stack)


def test_a_second_sigterm_cancels_the_rest_of_the_apply(tmp_path):
    slow_stack = tmp_path / "stack"
    slow_stack.mkdir()
    # 4 s per operation: ample time for both signals to land while the first create runs
    (slow_stack / "main.hcl").write_text(stack_hcl(latency_ms=4000))
    proc = start_mlform("reconcile", ".", "--auto-apply", "all", "--metrics-addr", "off",
                        cwd=slow_stack)
    seen: list[str] = []
    try:
        read_until(proc, "dataset.train: Creating...", seen)
        proc.send_signal(signal.SIGTERM)
        # signals of one kind that arrive together are delivered once: wait for the first
        # to be handled before sending the second
        errors: list[str] = []
        read_until(proc, "SIGTERM received", errors, stream=proc.stderr)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        err = "".join(errors) + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stdout = "".join(seen) + out
    assert proc.returncode == 0, stdout + err
    assert "cycle 1 failed: apply cancelled after 1 added" in err, stdout + err
    assert "model.clf: Creating..." not in stdout, "nothing may start after the cancel"
    # the create in flight finished and was recorded; nothing else was started
    assert sorted(load_state(slow_stack).resources) == ["dataset.train"]
    assert_store_matches_state(slow_stack)


def test_sigterm_while_waiting_wakes_the_loop_at_once(tmp_path):
    stack = tmp_path / "stack"
    stack.mkdir()
    (stack / "main.hcl").write_text(stack_hcl())
    proc = start_mlform("reconcile", "--auto-apply", "drift", "--interval", "1h",
                        "--metrics-addr", "127.0.0.1:0", cwd=stack)
    seen: list[str] = []
    try:
        url = URL.search(read_until(proc, "metrics on", seen)).group(1)
        read_until(proc, "cycle 1 pending", seen)
        status, text = get(url + "/metrics")
        assert status == 200
        assert sample(text, 'mlform_reconcile_cycles_total{outcome="pending"}') == 1
        assert sample(text, "mlform_reconcile_pending_changes") == 3
        assert sample(text, "mlform_reconcile_last_success_timestamp_seconds") > 0
        assert get(url + "/healthz")[0] == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)       # an hour's wait ends at once
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out + err
    assert "SIGINT received" in err and out.rstrip().endswith("stopped"), out + err


def test_once_against_a_git_repository(tmp_path):
    make_repo(tmp_path / "remote", {str(STACK_DIR / "main.hcl"): stack_hcl()})
    ran = run_mlform("reconcile", str(STACK_DIR), "--git", str(tmp_path / "remote"),
                     "--checkout", "co", "--auto-apply", "all", "--once",
                     "--metrics-addr", "off", cwd=tmp_path)
    assert ran.code == 0, ran
    assert re.search(r"cycle 1 applied at [0-9a-f]{12}: 3 added", ran.stdout), ran
    assert_store_matches_state(tmp_path / "co" / STACK_DIR)


def test_an_unreachable_remote_is_a_clear_error_line(tmp_path):
    ran = run_mlform("reconcile", "--git", str(tmp_path / "missing"), "--once",
                     "--metrics-addr", "off", cwd=tmp_path)
    assert ran.code == 1, ran
    assert re.search(r"Z cycle 1 failed: Cannot clone \S+missing: fatal: ", ran.stderr), ran
    assert "error: Cannot clone" in ran.stderr and "The next cycle tries again." in ran.stderr
    assert "Traceback" not in ran.output


@pytest.mark.parametrize("args, message", [
    (["--once", "--cycles", "2"], "--once and --cycles cannot be combined"),
    (["--interval", "soon", "--once"], 'Invalid duration "soon"'),
    (["--metrics-addr", "nowhere", "--once"], 'Invalid --metrics-addr "nowhere"'),
    (["--branch", "main", "--once"], "--branch and --checkout need --git"),
    (["/abs/stack", "--git", "/x", "--once"], "With --git, DIR is the stack's path inside"),
])
def test_bad_options_are_diagnostics(tmp_path, args, message):
    ran = run_mlform("reconcile", *args, cwd=tmp_path)
    assert ran.code == 1 and f"error: {message}" in ran.stderr, ran
    assert "Traceback" not in ran.output


def test_a_metrics_port_in_use_is_a_diagnostic(tmp_path):
    metrics = ReconcileMetrics()
    server = MetricsServer(metrics, Health(60), "127.0.0.1", 0).start()
    try:
        ran = run_mlform("reconcile", "--once", "--metrics-addr", f"127.0.0.1:{server.port}",
                         cwd=tmp_path)
    finally:
        server.stop()
    assert ran.code == 1 and "error: Cannot serve metrics on 127.0.0.1:" in ran.stderr, ran


def test_healthz_turns_503_when_no_cycle_succeeded_for_the_grace_period():
    now = [1000.0]
    health = Health(interval_s=60, grace_cycles=3, clock=lambda: now[0])
    metrics = ReconcileMetrics()
    server = MetricsServer(metrics, health, "127.0.0.1", 0).start()
    try:
        assert get(server.url + "/healthz")[0] == 200          # nothing finished yet
        health.record("applied")
        assert get(server.url + "/healthz")[0] == 200
        now[0] += 120
        health.record("failed")
        status, body = get(server.url + "/healthz")
        assert status == 200 and "within the grace period" in body
        now[0] += 61                                           # 181 s > 3 intervals
        health.record("failed")
        status, body = get(server.url + "/healthz")
        assert status == 503 and json.loads(body)["healthy"] is False, body
        health.record("unchanged")
        assert get(server.url + "/healthz")[0] == 200
        status, text = get(server.url + "/metrics")
        assert status == 200 and "mlform_reconcile_git_pull_failures_total 0.0" in text
    finally:
        server.stop()
