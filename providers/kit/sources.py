"""Dataset sources: what a `source` names, and the content of a local one.

A source is a path (relative to the stack, `~` expanded), a ``file://`` URI, an
``http(s)://`` URL (downloaded into a cache, `Downloads`) or an object-store URI
(``s3://bucket/key``, read by the providers that reach the store).  `scheme` says
which; `local_path` resolves the first two; `read_local` reads a file or directory's
content facts through the shared `DigestCache`.  A source that cannot be found or
read raises `SourceError`, whose message says which and why, in the same words on
every provider.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .digests import DigestCache

__all__ = ["SourceError", "LocalContent", "scheme", "local_path", "read_local", "parse_s3",
           "Downloads"]

_CHUNK = 1 << 20


class SourceError(Exception):
    """The source cannot be found, read or downloaded; the message says which and why."""


@dataclass(frozen=True)
class LocalContent:
    """A file or directory on this machine, as the checks and the stores need it."""

    path: Path      # the file or directory to read (the source, or the download cache)
    name: str       # its name (a file's, or the directory's)
    digest: str     # sha256 of a file; `tree_digest` of a directory
    size: int
    is_dir: bool
    files: tuple[tuple[str, Path, int, str], ...]   # (relative path, path, size, sha256)


def scheme(source: str) -> str:
    """``""`` for a plain path, else the URI scheme, lower case (``C:`` is a drive)."""
    found = urllib.parse.urlsplit(source).scheme.lower()
    return found if len(found) > 1 else ""


def local_path(source: str, stack_dir: Path) -> Path:
    """The file or directory a path or ``file://`` source names."""
    if scheme(source) == "file":
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(source).path))
    path = Path(os.path.expanduser(source))
    return path if path.is_absolute() else Path(stack_dir) / path


def read_local(source: str, path: Path, digests: DigestCache) -> LocalContent:
    """The content of a local file or directory (`source` is how the spec wrote it)."""
    try:
        exists = path.exists()
    except (OSError, ValueError):       # a NUL byte, a name too long
        exists = False
    if not exists:
        raise SourceError(f"source {source} not found (looked for {path})")
    try:
        if path.is_dir():
            digest, size, found = digests.tree(path)
            files = tuple((rel, p, f.size, f.digest) for rel, p, f in found)
        else:
            f = digests.file(path)
            digest, size, files = f.digest, f.size, ((path.name, path, f.size, f.digest),)
    except OSError as exc:
        raise SourceError(f"cannot read source {source}: {exc}") from exc
    return LocalContent(path, path.name or "data", digest, size, path.is_dir(), files)


def parse_s3(uri: str) -> tuple[str, str]:
    """(bucket, key) of an ``s3://bucket/key`` URI."""
    parts = urllib.parse.urlsplit(uri)
    return parts.netloc, parts.path.lstrip("/")


class Downloads:
    """http(s) sources, fetched with conditional requests and kept under `root`.

    ``root/downloads/<url key>/<name>`` holds the last download of each URL and
    ``root/urls.json`` its ETag and Last-Modified, so an unchanged remote file is
    downloaded once (later fetches ask ``If-None-Match``/``If-Modified-Since``).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._index_path = root / "urls.json"
        self._lock = threading.Lock()
        self._fetched: dict[str, Path] = {}   # fetched in this process: not asked again

    def fetch(self, url: str) -> Path:
        with self._lock:
            if url in self._fetched:
                return self._fetched[url]
            path = self._fetch(url)
            self._fetched[url] = path
            return path

    def _index(self) -> dict:
        try:
            doc = json.loads(self._index_path.read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def _fetch(self, url: str) -> Path:
        index = self._index()
        entry = index.get(url) if isinstance(index.get(url), dict) else {}
        name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name or "download"
        target = self.root / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16] / name
        headers = {"User-Agent": "mlform"}
        if target.exists():
            if entry.get("etag"):
                headers["If-None-Match"] = entry["etag"]
            if entry.get("last_modified"):
                headers["If-Modified-Since"] = entry["last_modified"]
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                        timeout=60) as response:
                self._save(response, target)
                index[url] = {"etag": response.headers.get("ETag"),
                              "last_modified": response.headers.get("Last-Modified")}
        except urllib.error.HTTPError as exc:
            if exc.code == 304 and target.exists():
                return target
            raise SourceError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SourceError(f"cannot download {url}: {reason}") from exc
        self._write_index(index)
        return target

    def _write_index(self, index: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._index_path.with_name(f".{self._index_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
        os.replace(tmp, self._index_path)

    @staticmethod
    def _save(response: Any, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        with open(partial, "wb") as fh:
            while chunk := response.read(_CHUNK):
                fh.write(chunk)
        os.replace(partial, target)
