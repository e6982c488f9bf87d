"""One set of backend tests run against every state backend: `local` (files) and `s3`
(an S3 bucket in the moto emulator, tests/emulator).

Both must keep the same promises: a round trip, serial and lineage rules, push guards,
the journal (replay, pending operations, stale records ignored, nothing lost to a kill),
sensitive values never stored in clear, a writer shared by threads, and the lock.  The
tests that are about one backend alone (S3 group commit, S3 errors, configuration) come
after the shared ones.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from _states import crash
from _waiting import wait_until

from mlform.config.loader import load_stack
from mlform.diagnostics import DiagnosticError
from mlform.session import make_backend
from mlform.state import (
    LocalBackend, LockInfo, PendingOp, ResourceState, S3Backend, State, StateError, StateLocked,
    hash_value, is_marker,
)
from mlform.state.backend import journal_line, lock_age

BUCKET = "mlform-state"
KEY = "mlform/stack/default.json"


def res(address: str, **attrs) -> ResourceState:
    kind, _, name = address.partition(".")
    return ResourceState(address=address, kind=kind, name=name, provider="memory",
                         id=f"id-{address}", attributes=attrs or {"n": 1})


def _with(state: State, *resources: ResourceState) -> State:
    s = state.copy()
    for r in resources:
        s.set(r)
    return s


def content(state: State) -> str:
    return state.content_digest()


class Killed(BaseException):
    """Stands for SIGKILL: nothing after the point of raise runs."""


# --- the two stores -----------------------------------------------------------------------

class LocalStore:
    """State files under a temporary directory."""

    kind = "local"

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / ".mlform" / "state" / "default.json"

    def backend(self) -> LocalBackend:
        """A backend over the same files, as a new process would open it."""
        return LocalBackend(self.path)

    def raw(self) -> dict[str, bytes]:
        if not self.path.parent.exists():
            return {}
        return {p.name: p.read_bytes() for p in self.path.parent.iterdir()}

    def restore(self, saved: dict[str, bytes]) -> None:
        for p in self.path.parent.iterdir():
            p.unlink()
        for name, data in saved.items():
            (self.path.parent / name).write_bytes(data)

    def journal(self) -> bytes:
        path = self.path.with_name(self.path.name + ".journal")
        return path.read_bytes() if path.exists() else b""

    def add_journal(self, data: bytes, serial: int, lineage: str) -> None:
        path = self.path.with_name(self.path.name + ".journal")
        with open(path, "ab") as f:
            f.write(data)

    def crash(self, writer) -> None:
        """Abandon a writer as a killed process would: no snapshot, journal left."""
        crash(writer)

    def leave_lock(self, info: LockInfo) -> None:
        """What a killed holder leaves: its info in the lock file, no flock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.with_name(self.path.name + ".lock").write_text(json.dumps(info.to_json()))


class S3Store:
    """State objects in a bucket of the emulator."""

    kind = "s3"

    def __init__(self, aws) -> None:
        self.aws = aws
        self.s3 = aws.client("s3")
        self.s3.create_bucket(Bucket=BUCKET)

    def backend(self, **kw) -> S3Backend:
        return S3Backend(BUCKET, KEY, region="us-east-1", endpoint_url=self.aws.url, **kw)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", ())]

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def raw(self) -> dict[str, bytes]:
        return {k: self.get(k) for k in self.keys()}

    def restore(self, saved: dict[str, bytes]) -> None:
        for k in self.keys():
            self.s3.delete_object(Bucket=BUCKET, Key=k)
        for k, data in saved.items():
            self.s3.put_object(Bucket=BUCKET, Key=k, Body=data)

    def journal(self) -> bytes:
        return b"".join(self.get(k) for k in self.keys(KEY + ".journal/"))

    def add_journal(self, data: bytes, serial: int, lineage: str) -> None:
        prefix = f"{KEY}.journal/{serial}-{lineage[:8]}/"
        self.s3.put_object(Bucket=BUCKET, Key=f"{prefix}{len(self.keys(prefix)) + 500:010d}",
                           Body=data)

    def crash(self, writer) -> None:
        # Every record is in S3 once its call returned; a killed process leaves just that.
        writer._backend._writer = None

    def leave_lock(self, info: LockInfo) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=KEY + ".lock", Body=json.dumps(info.to_json()))


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path)
    return S3Store(request.getfixturevalue("aws"))


