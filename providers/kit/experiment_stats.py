"""The statistics of an experiment report: per-variant serving health and rewards,
the probability that each variant is best, a significance test, shadow agreement and
time series for charts.  Pure: records in, one JSON-able dict out (no I/O).

* `summarize` - everything the report shows, from capture and feedback records.
* `wilson_interval`, `t_interval`, `two_proportion_z`, `welch_t` - the pieces.

Conventions (the renderers print them as they are stated here):
- A request is an error when its HTTP status is 400 or more: 4xx and 5xx both count.
- `error_rate`, `traffic_share` and `prob_best` are fractions (0-1).
- Latency percentiles use numpy's linear interpolation between closest ranks.
- Reward intervals are 95%: Wilson for binary rewards, Student t otherwise.
- The test compares each live variant with the first (the control): the two-proportion
  z-test (pooled) for binary rewards, Welch's t-test for continuous ones; two-sided.
- P(best) is the bandit's posterior (`bandit.Policy`), from the same feedback.

Capture lines and feedback lines are those of contract section 3; a capture line
without ``variant``/``role`` (written before experiments existed) is variant
"primary", role "live".
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

try:
    from . import bandit
except ImportError:          # loaded by file path beside bandit.py
    import bandit

__all__ = ["summarize", "wilson_interval", "t_interval", "two_proportion_z", "welch_t",
           "infer_reward_kind", "outputs_agree", "SERIES_BUCKETS", "ALPHA",
           "PROB_BEST_DRAWS", "AGREEMENT_RTOL", "AGREEMENT_ATOL"]

#: Time buckets of the chart series.
SERIES_BUCKETS = 20
#: Significance level of the tests (two-sided) and 1 - the intervals' confidence.
ALPHA = 0.05
#: Monte Carlo draws for P(best); the seed is fixed so a report is reproducible.
PROB_BEST_DRAWS = 20_000
PROB_BEST_SEED = 12
#: Shadow and live numeric outputs agree when every value is within these tolerances
#: (numpy.isclose); outputs with more than one value per row agree by argmax instead.
AGREEMENT_RTOL = 1e-2
AGREEMENT_ATOL = 1e-6


# -- the pieces -------------------------------------------------------------------

def wilson_interval(successes: int, n: int, confidence: float = 1 - ALPHA) -> list[float] | None:
    """Wilson score interval of a proportion (scipy's binomtest); None for n = 0."""
    if n <= 0:
        return None
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence, method="wilson")
    return [float(ci.low), float(ci.high)]


def t_interval(values: Sequence[float], confidence: float = 1 - ALPHA) -> list[float] | None:
    """Student t interval of a mean; None below two values.  Values all equal give
    the degenerate interval [mean, mean]."""
    array = np.asarray(values, dtype=float)
    if array.size < 2:
        return None
    mean = float(array.mean())
    sem = float(stats.sem(array))
    if sem == 0.0:
        return [mean, mean]
    low, high = stats.t.interval(confidence, array.size - 1, loc=mean, scale=sem)
    return [float(low), float(high)]


def two_proportion_z(successes_a: int, n_a: int, successes_b: int, n_b: int) -> dict[str, Any]:
    """Pooled two-proportion z-test of b against a (two-sided).

    z = (p_b - p_a) / sqrt(p (1 - p) (1/n_a + 1/n_b)), p the pooled proportion;
    p-value = 2 * (1 - Phi(|z|)).  When both samples are all 0 or all 1 the
    difference is exactly 0 and so is z (p-value 1)."""
    if n_a <= 0 or n_b <= 0:
        raise ValueError("each sample needs at least one reward")
    p_a, p_b = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = 0.0 if se == 0.0 else (p_b - p_a) / se
    return {"test": "two-proportion z-test (pooled, two-sided)", "statistic": z,
            "p_value": float(2 * stats.norm.sf(abs(z))), "difference": p_b - p_a}


def welch_t(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Welch's t-test of b against a (scipy.stats.ttest_ind, equal_var=False,
    two-sided).  Needs two values in each sample; with no variance in both the
    statistic and p-value are None."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.size < 2 or xb.size < 2:
        raise ValueError("each sample needs at least two rewards")
    head = {"test": "Welch's t-test (two-sided)", "difference": float(xb.mean() - xa.mean())}
    if xa.var() == 0.0 and xb.var() == 0.0:
        # t is 0/0 or x/0: scipy would warn and answer nan or inf.
        return {**head, "statistic": None, "p_value": None, "df": None}
    result = stats.ttest_ind(xb, xa, equal_var=False)
    return {**head, "statistic": _finite(float(result.statistic)),
            "p_value": _finite(float(result.pvalue)), "df": _finite(float(result.df))}


def infer_reward_kind(rewards: Iterable[float]) -> str:
    """"binary" when every reward is 0 or 1 (and there is one), else "continuous"."""
    values = list(rewards)
    return "binary" if values and all(v in (0.0, 1.0) for v in values) else "continuous"


