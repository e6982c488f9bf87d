"""The state backend contract, and the writer that checkpoints an apply as it goes.

A backend stores one state document (one stack environment) and its lock.  Reading is
`load` (the snapshot with any journal replayed, plus the operations that were started
but never finished) or `pull`; replacing it whole is `write` or `push`; an apply writes
through `open_writer`, which makes each resource's result durable as soon as the
provider returns, at O(1) cost, and folds everything into one snapshot on `close`.

Journal protocol, as the applier uses it for every provider call::

    writer.intent(addr, kind, provider, "create")   # before the call
    ... provider.create(...) ...
    writer.record(resource)      # after: the result (or record_delete / abandon)

An intent with no later result for the same address is reported by the next `load` as a
`PendingOp`: the process died while the provider was working, so the object may exist.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from mlform import __version__ as MLFORM_VERSION
from mlform.addresses import AddressError, parse_address
from mlform.diagnostics import Diagnostic, error
from mlform.state.identity import host, user
from mlform.state.model import ResourceState, State, StateError
from mlform.state.sensitive import seal, seal_outputs

#: provider calls an intent announces; "delete-deposed" deletes an object a
#: create_before_destroy replacement left behind (`ResourceState.deposed`)
ACTIONS = ("create", "update", "delete", "delete-deposed")


@dataclass
class LockInfo:
    """Who holds a state lock; shown to whoever is refused."""

    id: str
    pid: int
    host: str
    operation: str
    who: str
    created: str      # ISO 8601, UTC
    path: str

    @classmethod
    def mine(cls, operation: str, path: str) -> "LockInfo":
        return cls(id=str(uuid.uuid4()), pid=os.getpid(), host=host(),
                   operation=operation, who=user(),
                   created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   path=path)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict) -> "LockInfo":
        return cls(id=str(doc.get("id", "")), pid=int(doc.get("pid", 0) or 0),
                   host=str(doc.get("host", "")), operation=str(doc.get("operation", "")),
                   who=str(doc.get("who", "")), created=str(doc.get("created", "")),
                   path=str(doc.get("path", "")))

    def describe(self) -> str:
        return (f"ID:        {self.id}\nPath:      {self.path}\nOperation: {self.operation}\n"
                f"Who:       {self.who}@{self.host}\nPID:       {self.pid}\n"
                f"Created:   {self.created}")


class StateLocked(StateError):
    """The state is locked by someone else; `holder` says who.

    `hint` replaces the default advice (a backend whose locks outlive a killed holder
    says so); `show_age` adds how long ago the lock was taken, which tells a stale lock
    from a running apply at a glance.
    """

    def __init__(self, holder: LockInfo, *, hint: str | None = None,
                 show_age: bool = False) -> None:
        self.holder = holder
        age = lock_age(holder.created) if show_age else ""
        super().__init__(
            "Error acquiring the state lock",
            f"the state {holder.path} is locked by {holder.who}@{holder.host} "
            f"(pid {holder.pid}) for {holder.operation!r} since {holder.created}"
            f"{f' ({age} ago)' if age else ''}, lock id {holder.id}",
            hint=hint or f"Wait for that run to finish. If it is gone and the lock remained, "
                         f"run: mlform force-unlock {holder.id}")

    def diagnostic(self) -> Diagnostic:
        return error(self.summary, self.detail + "\n" + self.holder.describe(), hint=self.hint)


def lock_age(created: str, now: datetime | None = None) -> str:
    """How long ago an ISO 8601 time was, as "45s", "12m", "3h 5m" or "2d 4h"; "" if the
    time cannot be read."""
    try:
        then = datetime.fromisoformat(created)
    except (TypeError, ValueError):
        return ""
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    seconds = max(0, int(((now or datetime.now(timezone.utc)) - then).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if minutes < 60:
        return f"{minutes}m"
    if hours < 24:
        return f"{hours}h {minutes % 60}m"
    return f"{days}d {hours % 24}h"


@dataclass
class PendingOp:
    """A provider call whose intent was journaled but whose result never was."""

    address: str
    kind: str
    provider: str
    action: str           # one of ACTIONS
    id: str | None = None
    #: a create of a create_before_destroy replacement: the id of the object it replaces
    replaces: str | None = None

    def to_json(self) -> dict:
        body = {"op": "intent", "address": self.address, "kind": self.kind,
                "provider": self.provider, "action": self.action, "id": self.id}
        if self.replaces is not None:
            body["replaces"] = self.replaces
        return body


@dataclass
class LoadedState:
    state: State
    pending: list[PendingOp] = field(default_factory=list)


class StateWriter(ABC):
    """Applies an apply's results to a state, making each one durable as it happens.

    Thread-safe: the apply walk records from many threads.  Each call updates the
    in-memory state and hands one journal line to the backend under a single lock, so
    the journal's order is the order of the in-memory updates.  Values at sensitive
    paths are masked before they are kept or written.  The writer takes ownership of
    the `ResourceState` objects given to `record`.
    """

    def __init__(self, state: State, pending: list[PendingOp] | None = None, *,
                 take: bool = False) -> None:
        # `take`: the backend hands over a state nobody else holds, so skip the copy.
        self._state = state if take else state.copy()
        self._pending: dict[str, PendingOp] = {p.address: p for p in pending or ()}
        self._mutex = threading.Lock()
        self._closing = False
        self._closed: State | None = None

    # --- the protocol -----------------------------------------------------------------

    def intent(self, address: str, kind: str, provider: str, action: str,
               id: str | None = None, replaces: str | None = None) -> None:
        """Journal that a provider call is about to start (BEFORE calling it)."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
        op = PendingOp(address, kind, provider, action, id, replaces)
        body = journal_intent(op)
        with self._mutex:
            self._check_open()
            self._append(body)
            self._pending[address] = op

    def record(self, resource: ResourceState) -> None:
        """Journal a provider call's result: `resource` as it now exists (AFTER the call)."""
        resource = seal(resource, self._state.lineage)
        doc = journal_resource(resource)
        body = {"op": "record", "resource": doc}
        with self._mutex:
            self._check_open()
            # The provider the open intent for this address names (the line just before,
            # in the common case) need not be repeated: replay takes it from there.
            op = self._pending.get(resource.address)
            if op is not None and op.provider == doc.get("provider"):
                del doc["provider"]
            self._append(body)
            self._state.set(resource)
            self._pending.pop(resource.address, None)

    def record_delete(self, address: str) -> None:
        """Journal that the object at `address` is gone (AFTER the delete call)."""
        with self._mutex:
            self._check_open()
            self._append({"op": "delete", "address": address})
            self._state.remove(address)
            self._pending.pop(address, None)

    def abandon(self, address: str) -> None:
        """Journal that the call for `address` ended without effect (the provider raised
        and nothing was made or changed)."""
        with self._mutex:
            self._check_open()
            self._append({"op": "abandon", "address": address})
            self._pending.pop(address, None)

    def set_outputs(self, outputs: dict) -> None:
        outputs = seal_outputs(outputs, self._state.lineage)
        with self._mutex:
            self._check_open()
            self._append({"op": "outputs", "outputs": outputs})
            self._state.outputs = outputs

    @property
    def lineage(self) -> str:
        """The lineage of the state being written (fixed for the writer's life)."""
        return self._state.lineage

    def addresses(self) -> list[str]:
        """The addresses recorded so far (cheap: no copy of the state)."""
        with self._mutex:
            return list(self._state.resources)

    def state(self) -> State:
        """A copy of the state with every record so far applied."""
        with self._mutex:
            return self._state.copy()

    def get(self, address: str) -> ResourceState | None:
        """The recorded resource at `address` (shared: do not modify it)."""
        with self._mutex:
            return self._state.get(address)

    def pending(self) -> list[PendingOp]:
        """Intents not yet followed by a result."""
        with self._mutex:
            return list(self._pending.values())

    def close(self) -> State:
        """Write the final snapshot and retire the journal; returns the state written.

        Intents still without a result are carried over, so the next `load` reports
        them.  Calling close again returns the same state.
        """
        with self._mutex:
            if self._closed is not None:
                return self._closed
            # Refuse records from here on, even while _commit waits with the mutex
            # released (a condition wait); a failed commit may be retried by closing again.
            self._closing = True
            self._closed = self._commit(self._state, list(self._pending.values()))
            return self._closed

    def __enter__(self) -> "StateWriter":
        return self

    def __exit__(self, *exc) -> None:
        # Even when the apply failed, what was recorded is real and must be kept.
        self.close()

    def _check_open(self) -> None:
        if self._closing:
            raise StateError("State writer already closed",
                             "a result arrived after the state was finalised")

    # --- what a backend provides (called with the writer's mutex held) -----------------

    @abstractmethod
    def _append(self, body: dict) -> None:
        """Make one journal record durable (or at least crash-safe) before returning."""

    @abstractmethod
    def _commit(self, state: State, pending: list[PendingOp]) -> State:
        """Write the final snapshot, keep `pending`, release resources; return it."""