@pytest.fixture
def s3(aws):
    return S3Store(aws)


# --- the document round trip --------------------------------------------------------------

def test_round_trip(store):
    b = store.backend()
    assert b.load().state.resources == {} and b.load().pending == []
    s = State.new()
    s.set(ResourceState("module.churn.model.m[\"a\"]", "model", "m", module="module.churn",
                        index_key="a", provider="memory.alias", id="x",
                        attributes={"uri": "u", "nested": {"k": [1, 2.5, None, True]}},
                        dependencies=["dataset.d"], status="tainted"))
    s.set(ResourceState("dataset.d[0]", "dataset", "d", index_key=0, provider="memory"))
    s.outputs = {"url": {"value": "http://x", "sensitive": False}}
    written = b.write(s)
    assert written.serial == 1
    for reader in (b, store.backend()):
        loaded = reader.load()
        assert loaded.pending == []
        assert loaded.state.to_json() == written.to_json()
        assert loaded.state.get("dataset.d[0]").index_key == 0
        assert reader.pull() == written.to_json()
    if store.kind == "s3":
        assert b.describe() == f"s3://{BUCKET}/{KEY}"
        assert json.loads(store.get(KEY)) == written.to_json()


def test_backup_keeps_the_previous_snapshot(store):
    b = store.backend()
    first = b.write(_with(State.new(), res("dataset.a")))
    b.write(_with(first, res("dataset.b")))
    backup = [v for k, v in store.raw().items() if k.endswith(".backup")]
    assert len(backup) == 1 and json.loads(backup[0]) == first.to_json()


# --- serial, lineage, push ----------------------------------------------------------------

def test_serial_grows_only_on_content_change(store):
    b = store.backend()
    s = State.new()
    lineage = s.lineage
    s.set(res("dataset.a"))
    s1 = b.write(s)
    assert s1.serial == 1
    assert b.write(s1).serial == 1                                  # same content
    s1.set(res("dataset.a", n=2))
    s2 = b.write(s1)
    assert s2.serial == 2
    s2.outputs = {"o": {"value": 1, "sensitive": False}}
    assert b.write(s2).serial == 3                                  # outputs are content
    w = b.open_writer(b.load().state)                               # a writer changing nothing
    w.intent("dataset.a", "dataset", "memory", "update")
    w.abandon("dataset.a")
    assert w.close().serial == 3
    w = b.open_writer(b.load().state)                               # one changing five things
    for i in range(5):
        w.record(res(f"dataset.x{i}"))
    assert w.close().serial == 4
    assert store.backend().load().state.serial == 4
    assert b.load().state.lineage == lineage


def test_lineage_is_set_once(store):
    b = store.backend()
    assert b.load().state.lineage != b.load().state.lineage        # nothing stored yet
    first = b.write(State.new())
    assert b.load().state.lineage == first.lineage
    with pytest.raises(StateError, match="lineage"):
        b.write(State.new())
    with pytest.raises(StateError, match="lineage"):
        b.open_writer(State.new())
    stale = b.load().state
    b.write(_with(stale, res("dataset.a")))
    with pytest.raises(StateError, match="moved"):
        b.write(State(serial=0, lineage=first.lineage))
    assert store.backend().load().state.lineage == first.lineage


def test_push_guards(store):
    b = store.backend()
    s = b.write(_with(State.new(), res("dataset.a")))
    with pytest.raises(StateError):
        b.push({"version": 1, "serial": 5})                         # malformed
    with pytest.raises(StateError, match="lower"):
        b.push({**s.to_json(), "serial": 0})
    other = {**s.to_json(), "lineage": "another", "serial": 9}
    with pytest.raises(StateError, match="lineage"):
        b.push(other)
    changed = _with(s, res("dataset.b"))
    with pytest.raises(StateError, match="stored serial"):
        b.push(changed.to_json())
    b.push({**changed.to_json(), "serial": 2})
    assert b.load().state.serial == 2 and b.load().state.get("dataset.b")
    b.push(other, force=True)
    assert b.pull()["lineage"] == "another" and b.pull()["serial"] == 9
    # a corrupt state is replaced only by a forced push, and kept as .backup
    saved = store.raw()
    snapshot = next(k for k in saved if k.endswith("default.json"))
    store.restore({**saved, snapshot: b"{corrupt"})
    with pytest.raises(StateError, match="Invalid state"):
        b.push(s.to_json())
    b.push(s.to_json(), force=True)
    assert b.pull()["serial"] == 1
    assert next(v for k, v in store.raw().items() if k.endswith(".backup")) == b"{corrupt"


