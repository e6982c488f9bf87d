"""The pure drift statistics of the local monitor (`providers/local/drift_stats.py`),
checked against values worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mlform.providers.kit import drift_stats as ds

RNG = np.random.default_rng(7)
NORMAL = RNG.normal(0.0, 1.0, 5000)
NORMAL_2 = RNG.normal(0.0, 1.0, 5000)
SHIFTED = RNG.normal(1.0, 1.0, 5000)
TEN = list(range(1, 11))


# -- PSI ---------------------------------------------------------------------

# bins=2 on 1..10: the inner edge is the median 5.5, so b = [0.5, 0.5].
#   [1, 1, 1, 9] -> c = [0.75, 0.25]:
#       0.25 * ln(1.5) + (-0.25) * ln(0.5) = 0.101366 + 0.173287
#   [1, 2, 3]    -> c = [1, 0 -> 1e-4]:
#       0.5 * ln(2) + (1e-4 - 0.5) * ln(1e-4 / 0.5) = 0.346574 + 4.257745
PSI_EXACT = [
    ("identical", TEN, TEN, 2, 0.0),
    ("hand example", TEN, [1, 1, 1, 9], 2, 0.25 * math.log(1.5) - 0.25 * math.log(0.5)),
    ("empty bin uses epsilon", TEN, [1, 2, 3], 2,
     0.5 * math.log(2) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)),
]


@pytest.mark.parametrize("name,baseline,current,bins,expected", PSI_EXACT, ids=[c[0] for c in PSI_EXACT])
def test_psi_exact_values(name, baseline, current, bins, expected):
    assert ds.psi(baseline, current, bins=bins) == pytest.approx(expected, abs=1e-9)


PSI_RANGES = [
    ("same sample", NORMAL, NORMAL, 0.0, 1e-12),
    ("same distribution", NORMAL, NORMAL_2, 0.0, 0.02),
    ("shifted by one sd", NORMAL, SHIFTED, 0.2, math.inf),
    ("outside the baseline range", NORMAL, NORMAL + 100, 0.2, math.inf),
]


@pytest.mark.parametrize("name,baseline,current,low,high", PSI_RANGES, ids=[c[0] for c in PSI_RANGES])
def test_psi_ranges(name, baseline, current, low, high):
    assert low <= ds.psi(baseline, current) <= high


def test_psi_tied_baseline_merges_bins():
    # a constant baseline puts every value in one bin: a sample of that value is stable
    assert ds.psi([3.0] * 50, [3.0] * 7) == pytest.approx(0.0)
    assert ds.psi([0, 0, 0, 0, 1], [1, 1, 1, 1]) > 0.2


@pytest.mark.parametrize("baseline,current", [([], [1.0]), ([1.0], []), ([math.nan], [1.0])])
def test_psi_needs_data(baseline, current):
    with pytest.raises(ValueError):
        ds.psi(baseline, current)


# -- KS ----------------------------------------------------------------------

# Empirical CDFs worked by hand:
#   [1,2,3,4] vs [3,4,5,6]: at x=2, F1 = 0.5, F2 = 0      -> D = 0.5
#   [1,2,3] vs [4,5,6]: at x=3, F1 = 1, F2 = 0             -> D = 1
#   [1,3,5,7] vs [2,4,6,8]: at x=1,3,5,7 the gap is 0.25   -> D = 0.25
#   [1,2,2,3] vs [2,2,2,2]: at x=1 0.25; at x=2 0.75 vs 1  -> D = 0.25
KS_EXACT = [
    ("overlap", [1, 2, 3, 4], [3, 4, 5, 6], 0.5),
    ("disjoint", [1, 2, 3], [4, 5, 6], 1.0),
    ("interleaved", [1, 3, 5, 7], [2, 4, 6, 8], 0.25),
    ("ties", [1, 2, 2, 3], [2, 2, 2, 2], 0.25),
    ("identical", TEN, TEN, 0.0),
]


@pytest.mark.parametrize("name,a,b,d", KS_EXACT, ids=[c[0] for c in KS_EXACT])
def test_ks_statistic_by_hand(name, a, b, d):
    result = ds.ks(a, b)
    assert result.statistic == pytest.approx(d)
    en = math.sqrt(len(a) * len(b) / (len(a) + len(b)))
    assert result.p_value == pytest.approx(ds.kolmogorov_sf((en + 0.12 + 0.11 / en) * d))


def test_ks_is_symmetric_and_sees_a_shift():
    assert ds.ks(NORMAL, SHIFTED).statistic == pytest.approx(ds.ks(SHIFTED, NORMAL).statistic)
    assert ds.ks(NORMAL, SHIFTED).statistic > 0.3
    assert ds.ks(NORMAL, SHIFTED).p_value < 1e-6
    assert ds.ks(NORMAL, NORMAL_2).p_value > 0.01


# Kolmogorov distribution, P(K > x): tabulated values (1.358 is the 5% critical value).
SF_TABLE = [(0.0, 1.0), (0.5, 0.9639), (1.0, 0.2700), (1.358, 0.0500), (1.628, 0.0100), (3.0, 3.05e-8)]


@pytest.mark.parametrize("x,expected", SF_TABLE)
def test_kolmogorov_survival_function(x, expected):
    assert ds.kolmogorov_sf(x) == pytest.approx(expected, rel=2e-3, abs=1e-4)


def test_kolmogorov_sf_is_continuous_where_the_formula_switches():
    assert ds.kolmogorov_sf(1.17999) == pytest.approx(ds.kolmogorov_sf(1.18001), abs=5e-5)


# -- health ------------------------------------------------------------------

@pytest.mark.parametrize("values,expected", [
    (list(range(1, 101)), 99.01),      # rank 0.99 * 99 = 98.01 -> 99 + 0.01 * (100 - 99)
    ([5.0], 5.0),
    ([], None),
    ([1.0, None, "x", 3.0], 2.98),
])
def test_p99(values, expected):
    got = ds.p99(values)
    assert got == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize("statuses,expected", [
    ([200, 200, 500, 404], 0.5),
    ([200, 201, 302], 0.0),
    ([], None),
    ([503], 1.0),
])
def test_error_rate(statuses, expected):
    assert ds.error_rate(statuses) == expected


# -- readers -----------------------------------------------------------------

def test_numeric_columns_keep_numbers_only():
    rows = [{"a": 1, "b": "x", "c": "2.5", "d": True, "e": None},
            {"a": "3", "b": 2, "c": "", "d": 1, "e": None}]
    assert ds.numeric_columns(rows) == {"a": [1.0, 3.0], "c": [2.5]}


@pytest.mark.parametrize("fmt,text", [
    ("csv", "amount,city\n1.5,a\n2.5,b\n"),
    ("jsonl", '{"amount": 1.5, "city": "a"}\n\n{"amount": 2.5, "city": "b"}\n'),
    ("json", json.dumps([{"amount": 1.5, "city": "a"}, {"amount": 2.5, "city": "b"}])),
])
def test_read_table(tmp_path, fmt, text):
    path = tmp_path / f"data.{fmt}"
    path.write_text(text)
    assert ds.read_table(path, fmt) == {"amount": [1.5, 2.5]}


def test_read_table_of_a_directory_and_unknown_format(tmp_path):
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "b.csv").write_text("x\n2\n")
    assert ds.read_table(tmp_path, "csv") == {"x": [1.0, 2.0]}
    with pytest.raises(ValueError, match="parquet"):
        ds.read_table(tmp_path / "a.csv", "parquet")
