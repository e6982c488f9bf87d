"""The vectorized csv and jsonl readers give the row reader's profile exactly, on random
files (and on the same files read through a `HashingReader`, whose digest is the file's)."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mlform.providers.kit import arrow_tables, checks, digests

pytest.importorskip("pyarrow")

TYPES = ("int", "float", "bool", "str", "datetime", "nope")

# cells that exercise every parse rule: numbers in all spellings, booleans, dates,
# blanks, Unicode digits and spaces, quotes, separators and newlines inside values
CELLS = st.one_of(
    st.sampled_from(["", " ", "\t", "1", "-3", "+7", "1.5", " 2 ", "1e3", ".5", "5.", "1_000",
                     "1__0", "inf", "-Infinity", "NaN", "nan ", "true", "Yes", "n", "0", "maybe",
                     "2024-05-01", "2024-05-01T12:00:00Z", "2024-13-01", "May 1", "x,y",
                     "a\nb", 'say "hi"', "\u0663", " \u00a0", "\u2003", "1\u00a0", "ü", "\x1c",
                     "0x1F", "0X1f", "nan(1)", "-nan", "+inf", "1e400", "-0", "007", " \x1c",
                     "\x1d1", "99999999999999999999", "1.e5", "+.5", "t", "TRUE", "nO"]),
    st.text(alphabet=st.sampled_from('01.eE+-_ aTZ:\t"x,\u0663\u00a0'), max_size=6),
)


def _write_csv(header: list[str], rows: list[list[str]], bom: bool, newline: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(header)
    for row in rows:
        if row == ["__blank__"]:
            out.write(newline)
        else:
            writer.writerow(row)
    return ("\ufeff" if bom else "") + out.getvalue()


@st.composite
def csv_files(draw):
    width = draw(st.integers(1, 4))
    names = st.sampled_from(["a", "b", "c", "d", "e", " f", "a"])
    header = draw(st.one_of(
        st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=width, max_size=width,
                 unique=True),                                            # what pyarrow reads
        st.lists(names, min_size=width, max_size=width)))                 # duplicates, spaces
    whole = st.lists(CELLS, min_size=width, max_size=width)
    rows = draw(st.one_of(
        st.lists(st.one_of(whole, st.just(["__blank__"])), max_size=8),   # what pyarrow reads
        st.lists(st.one_of(whole, st.lists(CELLS, max_size=width + 1),    # short and long rows
                           st.just(["__blank__"])), max_size=8)))
    text = _write_csv(header, rows, draw(st.booleans()), draw(st.sampled_from(["\n", "\r\n"])))
    schema = draw(st.dictionaries(st.sampled_from(["a", "b", "c", "d", "f", "zz"]),
                                  st.sampled_from(TYPES), max_size=4))
    return text, schema


def _profiles(text: str | bytes, schema: dict, fmt: str = "csv"
              ) -> tuple[checks.DataProfile, checks.DataProfile]:
    """(pyarrow's profile, the row reader's) of a file; a CheckUnavailable is the profile
    when the reader raises it.  pyarrow reads the file through a `HashingReader` too, and
    answers the same, with the file's digest."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x.{fmt}"
        path.write_bytes(data)
        reference = _or_error(lambda: checks._row_profile(path, fmt, schema))
        small, checks.ARROW_FROM_BYTES = checks.ARROW_FROM_BYTES, 0   # pyarrow for every size
        try:
            fast = _or_error(lambda: checks.profile(path, fmt, schema))
            with open(path, "rb", buffering=0) as fh:
                reader = digests.HashingReader(fh)
                streamed = _or_error(lambda: checks.profile(path, fmt, schema, stream=reader))
                assert reader.finish() == digests.hash_file(path)
        finally:
            checks.ARROW_FROM_BYTES = small
        assert _same(streamed, fast)
        return fast, reference


def _or_error(read):
    try:
        return read()
    except checks.CheckUnavailable as exc:
        return exc


