"""The local backend: the state as a file on this machine, with a journal and an OS lock.

Files, next to each other (``<stack>/.mlform/state/<env>.json`` and friends)::

    <env>.json          the snapshot (replaced atomically, never edited in place)
    <env>.json.backup   the previous snapshot (a hard link: no bytes copied)
    <env>.json.journal  JSON lines appended during an apply, one per intent or result
    <env>.json.lock     flock()ed by the holder, which writes its LockInfo into it
    <env>.json.audit.jsonl, <env>.json.audit.head   the audit log (mlform.state.audit)
    <env>.json.tmp, <env>.json.backup.tmp, <env>.json.journal.tmp   transient

Crash safety
------------
*Journal.*  Every record is one ``os.write`` of a complete line to an O_APPEND fd, so a
SIGKILL at any instant leaves at worst a torn last line, which `load` ignores (and the
next writer trims).  Each line applies to the snapshot named by a ``lineage`` and
``base_serial``: its own, or (to keep a big apply's journal smaller than its snapshot) those
of the closest stamped line above it; a writer stamps the first line it writes.  `load`
replays only lines matching the snapshot on disk, so a journal that outlived its snapshot is
inert.  Records leave out what replay restores by itself (default values, the fields the
address spells, the provider of the open intent: `mlform.state.backend.journal_resource`).
A kill loses nothing: once ``os.write`` returns, the bytes are the kernel's.  A power loss
loses at most the last ~50 ms: a flusher thread fsyncs the journal at most every 50 ms
(group commit; 10,000 records cost a few fsyncs, not 10,000) and always within 50 ms of the
last record, so a long provider call after a burst cannot leave the burst unsynced.

*Snapshot replace* (`_replace`), with what a kill after each step leaves:

1. write ``.tmp``, fsync            -> old snapshot + journal: old content
2. (only if intents are still open) append them to the journal re-stamped with the
   new serial                       -> lines that do not match the old snapshot are
                                       inert, duplicates of open intents harmless: old
3. hard-link the snapshot to ``.backup.tmp``, ``os.replace`` it onto ``.backup``
                                    -> old content (backup is an extra name)
4. ``os.replace(.tmp, snapshot)``   -> new snapshot; the journal's old lines are stale
   (serial moved) or replay to no effect (serial kept only when snapshot, journal
   replay and new content are all equal); re-stamped intents replay: new content
5. fsync the directory              -> new content, durable
6. remove the journal, or replace it by the open intents alone (tmp, fsync, rename)
                                    -> new content

Why the serial rule in `write` is "move unless the new content equals both the old
snapshot and the old snapshot with its journal replayed": that is exactly when leaving
the old journal next to the new snapshot (step 4-6 window) cannot change anything.

*Lock.*  ``flock`` is released by the kernel when the holder dies, so a killed process
leaves no stale lock, only stale info that the next holder overwrites.  flock locks
belong to an open file description, so two backends in one process (or two threads)
exclude each other too.  fds are opened non-inheritable (Python's default), so a child
process such as a detached endpoint server never inherits the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import time
from pathlib import Path

from mlform._gc import paused_gc
from mlform.state.backend import (
    JournalReplay, LoadedState, LockInfo, PendingOp, StateBackend, StateLocked, StateWriter,
    intent_lines, journal_line, journal_line_unstamped, push_guard, sealed_state, write_serial,
)
from mlform.state.model import State, StateError

FSYNC_INTERVAL = 0.05   # seconds: the most a power loss can take from the journal


def _write_all(fd: int, data: bytes) -> None:
    # A regular-file write returns short only on ENOSPC-like conditions; finishing the
    # line keeps the journal line-structured (the next write would otherwise glue on).
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _unlink(path: Path) -> None:
    # os.unlink rather than Path.unlink: every change to the files goes through this
    # module's `os`, which the crash tests replace to stop the process at each step.
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, tmp: Path, data: bytes) -> None:
    """`data` as the whole of `path`: written and fsynced under `tmp`, then renamed over
    it, so a reader sees the old file or the new one, never a part (the rename itself is
    made durable by the caller's `_fsync_dir` where it must be).  The hold and the audit
    head files use it too: one way, through this module's `os`, which the crash tests
    replace."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class LocalBackend(StateBackend):
    """State in a local file (see the module docstring for the files and guarantees)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        name = self.path.name
        self.tmp_path = self.path.with_name(name + ".tmp")
        self.backup_path = self.path.with_name(name + ".backup")
        self.backup_tmp_path = self.path.with_name(name + ".backup.tmp")
        self.journal_path = self.path.with_name(name + ".journal")
        self.journal_tmp_path = self.path.with_name(name + ".journal.tmp")
        self.lock_path = self.path.with_name(name + ".lock")
        self._held: dict[str, int] = {}            # lock id -> flock()ed fd
        self._guard = threading.RLock()            # one file operation at a time here
        self._writer: _LocalWriter | None = None

    def describe(self) -> str:
        return str(self.path)

    def holds(self):
        """The pull-request hold, ``<env>.json.hold`` (`mlform.state.holds`)."""
        from mlform.state.holds import LocalHolds
        return LocalHolds(self)

    def audit_log(self):
        """The audit log, ``<env>.json.audit.jsonl`` and its head (`mlform.state.audit`)."""
        from mlform.state.audit import LocalAuditLog
        return LocalAuditLog(self.path)

    # --- lock -------------------------------------------------------------------------

    def lock(self, operation: str) -> LockInfo:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read_holder(fd)
                os.close(fd)
                raise StateLocked(holder) from None
            # force_unlock may have unlinked the file between our open and flock: that
            # lock guards nothing anyone else can see, so take the file now at the path.
            try:
                st, cur = os.fstat(fd), os.stat(self.lock_path)
                current = (st.st_dev, st.st_ino) == (cur.st_dev, cur.st_ino)
            except FileNotFoundError:
                current = False
            if not current:
                os.close(fd)
                continue
            info = LockInfo.mine(operation, str(self.path))
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info.to_json()).encode(), 0)
            self._held[info.id] = fd
            return info
        raise StateError(f"Could not lock {self.path}",
                         "the lock file was replaced repeatedly while locking")

    def _read_holder(self, fd: int) -> LockInfo:
        # The holder writes its info just after taking the flock; give it a moment.
        for _ in range(50):
            try:
                return LockInfo.from_json(json.loads(os.pread(fd, 1 << 16, 0)))
            except (ValueError, TypeError, AttributeError):
                time.sleep(0.01)
        return LockInfo(id="(unknown)", pid=0, host="(unknown)", operation="(unknown)",
                        who="(unknown)", created="(unknown)", path=str(self.path))

    def unlock(self, info: LockInfo) -> None:
        fd = self._held.pop(info.id, None)
        if fd is None:
            raise StateError(f"Cannot unlock {self.path}",
                             f"lock {info.id} is not held by this backend")
        try:
            os.ftruncate(fd, 0)     # leave no holder info behind
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def force_unlock(self, lock_id: str) -> None:
        try:
            holder = LockInfo.from_json(json.loads(self.lock_path.read_bytes()))
        except (FileNotFoundError, ValueError, TypeError, AttributeError):
            holder = None
        if holder is None or holder.id != lock_id:
            raise StateError(
                f"No lock with id {lock_id} on {self.path}",
                "the state is not locked" if holder is None
                else f"the lock there has id {holder.id} (pid {holder.pid} on {holder.host})")
        # Unlinking (rather than unlocking, which only the holder can do) lets the next
        # locker create a fresh file and proceed even if the old holder still runs.
        _unlink(self.lock_path)
        fd = self._held.pop(lock_id, None)
        if fd is not None:
            os.close(fd)

    # --- reading ----------------------------------------------------------------------

    def _read_snapshot(self) -> State | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        # Decoding allocates one long-lived container per value: pause the cyclic GC,
        # whose passes over them would free nothing (mlform._gc).
        with paused_gc():
            try:
                doc = json.loads(data)
            except ValueError as exc:
                raise StateError(f"Invalid state in {self.path}", f"not valid JSON: {exc}",
                                 hint=self._restore_hint()) from None
            return State.from_json(doc, source=str(self.path))

    def _restore_hint(self) -> str:
        restore = (f"restore the previous state from {self.backup_path}"
                   if self.backup_path.exists() else "restore it from a copy")
        return f"mlform left the file as it is. Fix it by hand, or {restore}."

    def _replay(self, snapshot: State) -> JournalReplay:
        try:
            data = self.journal_path.read_bytes()
        except FileNotFoundError:
            data = b""
        return JournalReplay(snapshot, str(self.journal_path)).run(data)

    def load(self) -> LoadedState:
        with self._guard:
            snap = self._read_snapshot()
            if snap is None:
                return LoadedState(State.new(), [])
            replay = self._replay(snap)
            return LoadedState(replay.state, list(replay.pending.values()))

    def _current(self) -> tuple[State | None, str, JournalReplay | None]:
        """(snapshot serial/lineage holder, digest of the snapshot, replay) for writers."""
        snap = self._read_snapshot()
        if snap is None:
            return None, "", None
        snap_digest = snap.content_digest()
        return State(serial=snap.serial, lineage=snap.lineage), snap_digest, self._replay(snap)

    # --- writing ----------------------------------------------------------------------

    def _check_no_writer(self) -> None:
        if self._writer is not None:
            raise StateError(f"State {self.path} is being written",
                             "a state writer is open on this backend; close it first")

    def write(self, state: State) -> State:
        with self._guard:
            self._check_no_writer()
            new = sealed_state(state)
            prior, prior_digest, replay = self._current()
            serial, pending = write_serial(state, new, prior, prior_digest, replay,
                                           str(self.path))
            return self._replace(new, serial, pending, replay.good_end if replay else None)

    def push(self, doc: dict, force: bool = False) -> None:
        new = sealed_state(State.from_json(doc, source="the pushed state"))
        with self._guard:
            self._check_no_writer()
            try:
                prior, _, replay = self._current()
            except StateError:
                if not force:
                    raise
                # Forcing over an unreadable state is how one repairs it; the unreadable
                # file is kept as .backup by the replace.
                prior, replay = None, None
            pending, drop_first = push_guard(new, prior, replay, force, str(self.path))
            if drop_first:
                _unlink(self.journal_path)
            self._replace(new, new.serial, pending, replay.good_end if replay else None)

    def open_writer(self, state: State) -> StateWriter:
        with self._guard:
            self._check_no_writer()
            want = sealed_state(state)
            prior, prior_digest, replay = self._current()
            if (prior is None or prior.lineage != want.lineage
                    or replay.state.content_digest() != want.content_digest()):
                # The caller's state is not what is stored: make it the base first, so the
                # journal only ever holds changes relative to a snapshot on disk.
                self.write(state)
                prior, prior_digest, replay = self._current()
            start_digest = replay.state.content_digest()
            self._writer = _LocalWriter(self, replay.state, list(replay.pending.values()),
                                        prior_digest=prior_digest, start_digest=start_digest,
                                        good_end=replay.good_end)
            return self._writer

    def _replace(self, new: State, serial: int, pending: list[PendingOp],
                 journal_good_end: int | None) -> State:
        """Atomically make `new` (already sealed) the snapshot at `serial`.

        See the module docstring for what a kill after each step leaves.
        """
        new.serial = serial
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = new.dumps().encode()
        # 1. the new snapshot, complete and durable under a temporary name
        fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        restamped = intent_lines(pending, new.lineage, serial)
        # 2. open intents must survive the swap: stamped for the new snapshot, inert
        #    until it is in place
        if restamped:
            self._append_journal(restamped, journal_good_end)
        # 3. keep the previous snapshot as .backup without copying its bytes
        if self.path.exists():
            _unlink(self.backup_tmp_path)
            try:
                os.link(self.path, self.backup_tmp_path)
            except OSError:
                # no hard links here (some network/FUSE filesystems): copy instead
                shutil.copyfile(self.path, self.backup_tmp_path)
            os.replace(self.backup_tmp_path, self.backup_path)
        # 4. the switch
        os.replace(self.tmp_path, self.path)
        # 5. make the rename durable before dropping the journal that covered it
        _fsync_dir(self.path.parent)
        # 6. retire the journal: it is stale or redundant now
        if restamped:
            _write_durably(self.journal_path, self.journal_tmp_path, restamped)
        else:
            _unlink(self.journal_path)
        return new

    def _append_journal(self, data: bytes, good_end: int | None) -> None:
        fd = self._open_journal(good_end)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _open_journal(self, good_end: int | None) -> int:
        """An O_APPEND fd on the journal, with any torn tail cut off first (a new line
        appended after a torn one would otherwise be glued to it and lost)."""
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        if good_end is not None and os.fstat(fd).st_size > good_end:
            os.ftruncate(fd, good_end)
        return fd


class _LocalWriter(StateWriter):
    """Appends journal lines; a flusher thread fsyncs them in groups (module docstring)."""

    def __init__(self, backend: LocalBackend, state: State, pending: list[PendingOp], *,
                 prior_digest: str, start_digest: str, good_end: int) -> None:
        super().__init__(state, pending, take=True)
        self._backend = backend
        self._prior_digest = prior_digest       # the snapshot on disk
        self._start_digest = start_digest       # the snapshot with its journal replayed
        self._base_serial = state.serial
        self._start_count = len(state.resources)
        created = not backend.journal_path.exists()
        self._fd: int | None = backend._open_journal(good_end)
        if created:
            _fsync_dir(backend.path.parent)     # the journal's name must survive a power loss
        self.bytes_written = 0
        self._stamped = False           # the first line written carries the stamp
        self._cond = threading.Condition(self._mutex)
        self._dirty = False
        self._stop = False
        self._flusher_done = False
        self._last_sync = time.monotonic()
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                         name=f"mlform-journal-{backend.path.name}")
        self._flusher.start()

    def _append(self, body: dict) -> None:
        try:
            # The writer's first line names the snapshot its lines apply to; the rest
            # inherit it (JournalReplay), which keeps the journal under the snapshot's size.
            line = (journal_line_unstamped(body) if self._stamped
                    else journal_line(body, self._state.lineage, self._base_serial))
        except (TypeError, ValueError) as exc:
            what = body.get("address") or body.get("resource", {}).get("address") or body["op"]
            raise StateError(f"Cannot store {what} in the state",
                             f"a value is not plain JSON data: {exc}") from None
        _write_all(self._fd, line)
        self._stamped = True
        self.bytes_written += len(line)
        if not self._dirty:
            self._dirty = True
            self._cond.notify()

    def _flush_loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._dirty and not self._stop:
                        self._cond.wait()
                    if self._stop:
                        return
                    delay = self._last_sync + FSYNC_INTERVAL - time.monotonic()
                    if delay > 0:
                        self._cond.wait(delay)
                        if self._stop:
                            return
                    self._dirty = False
                    fd = self._fd
                # fsync outside the mutex: records keep flowing while the disk works
                os.fsync(fd)
                self._last_sync = time.monotonic()
        finally:
            with self._cond:
                self._flusher_done = True
                self._cond.notify_all()

    def _commit(self, state: State, pending: list[PendingOp]) -> State:
        if self._fd is not None:
            self._stop = True
            self._cond.notify_all()
            while not self._flusher_done:
                self._cond.wait()              # releases the mutex for the flusher
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        with self._backend._guard:
            # A different number of resources is different content: no digest needed
            # (hashing a 10,000-resource state is a full encode of it).
            same = (self._prior_digest == self._start_digest
                    and len(state.resources) == self._start_count
                    and state.content_digest() == self._prior_digest)
            # Already sealed: the base came from disk and record() seals every result.
            final = State(serial=state.serial, lineage=state.lineage,
                          resources=dict(state.resources), outputs=state.outputs)
            written = self._backend._replace(final, self._base_serial + (not same), pending, None)
            self._backend._writer = None
        return written