def outputs_agree(live: Any, shadow: Any) -> bool | None:
    """Whether a shadow's outputs agree with the live answer: same argmax per row when
    rows hold several values (classes), else every value close (AGREEMENT_RTOL/ATOL);
    outputs that are not numeric arrays agree when equal.  None when either is missing."""
    if live is None or shadow is None:
        return None
    try:
        a, b = np.asarray(live, dtype=float), np.asarray(shadow, dtype=float)
    except (TypeError, ValueError):
        return live == shadow
    if a.shape != b.shape:
        return False
    if a.ndim >= 2 and a.shape[-1] > 1:
        return bool(np.array_equal(np.argmax(a, axis=-1), np.argmax(b, axis=-1)))
    return bool(np.all(np.isclose(b, a, rtol=AGREEMENT_RTOL, atol=AGREEMENT_ATOL)))


# -- the report ---------------------------------------------------------------------

def summarize(captures: Iterable[Mapping[str, Any]], feedback: Iterable[Mapping[str, Any]], *,
              reward: str | None, experiment_type: str | None,
              variants: Sequence[str] | None = None,
              buckets: int = SERIES_BUCKETS) -> dict[str, Any]:
    """The report's numbers (a JSON-able dict; NaN never appears, None stands for
    "not enough data").

    `reward` is the experiment's kind ("binary"/"continuous"); None infers it from
    the rewards.  `variants` is the declared order of the live variants (the first is
    the control of the tests); by default the live variants seen, by name.

    Keys: experiment_type, reward {kind, inferred}, requests, period {start, end},
    variants {name: {requests, errors, error_rate, latency_p50_ms, latency_p99_ms,
    rewards, reward_mean, reward_ci95, prob_best, traffic_share}}, shadow {name:
    {requests, errors, error_rate, latency_p50_ms, latency_p99_ms, compared,
    agreement}}, tests [{variant, control, test, statistic, p_value, difference,
    significant, (df)} or {variant, control, test: None, reason}], series {buckets
    [{start, end}], traffic_share {name: [...]}, reward_mean {name: [...]}},
    definitions {...}."""
    live: list[Mapping[str, Any]] = []
    shadow: list[Mapping[str, Any]] = []
    for record in captures:
        (shadow if record.get("role") == "shadow" else live).append(record)
    rewards_of: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for record in feedback:
        value = _number(record.get("reward"))
        if value is not None and isinstance(record.get("variant"), str):
            rewards_of[record["variant"]].append((_number(record.get("time")) or 0.0, value))

    names = _live_names(variants, live, rewards_of)
    all_rewards = [r for pairs in rewards_of.values() for _, r in pairs]
    kind = reward if reward in bandit.REWARD_KINDS else infer_reward_kind(all_rewards)
    if kind == "binary":
        # A binary experiment's non-0/1 rewards cannot come from the server; drop them.
        rewards_of = defaultdict(list, {v: [(t, r) for t, r in pairs if r in (0.0, 1.0)]
                                        for v, pairs in rewards_of.items()})
    by_variant = defaultdict(list)
    for record in live:
        by_variant[_variant(record)].append(record)

    best = _prob_best(names, kind, rewards_of)
    total = len(live)
    report_variants = {}
    for name in names:
        records = by_variant.get(name, [])
        values = [r for _, r in rewards_of.get(name, [])]
        report_variants[name] = {
            **_health(records),
            "rewards": len(values),
            "reward_mean": float(np.mean(values)) if values else None,
            "reward_ci95": (wilson_interval(int(sum(values)), len(values)) if kind == "binary"
                            else t_interval(values)),
            "prob_best": best.get(name),
            "traffic_share": len(records) / total if total else None,
        }

    times = [t for t in (_number(r.get("time")) for r in live) if t is not None]
    return {
        "experiment_type": experiment_type,
        "reward": {"kind": kind, "inferred": reward not in bandit.REWARD_KINDS},
        "requests": total,
        "period": {"start": min(times), "end": max(times)} if times else None,
        "variants": report_variants,
        "shadow": _shadow(shadow, live),
        "tests": ([] if experiment_type == "shadow"
                  else _tests(names, kind, rewards_of)),
        "series": _series(names, live, rewards_of, buckets),
        "definitions": {
            "error": "HTTP status >= 400 (4xx and 5xx)",
            "latency": "percentiles with linear interpolation (numpy)",
            "reward_ci95": "Wilson score interval" if kind == "binary" else "Student t interval",
            "prob_best": "posterior probability of the highest mean reward (Thompson "
                         "posteriors, Monte Carlo)",
            "agreement": f"same argmax per row, or values within rtol={AGREEMENT_RTOL} "
                         f"atol={AGREEMENT_ATOL}",
            "significance_level": ALPHA,
        },
    }


