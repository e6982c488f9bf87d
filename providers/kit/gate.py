"""The gate: a pipeline's run publishes its model only when a metric is within bounds,
and (champion/challenger) only when it beats the version a registry holds in a stage.

`gate = { metric = "accuracy", min = 0.9 }` (and/or `max`).  `check_gate` says why a
run's metrics miss it, in the words every provider uses (a retrain reason or a failed
apply reads the same on `local`, `sagemaker`, `kubernetes` and `memory`), or None when
they pass.

`must_beat = "production"` (with `margin`, `goal` and optionally `model`) compares the
run with the *champion*: the version the stage alias points at, judged on the metrics
the registry recorded for it when it was registered (`kit.champions`).  A provider
finds the champions (one per registry) and calls `check_challenger`; `champion_note`
is the line the run's record keeps (also when there was no champion to beat), and
`champion_reason` what plan shows.  Passing means ``value >= champion + margin``
(``<= champion - margin`` for ``goal = "minimize"``): the margin is absolute, on the
same metric.  A champion without a recorded value of the metric (registered before
metrics were recorded, or by hand) cannot be compared: the run passes and the note
says so, rather than blocking every future run.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

__all__ = ["check_gate", "gate_metric", "challenge", "check_challenger", "champion_note",
           "champion_reason", "GOALS"]

GOALS = ("maximize", "minimize")


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


# -- champion / challenger -------------------------------------------------------------

def challenge(gate: Any) -> dict | None:
    """The champion/challenger part of a gate, normalised (``{metric, must_beat, margin,
    goal, model}``), or None when the gate names no stage to beat."""
    metric = gate_metric(gate)
    stage = gate.get("must_beat") if metric is not None else None
    if not isinstance(stage, str) or not stage:
        return None
    margin = gate.get("margin")
    goal = gate.get("goal")
    model = gate.get("model")
    return {"metric": metric, "must_beat": stage,
            "margin": float(margin) if isinstance(margin, (int, float))
            and not isinstance(margin, bool) else 0.0,
            "goal": goal if goal in GOALS else "maximize",
            "model": model if isinstance(model, str) and model else None}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _beats(value: float, target: float, goal: str) -> bool:
    """"By at least the margin": reaching the target exactly passes (within float noise:
    0.80 + 0.05 is 0.8500000000000001)."""
    if math.isclose(value, target, rel_tol=1e-9, abs_tol=1e-12):
        return True
    return value > target if goal == "maximize" else value < target


def _texts(value: float, champion: float, margin: float, goal: str) -> tuple[str, str, str]:
    """The three numbers of a comparison as text: two decimals where they tell the truth
    (the printed numbers compare as the real ones do); else each number as it is (two
    decimals where that is exact, more digits where not), never a rounding that reads
    as the opposite verdict."""
    sign = 1 if goal == "maximize" else -1
    numbers = (value, champion, margin)
    verdict = _beats(value, champion + sign * margin, goal)

    def truthful(texts: tuple[str, ...]) -> bool:
        shown = [float(t) for t in texts]
        return _beats(shown[0], shown[1] + sign * shown[2], goal) == verdict

    two = tuple(f"{x:.2f}" for x in numbers)
    if truthful(two):
        return two   # type: ignore[return-value]
    exact = tuple(f"{x:.2f}" if float(f"{x:.2f}") == x else f"{x:.6g}" for x in numbers)
    return exact if truthful(exact) else tuple(repr(x) for x in numbers)   # type: ignore


def _champions(champion: Any) -> list[Mapping[str, Any]]:
    if champion is None:
        return []
    if isinstance(champion, Mapping):
        return [champion]
    return [c for c in champion if isinstance(c, Mapping)]


def _whose(stage: str, champion: Mapping[str, Any]) -> str:
    """``production (model.fraud version 3)``."""
    model = champion.get("model")
    return f"{stage} ({model + ' ' if model else ''}version {champion.get('version')})"


def _compared(gate: Mapping[str, Any], value: float, champion: Mapping[str, Any]
              ) -> tuple[bool, str] | None:
    """(passed, the comparison in words), or None when the champion has no number for the
    metric (nothing to compare with)."""
    metric, margin, goal = gate["metric"], gate["margin"], gate["goal"]
    theirs = _number((champion.get("metrics") or {}).get(metric))
    if theirs is None:
        return None
    sign = 1 if goal == "maximize" else -1
    passed = _beats(value, theirs + sign * margin, goal)
    mine, their_text, margin_text = _texts(value, theirs, margin, goal)
    target = f"{metric} {their_text}" + (f" {'+' if sign > 0 else '-'} margin {margin_text}"
                                         if margin else "")
    verb = "beats" if passed else "does not beat"
    return passed, f"{metric} {mine} {verb} {_whose(gate['must_beat'], champion)} {target}"


def _own(champion: Mapping[str, Any], run_id: Any) -> bool:
    """Is the champion this very run (a kept or re-judged run that was promoted)?"""
    return run_id is not None and champion.get("run_id") == run_id


def check_challenger(gate: Any, metrics: Mapping[str, Any], champion: Any, *,
                     run_id: Any = None) -> str | None:
    """Why the run does not beat the champion(s) (`{version, metrics, model?, run_id?}`, a
    list of them, or None when no version is in the stage yet), or None when it does.

    Call it after `check_gate` passed (which reports a metric the run did not report).
    A champion that is the run itself (`run_id`) is not a rival."""
    wanted = challenge(gate)
    if wanted is None:
        return None
    value = _number(metrics.get(wanted["metric"]))
    if value is None:
        return check_gate(gate, metrics) or \
            f"gate failed: metric {wanted['metric']!r} was not reported"
    for champion in _champions(champion):
        if _own(champion, run_id):
            continue
        found = _compared(wanted, value, champion)
        if found is not None and not found[0]:
            return f"gate failed: {found[1]}"
    return None


def champion_note(gate: Any, metrics: Mapping[str, Any], champion: Any, *,
                  run_id: Any = None) -> str | None:
    """What the run's record says about the comparison (None without `must_beat`)."""
    wanted = challenge(gate)
    if wanted is None:
        return None
    stage, metric = wanted["must_beat"], wanted["metric"]
    champions = _champions(champion)
    if not champions:
        where = f"of {wanted['model']} " if wanted["model"] else ""
        return (f"no champion yet: no version {where}is in stage {stage!r}, so the run "
                f"was not compared")
    value = _number(metrics.get(metric))
    notes = []
    for one in champions:
        if _own(one, run_id):
            notes.append(f"this run is {_whose(stage, one)}")
            continue
        found = _compared(wanted, value, one) if value is not None else None
        notes.append(found[1] if found is not None else
                     f"{_whose(stage, one)} has no recorded {metric}, so the run was not "
                     f"compared with it")
    return "; ".join(notes)


def champion_reason(gate: Any, champion: Any) -> str | None:
    """What plan shows for a run it will make: the number the run must reach."""
    wanted = challenge(gate)
    if wanted is None:
        return None
    stage, metric, margin = wanted["must_beat"], wanted["metric"], wanted["margin"]
    champions = _champions(champion)
    if not champions:
        where = f"of {wanted['model']} " if wanted["model"] else ""
        return f"no version {where}is in stage {stage!r} yet: the run becomes the first champion"
    parts = []
    for one in champions:
        theirs = _number((one.get("metrics") or {}).get(metric))
        if theirs is None:
            parts.append(f"{_whose(stage, one)}, which has no recorded {metric}")
            continue
        sign = "+" if wanted["goal"] == "maximize" else "-"
        parts.append(f"{_whose(stage, one)} {metric} {theirs:.6g}"
                     + (f" {sign} margin {margin:.6g}" if margin else ""))
    return "the run must beat " + "; ".join(parts)
