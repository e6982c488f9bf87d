"""Drift and health statistics of monitors: pure functions, no I/O except the two
readers at the end (a baseline file, capture rows).

The one module of the kit that imports numpy: only what computes statistics imports
it (a provider's monitor check, when it runs), so a provider package stays importable
without numpy.  It imports nothing of mlform, so the sagemaker provider uploads it
beside its drift check, which runs in AWS.

* `psi` - Population Stability Index of `current` against `baseline`.
* `ks` - two-sample Kolmogorov-Smirnov statistic with its asymptotic p-value.
* `p99`, `error_rate` - serving health from captured requests.

Only numpy is used (scipy is not a dependency); the KS p-value is the
Kolmogorov limiting distribution with Stephens' small-sample correction, as in
Numerical Recipes (`probks`), which is what `scipy.stats.ks_2samp(method="asymp")`
approximates too.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "features_to_check", "NO_COMMON_FEATURE",
    "PSI_EPSILON", "KsResult", "psi", "ks", "kolmogorov_sf", "p99", "error_rate",
    "numeric_columns", "read_table", "BASELINE_FORMATS",
]

#: Stands in for an empty bin's share, so ln(c/b) stays finite (a common choice: 1e-4).
PSI_EPSILON = 1e-4


def _sample(values: Iterable[float], what: str) -> np.ndarray:
    array = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    array = array[np.isfinite(array)]
    if array.size == 0:
        raise ValueError(f"the {what} sample is empty")
    return array


def psi(baseline: Sequence[float], current: Sequence[float], bins: int = 10) -> float:
    """Population Stability Index of `current` against `baseline`.

    Bins are quantiles of the baseline (deciles for ``bins=10``): the inner edges
    are ``quantile(baseline, k/bins)`` for k = 1..bins-1, deduplicated (a baseline
    with many equal values yields fewer bins), and the outer bins reach to -inf/+inf
    so current values outside the baseline's range still count. With ``b_i`` and
    ``c_i`` the shares of baseline and current values in bin i (a share of 0
    replaced by `PSI_EPSILON`)::

        PSI = sum_i (c_i - b_i) * ln(c_i / b_i)

    0 means the same distribution; by convention < 0.1 is stable, 0.1-0.2 a
    moderate shift and > 0.2 a significant one.
    """
    if bins < 2:
        raise ValueError("psi needs at least 2 bins")
    base = _sample(baseline, "baseline")
    cur = _sample(current, "current")
    edges = np.unique(np.quantile(base, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    # side="right": a value equal to an edge falls in the bin above it, for both samples alike.
    base_counts = np.bincount(np.searchsorted(edges, base, side="right"), minlength=edges.size + 1)
    cur_counts = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1)
    b = np.maximum(base_counts / base.size, PSI_EPSILON)
    c = np.maximum(cur_counts / cur.size, PSI_EPSILON)
    return float(np.sum((c - b) * np.log(c / b)))


@dataclass(frozen=True)
class KsResult:
    statistic: float   # D = sup_x |F_baseline(x) - F_current(x)|
    p_value: float     # asymptotic P(D >= observed) when both come from one distribution


def ks(baseline: Sequence[float], current: Sequence[float]) -> KsResult:
    """Two-sample Kolmogorov-Smirnov test.

    D is the largest distance between the two empirical CDFs, evaluated at every
    value of the pooled sample (where the step functions jump). The p-value is
    ``kolmogorov_sf((sqrt(ne) + 0.12 + 0.11 / sqrt(ne)) * D)`` with
    ``ne = n1 * n2 / (n1 + n2)`` (Stephens 1970).
    """
    a = np.sort(_sample(baseline, "baseline"))
    b = np.sort(_sample(current, "current"))
    pooled = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, pooled, side="right") / a.size
    cdf_b = np.searchsorted(b, pooled, side="right") / b.size
    d = float(np.max(np.abs(cdf_a - cdf_b)))
    en = math.sqrt(a.size * b.size / (a.size + b.size))
    return KsResult(statistic=d, p_value=kolmogorov_sf((en + 0.12 + 0.11 / en) * d))


def kolmogorov_sf(lam: float) -> float:
    """Q_KS(lam) = 2 * sum_{j>=1} (-1)^(j-1) exp(-2 j^2 lam^2), the Kolmogorov survival function.

    The alternating series converges slowly for small lam, so there the equivalent
    form ``1 - sqrt(2 pi)/lam * sum_{j>=1} exp(-(2j-1)^2 pi^2 / (8 lam^2))`` is used.
    """
    if lam <= 0:
        return 1.0
    if lam < 1.18:
        y = math.exp(-math.pi ** 2 / (8 * lam * lam))
        series = sum(y ** ((2 * j - 1) ** 2) for j in range(1, 6))
        return float(min(1.0, max(0.0, 1.0 - math.sqrt(2 * math.pi) / lam * series)))
    x = math.exp(-2 * lam * lam)
    series = sum((-1) ** (j - 1) * x ** (j * j) for j in range(1, 6))
    return float(min(1.0, max(0.0, 2.0 * series)))


def p99(values: Sequence[float]) -> float | None:
    """The 99th percentile (linear interpolation between closest ranks, numpy's default);
    None for no values."""
    array = np.asarray([v for v in values if isinstance(v, (int, float)) and math.isfinite(v)],
                       dtype=float)
    return float(np.percentile(array, 99)) if array.size else None


def error_rate(statuses: Sequence[int], error_from: int = 400) -> float | None:
    """Share of requests the endpoint did not answer successfully (HTTP status >= 400);
    None for no requests."""
    codes = [s for s in statuses if isinstance(s, int)]
    if not codes:
        return None
    return sum(1 for s in codes if s >= error_from) / len(codes)


# ------------------------------------------------------------------ readers

def _number(value: Any) -> float | None:
    """A finite float for numeric cells ("1.5", 3), None for empty ones; raises for text."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):      # true/false are categories, not magnitudes
        raise ValueError(value)
    number = float(value)            # ValueError/TypeError for text, lists, dicts
    if not math.isfinite(number):
        return None
    return number


NO_COMMON_FEATURE = "no numeric feature is in both the baseline and the captured inputs"


def features_to_check(check: Mapping[str, Any], baseline: Mapping[str, Any],
                      current: Mapping[str, Any]) -> list[str]:
    """The features a psi/ks check measures: the one it names, else every numeric column
    in both samples, sorted (empty when there is none: report `NO_COMMON_FEATURE`).

    Shared by every provider's monitor check, so all pick features the same way."""
    if check.get("feature"):
        return [check["feature"]]
    return sorted(set(baseline) & set(current))


def numeric_columns(records: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    """The numeric columns of a list of row dicts: column -> its non-empty values.

    A column with any value that is not a number (text, a bool, a list) is left
    out whole: drift of a categorical feature is not measured by PSI/KS here.
    """
    columns: dict[str, list[float]] = {}
    rejected: set[str] = set()
    for record in records:
        if not isinstance(record, Mapping):
            continue
        for raw_key, value in record.items():
            key = str(raw_key)
            if key in rejected:
                continue
            try:
                number = _number(value)
            except (TypeError, ValueError):
                rejected.add(key)
                columns.pop(key, None)
                continue
            column = columns.setdefault(key, [])
            if number is not None:
                column.append(number)
    return {key: values for key, values in columns.items() if values}


def _csv_rows(path: Path) -> Iterable[dict]:
    with open(path, newline="") as fh:
        yield from csv.DictReader(fh)


def _jsonl_rows(path: Path) -> Iterable[dict]:
    with open(path) as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _json_rows(path: Path) -> Iterable[dict]:
    doc = json.loads(path.read_text())
    if isinstance(doc, Mapping):            # {"rows": [...]} / {"data": [...]}, or one record
        doc = next((v for v in doc.values() if isinstance(v, list)), [doc])
    return doc if isinstance(doc, list) else []


#: Baseline formats the local monitor reads, by dataset `format`.
BASELINE_FORMATS = {"csv": _csv_rows, "jsonl": _jsonl_rows, "json": _json_rows}


def read_table(path: Path, fmt: str) -> dict[str, list[float]]:
    """The numeric columns of a csv / jsonl / json file (or of every such file in a directory)."""
    reader = BASELINE_FORMATS.get(fmt)
    if reader is None:
        raise ValueError(f"cannot read {fmt!r} baselines (readable: {', '.join(BASELINE_FORMATS)})")
    path = Path(path)
    files = sorted(p for p in path.rglob(f"*.{fmt}") if p.is_file()) if path.is_dir() else [path]

    def rows() -> Iterable[dict]:
        for file in files:
            yield from reader(file)

    return numeric_columns(rows())
