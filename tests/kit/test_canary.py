"""Canary analysis (`kit.canary`): measuring a version's traffic between two scrapes of
/metrics, the histogram quantile, the thresholds and the verdict over a bake.

The expositions are written by hand, as the model server writes them (kit/serving.py
`Telemetry`), with and without the `variant` label.
"""

from __future__ import annotations

import pytest

from mlform.providers.kit.canary import (
    Analysis, Check, Scrape, Threshold, histogram_quantile, judge, measure, metric_problem,
)

HEAD = """\
# HELP mlform_requests_total inference requests answered
# TYPE mlform_requests_total counter
"""
LATENCY_HEAD = """\
# HELP mlform_request_latency_seconds time from reading the request to its answer
# TYPE mlform_request_latency_seconds histogram
"""


def requests(*lines: tuple[str, str, float], variant: str | None = None) -> str:
    """mlform_requests_total samples: (version, code, count) each."""
    extra = f',variant="{variant}"' if variant else ""
    return HEAD + "".join(f'mlform_requests_total{{code="{code}",model="fraud",'
                          f'version="{version}"{extra}}} {count}\n'
                          for version, code, count in lines)


def latency(version: str, buckets: dict[str, float], total: float,
            variant: str | None = None) -> str:
    """One latency histogram series: cumulative counts by `le`, and its sum."""
    labels = f'model="fraud",version="{version}"' + (f',variant="{variant}"' if variant else "")
    out = "".join(f'mlform_request_latency_seconds_bucket{{le="{le}",{labels}}} {count}\n'
                  for le, count in buckets.items())
    count = buckets["+Inf"]
    return (out + f"mlform_request_latency_seconds_count{{{labels}}} {count}\n"
            f"mlform_request_latency_seconds_sum{{{labels}}} {total}\n")


# ----------------------------------------------------------------- measuring

@pytest.mark.parametrize("variant", [None, "primary"])
def test_requests_and_errors_of_the_canary_version_only(variant):
    before = Scrape.parse(requests(("1", "200", 500), ("2", "200", 10), ("2", "400", 1),
                                   variant=variant))
    now = Scrape.parse(requests(("1", "200", 900), ("1", "500", 7), ("2", "200", 40),
                                ("2", "400", 9), ("2", "503", 2), variant=variant))
    m = measure(before, now, 2)
    assert (m.version, m.requests, m.errors) == ("2", 40, 10)     # 30 + 8 + 2 since `before`
    assert m.error_rate == pytest.approx(0.25)
    old = measure(before, now, "1")
    assert (old.requests, old.errors) == (407, 7)


def test_a_version_first_seen_in_the_later_scrape_counts_from_zero():
    now = Scrape.parse(requests(("1", "200", 900), ("3", "200", 12)))
    assert measure(Scrape.parse(requests(("1", "200", 800))), now, 3).requests == 12
    assert measure(None, now, 3).requests == 12          # None: since the server started
    assert measure(None, now, 4).requests == 0 and measure(None, now, 4).error_rate is None


def test_a_counter_reset_counts_what_the_restarted_server_saw():
    before = Scrape.parse(requests(("2", "200", 500)))
    now = Scrape.parse(requests(("2", "200", 20), ("2", "500", 5)))
    m = measure(before, now, 2)
    assert (m.requests, m.errors) == (25, 5)


def test_p99_from_the_bucket_increases_by_linear_interpolation():
    # Before: 100 slow requests (all in 0.5-1 s); they must not count in this interval.
    before = Scrape.parse(LATENCY_HEAD + latency("2", {"0.1": 0, "0.2": 0, "0.5": 0, "1.0": 100,
                                                       "+Inf": 100}, 80.0))
    # Since then: 50 answers under 0.1 s, 50 more between 0.1 and 0.2 s.
    now = Scrape.parse(LATENCY_HEAD + latency("2", {"0.1": 50, "0.2": 100, "0.5": 100,
                                                    "1.0": 200, "+Inf": 200}, 87.5))
    m = measure(before, now, 2)
    # rank 0.99 * 100 = 99: the 49th of the 50 in (0.1, 0.2]: 0.1 + 0.1 * 49 / 50 s
    assert m.p99_ms == pytest.approx(198.0)
    assert measure(None, now, 2).p99_ms == pytest.approx(990.0)  # rank 198: 0.5 + 0.5 * 98/100


def test_latency_series_of_several_variants_are_summed():
    text = LATENCY_HEAD + latency("2", {"0.1": 99, "1.0": 99, "+Inf": 99}, 1.0, variant="a") \
        + latency("2", {"0.1": 0, "1.0": 1, "+Inf": 1}, 1.0, variant="b")
    # 100 observations; rank 99 lies at the top of the first bucket
    assert measure(None, Scrape.parse(text), 2).p99_ms == pytest.approx(100.0)


