"""Data quality checks of datasets: one pass over the data, then pure judgements.

Reading and checking are two halves, as pyinfra separates facts from their
parsers: `profile(paths, fmt, schema)` reads csv, jsonl and parquet once (pyarrow's
multi-threaded readers, `kit.arrow_tables`; the csv and json modules' row reader for
files pyarrow reads differently, for small files, and without pyarrow: parquet then
says it needs pyarrow) and returns a small `DataProfile` (rows, columns, null counts,
values that do not parse as their declared type; the same profile whichever reader
made it); `run_checks(address, profile, checks, schema)` turns that profile
into findings with the value found and the threshold, e.g.
``dataset.transactions: 3 rows, fewer than min_rows = 100``.  `count_rows` is what a
dataset that declares no schema and no check gets: its rows, nothing else.  Both take
the file's bytes from `stream` when given (a `digests.HashingReader`: the read that
profiles a file also makes its digest).

Null means an empty cell, a missing cell (a short csv row, an absent jsonl
key) or a JSON null.  Rows of other formats: the length of a top-level JSON
array (1 for any other JSON document), the number of files of a directory.
"""

from __future__ import annotations

import csv
import io
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping, TextIO

from mlform.providers.base import Diagnostic, error

from .digests import Listed, tree_entries

__all__ = ["DataProfile", "Finding", "CheckUnavailable", "TABULAR", "profile", "run_checks",
           "parses_as", "infer_format", "needs_profile", "check_diagnostics",
           "count_rows", "dir_entries", "dir_files", "merge_files", "suffixes"]

#: Formats whose rows and columns the checks understand.
TABULAR = ("csv", "jsonl", "parquet")

_SUFFIX_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
                   ".pq": "parquet", ".json": "json"}


class CheckUnavailable(Exception):
    """The file cannot be profiled here (a missing reader library, an unreadable file)."""


@dataclass
class DataProfile:
    """What the checks need to know about a dataset, gathered in one pass."""

    fmt: str
    rows: int | None                                   # None: the format has no rows
    columns: list[str] = field(default_factory=list)   # in order of first appearance
    nulls: dict[str, int] = field(default_factory=dict)
    #: column -> (values that do not parse as the declared type, first such value, its row)
    bad: dict[str, tuple[int, Any, int]] = field(default_factory=dict)

    def merge(self, other: "DataProfile") -> "DataProfile":
        """Several files of one directory dataset count as one table."""
        rows = None if self.rows is None or other.rows is None else self.rows + other.rows
        merged = DataProfile(self.fmt, rows, list(self.columns), dict(self.nulls), dict(self.bad))
        for column in other.columns:
            if column not in merged.nulls:
                merged.columns.append(column)
                # a column absent from earlier files was null in all their rows
                merged.nulls[column] = self.rows or 0
            merged.nulls[column] += other.nulls.get(column, 0)
        for column in self.columns:
            if column not in other.columns:
                merged.nulls[column] += other.rows or 0
        for column, (count, first, row) in other.bad.items():
            before = merged.bad.get(column)
            merged.bad[column] = ((before[0] + count, before[1], before[2]) if before
                                  else (count, first, row + (self.rows or 0)))
        return merged

    def to_json(self) -> dict:
        return {"fmt": self.fmt, "rows": self.rows, "columns": self.columns,
                "nulls": self.nulls,
                "bad": {k: [count, shown_json(first), row]
                        for k, (count, first, row) in self.bad.items()}}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "DataProfile":
        return cls(doc["fmt"], doc["rows"], list(doc["columns"]), dict(doc["nulls"]),
                   {k: (count, shown_value(first), row)
                    for k, (count, first, row) in doc["bad"].items()})


class Shown(str):
    """A value that JSON cannot hold (a parquet date, Decimal, bytes), kept as the text
    a finding shows for it: its `repr`."""

    def __repr__(self) -> str:
        return str(self)