# --- journal ------------------------------------------------------------------------------

def test_journal_replay_and_pending_after_an_abandoned_writer(store):
    b = store.backend()
    base = b.write(_with(State.new(), res("dataset.old"), res("model.gone")))
    w = b.open_writer(b.load().state)
    w.intent("dataset.a", "dataset", "memory", "create")
    w.record(res("dataset.a", n=1))
    w.intent("dataset.a", "dataset", "memory", "update", id="id-dataset.a")
    w.record(res("dataset.a", n=2))
    w.intent("model.gone", "model", "memory", "delete", id="id-model.gone")
    w.record_delete("model.gone")
    w.intent("endpoint.e", "endpoint", "memory", "create")           # killed during create
    w.intent("monitor.m", "monitor", "memory", "delete", id="mon-1")  # killed during delete
    w.intent("pipeline.p", "pipeline", "memory", "create")
    w.abandon("pipeline.p")                                          # failed, nothing made
    w.set_outputs({"o": {"value": 1, "sensitive": False}})
    store.crash(w)
    del w

    loaded = store.backend().load()                                  # a new process
    assert loaded.state.serial == base.serial
    assert sorted(loaded.state.resources) == ["dataset.a", "dataset.old"]
    assert loaded.state.get("dataset.a").attributes == {"n": 2}
    assert loaded.state.outputs == {"o": {"value": 1, "sensitive": False}}
    assert sorted(loaded.pending, key=lambda p: p.address) == [
        PendingOp("endpoint.e", "endpoint", "memory", "create", None),
        PendingOp("monitor.m", "monitor", "memory", "delete", "mon-1")]
    assert loaded.state.to_json() == store.backend().pull()

    # open intents survive snapshots until a writer resolves them
    b2 = store.backend()
    closed = b2.open_writer(loaded.state).close()
    assert closed.serial == base.serial + 1
    assert {p.address for p in b2.load().pending} == {"endpoint.e", "monitor.m"}
    b2.write(_with(b2.load().state, res("dataset.z")))
    assert {p.address for p in store.backend().load().pending} == {"endpoint.e", "monitor.m"}
    w = b2.open_writer(b2.load().state)
    assert {p.address for p in w.pending()} == {"endpoint.e", "monitor.m"}
    w.record(res("endpoint.e"))
    w.record_delete("monitor.m")
    w.close()
    assert store.backend().load().pending == [] and store.journal() == b""


def test_a_writer_continues_an_abandoned_journal(store):
    b = store.backend()
    b.write(_with(State.new(), res("dataset.a")))
    w = b.open_writer(b.load().state)
    w.record(res("dataset.b"))
    store.crash(w)
    nxt = store.backend()
    loaded = nxt.load().state                   # replayed: the base of the next writer
    w = nxt.open_writer(loaded)
    w.record(res("dataset.c"))
    store.crash(w)
    assert sorted(store.backend().load().state.resources) == [
        "dataset.a", "dataset.b", "dataset.c"]
    last = store.backend()
    final = last.open_writer(last.load().state).close()
    assert sorted(final.resources) == ["dataset.a", "dataset.b", "dataset.c"]
    assert store.journal() == b""


def test_stale_journal_is_ignored_and_cleaned_up(store):
    b = store.backend()
    b.write(_with(State.new(), res("dataset.a")))
    w = b.open_writer(b.load().state)
    w.record(res("dataset.b"))
    w.record_delete("dataset.a")
    final = w.close()
    assert store.journal() == b""
    # a kill after the snapshot went in but before the journal was retired leaves records
    # stamped with the previous serial; records of another lineage are inert as well
    zombie = {"op": "record", "resource": res("dataset.zombie").to_json()}
    store.add_journal(journal_line(zombie, final.lineage, final.serial - 1),
                      final.serial - 1, final.lineage)
    store.add_journal(journal_line({"op": "delete", "address": "dataset.b"}, "other-lineage",
                                   final.serial), final.serial, final.lineage)
    assert store.backend().load().state.to_json() == final.to_json()
    assert store.backend().load().pending == []
    # the next writer starts cleanly over them, and its commit removes them
    b2 = store.backend()
    w = b2.open_writer(b2.load().state)
    w.record(res("dataset.c"))
    assert sorted(w.close().resources) == ["dataset.b", "dataset.c"]
    assert store.journal() == b""


