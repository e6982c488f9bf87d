"""The champion/challenger gate on the local provider: real runs (subprocesses writing
metrics.json), the real on-disk registry, the stage alias moved by the model handler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlform.plan.fingerprints import fingerprint
from mlform.providers.base import Desired, LiveObject, ProviderError
from mlform.providers.kit import calls as contract
from mlform.providers.kit.digests import hash_file
from mlform.providers.local.datasets import DatasetHandler
from mlform.providers.local.models import ModelHandler, aliases, read_meta, registry_dir
from mlform.providers.local.pipelines import PipelineHandler

# The run contract without a real model: the metrics (and the model file's bytes) come
# from the hyperparameters, so each test chooses how good a run is.
TRAIN = '''
import json, os
from pathlib import Path
hp = json.loads(os.environ["MLFORM_HYPERPARAMETERS"])
out = Path(os.environ["MLFORM_OUTPUT_DIR"])
(out / "model.pt").write_text(json.dumps(hp, sort_keys=True))
(out / "metrics.json").write_text(json.dumps(hp["metrics"]))
'''


@pytest.fixture
def stack(local_env):
    (local_env.stack_dir / "train.py").write_text(TRAIN)
    (local_env.stack_dir / "tx.csv").write_text("amount,label\n1,0\n2,1\n")
    datasets = DatasetHandler(local_env)
    d = Desired("dataset.tx", "dataset", "tx", {"source": "tx.csv", "format": "csv"})
    return {"env": local_env, "dataset": datasets.create(contract.plan(datasets, d, None)),
            "pipelines": PipelineHandler(local_env), "models": ModelHandler(local_env)}


def pipeline(stack, metrics: dict, gate: dict) -> Desired:
    data = stack["dataset"].attributes
    attributes = {"inputs": {"train": {"address": "dataset.tx", "uri": data["uri"],
                                       "digest": data["digest"], "format": "csv"}},
                  "entrypoint": "train.py", "hyperparameters": {"metrics": metrics},
                  "gate": gate}
    digest = hash_file(stack["env"].stack_dir / "train.py").digest
    attributes["entrypoint_sha256"] = digest
    attributes["fingerprint"] = fingerprint(attributes, digest)
    return Desired("pipeline.train", "pipeline", "train", attributes)


def run(stack, want: Desired, prior: LiveObject | None) -> LiveObject:
    handler = stack["pipelines"]
    planned = contract.plan(handler, want, prior)
    return handler.create(planned) if prior is None else handler.update(prior, planned)


def register(stack, run_live: LiveObject, prior: LiveObject | None, model="model.fraud"):
    """The downstream model with stage = "production": registers the run's artifact and
    moves the alias (as an apply does after the pipeline)."""
    handler = stack["models"]
    want = Desired(model, "model", model.split(".")[-1],
                   {"artifact": run_live.attributes["model_uri"], "framework": "torch",
                    "stage": "production"})
    planned = contract.plan(handler, want, prior)
    return handler.create(planned) if prior is None else handler.update(prior, planned)


def records(stack) -> list[dict]:
    return [json.loads(p.read_text()) for p in (stack["env"].root / "runs").rglob("run.json")]


GATE = {"metric": "auc", "must_beat": "production", "model": "model.fraud"}


def test_a_worse_run_publishes_nothing_and_a_better_one_is_promoted(stack):
    env = stack["env"]
    first = pipeline(stack, {"auc": 0.80}, GATE)
    # no version in the stage yet: a warning at plan, and the first run passes
    [warning] = contract.validate(stack["pipelines"], first)
    assert warning.severity == "warning" and "'production'" in warning.summary
    assert "first champion" in contract.plan(stack["pipelines"], first, None).reasons[-1]
    v1 = run(stack, first, None)
    assert [r["champion"] for r in records(stack)] == [
        "no champion yet: no version of model.fraud is in stage 'production', so the run "
        "was not compared"]
    model = register(stack, v1, None)
    assert model.attributes["version"] == 1 and aliases(env, "model.fraud") == {"production": 1}
    # the registry recorded the run's metrics, data and code digests
    lineage = read_meta(registry_dir(env, "model.fraud") / "versions" / "1")["lineage"]
    assert lineage["metrics"] == {"auc": 0.80} and lineage["pipeline"] == "pipeline.train"
    assert lineage["code_digest"] == first.attributes["entrypoint_sha256"]
    assert lineage["data_digests"] == {"train": stack["dataset"].attributes["digest"]}
    assert lineage["run_id"] == v1.attributes["run_id"]
    assert contract.validate(stack["pipelines"], first) == []   # a champion now

    worse = pipeline(stack, {"auc": 0.78}, GATE)
    assert contract.plan(stack["pipelines"], worse, v1).reasons[-1] == \
        "the run must beat production (model.fraud version 1) auc 0.8"
    with pytest.raises(ProviderError) as failure:
        run(stack, worse, v1)
    assert failure.value.message == ("gate failed: auc 0.78 does not beat production "
                                     "(model.fraud version 1) auc 0.80")
    failed = next(r for r in records(stack) if r["status"] == "failed")
    rejected = env.root / "runs" / env.slug("pipeline.train") / failed["run_id"]
    assert not (rejected / "output").exists() and (rejected / "rejected" / "model.pt").exists()
    # nothing published: the pipeline still serves run 1, the alias did not move
    lost = LiveObject("pipeline.train", "pipeline", None, {})
    assert stack["pipelines"].read(lost).attributes["run_id"] == v1.attributes["run_id"]
    assert aliases(env, "model.fraud") == {"production": 1}

    better = run(stack, pipeline(stack, {"auc": 0.83}, GATE), v1)
    note = next(r["champion"] for r in records(stack) if r["run_id"] == better.attributes["run_id"])
    assert note == "auc 0.83 beats production (model.fraud version 1) auc 0.80"
    promoted = register(stack, better, model)
    assert promoted.attributes["version"] == 2 and aliases(env, "model.fraud") == {"production": 2}
    # the run that is now the champion is not its own rival when the plan keeps it
    kept = contract.plan(stack["pipelines"], pipeline(stack, {"auc": 0.83}, GATE), better)
    assert stack["pipelines"].update(better, kept).attributes["run_id"] == better.attributes["run_id"]


def test_a_margin_must_be_cleared(stack):
    gate = {**GATE, "margin": 0.05}
    v1 = run(stack, pipeline(stack, {"auc": 0.80}, gate), None)
    register(stack, v1, None)
    with pytest.raises(ProviderError) as failure:
        run(stack, pipeline(stack, {"auc": 0.84}, gate), v1)
    assert failure.value.message == ("gate failed: auc 0.84 does not beat production "
                                     "(model.fraud version 1) auc 0.80 + margin 0.05")
    assert run(stack, pipeline(stack, {"auc": 0.85}, gate), v1).attributes["metrics"] == \
        {"auc": 0.85}


def test_minimize_against_the_registries_fed_by_this_pipeline(stack):
    # no gate.model: the champion is found in every registry holding a version of this pipeline
    gate = {"metric": "loss", "must_beat": "production", "goal": "minimize", "margin": 0.01}
    v1 = run(stack, pipeline(stack, {"loss": 0.30}, gate), None)
    register(stack, v1, None, model="model.a")
    register(stack, v1, None, model="model.b")
    with pytest.raises(ProviderError) as failure:
        run(stack, pipeline(stack, {"loss": 0.295}, gate), v1)
    assert failure.value.message == ("gate failed: loss 0.295 does not beat production "
                                     "(model.a version 1) loss 0.30 - margin 0.01")
    better = run(stack, pipeline(stack, {"loss": 0.25}, gate), v1)
    note = next(r["champion"] for r in records(stack) if r["run_id"] == better.attributes["run_id"])
    assert note == ("loss 0.25 beats production (model.a version 1) loss 0.30 - margin 0.01; "
                    "loss 0.25 beats production (model.b version 1) loss 0.30 - margin 0.01")


def test_a_gate_model_that_is_not_a_model_address_is_an_error(stack):
    want = pipeline(stack, {"auc": 0.8}, {**GATE, "model": "dataset.tx"})
    [problem] = contract.validate(stack["pipelines"], want)
    assert problem.severity == "error" and problem.address == "pipeline.train"
    assert "'dataset.tx' is not a model address" in problem.summary and problem.hint
