"""Content digests: the one sha256 cache of the engine and every provider.

`DigestCache.file(path)` gives a file's sha256, size and line count, read once and
then cached by (path, size, mtime_ns), so planning an unchanged dataset or entrypoint
reads nothing.  `HashingReader` makes the same digest of whatever reads a file through
it (the dataset profile's reader), so a file to be both hashed and profiled is read
once; `known` and `learn` are the cache's two halves for such a reader.  `tree(root)`
gives a directory's digest: the sha256 over its files' sorted ``relative/path NUL
file-sha256 LF`` lines (`tree_digest`).  A file's key is its resolved path; a
directory's files come from one `os.scandir` walk (`tree_entries`) with their keys and
stats, the directory resolved once (resolving every file's path on its own took 36,000
``lstat`` calls for 2,000 files), and `lookup` and `listed` take them as they are.  The
cache also keeps small derived values by key (a dataset's row profile: `remember`,
`recall`, `keep`).

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
import io
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

__all__ = ["DigestCache", "FileDigest", "HashingReader", "Listed", "hash_file", "tree_digest",
           "tree_entries", "tree_files"]

_CHUNK = 1 << 20
#: entries kept per table: a cache, so the oldest are forgotten
_LIMIT = 50_000


@dataclass(frozen=True)
class FileDigest:
    digest: str      # sha256 hex of the bytes
    size: int
    lines: int       # newline count, plus one for a last line without a newline


class ReadStream(io.RawIOBase):
    """A read-only raw stream made of one `read(size)`: what pyarrow's readers and
    `io` need around it (`readable`, `readall`, `readinto`)."""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # pragma: no cover - every subclass has one
        raise NotImplementedError

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[:len(chunk)] = chunk
        return len(chunk)


class HashingReader(ReadStream):
    """A binary file read through this reader is hashed on the way (sha256, size, lines):
    give it to a parser (pyarrow's readers take a file object; wrap it in
    `io.BufferedReader` for a text reader), then `finish()` reads what the parser left
    and gives the file's `FileDigest`, the one `hash_file` gives.  sha256 releases the
    GIL, so it runs on the parser's reading thread beside its parsing threads."""

    def __init__(self, raw: io.RawIOBase | io.BufferedIOBase) -> None:
        super().__init__()
        self._raw = raw
        self._sha = hashlib.sha256()
        self._size = 0
        self._lines = 0
        self._last = b"\n"

    def tell(self) -> int:
        return self._size

    def _seen(self, chunk: bytes) -> None:
        self._sha.update(chunk)
        self._size += len(chunk)
        self._lines += chunk.count(b"\n")
        self._last = chunk[-1:]

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size if size is not None and size >= 0 else -1) or b""
        if chunk:
            self._seen(chunk)
        return chunk

    def finish(self) -> FileDigest:
        """Read the rest of the file and give its digest."""
        while self.read(_CHUNK):
            pass
        # a last line without a newline still counts
        lines = self._lines + (1 if self._last != b"\n" else 0)
        return FileDigest(self._sha.hexdigest(), self._size, lines)


def hash_file(path: Path) -> FileDigest:
    """Read a file once: its sha256, size and number of lines."""
    with open(path, "rb", buffering=0) as fh:
        return HashingReader(fh).finish()


def tree_digest(pairs: Iterable[tuple[str, str]]) -> str:
    """sha256 over sorted (relative path, file sha256) pairs: the digest of a directory."""
    h = hashlib.sha256()
    for rel, digest in sorted(pairs):
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()


class Listed(NamedTuple):
    """A file of a directory as `tree_entries` finds it."""

    rel: str                # posix path relative to the listed directory
    path: Path              # the directory joined with `rel`
    key: str                # the file's resolved path: its key in the digest cache
    stat: os.stat_result    # the file's stat (a symlink's target's)