def test_sensitive_values_are_never_stored_in_clear(store):
    b = store.backend()
    w = b.open_writer(b.load().state)
    r = res("endpoint.e", url="http://e", api_key="TOPSECRET-1")
    r.sensitive_paths = [["api_key"]]
    w.record(r)
    w.set_outputs({"key": {"value": "TOPSECRET-2", "sensitive": True},
                   "url": {"value": "http://e", "sensitive": False}})
    journal = store.journal()
    assert b"endpoint.e" in journal and b"TOPSECRET" not in journal
    mid = store.backend().load().state                              # from the journal
    assert is_marker(mid.get("endpoint.e").attributes["api_key"])
    final = w.close()
    assert final.get("endpoint.e").attributes["api_key"] == hash_value("TOPSECRET-1",
                                                                       final.lineage)
    assert is_marker(final.outputs["key"]["value"])
    assert final.outputs["url"]["value"] == "http://e"
    s = b.load().state                                              # a whole write too
    r2 = res("endpoint.f", token="TOPSECRET-3")
    r2.sensitive_paths = [["token"]]
    b.write(_with(s, r2))
    b.push({**b.pull(), "outputs": {"p": {"value": "TOPSECRET-4", "sensitive": True}},
            "serial": 99})
    stored = store.raw()
    assert stored and not any(b"TOPSECRET" in data for data in stored.values())


def test_writer_shared_by_8_threads(store):
    b = store.backend()
    w = b.open_writer(b.load().state)
    errors = []

    def work(t: int) -> None:
        try:
            for i in range(40):
                a = f"dataset.t{t}_{i}"
                w.intent(a, "dataset", "memory", "create")
                w.record(res(a, t=t, i=i))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(w.state().resources) == 320 and w.pending() == []
    lines = store.journal().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 641
    assert all(json.loads(line) for line in lines[:-1])
    mid = store.backend().load()                                    # as a crash would leave it
    assert len(mid.state.resources) == 320 and mid.pending == []
    final = w.close()
    assert w.close() is final                                       # idempotent
    with pytest.raises(StateError):
        w.record(res("dataset.late"))
    got = store.backend().load().state
    assert len(got.resources) == 320 and got.get("dataset.t7_39").attributes == {"t": 7, "i": 39}


# --- lock ---------------------------------------------------------------------------------

def test_lock_refused_with_the_holders_info(store):
    a = store.backend()
    held = a.lock("apply")
    assert held.pid == os.getpid() and held.path == a.describe()
    with pytest.raises(StateLocked) as refused:
        store.backend().lock("plan")
    holder = refused.value.holder
    assert holder.id == held.id and holder.pid == os.getpid()
    assert holder.operation == "apply" and holder.host == held.host and holder.who == held.who
    msg = str(refused.value)
    for part in (held.id, str(held.pid), held.host, "apply", held.who, held.created):
        assert part in msg
    diagnostic = refused.value.diagnostic()
    assert f"mlform force-unlock {held.id}" in diagnostic.hint
    if store.kind == "s3":
        assert " ago)" in msg and "killed" in diagnostic.hint
    with pytest.raises(StateLocked):
        a.lock("plan")                            # the same backend twice: refused too
    a.unlock(held)
    again = store.backend()
    again.unlock(again.lock("plan"))              # released: the next one gets it
    with pytest.raises(StateError, match="not held"):
        a.unlock(held)


def test_force_unlock_with_the_right_and_a_wrong_id(store):
    a = store.backend()
    held = a.lock("apply")
    operator = store.backend()
    with pytest.raises(StateError, match="No lock with id not-the-id") as wrong:
        operator.force_unlock("not-the-id")
    assert held.id in str(wrong.value)                # names the lock that is there
    with pytest.raises(StateLocked):
        operator.lock("plan")                         # a wrong id unlocked nothing
    operator.force_unlock(held.id)
    mine = operator.lock("apply")                     # taken over
    a.unlock(held)                                    # the old holder's unlock is harmless...
    with pytest.raises(StateLocked):
        store.backend().lock("plan")                  # ...and leaves the new lock in place
    operator.unlock(mine)
    with pytest.raises(StateError, match="not locked"):
        operator.force_unlock(held.id)


