"""The vectorized csv, jsonl and parquet profile readers: pyarrow's multi-threaded readers.

`kit.checks` asks `csv_profile`, `jsonl_profile` and `parquet_profile` first and falls
back to its row-by-row reader when they answer None.  The answers are the row reader's,
exactly (`tests/kit/test_arrow_tables.py` compares both on random files, also with the
thresholds below set so that small files take the paths big ones take).  Each reads
from `stream` when given (a `digests.HashingReader`, so the same read also makes the
file's digest), else from the path.

csv is read with every column as text (no value converted; an empty cell, quoted or
not, is null), so the kit's parse rules judge the same strings the `csv` module would
give.  The file is streamed (`_fold_csv`): parsed in small blocks, about 16 MiB of them
judged at a time and folded into the file's profile (rows, nulls, the first wrong value
and its row, counted from the file's start), so the memory held does not grow with the
file.  A file without a quote is parsed in blocks side by side; one with a quote in its
first 16 MiB with quoted line breaks allowed (pyarrow then finds the rows in one thread);
one whose first quote comes later is parsed again that way (`_Watched`).  Each part's
columns are judged in a few whole-column passes (`_string_column`):

- blank (null to the kit): no cell starts with a byte below ``!`` or a non-ASCII space,
  or the column is judged cell by cell;
- `int` and `float`: pyarrow's own cast takes every cell (and, for `int`, the float cast
  does too, which refuses pyarrow's ``0x1F``; for `float`, no cell became NaN, which
  refuses Python's ``nan(...)``);
- `bool` and `datetime`: `parses_as` itself over the column's distinct values, then a
  membership test; a `datetime` column of many distinct values: pyarrow's ISO 8601
  cast takes every cell, within the years 1-9999 (it takes year 0, Python does not);
- anything else, cell by cell (`_exact_column`): vectorized regular expressions of what
  `parses_as` accepts for ASCII text, `parses_as` itself for non-ASCII cells, so Unicode
  digits and spaces mean what they mean there.

What pyarrow reads differently from the `csv` module answers None (the row reader takes
over): an empty file, ragged rows, a header pyarrow names differently (duplicates,
surrounding spaces), bytes that are not UTF-8.

jsonl is read by `pyarrow.json`: numbers, booleans and strings keep their JSON types, as
`json.loads` gives them; a JSON null and an absent key are null; strings are judged as
csv cells are.  It answers None where pyarrow reads differently from `json.loads` line
by line: a byte order mark, a line that is not exactly one object (two on a line, one
over several lines, a top-level null: checked on the file's lines, read by pyarrow's
csv reader as one text column, before pyarrow.json reads the file), a value pyarrow
would show differently from Python (a date string pyarrow took for a timestamp, an int
widened to float, a nested object) in a column whose declared type makes that value
wrong and so quoted, and whatever pyarrow refuses (mixed types in a column, duplicate
keys, invalid surrogates, numbers out of range).  The file is parsed as one block (see
`_read_jsonl`): in one thread.

parquet is read by `pyarrow.parquet`, its columns side by side, and judged by their
types as the row reader judges the Python values pyarrow gives (`_typed_column`).

pyarrow is optional: without it every function here answers None.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

from .digests import ReadStream

__all__ = ["csv_profile", "csv_rows", "jsonl_profile", "jsonl_rows", "parquet_profile"]

#: exactly the characters `str.strip()` removes, as ASCII (the rest of `str.isspace`
#: is non-ASCII, and non-ASCII cells are judged in Python)
_WS = r"[\t\n\x0b\x0c\r\x1c-\x1f ]"
_D = r"[0-9](?:_?[0-9])*"        # float()'s digit part: underscores between digits
_ASCII_RULES = {
    "blank": rf"^{_WS}*$",
    "int": rf"^{_WS}*[+-]?[0-9]+{_WS}*$",
    "float": (rf"^{_WS}*[+-]?(?:(?i:inf|infinity|nan)|(?:{_D}(?:\.(?:{_D})?)?|\.{_D})"
              rf"(?:[eE][+-]?{_D})?){_WS}*$"),
    "bool": rf"^{_WS}*(?i:true|false|t|f|yes|no|y|n|1|0){_WS}*$",
}

#: pyarrow's csv block: a file is parsed in blocks of this size, side by side.  Small:
#: its streaming reader reads up to 32 blocks ahead of the parsing (so at most 32 MiB of
#: the file wait in memory), and parses 1 MiB blocks faster than 16 MiB ones (0.53 s
#: against 1.07 s CPU for 200 MB)
_BLOCK = 1 << 20
#: the first bytes of a csv file looked at for a quote (`_Watched`)
_HEAD = 1 << 24
#: the columns of this many bytes of parsed blocks are judged together: a few passes
#: per column each time, so the memory held is bounded by it, not by the file's size
#: (a 1 GB file: 280 MB peak with 16 MiB, 2.2 GB read whole; no more CPU than whole)
_GROUP = 1 << 24
#: rows from which a file's columns are judged on threads (below, starting them costs more)
_THREADS_FROM = 100_000
#: a declared column is judged per distinct value when a sample of it has at most this
#: many (judging one value in Python costs about what a vectorized pass over 50 rows does)
_FEW_DISTINCT = 64
_SAMPLE = 10_000
#: `_per_value` judges a column of up to this many distinct values, one `parses_as` call
#: each (1-2 µs: 50,000 of them cost what pyarrow's timestamp cast of 4 million cells does)
_MANY_DISTINCT = 50_000
#: the types judged per distinct value (datetime always: it has no vectorized rule)
_PER_VALUE = ("int", "float", "bool", "datetime")
#: pyarrow.json's largest block: a larger jsonl file is read by the row reader
_JSON_MAX = (1 << 31) - 1
_BOM = b"\xef\xbb\xbf"

#: the characters `str.isspace` takes beyond ASCII (a test checks the list against it)
_SPACE = "\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#: microseconds since 1970 of 0001-01-02 and 9999-12-30: `_timestamps` keeps clear of
#: the ends of `datetime`'s years, where an offset may move a time out of them
_EARLIEST_US = -62135510400 * 10**6
_LATEST_US = 253402128000 * 10**6

#: the verdict of a column that only the row reader can give exactly
_DECLINE = object()

Judged = tuple[int, tuple[int, Any, int] | None]


def _pyarrow() -> Any:
    try:
        import pyarrow  # noqa: F401  (optional: the row reader works without it)
        import pyarrow.compute  # noqa: F401
        import pyarrow.csv  # noqa: F401
        import pyarrow.json  # noqa: F401
    except ImportError:
        return None
    return pyarrow


# -- csv ----------------------------------------------------------------------

def _raw_header(path: Path) -> list[str] | None:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh), None)


class _Watched(ReadStream):
    """A binary stream whose first bytes are read ahead, to see whether the file quotes
    anything (`quoted_head`); whether a later block has a quote is `quoted_later`.

    pyarrow's csv reader splits a file into blocks at line breaks to parse them on
    threads; with a quoted value that may hold a line break (``newlines_in_values``) it
    must find the breaks outside quotes first, in one thread: three times slower (0.43 s
    against 1.3 s for 200 MB).  A file without a quote cannot hold a line break in a
    value, so it is parsed the fast way; one whose first quote comes after the bytes
    read ahead is parsed again the slow way (`_fold_csv`)."""

    def __init__(self, raw: BinaryIO, head: int) -> None:
        super().__init__()
        self._raw = raw
        self._head = raw.read(head) or b""
        self._at = 0        # what of the head was read (pyarrow reads it block by block)
        self.quoted_head = b'"' in self._head
        self.quoted_later = False

    def read(self, size: int = -1) -> bytes:
        if self._at < len(self._head):
            size = len(self._head) if size is None or size < 0 else size
            chunk = self._head[self._at:self._at + size]
            self._at += len(chunk)
            if self._at == len(self._head):
                self._head = b""     # not held while the rest is read
                self._at = 0
            return chunk
        chunk = self._raw.read(size if size is not None and size >= 0 else -1) or b""
        if not self.quoted_later and b'"' in chunk:
            self.quoted_later = True
        return chunk


def _fold_csv(path: Path, start: Callable[[list[str]], Callable[[Any], bool]],
              first_only: bool = False, stream: BinaryIO | None = None) -> list[str] | None:
    """Read a csv file in tables of text columns (an empty cell is null), each given to
    the fold `start(header)` makes, in order (it answers False to decline: the row reader
    then reads the file); the header, or None where pyarrow would read the file
    differently from the `csv` module or the fold declined (`first_only`: convert the
    first column only).

    pyarrow's streaming reader parses blocks of `_BLOCK` bytes (side by side, unless a
    value may hold a line break); about `_GROUP` bytes of them make one table to fold,
    so the memory held is bounded whatever the file's size.  A file whose first quote
    comes after its first `_HEAD` bytes is folded again from its start, read with quoted
    line breaks allowed (a fresh `start`)."""
    pa = _pyarrow()
    if pa is None:
        return None
    try:
        header = _raw_header(path)      # the first line only: a small read of its own
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if not header:
        return None
    if len(set(header)) != len(header) or any(name != name.strip() for name in header):
        return None          # duplicate names, or names the csv reader strips
    only = header[:1] if first_only else header

    def fold(source: Any, quoted: bool) -> bool:
        reader = pa.csv.open_csv(
            source,
            read_options=pa.csv.ReadOptions(use_threads=True, block_size=_BLOCK),
            parse_options=pa.csv.ParseOptions(newlines_in_values=quoted),
            convert_options=pa.csv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                include_columns=only,
                # an empty cell, quoted or not, is null to the kit as to pyarrow
                null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True,
            ),
        )
        add = start(list(header))
        group: list[Any] = []
        held = 0
        with contextlib.closing(reader):
            for batch in reader:
                if batch.num_rows:
                    group.append(batch)
                    held += batch.nbytes
                if held >= _GROUP:
                    if not add(pa.Table.from_batches(group)):
                        return False
                    group, held = [], 0
        return not group or add(pa.Table.from_batches(group))
    refused = (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError)
    try:
        with contextlib.ExitStack() as stack:
            raw = stream if stream is not None else stack.enter_context(
                open(path, "rb", buffering=0))
            watched = _Watched(raw, _HEAD)
            try:
                folded = fold(watched, watched.quoted_head)
                again = watched.quoted_later   # a quote after the first bytes
            except refused:
                if watched.quoted_head:
                    return None
                again = True      # perhaps a quoted line break across blocks: again
        if again:
            folded = fold(path, True)
    except refused:
        return None          # ragged rows, bytes that are not UTF-8, ...
    return header if folded else None


def csv_rows(path: Path, stream: BinaryIO | None = None) -> int | None:
    """The data rows of a csv file (one column converted), or None (the row reader counts)."""
    rows = [0]

    def start(header: list[str]) -> Callable[[Any], bool]:
        rows[0] = 0

        def add(table: Any) -> bool:
            rows[0] += table.num_rows
            return True
        return add
    found = _fold_csv(path, start, first_only=True, stream=stream)
    return rows[0] if found is not None else None


class _Profile:
    """A csv profile folded table by table (`_fold_csv`): the rows so far, each column's
    nulls and its first wrong value, whose row is counted from the file's first row (as
    `DataProfile.merge` counts a directory's files)."""

    def __init__(self, header: list[str], schema: Mapping[str, str],
                 judge: Callable[[Any, str | None], Any], pool: ThreadPoolExecutor) -> None:
        self.columns, self.rows = header, 0
        self.nulls = {name: 0 for name in header}
        self.bad: dict[str, tuple[int, Any, int]] = {}
        self._schema, self._judge, self._pool = schema, judge, pool

    def add(self, table: Any) -> bool:
        found = _judge_columns(table, self._schema, self._judge, self._pool)
        if found is None:
            return False
        nulls, bad = found
        for name, count in nulls.items():
            self.nulls[name] += count
        for name, (count, first, row) in bad.items():
            before = self.bad.get(name)
            self.bad[name] = ((before[0] + count, before[1], before[2]) if before
                              else (count, first, self.rows + row))
        self.rows += table.num_rows
        return True


