"""`dataset` on Kubernetes: data in the provider's `storage`, uploaded once per digest.

A local file or directory (a path, ``file://``) is read and checked on this machine
as on `local` (the kit's `read_local_dataset`: digest, row profile, checks) and
uploaded to ``datasets/<sha256>/<name>`` (a directory's files below it), keyed by
content, so an unchanged dataset is never uploaded twice and two datasets with the
same content share it.  An ``s3://`` source is read in place: its digest is the
object's ETag (the store's checksum), and `uri` is the source itself; the checks need
the data on this machine, so they are refused for such a source with a hint.  The
dataset's record (``datasets/records/<name>.json``) says what was applied; read
finds it and the data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from mlform.providers.base import (
    UNKNOWN, Desired, Diagnostic, FactError, FactKey, Facts, KindSchema, LiveObject, Planned,
    ProviderError, error,
)
from mlform.providers.kit import checks
from mlform.providers.kit.datasets import (
    SOURCE_INPUTS, DatasetFacts, dataset_diagnostics, fact_attrs, readable, read_local_dataset,
    source_fact, source_fact_keys,
)
from mlform.providers.kit.plans import computed_or_unknown, plan_of
from mlform.providers.kit.sources import SourceError, local_path, parse_s3, scheme

from .env import KubeHandler

__all__ = ["DatasetHandler"]

COMPUTED = ("uri", "digest", "rows", "bytes")


class DatasetHandler(KubeHandler):
    schema = KindSchema(replace_paths=("format",), computed=COMPUTED)

    def record_key(self, address: str) -> str:
        return self.env.store.key("datasets", "records", self.env.name(address) + ".json")

    # -- facts ---------------------------------------------------------------------

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> Sequence[FactKey]:
        return source_fact_keys(desired.attributes)

    def read_facts(self, keys: Sequence[FactKey]) -> dict[FactKey, Any]:
        found: dict[FactKey, Any] = {}
        for key in keys:
            attrs = fact_attrs(key)
            try:
                found[key] = self._read(attrs["source"], attrs)
            except ProviderError as exc:
                found[key] = FactError(exc.message, retryable=exc.retryable)
        return found

    def _read(self, source: str, attrs: dict) -> DatasetFacts:
        if scheme(source) == "s3":
            bucket, key = parse_s3(source)
            head = self.env.store.find("head_object", Bucket=bucket, Key=key)
            if head is None:
                return DatasetFacts(error=f"source {source} does not exist")
            return DatasetFacts(digest=str(head.get("ETag", "")).strip('"'),
                                size=int(head.get("ContentLength") or 0))
        if scheme(source) not in ("", "file"):
            return DatasetFacts(error=f"source {source}: the kubernetes provider reads local "
                                      "paths and s3:// URIs")
        try:
            return read_local_dataset(source, local_path(source, self.env.context.stack_dir),
                                      attrs, self.env.digests)
        except SourceError as exc:
            return DatasetFacts(error=str(exc))

    # -- the contract --------------------------------------------------------------

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        attrs = desired.attributes
        key = source_fact(attrs)
        if key is None:
            return []
        found = facts[key]
        if (isinstance(found, DatasetFacts) and found.content is None and not found.error
                and checks.needs_profile(attrs)):
            return [error(f"{desired.address}: the checks need the data on this machine; "
                          f"{attrs['source']} is read in place", address=desired.address,
                          hint="Remove schema and checks, or give a local source.")]
        return dataset_diagnostics(desired.address, attrs, found)

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        attrs = desired.attributes
        return plan_of(desired, computed_or_unknown(
            attrs, SOURCE_INPUTS, COMPUTED,
            lambda: self._computed(desired.address, attrs["source"],
                                   facts[source_fact(attrs)])))

    def _computed(self, address: str, source: str, found: Any) -> dict[str, Any]:
        found = readable(address, found)
        if found.content is None:                     # s3://, in place
            return {"uri": source, "digest": found.digest, "bytes": found.size, "rows": None}
        content = found.content
        suffix = "/" if content.is_dir else ""
        return {"uri": self.env.store.uri("datasets", content.digest, content.name) + suffix,
                "digest": content.digest, "bytes": content.size,
                "rows": found.profile.rows if found.profile is not None else None}

    def create(self, planned: Planned) -> LiveObject:
        address, attrs = planned.address, dict(planned.attributes)
        key = source_fact(attrs)
        found = self.read_facts([key])[key]
        computed = self._computed(address, attrs["source"], found)
        if attrs.get("digest") not in (UNKNOWN, computed["digest"]):
            raise ProviderError(f"{address}: the source changed since the plan (sha256 "
                                f"{str(attrs.get('digest'))[:12]}… → "
                                f"{computed['digest'][:12]}…); run plan again", address=address)
        attrs.update(computed)
        content = found.content
        if content is not None:
            self._upload(address, content)
        self.env.store.put_json(self.record_key(address),
                                {"address": address, "attributes": attrs}, address=address,
                                tags=self.env.owner(address).tags())
        return LiveObject(address, planned.kind, attrs["uri"], attrs)

    def _upload(self, address: str, content: Any) -> None:
        base = self.env.store.key("datasets", content.digest, content.name)
        files = ([(rel, path) for rel, path, _size, _sha in content.files] if content.is_dir
                 else [("", Path(content.path))])
        marker = f"{base}/.complete" if content.is_dir else base
        if self.env.store.head(marker, address=address) is not None:
            return                  # this content is there already
        for rel, path in files:
            self.env.store.upload(path, f"{base}/{rel}" if rel else base, address=address)
        if content.is_dir:          # written last: a half-uploaded directory is not "there"
            self.env.store.put_bytes(marker, b"", address=address)

    def read(self, prior: LiveObject) -> LiveObject | None:
        record = self.env.store.get_json(self.record_key(prior.address), address=prior.address)
        if not isinstance(record, dict) or record.get("address") != prior.address:
            return None
        attrs = record.get("attributes") or {}
        uri = str(attrs.get("uri") or "")
        bucket, key = parse_s3(uri)
        probe = f"{key.rstrip('/')}/.complete" if uri.endswith("/") and \
            not uri == attrs.get("source") else key
        if uri.endswith("/") and uri == attrs.get("source"):
            return LiveObject(prior.address, prior.kind, uri, attrs)
        if self.env.store.find("head_object", Bucket=bucket, Key=probe) is None:
            return None             # the data is gone: upload it again
        return LiveObject(prior.address, prior.kind, uri, attrs)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        return self.create(planned)

    def delete(self, prior: LiveObject) -> None:
        # the content stays: other datasets (and runs' records) may share it
        self.env.store.delete([self.record_key(prior.address)], address=prior.address)