def _live_names(declared: Sequence[str] | None, live: list, rewards_of: Mapping) -> list[str]:
    if declared:
        names = list(dict.fromkeys(declared))
        seen = {_variant(r) for r in live} | set(rewards_of)
        return names + sorted(seen - set(names))
    return sorted({_variant(r) for r in live} | set(rewards_of))


def _variant(record: Mapping[str, Any]) -> str:
    return str(record.get("variant") or "primary")


def _health(records: list[Mapping[str, Any]]) -> dict[str, Any]:
    statuses = [r.get("status") for r in records]
    errors = sum(1 for s in statuses if isinstance(s, (int, float)) and s >= 400)
    latencies = [x for x in (_number(r.get("latency_ms")) for r in records) if x is not None]
    return {"requests": len(records), "errors": errors,
            "error_rate": errors / len(records) if records else None,
            "latency_p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
            "latency_p99_ms": float(np.percentile(latencies, 99)) if latencies else None}


def _prob_best(names: list[str], kind: str, rewards_of: Mapping) -> dict[str, float]:
    if not names or not any(rewards_of.get(n) for n in names):
        return {}
    policy = bandit.Policy(names, kind, 0, None, seed=PROB_BEST_SEED)
    for name in names:
        for _, value in rewards_of.get(name, []):
            policy.update(name, value)
    return policy.prob_best(PROB_BEST_DRAWS)


def _tests(names: list[str], kind: str, rewards_of: Mapping) -> list[dict[str, Any]]:
    if len(names) < 2:
        return []
    control = names[0]
    a = [r for _, r in rewards_of.get(control, [])]
    results = []
    for name in names[1:]:
        b = [r for _, r in rewards_of.get(name, [])]
        head = {"variant": name, "control": control}
        try:
            result = (two_proportion_z(int(sum(a)), len(a), int(sum(b)), len(b))
                      if kind == "binary" else welch_t(a, b))
        except ValueError as exc:
            results.append({**head, "test": None, "reason": str(exc)})
            continue
        p = result["p_value"]
        results.append({**head, **result, "significant": p is not None and p < ALPHA})
    return results


def _shadow(shadow: list[Mapping[str, Any]], live: list[Mapping[str, Any]]) -> dict[str, Any]:
    answers = {r["request_id"]: r for r in live if r.get("request_id") is not None}
    by_variant = defaultdict(list)
    for record in shadow:
        by_variant[_variant(record)].append(record)
    report = {}
    for name in sorted(by_variant):
        records = by_variant[name]
        verdicts = []
        for record in records:
            answer = answers.get(record.get("request_id"))
            if answer is not None:
                verdict = outputs_agree(answer.get("outputs"), record.get("outputs"))
                if verdict is not None:
                    verdicts.append(verdict)
        report[name] = {**_health(records), "compared": len(verdicts),
                        "agreement": sum(verdicts) / len(verdicts) if verdicts else None}
    return report


def _series(names: list[str], live: list[Mapping[str, Any]], rewards_of: Mapping,
            buckets: int) -> dict[str, Any]:
    """Traffic share per bucket (None for an empty bucket) and the cumulative reward
    mean at each bucket's end (None before a variant's first reward), over equal-width
    buckets spanning the first to the last request or reward."""
    stamped = [(t, _variant(r)) for r, t in ((r, _number(r.get("time"))) for r in live)
               if t is not None]
    reward_times = [t for pairs in rewards_of.values() for t, _ in pairs]
    times = [t for t, _ in stamped] + reward_times
    if not times or buckets < 1:
        return {"buckets": [], "traffic_share": {}, "reward_mean": {}}
    start, end = min(times), max(times)
    width = (end - start) / buckets or 1.0
    edges = [start + i * width for i in range(buckets + 1)]

    def bucket(t: float) -> int:
        return min(buckets - 1, int((t - start) / width))

    counts = np.zeros((len(names), buckets))
    index = {n: i for i, n in enumerate(names)}
    for t, name in stamped:
        if name in index:
            counts[index[name], bucket(t)] += 1
    totals = counts.sum(axis=0)
    share = {n: [float(counts[i, b] / totals[b]) if totals[b] else None for b in range(buckets)]
             for n, i in index.items()}
    reward_mean = {}
    for name in names:
        sums, ns = np.zeros(buckets), np.zeros(buckets)
        for t, value in rewards_of.get(name, []):
            sums[bucket(t)] += value
            ns[bucket(t)] += 1
        cum_sum, cum_n = np.cumsum(sums), np.cumsum(ns)
        reward_mean[name] = [float(cum_sum[b] / cum_n[b]) if cum_n[b] else None
                             for b in range(buckets)]
    return {"buckets": [{"start": edges[b], "end": edges[b + 1]} for b in range(buckets)],
            "traffic_share": share, "reward_mean": reward_mean}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
