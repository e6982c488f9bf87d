"""`dataset` on the `local` provider: a content-addressed copy under the provider root.

A source is a file or directory (relative to the stack, or ``file://``) or an
``http(s)://`` URL.  Its sha256 digest names it in the store::

    root/cas/sha256/<2 hex>/<digest>/<original file name or directory tree>
    root/cas/index.json          digests by (path, size, mtime_ns), row profiles by digest
    root/cas/downloads/<url key>/<name>, root/cas/urls.json   the http(s) download cache
    root/datasets/<slug>.json    one record per dataset: its attributes

A file's digest is the sha256 of its bytes; a directory's is the sha256 over
its sorted ``relative/path NUL file-sha256 LF`` lines.  Digests are cached by
size and mtime, so a plan of an unchanged dataset reads nothing; content that
is already stored is never copied twice (a second name for it is a hard link).
A URL is fetched at plan time with ``If-None-Match``/``If-Modified-Since`` from
the last fetch, so an unchanged remote file is downloaded once.

Plan computes ``uri``, ``digest``, ``rows`` and ``bytes`` (all known then, so
a pipeline's fingerprint is known at plan time) and `validate` runs the checks
(`checks.py`); an edited source file shows up as an update of the dataset and
a re-run of every pipeline it feeds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from mlform.providers.base import Diagnostic, error
from mlform.providers.base import UNKNOWN, contains_unknown
from mlform.providers.base import (
    Desired, KindSchema, LiveObject, Planned, ProgressEvent, ProviderError, Timeouts,
)

from . import checks
from .common import KindHandler, LocalEnv, read_json, write_json_atomic

__all__ = ["DatasetHandler", "Content", "ContentStore", "Digests", "tree_digest"]

_CHUNK = 1 << 20


class SourceError(Exception):
    """The source cannot be found, read or downloaded; the message says which and why."""


@dataclass(frozen=True)
class Content:
    """A dataset's bytes on this machine, before or after they are stored."""

    path: Path      # the file or directory to read (the source, or the download cache)
    name: str       # its name inside the store
    digest: str
    size: int
    is_dir: bool


# -- digests -----------------------------------------------------------------

def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _tree_files(root: Path) -> list[tuple[str, Path]]:
    """(posix relative path, path) of every regular file below `root`, sorted."""
    return sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())


def tree_digest(pairs: list[tuple[str, str]]) -> str:
    """sha256 over sorted (relative path, file sha256) pairs: the digest of a directory."""
    h = hashlib.sha256()
    for rel, digest in sorted(pairs):
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()


class Digests:
    """File digests cached by (path, size, mtime_ns) in ``root/cas/index.json``.

    The index is a cache, not state: losing it costs one re-read, and a racing
    writer in another process at worst drops an entry.
    """

    def __init__(self, index_path: Path) -> None:
        self._path = index_path
        self._lock = threading.Lock()
        self._doc: dict[str, Any] | None = None
        self._dirty = False

    def _index(self) -> dict[str, Any]:
        if self._doc is None:
            doc = read_json(self._path, {})
            doc = doc if isinstance(doc, dict) else {}
            self._doc = {"files": dict(doc.get("files") or {}),
                         "profiles": dict(doc.get("profiles") or {})}
        return self._doc

    def file(self, path: Path) -> tuple[str, int]:
        st = path.stat()
        key = str(path.resolve())
        with self._lock:
            hit = self._index()["files"].get(key)
        if isinstance(hit, dict) and hit.get("size") == st.st_size and \
                hit.get("mtime_ns") == st.st_mtime_ns:
            return hit["digest"], st.st_size
        digest = _hash_file(path)
        with self._lock:
            # one entry per path: an edited file replaces its old entry
            self._index()["files"][key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                           "digest": digest}
            self._dirty = True
        return digest, st.st_size

    def tree(self, root: Path) -> tuple[str, int]:
        pairs, size = [], 0
        for rel, path in _tree_files(root):
            digest, n = self.file(path)
            pairs.append((rel, digest))
            size += n
        return tree_digest(pairs), size

    def profile(self, key: str, compute: Callable[[], checks.Profile]) -> checks.Profile:
        with self._lock:
            hit = self._index()["profiles"].get(key)
        if isinstance(hit, dict):
            try:
                return checks.Profile.from_json(hit)
            except (KeyError, TypeError, ValueError):
                pass  # an older or damaged entry: compute again
        result = compute()
        with self._lock:
            profiles = self._index()["profiles"]
            profiles[key] = result.to_json()
            while len(profiles) > 1000:   # a cache: forget the oldest entries
                profiles.pop(next(iter(profiles)))
            self._dirty = True
        return result

    def save(self) -> None:
        with self._lock:
            if not self._dirty or self._doc is None:
                return
            write_json_atomic(self._path, self._doc)
            self._dirty = False


