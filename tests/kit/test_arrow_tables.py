"""The vectorized csv reader gives the row reader's profile exactly, on random files."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mlform.providers.kit import arrow_tables, checks

pytest.importorskip("pyarrow")

TYPES = ("int", "float", "bool", "str", "datetime", "nope")

# cells that exercise every parse rule: numbers in all spellings, booleans, dates,
# blanks, Unicode digits and spaces, quotes, separators and newlines inside values
CELLS = st.one_of(
    st.sampled_from(["", " ", "\t", "1", "-3", "+7", "1.5", " 2 ", "1e3", ".5", "5.", "1_000",
                     "1__0", "inf", "-Infinity", "NaN", "nan ", "true", "Yes", "n", "0", "maybe",
                     "2024-05-01", "2024-05-01T12:00:00Z", "2024-13-01", "May 1", "x,y",
                     "a\nb", 'say "hi"', "\u0663", " \u00a0", "\u2003", "1\u00a0", "ü", "\x1c"]),
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


def _profiles(text: str, schema: dict) -> tuple[checks.DataProfile, checks.DataProfile]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.csv"
        path.write_bytes(text.encode("utf-8"))
        reference = checks._row_profile(path, "csv", schema)
        small, checks.ARROW_FROM_BYTES = checks.ARROW_FROM_BYTES, 0   # pyarrow for every size
        try:
            return checks.profile(path, "csv", schema), reference
        finally:
            checks.ARROW_FROM_BYTES = small


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_files())
def test_the_csv_profile_is_the_row_readers(case):
    text, schema = case
    fast, reference = _profiles(text, schema)
    assert fast == reference
    assert fast.to_json() == reference.to_json()


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