def _same(one, other) -> bool:
    """Equal profiles (as JSON, where NaN equals NaN and -0.0 is not 0.0), or the same error."""
    if isinstance(one, Exception) or isinstance(other, Exception):
        return type(one) is type(other) and str(one) == str(other)
    return json.dumps(one.to_json(), sort_keys=True) == json.dumps(other.to_json(), sort_keys=True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_files())
def test_the_csv_profile_is_the_row_readers(case):
    text, schema = case
    fast, reference = _profiles(text, schema)
    assert fast == reference
    assert _same(fast, reference)


@contextlib.contextmanager
def _vectorized_rules():
    """Small files judged as big ones are: no column has few enough distinct values to be
    judged value by value (so pyarrow's casts, its timestamp parser and the regular
    expressions answer), blocks of 256 bytes (so a quote may come after the first), each
    judged on its own and folded into the file's profile."""
    saved = {name: getattr(arrow_tables, name) for name in (
        "_SAMPLE", "_MANY_DISTINCT", "_FEW_DISTINCT", "_BLOCK", "_HEAD", "_GROUP")}
    arrow_tables._SAMPLE, arrow_tables._MANY_DISTINCT, arrow_tables._FEW_DISTINCT = 2, 0, 0
    arrow_tables._BLOCK = arrow_tables._HEAD = 256
    arrow_tables._GROUP = 1
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(arrow_tables, name, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_files())
def test_the_csv_profile_by_vectorized_rules_is_the_row_readers(case):
    text, schema = case
    with _vectorized_rules():
        fast, reference = _profiles(text, schema)
    assert _same(fast, reference)


