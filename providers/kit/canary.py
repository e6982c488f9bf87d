"""Canary analysis: is a new model version healthy on its own live traffic?

Pure functions over two scrapes of the model server's ``/metrics`` (Prometheus
text, read with prometheus_client's parser); the providers do the scraping and the
rolling back.  One *check* compares two scrapes:

* `Scrape.parse(text)`: an exposition, parsed once;
* `measure(before, now, version, metrics)`: what the canary ``version`` did between
  the two scrapes (a `Measurement`): its requests (``mlform_requests_total``), the
  non-2xx ones, their share, its p99 latency estimated from the latency histogram's
  bucket increases as Prometheus' ``histogram_quantile`` does, and each custom metric:
  a counter's increase per canary request, a histogram's mean over the interval, a
  gauge's current value.  Samples are restricted to the canary's ``version`` label
  when a metric has that label (other labels, ``variant`` among them, are summed over);
* `judge(analysis, measurement)`: a `Check`, passed / failed / skipped (fewer than
  ``min_requests`` canary requests), with each threshold's measured value and limit;
* `Analysis`: the checks of one bake, and the verdict: ``rollback`` once more checks
  failed than ``failures_allowed``; `Analysis.summary` is the line an apply reports,
  e.g. ``canary version 4 failed analysis: error_rate 0.31 > max 0.01 (2 of 3 checks
  failed)``.  Providers whose cloud judges the canary (SageMaker's guardrail alarms)
  build `Check`s from what the alarms measured and report through the same summary.

A custom metric key is a metric name, optionally with label matchers:
``mlform_request_rows``, ``mlform_requests_total{code="503"}``.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Scrape", "Measurement", "Threshold", "Check", "Analysis", "measure", "judge",
           "histogram_quantile", "settings", "metric_problem", "REQUESTS", "LATENCY"]

#: the server's request counter and latency histogram (family names), see kit/serving.py
REQUESTS = "mlform_requests"
LATENCY = "mlform_request_latency_seconds"
#: the analysis settings that have defaults, as in specs/_kinds.py `Analysis`
DEFAULTS = {"interval_seconds": 10, "failures_allowed": 0, "min_requests": 10}

_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')

Labels = frozenset   # of (name, value) pairs


# ----------------------------------------------------------------- scrapes

@dataclass(frozen=True)
class Family:
    """One metric family of a scrape: its type and samples {(sample name, labels): value}."""

    name: str
    type: str
    samples: Mapping[tuple[str, Labels], float]


@dataclass(frozen=True)
class Scrape:
    """A parsed /metrics exposition."""

    families: Mapping[str, Family] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "Scrape":
        """Parse Prometheus text (ValueError when it is not Prometheus text)."""
        families = {}
        for family in text_string_to_metric_families(text):
            samples = {(s.name, frozenset(s.labels.items())): float(s.value)
                       for s in family.samples}
            families[family.name] = Family(family.name, family.type, samples)
        return cls(families)

    def family(self, name: str) -> Family | None:
        """The family `name`, or the counter whose sample is `name` (``X_total``)."""
        if name in self.families:
            return self.families[name]
        if name.endswith("_total"):
            found = self.families.get(name[: -len("_total")])
            if found is not None and found.type == "counter":
                return found
        return None


def metric_problem(key: str) -> str | None:
    """Why `key` is not a usable custom metric key (None when it is): for validation."""
    try:
        _selector(key)
    except ValueError as exc:
        return str(exc)
    return None


def _selector(key: str) -> tuple[str, dict[str, str]]:
    """``name{label="value", ...}`` -> (name, {label: value})."""
    match = _SELECTOR.fullmatch(key.strip())
    if match is None:
        raise ValueError(f'"{key}" is not a metric name (optionally with label matchers, '
                         'as in mlform_requests_total{code="503"})')
    name, body = match.group(1), (match.group(2) or "").strip()
    labels: dict[str, str] = {}
    position = 0
    while position < len(body):
        pair = _MATCHER.match(body, position)
        if pair is None:
            raise ValueError(f'"{key}": label matchers must read label="value", '
                             "separated by commas")
        labels[pair.group(1)] = pair.group(2).replace('\\"', '"').replace("\\\\", "\\")
        position = pair.end()
    return name, labels


def _selected(labels: Labels, wanted: Mapping[str, str]) -> bool:
    """Whether a sample's labels match: each wanted label equal, where the sample has it."""
    have = dict(labels)
    return all(have.get(k, v) == v for k, v in wanted.items() if k == "version") \
        and all(have.get(k) == v for k, v in wanted.items() if k != "version")


