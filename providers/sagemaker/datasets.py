"""`dataset` on the `sagemaker` provider: S3 objects, uploaded once per digest.

A local source (a file or directory relative to the stack, or ``file://``) is hashed
as the local provider hashes it (sha256 of a file's bytes; for a directory, over its
sorted ``relative path NUL file sha256`` lines) and uploaded to::

    s3://<bucket>/<prefix>/datasets/<name>/<sha256>/<file name>          a file
    s3://<bucket>/<prefix>/datasets/<name>/<sha256>/<relative path>...   a directory

(`<name>` is ``env.name(address)``; the bucket layout is in bucket.py)

each object tagged with the ownership tags and carrying its own sha256 (and the
dataset's digest) as metadata.  Every key is looked at (HeadObject) before it is
written, so a retried create or an unchanged dataset uploads nothing, and a
directory whose upload was cut off resumes where it stopped.  The `uri` is the
file's key, or the version's folder (ending in ``/``) for a directory.

An ``s3://`` source is read, never copied: HeadObject for an object, ListObjectsV2
for a prefix (a source naming no object is taken as a prefix; its `uri` ends in
``/``).  Its `digest` is the sha256 over the objects' ``relative key NUL ETag:size``
lines, so it changes whenever an object is rewritten; `uri` is the source.

`rows` is counted (csv, jsonl; parquet with pyarrow; `kit.checks`) for local data, and
for S3 data no bigger than ``settings.fetch_limit_mb``, which is then fetched once per
digest; otherwise it is null.  `schema` and `checks` fail the plan with the value found
and the threshold, in the kit's words; checks on S3 data bigger than the limit are an
error rather than silently skipped.  All of that (the source's listing, digests, the
profile) is a fact read before planning (`read_facts`); validate and plan only look.

``datasets/<name>/dataset.json`` records what the dataset is (attributes, digest,
objects); `read` finds the dataset by it (with or without an id), refuses it when its
tags name another owner, and reports the dataset gone when the record or its objects
are.  A changed digest is an update: the new version is uploaded beside the old ones,
which stay until the dataset is destroyed (training jobs that read them keep
reproducible inputs).  Delete removes every object under ``datasets/<name>/`` and never
anything of an ``s3://`` source.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from mlform.providers.base import (
    UNKNOWN, Desired, Diagnostic, FactError, FactKey, Facts, KindSchema, LiveObject, Planned,
    ProviderError, Timeouts, contains_unknown,
)
from mlform.providers.kit import checks
from mlform.providers.kit.datasets import (
    SOURCE_INPUTS, DatasetFacts, dataset_diagnostics, fact_attrs, fact_extra, read_local_dataset,
    read_profile, source_fact,
)
from mlform.providers.kit.digests import DigestCache, tree_digest
from mlform.providers.kit.plans import computed_or_unknown, plan_of
from mlform.providers.kit.sources import SourceError, local_path, parse_s3, read_local, scheme
from mlform.providers.kit.storage import Missing, tagging

from . import bucket
from .clusters import s3_tag_problem
from .env import SageMakerEnv, SageMakerHandler, user_tags

__all__ = ["DatasetHandler", "DatasetSettings", "Source", "parse_s3", "dataset_objects"]

_TABULAR_FETCH = ("csv", "jsonl", "parquet", "json")


class DatasetSettings(BaseModel):
    """`settings { }` of a sagemaker dataset."""

    model_config = ConfigDict(extra="forbid")

    fetch_limit_mb: int = Field(100, ge=0, description=(
        "Largest s3:// source (in MB) fetched to count rows and run checks; bigger "
        "sources get rows = null and may not declare checks."))


@dataclass(frozen=True)
class Source:
    """A dataset's data as found: where, its digest and size, and its files.

    `files` are (relative key, local path or None, size, etag or None); a local source
    has paths, an S3 source ETags.
    """

    kind: str               # "local" or "s3"
    text: str               # the source as written
    digest: str
    size: int
    is_dir: bool
    name: str               # file or directory name (local), "" for S3
    files: tuple[tuple[str, Path | None, int, str | None], ...]
    path: Path | None = None         # local: the file or directory
    s3_bucket: str = ""
    s3_key: str = ""                 # S3: the object key, or the prefix (ending in /)

    def fmt(self, attrs: Mapping[str, Any]) -> str:
        given = attrs.get("format")
        if isinstance(given, str):
            return given.lower()
        if self.path is not None:
            return checks.infer_format(self.path)
        return "dir" if self.is_dir else checks.infer_format(Path(PurePosixPath(self.s3_key).name))


@dataclass(frozen=True)
class _Found:
    """A dataset's fact: where its data is (None when it cannot be read) and what the
    checks know of it."""

    source: Source | None
    data: DatasetFacts


def dataset_objects(env: SageMakerEnv, address: str, digest: str,
                    files: Sequence[tuple[str, Any, int, Any]]) -> list[tuple[str, Any, int, Any]]:
    """(S3 key, local path, size, file sha256) of every object a local source of
    `digest` uploads, from its `files` (`Source.files`): create uploads these, and the
    Pulumi export declares them."""
    base = f"{bucket.dataset_prefix(env, address)}{digest}/"
    return [(base + rel, path, size, sha) for rel, path, size, sha in files]


#: what the source's fact depends on
_SOURCE_ATTRIBUTES = (*SOURCE_INPUTS, "settings")
COMPUTED = ("uri", "digest", "rows", "bytes")


class DatasetHandler(SageMakerHandler):
    """`dataset`: S3 objects per digest, checks run at plan."""

    schema = KindSchema(settings_model=DatasetSettings, replace_paths=("format",),
                        computed=COMPUTED,
                        timeouts=Timeouts(create=3600.0, update=3600.0, delete=900.0))

    @property
    def digests(self) -> DigestCache:
        return self.env.digests

    # -- the source ------------------------------------------------------------

    def source(self, text: str) -> Source:
        kind = scheme(text)
        if kind == "s3":
            return self._s3_source(text)
        if kind in ("", "file"):
            return self._local_source(text, local_path(text, Path(self.env.context.stack_dir)))
        raise SourceError(f"the sagemaker provider reads local files and s3:// sources, not "
                          f"{kind}:// ones; download the data first, or copy it to S3")

    def _local_source(self, text: str, path: Path) -> Source:
        content = read_local(text, path, self.digests)
        # for local files the fourth field is the file's sha256 (what the metadata carries)
        return Source("local", text, content.digest, content.size, content.is_dir,
                      content.name, content.files, path=content.path)

    def _s3_source(self, text: str) -> Source:
        name, key = parse_s3(text)
        if not name:
            raise SourceError(f"source {text} names no bucket")
        store = self.env.bucket_store(name)
        head = None
        if key and not key.endswith("/"):
            head = store.head(key)
        if head is not None:
            files = [(PurePosixPath(key).name, None, int(head.get("ContentLength") or 0),
                      str(head.get("ETag") or ""))]
            is_dir = False
        else:
            if key and not key.endswith("/"):
                key += "/"
            listed = store.list(key)
            files = [(item["Key"][len(key):], None, int(item.get("Size") or 0),
                      str(item.get("ETag") or "")) for item in listed
                     if not item["Key"].endswith("/")]
            if not files:
                raise SourceError(f"source {text} not found (no object s3://{name}/{key.rstrip('/')}"
                                  f" and nothing under s3://{name}/{key})")
            is_dir = True
        digest = tree_digest([(rel, f"{etag}:{size}") for rel, _, size, etag in files])
        return Source("s3", text, digest, sum(f[2] for f in files), is_dir, "", tuple(files),
                      s3_bucket=name, s3_key=key)

    def uri(self, address: str, source: Source) -> str:
        if source.kind == "s3":
            return f"s3://{source.s3_bucket}/{source.s3_key}"
        base = f"{bucket.dataset_prefix(self.env, address)}{source.digest}/"
        return f"s3://{self.env.config.bucket}/{base}" + ("" if source.is_dir else source.name)

    def _keys(self, address: str, source: Source) -> list[tuple[str, Path, int, str]]:
        """(S3 key, local path, size, file sha256) of every object a local source uploads."""
        return dataset_objects(self.env, address, source.digest, source.files)

    # -- facts -------------------------------------------------------------------

    @staticmethod
    def _key(attrs: Mapping[str, Any]) -> FactKey | None:
        """The kit's key, with the fetch limit (it decides whether checks can run)."""
        if contains_unknown(attrs.get("settings")):
            return None
        limit = DatasetSettings.model_validate(dict(attrs.get("settings") or {})).fetch_limit_mb
        return source_fact(attrs, limit)

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> Sequence[FactKey]:
        key = self._key(desired.attributes)
        return (key,) if key is not None else ()

    def read_facts(self, keys: Sequence[FactKey]) -> dict[FactKey, Any]:
        return {key: self._read(key) for key in keys}

    def _read(self, key: FactKey) -> _Found:
        attrs = fact_attrs(key)
        text, schema, wanted = attrs["source"], attrs["schema"], attrs["profile"]
        [limit] = fact_extra(key)
        try:
            source = self.source(text)
        except SourceError as exc:
            return _Found(None, DatasetFacts(error=str(exc)))
        except ProviderError as exc:
            return _Found(None, DatasetFacts(error=f"cannot read source {text}: {exc.message}"))
        if source.kind == "local":
            return _Found(source, read_local_dataset(text, source.path, attrs, self.digests))
        fmt = source.fmt(attrs)
        if fmt not in _TABULAR_FETCH:   # opaque files: a directory's rows are its files
            profile = checks.DataProfile(fmt, len(source.files) if source.is_dir else None)
            return _Found(source, DatasetFacts(None, profile, source.digest, source.size))
        if source.size > limit * 1_000_000:
            return _Found(source, DatasetFacts(
                digest=source.digest, size=source.size,
                too_big=f"{text} is {source.size} bytes, more than settings.fetch_limit_mb = "
                        f"{limit}"))
        try:
            profile = self._fetched_profile(source, fmt, schema, wanted)
        except checks.CheckUnavailable as exc:
            return _Found(source, DatasetFacts(digest=source.digest, size=source.size,
                                               profile_error=str(exc)))
        except ProviderError as exc:
            return _Found(source, DatasetFacts(error=exc.message))
        return _Found(source, DatasetFacts(None, profile, source.digest, source.size))

    def _fetched_profile(self, source: Source, fmt: str, schema: Mapping[str, str],
                         wanted: bool) -> checks.DataProfile:
        """The profile of S3 data, fetched once per digest (cached with the digests);
        without `wanted` (no schema, no check) its rows only."""
        with tempfile.TemporaryDirectory(prefix="mlform-dataset-") as tmp:
            root = Path(tmp) / "data"
            store = self.env.bucket_store(source.s3_bucket)
            for rel, _, _, _ in source.files:
                target = root / rel if source.is_dir else root
                key = source.s3_key + rel if source.is_dir else source.s3_key
                try:
                    store.download(key, target)
                except (Missing, ProviderError) as exc:   # say what boto3 said
                    raise ProviderError(f"cannot fetch s3://{source.s3_bucket}/{key} to check "
                                        f"it: {exc.__cause__ or exc}", retryable=True) from exc
            if not source.is_dir:   # keep the suffix: the csv/jsonl readers do not care, json does
                named = root.with_name(PurePosixPath(source.s3_key).name)
                root.rename(named)
                root = named
            return read_profile(root, source.digest, fmt, schema, self.digests, wanted)

    # -- the contract ------------------------------------------------------------

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        address, attrs = desired.address, desired.attributes
        found: list[Diagnostic] = []
        tag_problem = s3_tag_problem(address, attrs.get("tags"))
        found += [tag_problem] if tag_problem else []
        if found or contains_unknown([attrs.get(k) for k in (*_SOURCE_ATTRIBUTES, "checks")]):
            return found
        fact = facts[self._key(attrs)]
        if isinstance(fact, FactError):
            return dataset_diagnostics(address, attrs, fact)
        digest_name = "sha256" if fact.source is not None and fact.source.kind == "local" \
            else "digest"
        return dataset_diagnostics(address, attrs, fact.data, digest_name)

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        attrs = desired.attributes
        return plan_of(desired, computed_or_unknown(
            attrs, _SOURCE_ATTRIBUTES, COMPUTED,
            lambda: self._computed(desired.address, facts[self._key(attrs)])))

    def _source(self, address: str, attrs: Mapping[str, Any]) -> Source:
        try:
            return self.source(attrs["source"])
        except SourceError as exc:
            raise ProviderError(f"{address}: {exc}", address=address) from exc

    def _computed(self, address: str, fact: Any) -> dict[str, Any]:
        if isinstance(fact, FactError):
            raise ProviderError(f"{address}: {fact.message}", address=address)
        if fact.source is None:
            raise ProviderError(f"{address}: {fact.data.error}", address=address)
        profile = fact.data.profile     # None: too big to fetch, or not readable as its format
        return {"uri": self.uri(address, fact.source), "digest": fact.source.digest,
                "rows": profile.rows if profile is not None else None,
                "bytes": fact.source.size}

    def create(self, planned: Planned) -> LiveObject:
        address, attrs = planned.address, dict(planned.attributes)
        source = self._source(address, attrs)
        planned_digest = attrs.get("digest")
        if planned_digest is not UNKNOWN and planned_digest != source.digest:
            raise ProviderError(f"{address}: the source changed since the plan (digest "
                                f"{str(planned_digest)[:12]}… → {source.digest[:12]}…); "
                                f"run plan again", address=address)
        if contains_unknown(attrs):
            computed = self._computed(address, self._read(self._key(attrs)))
            attrs.update({k: v for k, v in computed.items() if attrs.get(k) is UNKNOWN})
        record_key = bucket.dataset_record(self.env, address)
        found = self.env.store.get_json(record_key, address=address)
        if found is not None:   # a retried create, or an update: the record must be ours
            self.env.check_owner(self.env.store.tags(record_key, address=address) or {},
                                 address, f"dataset record s3://{self.env.config.bucket}/{record_key}")
        if source.kind == "local":
            self._upload(address, attrs, source)
        record = {"address": address, "digest": source.digest, "uri": attrs["uri"],
                  "source_kind": source.kind, "objects": len(source.files),
                  "attributes": attrs}
        if found != record:
            bucket.put_json(self.env, record_key, record, address=address,
                            user_tags=attrs.get("tags"))
        return LiveObject(address, planned.kind, attrs["uri"], attrs)

    def _upload(self, address: str, attrs: Mapping[str, Any], source: Source) -> None:
        store = self.env.store
        todo = []
        for key, path, size, sha in self._keys(address, source):
            head = store.head(key, address=address)
            if head is None or (head.get("Metadata") or {}).get("sha256") != sha:
                todo.append((key, path, size, sha))
        if not todo:
            return
        total = sum(size for _, _, size, _ in todo)
        self.aws.progress(address, f"uploading {len(todo)} file(s), {total} bytes, to "
                                   f"{self.uri(address, source)}", waiting_on="s3 upload")
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        tags = tagging(self.env.tag_map(address, attrs.get("tags")))
        for key, path, size, sha in todo:
            # upload_file: one PutObject for small files, a multipart upload for big ones
            # (the store's client: `ObjectStore.upload` writes no metadata, and the sha256
            # one is what the check above reads)
            try:
                store.client.upload_file(str(path), store.bucket, key, ExtraArgs={
                    "Metadata": {"sha256": sha, "dataset-digest": source.digest},
                    "Tagging": tags})
            except (S3UploadFailedError, ClientError, BotoCoreError, OSError) as exc:
                raise ProviderError(f"{address}: uploading {path} to s3://"
                                    f"{self.env.config.bucket}/{key} failed: {exc}",
                                    address=address, retryable=True) from exc

    def read(self, prior: LiveObject) -> LiveObject | None:
        address = prior.address
        record_key = bucket.dataset_record(self.env, address)
        record = self.env.store.get_json(record_key, address=address)
        if not isinstance(record, dict):
            return None
        tags = self.env.store.tags(record_key, address=address) or {}
        self.env.check_owner(tags, address,
                             f"dataset record s3://{self.env.config.bucket}/{record_key}")
        if not self._data_present(address, record):
            return None   # the data was removed outside mlform: gone
        attrs = dict(record.get("attributes") or {})
        live_tags = user_tags(tags)
        if live_tags != (attrs.get("tags") or {}):
            attrs["tags"] = live_tags
        return LiveObject(address, prior.kind, record.get("uri") or attrs.get("uri"), attrs)

    def _data_present(self, address: str, record: Mapping[str, Any]) -> bool:
        uri = str(record.get("uri") or "")
        name, key = parse_s3(uri)
        if record.get("source_kind") == "s3":
            try:
                self._s3_source(uri)
            except SourceError:
                return False
            return True
        store = self.env.bucket_store(name)
        if not key.endswith("/"):
            return store.head(key, address=address) is not None
        listed = store.list(key, address=address)
        return len(listed) >= int(record.get("objects") or 1)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        return self.create(planned)

    def delete(self, prior: LiveObject) -> None:
        address = prior.address
        prefix = bucket.dataset_prefix(self.env, address)
        record_key = bucket.dataset_record(self.env, address)
        store = self.env.store
        tags = store.tags(record_key, address=address)
        if tags is not None:
            self.env.check_owner(tags, address,
                                 f"dataset record s3://{self.env.config.bucket}/{record_key}")
        keys = [item["Key"] for item in store.list(prefix, address=address)]
        # an s3:// source is read, never owned: spare it even if it lies under this prefix
        source = prior.attributes.get("source")
        if isinstance(source, str) and source.startswith("s3://"):
            name, src_key = parse_s3(source)
            if name == self.env.config.bucket:
                keys = [k for k in keys if not k.startswith(src_key)]
        # the record goes last: a delete cut off half-way is still found and finished
        store.delete([k for k in keys if k != record_key], address=address)
        if record_key in keys:
            store.delete([record_key], address=address)
