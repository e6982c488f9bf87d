"""Plan holds: one pull request's claim on a state, kept in the state backend.

A hold says "pull request ID has a reviewed plan for this state; other pull requests
must not plan or apply until it merges or closes" (Atlantis calls it a lock).  It is not
the state lock: the state lock guards one running command and goes away with it; a hold
lasts from a pull request's first `plan --hold ID` until its apply (merge), `mlform
release ID` (close) or `mlform force-unlock ID`.

Where it lives, next to the state:

* local: ``<env>.json.hold``, a small JSON file replaced atomically (temp file, fsync,
  rename).  Reading, taking and dropping it happen only while the caller holds the state
  lock, so "is it free? then it is mine" cannot interleave with another process.
* s3: the object ``<key>.hold``.  It is created with ``If-None-Match: *`` (exactly one of
  any number of racing creators wins, state lock or not), replaced on renewal only with
  ``If-Match: <etag>`` of the copy we read and found ours, and deleted the same way, so a
  holder never overwrites or drops a hold another pull request took meanwhile.

This module is the storage; `mlform.holds` composes it into plan and apply.
"""

from __future__ import annotations

import json
import os
import shlex
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Mapping

from mlform.diagnostics import Diagnostic, error
from mlform.state.backend import lock_age
from mlform.state.identity import ci_identity, ci_text, host, user
from mlform.state.model import StateError

if TYPE_CHECKING:  # the backends import this module lazily; no import cycle at run time
    from mlform.state.local import LocalBackend
    from mlform.state.s3 import S3Backend

MAX_ID_LENGTH = 200


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_hold_id(hold_id: str) -> str | None:
    """Why `hold_id` cannot name a hold, or None when it can."""
    if not hold_id or not hold_id.strip():
        return "a hold id must not be empty"
    if len(hold_id) > MAX_ID_LENGTH:
        return f"a hold id has at most {MAX_ID_LENGTH} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in hold_id):
        return "a hold id must not contain control characters (newlines, tabs)"
    return None


@dataclass
class HoldInfo:
    """Who holds a state for a pull request; shown to whoever is refused."""

    id: str                   # the pull request, e.g. github:owner/repo#42
    who: str
    host: str
    created: str              # ISO 8601, UTC: the first plan under this id
    updated: str              # the latest plan (renewal)
    config_digest: str        # the digest of the spec files the latest plan was made from
    path: str                 # the state held (for messages)
    ci: dict[str, str] = field(default_factory=dict)

    @classmethod
    def mine(cls, hold_id: str, config_digest: str, path: str,
             environ: Mapping[str, str] | None = None) -> "HoldInfo":
        now = _now()
        return cls(id=hold_id, who=user(), host=host(), created=now,
                   updated=now, config_digest=config_digest, path=path,
                   ci=ci_identity(environ))

    def renewed(self, config_digest: str, environ: Mapping[str, str] | None = None) -> "HoldInfo":
        """This hold taken again by a new plan of the same pull request: `created` kept."""
        fresh = HoldInfo.mine(self.id, config_digest, self.path, environ)
        fresh.created = self.created or fresh.created
        return fresh

    def to_json(self) -> dict:
        return asdict(self)

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), sort_keys=True, indent=1) + "\n").encode()

    @classmethod
    def from_json(cls, doc: dict, path: str) -> "HoldInfo":
        ci = doc.get("ci")
        return cls(id=str(doc.get("id", "")), who=str(doc.get("who", "")),
                   host=str(doc.get("host", "")), created=str(doc.get("created", "")),
                   updated=str(doc.get("updated", "")),
                   config_digest=str(doc.get("config_digest", "")), path=path,
                   ci={str(k): str(v) for k, v in ci.items()} if isinstance(ci, dict) else {})

    @classmethod
    def parse(cls, data: bytes, path: str) -> "HoldInfo":
        """A stored hold; one that is not mlform's JSON still holds the state (its id is
        "(unknown)": remove it by hand)."""
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or not doc.get("id"):
                raise ValueError("not a hold")
            return cls.from_json(doc, path)
        except (ValueError, TypeError):
            return cls(id="(unknown)", who="(unknown)", host="(unknown)", created="(unknown)",
                       updated="(unknown)", config_digest="", path=path)

    def since(self) -> str:
        """When it was taken, and how long ago: "2024-05-01T12:00:00+00:00 (3h 5m ago)"."""
        age = lock_age(self.created)
        return f"{self.created} ({age} ago)" if age else self.created

    def ci_text(self) -> str:
        """The CI run, in words ("" outside CI)."""
        return ci_text(self.ci)

    def describe(self) -> str:
        lines = [f"Hold ID:   {self.id}", f"Path:      {self.path}",
                 f"Who:       {self.who}@{self.host}"]
        if self.ci_text():
            lines.append(f"CI:        {self.ci_text()}")
        lines += [f"Created:   {self.created}", f"Updated:   {self.updated}"]
        if self.config_digest:
            lines.append(f"Plan:      config digest {self.config_digest[:16]}")
        return "\n".join(lines)


class StateHeld(StateError):
    """Another pull request holds the state; `holder` says which."""

    def __init__(self, holder: HoldInfo, *, env_flag: str = "") -> None:
        self.holder = holder
        super().__init__(
            "The state is held by another pull request",
            f"the state {holder.path} is held by {holder.id} ({holder.who}@{holder.host}) "
            f"since {holder.since()}",
            hint=f"Wait for {holder.id} to merge or close. If it is abandoned, run: "
                 f"mlform force-unlock {shlex.quote(holder.id)}{env_flag}")

    def diagnostic(self) -> Diagnostic:
        return error(self.summary, self.detail + "\n" + self.holder.describe(), hint=self.hint)


