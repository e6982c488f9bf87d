"""The s3 backend: the state as an object in an S3 bucket (or any S3-compatible store).

Objects, next to each other under the configured key (``mlform/<stack>/<env>.json`` by
default)::

    <key>                   the snapshot (one PUT replaces it whole: S3 writes are atomic)
    <key>.backup            the previous snapshot (a server-side CopyObject, no download)
    <key>.lock              the lock: the holder's LockInfo, created with If-None-Match: *
    <key>.journal/<serial>-<lineage8>/<seq:010d>
                            journal records for the snapshot at <serial> (lineage's first
                            8 characters), as JSON lines; one object per group commit
    <key>.audit/<seq:010d>  the audit log, one record per object, and <key>.audit.head
                            (mlform.state.audit)

Journal
-------
S3 has no append, so each journal write is a new object named by a sequence number that
never repeats within its prefix.  `StateWriter._append` returns only once the PUT carrying
its line has succeeded, so a kill loses nothing.  Group commit keeps that cheap when the
apply walk records from many threads: an appender queues its line, and if no PUT is in
flight it becomes the leader and PUTs everything queued; appenders arriving meanwhile wait
and ride on the next PUT together.  One resource costs at most one PUT of its own lines
(O(1)), never a rewrite of the state.  `load` lists the prefix of the stored snapshot,
fetches those objects in order and replays them exactly as the local backend does
(`JournalReplay`): each line also carries the lineage and base serial it applies to, so
anything left from another snapshot is inert.

*Snapshot replace* (`_replace`), with what a kill after each step leaves:

1. delete what an earlier, killed replace left under the new snapshot's prefix (nothing
   stored refers to it yet)                      -> old content
2. (only if intents are still open) PUT them re-stamped with the new serial as the next
   object under the new prefix                  -> inert until step 4: old content
3. CopyObject the snapshot onto ``<key>.backup``  -> old content
4. PUT the new snapshot                          -> new content: the old prefix is stale
   (serial moved) or replays to no effect (serial kept only when snapshot, replay and new
   content are all equal); re-stamped intents replay
5. delete every journal object but the re-stamped intents -> new content

A kill leaves at worst stale objects under another serial's prefix: later loads never
read them and the next replace deletes them.

Lock
----
`lock` PUTs ``<key>.lock`` with ``If-None-Match: *``: S3 creates it only if it does not
exist and answers 412 otherwise, so exactly one of any number of racing processes wins.
Unlike the local backend's flock, nothing releases the lock when its holder is killed: the
refusal shows the holder (id, pid, host, user, operation, and how long ago it was taken)
and says to run ``mlform force-unlock ID`` once that holder is known to be gone.
`unlock` deletes the object only if it still holds our lock id.

Errors (no bucket, access denied, no credentials, endpoint unreachable) become a
`StateError` with a hint; throttling and 5xx answers are retried by botocore's
``standard`` retry mode.  boto3 is optional (``mlform[sagemaker]``) and imported on first
use, so configuring this backend without it is reported, not a crash at import.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mlform._gc import paused_gc
from mlform.state.backend import (
    JournalReplay, LoadedState, LockInfo, PendingOp, StateBackend, StateLocked, StateWriter,
    intent_lines, journal_line, push_guard, sealed_state, write_serial,
)
from mlform.state.model import State, StateError

FETCH_THREADS = 16          # parallel GETs when a load finds many journal objects
_DELETE_BATCH = 1000        # the most keys one DeleteObjects request takes
_MISSING_KEY = {"NoSuchKey", "404", "NotFound"}
_CONFLICT = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
_DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "ExpiredToken", "InvalidToken", "AllAccessDisabled", "AccountProblem"}


class _NotFound(Exception):
    """The object asked for does not exist (internal: callers turn it into None)."""


class _Conflict(Exception):
    """A conditional write found the object already there (internal)."""


class _InvalidState(StateError):
    """The snapshot object exists but is not a valid state (a forced push may replace it)."""


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code") or "")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code or (str(status) if status else "")


def _message(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Message") or exc)


def _next_seq(keys: list[str]) -> int:
    """The sequence number after the highest one among journal object keys."""
    highest = -1
    for key in keys:
        tail = key.rpartition("/")[2]
        if tail.isdigit():
            highest = max(highest, int(tail))
    return highest + 1


class S3Backend(StateBackend):
    """State in an S3 object (see the module docstring for the objects and guarantees)."""

    def __init__(self, bucket: str, key: str, region: str | None = None,
                 endpoint_url: str | None = None, profile: str | None = None, *,
                 max_attempts: int = 5) -> None:
        if not bucket or not key:
            raise ValueError("S3Backend needs a bucket and a key")
        self.bucket = bucket
        self.key = key
        self.region = region
        self.endpoint_url = endpoint_url
        self.profile = profile
        self.max_attempts = max_attempts
        self.lock_key = key + ".lock"
        self.backup_key = key + ".backup"
        self.journal_root = key + ".journal/"
        self._client: Any = None
        self._errors: tuple[type, type] | None = None     # (ClientError, BotoCoreError)
        self._client_lock = threading.Lock()
        self._held: set[str] = set()                       # lock ids this backend took
        self._guard = threading.RLock()                    # one state operation at a time
        self._writer: _S3Writer | None = None

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def holds(self):
        """The pull-request hold, the object ``<key>.hold`` (`mlform.state.holds`)."""
        from mlform.state.holds import S3Holds
        return S3Holds(self)

    def audit_log(self):
        """The audit log, ``<key>.audit/<seq>`` and ``<key>.audit.head`` (`mlform.state.audit`)."""
        from mlform.state.audit import S3AuditLog
        return S3AuditLog(self)

    def journal_prefix(self, serial: int, lineage: str) -> str:
        return f"{self.journal_root}{serial}-{lineage[:8]}/"

    # --- S3 access --------------------------------------------------------------------

    def _s3(self) -> Any:
        if self._client is not None:
            return self._client
        with self._client_lock:
            if self._client is None:
                try:
                    import boto3
                    from botocore.config import Config
                    from botocore.exceptions import BotoCoreError, ClientError
                except ImportError:
                    raise StateError(
                        f"Cannot use the state at {self.describe()}",
                        "the s3 backend needs boto3, which is not installed",
                        hint='Install it with: pip install "mlform[sagemaker]"') from None
                self._errors = (ClientError, BotoCoreError)
                try:
                    session = boto3.session.Session(profile_name=self.profile,
                                                    region_name=self.region)
                    self._client = session.client(
                        "s3", endpoint_url=self.endpoint_url,
                        config=Config(
                            retries={"mode": "standard", "max_attempts": self.max_attempts},
                            connect_timeout=10, read_timeout=60, max_pool_connections=32,
                            # path-style addressing works with every S3-compatible
                            # endpoint (MinIO, moto, Ceph); AWS accepts it too.
                            s3={"addressing_style": "path"} if self.endpoint_url else None))
                except BotoCoreError as exc:     # an unknown profile, a bad endpoint URL
                    raise self._translate(exc, "connect to S3") from None
        return self._client

    def _call(self, operation: str, action: str, **kwargs: Any) -> dict:
        """One S3 request on this bucket; a missing key raises `_NotFound`, a failed
        condition `_Conflict`, anything else a StateError saying what could not be done."""
        client = self._s3()
        client_error, botocore_error = self._errors
        try:
            return getattr(client, operation)(Bucket=self.bucket, **kwargs)
        except client_error as exc:
            code = _code(exc)
            if code in _MISSING_KEY:
                raise _NotFound(kwargs.get("Key", "")) from None
            if code in _CONFLICT:
                raise _Conflict(kwargs.get("Key", "")) from None
            raise self._translate(exc, action) from None
        except botocore_error as exc:
            raise self._translate(exc, action) from None

    def _translate(self, exc: BaseException, action: str) -> StateError:
        summary = f"Cannot {action} at {self.describe()}"
        where = ("the backend \"s3\" block of this environment "
                 "(bucket, region, endpoint_url, profile)")
        code, message = _code(exc), _message(exc)
        name = type(exc).__name__
        if code == "NoSuchBucket":
            return StateError(summary, f"the bucket {self.bucket!r} does not exist",
                              hint=f"Create the bucket (aws s3 mb s3://{self.bucket}), or fix "
                                   f"bucket in {where}.")
        if code in _DENIED:
            return StateError(
                summary, f"access denied ({code}: {message})",
                hint=f"The credentials in use need s3:GetObject, s3:PutObject and "
                     f"s3:DeleteObject on arn:aws:s3:::{self.bucket}/{self.key}* and "
                     f"s3:ListBucket on arn:aws:s3:::{self.bucket}. Check them, or {where}.")
        if code:
            return StateError(summary, f"S3 answered {code}: {message}",
                              hint=f"Check {where} and the credentials.")
        if name in ("NoCredentialsError", "PartialCredentialsError"):
            return StateError(summary, "no AWS credentials were found",
                              hint="Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                                   "AWS_PROFILE, or profile = \"NAME\" in the backend block.")
        if name == "ProfileNotFound":
            return StateError(summary, f"the AWS profile {self.profile!r} does not exist",
                              hint=f"Fix profile in {where}, or define it in ~/.aws/config.")
        if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError",
                    "ReadTimeoutError", "ProxyConnectionError"):
            target = self.endpoint_url or f"S3 in {self.region or 'the default region'}"
            return StateError(summary, f"could not reach {target}: {exc}",
                              hint=f"Check the network, and endpoint_url and region in {where}.")
        return StateError(summary, f"{name}: {exc}", hint=f"Check {where}.")

    def _get(self, key: str, action: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        try:
            response = self._call("get_object", action, Key=key)
        except _NotFound:
            return None
        try:
            return response["Body"].read()
        except self._errors[1] as exc:        # the connection broke mid-body
            raise self._translate(exc, action) from None

    def _put(self, key: str, data: bytes, action: str, **extra: Any) -> None:
        self._call("put_object", action, Key=key, Body=data,
                   ContentType="application/json", **extra)

    def _list(self, prefix: str) -> list[str]:
        """Every key under `prefix`, in S3's (lexicographic) order."""
        keys: list[str] = []
        token = None
        while True:
            kwargs = {"Prefix": prefix, **({"ContinuationToken": token} if token else {})}
            response = self._call("list_objects_v2", "list the state journal", **kwargs)
            keys.extend(obj["Key"] for obj in response.get("Contents", ()))
            if not response.get("IsTruncated"):
                return keys
            token = response.get("NextContinuationToken")

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            chunk = keys[start:start + _DELETE_BATCH]
            response = self._call("delete_objects", "retire the state journal",
                                  Delete={"Objects": [{"Key": k} for k in chunk],
                                          "Quiet": True})
            failed = response.get("Errors") or []
            if failed:
                first = failed[0]
                raise StateError(
                    f"Cannot retire the state journal at {self.describe()}",
                    f"{len(failed)} object(s) could not be deleted, e.g. {first.get('Key')}: "
                    f"{first.get('Code')}: {first.get('Message')}",
                    hint="The new state is stored; the objects left are ignored by loads. "
                         "Check s3:DeleteObject permission on the journal prefix.")

    # --- lock -------------------------------------------------------------------------

    def _stale_hint(self, holder: LockInfo) -> str:
        return (f"Wait for that run to finish. An S3 lock is not released when its holder "
                f"is killed: if pid {holder.pid} on {holder.host} is gone, run: "
                f"mlform force-unlock {holder.id}")

    def lock(self, operation: str) -> LockInfo:
        info = LockInfo.mine(operation, self.describe())
        body = json.dumps(info.to_json()).encode()
        for _ in range(10):
            try:
                self._put(self.lock_key, body, "take the state lock", IfNoneMatch="*")
            except _Conflict:
                holder = self._read_lock()
                if holder is None:
                    continue                 # released between our PUT and our read: retry
                if holder.id != info.id:     # (ours: a retried PUT whose first try landed)
                    raise StateLocked(holder, hint=self._stale_hint(holder),
                                      show_age=True) from None
            self._held.add(info.id)
            return info
        raise StateError(f"Could not lock {self.describe()}",
                         "the lock was taken and released repeatedly while locking",
                         hint="Run the command again.")

    def _read_lock(self) -> LockInfo | None:
        data = self._get(self.lock_key, "read the state lock")
        if data is None:
            return None
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            return LockInfo.from_json(doc)
        except (ValueError, TypeError):
            # Not written by mlform: still a lock (it blocks every locker); its id for
            # force-unlock is "(unknown)".
            return LockInfo(id="(unknown)", pid=0, host="(unknown)", operation="(unknown)",
                            who="(unknown)", created="(unknown)", path=self.describe())

    def unlock(self, info: LockInfo) -> None:
        if info.id not in self._held:
            raise StateError(f"Cannot unlock {self.describe()}",
                             f"lock {info.id} is not held by this backend")
        self._held.discard(info.id)
        holder = self._read_lock()
        # Someone may have force-unlocked us and locked again: that lock is not ours.
        if holder is not None and holder.id == info.id:
            self._call("delete_object", "release the state lock", Key=self.lock_key)

    def force_unlock(self, lock_id: str) -> None:
        holder = self._read_lock()
        if holder is None or holder.id != lock_id:
            raise StateError(
                f"No lock with id {lock_id} on {self.describe()}",
                "the state is not locked" if holder is None
                else f"the lock there has id {holder.id} (pid {holder.pid} on {holder.host}, "
                     f"{holder.operation!r} since {holder.created})")
        self._call("delete_object", "remove the state lock", Key=self.lock_key)
        self._held.discard(lock_id)

    # --- reading ----------------------------------------------------------------------

    def _restore_hint(self) -> str:
        return (f"mlform left the object as it is. Fix it by hand, or restore the previous "
                f"state from s3://{self.bucket}/{self.backup_key} (if there is one).")

    def _read_snapshot(self) -> State | None:
        data = self._get(self.key, "read the state")
        if data is None:
            return None
        with paused_gc():
            try:
                doc = json.loads(data)
            except ValueError as exc:
                raise _InvalidState(f"Invalid state in {self.describe()}",
                                    f"not valid JSON: {exc}", hint=self._restore_hint()) from None
            try:
                return State.from_json(doc, source=self.describe())
            except StateError as exc:
                raise _InvalidState(exc.summary, exc.detail,
                                    hint=exc.hint or self._restore_hint()) from None

    def _fetch(self, key: str) -> bytes:
        data = self._get(key, "read the state journal")
        if data is None:
            raise _NotFound(key)
        # Every object is whole lines; a newline guards against one that is not.
        return data if data.endswith(b"\n") else data + b"\n"

    def _replay(self, snapshot: State) -> tuple[JournalReplay, list[str]]:
        """The snapshot with its journal replayed, and the journal keys read."""
        prefix = self.journal_prefix(snapshot.serial, snapshot.lineage)
        keys = self._list(prefix)
        if len(keys) > 2:
            with ThreadPoolExecutor(min(FETCH_THREADS, len(keys)),
                                    thread_name_prefix="mlform-s3-journal") as pool:
                chunks = list(pool.map(self._fetch, keys))
        else:
            chunks = [self._fetch(k) for k in keys]
        source = f"s3://{self.bucket}/{prefix}"
        return JournalReplay(snapshot, source).run(b"".join(chunks)), keys

    def _current(self) -> tuple[State | None, str, JournalReplay | None, list[str]]:
        """(snapshot serial/lineage holder, its digest, its replay, journal keys)."""
        # A journal object can vanish between the listing and its GET when a writer in
        # another process commits meanwhile (readers hold no lock): read again.
        for _ in range(5):
            snap = self._read_snapshot()
            if snap is None:
                return None, "", None, []
            digest = snap.content_digest()
            holder = State(serial=snap.serial, lineage=snap.lineage)
            try:
                replay, keys = self._replay(snap)
            except _NotFound:
                continue
            return holder, digest, replay, keys
        raise StateError(f"Cannot read the state at {self.describe()}",
                         "its journal kept changing while it was read",
                         hint="Run the command again once the running apply has finished.")

    def load(self) -> LoadedState:
        with self._guard:
            prior, _, replay, _ = self._current()
            if prior is None:
                return LoadedState(State.new(), [])
            return LoadedState(replay.state, list(replay.pending.values()))

    # --- writing ----------------------------------------------------------------------

    def _check_no_writer(self) -> None:
        if self._writer is not None:
            raise StateError(f"State {self.describe()} is being written",
                             "a state writer is open on this backend; close it first")

    def write(self, state: State) -> State:
        with self._guard:
            self._check_no_writer()
            new = sealed_state(state)
            prior, prior_digest, replay, _ = self._current()
            serial, pending = write_serial(state, new, prior, prior_digest, replay,
                                           self.describe())
            return self._replace(new, serial, pending, prior)

    def push(self, doc: dict, force: bool = False) -> None:
        new = sealed_state(State.from_json(doc, source="the pushed state"))
        with self._guard:
            self._check_no_writer()
            try:
                prior, _, replay, keys = self._current()
            except _InvalidState:
                # Forcing over an unreadable state is how one repairs it (the unreadable
                # object is kept as .backup by the replace); S3 access errors still stop it.
                if not force:
                    raise
                prior, replay, keys = None, None, []
            pending, drop_first = push_guard(new, prior, replay, force, self.describe())
            if drop_first:
                self._delete(keys)
            self._replace(new, new.serial, pending, prior)

    def open_writer(self, state: State) -> StateWriter:
        with self._guard:
            self._check_no_writer()
            want = sealed_state(state)
            prior, prior_digest, replay, keys = self._current()
            if (prior is None or prior.lineage != want.lineage
                    or replay.state.content_digest() != want.content_digest()):
                # The journal only ever holds changes relative to a stored snapshot.
                self.write(state)
                prior, prior_digest, replay, keys = self._current()
            self._writer = _S3Writer(self, replay.state, list(replay.pending.values()),
                                     prior_digest=prior_digest,
                                     start_digest=replay.state.content_digest(),
                                     next_seq=_next_seq(keys))
            return self._writer

    def _replace(self, new: State, serial: int, pending: list[PendingOp],
                 live: State | None) -> State:
        """Make `new` (already sealed) the snapshot at `serial`; `live` holds the serial
        and lineage of the snapshot stored now (None: none, or unreadable).

        See the module docstring for what a kill after each step leaves.
        """
        new.serial = serial
        data = new.dumps().encode()
        target = self.journal_prefix(serial, new.lineage)
        live_prefix = self.journal_prefix(live.serial, live.lineage) if live else None
        # 1. objects under the new prefix come to life with the new snapshot: only ours may
        under_target = self._list(target)
        if under_target and target != live_prefix:
            self._delete(under_target)
            under_target = []
        # 2. open intents, stamped for the new snapshot
        keep = None
        restamped = intent_lines(pending, new.lineage, serial)
        if restamped:
            keep = f"{target}{_next_seq(under_target):010d}"
            self._put(keep, restamped, "keep open intents in the state journal")
        # 3. the previous snapshot, server-side
        try:
            self._call("copy_object", "keep a backup of the state", Key=self.backup_key,
                       CopySource={"Bucket": self.bucket, "Key": self.key})
        except _NotFound:
            pass                                 # nothing stored yet
        # 4. the switch
        self._put(self.key, data, "write the state")
        # 5. retire the journal, and whatever killed runs left under other prefixes
        self._delete([k for k in self._list(self.journal_root) if k != keep])
        return new