def test_lock_left_by_a_killed_holder(store):
    created = (datetime.now(timezone.utc) - timedelta(hours=2, minutes=5)).isoformat(
        timespec="seconds")
    dead = LockInfo(id="dead-lock-1", pid=999_999, host="ci-runner-7", operation="apply",
                    who="ci", created=created, path="elsewhere")
    store.leave_lock(dead)
    b = store.backend()
    if store.kind == "local":
        # flock died with its holder: the info left behind locks nothing
        b.unlock(b.lock("apply"))
        return
    with pytest.raises(StateLocked) as refused:
        b.lock("apply")
    assert refused.value.holder == dead
    msg = str(refused.value)
    for part in ("dead-lock-1", "999999", "ci-runner-7", "'apply'", "ci@", created, "(2h 5m ago)"):
        assert part in msg
    assert "mlform force-unlock dead-lock-1" in refused.value.hint
    assert "ci-runner-7" in refused.value.diagnostic().detail
    b.force_unlock("dead-lock-1")
    b.unlock(b.lock("apply"))
    assert store.keys(KEY + ".lock") == []


def test_lock_age():
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert lock_age("2024-05-01T11:59:15+00:00", now) == "45s"
    assert lock_age("2024-05-01T11:48:00+00:00", now) == "12m"
    assert lock_age("2024-05-01T08:55:00+00:00", now) == "3h 5m"
    assert lock_age("2024-04-29T08:00:00+00:00", now) == "2d 4h"
    assert lock_age("(unknown)", now) == ""


# --- s3: journal objects and group commit -------------------------------------------------

def test_s3_journal_layout(s3):
    b = s3.backend()
    base = b.write(_with(State.new(), res("dataset.a")))
    w = b.open_writer(b.load().state)
    w.intent("dataset.b", "dataset", "memory", "create")
    w.record(res("dataset.b"))
    prefix = f"{KEY}.journal/{base.serial}-{base.lineage[:8]}/"
    assert s3.keys(KEY + ".journal/") == [f"{prefix}0000000000", f"{prefix}0000000001"]
    first = json.loads(s3.get(f"{prefix}0000000000"))
    assert first["op"] == "intent" and first["base_serial"] == base.serial
    assert first["lineage"] == base.lineage
    assert w.puts == 2
    w.intent("endpoint.e", "endpoint", "memory", "create")
    final = w.close()
    # only the open intent is left, re-stamped under the new snapshot's prefix
    new_prefix = f"{KEY}.journal/{final.serial}-{final.lineage[:8]}/"
    assert s3.keys(KEY + ".journal/") == [f"{new_prefix}0000000000"]
    kept = json.loads(s3.get(f"{new_prefix}0000000000"))
    assert kept["op"] == "intent" and kept["address"] == "endpoint.e"
    assert kept["base_serial"] == final.serial
    assert sorted(s3.keys()) == sorted([KEY, KEY + ".backup", f"{new_prefix}0000000000"])


def test_s3_group_commit_shares_one_put(s3):
    """Appenders arriving while a PUT is in flight ride together on the next one."""
    b = s3.backend()
    w = b.open_writer(b.load().state)
    release = threading.Event()
    first_put = threading.Event()
    real_put = b._put

    def put(key, data, action, **extra):
        if ".journal/" in key and not first_put.is_set():
            first_put.set()
            release.wait(60)                      # hold the first PUT until all have queued
        real_put(key, data, action, **extra)

    b._put = put
    threads = [threading.Thread(target=w.record, args=(res(f"dataset.g{i}"),))
               for i in range(8)]
    threads[0].start()
    assert first_put.wait(60)
    for t in threads[1:]:
        t.start()
    def queued() -> bool:
        with w._cond:
            return len(w._queue) == 7

    wait_until(queued, 60, "the other seven records to queue behind the PUT in flight")
    release.set()
    for t in threads:
        t.join()
    assert w.puts == 2                            # one for the first, one for the other 7
    objects = s3.keys(KEY + ".journal/")
    assert len(objects) == 2 and len(s3.get(objects[1]).splitlines()) == 7
    assert len(w.close().resources) == 8