class HoldStore(ABC):
    """One state's hold: read it, take or renew it for an id, drop it."""

    @abstractmethod
    def describe(self) -> str:
        """Where the hold is stored (for messages)."""

    @abstractmethod
    def read(self) -> HoldInfo | None:
        """The current hold, or None."""

    @abstractmethod
    def take(self, hold_id: str, config_digest: str,
             environ: Mapping[str, str] | None = None) -> HoldInfo:
        """Take the hold for `hold_id`, or renew it if `hold_id` already holds it; raise
        `StateHeld` naming the holder if another id holds it."""

    @abstractmethod
    def release(self, hold_id: str) -> tuple[bool, HoldInfo | None]:
        """Drop the hold if `hold_id` holds it.  Returns (dropped, the hold found)."""


# --- local --------------------------------------------------------------------------------

class LocalHolds(HoldStore):
    """``<env>.json.hold`` next to the state file (see the module docstring)."""

    def __init__(self, backend: "LocalBackend") -> None:
        self.backend = backend
        self.path = backend.path.with_name(backend.path.name + ".hold")
        self.tmp_path = backend.path.with_name(backend.path.name + ".hold.tmp")

    def describe(self) -> str:
        return str(self.path)

    def _check_locked(self) -> None:
        # Check-and-take is atomic only under the state lock; a caller without it is a bug.
        if not self.backend._held:
            raise StateError(f"Cannot change the hold on {self.backend.path}",
                             "the state lock is not held by this process")

    def read(self) -> HoldInfo | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"Cannot read the hold {self.path}", exc.strerror or str(exc))
        return HoldInfo.parse(data, str(self.backend.path))

    def take(self, hold_id: str, config_digest: str,
             environ: Mapping[str, str] | None = None) -> HoldInfo:
        self._check_locked()
        current = self.read()
        if current is not None and current.id != hold_id:
            raise StateHeld(current)
        info = (current.renewed(config_digest, environ) if current is not None
                else HoldInfo.mine(hold_id, config_digest, str(self.backend.path), environ))
        self._write(info.dumps())
        return info

    def _write(self, data: bytes) -> None:
        from mlform.state.local import _fsync_dir, _write_durably
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_durably(self.path, self.tmp_path, data)
        _fsync_dir(self.path.parent)

    def release(self, hold_id: str) -> tuple[bool, HoldInfo | None]:
        self._check_locked()
        current = self.read()
        if current is None or current.id != hold_id:
            return False, current
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        from mlform.state.local import _fsync_dir
        _fsync_dir(self.path.parent)
        return True, current


# --- s3 -----------------------------------------------------------------------------------

class S3Holds(HoldStore):
    """The object ``<key>.hold`` (see the module docstring)."""

    ATTEMPTS = 10

    def __init__(self, backend: "S3Backend") -> None:
        self.backend = backend
        self.key = backend.key + ".hold"

    def describe(self) -> str:
        return f"s3://{self.backend.bucket}/{self.key}"

    def _read(self) -> tuple[HoldInfo | None, str]:
        """(the hold, its ETag) or (None, "")."""
        from mlform.state.s3 import _NotFound
        b = self.backend
        try:
            response = b._call("get_object", "read the plan hold", Key=self.key)
        except _NotFound:
            return None, ""
        try:
            data = response["Body"].read()
        except b._errors[1] as exc:           # the connection broke mid-body
            raise b._translate(exc, "read the plan hold") from None
        return HoldInfo.parse(data, b.describe()), str(response.get("ETag", ""))

    def read(self) -> HoldInfo | None:
        return self._read()[0]

    def take(self, hold_id: str, config_digest: str,
             environ: Mapping[str, str] | None = None) -> HoldInfo:
        from mlform.state.s3 import _Conflict, _NotFound
        b = self.backend
        for _ in range(self.ATTEMPTS):
            current, etag = self._read()
            if current is not None and current.id != hold_id:
                raise StateHeld(current)
            if current is None:
                info = HoldInfo.mine(hold_id, config_digest, b.describe(), environ)
                condition = {"IfNoneMatch": "*"}
            else:
                info = current.renewed(config_digest, environ)
                condition = {"IfMatch": etag}
            try:
                b._put(self.key, info.dumps(), "take the plan hold", **condition)
            except (_Conflict, _NotFound):
                continue     # created, replaced or dropped since we read it: look again
            return info
        raise StateError(f"Could not take the plan hold on {b.describe()}",
                         "the hold kept changing while it was taken",
                         hint="Run the command again.")

    def release(self, hold_id: str) -> tuple[bool, HoldInfo | None]:
        from mlform.state.s3 import _Conflict, _NotFound
        b = self.backend
        for _ in range(self.ATTEMPTS):
            current, etag = self._read()
            if current is None or current.id != hold_id:
                return False, current
            try:
                b._call("delete_object", "drop the plan hold", Key=self.key, IfMatch=etag)
            except _NotFound:
                return False, None    # dropped meanwhile by someone else
            except _Conflict:
                continue              # renewed meanwhile: look again
            return True, current
        raise StateError(f"Could not drop the plan hold on {b.describe()}",
                         "the hold kept changing while it was dropped",
                         hint="Run the command again.")


__all__ = ["HoldInfo", "HoldStore", "LocalHolds", "S3Holds", "StateHeld", "check_hold_id"]