def csv_profile(path: Path, schema: Mapping[str, str], parses_as: Callable[[Any, str], bool],
                stream: BinaryIO | None = None
                ) -> tuple[list[str], int, dict[str, int], dict[str, tuple[int, Any, int]]] | None:
    """(columns, rows, nulls, bad) of a csv file, or None where the row reader must answer."""
    folded: list[_Profile] = []
    # each part of the file asks again about the values it has: each is judged once
    known: dict[tuple[str, str], bool] = {}

    def parses_once(value: str, wanted: str) -> bool:
        found = known.get((value, wanted))
        if found is None:
            found = parses_as(value, wanted)
            if len(known) < _MANY_DISTINCT:     # bounded: a column of distinct values
                known[value, wanted] = found
        return found

    def judge(column: Any, wanted: str | None) -> Any:
        return _string_column(column, wanted, parses_once)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        def start(header: list[str]) -> Callable[[Any], bool]:
            folded[:] = [_Profile(header, schema, judge, pool)]
            return folded[0].add
        header = _fold_csv(path, start, stream=stream)
    if header is None:
        return None
    found = folded[0]
    if found.rows == 0:
        return list(header), 0, {}, {}   # a header only: columns, and no counts (as the row reader)
    return list(header), found.rows, found.nulls, found.bad


