"""The experiment report's statistics (`providers/kit/experiment_stats.py`), checked
against values worked out by hand and against scipy called directly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from mlform.providers.kit import experiment_stats as es


def capture(time, request_id, variant, status=200, latency_ms=10.0, role="live", outputs=None):
    return {"time": time, "request_id": request_id, "variant": variant, "role": role,
            "status": status, "latency_ms": latency_ms, "outputs": outputs}


def feedback(time, request_id, variant, reward):
    return {"time": time, "request_id": request_id, "variant": variant, "reward": reward}


# -- the pieces -----------------------------------------------------------------

def test_wilson_interval_by_hand():
    # 3 of 10, z = 1.959964: centre (p + z^2/2n) / (1 + z^2/n), half-width
    # z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2)
    z, n, p = stats.norm.ppf(0.975), 10, 0.3
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert es.wilson_interval(3, 10) == pytest.approx([centre - half, centre + half])
    assert es.wilson_interval(3, 10) == pytest.approx([0.10779, 0.60322], abs=1e-5)
    assert es.wilson_interval(0, 0) is None


def test_t_interval_by_hand():
    # 1..4: mean 2.5, s = 1.290994, sem = 0.645497, t(0.975, 3) = 3.182446
    assert es.t_interval([1, 2, 3, 4]) == pytest.approx([2.5 - 2.054260, 2.5 + 2.054260], abs=1e-6)
    assert es.t_interval([5.0, 5.0]) == [5.0, 5.0]
    assert es.t_interval([1.0]) is None


def test_two_proportion_z_by_hand():
    # 30/100 vs 45/100: pooled 0.375, se = sqrt(0.375 * 0.625 * 0.02) = 0.0684653,
    # z = 0.15 / se = 2.190890, p = 2 * (1 - Phi(z)) = 0.028459
    result = es.two_proportion_z(30, 100, 45, 100)
    assert result["statistic"] == pytest.approx(2.190890, abs=1e-6)
    assert result["p_value"] == pytest.approx(0.028459, abs=1e-6)
    assert result["difference"] == pytest.approx(0.15)
    assert es.two_proportion_z(0, 5, 0, 7)["p_value"] == 1.0


@settings(max_examples=60, deadline=None)
@given(n_a=st.integers(1, 400), n_b=st.integers(1, 400), data=st.data())
def test_two_proportion_z_equals_the_uncorrected_chi_square(n_a, n_b, data):
    s_a = data.draw(st.integers(0, n_a))
    s_b = data.draw(st.integers(0, n_b))
    if s_a + s_b in (0, n_a + n_b):
        return          # a column of zeros: chi-square is undefined
    table = [[s_a, n_a - s_a], [s_b, n_b - s_b]]
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    result = es.two_proportion_z(s_a, n_a, s_b, n_b)
    assert result["statistic"] ** 2 == pytest.approx(chi2, rel=1e-9, abs=1e-12)
    assert result["p_value"] == pytest.approx(p, rel=1e-7, abs=1e-12)


def test_welch_matches_scipy():
    a, b = [1.0, 2.0, 4.0, 3.5], [2.0, 3.0, 5.5, 6.0, 4.0]
    direct = stats.ttest_ind(b, a, equal_var=False)
    result = es.welch_t(a, b)
    assert result["statistic"] == pytest.approx(direct.statistic)
    assert result["p_value"] == pytest.approx(direct.pvalue)
    assert result["test"] == "Welch's t-test (two-sided)"
    assert es.welch_t([1.0, 1.0], [2.0, 2.0])["p_value"] is None
    with pytest.raises(ValueError, match="at least two"):
        es.welch_t([1.0], [1.0, 2.0])


@pytest.mark.parametrize("live,shadow,agree", [
    ([[0.1, 0.9]], [[0.3, 0.7]], True),          # same class
    ([[0.6, 0.4]], [[0.4, 0.6]], False),
    ([[1.0], [2.0]], [[1.005], [2.0]], True),    # within rtol 1e-2
    ([[1.0]], [[1.5]], False),
    ([[1.0]], [[1.0], [1.0]], False),            # different shape
    (["cat"], ["cat"], True), (None, [[1.0]], None)])
def test_outputs_agree(live, shadow, agree):
    assert es.outputs_agree(live, shadow) is agree


# -- the report -----------------------------------------------------------------

CAPTURES = [
    capture(0.0, "r1", "a", 200, 10.0), capture(1.0, "r2", "a", 404, 20.0),
    capture(2.0, "r3", "a", 200, 30.0), capture(3.0, "r4", "a", 500, 40.0),
    capture(4.0, "r5", "b", 200, 5.0), capture(5.0, "r6", "b", 200, 15.0),
    {"time": 6.0, "endpoint": "e", "version": 1, "status": 200, "latency_ms": 7.0},  # old line
]
FEEDBACK = [feedback(1.5, "r1", "a", 1), feedback(2.5, "r3", "a", 0),
            feedback(4.5, "r5", "b", 1), feedback(5.5, "r6", "b", 1)]


def test_summary_by_hand():
    report = es.summarize(CAPTURES, FEEDBACK, reward="binary", experiment_type="ab")
    json.dumps(report, allow_nan=False)
    a, b = report["variants"]["a"], report["variants"]["b"]
    assert list(report["variants"]) == ["a", "b", "primary"]
    assert (a["requests"], a["errors"], a["error_rate"]) == (4, 2, 0.5)   # 404 and 500
    assert a["latency_p50_ms"] == 25.0
    assert a["latency_p99_ms"] == pytest.approx(39.7)                    # 30 + 0.97 * 10
    assert (a["rewards"], a["reward_mean"]) == (2, 0.5)
    assert a["reward_ci95"] == pytest.approx(es.wilson_interval(1, 2))
    assert b["traffic_share"] == pytest.approx(2 / 7)
    assert report["variants"]["primary"]["rewards"] == 0
    assert sum(v["prob_best"] for v in report["variants"].values()) == pytest.approx(1.0)
    assert report["requests"] == 7 and report["period"] == {"start": 0.0, "end": 6.0}
    assert report["reward"] == {"kind": "binary", "inferred": False}
    assert report["tests"][0] == {"variant": "b", "control": "a",
                                  **es.two_proportion_z(1, 2, 2, 2),
                                  "significant": False}
    assert report["tests"][1]["test"] is None and "at least one" in report["tests"][1]["reason"]


def test_every_variant_is_tested_against_the_first_declared():
    env = np.random.default_rng(1)
    rewards = {"b": env.normal(1.0, 1.0, 40), "a": env.normal(1.5, 1.0, 30),
               "c": env.normal(0.5, 1.0, 50)}
    fb = [feedback(float(i), f"{v}{i}", v, float(x))
          for v, xs in rewards.items() for i, x in enumerate(xs)]
    report = es.summarize([], fb, reward=None, experiment_type="bandit", variants=["b", "a", "c"])
    assert report["reward"] == {"kind": "continuous", "inferred": True}
    assert [(t["variant"], t["control"]) for t in report["tests"]] == [("a", "b"), ("c", "b")]
    for test in report["tests"]:
        direct = stats.ttest_ind(rewards[test["variant"]], rewards["b"], equal_var=False)
        assert test["p_value"] == pytest.approx(direct.pvalue)
        assert test["significant"] == (direct.pvalue < 0.05)
    for name, values in rewards.items():
        low, high = stats.t.interval(0.95, values.size - 1, loc=values.mean(),
                                     scale=stats.sem(values))
        assert report["variants"][name]["reward_ci95"] == pytest.approx([low, high])
        assert report["variants"][name]["reward_mean"] == pytest.approx(values.mean())
    assert report["variants"]["a"]["prob_best"] > 0.9


def test_shadow_is_reported_apart_with_its_agreement():
    captures = [
        capture(0.0, "r1", "a", outputs=[[0.1, 0.9]]),
        capture(0.1, "r1", "s", role="shadow", latency_ms=50.0, outputs=[[0.2, 0.8]]),
        capture(1.0, "r2", "a", outputs=[[0.7, 0.3]]),
        capture(1.1, "r2", "s", role="shadow", latency_ms=70.0, outputs=[[0.1, 0.9]]),
        capture(2.0, "r3", "a", outputs=[[0.7, 0.3]]),
        capture(2.1, "r3", "s", role="shadow", status=500, latency_ms=90.0),
        capture(3.1, "lost", "s", role="shadow", outputs=[[1.0, 0.0]]),
    ]
    report = es.summarize(captures, [], reward=None, experiment_type="shadow")
    assert list(report["variants"]) == ["a"] and report["requests"] == 3
    shadow = report["shadow"]["s"]
    assert (shadow["requests"], shadow["errors"], shadow["compared"]) == (4, 1, 2)
    assert shadow["agreement"] == 0.5
    assert shadow["latency_p50_ms"] == 60.0
    assert report["tests"] == []


def test_series_over_two_buckets_by_hand():
    captures = [capture(0.0, "1", "a"), capture(1.0, "2", "b"), capture(2.0, "3", "b"),
                capture(3.0, "4", "a"), capture(4.0, "5", "b")]
    fb = [feedback(0.5, "1", "a", 1), feedback(3.5, "4", "a", 0), feedback(3.9, "5", "b", 1)]
    series = es.summarize(captures, fb, reward="binary", experiment_type="ab",
                          buckets=2)["series"]
    assert series["buckets"] == [{"start": 0.0, "end": 2.0}, {"start": 2.0, "end": 4.0}]
    # bucket 0: t in [0, 2) -> a, b; bucket 1: t in [2, 4] -> b, a, b
    assert series["traffic_share"] == {"a": [0.5, pytest.approx(1 / 3)],
                                       "b": [0.5, pytest.approx(2 / 3)]}
    assert series["reward_mean"] == {"a": [1.0, 0.5], "b": [None, 1.0]}


def test_empty_inputs_give_an_empty_report():
    report = es.summarize([], [], reward=None, experiment_type=None)
    assert report["variants"] == {} and report["tests"] == [] and report["period"] is None
    assert report["series"] == {"buckets": [], "traffic_share": {}, "reward_mean": {}}
    json.dumps(report, allow_nan=False)