class StateBackend(ABC):
    """Where one environment's state lives, and its lock."""

    @abstractmethod
    def describe(self) -> str:
        """Where the state is, for messages (a path or URL)."""

    @abstractmethod
    def lock(self, operation: str) -> LockInfo:
        """Take the lock or raise `StateLocked` naming the holder."""

    @abstractmethod
    def unlock(self, info: LockInfo) -> None:
        """Release a lock this backend took."""

    @abstractmethod
    def force_unlock(self, lock_id: str) -> None:
        """Remove the lock with this id, whoever holds it; StateError if there is none."""

    @abstractmethod
    def load(self) -> LoadedState:
        """The stored state with its journal replayed, and unfinished operations."""

    @abstractmethod
    def open_writer(self, state: State) -> StateWriter:
        """Start checkpointing changes to `state` (the caller holds the lock)."""

    @abstractmethod
    def write(self, state: State) -> State:
        """Replace the stored state atomically; serial grows iff content changed."""

    @abstractmethod
    def push(self, doc: dict, force: bool = False) -> None:
        """Replace the stored state with `doc`; refuse a lineage change or a lower
        serial unless `force`."""

    def pull(self) -> dict:
        """The state document as JSON, journal replayed."""
        return self.load().state.to_json()

    def holds(self):
        """This state's pull-request hold (`mlform.state.holds.HoldStore`)."""
        raise StateError(f"Plan holds are not supported by the state at {self.describe()}")

    def audit_log(self):
        """This state's audit log (`mlform.state.audit.AuditLog`)."""
        raise StateError(f"No audit log is kept with the state at {self.describe()}")