def test_s3_a_failed_journal_put_fails_the_record_and_keeps_going(s3):
    b = s3.backend()
    w = b.open_writer(b.load().state)
    real_put = b._put
    fail = [True]

    def put(key, data, action, **extra):
        if fail[0] and ".journal/" in key:
            raise StateError("Cannot record to the state journal", "S3 answered 503")
        real_put(key, data, action, **extra)

    b._put = put
    with pytest.raises(StateError, match="journal"):
        w.record(res("dataset.lost"))
    assert w.get("dataset.lost") is None          # not journaled, so not recorded
    fail[0] = False
    w.record(res("dataset.kept"))
    assert sorted(s3.backend().load().state.resources) == ["dataset.kept"]
    assert sorted(w.close().resources) == ["dataset.kept"]


def _kill_at_every_step(backend_factory, action, check) -> int:
    """Run `action` with the k-th S3 request of the backends it opens killed, for k = 0,
    1, ... until it completes; `check(k, completed)` inspects what was left each time."""
    k = 0
    while True:
        calls = [0]

        def make():
            b = backend_factory()
            real = b._call

            def call(operation, what, **kw):
                if calls[0] == k:
                    raise Killed()
                calls[0] += 1
                return real(operation, what, **kw)

            b._call = call
            return b

        try:
            action(make)
            completed = True
        except Killed:
            completed = False
        check(k, completed)
        if completed:
            return k
        k += 1


def test_s3_kill_at_every_step_of_writer_close(s3):
    s3.backend().write(_with(State.new(), res("dataset.a")))
    saved = s3.raw()
    done = []          # (content, pending addresses) after each call that returned

    def action(make):
        b = make()
        w = b.open_writer(b.load().state)
        for call in (lambda: w.record(res("dataset.b")),
                     lambda: w.intent("endpoint.e", "endpoint", "memory", "create"),
                     lambda: w.record_delete("dataset.a")):
            call()
            done.append((content(w.state()), sorted(p.address for p in w.pending())))
        w.close()

    def check(k, completed):
        got = s3.backend().load()
        seen = (content(got.state), sorted(p.address for p in got.pending))
        if done:                  # nothing a returned call recorded may be lost
            assert seen == done[-1], f"kill at step {k}"
        else:
            assert sorted(got.state.resources) == ["dataset.a"] and not got.pending
        if completed:
            assert got.state.serial == 2 and seen[1] == ["endpoint.e"]
        # the next run works from whatever was left and clears what the kill left
        nxt = s3.backend()
        w2 = nxt.open_writer(got.state)
        w2.record(res("dataset.after"))
        w2.record_delete("endpoint.e")
        after = w2.close()
        assert s3.backend().load().state.to_json() == after.to_json()
        assert s3.journal() == b""
        done.clear()
        s3.restore(saved)

    assert _kill_at_every_step(s3.backend, action, check) >= 8


def test_s3_kill_at_every_step_of_write(s3):
    setup = s3.backend()
    base = setup.write(_with(State.new(), res("dataset.a"), res("dataset.b")))
    w = setup.open_writer(setup.load().state)
    w.record(res("dataset.c"))
    w.intent("endpoint.e", "endpoint", "memory", "create")
    s3.crash(w)
    saved = s3.raw()
    old = s3.backend().load()
    new_state = _with(old.state, res("dataset.b", n=9))
    new_state.remove("dataset.a")
    outcomes = set()

    def check(k, completed):
        got = s3.backend().load()
        which = {content(old.state): "old", content(new_state): "new"}.get(content(got.state))
        assert which, f"kill at step {k}: state is neither old nor new"
        assert [p.address for p in got.pending] == ["endpoint.e"], f"step {k}"
        assert got.state.lineage == base.lineage
        outcomes.add(which)
        if completed:
            assert which == "new" and got.state.serial == base.serial + 1
        s3.restore(saved)

    steps = _kill_at_every_step(s3.backend, lambda make: make().write(new_state), check)
    assert steps >= 5 and outcomes == {"old", "new"}


# --- s3: errors ---------------------------------------------------------------------------