class _S3Writer(StateWriter):
    """Journals each record as an S3 object, sharing PUTs between threads (group commit).

    `_append` runs with the writer's mutex held (StateWriter).  The leader releases it
    for the PUT, so others can queue; waiters sleep on a condition over the same mutex.
    The in-memory update follows the append, once the line is durable.
    """

    def __init__(self, backend: S3Backend, state: State, pending: list[PendingOp], *,
                 prior_digest: str, start_digest: str, next_seq: int) -> None:
        super().__init__(state, pending, take=True)
        self._backend = backend
        self._prior_digest = prior_digest       # the stored snapshot
        self._start_digest = start_digest       # the stored snapshot with its journal
        self._base_serial = state.serial
        self._prefix = backend.journal_prefix(state.serial, state.lineage)
        self._seq = next_seq
        self._cond = threading.Condition(self._mutex)
        self._queue: list[bytes] = []
        self._queued = 0                        # lines ever queued (ticket numbers)
        self._done = 0                          # lines up to this ticket were PUT (or failed)
        self._failures: list[tuple[int, int, StateError]] = []
        self._putting = False
        self._inside = 0                        # appenders not yet returned
        self.puts = 0                           # journal objects written
        self.bytes_written = 0

    def _append(self, body: dict) -> None:
        try:
            line = journal_line(body, self._state.lineage, self._base_serial)
        except (TypeError, ValueError) as exc:
            what = body.get("address") or body.get("resource", {}).get("address") or body["op"]
            raise StateError(f"Cannot store {what} in the state",
                             f"a value is not plain JSON data: {exc}") from None
        self._queue.append(line)
        self._queued += 1
        ticket = self._queued
        self._inside += 1
        try:
            while self._done < ticket:
                if self._putting:
                    self._cond.wait()           # the PUT in flight does not carry our line
                else:
                    self._flush()               # lead: carry everything queued
            for low, high, exc in self._failures:
                if low <= ticket <= high:
                    raise exc
        finally:
            self._inside -= 1
            self._cond.notify_all()

    def _flush(self) -> None:
        """PUT everything queued as one object (mutex held on entry and exit, released
        for the request)."""
        batch, self._queue = self._queue, []
        low, high = self._done + 1, self._queued
        key = f"{self._prefix}{self._seq:010d}"
        self._seq += 1                          # never reused, even if the PUT fails
        self._putting = True
        failure: StateError | None = None
        self._mutex.release()
        try:
            data = b"".join(batch)
            self._backend._put(key, data, "record to the state journal")
            self.puts += 1
            self.bytes_written += len(data)
        except StateError as exc:
            failure = exc
        except BaseException:
            failure = StateError("State journal write interrupted",
                                 f"the write of {key} did not complete")
            raise
        finally:
            self._mutex.acquire()
            self._putting = False
            self._done = high
            if failure is not None:
                self._failures.append((low, high, failure))
            self._cond.notify_all()

    def _commit(self, state: State, pending: list[PendingOp]) -> State:
        # Appenders still waiting on a PUT hold records that are (or will be) journaled:
        # let them finish and apply them, then take the open intents as they are now.
        while self._inside:
            self._cond.wait()
        pending = list(self._pending.values())
        backend = self._backend
        with backend._guard:
            same = state.content_digest() == self._prior_digest == self._start_digest
            # Already sealed: the base came from S3 and record() seals every result.
            final = State(serial=state.serial, lineage=state.lineage,
                          resources=dict(state.resources), outputs=state.outputs)
            live = State(serial=self._base_serial, lineage=state.lineage)
            written = backend._replace(final, self._base_serial + (not same), pending, live)
            backend._writer = None
        return written