# Built once: json.dumps with options constructs a new encoder per call, which shows up
# when an apply journals thousands of records.
_JOURNAL_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def journal_line(body: dict, lineage: str, base_serial: int) -> bytes:
    """One journal record: the body stamped with the snapshot it applies to."""
    return (_JOURNAL_ENCODER.encode({"lineage": lineage, "base_serial": base_serial, **body})
            + "\n").encode()


def journal_line_unstamped(body: dict) -> bytes:
    """A journal record that applies to the snapshot named by the closest stamped line
    above it (`JournalReplay`): a writer stamps its first line, not every line, so the
    lineage and serial are not repeated 10,000 times in a 10,000-resource apply."""
    return (_JOURNAL_ENCODER.encode(body) + "\n").encode()


# --- compact journal records ------------------------------------------------------------
#
# A journal record holds what replay needs to rebuild the state, and no field replay can
# restore by itself: values equal to `ResourceState.from_json`'s defaults, and the
# module, kind, name and index key when they are what the address says
# (`mlform.addresses.parse_address`, the one parser).  Replay fills them back in
# (`expand_resource`), so a replayed state equals the recorded one, field for field.

_DEFAULTS = (("module", ""), ("index_key", None), ("id", None), ("sensitive_paths", []),
             ("dependencies", []), ("status", "ok"))
_FROM_ADDRESS = ("module", "kind", "name", "index_key")


@functools.lru_cache(maxsize=4096)      # an intent and its record name the same address
def _address_fields(address: str) -> tuple | None:
    try:
        a = parse_address(address)
    except AddressError:
        return None
    return a.module, a.kind, a.name, a.index_key


def journal_resource(resource: ResourceState) -> dict:
    """`resource.to_json()` without what replay restores (see above)."""
    doc = resource.to_json()
    for key, default in _DEFAULTS:
        if doc[key] == default and type(doc[key]) is type(default):
            del doc[key]
    fields = (resource.module, resource.kind, resource.name, resource.index_key)
    derived = _address_fields(resource.address)
    if derived == fields and type(derived[3]) is type(fields[3]):
        for key in _FROM_ADDRESS:
            doc.pop(key, None)
    return doc