# -- the content-addressed store --------------------------------------------

class ContentStore:
    """``root/cas/sha256/<2 hex>/<digest>/<name>``: each content stored once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    def location(self, digest: str, name: str) -> Path:
        return self.root / "sha256" / digest[:2] / digest / name

    def has(self, digest: str, name: str) -> bool:
        return self.location(digest, name).exists()

    def put(self, content: Content, verify: Callable[[Path], str]) -> Path:
        """Store `content` unless it is there; a second name for it is a hard link, not a copy."""
        target = self.location(content.digest, content.name)
        with self._lock:
            if target.exists():
                return target
            target.parent.mkdir(parents=True, exist_ok=True)
            stored = [p for p in target.parent.iterdir() if not p.name.startswith(".")]
            # a staging name inside the digest folder: the final rename is atomic and
            # a kill leaves only a dot-file that the next put replaces
            staging = target.parent / f".{content.name}.{os.getpid()}.partial"
            _remove(staging)
            if stored:
                _link_copy(stored[0], staging)
            else:
                _copy(content.path, staging)
                found = verify(staging)
                if found != content.digest:
                    _remove(staging)
                    raise SourceError(f"{content.path} changed while it was being copied "
                                      f"(sha256 {content.digest[:12]}… → {found[:12]}…)")
            os.replace(staging, target)
            return target

    def release(self, digest: str, name: str) -> None:
        """Remove one stored name (the caller checked nothing else refers to it)."""
        target = self.location(digest, name)
        with self._lock:
            _remove(target)
            try:
                target.parent.rmdir()   # only when no other name is left
            except OSError:
                pass


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, symlinks=False)
    else:
        shutil.copyfile(source, target)


def _link_copy(source: Path, target: Path) -> None:
    """The same content under another name: hard links (same file system, no new bytes)."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    if source.is_dir():
        shutil.copytree(source, target, copy_function=link)
    else:
        link(str(source), str(target))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# -- http(s) sources ---------------------------------------------------------

