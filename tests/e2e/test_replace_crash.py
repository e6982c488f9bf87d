"""A create_before_destroy replacement killed at each of its steps leaves no orphan.

The replacement is two provider calls: create the new object, then delete the old one.
Each is journaled before it starts, and when the new object is recorded the old one is
recorded with it as *deposed*, so a kill at any point leaves every object either
recorded or never made; the next apply converges (deleting a deposed object is its own
planned change: `# dataset.d (deposed object ID) will be destroyed`).

The memory provider gives the new object of such a replacement its own id
(``...#2``), so old and new exist side by side as they would on a real service; the
kills are timed by its call log, which records each mutating call before the call's
latency (300 ms) runs out.
"""

from __future__ import annotations

import signal

import pytest
from _waiting import wait_until

from mlform.providers.memory.store import MemoryStore

from .harness import (
    assert_store_matches_state, load_state, make_stack, memory_provider, read_calls,
    run_mlform, start_mlform, store_path,
)

pytestmark = pytest.mark.timeout(300)

ADDRESS = "dataset.d"


def _stack(tmp_path, fmt: str):
    return make_stack(tmp_path, memory_provider(latency_ms=300) + f"""
dataset "d" {{
  source = "s3://bucket/d.csv"
  format = "{fmt}"
  lifecycle {{ create_before_destroy = true }}
}}
""")


def _objects(stack) -> dict:
    """The store's objects of the address, its log replayed (a killed apply leaves one)."""
    store = MemoryStore(store_path(stack))
    return {id: obj for id in store.ids() if (obj := store.get(id))["address"] == ADDRESS}


def _replace_and_kill(tmp_path, op: str) -> tuple:
    """Apply format csv; change it to jsonl (a replacement) and SIGKILL the apply while
    its `op` call (create of the new object, or delete of the old) is in flight."""
    stack = _stack(tmp_path, "csv")
    first = run_mlform("apply", "--auto-approve", cwd=stack)
    assert first.code == 0, first
    [old] = _objects(stack)
    _stack(tmp_path, "jsonl")
    seen = len(read_calls(stack))
    proc = start_mlform("apply", "--auto-approve", cwd=stack)
    wait_until(lambda: any(c["op"] == op for c in read_calls(stack)[seen:]), 60,
               f"the apply's {op} call")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return stack, old


def _converges(stack, old: str) -> None:
    again = run_mlform("apply", "--auto-approve", cwd=stack)
    assert again.code == 0, again
    plan = run_mlform("plan", "--detailed-exitcode", cwd=stack)
    assert plan.code == 0, plan
    objects = _objects(stack)
    assert old not in objects and len(objects) == 1, objects
    [(id, obj)] = objects.items()
    assert obj["attributes"]["format"] == "jsonl"
    rs = load_state(stack).get(ADDRESS)
    assert rs.id == id and rs.deposed == [] and rs.status == "ok"
    assert_store_matches_state(stack)


def test_killed_while_creating_the_new_object(tmp_path):
    stack, old = _replace_and_kill(tmp_path, "create")
    # the create never finished: the old object is still the recorded one
    assert load_state(stack).get(ADDRESS).id == old
    _converges(stack, old)


def test_killed_while_deleting_the_old_object(tmp_path):
    stack, old = _replace_and_kill(tmp_path, "delete")
    # the new object is recorded, the old one with it as deposed: nothing is untracked
    rs = load_state(stack).get(ADDRESS)
    objects = _objects(stack)
    assert set(objects) == {old, rs.id} and rs.id != old
    assert [d["id"] for d in rs.deposed] == [old]
    plan = run_mlform("plan", cwd=stack)
    assert plan.code == 0, plan
    assert f"# {ADDRESS} (deposed object {old}) will be destroyed" in plan.stdout, plan
    assert "Plan: 0 to add, 0 to change, 1 to destroy." in plan.stdout, plan
    _converges(stack, old)