def shown_json(value: Any) -> Any:
    """`value` as JSON holds it (the profile cache): itself, or ``{"__repr__": text}``."""
    if isinstance(value, Shown):
        return {"__repr__": str(value)}
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return {"__repr__": repr(value)}
    return value


def shown_value(doc: Any) -> Any:
    """The value `shown_json` kept (a `Shown` for what JSON cannot hold)."""
    if isinstance(doc, dict) and set(doc) == {"__repr__"}:
        return Shown(doc["__repr__"])
    return doc


@dataclass(frozen=True)
class Finding:
    """One failed check: which check, and the sentence that says what was found."""

    check: str
    message: str


def infer_format(path: Path) -> str:
    """The format a source without `format` most likely has."""
    if path.is_dir():
        return "dir"
    return _SUFFIX_FORMATS.get(path.suffix.lower(), "other")


# -- type parsing ------------------------------------------------------------

_INT = re.compile(r"[+-]?\d+")
_BOOL_WORDS = {"true", "false", "t", "f", "yes", "no", "y", "n", "1", "0"}


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, str) and bool(_INT.fullmatch(value.strip()))


def _is_float(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if not isinstance(value, str):
        return False
    try:
        float(value.strip())
    except ValueError:
        return False
    return True


def _is_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return value in (0, 1)
    return isinstance(value, str) and value.strip().lower() in _BOOL_WORDS


def _is_datetime(value: Any) -> bool:
    if isinstance(value, datetime):
        return True
    if not isinstance(value, str):
        return False
    text = value.strip()
    if text.endswith(("Z", "z")):  # fromisoformat before 3.11 refuses the UTC suffix
        text = text[:-1] + "+00:00"
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


_PARSERS: dict[str, Callable[[Any], bool]] = {
    "int": _is_int,
    "float": _is_float,
    "str": lambda value: True,   # every non-null value can be read as text
    "bool": _is_bool,
    "datetime": _is_datetime,
}


def parses_as(value: Any, type_name: str) -> bool:
    """True when a non-null cell can be read as the declared column type."""
    return _PARSERS.get(type_name, lambda v: False)(value)


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


# -- readers: one per tabular format, each yields (columns, row) -------------

Rows = Iterator[tuple[list[str], Mapping[str, Any]]]


@contextmanager
def _text(path: Path, stream: BinaryIO | None, encoding: str,
          newline: str | None) -> Iterator[TextIO]:
    """The file as text: opened, or read from `stream` (which stays open for its owner)."""
    if stream is None:
        with open(path, newline=newline, encoding=encoding) as fh:
            yield fh
        return
    fh = io.TextIOWrapper(io.BufferedReader(stream), encoding=encoding, newline=newline)
    try:
        yield fh
    finally:
        fh.detach().detach()


def _unread(stream: BinaryIO | None) -> BinaryIO | None:
    """`stream` while nothing was read from it (else the next reader opens the file)."""
    return stream if stream is not None and stream.tell() == 0 else None


def _csv_rows(path: Path, stream: BinaryIO | None = None) -> Rows:
    with _text(path, stream, "utf-8-sig", "") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        columns = [name.strip() for name in header]
        for cells in reader:
            if not cells:  # a blank line is not a row
                continue
            # a short row leaves its last cells missing (None), which counts as null
            yield columns, dict(zip(columns, cells + [None] * (len(columns) - len(cells))))


def _jsonl_rows(path: Path, stream: BinaryIO | None = None) -> Rows:
    columns: list[str] = []
    with _text(path, stream, "utf-8", None) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise CheckUnavailable(f"{path.name} line {number} is not JSON: {exc}") from exc
            if not isinstance(row, dict):
                raise CheckUnavailable(f"{path.name} line {number} is not a JSON object")
            columns.extend(key for key in row if key not in columns)
            yield columns, row


def _parquet_rows(path: Path, stream: BinaryIO | None = None) -> Rows:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq  # optional: only parquet datasets need it
    except ImportError as exc:
        raise CheckUnavailable("reading parquet needs pyarrow, which is not installed "
                               "(pip install pyarrow), or use format = \"other\" to skip "
                               "checks") from exc
    # parquet is read from its footer backwards: from a stream, the whole file in memory
    try:
        table = pq.read_table(pa.BufferReader(stream.read()) if stream is not None else path)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise CheckUnavailable(f"cannot read {path.name} as parquet: {exc}") from exc
    columns = list(table.column_names)
    for row in table.to_pylist():
        yield columns, row


_READERS: dict[str, Callable[[Path, BinaryIO | None], Rows]] = {
    "csv": _csv_rows,
    "jsonl": _jsonl_rows,
    "parquet": _parquet_rows,
}


#: csv and jsonl files from this size on are read by pyarrow; smaller ones by the row
#: reader, which answers the same and, without pyarrow's set-up, is faster for them
#: (0.1 ms against 1.3 ms for a csv file of ten rows)
ARROW_FROM_BYTES = 256 * 1024


def _table_profile(path: Path, fmt: str, schema: Mapping[str, str],
                   stream: BinaryIO | None) -> DataProfile:
    if fmt == "parquet" or _size(path) >= ARROW_FROM_BYTES:
        from . import arrow_tables   # pyarrow's readers; None where they read differently
        read = {"csv": arrow_tables.csv_profile, "jsonl": arrow_tables.jsonl_profile,
                "parquet": arrow_tables.parquet_profile}[fmt]
        fast = read(path, schema, parses_as, stream)
        if fast is not None:
            columns, rows, nulls, bad = fast
            return DataProfile(fmt, rows, columns, nulls, bad)
    return _row_profile(path, fmt, schema, _unread(stream))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _row_profile(path: Path, fmt: str, schema: Mapping[str, str],
                 stream: BinaryIO | None = None) -> DataProfile:
    """The row-by-row reader: parquet, small files, and csv and jsonl files pyarrow reads
    differently."""
    result = DataProfile(fmt, 0)
    for columns, row in _READERS[fmt](path, stream):
        result.rows += 1
        for column in columns:
            if column not in result.nulls:
                # a jsonl key first seen now was missing (null) in every row before
                result.columns.append(column)
                result.nulls[column] = result.rows - 1
            value = row.get(column)
            if _is_null(value):
                result.nulls[column] += 1
                continue
            wanted = schema.get(column)
            if wanted is not None and not parses_as(value, wanted):
                count, first, at = result.bad.get(column, (0, value, result.rows))
                result.bad[column] = (count + 1, first, at)
    if fmt == "csv" and not result.columns:
        result.columns = _csv_header(path)   # a header-only file still has columns
    return result


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return [name.strip() for name in next(csv.reader(fh), [])]


def _json_profile(path: Path, fmt: str, schema: Mapping[str, str],
                  stream: BinaryIO | None) -> DataProfile:
    try:
        data = stream.read() if stream is not None else path.read_bytes()
        doc = json.loads(data.decode("utf-8"))
    except OSError as exc:
        raise CheckUnavailable(f"cannot read {path.name} as {fmt}: {exc}") from exc
    except ValueError as exc:      # UnicodeDecodeError too
        raise CheckUnavailable(f"{path.name} is not JSON: {exc}") from exc
    return DataProfile(fmt, len(doc) if isinstance(doc, list) else 1)


def _file_profile(path: Path, fmt: str, schema: Mapping[str, str],
                  stream: BinaryIO | None = None) -> DataProfile:
    if fmt in _READERS:
        try:
            return _table_profile(path, fmt, schema, stream)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise CheckUnavailable(f"cannot read {path.name} as {fmt}: {exc}") from exc
    if fmt == "json":
        return _json_profile(path, fmt, schema, stream)
    return DataProfile(fmt, None)


def suffixes(fmt: str) -> tuple[str, ...]:
    """The file suffixes (lower case) of a format's files in a directory dataset."""
    return tuple(s for s, f in _SUFFIX_FORMATS.items() if f == fmt)


def dir_entries(root: Path, fmt: str, listing: list[Listed] | None = None) -> list[Listed]:
    """`dir_files` with each file's key and stat in the digest cache (`listing`: the
    directory's `tree_entries`, when at hand)."""
    files = listing if listing is not None else tree_entries(root)
    if fmt in TABULAR or fmt == "json":
        wanted = suffixes(fmt)
        files = [e for e in files if e.path.suffix.lower() in wanted]
    # in the order of the files' paths (a directory's parts before its next sibling)
    return sorted(files, key=lambda e: e.rel.split("/"))


def dir_files(root: Path, fmt: str) -> list[Path]:
    """The files of a directory dataset that its profile reads, in the order it reads them."""
    return [e.path for e in dir_entries(root, fmt)]


def profile(path: Path, fmt: str, schema: Mapping[str, str] | None = None,
            stream: BinaryIO | None = None) -> DataProfile:
    """Read a file (or every file of its format in a directory) once; a file's bytes from
    `stream` when given (only what was read from it counts as read: its owner reads the
    rest, e.g. `HashingReader.finish`)."""
    schema = dict(schema or {})
    if not path.is_dir():
        return _file_profile(path, fmt, schema, stream)
    files = dir_files(path, fmt)
    if fmt not in TABULAR and fmt != "json":
        return DataProfile(fmt, len(files))   # a directory of opaque files: rows = files
    return merge_files(fmt, (_file_profile(file, fmt, schema) for file in files))


def merge_files(fmt: str, parts: Iterable[DataProfile]) -> DataProfile:
    """The profile of a directory from its files' profiles (in `dir_files` order)."""
    result: DataProfile | None = None
    for part in parts:
        result = part if result is None else result.merge(part)
    return result or DataProfile(fmt, 0)


def _text_rows_only(fmt: str) -> Callable[[Path, BinaryIO | None], int]:
    """The row count of a csv or jsonl file: pyarrow's reader from ARROW_FROM_BYTES on
    (None where it reads differently), else the row reader's."""
    def count(path: Path, stream: BinaryIO | None) -> int:
        if _size(path) >= ARROW_FROM_BYTES:
            from . import arrow_tables
            rows = {"csv": arrow_tables.csv_rows, "jsonl": arrow_tables.jsonl_rows}[fmt](
                path, stream)
            if rows is not None:
                return rows
        return sum(1 for _ in _READERS[fmt](path, _unread(stream)))
    return count


def _parquet_rows_only(path: Path, stream: BinaryIO | None) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return sum(1 for _ in _parquet_rows(path))   # says that it needs pyarrow
    # from the footer (the stream's owner reads the rest for the digest)
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise CheckUnavailable(f"cannot read {path.name} as parquet: {exc}") from exc


_ROW_COUNTERS: dict[str, Callable[[Path, BinaryIO | None], int]] = {
    "csv": _text_rows_only("csv"),
    "jsonl": _text_rows_only("jsonl"),
    "parquet": _parquet_rows_only,
}


def _file_rows(path: Path, fmt: str, stream: BinaryIO | None = None) -> DataProfile:
    if fmt in _ROW_COUNTERS:
        try:
            return DataProfile(fmt, _ROW_COUNTERS[fmt](path, stream))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise CheckUnavailable(f"cannot read {path.name} as {fmt}: {exc}") from exc
    return _file_profile(path, fmt, {}, stream)


def count_rows(path: Path, fmt: str, stream: BinaryIO | None = None) -> DataProfile:
    """The rows of a dataset that declares no schema and no check, and nothing else:
    no columns, nulls or types (the `rows` attribute needs them; the checks do not run).
    The same rows as `profile` gives (`stream`: as for `profile`)."""
    if not path.is_dir():
        return _file_rows(path, fmt, stream)
    files = dir_files(path, fmt)
    if fmt not in TABULAR and fmt != "json":
        return DataProfile(fmt, len(files))
    return DataProfile(fmt, sum(_file_rows(file, fmt).rows or 0 for file in files))


# -- checks: pure functions of a profile -------------------------------------

def _number(value: float) -> str:
    return f"{value:g}"


def _percent(fraction: float) -> str:
    text = f"{fraction * 100:.1f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _check_min_rows(address: str, prof: DataProfile, threshold: Any) -> Iterable[Finding]:
    if prof.rows is None:
        yield Finding("min_rows", f"{address}: min_rows needs rows, but format {prof.fmt} has none "
                                  f"(use csv, jsonl, parquet, json or a directory)")
    elif prof.rows < threshold:
        noun = "row" if prof.rows == 1 else "rows"
        yield Finding("min_rows", f"{address}: {prof.rows} {noun}, fewer than min_rows = {threshold}")


def _check_max_null_fraction(address: str, prof: DataProfile, threshold: Any) -> Iterable[Finding]:
    if prof.fmt not in TABULAR:
        yield Finding("max_null_fraction", f"{address}: max_null_fraction needs columns, but "
                                           f"format {prof.fmt} has none (use csv, jsonl or parquet)")
        return
    if not prof.rows:
        return
    for column in prof.columns:
        nulls = prof.nulls.get(column, 0)
        fraction = nulls / prof.rows
        if fraction > threshold:
            yield Finding("max_null_fraction",
                          f"{address}: column {column} is {_percent(fraction)} null "
                          f"({nulls} of {prof.rows} rows), more than max_null_fraction = "
                          f"{_number(threshold)}")


def _check_schema(address: str, prof: DataProfile, schema: Mapping[str, str]) -> Iterable[Finding]:
    if prof.fmt not in TABULAR:
        yield Finding("schema", f"{address}: schema needs columns, but format {prof.fmt} has none "
                                f"(use csv, jsonl or parquet)")
        return
    found = ", ".join(prof.columns) or "none"
    for column, type_name in schema.items():
        if column not in prof.columns:
            yield Finding("schema", f"{address}: schema column {column} ({type_name}) is missing; "
                                    f"columns found: {found}")
            continue
        bad = prof.bad.get(column)
        if bad is not None:
            count, first, row = bad
            noun = "value is" if count == 1 else "values are"
            yield Finding("schema", f"{address}: column {column}: {count} {noun} not {type_name} "
                                    f"(first: {first!r} in row {row})")


#: check name (as written in `checks { }`) -> the function that judges it
CHECKS: dict[str, Callable[[str, DataProfile, Any], Iterable[Finding]]] = {
    "min_rows": _check_min_rows,
    "max_null_fraction": _check_max_null_fraction,
}


def run_checks(address: str, prof: DataProfile, checks: Mapping[str, Any] | None,
               schema: Mapping[str, str] | None) -> list[Finding]:
    """Every failed check, in a stable order: schema first, then `checks` by name."""
    findings: list[Finding] = []
    if schema:
        findings.extend(_check_schema(address, prof, schema))
    for name, threshold in sorted((checks or {}).items()):
        judge = CHECKS.get(name)
        if judge is not None and threshold is not None:
            findings.extend(judge(address, prof, threshold))
    return findings


# -- what providers share around the checks ---------------------------------

def needs_profile(attrs: Mapping[str, Any]) -> bool:
    """Whether a dataset declares anything the checks judge (a schema, a check); checks
    not known yet count as declared."""
    found = attrs.get("checks")
    if found is not None and not isinstance(found, Mapping):
        return True
    declared = [v for v in (found or {}).values() if v is not None]
    return bool(attrs.get("schema")) or bool(declared)


def check_diagnostics(address: str, prof: DataProfile, attrs: Mapping[str, Any],
                      detail: str = "") -> list[Diagnostic]:
    """The failed checks of a dataset as diagnostics (the value found and the threshold)."""
    return [error(f.message, detail, address=address)
            for f in run_checks(address, prof, attrs.get("checks"), attrs.get("schema"))]