def _judge_table(table: Any, schema: Mapping[str, str],
                 judge: Callable[[Any, str | None], Any]
                 ) -> tuple[list[str], int, dict[str, int], dict[str, tuple[int, Any, int]]] | None:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        found = _judge_columns(table, schema, judge, pool)
    if found is None:
        return None
    nulls, bad = found
    return list(table.column_names), table.num_rows, nulls, bad


def _judge_columns(table: Any, schema: Mapping[str, str],
                   judge: Callable[[Any, str | None], Any], pool: ThreadPoolExecutor
                   ) -> tuple[dict[str, int], dict[str, tuple[int, Any, int]]] | None:
    """(nulls, bad) of each column of a table or record batch (bad rows counted from its
    first row), or None when a column only the row reader can judge."""
    import pyarrow as pa
    names = list(table.column_names)
    def one(name: str) -> Any:
        try:
            return judge(table.column(name), schema.get(name))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return _DECLINE      # a kernel pyarrow lacks for this type: the row reader
    if table.num_rows < _THREADS_FROM or len(names) <= 1:
        found = [one(name) for name in names]
    else:   # pyarrow's kernels release the GIL: the columns are judged side by side
        found = list(pool.map(one, names))
    nulls: dict[str, int] = {}
    bad: dict[str, tuple[int, Any, int]] = {}
    for name, verdict in zip(names, found):
        if verdict is _DECLINE:
            return None
        nulls[name], found_bad = verdict
        if found_bad is not None:
            bad[name] = found_bad
    return nulls, bad


