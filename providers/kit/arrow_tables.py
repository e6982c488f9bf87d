"""The vectorized csv profile reader: pyarrow's multi-threaded reader, at disk speed.

`kit.checks` asks `csv_profile` first and falls back to its
row-by-row reader when they answer None.  The answers are the row reader's, exactly
(`tests/kit/test_arrow_tables.py` compares both on random files):

- csv is read with every column as text (pyarrow's multi-threaded reader; no value is
  converted, none is taken as null), so the kit's parse rules judge the same strings
  the `csv` module would give.  Null is a cell of whitespace only, found by a regular
  expression over exactly the characters `str.strip` removes; `int`, `float` and `bool`
  are regular expressions of what `parses_as` accepts for ASCII text; `datetime` is
  `parses_as` itself over the column's distinct values; a cell with non-ASCII text is
  judged by `parses_as` itself, so Unicode digits and spaces mean what they mean there.
- Whatever pyarrow reads differently answers None (the row reader takes over): an empty
  file, ragged rows (a short row's missing cells, extra cells), a header pyarrow names
  differently from the `csv` module (duplicates, surrounding spaces), bytes that are not
  UTF-8.

pyarrow is optional: without it `csv_profile` answers None.  (parquet is read by
pyarrow in `kit.checks`; jsonl by the row reader.)
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["csv_profile", "csv_rows"]

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


#: rows from which a file's columns are judged on threads (below, starting them costs more)
_THREADS_FROM = 100_000


def _raw_header(path: Path) -> list[str] | None:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh), None)


def _read_csv(path: Path, first_only: bool = False) -> tuple[list[str], Any] | None:
    """(header, table of text columns) of a csv file, or None where pyarrow would read
    it differently from the `csv` module (`first_only`: convert the first column only)."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:
        return None
    try:
        header = _raw_header(path)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if not header:
        return None          # an empty file, or a blank first line
    if len(set(header)) != len(header) or [name.strip() for name in header] != header:
        return None          # duplicate names, or names the csv reader strips
    only = header[:1] if first_only else header
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                include_columns=only,
                null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False,
                auto_dict_encode=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
        return None         # ragged rows, bytes that are not UTF-8, ...
    if table.column_names != only:
        return None
    return header, table


def csv_rows(path: Path) -> int | None:
    """The data rows of a csv file (one column converted), or None (the row reader counts)."""
    found = _read_csv(path, first_only=True)
    return found[1].num_rows if found is not None else None


def csv_profile(path: Path, schema: Mapping[str, str], parses_as: Callable[[Any, str], bool]
                ) -> tuple[list[str], int, dict[str, int], dict[str, tuple[int, Any, int]]] | None:
    """(columns, rows, nulls, bad) of a csv file, or None where the row reader must answer."""
    found = _read_csv(path)
    if found is None:
        return None
    header, table = found
    columns = list(header)
    if table.num_rows == 0:
        return columns, 0, {}, {}     # a header only: columns, and no counts (as the row reader)
    nulls: dict[str, int] = {}
    bad: dict[str, tuple[int, Any, int]] = {}
    def judge(name: str) -> tuple[int, tuple[int, Any, int] | None]:
        return _string_column(table.column(name), schema.get(name), parses_as)
    if table.num_rows < _THREADS_FROM or len(header) == 1:
        found = [judge(name) for name in header]
    else:   # pyarrow's kernels release the GIL: the columns are judged side by side
        with ThreadPoolExecutor(max_workers=min(len(header), os.cpu_count() or 1)) as pool:
            found = list(pool.map(judge, header))
    for name, (found_nulls, found_bad) in zip(header, found):
        nulls[name] = found_nulls
        if found_bad is not None:
            bad[name] = found_bad
    return columns, table.num_rows, nulls, bad


def _string_column(column: Any, wanted: str | None, parses_as: Callable[[Any, str], bool]
                   ) -> tuple[int, tuple[int, Any, int] | None]:
    """(nulls, (bad count, first bad value, its 1-based row) or None) of a text column."""
    import pyarrow as pa
    import pyarrow.compute as pc
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(column) == 0:
        return 0, None
    ascii_ = pc.string_is_ascii(column)
    blank = pc.and_(ascii_, pc.match_substring_regex(column, _ASCII_RULES["blank"]))
    # cells with non-ASCII text: judged by Python's own rules
    others = pc.indices_nonzero(pc.invert(ascii_)).to_pylist()
    other_values = pc.take(column, pa.array(others, pa.int64())).to_pylist() if others else []
    other_null = [not value.strip() for value in other_values]
    nulls = pc.sum(blank).as_py() or 0
    nulls += sum(other_null)
    if wanted is None:
        return nulls, None
    rule = _ASCII_RULES.get(wanted)
    if wanted == "str":
        return nulls, None
    if rule is not None:
        ok = pc.match_substring_regex(column, rule)
        wrong = pc.and_(ascii_, pc.invert(pc.or_(ok, blank)))
    elif wanted == "datetime":
        present = pc.filter(column, pc.and_(ascii_, pc.invert(blank)))
        distinct = pc.unique(present).to_pylist()
        refused = [value for value in distinct if not parses_as(value, wanted)]
        wrong = pc.and_(ascii_, pc.is_in(column, value_set=pa.array(refused, pa.string())))
    else:   # a type no rule accepts: every non-null value is wrong
        wrong = pc.and_(ascii_, pc.invert(blank))
    count = pc.sum(wrong).as_py() or 0
    first_at = pc.index(wrong, True).as_py() if count else -1
    for at, value, null in zip(others, other_values, other_null):
        if not null and not parses_as(value, wanted):
            count += 1
            if first_at < 0 or at < first_at:
                first_at = at
    if not count:
        return nulls, None
    return nulls, (count, column[first_at].as_py(), first_at + 1)