#: ISO 8601 and near misses: what pyarrow's timestamp cast and `datetime.fromisoformat`
#: might disagree on (year 0, leap seconds, offsets past the ends of the years, case)
TIMES = st.builds(
    lambda date, sep, time, zone: date + (sep + time if time else "") + zone,
    st.sampled_from(["2024-05-01", "0000-01-01", "0001-01-01", "9999-12-31", "2024-02-30",
                     "20240501", "2024-W01-1", "2024-05", "+2024-05-01", "1677-09-21"]),
    st.sampled_from(["T", " ", "t", "_"]),
    st.sampled_from(["", "12", "12:30", "1230", "12:30:45", "12:30:45.1", "00:00:00",
                     "12:30:45.123456789", "24:00:00", "23:59:60", "12:30:45,5"]),
    st.sampled_from(["", "Z", "z", "+01:00", "+0100", "+01", "-23:59", "+24:00", " UTC"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(TIMES, st.sampled_from(["", " ", "x"])), min_size=1, max_size=6))
def test_many_distinct_times_by_pyarrow_are_the_row_readers(cells):
    text = _write_csv(["a"], [[cell] for cell in cells], False, "\n")
    with _vectorized_rules():
        fast, reference = _profiles(text, {"a": "datetime"})
    assert _same(fast, reference)


def _mixed_csv(rows: int) -> str:
    """A csv file whose columns have blanks, wrong values (the first ones late in the
    file) and values with non-ASCII characters, spread over the whole file."""
    lines = ["id,amount,ok,at,note"]
    for i in range(rows):
        lines.append(",".join([
            "x" if i in (rows // 2, rows - 3) else ("" if i % 97 == 5 else str(i)),
            "nan(1)" if i == rows - 1 else f"{i * 0.5:.1f}",
            ["true", "no", "maybe", " ", "T"][i % 5] if i > rows // 3 else "yes",
            f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00"
            if i != rows // 4 else "2024-02-30",
            "" if i % 7 == 0 else ("\u00e9t\u00e9" if i % 11 == 0 else "\u00a0" if i % 13 == 0
                                   else f"n{i % 5}")]))
    return "\n".join(lines) + "\n"


def test_a_file_folded_in_many_parts_is_the_file_read_whole(tmp_path, monkeypatch):
    schema = {"id": "int", "amount": "float", "ok": "bool", "at": "datetime", "note": "int"}
    path = tmp_path / "x.csv"
    path.write_text(_mixed_csv(3_000))
    whole = arrow_tables.csv_profile(path, schema, checks.parses_as)
    assert whole is not None and whole[1] == 3_000 and whole[3]["id"][1:] == ("x", 1_501)
    folds = []
    add = arrow_tables._Profile.add
    monkeypatch.setattr(arrow_tables._Profile, "add",
                        lambda self, table: folds.append(table.num_rows) or add(self, table))
    monkeypatch.setattr(arrow_tables, "_BLOCK", 4096)
    monkeypatch.setattr(arrow_tables, "_GROUP", 8192)
    parts = arrow_tables.csv_profile(path, schema, checks.parses_as)
    assert len(folds) > 10 and sum(folds) == 3_000
    assert parts == whole
    # and through a hashing reader: the same profile, and the file's digest
    folds.clear()
    with open(path, "rb", buffering=0) as fh:
        reader = digests.HashingReader(fh)
        assert arrow_tables.csv_profile(path, schema, checks.parses_as, reader) == whole
        assert reader.finish() == digests.hash_file(path)
    assert len(folds) > 10
    assert checks.profile(path, "csv", schema) == checks._row_profile(path, "csv", schema)


def test_the_space_characters_are_those_of_str_isspace():
    import re
    spaces = "".join(chr(i) for i in range(sys.maxunicode + 1) if chr(i).isspace())
    beyond = "".join(c for c in spaces if not c.isascii())
    assert re.fullmatch(f"[{arrow_tables._SPACE}]+", beyond)
    assert len(re.findall(f"[{arrow_tables._SPACE}]", beyond)) == len(beyond)
    assert not re.search(f"[{arrow_tables._SPACE}]", "".join(
        chr(i) for i in range(128, sys.maxunicode + 1) if not chr(i).isspace()
        and not 0xD800 <= i <= 0xDFFF))


@pytest.mark.parametrize("text", [
    "", "a,b\n", "\ufeffa,b\n1,2\n", "a,b\n1\n", "a,b\n1,2,3\n", "a,a\n1,2\n", " a,b\n1,2\n",
    "\na,b\n1,2\n", "a,b\n\n1,2\n\n", 'a,b\n"1\n2",x\n', "a\r1\r2\r",
])
def test_edge_files_match_the_row_reader(text):
    fast, reference = _profiles(text, {"a": "int", "b": "float"})
    assert fast == reference


def test_rows_only_counts_match_the_profile(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n\n3,4\n")
    assert arrow_tables.csv_rows(path) == 2 == checks.count_rows(path, "csv").rows
    path.write_text("a,b\n1\n3,4,5\n")                      # ragged: the row reader counts
    assert arrow_tables.csv_rows(path) is None and checks.count_rows(path, "csv").rows == 2


def test_pyarrow_answers_for_plain_files_and_declines_ragged_ones(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("a,b\n1,x\n,2\n")
    columns, rows, nulls, bad = arrow_tables.csv_profile(plain, {"a": "int", "b": "int"},
                                                         checks.parses_as)
    assert (columns, rows, nulls, bad) == (["a", "b"], 2, {"a": 1, "b": 0},
                                           {"b": (1, "x", 1)})
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1\n")
    assert arrow_tables.csv_profile(ragged, {}, checks.parses_as) is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from('ab,"\n\r 1.x\u00a0'), max_size=40),
       st.dictionaries(st.sampled_from(["a", "b", "ab"]), st.sampled_from(TYPES), max_size=2))
def test_raw_text_with_stray_quotes_matches_the_row_reader(text, schema):
    fast, reference = _profiles(text, schema)
    assert fast == reference


# -- jsonl ---------------------------------------------------------------------

JSON_VALUES = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([0, 1, -1, 2, 7, 2**53 + 1, 2**63, -(2**63) - 1, 10**20]),
    st.sampled_from([0.0, -0.0, 1.0, 1.5, -2.25, 1e20, 1e-7, 3.0e300]),
    CELLS,
    st.sampled_from(["2024-05-01", "2024-05-01T12:00:00", "2024-05-01 12:30Z",
                     "2024-05-01T12:00:00+01:00", "0000-01-01", "0001-01-01T00:00:00+01:00",
                     "9999-12-31T23:59:59", "2024-02-30", "2024-05-01T23:59:60", "20240501"]),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.sampled_from(["p", "q"]), st.integers(0, 2), max_size=2),
)