def _string_column(column: Any, wanted: str | None, parses_as: Callable[[Any, str], bool]
                   ) -> Judged:
    """(nulls, (bad count, first bad value, its 1-based row) or None) of a text column
    whose null cells are null (an empty csv cell, a JSON null).

    A few whole-column passes answer for a clean column: no cell starts with a space
    (so none is blank), and pyarrow's cast takes every cell as `wanted` (`_casts`), or
    the column has few distinct values and `parses_as` takes each (`_per_value`), or it
    is `datetime` and pyarrow's ISO 8601 cast takes it (`_timestamps`).  Anything else
    is judged cell by cell, exactly (`_exact_column`)."""
    import pyarrow.compute as pc
    nulls = column.null_count
    if nulls == len(column):
        return nulls, None
    if _maybe_blank(column):
        return _exact_column(pc.fill_null(column, ""), wanted, parses_as)
    if wanted is None or wanted == "str":
        return nulls, None
    if wanted in ("int", "float") and (pc.all(pc.ascii_is_decimal(column)).as_py()
                                       or _casts(column, None, wanted)):
        return nulls, None       # digits only are an int and a float: the cheapest pass
    if wanted in ("bool", "datetime"):
        found = _per_value(column, wanted, parses_as)
        if found is not _DECLINE:
            return nulls, found
        if wanted == "datetime" and _timestamps(column):
            return nulls, None
    return _exact_column(pc.fill_null(column, ""), wanted, parses_as)