def _series(family: Family | None, sample: str, wanted: Mapping[str, str]) -> dict[Labels, float]:
    """{labels: value} of the family's samples called `sample` that match `wanted`."""
    if family is None:
        return {}
    return {labels: value for (name, labels), value in family.samples.items()
            if name == sample and _selected(labels, wanted)}


def _increase(before: float | None, now: float) -> float:
    """A counter's increase between two scrapes; a drop means it was reset (a restart)."""
    return now - before if before is not None and now >= before else now


def _counter_increase(before: Scrape | None, now: Scrape, name: str, sample: str,
                      wanted: Mapping[str, str]) -> dict[Labels, float]:
    old = _series((before or Scrape()).family(name), sample, wanted)
    return {labels: _increase(old.get(labels), value)
            for labels, value in _series(now.family(name), sample, wanted).items()}


# ----------------------------------------------------------------- histograms

def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The q-quantile of a histogram from its cumulative (upper bound, count) buckets,
    as Prometheus' ``histogram_quantile`` estimates it: linear interpolation inside the
    bucket holding the rank (from 0 for the first bucket); a rank in the +Inf bucket
    gives the highest finite bound.  None when the histogram holds no observation."""
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return None
    counts, highest = [], 0.0
    for _, count in ordered:        # buckets scraped mid-update may dip: keep them monotonic
        highest = max(highest, count)
        counts.append(highest)
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    index = next((i for i, c in enumerate(counts[:-1]) if c >= rank), len(counts) - 1)
    if index == len(counts) - 1:
        return ordered[-2][0]
    upper = ordered[index][0]
    if index == 0 and upper <= 0:
        return upper
    lower, below = (ordered[index - 1][0], counts[index - 1]) if index > 0 else (0.0, 0.0)
    inside = counts[index] - below
    return lower + (upper - lower) * ((rank - below) / inside if inside > 0 else 0.0)


def _histogram_delta(before: Scrape | None, now: Scrape, name: str,
                     wanted: Mapping[str, str]) -> tuple[dict[float, float], float, float]:
    """The histogram's increase between two scrapes, summed over the matching series:
    ({upper bound: cumulative count}, sum, count)."""
    def by_series(scrape: Scrape | None) -> dict[Labels, dict[str, Any]]:
        found: dict[Labels, dict[str, Any]] = defaultdict(lambda: {"buckets": {}})
        family = (scrape or Scrape()).family(name)
        if family is None or family.type != "histogram":
            return found
        for (sample, labels), value in family.samples.items():
            rest = frozenset((k, v) for k, v in labels if k != "le")
            if not _selected(rest, wanted):
                continue
            if sample == f"{name}_bucket":
                found[rest]["buckets"][float(dict(labels)["le"])] = value
            elif sample in (f"{name}_sum", f"{name}_count"):
                found[rest][sample[len(name) + 1:]] = value
        return found

    old = by_series(before)
    buckets: dict[float, float] = defaultdict(float)
    total_sum = total_count = 0.0
    for labels, series in by_series(now).items():
        prior = old.get(labels)
        # a series whose count went down was reset: its whole value is the increase
        if prior is None or series.get("count", 0.0) < prior.get("count", 0.0):
            prior = {"buckets": {}}
        for bound, count in series["buckets"].items():
            buckets[bound] += count - prior["buckets"].get(bound, 0.0)
        total_sum += series.get("sum", 0.0) - prior.get("sum", 0.0)
        total_count += series.get("count", 0.0) - prior.get("count", 0.0)
    return dict(buckets), total_sum, total_count


# ----------------------------------------------------------------- measuring

@dataclass(frozen=True)
class Measurement:
    """What the canary version did between two scrapes."""

    version: str
    requests: int
    errors: int                             # answered non-2xx
    p99_ms: float | None                    # None: no latency observed
    metrics: Mapping[str, float | None] = field(default_factory=dict)   # None: no data
    missing: tuple[str, ...] = ()           # custom metrics the server does not export

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


def measure(before: Scrape | None, now: Scrape, version: Any,
            metrics: Iterable[str] = ()) -> Measurement:
    """The canary `version`'s traffic between `before` (None: since the server started)
    and `now`, and each custom metric named in `metrics` (keys as in the spec)."""
    canary = {"version": str(version)}
    counts = _counter_increase(before, now, REQUESTS, f"{REQUESTS}_total", canary)
    requests = round(sum(counts.values()))
    errors = round(sum(v for labels, v in counts.items()
                       if not dict(labels).get("code", "200").startswith("2")))
    buckets, _, _ = _histogram_delta(before, now, LATENCY, canary)
    p99 = histogram_quantile(0.99, buckets.items())
    values: dict[str, float | None] = {}
    missing = []
    for key in metrics:
        name, labels = _selector(key)
        family = now.family(name)
        if family is None:
            missing.append(key)
            continue
        values[key] = _custom(before, now, family, name, {**canary, **labels}, requests)
    return Measurement(str(version), requests, errors,
                       p99 * 1000 if p99 is not None else None, values, tuple(missing))


def _custom(before: Scrape | None, now: Scrape, family: Family, name: str,
            wanted: Mapping[str, str], requests: int) -> float | None:
    """A custom metric's value for one check (see the module docstring)."""
    counter = family.type == "counter" or (family.type == "unknown" and name.endswith("_total"))
    if counter:     # an untyped X_total is a counter by Prometheus' naming convention
        sample = f"{family.name}_total" if family.type == "counter" else family.name
        increase = sum(_counter_increase(before, now, family.name, sample, wanted).values())
        return increase / requests if requests else None
    if family.type == "histogram":
        _, total, count = _histogram_delta(before, now, family.name, wanted)
        return total / count if count > 0 else None
    current = _series(family, family.name, wanted)      # gauge (or untyped): its value now
    return sum(current.values()) if current else None