@pytest.mark.parametrize("q, buckets, expected", [
    (0.5, [(1.0, 10), (2.0, 20), (float("inf"), 20)], 1.0),           # at a bucket's top
    (0.25, [(1.0, 10), (2.0, 20), (float("inf"), 20)], 0.5),          # first bucket: from 0
    (0.75, [(1.0, 10), (2.0, 20), (float("inf"), 20)], 1.5),
    (0.99, [(1.0, 10), (2.0, 20), (float("inf"), 30)], 2.0),          # in +Inf: the last bound
    (0.9, [(float("inf"), 5), (0.5, 5), (0.25, 0)], 0.25 + 0.25 * 4.5 / 5),  # unsorted input
    (0.99, [(1.0, 0), (float("inf"), 0)], None),                      # nothing observed
    (0.99, [(1.0, 5)], None),                                         # no +Inf bucket
])
def test_histogram_quantile_as_prometheus_estimates_it(q, buckets, expected):
    got = histogram_quantile(q, buckets)
    assert got == (pytest.approx(expected) if expected is not None else None)


CUSTOM = HEAD + """\
mlform_requests_total{code="200",model="fraud",version="2"} 40
mlform_requests_total{code="503",model="fraud",version="2"} 10
mlform_requests_total{code="200",model="fraud",version="1"} 400
# TYPE mlform_request_rows histogram
mlform_request_rows_bucket{le="1.0",model="fraud",version="2"} 10
mlform_request_rows_bucket{le="+Inf",model="fraud",version="2"} 50
mlform_request_rows_count{model="fraud",version="2"} 50
mlform_request_rows_sum{model="fraud",version="2"} 250
mlform_request_rows_bucket{le="1.0",model="fraud",version="1"} 400
mlform_request_rows_bucket{le="+Inf",model="fraud",version="1"} 400
mlform_request_rows_count{model="fraud",version="1"} 400
mlform_request_rows_sum{model="fraud",version="1"} 400
# TYPE mlform_capture_queue_depth gauge
mlform_capture_queue_depth 7
# TYPE mlform_variant_weight gauge
mlform_variant_weight{variant="a"} 90
mlform_variant_weight{variant="b"} 10
# TYPE fraud_flagged_total counter
fraud_flagged_total{version="2"} 20
fraud_flagged_total{version="1"} 4
app_retries_total{version="2"} 5
"""


def test_custom_metrics_counter_per_request_histogram_mean_gauge_value():
    keys = ["fraud_flagged_total", "fraud_flagged", 'mlform_requests_total{code="503"}',
            "mlform_request_rows", "mlform_capture_queue_depth",
            'mlform_variant_weight{variant="b"}',
            'mlform_variant_weight{variant="z"}', "app_retries_total", "no_such_metric"]
    m = measure(None, Scrape.parse(CUSTOM), 2, keys)
    assert m.requests == 50
    assert m.metrics == {
        "fraud_flagged_total": pytest.approx(0.4),          # 20 increases per 50 requests
        "fraud_flagged": pytest.approx(0.4),
        'mlform_requests_total{code="503"}': pytest.approx(0.2),
        "mlform_request_rows": pytest.approx(5.0),          # 250 rows / 50 requests of version 2
        "mlform_capture_queue_depth": 7.0,                  # no version label: taken as is
        'mlform_variant_weight{variant="b"}': 10.0,
        'mlform_variant_weight{variant="z"}': None,         # no such series: no data
        "app_retries_total": pytest.approx(0.1),            # untyped X_total: a counter
    }
    assert m.missing == ("no_such_metric",)


@pytest.mark.parametrize("key", ["bad name", 'x{code=503}', 'x{code="5",}{', "{a=\"b\"}"])
def test_malformed_metric_keys_are_explained(key):
    assert "metric" in metric_problem(key) or "label" in metric_problem(key)


def test_well_formed_metric_keys():
    assert metric_problem('mlform_requests_total{code="503", model="fraud"}') is None
    assert metric_problem("mlform_request_rows") is None


def test_not_prometheus_text_is_a_value_error():
    with pytest.raises(ValueError):
        Scrape.parse("mlform_requests_total{code=200 1\n")


# ----------------------------------------------------------------- judging

ANALYSIS = {"max_error_rate": 0.01, "max_p99_ms": 250, "min_requests": 10}


def traffic(ok: int, failed: int, slow: int = 0) -> Scrape:
    """Version 2's counters since start: `ok` + `failed` requests, `slow` of them > 0.5 s."""
    n = ok + failed
    fast = n - slow
    return Scrape.parse(requests(("2", "200", ok), ("2", "500", failed)) + LATENCY_HEAD
                        + latency("2", {"0.1": fast, "0.5": fast, "1.0": n, "+Inf": n}, 1.0))