def _maybe_blank(column: Any) -> bool:
    """Whether a cell may be blank as `str.strip` sees it: it starts with a byte below
    ``!`` (ASCII spaces, and control characters: `_exact_column` tells them apart) or
    with a character `str.isspace` takes (`_SPACE`, beyond ASCII)."""
    import pyarrow.compute as pc
    if pc.any(pc.less(column, "!")).as_py():
        return True
    ascii_ = pc.string_is_ascii(column)
    if pc.all(ascii_).as_py() is not False:
        return False
    others = pc.filter(column, pc.invert(ascii_))
    return bool(pc.any(pc.match_substring_regex(others, f"^[{_SPACE}]")).as_py())


def _per_value(column: Any, wanted: str, parses_as: Callable[[Any, str], bool]) -> Any:
    """(count, first, row) of the cells `parses_as` refuses, or None, judging each
    distinct value once; `_DECLINE` when there are too many distinct values."""
    import pyarrow as pa
    import pyarrow.compute as pc
    if len(pc.unique(column.slice(0, _SAMPLE))) > _SAMPLE // 2:
        return _DECLINE      # nearly every value differs: a vectorized rule, or cell by cell
    distinct = pc.unique(column)
    if len(distinct) > _MANY_DISTINCT:
        return _DECLINE
    refused = [value for value in distinct.to_pylist()
               if value is not None and not parses_as(value, wanted)]
    if not refused:
        return None
    return _first(column, pc.is_in(column, value_set=pa.array(refused, pa.string())))


