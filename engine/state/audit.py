"""The audit log's storage: an append-only, hash-chained list of records next to a state.

Each record is a JSON object with ``seq`` (1, 2, 3, ...), ``prev`` (the previous record's
``hash``; `GENESIS` for the first) and ``hash``: the SHA-256 of the record's canonical JSON
(`canonical`) without its own ``hash``.  Changing, removing or reordering a record breaks
the chain at that record.  Cutting the tail off would not (what is left is still a valid
chain), so every append also rewrites a *head marker* naming the last record's seq and hash;
`verify` reports a log that ends before the record the head names.

What a record says (who, command, changes) is composed in `mlform.audit`; this module only
stores and checks records.  Backends reach it through `StateBackend.audit_log()`:

* local: ``<state>.audit.jsonl`` (one record per line, each written by one ``os.write`` to
  an O_APPEND fd and fsynced) and ``<state>.audit.head`` (replaced atomically).  Appenders
  take an exclusive ``flock`` on the log itself, so two processes (or threads) never both
  take a number; no state lock is needed (force-unlock records without one).
* s3: one object per record, ``<key>.audit/<seq:010d>``, created with ``If-None-Match: *``
  so that of two writers racing for a number exactly one gets it (the other reads the
  winner and tries the next number), and ``<key>.audit.head``, replaced with ``If-Match``
  on its ETag so it only moves forward.

The head and the log live in the same place, so this detects accidents and edits by hand
or by a careless script; someone who can rewrite every record *and* the head consistently
is caught only by comparing with a head hash kept elsewhere (`mlform history verify` prints
it, so CI logs can keep it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlform.state.local import _fsync_dir, _write_all, _write_durably
from mlform.state.model import StateError

GENESIS = "0" * 64
#: an appender retries this often when another writer took the number it wanted
MAX_ATTEMPTS = 20
_TAIL_CHUNK = 1 << 16


def canonical(record: dict) -> bytes:
    """The bytes a record's hash covers: its JSON with sorted keys, without ``hash``."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def record_hash(record: dict) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


def seal(body: dict, seq: int, prev: str) -> dict:
    """`body` numbered `seq`, linked to `prev`, with its hash."""
    record = {**{k: v for k, v in body.items() if k not in ("seq", "prev", "hash")},
              "seq": seq, "prev": prev}
    record["hash"] = record_hash(record)
    return record


