"""The gate (`kit.gate.check_gate`): one wording on every provider."""

from __future__ import annotations

import pytest

from mlform.providers.kit.gate import check_gate


@pytest.mark.parametrize("gate, metrics, message", [
    ({"metric": "accuracy", "min": 0.9}, {"accuracy": 0.95}, None),
    ({"metric": "loss", "max": 0.2}, {"loss": 0.25}, "gate failed: loss 0.25 > max 0.20"),
    ({"metric": "accuracy", "min": 0.9}, {"accuracy": 0.8999}, "gate failed: accuracy 0.8999 < min 0.9"),
    # the threshold as written, never rounded to `min 1.00`
    ({"metric": "accuracy", "min": 0.999}, {"accuracy": 0.9017}, "gate failed: accuracy 0.90 < min 0.999"),
    ({"metric": "accuracy", "min": 0.999}, {"accuracy": 0.9989}, "gate failed: accuracy 0.9989 < min 0.999"),
    ({"metric": "f1", "min": 0.5}, {"accuracy": 1.0},
     "gate failed: metric 'f1' was not reported (metrics: accuracy)"),
    ({"metric": "accuracy", "min": 0.5}, {"accuracy": "0.71"},
     "gate failed: metric 'accuracy' is '0.71', not a number"),
])
def test_check_gate(gate, metrics, message):
    assert check_gate(gate, metrics) == message


def test_no_gate_passes_everything():
    assert check_gate(None, {}) is None
    assert check_gate({"min": 0.5}, {"accuracy": 0.1}) is None   # no metric named: no gate