def _timestamps(column: Any) -> bool:
    """Whether pyarrow's ISO 8601 cast takes every cell as a time, naive or with an
    offset, within the years `datetime` has: what it takes, `datetime.fromisoformat`
    takes too, but for year 0 (and an offset that moves a time out of years 1-9999)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    for kind in (pa.timestamp("us"), pa.timestamp("us", "UTC")):
        try:
            found = pc.min_max(pc.cast(column, kind))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        low, high = found["min"].value, found["max"].value
        return low is not None and low >= _EARLIEST_US and high <= _LATEST_US
    return False


def _exact_column(column: Any, wanted: str | None, parses_as: Callable[[Any, str], bool]
                  ) -> Judged:
    """`_string_column`, cell by cell: an empty cell is ``""`` here, not null."""
    import pyarrow as pa
    import pyarrow.compute as pc
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(column) == 0:
        return 0, None
    ascii_ = pc.string_is_ascii(column)
    # cells with non-ASCII text: judged by Python's own rules
    others = pc.indices_nonzero(pc.invert(ascii_)).to_pylist()
    other_values = pc.take(column, pa.array(others, pa.int64())).to_pylist() if others else []
    other_null = [not value.strip() for value in other_values]
    blank = _blank(column, ascii_)
    nulls = (pc.sum(blank).as_py() or 0) + sum(other_null)
    if wanted is None or wanted == "str":
        return nulls, None
    wrong = _wrong(column, ascii_, blank, wanted, parses_as)
    count = 0 if wrong is None else pc.sum(wrong).as_py() or 0
    first_at = pc.index(wrong, True).as_py() if count else -1
    for at, value, null in zip(others, other_values, other_null):
        if not null and not parses_as(value, wanted):
            count += 1
            if first_at < 0 or at < first_at:
                first_at = at
    if not count:
        return nulls, None
    return nulls, (count, column[first_at].as_py(), first_at + 1)


def _blank(column: Any, ascii_: Any) -> Any:
    """The ASCII cells `str.strip` empties (a mask)."""
    import pyarrow.compute as pc
    quick = pc.or_(pc.equal(pc.binary_length(column), 0), pc.ascii_is_space(column))
    # a blank cell with \x1c-\x1f (which str.strip removes and ascii_is_space keeps) starts
    # with a byte below "!" and is neither empty nor ascii_is_space: then the exact rule
    maybe = pc.and_(pc.less(column, "!"), pc.invert(quick))
    if pc.any(maybe).as_py():
        return pc.and_(ascii_, pc.match_substring_regex(column, _ASCII_RULES["blank"]))
    return pc.and_(ascii_, quick)


def _wrong(column: Any, ascii_: Any, blank: Any, wanted: str,
           parses_as: Callable[[Any, str], bool]) -> Any:
    """The ASCII cells that are not null and do not parse as `wanted` (a mask), or None
    when there are none."""
    import pyarrow as pa
    import pyarrow.compute as pc
    present = pc.and_(ascii_, pc.invert(blank))
    if wanted in ("int", "float") and _casts(column, present, wanted):
        return None
    rule = _ASCII_RULES.get(wanted)
    distinct = _distinct(column, always=wanted == "datetime") if wanted in _PER_VALUE else None
    if distinct is not None:
        refused = [value for value in distinct
                   if value.isascii() and value.strip() and not parses_as(value, wanted)]
        if not refused:
            return None
        return pc.and_(ascii_, pc.is_in(column, value_set=pa.array(refused, pa.string())))
    if rule is not None:
        ok = pc.match_substring_regex(column, rule)
        return pc.and_(ascii_, pc.invert(pc.or_(ok, blank)))
    return present      # a type no rule accepts: every non-null value is wrong


def _casts(column: Any, present: Any, wanted: str) -> bool:
    """Whether pyarrow's cast takes every non-null ASCII cell (`present`: a mask of them,
    None: every non-null cell) as `wanted`; what it takes,
    `parses_as` takes too (the checks below rule out what only pyarrow reads)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    values = column if present is None or pc.all(present).as_py() else pc.filter(column, present)
    try:
        as_float = pc.cast(values, pa.float64())
        if wanted == "int":
            pc.cast(values, pa.int64())     # with the float cast: decimal digits only
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return wanted == "int" or not pc.any(pc.is_nan(as_float)).as_py()


def _distinct(column: Any, always: bool) -> list[str] | None:
    """The distinct values of a column (`always`, or when there are few), else None."""
    import pyarrow.compute as pc
    if not always and len(pc.unique(column.slice(0, _SAMPLE))) > _FEW_DISTINCT:
        return None
    distinct = pc.unique(column)
    if not always and len(distinct) > 16 * _FEW_DISTINCT:
        return None
    return distinct.to_pylist()


# -- jsonl --------------------------------------------------------------------

def _read_jsonl(path: Path, stream: BinaryIO | None = None) -> Any:
    """The table of a jsonl file, or None where pyarrow reads it differently from
    `json.loads` line by line (or could not read it safely).

    pyarrow.json reads the whole file as one block: across blocks it reconciles the
    types a column has in each, and a column that is a number in one block and a
    boolean, list or object in another crashes the process or reads wrong (pyarrow 26);
    within a block such a column is an error.  So the file is read into memory once, and
    both readers read that buffer."""
    pa = _pyarrow()
    if pa is None:
        return None
    try:
        if stream is not None:
            data = stream.read()
        else:
            with open(path, "rb") as fh:
                data = fh.read()
    except OSError:
        return None
    if data.startswith(_BOM) or len(data) >= _JSON_MAX:
        return None      # json.loads refuses a byte order mark; pyarrow skips it
    buffer = pa.py_buffer(data)
    try:
        # first the lines, then pyarrow.json: it must never see a top-level null (it
        # crashes the process on one at the start of a block: apache/arrow#47409)
        lines = _object_lines(buffer)
        if lines is None:
            return None
        table = pa.json.read_json(pa.BufferReader(buffer), read_options=pa.json.ReadOptions(
            use_threads=True, block_size=max(len(data), 1)))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table if table.num_rows == lines else None