def encode(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode() + b"\n"


@dataclass
class Head:
    """The last record as the last appender saw it."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, data: bytes | None) -> "Head | None":
        if not data:
            return None
        try:
            doc = json.loads(data)
            return cls(int(doc["seq"]), str(doc["hash"]))
        except (ValueError, TypeError, KeyError):
            # An unreadable head is treated as missing; verify says so.
            return cls(-1, "")

    def dumps(self) -> bytes:
        return json.dumps({"seq": self.seq, "hash": self.hash}).encode()


@dataclass
class Entry:
    """One stored record as read back: where it is, and what it parsed to."""

    where: str                      # "line 3" / "object s3://…/0000000003"
    raw: bytes
    record: dict | None             # None: not a JSON object
    key_seq: int | None = None      # the sequence number its object name says (s3)
    torn: bool = False              # the last bytes of a local log, without a newline


@dataclass
class AuditRead:
    entries: list[Entry]
    head: Head | None
    source: str


@dataclass
class Verdict:
    """What `verify` found: `problem` is None when the chain is intact."""

    count: int
    head: Head | None
    problem: str | None = None
    where: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None


def _seq_of(record: dict | None) -> int | None:
    if not isinstance(record, dict):
        return None
    seq = record.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def verify(read: AuditRead) -> Verdict:
    """Check the chain from the first record to the head; stop at the first problem."""
    entries = list(read.entries)
    head = read.head
    notes: list[str] = []
    # The bytes after the last newline are an append a kill cut short, if nothing the head
    # names is in them: that record was never complete, so it is not part of the log.
    if entries and entries[-1].torn and entries[-1].record is None:
        last_good = _seq_of(entries[-2].record) if len(entries) > 1 else 0
        if head is None or (last_good is not None and last_good >= head.seq):
            notes.append(f"{entries[-1].where} is an incomplete record (a run was stopped "
                         f"while writing it); the next append removes it")
            entries = entries[:-1]
    if head is not None and head.seq < 0:
        return Verdict(len(entries), head, f"the head marker of {read.source} is unreadable",
                       "head")
    expected_seq, expected_prev = 1, GENESIS
    seen: set[int] = set()
    for i, entry in enumerate(entries):
        rec = entry.record
        if rec is None:
            return Verdict(i, head, f"{entry.where} is not a valid record (corrupted: not a "
                                    f"JSON object)", entry.where, notes)
        seq = _seq_of(rec)
        if seq is None or not isinstance(rec.get("hash"), str) \
                or not isinstance(rec.get("prev"), str):
            return Verdict(i, head, f"{entry.where} is not a valid record (no seq, prev or "
                                    f"hash)", entry.where, notes)
        if entry.key_seq is not None and entry.key_seq != seq:
            return Verdict(i, head, f"{entry.where} holds record {seq}: records were moved "
                                    f"or reordered", entry.where, notes)
        if seq != expected_seq:
            later = {_seq_of(e.record) for e in entries[i + 1:]}
            if seq < expected_seq or expected_seq in later or seq in seen:
                what = (f"record {seq} is where record {expected_seq} should be: records "
                        f"are out of order (reordered or duplicated)")
            else:
                missing = (f"record {expected_seq}" if seq == expected_seq + 1
                           else f"records {expected_seq} to {seq - 1}")
                what = (f"{missing} {'is' if seq == expected_seq + 1 else 'are'} missing: "
                        f"record {seq} follows record {expected_seq - 1} (deleted)")
            return Verdict(i, head, f"{entry.where}: {what}", entry.where, notes)
        if record_hash(rec) != rec["hash"]:
            return Verdict(i, head, f"{entry.where}: record {seq} was modified (its hash "
                                    f"does not match its content)", entry.where, notes)
        if rec["prev"] != expected_prev:
            return Verdict(i, head, f"{entry.where}: record {seq} does not link to record "
                                    f"{seq - 1} (the chain is broken: a record before it was "
                                    f"replaced)", entry.where, notes)
        seen.add(seq)
        expected_seq, expected_prev = seq + 1, rec["hash"]
    last = expected_seq - 1
    if head is None:
        # The first append writes its record, then the head: a kill between them leaves
        # one record and no head.  More records than that had a head once.
        if last > 1:
            return Verdict(last, head, f"the head marker of {read.source} is missing (the "
                                       f"log has {last} records): it was deleted", "head", notes)
        return Verdict(last, head, None, None, notes)
    if head.seq > last:
        return Verdict(last, head,
                       f"the log is truncated: the head marker names record {head.seq}, but "
                       f"the log ends at record {last}"
                       + (f" ({head.seq - last} record(s) cut off the end)" if last else
                          " (every record is gone)"), "head", notes)
    at_head = next((e.record for e in entries if _seq_of(e.record) == head.seq), None)
    if head.seq > 0 and (at_head is None or at_head.get("hash") != head.hash):
        return Verdict(last, head, f"record {head.seq} is not the one the head marker names "
                                   f"(hash {head.hash[:12]}…): the log was rewritten", "head",
                       notes)
    if last > head.seq:
        notes.append(f"{last - head.seq} record(s) after the head marker (a run stopped "
                     f"before moving it); the next append moves it")
    return Verdict(last, head, None, None, notes)


def _parse(raw: bytes) -> dict | None:
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


class AuditLog(ABC):
    """One stack environment's audit log."""

    @abstractmethod
    def describe(self) -> str:
        """Where the log is, for messages."""

    @abstractmethod
    def append(self, body: dict) -> dict:
        """Number, link and store `body`; return the record stored."""

    @abstractmethod
    def read(self) -> AuditRead:
        """Every stored record in order, and the head marker."""


def _choose_prev(last: dict | None, last_raw: bytes | None, head: Head | None,
                 count_hint: int) -> tuple[int, str]:
    """(seq, hash) of the record a new one follows.

    Normally the last record stored.  The head wins when the log ends before it (cut off)
    or its last record is not the one the head names (rewritten): linking to the head's
    hash leaves the damage visible to `verify` instead of chaining over it.
    """
    last_seq = _seq_of(last)
    last_hash = last.get("hash") if last is not None else None
    if head is not None and head.seq >= 0:
        if last_seq is None or not isinstance(last_hash, str) or last_seq < head.seq or (
                last_seq == head.seq and last_hash != head.hash):
            if last_seq is not None and last_seq > head.seq:
                return last_seq, str(last_hash)
            return head.seq, head.hash
        return last_seq, last_hash
    if last_seq is not None and isinstance(last_hash, str):
        return last_seq, last_hash
    if last_raw:
        # A corrupted last record and no head: keep counting; verify reports the damage.
        return count_hint, hashlib.sha256(last_raw).hexdigest()
    return 0, GENESIS


# --- local -------------------------------------------------------------------------------

class LocalAuditLog(AuditLog):
    """``<state>.audit.jsonl`` and ``<state>.audit.head`` (module docstring)."""

    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + ".audit.jsonl")
        self.head_path = state_path.with_name(state_path.name + ".audit.head")
        self.head_tmp = state_path.with_name(state_path.name + ".audit.head.tmp")

    def describe(self) -> str:
        return str(self.path)

    def _read_head(self) -> Head | None:
        try:
            return Head.parse(self.head_path.read_bytes())
        except FileNotFoundError:
            return None

    @staticmethod
    def _tail(fd: int, size: int) -> tuple[bytes, int]:
        """(the last complete line, the offset just after it): reads backwards from the
        end, so an append costs O(1) however long the log is."""
        pos, buf = size, b""
        while pos > 0:
            step = min(_TAIL_CHUNK, pos)
            pos -= step
            buf = os.pread(fd, step, pos) + buf
            nl = buf.rfind(b"\n")
            if nl < 0:
                continue
            start = buf.rfind(b"\n", 0, nl)
            if start >= 0 or pos == 0:
                return buf[start + 1:nl], pos + nl + 1
        return b"", 0

    def append(self, body: dict) -> dict:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            # Blocking: an append holds the lock for a few writes, never for an apply.
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            last_raw, end = self._tail(fd, size)
            last = _parse(last_raw) if last_raw else None
            head = self._read_head()
            seq, prev = _choose_prev(last, last_raw or None, head,
                                     count_hint=self._count_lines(fd, end))
            prefix = b""
            if size > end:
                # bytes after the last newline: an append cut short by a kill.  When the
                # head does not need them they were never a record: drop them.  Otherwise
                # keep them (verify names them) and start on a fresh line.
                if head is None or (_seq_of(last) is not None and _seq_of(last) >= head.seq):
                    os.ftruncate(fd, end)
                else:
                    prefix = b"\n"
            record = seal(body, seq + 1, prev)
            data = prefix + encode(record)
            _write_all(fd, data)
            os.fsync(fd)
            if created:
                _fsync_dir(self.path.parent)
            self._write_head(Head(record["seq"], record["hash"]))
            return record
        finally:
            os.close(fd)                 # releases the flock

    def _count_lines(self, fd: int, end: int) -> int:
        # Only needed when the last line is unreadable and there is no head (rare).
        if end <= 0:
            return 0
        return os.pread(fd, end, 0).count(b"\n")

    def _write_head(self, head: Head) -> None:
        _write_durably(self.head_path, self.head_tmp, head.dumps())
        _fsync_dir(self.head_path.parent)

    def read(self) -> AuditRead:
        # The head before the log: an append in between adds records after the head
        # (accepted), whereas the other order would see a head past the log's end.
        head = self._read_head()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        entries: list[Entry] = []
        lines = data.split(b"\n")
        for n, raw in enumerate(lines, start=1):
            last = n == len(lines)
            if last and not raw:
                break                           # the file ends with a newline
            entries.append(Entry(f"line {n} of {self.path.name}", raw,
                                 _parse(raw) if raw.strip() else None, torn=last))
        return AuditRead(entries, head, str(self.path))


