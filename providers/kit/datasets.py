"""A dataset's facts: its content and row profile, read before planning, judged purely.

Every provider plans a dataset from the same two facts about its data: the content
(digest, size, files; `kit.sources`) and the profile the checks judge (rows, columns,
nulls, values of the wrong type; `kit.checks`).  `DatasetFacts` holds both (or why
they could not be read); `read_local_dataset` reads them for a file or directory on
this machine through the shared digest cache; `dataset_diagnostics` is what `validate`
says about them, in every provider's words.  `source_fact` is the key those facts are
read under: the same inputs make the same key on every provider; it says whether the
checks need a profile (`fact_attrs`): a dataset that declares no schema and no check
gets its digest, size and rows only (`checks.count_rows`), never a profile.

The same content is never profiled twice.  The cache keeps one entry per content
digest and format (`read_profile`): its rows, and once profiled its columns, nulls and
the verdict of every (column, type) a schema asked for so far.  A rows-only read is
answered by any entry of the content; a profile by an entry that judged the schema's
columns as the schema types them (a schema that adds a column or changes a type reads
the content again, and the entry then holds both).  A directory's profile is its files'
profiles merged, each cached by the file's digest, so one changed file of many is the
only one read again.  A file whose digest is not cached is hashed and profiled in one
read (`digests.HashingReader` under the profile's reader: sha256 runs on pyarrow's
reading thread while its other threads parse), except when a file of the same size was
read as the same format before (this file touched, or a copy of another): then it is
hashed first, and the profile of the same content is found by its digest, never
computed again.  A directory is listed once (`digests.tree_entries`: one scandir walk,
its path resolved once) for its content and its profile, and each file's digest looked
up once (`_listed_content`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mlform.providers.base import (
    Diagnostic, FactError, FactKey, ProviderError, contains_unknown, error,
)

from . import checks
from .digests import DigestCache, FileDigest, HashingReader, Listed, tree_digest, tree_entries
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
                 digests: DigestCache, wanted: bool = True,
                 files: Sequence[tuple[str, Path | None, int, str]] | None = None
                 ) -> checks.DataProfile:
    """The profile of data at `path` (cached by content and format, see the module);
    CheckUnavailable when it cannot be read as `fmt`.  Without `wanted` (no schema, no
    check declared) only the rows are counted (`checks.count_rows`): no nulls, no types.
    `files`: a directory's (relative path, path, size, sha256) as its content was read
    (`LocalContent.files`), so its files are neither listed nor looked up again."""
    try:
        size = path.stat().st_size if path.is_file() else None
    except OSError:
        size = None     # reading it says what is wrong
    return _cached(digests, digest, fmt, schema, wanted,
                   lambda: _read_profile(path, fmt, schema, digests, wanted, files), size)


def _read(path: Path, fmt: str, schema: Mapping[str, str], wanted: bool,
          stream: HashingReader | None = None) -> checks.DataProfile:
    if wanted:
        return checks.profile(path, fmt, schema, stream=stream)
    return checks.count_rows(path, fmt, stream=stream)


def _read_profile(path: Path, fmt: str, schema: Mapping[str, str], digests: DigestCache,
                  wanted: bool, files: Sequence[tuple[str, Path | None, int, str]] | None
                  ) -> checks.DataProfile:
    """A directory's profile is its files' profiles merged, each cached by the file's own
    digest: a directory with one changed file reads that file only."""
    if not path.is_dir() or fmt not in (*checks.TABULAR, "json"):
        return _read(path, fmt, schema, wanted)
    if files is None:
        listed = [(e.path, digests.listed(e)) for e in checks.dir_entries(path, fmt)]
        found = [(file, f.digest, f.size) for file, f in listed]
    else:
        found = _profiled(path, fmt, files)
    parts = []
    for file, digest, size in found:
        parts.append(_cached(digests, digest, fmt, schema, wanted,
                             lambda file=file: _read(file, fmt, schema, wanted), size))
    if wanted:
        return checks.merge_files(fmt, parts)
    return checks.DataProfile(fmt, sum(part.rows or 0 for part in parts))


def _profiled(root: Path, fmt: str, files: Sequence[tuple[str, Path | None, int, str]]
              ) -> list[tuple[Path, str, int]]:
    """(path, sha256, size) of the files of a directory's content that its profile
    reads, in `checks.dir_files` order."""
    suffixes = checks.suffixes(fmt)
    chosen = [(rel, path if path is not None else root / rel, digest, size)
              for rel, path, size, digest in files]
    chosen = [c for c in chosen if c[1].suffix.lower() in suffixes]
    chosen.sort(key=lambda c: c[0].split("/"))
    return [(path, digest, size) for _, path, digest, size in chosen]


# -- the profile cache: one entry per content and format ----------------------

def _content_key(digest: str, fmt: str) -> str:
    return "content:" + hashlib.sha256(repr((digest, fmt)).encode()).hexdigest()


def _size_key(size: int, fmt: str) -> str:
    """The key that says a file of this size was read as `fmt` (`_hash_and_read`)."""
    return f"content-size:{fmt}:{size}"


def _cached(digests: DigestCache, digest: str, fmt: str, schema: Mapping[str, str],
            wanted: bool, read: Callable[[], checks.DataProfile],
            size: int | None = None) -> checks.DataProfile:
    """The content's profile from its cache entry, else `read()` (then kept in it, and,
    for a file, its `size`)."""
    key = _content_key(digest, fmt)
    entry = digests.recall(key)
    found = _answer(entry, fmt, schema, wanted)
    if found is None:
        found = read()
        _keep(digests, key, _learn(entry, found, schema, wanted), size, fmt)
    return found


def _keep(digests: DigestCache, key: str, entry: dict, size: int | None, fmt: str) -> None:
    digests.keep(key, entry)
    if size is not None:
        digests.keep(_size_key(size, fmt), True)


def _answer(entry: Any, fmt: str, schema: Mapping[str, str],
            wanted: bool) -> checks.DataProfile | None:
    """What a cache entry says of the content read as `schema` says (`wanted`: a whole
    profile, else the rows), or None when it does not know.  A column's nulls and its
    verdict for one type depend on nothing else, so a profile read for one schema
    answers any schema whose (column, type) pairs it judged."""
    if not isinstance(entry, dict):
        return None
    if not wanted:
        return checks.DataProfile(fmt, entry["rows"])
    if not entry.get("profiled"):
        return None
    bad: dict[str, tuple[int, Any, int]] = {}
    for column, type_name in schema.items():
        if column not in entry["nulls"]:
            continue    # a column the content does not have: the schema check says so
        verdicts = entry["judged"].get(column, {})
        if type_name not in verdicts:
            return None
        if verdicts[type_name] is not None:
            count, first, row = verdicts[type_name]
            bad[column] = (count, checks.shown_value(first), row)
    return checks.DataProfile(fmt, entry["rows"], list(entry["columns"]),
                              dict(entry["nulls"]), bad)


def _learn(entry: Any, found: checks.DataProfile, schema: Mapping[str, str],
           wanted: bool) -> dict:
    """The cache entry after `found` was read (as `schema` says, when `wanted`)."""
    if not wanted:
        return {"rows": found.rows, "profiled": False}
    judged: dict[str, dict[str, Any]] = {}
    if isinstance(entry, dict) and entry.get("profiled"):
        judged = {column: dict(verdicts) for column, verdicts in entry["judged"].items()}
    for column, type_name in schema.items():
        if column in found.nulls:
            bad = found.bad.get(column)
            judged.setdefault(column, {})[type_name] = (
                None if bad is None else [bad[0], checks.shown_json(bad[1]), bad[2]])
    return {"rows": found.rows, "profiled": True, "columns": list(found.columns),
            "nulls": dict(found.nulls), "judged": judged}


# -- one read for the digest and the profile ---------------------------------

def _listing(path: Path, fmt: str) -> list[Listed] | None:
    """The files of a directory dataset whose files are profiled, listed once for its
    content and its profile; None for a file, another format, or a directory that
    cannot be listed (`read_local` then says why)."""
    if fmt not in (*checks.TABULAR, "json"):
        return None
    try:
        return tree_entries(path) if path.is_dir() else None
    except (OSError, ValueError):
        return None


def _hash_while_reading(path: Path, fmt: str, schema: Mapping[str, str],
                        digests: DigestCache, wanted: bool, listing: list[Listed] | None,
                        seen: dict[str, FileDigest]) -> checks.CheckUnavailable | None:
    """Before the content's digest is read: each file to profile whose digest is not
    cached is hashed by the read that profiles it (the digest and the profile are then
    both cached); the first file that cannot be profiled says why (`listing`: a
    directory's files, `_listing`; `seen`: gets the digests found, by key)."""
    if fmt not in (*checks.TABULAR, "json"):
        return None         # nothing to read beyond the digest
    try:
        if listing is not None:
            files = checks.dir_entries(path, fmt, listing)
        elif path.is_dir():
            return None     # it cannot be listed: reading the content says why
        else:
            files = [Listed(path.name, path, digests.key(path), os.stat(path))]
    except (OSError, ValueError):
        return None         # reading the content says what is wrong (a NUL byte...)
    for file in files:
        try:
            failed = _hash_and_read(file, fmt, schema, digests, wanted, seen)
        except (OSError, ValueError):
            return None
        if failed is not None:
            return failed
    return None


def _hash_and_read(file: Listed, fmt: str, schema: Mapping[str, str], digests: DigestCache,
                   wanted: bool, seen: dict[str, FileDigest]) -> checks.CheckUnavailable | None:
    st = file.stat
    known = digests.lookup(file.key, st)
    if known is not None:
        seen[file.key] = known
        return None         # its digest finds its profile
    if digests.recall(_size_key(st.st_size, fmt)) is not None:
        # content of this size was read before (this file touched, or a copy elsewhere):
        # hashed first, its digest may find its profile, and then it is not read again
        return None
    with open(file.path, "rb", buffering=0) as fh:
        reader = HashingReader(fh)
        try:
            found: checks.DataProfile | checks.CheckUnavailable = _read(
                file.path, fmt, schema, wanted, stream=reader)
        except checks.CheckUnavailable as exc:
            found = exc
        digest = reader.finish()
    digests.learn(file.path, st, digest, file.key)
    seen[file.key] = digest
    if isinstance(found, checks.CheckUnavailable):
        return found
    key = _content_key(digest.digest, fmt)
    _keep(digests, key, _learn(digests.recall(key), found, schema, wanted), st.st_size, fmt)
    return None


def read_local_dataset(source: str, path: Path, attrs: Mapping[str, Any],
                       digests: DigestCache) -> DatasetFacts:
    """The facts of a local file or directory source (`attrs`: format, schema and
    `profile`, as `fact_attrs` gives them; without `profile`, what `needs_profile` says)."""
    fmt = format_of(attrs, path)
    schema = attrs.get("schema") or {}
    wanted = attrs["profile"] if "profile" in attrs else checks.needs_profile(attrs)
    listing, seen = _listing(path, fmt), {}
    failed = _hash_while_reading(path, fmt, schema, digests, wanted, listing, seen)
    try:
        content = (_listed_content(path, listing, seen, digests)
                   or read_local(source, path, digests))
    except SourceError as exc:
        return DatasetFacts(error=str(exc))
    try:
        if failed is not None:
            raise failed
        prof = read_profile(content.path, content.digest, fmt, schema, digests, wanted,
                            content.files if content.is_dir else None)
    except checks.CheckUnavailable as exc:
        return DatasetFacts(content, None, content.digest, content.size,
                            profile_error=str(exc))
    return DatasetFacts(content, prof, content.digest, content.size)


def _listed_content(path: Path, listing: list[Listed] | None, seen: Mapping[str, FileDigest],
                    digests: DigestCache) -> LocalContent | None:
    """A listed directory's content as `read_local` makes it (`DigestCache.tree`), from
    the same listing and the digests `seen` while profiling, so each file is looked up
    once; None when there is no listing or a file cannot be read: then `read_local` reads
    it again and says what is wrong, in its words."""
    if listing is None:
        return None
    try:
        found = [(e.rel, e.path, seen.get(e.key) or digests.listed(e)) for e in listing]
    except OSError:
        return None
    return LocalContent(path, path.name or "data",
                        tree_digest((rel, f.digest) for rel, _, f in found),
                        sum(f.size for _, _, f in found), True,
                        tuple((rel, p, f.size, f.digest) for rel, p, f in found))


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