def journal_intent(op: PendingOp) -> dict:
    """`op.to_json()` without a null id, and without the kind when the address says it."""
    body = op.to_json()
    if body["id"] is None:
        del body["id"]
    derived = _address_fields(op.address)
    if derived is not None and derived[1] == op.kind:
        del body["kind"]
    return body


def expand_resource(doc: dict, pending: dict[str, "PendingOp"]) -> dict:
    """A journal record's resource as `ResourceState.from_json` reads it: the fields
    `journal_resource` left out put back (the provider from the open intent at its
    address).  A record missing a field it cannot restore stays as it is, and fails
    there as malformed."""
    if "kind" in doc and "provider" in doc:
        return doc
    doc = dict(doc)
    address = doc.get("address")
    if "kind" not in doc and isinstance(address, str):
        derived = _address_fields(address)
        if derived is not None:
            for key, value in zip(_FROM_ADDRESS, derived):
                doc.setdefault(key, value)
    if "provider" not in doc and address in pending:
        doc["provider"] = pending[address].provider
    return doc


def expand_intent(rec: dict) -> dict:
    """A journal intent with its kind put back when the address gave it."""
    if "kind" in rec:
        return rec
    derived = _address_fields(rec.get("address")) if isinstance(rec.get("address"), str) \
        else None
    return {**rec, "kind": derived[1]} if derived is not None else rec


# --- shared by the backends -----------------------------------------------------------

def sealed_state(state: State, serial: int | None = None) -> State:
    """A new State (own dict) with sensitive values masked, as it may be stored."""
    key = state.lineage
    return State(serial=state.serial if serial is None else serial, lineage=key,
                 mlform_version=MLFORM_VERSION,
                 resources={a: seal(r, key) for a, r in state.resources.items()},
                 outputs=seal_outputs(state.outputs, key))


class JournalReplay:
    """The journal applied to a snapshot: O(records), one json.loads per line."""

    def __init__(self, state: State, source: str) -> None:
        self.state = state                     # mutated in place
        self.pending: dict[str, PendingOp] = {}
        self.source = source
        self.good_end = 0                      # byte offset after the last parseable line
        self.current = 0                       # lines that matched the snapshot
        self.stale = 0                         # lines left from another snapshot
        self._ops = {"intent": self._intent, "record": self._record,
                     "delete": self._delete, "abandon": self._abandon,
                     "outputs": self._outputs}

    def run(self, data: bytes) -> "JournalReplay":
        # Bytes after the last newline are a torn line (killed mid-append): ignored.
        complete = data[:data.rfind(b"\n") + 1]
        pos, bad_line = 0, None
        # The snapshot a line applies to: its own stamp, or the closest stamped line's
        # above it (`journal_line_unstamped`); journals of older releases stamp every line.
        stamp: tuple | None = None
        for n, raw in enumerate(complete.split(b"\n")[:-1], start=1):
            pos += len(raw) + 1
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except ValueError:
                # Garbage at the tail (power loss) is tolerated; garbage followed by
                # good lines is corruption, and guessing past it could lose results.
                bad_line = bad_line or n
                continue
            if bad_line is not None:
                raise StateError(f"Corrupt state journal {self.source}",
                                 f"line {bad_line} is not valid JSON but later lines are",
                                 hint="Inspect the journal; deleting it loses the results "
                                      "it recorded since the last snapshot.")
            self.good_end = pos
            if "lineage" in rec or "base_serial" in rec:
                stamp = (rec.get("lineage"), rec.get("base_serial"))
            elif stamp is None:
                raise StateError(f"Corrupt state journal {self.source}",
                                 f"line {n}: a record before any line that names the "
                                 "snapshot it applies to")
            if stamp != (self.state.lineage, self.state.serial):
                self.stale += 1
                continue
            self.current += 1
            handler = self._ops.get(rec.get("op"))
            if handler is None:
                raise StateError(f"Corrupt state journal {self.source}",
                                 f"line {n}: unknown operation {rec.get('op')!r}")
            try:
                handler(rec, n)
            except (KeyError, TypeError) as exc:
                raise StateError(f"Corrupt state journal {self.source}",
                                 f"line {n}: malformed {rec.get('op')} record ({exc!r})")
        return self

    def _intent(self, rec: dict, n: int) -> None:
        rec = expand_intent(rec)
        self.pending[rec["address"]] = PendingOp(rec["address"], rec["kind"], rec["provider"],
                                                 rec["action"], rec.get("id"),
                                                 rec.get("replaces"))

    def _record(self, rec: dict, n: int) -> None:
        r = ResourceState.from_json(expand_resource(rec["resource"], self.pending),
                                    self.source, where=f"line {n}")
        self.state.set(r)
        self.pending.pop(r.address, None)

    def _delete(self, rec: dict, n: int) -> None:
        self.state.remove(rec["address"])
        self.pending.pop(rec["address"], None)

    def _abandon(self, rec: dict, n: int) -> None:
        self.pending.pop(rec["address"], None)

    def _outputs(self, rec: dict, n: int) -> None:
        if not isinstance(rec["outputs"], dict):
            raise TypeError("outputs must be an object")
        self.state.outputs = rec["outputs"]


