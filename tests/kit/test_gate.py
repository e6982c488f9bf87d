"""The gate (`kit.gate`): bounds and the champion/challenger comparison, one wording on
every provider (the memory provider's round trip at the end)."""

from __future__ import annotations

import pytest

from mlform.providers.base import Desired, LiveObject, ProviderContext, ProviderError
from mlform.providers.kit import calls as contract
from mlform.providers.kit.champions import challenge_problems, no_champion_warning
from mlform.providers.kit.gate import (
    champion_note, champion_reason, check_challenger, check_gate,
)
from mlform.providers.memory import MemoryProvider


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


# -- champion / challenger ----------------------------------------------------------------

CHAMPION = {"model": "model.fraud", "version": 3, "metrics": {"auc": 0.84}}
BEAT = {"metric": "auc", "must_beat": "production"}


@pytest.mark.parametrize("gate, metrics, champion, message", [
    ({**BEAT, "margin": 0.01}, {"auc": 0.81}, CHAMPION,
     "gate failed: auc 0.81 does not beat production (model.fraud version 3) auc 0.84 + margin 0.01"),
    ({**BEAT, "margin": 0.01}, {"auc": 0.85}, CHAMPION, None),       # exactly the margin: passes
    ({**BEAT, "margin": 0.02}, {"auc": 0.85}, CHAMPION,
     "gate failed: auc 0.85 does not beat production (model.fraud version 3) auc 0.84 + margin 0.02"),
    (BEAT, {"auc": 0.84}, CHAMPION, None),                           # a tie beats with no margin
    # numbers never rounded onto the wrong side of the comparison
    (BEAT, {"auc": 0.8399}, CHAMPION,
     "gate failed: auc 0.8399 does not beat production (model.fraud version 3) auc 0.84"),
    ({"metric": "loss", "must_beat": "staging", "goal": "minimize", "margin": 0.05},
     {"loss": 0.3}, {"version": 1, "metrics": {"loss": 0.32}},
     "gate failed: loss 0.30 does not beat staging (version 1) loss 0.32 - margin 0.05"),
    ({"metric": "loss", "must_beat": "staging", "goal": "minimize"},
     {"loss": 0.3}, {"version": 1, "metrics": {"loss": 0.32}}, None),
    (BEAT, {"auc": 0.5}, None, None),                                # no champion yet
    (BEAT, {"auc": 0.5}, {"version": 1, "metrics": {}}, None),       # nothing recorded to beat
    (BEAT, {"auc": 0.5}, {**CHAMPION, "run_id": "run-1"}, None),     # the champion is this run
    ({**BEAT, "min": 0.9}, {"auc": 0.95}, CHAMPION, None),
    ({"metric": "auc", "min": 0.5}, {"auc": 0.6}, CHAMPION, None),   # no must_beat: no comparison
])
def test_check_challenger(gate, metrics, champion, message):
    assert check_challenger(gate, metrics, champion, run_id="run-1") == message


def test_every_champion_must_be_beaten():
    other = {"model": "model.other", "version": 7, "metrics": {"auc": 0.9}}
    assert check_challenger(BEAT, {"auc": 0.86}, [CHAMPION, other]) == (
        "gate failed: auc 0.86 does not beat production (model.other version 7) auc 0.90")


def test_notes_and_plan_reasons_name_the_champions_number():
    assert champion_note(BEAT, {"auc": 0.9}, None) == (
        "no champion yet: no version is in stage 'production', so the run was not compared")
    assert champion_note({**BEAT, "margin": 0.01}, {"auc": 0.9}, CHAMPION) == (
        "auc 0.90 beats production (model.fraud version 3) auc 0.84 + margin 0.01")
    assert champion_note(BEAT, {"auc": 0.9}, {"version": 2, "metrics": {}}) == (
        "production (version 2) has no recorded auc, so the run was not compared with it")
    assert champion_reason({**BEAT, "margin": 0.01}, [CHAMPION]) == (
        "the run must beat production (model.fraud version 3) auc 0.84 + margin 0.01")
    assert "first champion" in champion_reason({**BEAT, "model": "model.fraud"}, [])
    assert champion_reason({"metric": "auc", "min": 0.5}, [CHAMPION]) is None


def test_gate_model_must_be_a_model_address():
    [problem] = challenge_problems("pipeline.train", {**BEAT, "model": "endpoint.x"})
    assert problem.severity == "error" and problem.hint
    assert challenge_problems("pipeline.train", {**BEAT, "model": "module.m.model.x[0]"}) == []
    [warned] = no_champion_warning("pipeline.train", BEAT, [])
    assert warned.severity == "warning" and "'production'" in warned.summary
    assert no_champion_warning("pipeline.train", BEAT, [CHAMPION]) == []


def test_the_memory_provider_gates_on_the_champion_it_stores(tmp_path):
    """The same words from the memory provider: its store records each version's run."""
    context = ProviderContext(name="memory", alias=None, stack="s", env="e",
                              stack_dir=tmp_path, config={})
    provider = MemoryProvider(context)
    gate = {**BEAT, "margin": 0.01, "model": "model.fraud"}

    def train(auc: float, prior: LiveObject | None) -> LiveObject:
        want = Desired("pipeline.train", "pipeline", "train", {
            "entrypoint": "train.py", "entrypoint_sha256": "sha256:code",
            "fingerprint": f"fp-{auc}", "gate": gate, "settings": {"metrics": {"auc": auc}},
            "inputs": {"train": {"address": "dataset.tx", "digest": "sha256:data"}}})
        planned = contract.plan(provider, want, prior)
        return provider.create(planned) if prior is None else provider.update(prior, planned)

    def register(run: LiveObject, prior: LiveObject | None) -> LiveObject:
        want = Desired("model.fraud", "model", "fraud", {
            "artifact": run.attributes["model_uri"], "stage": "production"})
        planned = contract.plan(provider, want, prior)
        return provider.create(planned) if prior is None else provider.update(prior, planned)

    try:
        first = train(0.80, None)
        model = register(first, None)
        record = provider.env.store().get(model.id)["registry"]["1"]
        assert record["metrics"] == {"auc": 0.80} and record["code_digest"] == "sha256:code"
        assert record["data_digests"] == {"train": "sha256:data"}
        with pytest.raises(ProviderError) as failure:
            train(0.805, first)
        assert failure.value.message == ("gate failed: auc 0.805 does not beat production "
                                         "(model.fraud version 1) auc 0.80 + margin 0.01")
        better = train(0.82, first)
        assert register(better, model).attributes["version"] == 2
        assert provider.env.store().get(model.id)["registry"]["2"]["metrics"] == {"auc": 0.82}
    finally:
        provider.close()
