"""Hyperparameter sweeps, provider-neutral: the `sweep = { }` of a pipeline as Optuna sees it.

A sweep runs `trials` trials of the pipeline's entrypoint, each with the pipeline's
`hyperparameters` plus values Optuna draws from `parameters`; the best trial by
`objective` (a metric of its metrics.json) in `direction` becomes the pipeline's
result, its values the computed attribute `best_parameters`.  What every provider
running sweeps shares is here: the search space as Optuna distributions, the sampler
(TPE, seeded; a "constant liar" so trials asked while others run spread out) and the
pruner (``pruning = "median"``: Optuna's MedianPruner on the objective's step values,
from the script's step lines), the objective read from a trial's metrics with the
message when the script never reported it, which trials count toward `trials`, the
plan (`plan_sweep`: `best_parameters` kept or unknown, the "sweep of N trials over ..."
reason).

Optuna is imported inside the functions that need it: a plan, or an apply without a
sweep, never loads it.  Where a provider keeps the study (a journal file, a database)
is its business; `open_study` opens one on an Optuna storage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from mlform.providers.base import (
    UNKNOWN, Planned, ProviderError, contains_unknown,
)

if TYPE_CHECKING:   # only for the annotations: optuna is imported when a sweep runs
    import optuna

__all__ = ["SweepSpec", "MissingObjective", "sweep_of", "distributions", "sampler",
           "pruner", "open_study", "objective_value", "trial_hyperparameters",
           "counted", "OPEN", "best_trial", "plan_sweep", "sweep_reason",
           "placeholder_parameters", "runnable", "BEST_PARAMETERS"]

#: the computed attribute holding the best trial's values
BEST_PARAMETERS = "best_parameters"
#: user attribute of a trial: True from when it is asked until its run ends (False); a
#: trial told failed while still open was cut short (a killed apply): it does not count
OPEN = "mlform_open"
#: the name of the one study a sweep's storage holds
STUDY_NAME = "sweep"


@dataclass(frozen=True)
class SweepSpec:
    """A pipeline's `sweep` (the engine checked it against specs' `Sweep`)."""

    objective: str
    direction: str
    trials: int
    parallel: int
    seed: int | None
    pruning: str
    parameters: Mapping[str, Mapping[str, Any]]

    @property
    def names(self) -> list[str]:
        return list(self.parameters)


def sweep_of(attrs: Mapping[str, Any]) -> SweepSpec | None:
    """The pipeline's sweep, or None when it has none (or it is not known yet)."""
    raw = attrs.get("sweep")
    if not isinstance(raw, Mapping) or contains_unknown(raw):
        return None
    return SweepSpec(objective=str(raw["objective"]), direction=str(raw["direction"]),
                     trials=int(raw["trials"]), parallel=int(raw.get("parallel") or 1),
                     seed=None if raw.get("seed") is None else int(raw["seed"]),
                     pruning=str(raw.get("pruning") or "none"),
                     parameters={str(k): dict(v) for k, v in raw["parameters"].items()})


class MissingObjective(Exception):
    """A trial's metrics do not hold the objective as a number."""


# -- Optuna ----------------------------------------------------------------------------

def distributions(spec: SweepSpec) -> "dict[str, optuna.distributions.BaseDistribution]":
    """The search space as Optuna distributions, by parameter name."""
    from optuna.distributions import (
        CategoricalDistribution, FloatDistribution, IntDistribution,
    )
    out: dict[str, Any] = {}
    for name, p in spec.parameters.items():
        if p["type"] == "categorical":
            out[name] = CategoricalDistribution(list(p["values"]))
        elif p["type"] == "int":
            out[name] = IntDistribution(int(p["min"]), int(p["max"]), log=bool(p.get("log")),
                                        step=int(p.get("step") or 1))
        else:
            out[name] = FloatDistribution(float(p["min"]), float(p["max"]),
                                          log=bool(p.get("log")))
    return out


def sampler(spec: SweepSpec) -> "optuna.samplers.BaseSampler":
    """TPE with the sweep's seed; its first 10 trials are drawn at random (Optuna's
    default), and trials asked while others run are kept apart (constant liar)."""
    import optuna
    return optuna.samplers.TPESampler(seed=spec.seed, constant_liar=True)


def pruner(spec: SweepSpec) -> "optuna.pruners.BasePruner":
    """``median``: Optuna's MedianPruner (its defaults: trials from the sixth on are
    judged, against the median of the earlier ones at the same step); else none."""
    import optuna
    if spec.pruning == "median":
        return optuna.pruners.MedianPruner()
    return optuna.pruners.NopPruner()


