"""Crash safety through the CLI: SIGKILL an apply at random moments, Ctrl-C it once and
twice, and check that the state always loads, a re-apply converges, and the memory
"service" holds exactly what the state says (no orphans, no duplicates)."""

from __future__ import annotations

import concurrent.futures as cf
import os
import random
import signal
import time

import pytest

from mlform.state import LocalBackend

from .harness import (
    assert_store_matches_state, load_state, make_stack, memory_provider, run_mlform,
    start_mlform, state_path,
)

pytestmark = pytest.mark.timeout(600)

KEYS = 100          # 100 datasets + 100 models = 200 resources
PARALLELISM = 8
TRIALS = int(os.environ.get("MLFORM_E2E_KILL_TRIALS", "20"))   # more for a soak run
SEED = 20240611

BIG_STACK = memory_provider(latency_ms=20) + f"""
dataset "d" {{
  for_each = toset([for i in range({KEYS}) : format("k%03d", i)])
  source   = "s3://bucket/${{each.key}}.csv"
  format   = "csv"
}}

model "m" {{
  for_each  = dataset.d
  artifact  = each.value.uri
  framework = "torch"
}}
"""


def apply_args():
    return ("apply", "--auto-approve", "--parallelism", PARALLELISM)


def converge(stack) -> None:
    """A re-apply succeeds and leaves nothing to do; the service matches the state."""
    again = run_mlform(*apply_args(), cwd=stack, timeout=180)
    assert again.code == 0, again
    plan = run_mlform("plan", "--detailed-exitcode", "--parallelism", PARALLELISM, cwd=stack,
                      timeout=180)
    assert plan.code == 0, plan
    assert "No changes" in plan.stdout, plan
    state = load_state(stack)
    assert len(state.resources) == 2 * KEYS
    assert all(rs.status == "ok" for rs in state.resources.values())
    assert_store_matches_state(stack)


def assert_state_loads(stack) -> None:
    if state_path(stack).exists():
        load_state(stack)           # strict parse of the snapshot + journal replay
    listed = run_mlform("state", "list", cwd=stack)
    assert listed.code == 0, listed


def timed_apply(stack) -> float:
    """Apply in full; return how long it ran after printing its plan."""
    proc = start_mlform(*apply_args(), cwd=stack)
    proc.stdout.readline()
    start = time.monotonic()
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, (out, err)
    return time.monotonic() - start


def _kill_during_apply(stack, delay: float) -> str:
    """Start an apply, SIGKILL it `delay` seconds after it printed its plan (when the
    provider calls begin); say how far it had got."""
    proc = start_mlform(*apply_args(), cwd=stack)
    proc.stdout.readline()
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    if proc.returncode != -signal.SIGKILL:
        return "finished"
    if not state_path(stack).exists():
        return "before"
    n = len(load_state(stack).resources)
    return "midway" if n < 2 * KEYS else "after"


def _trial(tmp_path, trial: int, delays: list[float]) -> tuple[list[str], str]:
    """Kill one or two applies, then check the state loads and a re-apply converges."""
    stack = make_stack(tmp_path, BIG_STACK, name=f"trial{trial}")
    where = []
    try:
        for delay in delays:
            where.append(_kill_during_apply(stack, delay))
            assert_state_loads(stack)
        converge(stack)
    except AssertionError as exc:
        return where, f"trial {trial} (killed after {delays}s, {where}): {exc}"
    return where, ""


def test_sigkill_at_random_moments_never_loses_or_duplicates(tmp_path):
    # How long an apply runs once planned, so the kills spread across all of it.
    duration = timed_apply(make_stack(tmp_path, BIG_STACK, name="probe"))
    rng = random.Random(SEED)
    # Every fourth trial kills twice: the second apply starts from a killed one's leftovers.
    plans = [[rng.uniform(0.0, duration) for _ in range(2 if t % 4 == 3 else 1)]
             for t in range(TRIALS)]
    # Two trials at a time: most of a trial is process start-up and provider latency.
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda t: _trial(tmp_path, t, plans[t]), range(TRIALS)))
    failures = [msg for _, msg in results if msg]
    assert not failures, "\n\n".join(failures)
    midway = sum(w.count("midway") for w, _ in results)
    print("kill outcomes:", [w for w, _ in results])
    assert midway >= TRIALS // 4, f"too few kills landed while resources were being created: {results}"


def _wait_for_progress(proc, needle: str = "Creation complete", count: int = 1,
                       timeout: float = 60.0, stream=None) -> list[str]:
    """Read the apply's stdout (or `stream`) until `needle` was seen `count` times."""
    stream = proc.stdout if stream is None else stream
    lines, seen = [], 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            seen += 1
            if seen >= count:
                return lines
    raise AssertionError(f"no {needle!r} in the apply's output:\n{''.join(lines)}")


def test_one_sigint_finishes_in_flight_work_then_stops(tmp_path):
    stack = make_stack(tmp_path, BIG_STACK)
    proc = start_mlform(*apply_args(), cwd=stack)
    head = _wait_for_progress(proc, count=5)
    proc.send_signal(signal.SIGINT)
    # Read through the same buffered reader as `head`: communicate() reads the raw pipe
    # and would skip lines readline() had already buffered.
    rest = proc.stdout.read()
    err = proc.stderr.read()
    proc.wait(timeout=120)
    out = "".join(head) + rest
    assert proc.returncode == 1, (out, err)
    assert "Interrupt" in err, err
    assert "not started" in err, err
    state = load_state(stack)
    assert 0 < len(state.resources) < 2 * KEYS, "the interrupt should stop the apply midway"
    assert not LocalBackend(state_path(stack)).load().pending, "in-flight calls were not recorded"
    # Everything in flight finished: each creation that began is complete and recorded.
    started = out.count("Creating...")
    finished = out.count("Creation complete")
    assert started == finished, f"{started} creations started, {finished} finished"
    assert finished == len(state.resources)
    assert_store_matches_state(stack)
    converge(stack)


def test_two_sigints_exit_at_once_and_the_state_still_loads(tmp_path):
    stack = make_stack(tmp_path, BIG_STACK)
    proc = start_mlform(*apply_args(), cwd=stack)
    _wait_for_progress(proc, count=5)
    proc.send_signal(signal.SIGINT)
    # the second Ctrl-C only once the first was handled (two at once may arrive as one)
    _wait_for_progress(proc, "Interrupt received", stream=proc.stderr)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 5, "the second Ctrl-C must exit at once"
    assert proc.returncode != 0, (out, err)
    assert_state_loads(stack)
    converge(stack)