def write_serial(state: State, new: State, prior: State | None, prior_digest: str,
                 replay: JournalReplay | None, where: str) -> tuple[int, list[PendingOp]]:
    """The serial `write` stores `new` (the sealed `state`) at, and the open intents kept.

    `prior` carries the stored snapshot's serial and lineage (None: nothing stored),
    `prior_digest` its content digest, `replay` the snapshot with its journal replayed.
    The serial moves unless the new content equals both the snapshot and the snapshot
    with its journal replayed: only then can the old journal, still next to the new
    snapshot for a moment, not change what a load sees.
    """
    if prior is None:
        empty = State(serial=0, lineage=new.lineage).content_digest()
        return state.serial + (new.content_digest() != empty), []
    if prior.lineage != new.lineage:
        raise StateError(
            f"Cannot write state {where}",
            f"its lineage is {prior.lineage}, the state given has {new.lineage}",
            hint="Use `mlform state push --force` to replace a state wholesale.")
    if state.serial < prior.serial:
        raise StateError(f"Cannot write state {where}",
                         f"it moved to serial {prior.serial} since serial "
                         f"{state.serial} was read", hint="Run the command again.")
    same = new.content_digest() == prior_digest == replay.state.content_digest()
    return prior.serial + (not same), list(replay.pending.values())


def push_guard(new: State, prior: State | None, replay: JournalReplay | None, force: bool,
               where: str) -> tuple[list[PendingOp], bool]:
    """Check a `push` of `new` (sealed) over the stored state; returns the open intents to
    keep and whether the journal must be dropped before the snapshot is replaced.

    Refused unless `force`: another lineage, a lower serial, or the stored serial with
    different content.
    """
    if prior is None:
        return [], False
    if prior.lineage != new.lineage:
        if not force:
            raise StateError(
                f"Cannot push to {where}",
                f"the stored state has lineage {prior.lineage}, the pushed one "
                f"{new.lineage}: they are different states",
                hint="Push with --force to replace it anyway.")
        return [], False
    current = replay.state.content_digest()
    if not force and new.serial < prior.serial:
        raise StateError(
            f"Cannot push to {where}",
            f"the pushed state has serial {new.serial}, lower than the stored "
            f"{prior.serial}", hint="Pull the current state, or push with --force.")
    if not force and new.serial == prior.serial and new.content_digest() != current:
        raise StateError(
            f"Cannot push to {where}",
            f"the pushed state has the stored serial {prior.serial} but different "
            f"content", hint="Pull the current state, or push with --force.")
    # With the serial not moving, the old journal would replay onto the new content in
    # the replace window; a forced push overwrites it anyway.
    if new.serial <= prior.serial and new.content_digest() != current:
        return [], True
    return list(replay.pending.values()), False


def intent_lines(pending: list[PendingOp], lineage: str, base_serial: int) -> bytes:
    """Open intents as journal lines stamped for the snapshot at `base_serial`: how they
    survive a snapshot replace until a writer resolves them."""
    return b"".join(journal_line(p.to_json(), lineage, base_serial) for p in pending)
