"""`dataset` on the `local` provider: a content-addressed copy under the provider root.

A source is a file or directory (relative to the stack, or ``file://``) or an
``http(s)://`` URL.  Its sha256 digest names it in the store::

    root/cas/sha256/<2 hex>/<digest>/<original file name or directory tree>
    root/cas/downloads/<url key>/<name>, root/cas/urls.json   the http(s) download cache
    root/datasets/<slug>.json    one record per dataset: its attributes

A file's digest is the sha256 of its bytes; a directory's is the sha256 over
its sorted ``relative/path NUL file-sha256 LF`` lines (`kit.digests`).  Digests and
row profiles are cached by size and mtime in the stack's shared digest cache, so a
plan of an unchanged dataset reads nothing; content that is already stored is never
copied twice (a second name for it is a hard link).  A URL is fetched when facts are
read, with ``If-None-Match``/``If-Modified-Since`` from the last fetch, so an unchanged
remote file is downloaded once.

The source's content and profile are a fact (`kit.datasets`), read before planning:
plan computes ``uri``, ``digest``, ``rows`` and ``bytes`` from it (all known then, so
a pipeline's fingerprint is known at plan time) and `validate` runs the checks
(`kit.checks`); an edited source file shows up as an update of the dataset and a
re-run of every pipeline it feeds.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from mlform.providers.base import (
    UNKNOWN, Desired, Diagnostic, FactKey, Facts, KindSchema, LiveObject, Planned,
    ProgressEvent, ProviderError, Timeouts, contains_unknown,
)
from mlform.providers.kit.datasets import (
    SOURCE_INPUTS, DatasetFacts, dataset_diagnostics, fact_attrs, read_local_dataset, readable,
    source_fact, source_fact_keys,
)
from mlform.providers.kit.digests import hash_file, tree_digest, tree_files
from mlform.providers.kit.plans import computed_or_unknown, plan_of
from mlform.providers.kit.sources import (
    Downloads, LocalContent, SourceError, local_path, read_local, scheme,
)

from .env import LocalEnv, LocalHandler, read_json, write_json_atomic

__all__ = ["DatasetHandler", "ContentStore"]

COMPUTED = ("uri", "digest", "rows", "bytes")


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

    def put(self, content: LocalContent, verify: Callable[[Path], str]) -> Path:
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


# -- the handler -------------------------------------------------------------

class DatasetHandler(LocalHandler):
    """`dataset`: digest, checks and a content-addressed copy."""

    schema = KindSchema(replace_paths=("format",), computed=COMPUTED,
                        timeouts=Timeouts(create=3600.0, update=3600.0, delete=300.0))

    def __init__(self, env: LocalEnv) -> None:
        super().__init__(env)
        cas = env.root / "cas"
        self.store = ContentStore(cas)
        self.downloads = Downloads(cas)

    def record_path(self, address: str) -> Path:
        return self.env.root / "datasets" / f"{self.env.slug(address)}.json"

    # -- the source ----------------------------------------------------------

    def _path(self, source: str) -> Path:
        """The file or directory a source names (URLs are downloaded first)."""
        kind = scheme(source)
        if kind in ("", "file"):
            return local_path(source, self.env.stack_dir)
        if kind in ("http", "https"):
            return self.downloads.fetch(source)
        raise SourceError(f"the local provider reads files and http(s) URLs, not "
                          f"{kind}:// sources; use a provider for that store, or "
                          f"download the data first")

    def content(self, source: str) -> LocalContent:
        return read_local(source, self._path(source), self.env.digests)

    # -- facts ---------------------------------------------------------------

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> Sequence[FactKey]:
        return source_fact_keys(desired.attributes)

    def read_facts(self, keys: Sequence[FactKey]) -> dict[FactKey, Any]:
        found: dict[FactKey, Any] = {}
        for key in keys:
            attrs = fact_attrs(key)
            source = attrs["source"]
            try:
                found[key] = read_local_dataset(source, self._path(source), attrs,
                                                self.env.digests)
            except SourceError as exc:
                found[key] = DatasetFacts(error=str(exc))
        return found

    # -- the contract --------------------------------------------------------

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        key = source_fact(desired.attributes)
        return dataset_diagnostics(desired.address, desired.attributes, facts[key]) \
            if key is not None else []

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        attrs = desired.attributes
        return plan_of(desired, computed_or_unknown(
            attrs, SOURCE_INPUTS, COMPUTED,
            lambda: self._computed(desired.address, facts[source_fact(attrs)])))

    def _computed(self, address: str, found: Any) -> dict[str, Any]:
        found = readable(address, found)
        content = found.content
        return {"uri": self.store.location(content.digest, content.name).as_uri(),
                "digest": content.digest, "bytes": content.size,
                # a profile the checks cannot read: validate says why; the data is usable
                "rows": found.profile.rows if found.profile is not None else None}

    def create(self, planned_: Planned) -> LiveObject:
        address, attrs = planned_.address, dict(planned_.attributes)
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
            key = source_fact(attrs)
            attrs.update({k: v for k, v in self._computed(address, self.read_facts([key])[key]).items()
                          if attrs.get(k) is UNKNOWN})
        write_json_atomic(self.record_path(address), {
            "address": address, "digest": content.digest, "name": content.name,
            "attributes": attrs})
        return LiveObject(address, planned_.kind, self.env.object_id(address), attrs)

    @staticmethod
    def _verify(content: LocalContent) -> Callable[[Path], str]:
        """Hash the copy itself, so a source edited during the copy is caught."""
        if not content.is_dir:
            return lambda path: hash_file(path).digest
        return lambda root: tree_digest([(rel, hash_file(p).digest)
                                         for rel, p in tree_files(root)])

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
