"""Tests of mlform.state: the document, sensitive masking, the local backend's journal,
atomic replace (with a kill simulated at every step), locking across processes, and cost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _states import crash, dataset_entry
from _waiting import wait_until

import mlform.state as st
import mlform.state.local as local_mod
from mlform.diagnostics import Diagnostic
from mlform.state import (
    LocalBackend, LockInfo, ResourceState, State, StateError, StateLocked,
    hash_value, is_marker, mask,
)


# --- helpers ------------------------------------------------------------------------------

def res(address: str, **attrs) -> ResourceState:
    kind, _, name = address.partition(".")
    return ResourceState(address=address, kind=kind, name=name, provider="memory",
                         id=f"id-{address}", attributes=attrs or {"n": 1})


def backend(tmp_path: Path, env: str = "default") -> LocalBackend:
    return LocalBackend(tmp_path / ".mlform" / "state" / f"{env}.json")


def content(state: State) -> str:
    return state.content_digest()


# --- document -----------------------------------------------------------------------------

def test_public_names():
    assert set(st.__all__) == {
        "State", "ResourceState", "StateError", "StateLocked", "LockInfo", "LoadedState",
        "PendingOp", "StateBackend", "StateWriter", "LocalBackend", "S3Backend", "mask",
        "hash_value", "is_marker"}
    for name in st.__all__:
        assert getattr(st, name)


def test_round_trip(tmp_path):
    s = State.new()
    s.set(ResourceState("module.churn.model.m[\"a\"]", "model", "m", module="module.churn",
                        index_key="a", provider="memory.alias", id="x",
                        attributes={"uri": "u", "nested": {"k": [1, 2.5, None, True]}},
                        sensitive_paths=[], dependencies=["dataset.d"], status="tainted"))
    s.set(ResourceState("dataset.d[0]", "dataset", "d", index_key=0, provider="memory"))
    s.outputs = {"url": {"value": "http://x", "sensitive": False}}
    assert State.from_json(s.to_json()).to_json() == s.to_json()
    assert s.copy() == s and s.copy() is not s

    b = backend(tmp_path)
    written = b.write(s)
    text = b.path.read_text()
    assert json.loads(text) == written.to_json()
    # sorted by address, one resource per line
    assert [r["address"] for r in json.loads(text)["resources"]] == sorted(s.resources)
    loaded = b.load()
    assert loaded.pending == []
    assert loaded.state.to_json() == written.to_json()
    assert loaded.state.get("dataset.d[0]").index_key == 0
    assert b.pull() == written.to_json()
    assert loaded.state.remove("dataset.d[0]") and loaded.state.get("dataset.d[0]") is None


BAD_DOCS = {
    "not json": "{not json",
    "top is a list": "[]",
    "missing serial": {"version": 1, "lineage": "l", "resources": [], "outputs": {}},
    "serial is a string": {"version": 1, "serial": "3", "lineage": "l"},
    "serial is a bool": {"version": 1, "serial": True, "lineage": "l"},
    "newer version": {"version": 2, "serial": 1, "lineage": "l"},
    "resources not a list": {"version": 1, "serial": 1, "lineage": "l", "resources": {}},
    "resource not an object": {"version": 1, "serial": 1, "lineage": "l", "resources": [3]},
    "resource without kind": {"version": 1, "serial": 1, "lineage": "l", "resources": [
        {"address": "a.b", "name": "b", "provider": "memory"}]},
    "bad status": {"version": 1, "serial": 1, "lineage": "l", "resources": [
        {"address": "a.b", "kind": "a", "name": "b", "provider": "m", "status": "weird"}]},
    "bad sensitive path": {"version": 1, "serial": 1, "lineage": "l", "resources": [
        {"address": "a.b", "kind": "a", "name": "b", "provider": "m",
         "sensitive_paths": ["x"]}]},
    "duplicate address": {"version": 1, "serial": 1, "lineage": "l", "resources": [
        {"address": "a.b", "kind": "a", "name": "b", "provider": "m"},
        {"address": "a.b", "kind": "a", "name": "b", "provider": "m"}]},
    "bad output": {"version": 1, "serial": 1, "lineage": "l", "outputs": {"o": 3}},
}


@pytest.mark.parametrize("case", sorted(BAD_DOCS))
def test_malformed_state_file_is_a_state_error(tmp_path, case):
    b = backend(tmp_path)
    b.path.parent.mkdir(parents=True)
    doc = BAD_DOCS[case]
    b.path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(StateError) as info:
        b.load()
    assert str(b.path) in str(info.value)
    d = info.value.diagnostic()
    assert isinstance(d, Diagnostic) and d.severity == "error" and d.summary


# Serial and lineage rules, push guards, journal replay, stale journals and writer threads
# are tested for every backend in test_state_backends.py.

def _with(state: State, *resources: ResourceState) -> State:
    s = state.copy()
    for r in resources:
        s.set(r)
    return s


# --- sensitive values ---------------------------------------------------------------------

def test_hash_and_mask():
    m = hash_value("s3cret", "lineage-1")
    assert is_marker(m) and m.startswith("(sensitive:hmac-sha256:") and len(m) == 88
    assert m == hash_value("s3cret", "lineage-1")
    assert m != hash_value("s3cret", "lineage-2") != hash_value("other", "lineage-1")
    assert hash_value({"b": 1, "a": 2}, "k") == hash_value({"a": 2, "b": 1}, "k")
    assert not is_marker("s3cret") and not is_marker(None) and not is_marker(m + "x")

    attrs = {"password": "pw", "env": {"TOKEN": "t", "PLAIN": "p"}, "keys": ["k0", "k1"]}
    out = mask(attrs, [["password"], ["env", "TOKEN"], ["keys", 1], ["absent", "x"]], "k")
    assert attrs["password"] == "pw" and attrs["env"]["TOKEN"] == "t"   # input untouched
    assert is_marker(out["password"]) and is_marker(out["env"]["TOKEN"])
    assert out["env"]["PLAIN"] == "p" and out["keys"][0] == "k0" and is_marker(out["keys"][1])
    assert "absent" not in out
    assert mask(out, [["password"]], "k") == out                       # idempotent
    whole = mask({"env": {"TOKEN": "t"}}, [["env"], ["env", "TOKEN"]], "k")
    assert whole["env"] == hash_value({"TOKEN": "t"}, "k")


def test_sensitive_values_never_reach_disk(tmp_path):
    b = backend(tmp_path)
    w = b.open_writer(b.load().state)
    r = res("endpoint.e", url="http://e", api_key="TOPSECRET-1")
    r.sensitive_paths = [["api_key"]]
    w.record(r)
    w.set_outputs({"key": {"value": "TOPSECRET-2", "sensitive": True},
                   "url": {"value": "http://e", "sensitive": False}})
    assert b"TOPSECRET" not in b.journal_path.read_bytes()
    loaded = b.load().state                                           # from the journal
    assert is_marker(loaded.get("endpoint.e").attributes["api_key"])
    final = w.close()
    assert b"TOPSECRET" not in b.path.read_bytes()
    assert final.get("endpoint.e").attributes["api_key"] == hash_value(
        "TOPSECRET-1", final.lineage)
    assert final.outputs["url"]["value"] == "http://e"
    assert is_marker(final.outputs["key"]["value"])
    # a full write masks too
    s = b.load().state
    r2 = res("endpoint.f", token="TOPSECRET-3")
    r2.sensitive_paths = [["token"]]
    s.set(r2)
    b.write(s)
    assert b"TOPSECRET" not in b.path.read_bytes()


# --- journal ------------------------------------------------------------------------------

def test_torn_last_line_is_ignored_and_trimmed(tmp_path):
    b = backend(tmp_path)
    w = b.open_writer(b.load().state)
    w.record(res("dataset.a"))
    w.record(res("dataset.b"))
    crash(w)
    data = b.journal_path.read_bytes()
    last = data[:-1].rfind(b"\n") + 1
    b.journal_path.write_bytes(data[:last + (len(data) - last) // 2])   # torn mid-line
    loaded = b.load()
    assert sorted(loaded.state.resources) == ["dataset.a"]
    # the next writer cuts the torn tail, so its first line is not glued onto it
    w = b.open_writer(loaded.state)
    w.record(res("dataset.c"))
    crash(w)
    assert sorted(b.load().state.resources) == ["dataset.a", "dataset.c"]
    # garbage in the middle is corruption, not a torn tail
    good = b.journal_path.read_bytes()
    b.journal_path.write_bytes(b"{oops\n" + good)
    with pytest.raises(StateError, match="journal"):
        b.load()


class CountingOS:
    """`os` for mlform.state.local that timestamps every fsync and notes what it covers."""

    def __init__(self) -> None:
        self.fsyncs: list[float] = []
        self.synced: list[tuple[int, int]] = []    # (inode, size) of each file fsynced

    def __getattr__(self, name):
        if name == "fsync":
            def fsync(fd):
                self.fsyncs.append(time.monotonic())
                info = os.fstat(fd)
                self.synced.append((info.st_ino, info.st_size))
                return os.fsync(fd)
            return fsync
        return getattr(os, name)


def test_group_commit_fsyncs_in_batches_and_covers_an_idle_tail(tmp_path, monkeypatch):
    counting = CountingOS()
    monkeypatch.setattr(local_mod, "os", counting)
    b = backend(tmp_path)
    w = b.open_writer(b.load().state)
    n0 = len(counting.fsyncs)
    t0 = time.monotonic()
    for i in range(10_000):
        w.intent(f"dataset.d{i}", "dataset", "memory", "create")
        w.record(res(f"dataset.d{i}"))
    elapsed = time.monotonic() - t0
    assert len(counting.fsyncs) - n0 <= elapsed / local_mod.FSYNC_INTERVAL + 2
    # a record followed by a long provider call is fsynced within ~50 ms, not at close:
    # an fsync of the journal begins after it has reached its length with that line
    w.intent("endpoint.e", "endpoint", "memory", "create")
    journal = os.stat(b.journal_path)
    wait_until(lambda: any(ino == journal.st_ino and size >= journal.st_size
                           for ino, size in counting.synced),
               timeout=5, what="the flusher to fsync the idle tail of the journal")
    w.close()
    assert not w._flusher.is_alive()


# --- a kill at every step of a replace ----------------------------------------------------

class Killed(BaseException):
    """Stands for SIGKILL: nothing may catch it (it is not an Exception)."""


class KillingOS:
    """`os` for mlform.state.local that dies at the k-th file-system change.

    A killed `write` first writes half its bytes, like a write cut short.  After the
    kill every further change fails too: the process is gone.
    """

    STEPS = {"open", "write", "fsync", "link", "replace", "unlink", "ftruncate"}

    def __init__(self, k: int) -> None:
        self.k, self.n, self.dead = k, 0, False

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in self.STEPS:
            return real

        def step(*args, **kw):
            if self.dead:
                raise Killed(name)
            if self.n == self.k:
                self.dead = True
                if name == "write":
                    fd, data = args[0], bytes(args[1])
                    os.write(fd, data[:len(data) // 2])
                raise Killed(name)
            self.n += 1
            return real(*args, **kw)
        return step


def kill_at_every_step(monkeypatch, action, check) -> int:
    """Run `action` killed at step 0, 1, 2, ... until it completes; `check` after each."""
    for k in range(200):
        fake = KillingOS(k)
        monkeypatch.setattr(local_mod, "os", fake)
        try:
            action()
            completed = True
        except Killed:
            completed = False
        finally:
            monkeypatch.setattr(local_mod, "os", os)
        check(k, completed)
        if completed:
            return k
    raise AssertionError("never completed")


def test_kill_at_every_step_of_write(tmp_path, monkeypatch):
    setup = backend(tmp_path)
    base = setup.write(_with(State.new(), res("dataset.a"), res("dataset.b")))
    w = setup.open_writer(setup.load().state)
    w.record(res("dataset.c"))
    w.intent("endpoint.e", "endpoint", "memory", "create")
    crash(w)
    saved = {p.name: p.read_bytes() for p in setup.path.parent.iterdir()}
    old = LocalBackend(setup.path).load()
    new_state = _with(old.state, res("dataset.b", n=9))
    new_state.remove("dataset.a")
    outcomes = set()

    def action():
        LocalBackend(setup.path).write(new_state)

    def check(k, completed):
        got = LocalBackend(setup.path).load()
        which = {content(old.state): "old", content(new_state): "new"}.get(content(got.state))
        assert which, f"kill at step {k}: state is neither old nor new"
        assert [p.address for p in got.pending] == ["endpoint.e"], f"step {k}"
        assert got.state.lineage == base.lineage
        outcomes.add(which)
        if completed:
            assert which == "new" and got.state.serial == base.serial + 1
        # the next run works from whatever was left
        nxt = LocalBackend(setup.path)
        w2 = nxt.open_writer(got.state)
        w2.record(res("dataset.after"))
        after = w2.close()
        assert nxt.load().state.get("dataset.after") and after.get("dataset.c")
        # restore the files as they were before the killed write
        for p in setup.path.parent.iterdir():
            p.unlink()
        for name, data in saved.items():
            (setup.path.parent / name).write_bytes(data)

    steps = kill_at_every_step(monkeypatch, action, check)
    assert steps >= 6 and outcomes == {"old", "new"}


def test_kill_at_every_step_of_writer_close(tmp_path, monkeypatch):
    b0 = backend(tmp_path)
    b0.write(_with(State.new(), res("dataset.a")))
    saved = {p.name: p.read_bytes() for p in b0.path.parent.iterdir()}
    done = []          # (content, pending addresses) after each call that returned

    def action():
        b = LocalBackend(b0.path)
        w = b.open_writer(b.load().state)
        for call in (lambda: w.record(res("dataset.b")),
                     lambda: w.intent("endpoint.e", "endpoint", "memory", "create"),
                     lambda: w.record_delete("dataset.a")):
            call()
            done.append((content(w.state()), sorted(p.address for p in w.pending())))
        w.close()

    def check(k, completed):
        got = LocalBackend(b0.path).load()
        seen = (content(got.state), sorted(p.address for p in got.pending))
        if done:                  # nothing a returned call recorded may be lost
            assert seen == done[-1], f"kill at step {k}"
        else:
            assert sorted(got.state.resources) == ["dataset.a"] and not got.pending
        if completed:
            assert got.state.serial == 2 and seen[1] == ["endpoint.e"]
            assert not b0.backup_tmp_path.exists() and not b0.tmp_path.exists()
        done.clear()
        for p in b0.path.parent.iterdir():
            p.unlink()
        for name, data in saved.items():
            (b0.path.parent / name).write_bytes(data)

    assert kill_at_every_step(monkeypatch, action, check) >= 8


WORKER = """
import sys
from mlform.state import LocalBackend, ResourceState
b = LocalBackend(sys.argv[1])
n = 0
while True:
    w = b.open_writer(b.load().state)
    for _ in range(40):
        a = f"dataset.d{n}"
        w.intent(a, "dataset", "memory", "create")
        w.record(ResourceState(a, "dataset", f"d{n}", provider="memory", attributes={"n": n}))
        print(n, flush=True)
        n += 1
    w.close()