#: lines the row reader refuses, or reads differently from pyarrow, or skips
ODD_LINES = ["", "  ", "\t", "\x0c", "\u00a0", '{"a": 1} {"b": 2}', '{"a":', '1}', "[1]",
             "null", "1", '"x"', '{"a": 1, "a": 2}', '{"a": NaN}', '{"a": Infinity}',
             '{"a": -Infinity}', '{"a": 1e400}', '{"a": "\\ud800"}', " {\"b\": true} ",
             '{"c": 1}\x0b', "{}", '{"a": {}}', '{"": 1}']


@st.composite
def jsonl_files(draw):
    keys = st.sampled_from(["a", "b", "c", "d"])
    same_types = draw(st.booleans())    # one type per key: what pyarrow reads
    typed = {key: draw(JSON_VALUES) for key in "abcd"}
    def row():
        found = draw(st.dictionaries(keys, JSON_VALUES, max_size=4))
        if same_types:
            found = {k: (typed[k] if v is not None else None) for k, v in found.items()}
        return json.dumps(found, ensure_ascii=draw(st.booleans()))
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        lines.append(draw(st.sampled_from(ODD_LINES)) if draw(st.integers(0, 5)) == 0 else row())
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join(lines) + (newline if draw(st.booleans()) else "")
    if draw(st.integers(0, 20)) == 0:
        text = "\ufeff" + text
    schema = draw(st.dictionaries(st.sampled_from(["a", "b", "c", "d", "zz"]),
                                  st.sampled_from(TYPES), max_size=4))
    return text, schema


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jsonl_files())
def test_the_jsonl_profile_is_the_row_readers(case):
    text, schema = case
    fast, reference = _profiles(text, schema, "jsonl")
    assert _same(fast, reference)


@pytest.mark.parametrize("text", [
    "", "\n", "{}\n", '{"a": 1}\n\n  \n{"b": 2}', '{"a": 1}\r{"a": 2}\r',
    '{"a": 1} {"a": 2}\n', '{"a":\n1}\n', '{"a": 1}\n{"a": \n 2} {"a": 3}\n',
    '\ufeff{"a": 1}\n', '{"a": 1}\n{"a": 1.5}\n', '{"a": 1}\n{"a": "x"}\n',
    '{"b": null}\n{"a": 1, "b": 2}\n', '{"a": "2024-05-01"}\n{"a": "x"}\n',
    '{"a": "0000-01-01"}\n', '{"a": {"x": 1}}\n{"a": {"y": 2}}\n', '  {"a": 1}\t\n',
])
@pytest.mark.parametrize("schema", [{}, {"a": "int"}, {"a": "bool"}, {"a": "datetime"},
                                    {"a": "str", "b": "float"}, {"a": "nope"}])
def test_edge_jsonl_files_match_the_row_reader(text, schema):
    fast, reference = _profiles(text, schema, "jsonl")
    assert _same(fast, reference)


def test_pyarrow_answers_for_plain_jsonl_and_declines_what_it_reads_differently(tmp_path):
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"a": 1, "b": "x"}\n{"a": 2.5, "b": " "}\n{"c": true}\n')
    assert arrow_tables.jsonl_profile(plain, {"a": "int", "b": "int"}, checks.parses_as) == (
        ["a", "b", "c"], 3, {"a": 1, "b": 2, "c": 2}, {"a": (1, 2.5, 2), "b": (1, "x", 1)})
    assert arrow_tables.jsonl_rows(plain) == 3
    two = tmp_path / "two.jsonl"
    two.write_text('{"a": 1} {"a": 2}\n')
    assert arrow_tables.jsonl_profile(two, {}, checks.parses_as) is None
    with pytest.raises(checks.CheckUnavailable, match="line 1 is not JSON"):
        checks._row_profile(two, "jsonl", {})
    widened = tmp_path / "widened.jsonl"
    widened.write_text('{"a": 1}\n{"a": 1.5}\n')     # 1 would be quoted as 1.0
    assert arrow_tables.jsonl_profile(widened, {"a": "datetime"}, checks.parses_as) is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jsonl_files())