def _object_lines(buffer: Any) -> int | None:
    """The lines that are not blank, when each holds one JSON object as far as its text
    shows: it starts with ``{`` and ends with ``}`` (spaces and tabs around), and no
    ``}`` is followed by ``null`` (a top-level null between two objects); else None.

    The lines are read as one text column (pyarrow's csv reader, no quoting: lines are
    split on \\n, \\r\\n and \\r, as Python's text files split them).  When pyarrow.json
    then reads the file as objects (so everything between objects is JSON whitespace,
    and no string holds a raw line break), each line break lies between two objects
    (inside one, ``}`` is never followed by ``{``), and as many objects as such lines
    means one object on each: what the row reader reads (pyarrow reads objects across
    and within lines alike)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    try:
        table = pacsv.read_csv(
            pa.BufferReader(buffer),
            read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 24,
                                           autogenerate_column_names=True),
            parse_options=pacsv.ParseOptions(delimiter="\x1f", quote_char=False,
                                             escape_char=False),
            convert_options=pacsv.ConvertOptions(column_types={"f0": pa.string()},
                                                 check_utf8=False))
    except pa.ArrowInvalid:
        return None         # no line at all, a stray \x1f, ...: the row reader reads it
    if table.num_columns != 1:
        return None
    lines = table.column(0)
    if pc.any(pc.match_substring_regex(lines, r"\}[ \t]*null")).as_py():
        return None         # or only a string that says so: the row reader decides
    shaped = pc.and_(pc.starts_with(lines, "{"), pc.ends_with(lines, "}"))
    odd = pc.filter(lines, pc.invert(shaped))
    if not len(odd):
        return len(lines)
    # blank lines, and objects with spaces or tabs around them
    trimmed = pc.utf8_trim(odd, " \t")
    blank = pc.equal(pc.binary_length(trimmed), 0)
    fine = pc.or_(blank, pc.and_(pc.starts_with(trimmed, "{"), pc.ends_with(trimmed, "}")))
    if not pc.all(fine).as_py():
        return None
    return len(lines) - (pc.sum(blank).as_py() or 0)


def jsonl_rows(path: Path, stream: BinaryIO | None = None) -> int | None:
    """The rows of a jsonl file, or None (the row reader counts)."""
    table = _read_jsonl(path, stream)
    return table.num_rows if table is not None else None


def jsonl_profile(path: Path, schema: Mapping[str, str], parses_as: Callable[[Any, str], bool],
                  stream: BinaryIO | None = None
                  ) -> tuple[list[str], int, dict[str, int], dict[str, tuple[int, Any, int]]] | None:
    """(columns, rows, nulls, bad) of a jsonl file, or None where the row reader must answer."""
    table = _read_jsonl(path, stream)
    if table is None:
        return None
    return _judge_table(table, schema, lambda column, wanted: _typed_column(
        column, wanted, parses_as, from_json=True))


def parquet_profile(path: Path, schema: Mapping[str, str],
                    parses_as: Callable[[Any, str], bool], stream: BinaryIO | None = None
                    ) -> tuple[list[str], int, dict[str, int], dict[str, tuple[int, Any, int]]] | None:
    """(columns, rows, nulls, bad) of a parquet file (pyarrow.parquet, its columns read
    side by side), or None where the row reader must answer (a type judged here only
    by Python's rules, a file pyarrow cannot read: the row reader says why)."""
    pa = _pyarrow()
    if pa is None:
        return None
    import pyarrow.parquet as pq
    try:
        # parquet is read from its footer backwards: from a stream, the whole file in memory
        source = pa.BufferReader(stream.read()) if stream is not None else path
        table = pq.read_table(source, use_threads=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
        return None
    if table.num_rows == 0:
        return [], 0, {}, {}     # as the row reader: no row, so no column seen
    return _judge_table(table, schema, lambda column, wanted: _typed_column(
        column, wanted, parses_as, from_json=False))


def _typed_column(column: Any, wanted: str | None, parses_as: Callable[[Any, str], bool],
                  from_json: bool) -> Judged | object:
    """(nulls, bad or None) of one jsonl or parquet column, by its pyarrow type, as the
    row reader judges the Python values pyarrow gives for it; `_DECLINE` where only the
    row reader can say (`from_json`: a value the row reader would quote is one pyarrow
    changed from the JSON text: an int widened to float, a string read as a time, an
    object given the keys of others)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    kind = column.type
    if pa.types.is_dictionary(kind):      # parquet's dictionary pages: the values
        column, kind = column.cast(kind.value_type), kind.value_type
    nulls = column.null_count
    if pa.types.is_null(kind):
        return nulls, None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _string_column(column, wanted, parses_as)
    if wanted is None or wanted == "str":
        return nulls, None    # a non-null value that is not text is never null
    if pa.types.is_boolean(kind):
        return nulls, None if wanted == "bool" else _every_value(column)
    if pa.types.is_integer(kind):
        if wanted in ("int", "float"):
            return nulls, None
        if wanted == "bool":   # 0 and 1 are booleans to the row reader
            return nulls, _first(column, pc.invert(pc.is_in(column, value_set=pa.array(
                [0, 1], kind))))
        return nulls, _every_value(column)
    if pa.types.is_floating(kind) and not pa.types.is_float16(kind):
        if wanted == "float":
            return nulls, None
        if wanted == "int":    # a float is an int when it is whole (never inf or NaN)
            whole = pc.and_(pc.is_finite(column), pc.equal(pc.floor(column), column))
            return nulls, _first(column, pc.invert(whole))
        # pyarrow.json widens a column of ints and floats: 1 would be quoted as 1.0
        return _DECLINE if from_json else (nulls, _every_value(column))
    if pa.types.is_timestamp(kind):
        if wanted != "datetime":   # parquet's datetime, quoted as itself; json's lost string
            return _DECLINE if from_json else (nulls, _every_value(column))
        if not from_json:
            return nulls, None
        # pyarrow takes an ISO 8601 string for a timestamp only when datetime.fromisoformat
        # does too, except year 0 (and offsets that move a time past the year 1 or 9999)
        found = pc.min_max(column)
        if found["min"].is_valid and (
                pc.less(found["min"], pa.scalar(datetime(1, 1, 2), kind)).as_py() or
                pc.greater(found["max"], pa.scalar(datetime(9999, 12, 30), kind)).as_py()):
            return _DECLINE
        return nulls, None
    if from_json:   # a nested value (pyarrow adds the absent keys of an object)
        return _DECLINE
    if pa.types.is_date(kind) or pa.types.is_decimal(kind) or pa.types.is_binary(kind) \
            or pa.types.is_large_binary(kind) or pa.types.is_list(kind) \
            or pa.types.is_struct(kind) or pa.types.is_time(kind):
        return nulls, _every_value(column)   # a date is no datetime, a Decimal no float
    return _DECLINE


def _every_value(column: Any) -> tuple[int, Any, int] | None:
    import pyarrow.compute as pc
    return _first(column, pc.is_valid(column))


def _first(column: Any, wrong: Any) -> tuple[int, Any, int] | None:
    """(count, first value, its 1-based row) of the non-null cells in the mask `wrong`."""
    import pyarrow.compute as pc
    wrong = pc.and_(pc.is_valid(column), pc.fill_null(wrong, False))
    count = pc.sum(wrong).as_py() or 0
    if not count:
        return None
    at = pc.index(wrong, True).as_py()
    return count, column[at].as_py(), at + 1
