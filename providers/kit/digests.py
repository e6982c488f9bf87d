"""Content digests: the one sha256 cache of the engine and every provider.

`DigestCache.file(path)` gives a file's sha256, size and line count, read once and
then cached by (path, size, mtime_ns), so planning an unchanged dataset or entrypoint
reads nothing.  `tree(root)` gives a directory's digest: the sha256 over its files'
sorted ``relative/path NUL file-sha256 LF`` lines (`tree_digest`).  The cache also
keeps small derived values by key (a dataset's row profile, `remember`).

With a directory (`ProviderContext.cache_dir`, ``<stack>/.mlform/cache``) the cache is
kept in ``digests.json`` there and shared: `DigestCache.shared(dir)` is one object per
directory per process, used by the engine (entrypoint digests) and by every provider
of the run (dataset sources, model artifacts).  It is a cache, not state: losing it
costs one re-read, and a racing writer in another process at worst drops entries.
It is written only by `save()`, which the engine calls after reading facts, never
while planning.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = ["DigestCache", "FileDigest", "hash_file", "tree_digest", "tree_files"]

_CHUNK = 1 << 20
#: entries kept per table: a cache, so the oldest are forgotten
_LIMIT = 50_000


@dataclass(frozen=True)
class FileDigest:
    digest: str      # sha256 hex of the bytes
    size: int
    lines: int       # newline count, plus one for a last line without a newline


def hash_file(path: Path) -> FileDigest:
    """Read a file once: its sha256, size and number of lines."""
    h, size, lines, last = hashlib.sha256(), 0, 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":       # a last line without a newline still counts
        lines += 1
    return FileDigest(h.hexdigest(), size, lines)


def tree_digest(pairs: Iterable[tuple[str, str]]) -> str:
    """sha256 over sorted (relative path, file sha256) pairs: the digest of a directory."""
    h = hashlib.sha256()
    for rel, digest in sorted(pairs):
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()


def tree_files(root: Path, skip: Callable[[str], bool] = lambda rel: False
               ) -> list[tuple[str, Path]]:
    """(posix relative path, path) of every regular file below `root`, sorted by the
    relative path; `skip(rel)` leaves files out."""
    found = [(p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file()]
    return sorted((rel, p) for rel, p in found if not skip(rel))


class DigestCache:
    """File digests by (path, size, mtime_ns) and derived values by key; see the module."""

    _shared: dict[Path | None, "DigestCache"] = {}
    _shared_lock = threading.Lock()

    def __init__(self, directory: Path | None = None) -> None:
        self.path = Path(directory) / "digests.json" if directory is not None else None
        self._lock = threading.Lock()
        self._files: dict[str, dict] | None = None
        self._values: dict[str, Any] = {}
        self._dirty = False

    @classmethod
    def shared(cls, directory: Path | None) -> "DigestCache":
        """The process-wide cache of `directory` (None: one in-memory cache)."""
        key = Path(directory).resolve() if directory is not None else None
        with cls._shared_lock:
            found = cls._shared.get(key)
            if found is None:
                found = cls._shared[key] = cls(key)
            return found

    @classmethod
    def forget_shared(cls) -> None:
        """Drop the process-wide caches: the next `shared` reads the files again, as a
        new process would (tests)."""
        with cls._shared_lock:
            cls._shared.clear()

    # ------------------------------------------------------------ loading

    def _tables(self) -> dict[str, dict]:
        if self._files is None:
            doc: Any = {}
            if self.path is not None:
                try:
                    doc = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    doc = {}
            doc = doc if isinstance(doc, dict) else {}
            files, values = doc.get("files"), doc.get("values")
            self._files = dict(files) if isinstance(files, dict) else {}
            self._values = dict(values) if isinstance(values, dict) else {}
        return self._files

    # ------------------------------------------------------------ files

    def file(self, path: Path) -> FileDigest:
        """The digest of a regular file (OSError when it cannot be read)."""
        st = os.stat(path)
        key = str(Path(path).resolve())
        with self._lock:
            hit = self._tables().get(key)
        if isinstance(hit, dict) and hit.get("size") == st.st_size \
                and hit.get("mtime_ns") == st.st_mtime_ns and "lines" in hit:
            return FileDigest(hit["digest"], hit["size"], hit["lines"])
        found = hash_file(Path(path))
        with self._lock:
            files = self._tables()
            files.pop(key, None)     # one entry per path, newest last
            files[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                          "digest": found.digest, "lines": found.lines}
            _trim(files)
            self._dirty = True
        return found

    def tree(self, root: Path, skip: Callable[[str], bool] = lambda rel: False
             ) -> tuple[str, int, list[tuple[str, Path, FileDigest]]]:
        """(digest, total size, files) of a directory: `tree_digest` over its files."""
        files = [(rel, p, self.file(p)) for rel, p in tree_files(root, skip)]
        return (tree_digest((rel, f.digest) for rel, _, f in files),
                sum(f.size for _, _, f in files), files)

    # ------------------------------------------------------------ derived values

    def remember(self, key: str, compute: Callable[[], Any]) -> Any:
        """The JSON-able value kept under `key`, computed (and kept) when missing."""
        with self._lock:
            self._tables()
            if key in self._values:
                return self._values[key]
        value = compute()
        with self._lock:
            self._values[key] = value
            _trim(self._values)
            self._dirty = True
        return value

    # ------------------------------------------------------------ saving

    def save(self) -> None:
        """Write the cache file (atomically) when something new was learnt."""
        with self._lock:
            if not self._dirty or self.path is None or self._files is None:
                return
            doc = {"files": self._files, "values": self._values}
            self._dirty = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(doc, separators=(",", ":")))
            os.replace(tmp, self.path)
        except OSError:
            pass    # a read-only stack directory: the cache stays in memory


def _trim(table: dict) -> None:
    while len(table) > _LIMIT:
        table.pop(next(iter(table)))
