"""A pipeline's `sweep`: the spec's checks, its part of the run fingerprint, the plan (on
the memory provider), its cost and the kit's Optuna pieces.

Plans and applies go through the CLI in-process (typer's CliRunner) on memory stacks, as
in test_cost.py; what the local provider does with a sweep is in tests/local/test_sweeps.py.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlform.cli import app
from mlform.plan.fingerprints import fingerprint, rerun_reasons
from mlform.providers.base import Desired
from mlform.providers.kit import sweeps
from mlform.providers.kit.pricing import PriceTable, pipeline_basis
from mlform.specs import validate_attributes

SWEEP = {"objective": "accuracy", "direction": "maximize", "trials": 6, "parallel": 2,
         "seed": 7, "parameters": {"lr": {"type": "float", "min": 0.0001, "max": 0.1, "log": True},
                                   "layers": {"type": "int", "min": 1, "max": 4},
                                   "opt": {"type": "categorical", "values": ["adam", "sgd"]}}}


def problems(**sweep):
    return validate_attributes("pipeline", {"entrypoint": "t.py", "sweep": {**SWEEP, **sweep}})


def with_param(**param):
    return problems(parameters={"x": param})


# -- the spec ----------------------------------------------------------------------------

def test_a_good_sweep_passes():
    assert problems() == []
    assert with_param(type="int", min=0, max=8, step=2) == []


@pytest.mark.parametrize("param, message", [
    ({"type": "float", "min": 0.1, "max": 0.1}, "the range is empty: min (0.1) must be less than max (0.1)"),
    ({"type": "int", "min": 5, "max": 1}, "the range is inverted: min (5) must be less than max (1)"),
    ({"type": "float", "min": 0, "max": 1, "log": True},
     "a log-scale range must be above 0, but min is 0: set min > 0, or log = false"),
    ({"type": "float", "min": -1, "max": 1, "log": True},
     "a log-scale range must be above 0, but min is -1: set min > 0, or log = false"),
    ({"type": "categorical", "values": []},
     'a categorical parameter needs "values": a list of at least one choice'),
    ({"type": "categorical"}, 'a categorical parameter needs "values": a list of at least one choice'),
    ({"type": "int", "max": 3}, 'an int range needs "min" and "max" (min missing)'),
    ({"type": "int", "min": 0.5, "max": 3}, "an int range needs whole numbers, but min is 0.5"),
    ({"type": "float", "min": 0, "max": 1, "step": 0.1},
     '"step" is for int ranges (a float range is continuous)'),
    ({"type": "float", "values": [1, 2]},
     '"values" is for categorical parameters; a float range takes "min" and "max"'),
])
def test_a_bad_range_is_named_at_its_parameter(param, message):
    assert with_param(**param) == [(("sweep", "parameters", "x"), message)]


def test_bad_words_and_counts():
    assert problems(direction="maximise") == [(("sweep", "direction"),
        'expected one of "maximize", "minimize", got "maximise"; did you mean "maximize"?')]
    assert problems(pruning="hyperband") == [(("sweep", "pruning"),
                                              'expected one of "none", "median", got "hyperband"')]
    assert with_param(type="catgorical", values=[1]) == [(("sweep", "parameters", "x", "type"),
        'expected one of "float", "int", "categorical", got "catgorical"; '
        'did you mean "categorical"?')]
    assert problems(trials=0) == [(("sweep", "trials"), "must be at least 1, got 0")]
    assert problems(parallel=0) == [(("sweep", "parallel"), "must be at least 1, got 0")]
    assert problems(parallel=7) == [(("sweep",), "parallel (7) is more than trials (6): set "
                                                 "parallel to at most 6")]
    assert problems(parameters={}) == [(("sweep", "parameters"), "must have at least 1 item")]
    assert problems(goal="max")[0][1].startswith('unknown attribute "goal"')


def test_a_parameter_both_swept_and_fixed_is_refused():
    found = validate_attributes("pipeline", {"entrypoint": "t.py", "sweep": SWEEP,
                                             "hyperparameters": {"lr": 0.1, "epochs": 3}})
    assert found == [(("sweep",), '"lr" is both swept and set in hyperparameters: remove it '
                                  "from hyperparameters (each trial sets the swept values)")]


def test_best_parameters_is_computed():
    found = validate_attributes("pipeline", {"entrypoint": "t.py", "best_parameters": {}})
    assert found == [(("best_parameters",), 'attribute "best_parameters" is computed by the '
                                            "provider and cannot be set")]


# -- the fingerprint ---------------------------------------------------------------------

BASE = {"inputs": {}, "hyperparameters": {"epochs": 3}, "cluster": None}


def test_no_sweep_keeps_every_fingerprint():
    # the value a pipeline without a sweep had before sweeps existed (computed by hand:
    # the same document as ever)
    import hashlib
    doc = {"inputs": {}, "entrypoint": "sha256:e", "hyperparameters": {"epochs": 3},
           "cluster": None}
    expected = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    assert fingerprint(BASE, "sha256:e") == expected


def test_the_sweep_is_part_of_the_fingerprint():
    plain = fingerprint(BASE, "sha256:e")
    swept = {**BASE, "sweep": SWEEP}
    assert fingerprint(swept, "sha256:e") != plain
    wider = {**BASE, "sweep": {**SWEEP, "parameters": {
        **SWEEP["parameters"], "layers": {"type": "int", "min": 1, "max": 8}}}}
    assert fingerprint(wider, "sha256:e") != fingerprint(swept, "sha256:e")
    for change in ({"trials": 7}, {"seed": 8}, {"objective": "loss"},
                   {"direction": "minimize"}, {"pruning": "median"}):
        assert fingerprint({**BASE, "sweep": {**SWEEP, **change}}, "sha256:e") != \
            fingerprint(swept, "sha256:e"), change
    # how many run at once changes no result; defaults written out are the same sweep
    assert fingerprint({**BASE, "sweep": {**SWEEP, "parallel": 1}}, "sha256:e") == \
        fingerprint(swept, "sha256:e")
    assert fingerprint({**BASE, "sweep": {**SWEEP, "pruning": "none"}}, "sha256:e") == \
        fingerprint(swept, "sha256:e")


def test_the_rerun_reason_names_what_moved_in_the_sweep():
    swept = {**BASE, "sweep": SWEEP}
    assert rerun_reasons(BASE, swept) == ["sweep added"]
    assert rerun_reasons(swept, BASE) == ["sweep removed"]
    moved = {**BASE, "sweep": {**SWEEP, "trials": 10, "parameters": {
        "lr": SWEEP["parameters"]["lr"], "layers": {"type": "int", "min": 1, "max": 8},
        "dropout": {"type": "float", "min": 0, "max": 0.5}}}}
    assert rerun_reasons(swept, moved) == [
        "sweep changed: trials 6 → 10, parameter dropout added, parameter layers changed, "
        "parameter opt removed"]
    assert rerun_reasons(swept, {**BASE, "sweep": {**SWEEP, "parallel": 1}}) == []


# -- the kit -----------------------------------------------------------------------------

def test_the_space_as_optuna_distributions():
    from optuna.distributions import (
        CategoricalDistribution, FloatDistribution, IntDistribution,
    )
    spec = sweeps.sweep_of({"sweep": {**SWEEP, "parameters": {
        **SWEEP["parameters"], "n": {"type": "int", "min": 0, "max": 8, "step": 2}}}})
    found = sweeps.distributions(spec)
    assert found["lr"] == FloatDistribution(0.0001, 0.1, log=True)
    assert found["layers"] == IntDistribution(1, 4)
    assert found["n"] == IntDistribution(0, 8, step=2)
    assert found["opt"] == CategoricalDistribution(["adam", "sgd"])
    assert sweeps.placeholder_parameters(spec) == {"lr": 0.0001, "layers": 1, "opt": "adam",
                                                   "n": 0}


def test_the_objective_from_a_trials_metrics():
    spec = sweeps.sweep_of({"sweep": SWEEP})
    assert sweeps.objective_value(spec, {"accuracy": 0.5, "loss": 1}) == 0.5
    with pytest.raises(sweeps.MissingObjective, match=r"train.py never reported metric "
                       r"'accuracy', the sweep's objective \(metrics.json has: loss\)"):
        sweeps.objective_value(spec, {"loss": 1}, "train.py")
    with pytest.raises(sweeps.MissingObjective, match="as 'high', not a number"):
        sweeps.objective_value(spec, {"accuracy": "high"})


def test_a_sweep_costs_its_trials():
    table = PriceTable({"cpu": 2.0}, source="test")
    one = pipeline_basis({"timeout_seconds": 600}, None, table)
    six = pipeline_basis({"timeout_seconds": 600, "sweep": SWEEP}, None, table)
    assert (one.run_seconds, six.run_seconds) == (600, 3600)
    assert six.duration_source == "max_runtime"   # still a limit: at most 6 × 10 min
    measured = pipeline_basis({"sweep": SWEEP}, {"metrics": {"duration_seconds": 60}}, table)
    assert (measured.run_seconds, measured.duration_source) == (360, "")


# -- plan and apply on the memory provider -----------------------------------------------

STACK = """
provider "memory" {
  store = ".mlform/memory.json"
}