# ----------------------------------------------------------------- judging

def _num(value: float) -> str:
    """A measured value or limit as people read it: 0.31, 12.3, 250, 1840."""
    if not math.isfinite(value):
        return str(value)
    if value == int(value) or abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.3g}"


@dataclass(frozen=True)
class Threshold:
    """One bound of the analysis and what was measured against it."""

    metric: str             # "error_rate", "p99_ms", or a custom metric's key
    value: float | None     # None: nothing measured (no data, or not exported)
    limit: float
    bound: str              # "max" | "min"
    exported: bool = True   # False: the server does not export this metric

    @property
    def ok(self) -> bool:
        if not self.exported:
            return False
        if self.value is None:
            return True         # no observation in the interval: nothing to hold against it
        return self.value <= self.limit if self.bound == "max" else self.value >= self.limit

    def text(self) -> str:
        if not self.exported:
            return f"{self.metric} is not exported by the server"
        if self.value is None:
            return f"{self.metric} no data (limit {self.bound} {_num(self.limit)})"
        relation = {("max", True): "<=", ("max", False): ">",
                    ("min", True): ">=", ("min", False): "<"}[self.bound, self.ok]
        value, limit = _num(self.value), _num(self.limit)
        digits = 4
        while value == limit and self.value != self.limit and digits <= 12:
            value = f"{self.value:.{digits}g}"      # 0.9989 < min 0.999, never 0.999 < min 0.999
            digits += 1
        return f"{self.metric} {value} {relation} {self.bound} {limit}"

    def as_dict(self) -> dict:
        return {"metric": self.metric, "value": self.value, "limit": self.limit,
                "bound": self.bound, "ok": self.ok}


