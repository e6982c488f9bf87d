"""The memory provider's file store: one JSON file plus an append-only log.

On disk (DESIGN.md section 5)::

    <store>      {"objects": {"<id>": {"kind", "address", "attributes"}}, "counters": {...}}
    <store>.log  one JSON line per mutation since the last compaction

Why two files: people and tests edit ``<store>`` by hand to simulate drift, so
it must be plain JSON; but rewriting a 10,000-object file per operation would
make every apply quadratic.  So objects live in memory, each mutation is one
``os.write`` of one line on an ``O_APPEND`` descriptor (O(1)), and the full
file is rewritten only when the store is released (and when a leftover log is
found on load).

Crash safety (SIGKILL at any instant):

* a mutation is complete once its line is written; a torn last line is an
  operation that never returned, and is ignored on load;
* every log record is idempotent (whole object put, delete, absolute counter
  value), so replaying a log over a store that already contains it - a kill
  between ``os.replace`` and the log's removal - changes nothing;
* compaction writes a temp file and ``os.replace``s it, so the store file is
  always either the old or the new full document.

One `MemoryStore` exists per store file per process (`acquire` / `release`),
so two provider instances configured on the same file (aliases) share one
in-memory view instead of overwriting each other at close.  Stores still open
when the interpreter exits are compacted then, so a caller that forgot
`close()` still leaves a readable, hand-editable file.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from pathlib import Path
from typing import Any

from mlform.providers.base import ProviderError

from .trees import copy_plain

__all__ = ["MemoryStore", "acquire", "release"]


class MemoryStore:
    """Objects by id, plus named counters, persisted as store file + log.

    Every public method is thread-safe.  Values handed in must be plain JSON
    data; values handed out are copies.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.log_path = self.path.with_name(self.path.name + ".log")
        self._lock = threading.RLock()
        self._objects: dict[str, dict[str, Any]] = {}
        self._counters: dict[str, int] = {}
        self._log_fd: int | None = None
        self._signature: tuple | None = None  # of the store file as last read or written
        self._users = 0
        self._load()

    # -- reads ---------------------------------------------------------------

    def get(self, id: str) -> dict[str, Any] | None:
        """A copy of the stored object ``{"kind", "address", "attributes"}``, or None."""
        with self._lock:
            obj = self._objects.get(id)
            return copy_plain(obj) if obj is not None else None

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._objects)

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    def refresh(self) -> None:
        """Reload when the store file was changed by someone else (an out-of-band edit)."""
        with self._lock:
            if _signature(self.path) != self._signature:
                self._objects, self._counters = self._read_store()
                self._replay_log()
                self._signature = _signature(self.path)

    # -- mutations (each one log line) ---------------------------------------

    def put(self, id: str, obj: dict[str, Any]) -> None:
        """Store (or overwrite) one object; `obj` is plain JSON data and is kept as is."""
        line = _encode({"op": "put", "id": id, "object": obj})
        with self._lock:
            self._append(line)
            self._objects[id] = obj

    def delete(self, id: str) -> bool:
        """Remove one object; False when it was not there (and nothing is logged)."""
        line = _encode({"op": "delete", "id": id})
        with self._lock:
            if id not in self._objects:
                return False
            self._append(line)
            del self._objects[id]
            return True

    def next_counter(self, key: str, at_least: int = 0) -> int:
        """Increment the named counter (never below `at_least` + 1) and return it."""
        with self._lock:
            value = max(self._counters.get(key, 0), at_least) + 1
            self._append(_encode({"op": "counter", "key": key, "value": value}))
            self._counters[key] = value
            return value

    # -- persistence ---------------------------------------------------------

    def compact(self) -> None:
        """Write the full store atomically and drop the log (no-op when there is no log)."""
        with self._lock:
            self._close_log()
            if not self.log_path.exists():
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(_dumps(self._objects, self._counters))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            finally:
                if tmp.exists():
                    tmp.unlink()
            # A kill here leaves store + log: replaying the log again is harmless.
            self.log_path.unlink()
            self._signature = _signature(self.path)

    def _load(self) -> None:
        self._objects, self._counters = self._read_store()
        self._signature = _signature(self.path)
        if self.log_path.exists():
            self._replay_log()
            self.compact()

    def _read_store(self) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}, {}
        if not text.strip():
            return {}, {}
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProviderError(f"memory store {self.path} is not valid JSON: {exc}",
                                service_message=str(exc)) from exc
        objects = document.get("objects") if isinstance(document, dict) else None
        if not isinstance(objects, dict):
            raise ProviderError(f'memory store {self.path} has no "objects" mapping')
        clean: dict[str, dict[str, Any]] = {}
        for id, obj in objects.items():
            # hand-edited files may drop fields; the attributes are what matters.  What a
            # kind keeps besides them (a model's registry, a pipeline's run records, a
            # replacement's generation) is kept too.
            if isinstance(obj, dict):
                clean[id] = {**obj, "kind": obj.get("kind"), "address": obj.get("address"),
                             "attributes": obj.get("attributes") or {}}
        counters = document.get("counters")
        if not isinstance(counters, dict):
            counters = {}
        return clean, {k: v for k, v in counters.items() if isinstance(v, int)}

    def _replay_log(self) -> None:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return
        lines = data.split(b"\n")
        # the part after the last newline is a write that never completed
        for number, raw in enumerate(lines[:-1], start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ProviderError(f"memory store log {self.log_path} is corrupt at line "
                                    f"{number}: {exc}") from exc
            _APPLY[record["op"]](self, record)

    def _replay_put(self, record: dict[str, Any]) -> None:
        self._objects[record["id"]] = record["object"]

    def _replay_delete(self, record: dict[str, Any]) -> None:
        self._objects.pop(record["id"], None)

    def _replay_counter(self, record: dict[str, Any]) -> None:
        self._counters[record["key"]] = record["value"]

    def _append(self, line: bytes) -> None:
        # caller holds the lock
        if self._log_fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        view = memoryview(line)
        while view:  # a regular file takes it in one write; loop only on a short write
            view = view[os.write(self._log_fd, view):]

    def _close_log(self) -> None:
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None


_APPLY = {
    "put": MemoryStore._replay_put,
    "delete": MemoryStore._replay_delete,
    "counter": MemoryStore._replay_counter,
}


def _dumps(objects: dict[str, Any], counters: dict[str, int]) -> str:
    """The store file: sorted keys, one object per line, so it reads and diffs well by
    hand.  (json.dump with ``indent`` falls back to the pure-Python encoder: seconds
    for 10,000 objects; encoding each object compactly keeps the C encoder.)"""
    def enc(value: Any) -> str:
        return json.dumps(value, sort_keys=True)

    def block(items: dict[str, Any]) -> str:
        lines = ",\n".join(f"    {enc(k)}: {enc(v)}" for k, v in sorted(items.items()))
        return "{\n" + lines + "\n  }" if lines else "{}"

    return f'{{\n  "counters": {block(counters)},\n  "objects": {block(objects)}\n}}\n'


def _encode(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")


def _signature(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


# -- one store per file per process ------------------------------------------

_OPEN: dict[Path, MemoryStore] = {}
_OPEN_LOCK = threading.Lock()


def acquire(path: Path) -> MemoryStore:
    """The process's store for `path`, loaded on first use; pair with `release`."""
    key = Path(path).resolve()
    with _OPEN_LOCK:
        store = _OPEN.get(key)
        if store is None:
            store = _OPEN[key] = MemoryStore(key)
        store._users += 1
        return store


def release(store: MemoryStore) -> None:
    """Compact the store; forget it once its last user is gone (the next acquire reloads)."""
    with _OPEN_LOCK:
        store._users -= 1
        if store._users <= 0 and _OPEN.get(store.path) is store:
            del _OPEN[store.path]
    store.compact()


@atexit.register
def _compact_open_stores() -> None:
    with _OPEN_LOCK:
        stores = list(_OPEN.values())
    for store in stores:
        try:
            store.compact()
        except OSError:
            pass  # the log stays; the next load replays it
