"""The local journal's compact lines: a writer stamps only its first line with the
snapshot it applies to, and records leave out what replay restores by itself (default
values, the fields the address spells, the provider of the open intent).

What must hold: a journal left by a killed writer replays to exactly the state and the
open intents the writer had; lines after a stale stamp stay inert; a journal written by
an older release (every line stamped, every field present) still replays; and an
apply's journal stays smaller than the snapshot it is folded into.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlform.state import LocalBackend, ResourceState, State, StateError
from mlform.state.backend import (
    JournalReplay, PendingOp, expand_intent, expand_resource, journal_intent, journal_line,
    journal_resource,
)

from _states import crash, dataset_entry


def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / ".mlform" / "state" / "default.json")


def journal_records(b: LocalBackend) -> list[dict]:
    return [json.loads(line) for line in b.journal_path.read_bytes().splitlines()]


RESOURCES = [
    # every field at its default, address spelling the rest
    ResourceState("dataset.d", "dataset", "d", provider="memory"),
    ResourceState('dataset.d["k0"]', "dataset", "d", index_key="k0", provider="memory",
                  id="i", attributes={"uri": "u"}),
    ResourceState("model.m[3]", "model", "m", index_key=3, provider="memory.alias", id="x",
                  attributes={"nested": {"k": [1, 2.5, None, True]}}, status="tainted",
                  dependencies=["dataset.d"], sensitive_paths=[["token"]]),
    ResourceState('module.a.module.b.endpoint.e["é"]', "endpoint", "e",
                  module="module.a.module.b", index_key="é", provider="memory", id="e1",
                  deposed=[{"id": "old", "attributes": {"x": 1}}]),
    # fields the address does not spell: kept in the record
    ResourceState("dataset.d", "model", "d", provider="memory"),
    ResourceState('dataset.d["1"]', "dataset", "d", index_key=1, provider="memory"),
    ResourceState("not an address", "dataset", "d", provider="memory"),
    ResourceState("dataset.d", "dataset", "d", module="module.x", provider="memory"),
]


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.address)
def test_a_record_restores_every_field(resource):
    doc = journal_resource(resource)
    assert len(json.dumps(doc)) <= len(json.dumps(resource.to_json()))
    # without an open intent the provider stays in the record
    assert ResourceState.from_json(expand_resource(doc, {})) == resource
    intent = PendingOp(resource.address, resource.kind, resource.provider, "create")
    doc.pop("provider")
    assert ResourceState.from_json(
        expand_resource(doc, {resource.address: intent})) == resource


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.address)
def test_an_intent_restores_every_field(resource):
    op = PendingOp(resource.address, resource.kind, resource.provider, "update", "id-1")
    rec = expand_intent(journal_intent(op))
    assert PendingOp(rec["address"], rec["kind"], rec["provider"], rec["action"],
                     rec.get("id"), rec.get("replaces")) == op


keys = st.one_of(st.none(), st.integers(min_value=0, max_value=10**6),
                 st.text(min_size=0, max_size=8))
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,6}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(kind=names, name=names, modules=st.lists(names, max_size=2), key=keys)
def test_records_of_any_address_round_trip(kind, name, modules, key):
    module = ".".join(f"module.{m}" for m in modules)
    prefix = f"{module}." if module else ""
    index = "" if key is None else f"[{json.dumps(key) if isinstance(key, str) else key}]"
    r = ResourceState(f"{prefix}{kind}.{name}{index}", kind, name, module=module,
                      index_key=key, provider="p", id="i", attributes={"a": 1})
    assert ResourceState.from_json(expand_resource(journal_resource(r), {})) == r


def test_a_killed_writers_journal_replays_to_its_state_and_intents(tmp_path):
    b = backend(tmp_path)
    w = b.open_writer(b.load().state)
    for i in range(20):
        r = dataset_entry(i)
        w.intent(r.address, r.kind, r.provider, "create")
        w.record(r)
    w.intent("dataset.d20", "dataset", "memory", "create")        # in flight at the kill
    w.record(ResourceState("model.m", "model", "m", provider="memory", id="m"))  # no intent
    w.intent("dataset.d3", "dataset", "memory", "update", "mlform-default-dataset-d3")
    w.record_delete("dataset.d4")
    expected, pending = w.state(), w.pending()
    crash(w)

    records = journal_records(b)
    assert "lineage" in records[0] and all("lineage" not in r for r in records[1:])
    assert all("provider" not in r["resource"] for r in records if r["op"] == "record"
               and r["resource"]["address"].startswith("dataset."))
    loaded = b.load()
    assert loaded.state.content_digest() == expected.content_digest()
    assert loaded.state.resources == expected.resources
    assert sorted(loaded.pending, key=lambda p: p.address) == \
        sorted(pending, key=lambda p: p.address)

    # the next writer continues the journal: its own first line is stamped again
    w2 = b.open_writer(loaded.state)
    w2.record(dataset_entry(20))
    crash(w2)
    assert sum("lineage" in r for r in journal_records(b)) == 2
    again = b.load()
    assert again.state.get("dataset.d20") == dataset_entry(20)
    assert [p.address for p in again.pending] == ["dataset.d3"]
    final = b.open_writer(again.state).close()
    assert final.get("dataset.d20") == dataset_entry(20)
    # the open intent outlives the snapshot, re-stamped for it
    assert [r["address"] for r in journal_records(b)] == ["dataset.d3"]
    assert [p.address for p in b.load().pending] == ["dataset.d3"]


def test_lines_inherit_the_stamp_above_them(tmp_path):
    state = State(serial=4, lineage="L")
    intent = {"op": "intent", "address": "dataset.a", "provider": "memory",
              "action": "create"}
    bare = (json.dumps({"op": "record", "resource": {"address": "dataset.b",
                                                     "provider": "memory"}}) + "\n").encode()
    stale = journal_line(intent, "L", 3) + bare              # an older snapshot's lines
    current = journal_line({**intent, "address": "dataset.c"}, "L", 4) + bare
    replay = JournalReplay(state, "j").run(stale + current)
    assert replay.stale == 2 and replay.current == 2
    assert list(replay.state.resources) == ["dataset.b"]
    assert [p.address for p in replay.pending.values()] == ["dataset.c"]
    assert replay.pending["dataset.c"].kind == "dataset"
    # a line after the current stamp whose own stamp is stale is stale, and so are the
    # bare lines after it
    replay = JournalReplay(State(serial=4, lineage="L"), "j").run(current + stale)
    assert replay.current == 2 and replay.stale == 2


def test_a_bare_line_before_any_stamp_is_corruption():
    line = (json.dumps({"op": "delete", "address": "dataset.a"}) + "\n").encode()
    with pytest.raises(StateError, match="Corrupt state journal"):
        JournalReplay(State(serial=0, lineage="L"), "j").run(line)


def test_a_record_without_its_provider_or_intent_is_malformed():
    line = journal_line({"op": "record", "resource": {"address": "dataset.a"}}, "L", 0)
    with pytest.raises(StateError, match="provider"):
        JournalReplay(State(serial=0, lineage="L"), "j").run(line)


def test_an_older_releases_journal_still_replays():
    """Every line stamped, every field present: what journals held before."""
    r = dataset_entry(1)
    old = (journal_line({"op": "intent", "address": r.address, "kind": r.kind,
                         "provider": r.provider, "action": "create", "id": None}, "L", 2)
           + journal_line({"op": "record", "resource": r.to_json()}, "L", 2)
           + journal_line({"op": "intent", "address": "dataset.x", "kind": "dataset",
                           "provider": "memory", "action": "create", "id": None}, "L", 2))
    replay = JournalReplay(State(serial=2, lineage="L"), "j").run(old)
    assert replay.state.get(r.address) == r
    assert list(replay.pending) == ["dataset.x"]


def test_an_apply_journal_is_smaller_than_its_snapshot(tmp_path):
    """The durable-apply target: bytes written <= 2 x the final state, i.e. the
    journal (intent + record per resource) no bigger than the snapshot."""
    b = backend(tmp_path)
    w = b.open_writer(b.load().state)
    for i in range(500):
        r = dataset_entry(i)
        w.intent(r.address, r.kind, r.provider, "create")
        w.record(r)
    journal = w.bytes_written
    w.close()
    assert journal < b.path.stat().st_size