def open_study(spec: SweepSpec, storage: Any) -> "optuna.study.Study":
    """The sweep's study on `storage` (an Optuna storage or URL), made on first use and
    loaded after: trials already told stay told, which is how a sweep resumes."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)   # progress is ours to report
    return optuna.create_study(storage=storage, study_name=STUDY_NAME, load_if_exists=True,
                               direction=spec.direction, sampler=sampler(spec),
                               pruner=pruner(spec))


def counted(trials: Iterable["optuna.trial.FrozenTrial"]) -> int:
    """How many trials count toward `trials`: finished ones (completed, pruned, failed by
    the script), not those a killed apply cut short (they are made again)."""
    from optuna.trial import TrialState
    return sum(1 for t in trials
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and t.user_attrs.get(OPEN) is False))


def best_trial(study: "optuna.study.Study") -> "optuna.trial.FrozenTrial | None":
    """The best completed trial, or None when no trial completed."""
    from optuna.trial import TrialState
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


# -- a trial's run ---------------------------------------------------------------------

def trial_hyperparameters(attrs: Mapping[str, Any], values: Mapping[str, Any]) -> dict:
    """What a trial's script gets as MLFORM_HYPERPARAMETERS: the pipeline's, plus the
    trial's values (specs refuse a name in both)."""
    fixed = attrs.get("hyperparameters")
    return {**(dict(fixed) if isinstance(fixed, Mapping) else {}), **dict(values)}


def objective_value(spec: SweepSpec, metrics: Mapping[str, Any], script: str = "the script"
                    ) -> float:
    """The trial's objective from its final metrics; MissingObjective says why not."""
    if spec.objective not in metrics:
        reported = ", ".join(sorted(metrics)) or "none"
        raise MissingObjective(f"{script} never reported metric {spec.objective!r}, the "
                               f"sweep's objective (metrics.json has: {reported})")
    value = metrics[spec.objective]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise MissingObjective(f"{script} reported metric {spec.objective!r} as {value!r}, "
                               "not a number")
    return float(value)


# -- plan ------------------------------------------------------------------------------

def sweep_reason(spec: SweepSpec) -> str:
    """How the plan says a sweep will run: "sweep of 6 trials over lr, layers"."""
    noun = "trial" if spec.trials == 1 else "trials"
    text = f"sweep of {spec.trials} {noun} over {', '.join(spec.names)}"
    return text + (f" ({spec.parallel} at a time)" if spec.parallel > 1 else "")


def plan_sweep(planned: Planned, prior: Any = None) -> Planned:
    """`planned` (a provider's pipeline plan) with `best_parameters` when it has a sweep:
    the prior run's when the plan keeps it, else unknown until the sweep ran; and the
    sweep among the reasons when it will run.  Without a sweep: unchanged (there is no
    `best_parameters`, so no plan of a pipeline without a sweep moves).  That is also why
    providers do not list it in `KindSchema.computed`, which every plan must name."""
    attrs = planned.attributes
    if attrs.get("sweep") is None:
        return planned
    runs = attrs.get("run_id") is UNKNOWN
    kept = prior.attributes.get(BEST_PARAMETERS) if prior is not None and not runs else None
    spec = sweep_of(attrs)
    reasons = planned.reasons + ((sweep_reason(spec),) if runs and spec is not None else ())
    return replace(planned, attributes={**attrs, BEST_PARAMETERS: UNKNOWN if runs else kept},
                   reasons=reasons)


def placeholder_parameters(spec: SweepSpec) -> dict[str, Any]:
    """Deterministic "best" values for a provider that does not search (the memory
    provider): each range's min, each categorical's first value."""
    out: dict[str, Any] = {}
    for name, p in spec.parameters.items():
        if p["type"] == "categorical":
            out[name] = list(p["values"])[0]
        else:
            out[name] = int(p["min"]) if p["type"] == "int" else float(p["min"])
    return out


def runnable(address: str, attrs: Mapping[str, Any], install_hint: str) -> SweepSpec:
    """The sweep an apply is about to run here (Optuna in this process), or the
    ProviderError saying why it cannot: no known sweep, or Optuna not installed."""
    import importlib.util
    spec = sweep_of(attrs)
    if spec is None:
        raise ProviderError(f"{address}: the sweep is not known; run plan again",
                            address=address)
    if importlib.util.find_spec("optuna") is None:
        raise ProviderError(f"{address}: a sweep needs Optuna, which is not installed",
                            address=address, hint=install_hint)
    return spec
