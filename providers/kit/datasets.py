"""A dataset's facts: its content and row profile, read before planning, judged purely.

Every provider plans a dataset from the same two facts about its data: the content
(digest, size, files; `kit.sources`) and the profile the checks judge (rows, columns,
nulls, values of the wrong type; `kit.checks`).  `DatasetFacts` holds both (or why
they could not be read); `read_local_dataset` reads them for a file or directory on
this machine through the shared digest cache (the profile is cached by content, format
and schema, so an unchanged dataset is read once); `dataset_diagnostics` is what
`validate` says about them, in every provider's words.  `source_fact` is the key those
facts are read under: the same inputs make the same key on every provider; it says
whether the checks need a profile (`fact_attrs`): a dataset that declares no schema and
no check gets its digest, size and rows only (`checks.count_rows`), never a profile.  A
directory's profile is its files' profiles merged, each cached by the file's digest, so
one changed file of many is the only one read again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mlform.providers.base import (
    Diagnostic, FactError, FactKey, ProviderError, contains_unknown, error,
)

from . import checks
from .digests import DigestCache
from .sources import LocalContent, SourceError, read_local

__all__ = ["DatasetFacts", "SOURCE_INPUTS", "source_fact", "source_fact_keys", "fact_attrs",
           "fact_extra", "format_of",
           "read_local_dataset", "read_profile", "dataset_diagnostics", "readable"]

#: the attributes a dataset's facts depend on (and whether `checks` declares anything)
SOURCE_INPUTS = ("source", "format", "schema")


def source_fact(attrs: Mapping[str, Any], *extra: Any) -> FactKey | None:
    """The key of a dataset's facts (`extra`: what else a provider's read depends on,
    e.g. a size limit), or None while an input is only known after apply."""
    if contains_unknown([attrs.get(k) for k in SOURCE_INPUTS]) or contains_unknown(extra):
        return None
    schema = attrs.get("schema") or {}
    return FactKey("dataset", "source", (attrs.get("source"), attrs.get("format"),
                                         tuple(sorted(schema.items())),
                                         checks.needs_profile(attrs), *extra))


def fact_attrs(key: FactKey) -> dict[str, Any]:
    """What a `source_fact` key says about the read: ``source``, ``format``, ``schema`` and
    ``profile`` (whether the checks need a profile: a schema or a check is declared)."""
    source, fmt, schema, wanted = key.args[:4]
    return {"source": source, "format": fmt, "schema": dict(schema), "profile": wanted}


def fact_extra(key: FactKey) -> tuple[Any, ...]:
    """The `extra` values a provider put into a `source_fact` key."""
    return tuple(key.args[4:])


def source_fact_keys(attrs: Mapping[str, Any], *extra: Any) -> tuple[FactKey, ...]:
    """`source_fact` as the tuple a handler's `fact_keys` returns (empty while unknown)."""
    key = source_fact(attrs, *extra)
    return (key,) if key is not None else ()


@dataclass(frozen=True)
class DatasetFacts:
    """What a plan knows about a dataset's data."""

    content: LocalContent | None = None
    profile: checks.DataProfile | None = None
    digest: str = ""            # the content's digest (also for data not on this machine)
    size: int = 0
    error: str = ""             # the data cannot be found or read: why
    profile_error: str = ""     # the data is there, but the checks cannot read it: why
    too_big: str = ""           # the data is too big to fetch for checks: why


def format_of(attrs: Mapping[str, Any], path: Path) -> str:
    """The declared format, else the one the file's suffix says."""
    fmt = attrs.get("format")
    return fmt.lower() if isinstance(fmt, str) else checks.infer_format(path)


def read_profile(path: Path, digest: str, fmt: str, schema: Mapping[str, str],
                 digests: DigestCache, wanted: bool = True) -> checks.DataProfile:
    """The profile of data at `path` (cached by content, format and schema);
    CheckUnavailable when it cannot be read as `fmt`.  Without `wanted` (no schema, no
    check declared) only the rows are counted (`checks.count_rows`): no nulls, no types."""
    doc = digests.remember(checks.profile_key(digest, fmt, schema, rows_only=not wanted),
                           lambda: _read_profile(path, fmt, schema, digests, wanted).to_json())
    return checks.DataProfile.from_json(doc)


def _read_profile(path: Path, fmt: str, schema: Mapping[str, str], digests: DigestCache,
                  wanted: bool) -> checks.DataProfile:
    """A directory's profile is its files' profiles merged, each cached by the file's own
    digest: a directory with one changed file reads that file only."""
    def read(at: Path) -> checks.DataProfile:
        return checks.profile(at, fmt, schema) if wanted else checks.count_rows(at, fmt)
    if not path.is_dir() or fmt not in (*checks.TABULAR, "json"):
        return read(path)
    parts = []
    for file in checks.dir_files(path, fmt):
        key = checks.profile_key(digests.file(file).digest, fmt, schema, rows_only=not wanted)
        parts.append(checks.DataProfile.from_json(
            digests.remember(key, lambda file=file: read(file).to_json())))
    if wanted:
        return checks.merge_files(fmt, parts)
    return checks.DataProfile(fmt, sum(part.rows or 0 for part in parts))


def read_local_dataset(source: str, path: Path, attrs: Mapping[str, Any],
                       digests: DigestCache) -> DatasetFacts:
    """The facts of a local file or directory source (`attrs`: format, schema and
    `profile`, as `fact_attrs` gives them; without `profile`, what `needs_profile` says)."""
    try:
        content = read_local(source, path, digests)
    except SourceError as exc:
        return DatasetFacts(error=str(exc))
    fmt = format_of(attrs, content.path)
    wanted = attrs["profile"] if "profile" in attrs else checks.needs_profile(attrs)
    try:
        prof = read_profile(content.path, content.digest, fmt, attrs.get("schema") or {},
                            digests, wanted)
    except checks.CheckUnavailable as exc:
        return DatasetFacts(content, None, content.digest, content.size,
                            profile_error=str(exc))
    return DatasetFacts(content, prof, content.digest, content.size)


def dataset_diagnostics(address: str, attrs: Mapping[str, Any], facts: Any,
                        digest_name: str = "sha256") -> list[Diagnostic]:
    """What `validate` says about a dataset's facts: the source's problem, or the failed
    checks with the value found and the threshold."""
    if isinstance(facts, FactError):
        return [error(f"{address}: {facts.message}", address=address)]
    if facts.error:
        return [error(f"{address}: {facts.error}", address=address)]
    if not checks.needs_profile(attrs):
        return []
    if facts.too_big:
        return [error(f"{address}: cannot run the dataset checks: {facts.too_big}",
                      address=address,
                      hint="Raise settings.fetch_limit_mb, or remove schema and checks.")]
    if facts.profile is None:
        return [error(f"{address}: cannot run the dataset checks: {facts.profile_error}",
                      address=address)]
    detail = f"Checked {attrs['source']} ({digest_name} {facts.digest[:12]}…)."
    return checks.check_diagnostics(address, facts.profile, attrs, detail)


def readable(address: str, facts: Any) -> DatasetFacts:
    """The facts of data that could be read, or a ProviderError saying why not (raised by
    `plan` when it computes the dataset's attributes: validate already said it)."""
    if isinstance(facts, FactError):
        raise ProviderError(f"{address}: {facts.message}", address=address)
    if facts.error:
        raise ProviderError(f"{address}: {facts.error}", address=address)
    return facts