class Downloads:
    """http(s) sources, fetched with conditional requests and kept under ``root/cas/downloads``."""

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

    def _fetch(self, url: str) -> Path:
        index = read_json(self._index_path, {}) or {}
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
        write_json_atomic(self._index_path, index)
        return target

    @staticmethod
    def _save(response: Any, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        with open(partial, "wb") as fh:
            while chunk := response.read(_CHUNK):
                fh.write(chunk)
        os.replace(partial, target)


# -- the handler -------------------------------------------------------------

def _source_key(attrs: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    return attrs.get("source"), attrs.get("format"), attrs.get("schema")


class DatasetHandler(KindHandler):
    """`dataset`: digest, checks and a content-addressed copy."""

    schema = KindSchema(replace_paths=("format",), computed=("uri", "digest", "rows", "bytes"),
                        timeouts=Timeouts(create=3600.0, update=3600.0, delete=300.0))

    def __init__(self, env: LocalEnv) -> None:
        super().__init__(env)
        cas = env.root / "cas"
        self.store = ContentStore(cas)
        self.digests = Digests(cas / "index.json")
        self.downloads = Downloads(cas)

    # -- the source ----------------------------------------------------------

    def record_path(self, address: str) -> Path:
        return self.env.root / "datasets" / f"{self.env.slug(address)}.json"

    def _local(self, source: str) -> Path:
        """The file or directory a source names (URLs are downloaded first)."""
        scheme = urllib.parse.urlsplit(source).scheme.lower()
        scheme = scheme if len(scheme) > 1 else ""   # "C:" is a drive, not a scheme
        where = {
            "": lambda: self.env.resolve(os.path.expanduser(source)),
            "file": lambda: Path(urllib.parse.unquote(urllib.parse.urlsplit(source).path)),
            "http": lambda: self.downloads.fetch(source),
            "https": lambda: self.downloads.fetch(source),
        }.get(scheme)
        if where is None:
            raise SourceError(f"the local provider reads files and http(s) URLs, not "
                              f"{scheme}:// sources; use a provider for that store, or "
                              f"download the data first")
        return where()

    def content(self, source: str) -> Content:
        path = self._local(source)
        if not path.exists():
            raise SourceError(f"source {source} not found (looked for {path})")
        try:
            if path.is_dir():
                digest, size = self.digests.tree(path)
            else:
                digest, size = self.digests.file(path)
        except OSError as exc:
            raise SourceError(f"cannot read source {source}: {exc}") from exc
        finally:
            self.digests.save()
        return Content(path, path.name or "data", digest, size, path.is_dir())

    @staticmethod
    def format_of(attrs: Mapping[str, Any], content: Content) -> str:
        fmt = attrs.get("format")
        return fmt.lower() if isinstance(fmt, str) else checks.infer_format(content.path)

    def profile(self, attrs: Mapping[str, Any], content: Content) -> checks.Profile:
        fmt = self.format_of(attrs, content)
        schema = attrs.get("schema") or {}
        key = hashlib.sha256(repr((content.digest, fmt, sorted(schema.items()))).encode()).hexdigest()
        try:
            return self.digests.profile(key, lambda: checks.profile(content.path, fmt, schema))
        finally:
            self.digests.save()

    # -- the contract --------------------------------------------------------

    def validate(self, desired: Desired) -> list[Diagnostic]:
        attrs = desired.attributes
        if contains_unknown(_source_key(attrs)):
            return []
        try:
            content = self.content(attrs["source"])
        except SourceError as exc:
            return [error(f"{desired.address}: {exc}", address=desired.address)]
        declared = [v for v in (attrs.get("checks") or {}).values() if v is not None]
        if not attrs.get("schema") and not declared:
            return []
        try:
            prof = self.profile(attrs, content)
        except checks.CheckUnavailable as exc:
            return [error(f"{desired.address}: cannot run the dataset checks: {exc}",
                          address=desired.address)]
        detail = f"Checked {attrs['source']} (sha256 {content.digest[:12]}…)."
        return [error(f.message, detail, address=desired.address)
                for f in checks.run_checks(desired.address, prof, attrs.get("checks"),
                                           attrs.get("schema"))]

    def plan(self, desired: Desired, prior: LiveObject | None) -> Planned:
        attrs = dict(desired.attributes)
        if contains_unknown(_source_key(attrs)):
            attrs.update(uri=UNKNOWN, digest=UNKNOWN, rows=UNKNOWN, bytes=UNKNOWN)
        else:
            attrs.update(self._computed(desired.address, attrs))
        return Planned(desired.address, desired.kind, desired.name, attrs)

    def _computed(self, address: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
        try:
            content = self.content(attrs["source"])
        except SourceError as exc:
            raise ProviderError(f"{address}: {exc}", address=address) from exc
        try:
            rows = self.profile(attrs, content).rows
        except checks.CheckUnavailable:
            rows = None   # validate reports why; the content is still usable
        return {"uri": self.store.location(content.digest, content.name).as_uri(),
                "digest": content.digest, "rows": rows, "bytes": content.size}

    def create(self, planned: Planned) -> LiveObject:
        address, attrs = planned.address, dict(planned.attributes)
        try:
            content = self.content(attrs["source"])
        except SourceError as exc:
            raise ProviderError(f"{address}: {exc}", address=address) from exc
        planned_digest = attrs.get("digest")
        if planned_digest is not UNKNOWN and planned_digest != content.digest:
            raise ProviderError(f"{address}: the source changed since the plan (sha256 "
                                f"{str(planned_digest)[:12]}… → {content.digest[:12]}…); "
                                f"run plan again", address=address)
        if not self.store.has(content.digest, content.name):
            self.env.context.progress(ProgressEvent(address, f"copying {content.path.name} "
                                                    f"({content.size} bytes) into the store"))
        try:
            self.store.put(content, self._verify(content))
        except (SourceError, OSError) as exc:
            raise ProviderError(f"{address}: cannot store the dataset: {exc}", address=address,
                                retryable=True) from exc
        if contains_unknown(attrs):
            attrs.update({k: v for k, v in self._computed(address, attrs).items()
                          if attrs.get(k) is UNKNOWN})
        write_json_atomic(self.record_path(address), {
            "address": address, "digest": content.digest, "name": content.name,
            "attributes": attrs})
        return LiveObject(address, planned.kind, self.env.object_id(address), attrs)

    @staticmethod
    def _verify(content: Content) -> Callable[[Path], str]:
        """Hash the copy itself, so a source edited during the copy is caught."""
        if not content.is_dir:
            return _hash_file
        return lambda root: tree_digest([(rel, _hash_file(p)) for rel, p in _tree_files(root)])

    def read(self, prior: LiveObject) -> LiveObject | None:
        record = read_json(self.record_path(prior.address))
        if not isinstance(record, dict) or not self.store.has(record.get("digest", ""),
                                                              record.get("name", "")):
            return None   # the record or its stored content is gone: drift
        return LiveObject(prior.address, prior.kind, self.env.object_id(prior.address),
                          record.get("attributes", {}))

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        return self.create(planned)

    def delete(self, prior: LiveObject) -> None:
        path = self.record_path(prior.address)
        record = read_json(path)
        path.unlink(missing_ok=True)
        if not isinstance(record, dict) or not record.get("digest"):
            return
        # the stored content may be shared with other datasets: keep it while one refers to it
        key = (record["digest"], record.get("name", ""))
        for other in (self.env.root / "datasets").glob("*.json"):
            doc = read_json(other)
            if isinstance(doc, dict) and (doc.get("digest"), doc.get("name", "")) == key:
                return
        self.store.release(*key)
