"""State locking through the CLI: one writer per state, the refused run told who holds
the lock, `force-unlock`, one lock per environment, and readers that never disturb a
running apply."""

from __future__ import annotations

import json
import re
import signal

import pytest

from .harness import (
    assert_store_matches_state, load_state, memory_provider, read_calls, run_mlform,
    start_mlform, state_path,
)

pytestmark = pytest.mark.timeout(300)

# Six creates of 1 s, two at a time: an apply takes about 3 s after start-up.
SLOW = memory_provider(store=".mlform/memory-{env}.json", latency_ms=1000,
                       call_log=".mlform/calls-{env}.jsonl") + """
dataset "d" {
  for_each = toset(["a", "b", "c", "d", "e", "f"])
  source   = "s3://bucket/${each.key}.csv"
}
"""
ADDRESSES = [f'dataset.d["{k}"]' for k in "abcdef"]
SLOW_APPLY = ("apply", "--auto-approve", "--parallelism", 2)


def store(env: str = "default") -> str:
    return f".mlform/memory-{env}.json"


def calls(stack, env: str = "default") -> list[dict]:
    return read_calls(stack, f".mlform/calls-{env}.jsonl")


def wait_until_working(proc) -> str:
    """Block until the apply has begun creating (it holds the lock by then)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "Creating..." in line:
            return "".join(seen)
    raise AssertionError(f"the apply ended before creating anything:\n{''.join(seen)}"
                         f"{proc.stderr.read()}")


def lock_id_from(refusal: str) -> str:
    found = re.search(r"mlform force-unlock (\S+)", refusal)
    assert found, f"the refusal names no lock id:\n{refusal}"
    return found.group(1)


def finish(proc) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_two_applies_at_once_one_runs_the_other_is_told_who_holds_the_lock(make_stack):
    stack = make_stack(SLOW)
    first = start_mlform(*SLOW_APPLY, cwd=stack)
    head = wait_until_working(first)
    second = run_mlform(*SLOW_APPLY, cwd=stack)
    assert second.code == 1, second
    assert "lock" in second.stderr.lower(), second
    assert f"pid {first.pid}" in second.stderr, second
    assert "'apply'" in second.stderr or "Operation: apply" in second.stderr, second
    holder = json.loads(state_path(stack).with_name("default.json.lock").read_text())
    assert lock_id_from(second.stderr) == holder["id"]
    assert holder["pid"] == first.pid and holder["operation"] == "apply"
    assert "Creating..." not in second.stdout, "the refused apply must not start work"

    code, out, err = finish(first)
    assert code == 0, head + out + err
    made = sorted(c["address"] for c in calls(stack))
    assert made == ADDRESSES, "each object must be created exactly once"
    assert sorted(load_state(stack).resources) == ADDRESSES
    assert_store_matches_state(stack, store=store())
    # The lock is gone with its holder: the next run proceeds.
    assert run_mlform("plan", "--detailed-exitcode", cwd=stack).code == 0


def test_two_applies_started_together(make_stack):
    stack = make_stack(SLOW)
    # One create at a time (about 6 s), so the later starter always finds the lock held.
    procs = [start_mlform("apply", "--auto-approve", "--parallelism", 1, cwd=stack)
             for _ in range(2)]
    results = [finish(p) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    _, _, refused_err = next(r for r in results if r[0] == 1)
    assert "lock" in refused_err.lower() and "pid" in refused_err, refused_err
    assert sorted(c["address"] for c in calls(stack)) == ADDRESSES
    assert_store_matches_state(stack, store=store())


def test_force_unlock_frees_a_lock_held_by_a_hung_run(make_stack):
    stack = make_stack(SLOW)
    hung = start_mlform(*SLOW_APPLY, cwd=stack)
    try:
        wait_until_working(hung)
        hung.send_signal(signal.SIGSTOP)       # holds the lock, does nothing
        refused = run_mlform("plan", cwd=stack)
        assert refused.code == 1, refused
        lock_id = lock_id_from(refused.stderr)

        wrong = run_mlform("force-unlock", "not-the-id", cwd=stack)
        assert wrong.code == 1 and lock_id in wrong.stderr, wrong
        assert run_mlform("plan", cwd=stack).code == 1, "a wrong id must not unlock"

        unlocked = run_mlform("force-unlock", lock_id, cwd=stack)
        assert unlocked.code == 0, unlocked
        assert lock_id in unlocked.stdout
        again = run_mlform("force-unlock", lock_id, cwd=stack)
        assert again.code == 1, again

        # The operator takes over while the hung run is still there, then kills it.
        took_over = run_mlform(*SLOW_APPLY, cwd=stack)
        assert took_over.code == 0, took_over
    finally:
        hung.send_signal(signal.SIGKILL)
        hung.communicate(timeout=60)
    assert run_mlform("plan", "--detailed-exitcode", cwd=stack).code == 0
    assert sorted(load_state(stack).resources) == ADDRESSES
    assert_store_matches_state(stack, store=store())


def test_each_environment_has_its_own_lock(make_stack):
    stack = make_stack(SLOW, files={"environments/staging.hcl": 'default_provider = "memory"\n',
                                    "environments/prod.hcl": 'default_provider = "memory"\n'})
    # One create at a time: staging holds its lock for about 6 s.
    staging = start_mlform("apply", "--auto-approve", "--parallelism", 1, "--env", "staging",
                           cwd=stack)
    wait_until_working(staging)
    blocked = run_mlform("plan", "--env", "staging", cwd=stack)
    assert blocked.code == 1 and f"pid {staging.pid}" in blocked.stderr, blocked
    assert "staging.json" in blocked.stderr, blocked
    # prod and the default environment are free while staging is locked.
    prod = start_mlform(*SLOW_APPLY, "--env", "prod", cwd=stack)
    wait_until_working(prod)
    assert staging.poll() is None, "staging should still be applying"
    assert run_mlform("state", "list", "--env", "prod", cwd=stack).code == 0
    for proc in (prod, staging):
        code, out, err = finish(proc)
        assert code == 0, out + err
    for env in ("staging", "prod"):
        assert sorted(load_state(stack, env).resources) == ADDRESSES
        assert_store_matches_state(stack, env=env, store=store(env))
    assert not state_path(stack, "default").exists() or not load_state(stack).resources


def test_readers_during_an_apply_do_not_disturb_it(make_stack):
    stack = make_stack(SLOW)
    writer = start_mlform(*SLOW_APPLY, cwd=stack)
    wait_until_working(writer)
    for args in (("state", "list"), ("state", "pull"), ("show",), ("output",), ("validate",),
                 ("graph",)):
        reader = run_mlform(*args, cwd=stack)
        assert reader.code == 0, reader
    code, out, err = finish(writer)
    assert code == 0, out + err
    assert sorted(load_state(stack).resources) == ADDRESSES
    assert_store_matches_state(stack, store=store())
    assert run_mlform("plan", "--detailed-exitcode", cwd=stack).code == 0