"""


@pytest.mark.parametrize("after", [150, 333, 517])
def test_real_sigkill_loses_nothing(tmp_path, after):
    b = backend(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(b.path)],
                            stdout=subprocess.PIPE, text=True)
    reported = -1
    try:
        while reported < after:
            line = proc.stdout.readline()
            assert line, "worker died"
            reported = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    got = LocalBackend(b.path).load()
    have = {r.attributes["n"] for r in got.state.resources.values()}
    assert set(range(reported + 1)) <= have
    assert len(got.pending) <= 1


def test_backup_is_the_previous_file_without_copying(tmp_path):
    b = backend(tmp_path)
    b.write(_with(State.new(), res("dataset.a")))
    before = os.stat(b.path)
    s2 = b.write(_with(b.load().state, res("dataset.b")))
    after = os.stat(b.backup_path)
    assert (after.st_ino, after.st_dev) == (before.st_ino, before.st_dev)   # same inode
    assert json.loads(b.backup_path.read_text())["serial"] == s2.serial - 1
    assert not b.tmp_path.exists() and not b.backup_tmp_path.exists()


# --- locking ------------------------------------------------------------------------------

HOLDER = """
import json, sys, time
from mlform.state import LocalBackend
info = LocalBackend(sys.argv[1]).lock("apply")
print(json.dumps(info.to_json()), flush=True)
time.sleep(120)
"""


def start_holder(path: Path) -> tuple[subprocess.Popen, LockInfo]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    assert line, "holder process did not start"
    return proc, LockInfo.from_json(json.loads(line))


def test_lock_refused_across_processes_and_released_by_sigkill(tmp_path):
    b = backend(tmp_path)
    proc, info = start_holder(b.path)
    try:
        assert info.pid == proc.pid
        with pytest.raises(StateLocked) as refused:
            b.lock("plan")
        holder = refused.value.holder
        assert holder.id == info.id and holder.pid == proc.pid
        assert holder.operation == "apply" and holder.host and holder.who and holder.created
        msg = str(refused.value)
        for part in (info.id, str(proc.pid), info.host, "apply", info.who, info.created):
            assert part in msg
        assert info.id in refused.value.diagnostic().hint
        # another environment has its own lock
        other = backend(tmp_path, "prod")
        other.unlock(other.lock("apply"))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    mine = b.lock("plan")                         # the kernel released the dead holder's lock
    assert mine.pid == os.getpid()
    b.unlock(mine)
    assert b.lock_path.read_bytes() == b""
    with pytest.raises(StateError):
        b.unlock(mine)


def test_force_unlock_while_the_holder_lives(tmp_path):
    b = backend(tmp_path)
    proc, info = start_holder(b.path)
    try:
        with pytest.raises(StateError, match="No lock with id"):
            b.force_unlock("not-the-id")
        b.force_unlock(info.id)
        mine = b.lock("apply")
        assert proc.poll() is None                # the old holder still runs
        with pytest.raises(StateLocked):
            LocalBackend(b.path).lock("plan")
        b.unlock(mine)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with pytest.raises(StateError):
        b.force_unlock(info.id)                   # nothing locked any more


def test_lock_excludes_within_one_process(tmp_path):
    a, b = backend(tmp_path), backend(tmp_path)
    held = a.lock("apply")
    with pytest.raises(StateLocked) as refused:
        b.lock("plan")
    assert refused.value.holder.id == held.id and refused.value.holder.pid == os.getpid()
    with pytest.raises(StateLocked):
        a.lock("plan")                            # the same object twice: also refused
    a.unlock(held)
    b.unlock(b.lock("plan"))


# --- cost ---------------------------------------------------------------------------------

def test_bytes_written_for_10000_records_at_most_3x_final_size(tmp_path):
    b = backend(tmp_path)
    w = b.open_writer(b.load().state)
    initial = b.path.stat().st_size               # the empty base snapshot
    for i in range(10_000):
        r = dataset_entry(i)
        w.intent(r.address, r.kind, r.provider, "create")
        w.record(r)
    journal = b.journal_path.stat().st_size
    assert journal == w.bytes_written
    final = w.close()
    size = b.path.stat().st_size
    total = initial + journal + size
    print(f"\nstate {size} B, journal {journal} B, total {total} B = {total / size:.2f}x")
    assert len(final.resources) == 10_000
    assert total <= 3 * size