def test_the_jsonl_profile_by_vectorized_rules_is_the_row_readers(case):
    text, schema = case
    with _vectorized_rules():
        fast, reference = _profiles(text, schema, "jsonl")
    assert _same(fast, reference)


# -- parquet -------------------------------------------------------------------

def _parquet_columns():
    import pyarrow as pa
    moments = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31))
    return {
        "int": (pa.int64(), st.integers(-3, 3) | st.sampled_from([2**40, -(2**63)])),
        "uint8": (pa.uint8(), st.integers(0, 255)),
        "float": (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
        "float32": (pa.float32(), st.sampled_from([0.0, 1.0, 2.5, -1.0, float("nan")])),
        "bool": (pa.bool_(), st.booleans()),
        "str": (pa.string(), CELLS),
        "time": (pa.timestamp("us"), moments),
        "utc": (pa.timestamp("ms", "UTC"),
                st.datetimes(min_value=dt.datetime(1970, 1, 1),
                             max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.timezone.utc))),
        "date": (pa.date32(), st.dates()),
        "null": (pa.null(), st.none()),
        "words": (pa.dictionary(pa.int32(), pa.string()), CELLS),
        "list": (pa.list_(pa.int64()), st.lists(st.integers(0, 2), max_size=2)),
        "decimal": (pa.decimal128(6, 2), st.decimals(min_value=-100, max_value=100, places=2,
                                                     allow_nan=False, allow_infinity=False)),
        "bytes": (pa.binary(), st.binary(max_size=3)),
    }


@st.composite
def parquet_files(draw):
    import pyarrow as pa
    import pyarrow.parquet as pq
    kinds = _parquet_columns()
    rows = draw(st.integers(0, 8))
    chosen = draw(st.lists(st.sampled_from(sorted(kinds)), min_size=1, max_size=4))
    columns = {}
    for i, kind in enumerate(chosen):
        arrow_type, values = kinds[kind]
        cells = draw(st.lists(st.none() | values, min_size=rows, max_size=rows))
        columns[f"c{i}"] = pa.array(cells, type=arrow_type)
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out)
    schema = draw(st.dictionaries(st.sampled_from(["c0", "c1", "c2", "c3", "zz"]),
                                  st.sampled_from(TYPES), max_size=4))
    return out.getvalue(), schema


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parquet_files())
def test_the_parquet_profile_is_the_row_readers(case):
    data, schema = case
    fast, reference = _profiles(data, schema, "parquet")
    assert _same(fast, reference)


def test_pyarrow_answers_for_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"id": [1, 2, None], "amount": [1.0, 2.5, float("nan")],
                             "when": pa.array([dt.date(2024, 5, 1)] * 3)}), path)
    assert arrow_tables.parquet_profile(path, {"id": "bool", "amount": "int", "when": "datetime"},
                                        checks.parses_as) == (
        ["id", "amount", "when"], 3, {"id": 1, "amount": 0, "when": 0},
        {"id": (1, 2, 2), "amount": (2, 2.5, 2), "when": (3, dt.date(2024, 5, 1), 1)})
    path.write_bytes(b"PAR1 not parquet")
    assert arrow_tables.parquet_profile(path, {}, checks.parses_as) is None
    with pytest.raises(checks.CheckUnavailable, match="cannot read x.parquet as parquet"):
        checks.profile(path, "parquet", {})
    with pytest.raises(checks.CheckUnavailable, match="cannot read x.parquet as parquet"):
        checks.count_rows(path, "parquet")


def test_a_hashing_reader_gives_the_digest_of_what_it_reads(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"a\nb\nc" * 100_000)
    with open(path, "rb", buffering=0) as fh:
        reader = digests.HashingReader(fh)
        assert reader.read(10) == b"a\nb\nca\nb\nc"
        found = reader.finish()
    assert found == digests.hash_file(path)
    assert found.size == 500_000 and found.lines == 200_001