def test_a_healthy_canary_passes_with_each_value_and_limit():
    check = judge(ANALYSIS, measure(None, traffic(200, 1), 2))
    assert check.status == "passed" and check.requests == 201
    assert [(t.metric, t.limit, t.ok) for t in check.thresholds] == \
        [("error_rate", 0.01, True), ("p99_ms", 250.0, True)]
    assert check.thresholds[0].value == pytest.approx(1 / 201)
    assert check.describe() == "passed (201 canary requests): error_rate 0.00498 <= max 0.01, " \
                               "p99_ms 99 <= max 250"   # 0.1 s * 198.99 / 201


def test_errors_and_slowness_fail_naming_the_values():
    check = judge(ANALYSIS, measure(None, traffic(69, 31, slow=20), 2))
    assert check.status == "failed"
    assert [t.text() for t in check.failures] == ["error_rate 0.31 > max 0.01",
                                                  "p99_ms 975 > max 250"]  # 0.5 + 0.5 * 19/20 s


def test_fewer_than_min_requests_is_skipped_not_failed():
    check = judge(ANALYSIS, measure(None, traffic(5, 4), 2))
    assert check.status == "skipped" and check.thresholds == ()
    assert check.describe() == "skipped (9 canary requests): fewer than 10, not judged"
    lower = {**ANALYSIS, "min_requests": 9}
    assert judge(lower, measure(None, traffic(5, 4), 2)).status == "failed"


def test_custom_metric_bounds_and_a_metric_the_server_does_not_export():
    spec = {"metrics": {"mlform_request_rows": {"min": 1, "max": 4}, "fraud_flagged": {"max": 0.5},
                        "no_such_metric": {"max": 1}}, "min_requests": 1}
    check = judge(spec, measure(None, Scrape.parse(CUSTOM), 2, spec["metrics"]))
    assert check.status == "failed"
    assert [t.text() for t in check.failures] == ["mlform_request_rows 5 > max 4",
                                                  "no_such_metric is not exported by the server"]
    assert [t.text() for t in check.thresholds if t.ok] == \
        ["mlform_request_rows 5 >= min 1", "fraud_flagged 0.4 <= max 0.5"]


def test_values_that_round_alike_are_shown_apart():
    assert Threshold("accuracy", 0.9989, 0.999, "min").text() == "accuracy 0.9989 < min 0.999"
    assert Threshold("p99_ms", 250.4, 250, "max").text() == "p99_ms 250.4 > max 250"


# ----------------------------------------------------------------- the bake

def test_rollback_once_failures_exceed_those_allowed():
    analysis = Analysis({**ANALYSIS, "failures_allowed": 1}, 4)
    bad = {"max_error_rate": 0.01, "min_requests": 10}
    analysis.add(judge(bad, measure(None, traffic(100, 0), 2)))
    analysis.add(judge(bad, measure(None, traffic(69, 31), 2)))
    assert not analysis.rollback                  # one failed check is allowed
    assert analysis.summary() == ("canary version 4 passed analysis: error_rate 0.31 > max 0.01 "
                                  "(1 of 2 checks passed, 1 failed (1 allowed))")
    analysis.add(judge(bad, measure(None, traffic(3, 3), 2)))
    analysis.add(judge(bad, measure(None, traffic(80, 20), 2)))
    assert analysis.rollback
    assert analysis.summary() == ("canary version 4 failed analysis: error_rate 0.2 > max 0.01 "
                                  "(2 of 4 checks failed, 1 allowed; 1 skipped)")
    assert analysis.as_dict()["rollback"] is True


def test_the_first_failure_rolls_back_by_default():
    analysis = Analysis({"max_error_rate": 0.01}, 2)
    assert analysis.interval == 10 and analysis.failures_allowed == 0
    before = traffic(100, 0)
    assert analysis.check(None, before).status == "passed"
    assert not analysis.rollback
    analysis.check(before, Scrape.parse(requests(("2", "200", 169), ("2", "503", 31))))
    assert analysis.rollback
    assert analysis.summary() == \
        "canary version 2 failed analysis: error_rate 0.31 > max 0.01 (1 of 2 checks failed)"


def test_a_bake_without_enough_traffic_is_not_judged():
    analysis = Analysis({"max_error_rate": 0.01}, 4)
    analysis.check(None, traffic(2, 1))
    analysis.check(None, traffic(3, 1), span="bake")
    assert not analysis.rollback
    assert analysis.summary() == \
        "canary version 4 was not judged: each of 2 checks saw fewer than 10 canary requests"


def test_checks_made_elsewhere_report_the_same_way():
    """A cloud's alarms measure for the provider (SageMaker guardrails): same summary."""
    analysis = Analysis({"max_error_rate": 0.01, "max_p99_ms": 250}, 7)
    analysis.add(Check("failed", 120, (Threshold("error_rate", 0.05, 0.01, "max"),
                                       Threshold("p99_ms", 90.0, 250, "max"))))
    assert analysis.summary() == \
        "canary version 7 failed analysis: error_rate 0.05 > max 0.01 (1 of 1 checks failed)"