def test_s3_missing_bucket_is_a_clear_error(aws):
    b = S3Backend("no-such-bucket", KEY, region="us-east-1", endpoint_url=aws.url)
    for attempt in (b.load, lambda: b.lock("plan")):
        with pytest.raises(StateError) as failed:
            attempt()
        assert "no-such-bucket" in str(failed.value) and "does not exist" in str(failed.value)
        assert "Create the bucket" in failed.value.hint


def test_s3_unreachable_endpoint_is_a_clear_error(aws):
    b = S3Backend(BUCKET, KEY, region="us-east-1", endpoint_url="http://127.0.0.1:9",
                  max_attempts=1)
    with pytest.raises(StateError) as failed:
        b.load()
    assert "could not reach http://127.0.0.1:9" in str(failed.value)
    assert "endpoint_url" in failed.value.hint
    assert "Traceback" not in str(failed.value)


def test_s3_access_denied_names_the_permissions(s3):
    from botocore.exceptions import ClientError

    b = s3.backend()
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                          "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject")
    err = b._translate(denied, "read the state")
    assert err.summary == f"Cannot read the state at s3://{BUCKET}/{KEY}"
    assert "access denied" in err.detail
    for permission in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"):
        assert permission in err.hint


def test_s3_unknown_profile_is_a_clear_error(aws):
    b = S3Backend(BUCKET, KEY, region="us-east-1", endpoint_url=aws.url,
                  profile="no-such-profile-here")
    with pytest.raises(StateError, match="profile") as failed:
        b.load()
    assert "no-such-profile-here" in str(failed.value)


def test_s3_without_boto3_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)          # import boto3 -> ImportError
    b = S3Backend(BUCKET, KEY)
    with pytest.raises(StateError) as failed:
        b.load()
    assert 'pip install "mlform[sagemaker]"' in failed.value.hint


# --- configuration ------------------------------------------------------------------------

def _config(tmp_path: Path, backend: str, env: str = "dev"):
    stack = tmp_path / "churn"
    (stack / "environments").mkdir(parents=True, exist_ok=True)
    (stack / "main.hcl").write_text('dataset "d" {\n  source = "s3://b/d.csv"\n}\n')
    (stack / "environments" / f"{env}.hcl").write_text(backend)
    return load_stack(stack, env)


def test_s3_backend_from_an_environment_file(tmp_path):
    b = make_backend(_config(tmp_path, 'backend "s3" {\n  bucket = "my-state"\n}\n'))
    assert isinstance(b, S3Backend)
    assert (b.bucket, b.key, b.region, b.endpoint_url, b.profile) == (
        "my-state", "mlform/churn/dev.json", None, None, None)
    b = make_backend(_config(tmp_path, '''backend "s3" {
  bucket       = "my-state"
  key          = "teams/ml/churn.json"
  region       = "eu-west-1"
  endpoint_url = "http://minio:9000"
  profile      = "ml"
}
'''))
    assert (b.bucket, b.key, b.region, b.endpoint_url, b.profile) == (
        "my-state", "teams/ml/churn.json", "eu-west-1", "http://minio:9000", "ml")
    assert b.describe() == "s3://my-state/teams/ml/churn.json"


@pytest.mark.parametrize("block, summary, hint", [
    ('backend "s3" {\n  key = "k.json"\n}\n', "The s3 backend needs a bucket", 'bucket = "'),
    ('backend "s3" {\n  bucket = "b"\n  regoin = "x"\n}\n',
     'Unsupported argument "regoin" in backend "s3"', 'Did you mean "region"?'),
    ('backend "s3" {\n  bucket = "b"\n  key = "/abs.json"\n}\n',
     "The s3 backend's key must name an object", "no leading"),
    ('backend "s3" {\n  bucket = 3\n}\n', "The s3 backend's bucket must be a non-empty string",
     None),
    ('backend "gcs" {\n  bucket = "b"\n}\n', 'Unknown state backend "gcs"', '"local", "s3"'),
])
def test_s3_backend_configuration_mistakes(tmp_path, block, summary, hint):
    config = _config(tmp_path, block)
    with pytest.raises(DiagnosticError) as failed:
        make_backend(config)
    d = next(d for d in failed.value.diagnostics if d.summary == summary)
    assert d.source is not None and d.source.file.endswith("dev.hcl")
    if hint:
        assert hint in d.hint
