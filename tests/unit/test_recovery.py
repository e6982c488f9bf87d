"""Recovery of interrupted provider calls (`mlform.recovery`), the replacement cases.

A kill between a provider call and its recorded result leaves an intent in the
journal.  These tests write such a journal by hand (what a kill at that instant
leaves), make the provider-side object as the interrupted call would have, and check
what loading the state settles: nothing is left untracked.
"""

from __future__ import annotations

from pathlib import Path

from mlform import operations
from mlform.providers.base import Planned
from mlform.session import Session

ADDRESS = "dataset.d"


def _stack(tmp_path: Path) -> Path:
    stack = tmp_path / "stack"
    stack.mkdir()
    (stack / "main.hcl").write_text('''
provider "memory" {
  store = ".mlform/memory.json"
}

dataset "d" {
  source = "s3://bucket/d.csv"
  format = "csv"
  lifecycle { create_before_destroy = true }
}
''')
    return stack


def _applied(stack: Path) -> tuple[Session, str]:
    session = Session(stack)
    with operations.locked(session, "apply"):
        state = operations.load_state(session)
        plan = operations.plan(session, state, operations.PlanOptions())
        result = operations.apply(session, state, plan, parallelism=1)
    assert result.ok, result.diagnostics
    return session, result.state.get(ADDRESS).id


def _interrupted(session: Session, action: str, id=None, replaces=None):
    """Leave an intent without a result in the journal, as a kill would."""
    with operations.locked(session, "apply"):
        state = operations.load_state(session)
        writer = session.backend.open_writer(state)
        writer.intent(ADDRESS, "dataset", "memory", action, id, replaces=replaces)
        writer.close()           # the intent is carried over, unresolved


def _recovered(stack: Path):
    session = Session(stack)
    try:
        with operations.locked(session, "plan"):
            return operations.load_state(session).get(ADDRESS)
    finally:
        session.close()


def test_a_replacement_create_that_made_its_object_is_adopted_and_the_old_one_deposed(tmp_path):
    stack = _stack(tmp_path)
    session, old = _applied(stack)
    provider = session.provider("memory")
    _interrupted(session, "create", replaces=old)
    made = provider.create(Planned(ADDRESS, "dataset", "d",
                                   {"source": "s3://bucket/d.csv", "format": "jsonl",
                                    "uri": "memory://x", "digest": "x", "rows": 0, "bytes": 1},
                                   replaces=old))
    session.close()
    assert made.id != old
    rs = _recovered(stack)
    assert rs.id == made.id and [d["id"] for d in rs.deposed] == [old]


def test_a_replacement_create_that_made_nothing_leaves_the_old_object_recorded(tmp_path):
    stack = _stack(tmp_path)
    session, old = _applied(stack)
    _interrupted(session, "create", replaces=old)
    session.close()
    rs = _recovered(stack)
    assert rs.id == old and rs.deposed == []


def test_a_deposed_delete_that_ran_forgets_the_object(tmp_path):
    stack = _stack(tmp_path)
    session, old = _applied(stack)
    with operations.locked(session, "apply"):
        state = operations.load_state(session)
        writer = session.backend.open_writer(state)
        rs = state.get(ADDRESS)
        writer.record(rs.with_deposed([{"id": "stale-object", "attributes": {}}]))
        writer.close()
    _interrupted(session, "delete-deposed", id="stale-object")   # the object is gone
    session.close()
    rs = _recovered(stack)
    assert rs.id == old and rs.deposed == []


def test_a_deposed_delete_that_did_not_run_keeps_the_object_for_the_next_plan(tmp_path):
    stack = _stack(tmp_path)
    session, old = _applied(stack)
    provider = session.provider("memory")
    other = provider.create(Planned(ADDRESS, "dataset", "d",
                                    {"source": "s3://bucket/d.csv", "format": "jsonl",
                                     "uri": "memory://x", "digest": "x", "rows": 0, "bytes": 1},
                                    replaces=old))
    with operations.locked(session, "apply"):
        state = operations.load_state(session)
        writer = session.backend.open_writer(state)
        writer.record(state.get(ADDRESS).with_deposed([{"id": other.id, "attributes": {}}]))
        writer.close()
    _interrupted(session, "delete-deposed", id=other.id)          # still there
    session.close()
    rs = _recovered(stack)
    assert [d["id"] for d in rs.deposed] == [other.id]