pipeline "train" {
  entrypoint      = "train.py"
  hyperparameters = { epochs = 3 }
  sweep = {
    objective  = "accuracy"
    direction  = "maximize"
    trials     = 6
    parallel   = 2
    parameters = {
      lr     = { type = "float", min = 0.0001, max = 0.1, log = true }
      layers = { type = "int", min = 1, max = 4 }
    }
  }
}

output "best" {
  value = pipeline.train.best_parameters
}
"""


def cli(root: Path, *args: str) -> tuple[int, str]:
    cwd = os.getcwd()
    try:
        result = CliRunner(env={"NO_COLOR": "1", "MLFORM_DEBUG": None, "COLUMNS": "200"}).invoke(
            app, ["-C", str(root), *args], catch_exceptions=False)
    finally:
        os.chdir(cwd)
    return result.exit_code, result.output


def stack(tmp_path: Path, text: str = STACK) -> Path:
    (tmp_path / "main.hcl").write_text(textwrap.dedent(text))
    (tmp_path / "train.py").write_text("print('training')\n")
    return tmp_path


def test_a_sweep_plans_and_applies_on_memory(tmp_path):
    root = stack(tmp_path)
    code, out = cli(root, "plan")
    assert code == 0, out
    assert "+ best = (known after apply)" in out
    code, out = cli(root, "apply", "--auto-approve")
    assert code == 0, out
    code, out = cli(root, "output", "--json")
    assert code == 0, out
    assert json.loads(out)["best"]["value"] == {"lr": 0.0001, "layers": 1}
    code, out = cli(root, "plan", "--detailed-exitcode")
    assert code == 0, out   # nothing moves: the sweep's result is kept

    # a wider space is another fingerprint: the plan re-runs it and says why
    (root / "main.hcl").write_text(STACK.replace("max = 4", "max = 8"))
    code, out = cli(root, "plan")
    assert code == 0, out
    assert "must be re-run: sweep changed: parameter layers changed" in out
    assert "must be re-run: sweep of 6 trials over lr, layers (2 at a time)" in out
    assert '~ best_parameters = {"layers": 1, "lr": 0.0001} -> (known after apply)' in out


def test_bad_sweeps_are_located_diagnostics(tmp_path):
    text = STACK.replace("min = 0.0001, max = 0.1, log = true", "min = 0, max = 0.1, log = true")
    root = stack(tmp_path, text)
    code, out = cli(root, "validate")
    assert code == 1, out
    assert ('attribute "sweep.parameters.lr": a log-scale range must be above 0, but min is 0'
            in out)
    line = text.splitlines().index("  sweep = {") + 1
    assert f"main.hcl:{line}" in out
    assert "Traceback" not in out

    root = stack(tmp_path, STACK.replace("min = 1, max = 4", "min = 4, max = 4"))
    code, out = cli(root, "plan")
    assert code == 1 and "the range is empty: min (4) must be less than max (4)" in out, out
