"""The gate: a pipeline's run publishes its model only when a metric is within bounds.

`gate = { metric = "accuracy", min = 0.9 }` (and/or `max`).  `check_gate` says why a
run's metrics miss it, in the words every provider uses (a retrain reason or a failed
apply reads the same on `local`, `sagemaker` and `memory`), or None when they pass.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

__all__ = ["check_gate", "gate_metric"]


def gate_metric(gate: Any) -> str | None:
    """The metric a gate judges, or None when there is no (valid) gate."""
    if isinstance(gate, Mapping) and isinstance(gate.get("metric"), str):
        return gate["metric"]
    return None


def _shown(value: float, bound: float, below: bool) -> tuple[str, str]:
    """A miss as text: two decimals where they say it right, the threshold as written
    (`min 0.999`, never `min 1.00`), and the value with more digits where two decimals
    would print it on the wrong side of the threshold (`0.8999 < min 0.9`)."""
    bound_text = f"{bound:.2f}" if float(f"{bound:.2f}") == bound else f"{bound:.6g}"
    text = f"{value:.2f}"
    if (float(text) < bound) if below else (float(text) > bound):
        return text, bound_text
    text, bound_text = f"{value:.6g}", f"{bound:.6g}"
    return (text if text != bound_text else repr(value)), bound_text


def check_gate(gate: Any, metrics: Mapping[str, Any]) -> str | None:
    """Why the metrics miss the gate (`{metric, min?, max?}`), or None when they pass."""
    metric = gate_metric(gate)
    if metric is None:
        return None
    if metric not in metrics:
        reported = ", ".join(sorted(metrics)) or "none"
        return f"gate failed: metric {metric!r} was not reported (metrics: {reported})"
    value = metrics[metric]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return f"gate failed: metric {metric!r} is {value!r}, not a number"
    low, high = gate.get("min"), gate.get("max")
    if isinstance(low, (int, float)) and value < low:
        return "gate failed: {} {} < min {}".format(metric, *_shown(value, low, below=True))
    if isinstance(high, (int, float)) and value > high:
        return "gate failed: {} {} > max {}".format(metric, *_shown(value, high, below=False))
    return None