# --- s3 ----------------------------------------------------------------------------------

class S3AuditLog(AuditLog):
    """``<key>.audit/<seq:010d>`` objects and ``<key>.audit.head`` (module docstring)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend                       # an S3Backend
        self.prefix = backend.key + ".audit/"
        self.head_key = backend.key + ".audit.head"

    def describe(self) -> str:
        return f"s3://{self.backend.bucket}/{self.prefix}"

    def _key(self, seq: int) -> str:
        return f"{self.prefix}{seq:010d}"

    def _get(self, key: str, action: str) -> tuple[bytes, str] | None:
        from mlform.state.s3 import _NotFound
        try:
            response = self.backend._call("get_object", action, Key=key)
        except _NotFound:
            return None
        try:
            return response["Body"].read(), str(response.get("ETag", ""))
        except self.backend._errors[1] as exc:
            raise self.backend._translate(exc, action) from None

    def _read_head(self) -> tuple[Head | None, str]:
        got = self._get(self.head_key, "read the audit log's head")
        if got is None:
            return None, ""
        return Head.parse(got[0]), got[1]

    def _list(self, start_after: str | None = None) -> list[str]:
        keys: list[str] = []
        token = None
        while True:
            kwargs: dict = {"Prefix": self.prefix}
            if token:
                kwargs["ContinuationToken"] = token
            elif start_after:
                kwargs["StartAfter"] = start_after
            response = self.backend._call("list_objects_v2", "list the audit log", **kwargs)
            keys.extend(o["Key"] for o in response.get("Contents", ())
                        if o["Key"][len(self.prefix):].isdigit())
            if not response.get("IsTruncated"):
                return keys
            token = response.get("NextContinuationToken")

    def append(self, body: dict) -> dict:
        from mlform.state.s3 import _Conflict
        for _ in range(MAX_ATTEMPTS):
            head, _etag = self._read_head()
            # Records written after the head (a writer that stopped, or is about to move
            # it): list only past the head, so an append costs O(1) requests.
            after = self._key(head.seq) if head is not None and head.seq > 0 else None
            beyond = self._list(after)
            last = last_raw = None
            if beyond:
                got = self._get(beyond[-1], "read the audit log")
                if got is not None:
                    last_raw = got[0]
                    last = _parse(last_raw)
                    if last is None:
                        last = {"seq": int(beyond[-1][len(self.prefix):]),
                                "hash": hashlib.sha256(last_raw).hexdigest()}
            elif head is not None and head.seq > 0:
                last = {"seq": head.seq, "hash": head.hash}
            seq, prev = _choose_prev(last, last_raw, head, count_hint=len(beyond))
            record = seal(body, seq + 1, prev)
            try:
                self.backend._put(self._key(record["seq"]), encode(record),
                                  "write to the audit log", IfNoneMatch="*")
            except _Conflict:
                continue                 # another writer took this number: read again
            self._advance_head(Head(record["seq"], record["hash"]))
            return record
        raise StateError(f"Cannot write to the audit log at {self.describe()}",
                         f"{MAX_ATTEMPTS} other writers took the next number first",
                         hint="Run `mlform history verify`; the work itself is done.")

    def _advance_head(self, new: Head) -> None:
        """Move the head to `new` unless a later record already moved it further
        (compare-and-swap on the head's ETag)."""
        from mlform.state.s3 import _Conflict
        for _ in range(MAX_ATTEMPTS):
            head, etag = self._read_head()
            if head is not None and head.seq >= new.seq:
                return
            condition = {"IfMatch": etag} if head is not None else {"IfNoneMatch": "*"}
            try:
                self.backend._put(self.head_key, new.dumps(), "move the audit log's head",
                                  **condition)
                return
            except _Conflict:
                continue

    def read(self) -> AuditRead:
        from concurrent.futures import ThreadPoolExecutor
        # The head first: records appended meanwhile come after it, which verify accepts.
        head, _ = self._read_head()
        keys = self._list()

        def fetch(key: str) -> Entry:
            got = self._get(key, "read the audit log")
            raw = got[0] if got is not None else b""
            return Entry(f"object s3://{self.backend.bucket}/{key}", raw.rstrip(b"\n"),
                         _parse(raw), key_seq=int(key[len(self.prefix):]))

        if len(keys) > 2:
            with ThreadPoolExecutor(min(16, len(keys)),
                                    thread_name_prefix="mlform-s3-audit") as pool:
                entries = list(pool.map(fetch, keys))
        else:
            entries = [fetch(k) for k in keys]
        return AuditRead(entries, head, self.describe())