def tree_entries(root: Path, skip: Callable[[str], bool] = lambda rel: False
                 ) -> list[Listed]:
    """Every regular file below `root` (a symlink to one included; a symlinked directory
    not entered, as `Path.rglob` does), sorted by the relative path; `skip(rel)` leaves
    files out.  One `os.scandir` walk: `root` is resolved once and a file's key is its
    name joined onto that, except a symlink's, which is resolved on its own."""
    root = Path(root)
    if not root.is_dir():
        return []           # as rglob: nothing below a file or a missing path
    real = os.path.realpath(root)
    found: list[Listed] = []

    def walk(directory: str, real_dir: str, prefix: str) -> None:
        try:
            with os.scandir(directory) as entries:
                listed = list(entries)
        except (PermissionError, FileNotFoundError, NotADirectoryError):
            return          # unreadable, or removed while listed: left out, as by rglob
        for entry in listed:
            rel = prefix + entry.name
            try:
                if entry.is_symlink():
                    if entry.is_file():
                        found.append(Listed(rel, root / rel, os.path.realpath(entry.path),
                                            entry.stat()))
                elif entry.is_dir():
                    walk(entry.path, os.path.join(real_dir, entry.name), rel + "/")
                elif entry.is_file():
                    found.append(Listed(rel, root / rel, os.path.join(real_dir, entry.name),
                                        entry.stat()))
            except FileNotFoundError:
                continue    # removed while listed
    walk(os.fspath(root), real, "")
    found.sort(key=lambda e: e.rel)
    return [e for e in found if not skip(e.rel)]


def tree_files(root: Path, skip: Callable[[str], bool] = lambda rel: False
               ) -> list[tuple[str, Path]]:
    """(posix relative path, path) of every regular file below `root`, sorted by the
    relative path; `skip(rel)` leaves files out (`tree_entries`)."""
    return [(e.rel, e.path) for e in tree_entries(root, skip)]


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
        key = self.key(path)
        found = self.lookup(key, st)
        if found is None:
            found = hash_file(Path(path))
            self.learn(path, st, found, key)
        return found

    @staticmethod
    def key(path: Path) -> str:
        """A file's key in the cache: its resolved path (`tree_entries` gives the files
        of a directory with theirs, resolving the directory once)."""
        return os.path.realpath(path)

    def known(self, path: Path, st: os.stat_result | None = None) -> FileDigest | None:
        """The cached digest of a file as it is now (`st`: its stat), or None: a file not
        seen, or changed (size or mtime) since.  OSError when it cannot be stat'ed."""
        return self.lookup(self.key(path), st if st is not None else os.stat(path))

    def lookup(self, key: str, st: os.stat_result) -> FileDigest | None:
        """`known` of the file whose `key` (resolved path) and stat are at hand."""
        with self._lock:
            hit = self._tables().get(key)
        if isinstance(hit, dict) and hit.get("size") == st.st_size \
                and hit.get("mtime_ns") == st.st_mtime_ns and "lines" in hit:
            return FileDigest(hit["digest"], hit["size"], hit["lines"])
        return None

    def learn(self, path: Path, st: os.stat_result, found: FileDigest,
              key: str | None = None) -> None:
        """Keep the digest of a file read elsewhere (a `HashingReader`), under the stat the
        file had before that read (`key`: its resolved path, when at hand)."""
        key = key if key is not None else self.key(path)
        with self._lock:
            files = self._tables()
            files.pop(key, None)     # one entry per path, newest last
            files[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                          "digest": found.digest, "lines": found.lines}
            _trim(files)
            self._dirty = True

    def listed(self, entry: Listed) -> FileDigest:
        """The digest of a file `tree_entries` found (read when not cached)."""
        found = self.lookup(entry.key, entry.stat)
        if found is None:
            found = hash_file(entry.path)
            self.learn(entry.path, entry.stat, found, entry.key)
        return found

    def tree(self, root: Path, skip: Callable[[str], bool] = lambda rel: False
             ) -> tuple[str, int, list[tuple[str, Path, FileDigest]]]:
        """(digest, total size, files) of a directory: `tree_digest` over its files."""
        files = [(e.rel, e.path, self.listed(e)) for e in tree_entries(root, skip)]
        return (tree_digest((rel, f.digest) for rel, _, f in files),
                sum(f.size for _, _, f in files), files)

    # ------------------------------------------------------------ derived values

    def remember(self, key: str, compute: Callable[[], Any]) -> Any:
        """The JSON-able value kept under `key`, computed (and kept) when missing."""
        found = self.recall(key)
        if found is None:
            found = compute()
            self.keep(key, found)
        return found

    def recall(self, key: str) -> Any:
        """The JSON-able value kept under `key`, or None."""
        with self._lock:
            self._tables()
            return self._values.get(key)

    def keep(self, key: str, value: Any) -> None:
        """Keep a JSON-able value (not None) under `key`."""
        with self._lock:
            self._tables()
            self._values.pop(key, None)      # newest last: the oldest are forgotten first
            self._values[key] = value
            _trim(self._values)
            self._dirty = True

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