@dataclass(frozen=True)
class Check:
    """One judgement of the canary: "passed", "failed" or "skipped"."""

    status: str
    requests: int
    thresholds: tuple[Threshold, ...] = ()
    min_requests: int = 0
    span: str = "interval"          # "interval" | "bake" (the whole bake, judged at its end)

    @property
    def failures(self) -> tuple[Threshold, ...]:
        return tuple(t for t in self.thresholds if not t.ok)

    def describe(self) -> str:
        head = f"{self.status} ({self.requests} canary requests" + \
            (" over the whole bake)" if self.span == "bake" else ")")
        if self.status == "skipped":
            return f"{head}: fewer than {self.min_requests}, not judged"
        shown = self.failures if self.status == "failed" else self.thresholds
        return f"{head}: " + ", ".join(t.text() for t in shown)

    def as_dict(self) -> dict:
        return {"status": self.status, "requests": self.requests, "span": self.span,
                "thresholds": [t.as_dict() for t in self.thresholds]}


def settings(analysis: Mapping | None) -> dict:
    """The analysis block with its defaults filled in (unset keys may arrive as None)."""
    given = {k: v for k, v in (analysis or {}).items() if v is not None}
    return {**DEFAULTS, "metrics": {}, **given}


def judge(analysis: Mapping, m: Measurement, span: str = "interval") -> Check:
    """The analysis' thresholds held against one measurement."""
    spec = settings(analysis)
    minimum = int(spec["min_requests"])
    if m.requests < minimum:
        return Check("skipped", m.requests, (), minimum, span)
    thresholds = []
    if spec.get("max_error_rate") is not None:
        thresholds.append(Threshold("error_rate", m.error_rate, float(spec["max_error_rate"]),
                                    "max"))
    if spec.get("max_p99_ms") is not None:
        thresholds.append(Threshold("p99_ms", m.p99_ms, float(spec["max_p99_ms"]), "max"))
    for key, bounds in (spec.get("metrics") or {}).items():
        for bound in ("min", "max"):
            limit = (bounds or {}).get(bound)
            if limit is not None:
                thresholds.append(Threshold(key, m.metrics.get(key), float(limit), bound,
                                            exported=key not in m.missing))
    status = "failed" if any(not t.ok for t in thresholds) else "passed"
    return Check(status, m.requests, tuple(thresholds), minimum, span)


class Analysis:
    """The checks of one canary version over its bake, and the verdict."""

    def __init__(self, analysis: Mapping, version: Any) -> None:
        self.spec = settings(analysis)
        self.version = version
        self.checks: list[Check] = []

    @property
    def interval(self) -> float:
        return float(self.spec["interval_seconds"])

    @property
    def failures_allowed(self) -> int:
        return int(self.spec["failures_allowed"])

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.spec.get("metrics") or {})

    def check(self, before: Scrape | None, now: Scrape, span: str = "interval") -> Check:
        """Measure and judge the canary between two scrapes, and keep the check."""
        return self.add(judge(self.spec, measure(before, now, self.version, self.metrics), span))

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)

    @property
    def rollback(self) -> bool:
        return self.count("failed") > self.failures_allowed

    def summary(self) -> str:
        """One line saying what happened, with the measured values that decided it."""
        failed, passed, skipped = (self.count(s) for s in ("failed", "passed", "skipped"))
        total = len(self.checks)
        tail = f"; {skipped} skipped" if skipped else ""
        name = f"canary version {self.version}"
        if self.rollback:
            worst = next(c for c in reversed(self.checks) if c.status == "failed")
            allowed = f", {self.failures_allowed} allowed" if self.failures_allowed else ""
            values = ", ".join(t.text() for t in worst.failures)
            return (f"{name} failed analysis: {values} "
                    f"({failed} of {total} checks failed{allowed}{tail})")
        if not passed and not failed:
            minimum = self.spec["min_requests"]
            return (f"{name} was not judged: each of {total} checks saw fewer than "
                    f"{minimum} canary requests")
        last = next(c for c in reversed(self.checks) if c.status != "skipped")
        values = ", ".join(t.text() for t in last.thresholds)
        failures = f", {failed} failed ({self.failures_allowed} allowed)" if failed else ""
        return (f"{name} passed analysis: {values} "
                f"({passed} of {total} checks passed{failures}{tail})")

    def as_dict(self) -> dict:
        return {"version": self.version, "rollback": self.rollback, "summary": self.summary(),
                "checks": [c.as_dict() for c in self.checks]}
