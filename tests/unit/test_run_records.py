"""Run records: the step-line parser of the run contract, comparing runs, and lineage over a
state (pure parts; the providers' records are tested with each provider, the commands
end to end in tests/e2e/test_runs_cli.py and the quickstart)."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import given, strategies as st

from mlform.diagnostics import DiagnosticError
from mlform.lineage import Lineage, lineage_of
from mlform.providers.kit.run_records import (
    RunRecord, parse_step_line, run_record, step_metrics,
)
from mlform.runs import RunComparison, RunSet, compare, find, json_schemas
from mlform.state.model import ResourceState, State


# -- step lines ------------------------------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    ('{"step": 3, "loss": 0.25, "acc": 1}', (3, {"loss": 0.25, "acc": 1.0})),
    ('[default0]:{"step": 1, "loss": 2}', (1, {"loss": 2.0})),
    ('  {"step": 0, "loss": 1.5, "tag": "x", "ok": true}  ', (0, {"loss": 1.5})),
])
def test_a_step_line_gives_its_numbers(line, expected):
    step = parse_step_line(line)
    assert (step.step, step.metrics) == expected


@pytest.mark.parametrize("line", [
    "epoch 1: loss 0.3",                       # prose
    '{"accuracy": 0.9}',                       # the final metrics line
    '{"step": "3", "loss": 1}',                # a step that is not an integer
    '{"step": true, "loss": 1}',               # nor a bool
    '{"step": 2}',                             # a step with no numbers
    '{"step": 2, "loss": ',                    # cut off
    '[default1]:{"step": 1, "loss": 2}',       # another rank's
    '["step", 1]',
])
def test_other_lines_are_not_steps(line):
    assert parse_step_line(line) is None


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), max_size=60),
       st.integers(min_value=2, max_value=20))
def test_steps_are_kept_in_order_thinned_to_the_limit_with_first_and_last(values, limit):
    lines = [json.dumps({"step": i, "loss": v}) for i, v in enumerate(values)]
    kept = step_metrics(["noise", *lines, "more noise"], limit=limit)
    assert len(kept) == min(len(values), limit)
    assert [s.step for s in kept] == sorted({s.step for s in kept})
    if values:
        assert kept[0].step == 0 and kept[-1].step == len(values) - 1


# -- records, comparison ---------------------------------------------------------------

ATTRS = {"inputs": {"train": {"address": "dataset.tx", "digest": "sha256:" + "a" * 64}},
         "entrypoint": "train.py", "entrypoint_sha256": "b" * 64, "fingerprint": "f1",
         "hyperparameters": {"lr": 0.1, "epochs": 3},
         "cluster": {"address": "training_cluster.gpu", "accelerator": "nvidia-h100",
                     "nodes": 2, "gpus_per_node": 8}}


def record(run_id, *, started="2026-12-04T10:00:00+00:00", finished="2026-12-04T10:01:30+00:00",
           attrs=ATTRS, **kw) -> RunRecord:
    return RunRecord.model_validate(run_record(
        provider="memory", address="pipeline.train", attrs=attrs, run_id=run_id,
        status=kw.pop("status", "succeeded"), started=started, finished=finished, **kw))


def test_a_record_carries_the_runs_lineage_cluster_and_duration():
    r = record("run-1", metrics={"auc": 0.9})
    assert r.parameters == {"lr": 0.1, "epochs": 3}
    assert r.inputs == {"train": "dataset.tx"} and r.data_digests == {"train": "sha256:" + "a" * 64}
    assert (r.code_digest, r.fingerprint) == ("b" * 64, "f1")
    assert (r.cluster, r.accelerator, r.nodes, r.gpus_per_node) == (
        "training_cluster.gpu", "nvidia-h100", 2, 8)
    assert r.duration_seconds == 90.0


def test_compare_marks_what_differs_and_picks_a_common_metric():
    other = {**ATTRS, "inputs": {"train": {"address": "dataset.tx", "digest": "sha256:" + "c" * 64}},
             "hyperparameters": {"lr": 0.2, "epochs": 3}}
    c = compare([record("run-1", metrics={"note": "x", "auc": 0.9}),
                 record("run-2", attrs=other, metrics={"note": "y", "auc": 0.8})])
    rows = {row.field: row for row in c.rows}
    assert rows["data.train"].differs and rows["param.lr"].differs
    assert rows["metric.auc"].differs and rows["metric.auc"].values == [0.9, 0.8]
    assert not rows["param.epochs"].differs and not rows["code"].differs
    assert not rows["started"].differs, "times always differ: never marked"
    assert c.metric == "auc", "the first metric both report as a number"
    jsonschema.validate(c.model_dump(mode="json"), RunComparison.model_json_schema())


def test_find_takes_an_id_or_a_unique_prefix_and_explains_the_rest():
    runs = RunSet([record("run-abc"), record("run-abd"), record("run-xyz")])
    assert find(runs, "run-x").run_id == "run-xyz"
    assert find(runs, "run-abc").run_id == "run-abc"
    with pytest.raises(DiagnosticError, match="names 2 runs"):
        find(runs, "run-ab")
    with pytest.raises(DiagnosticError) as missing:
        find(runs, "run-abx")
    assert 'No run "run-abx"' in missing.value.diagnostics[0].summary
    assert "run-abc" in missing.value.diagnostics[0].hint
    with pytest.raises(DiagnosticError) as none:
        find(RunSet([]), "run-1")
    assert "apply a stack with a pipeline" in none.value.diagnostics[0].hint


# -- lineage ---------------------------------------------------------------------------

def chain_state(run_id="run-2", digest="sha256:" + "a" * 64) -> State:
    state = State.new()
    for address, kind, attrs, deps in [
        ("dataset.tx", "dataset", {"digest": digest, "uri": "s3://b/tx.csv"}, []),
        ("pipeline.train", "pipeline", {"run_id": run_id, "model_uri": "s3://b/m"}, ["dataset.tx"]),
        ("model.m", "model", {"version": 2, "stage": "production"}, ["pipeline.train"]),
        ('endpoint.api["eu"]', "endpoint", {"url": "http://x"}, ["model.m"]),
        ("monitor.drift", "monitor", {}, ["endpoint.api", "dataset.tx"]),
        ("dataset.unrelated", "dataset", {"digest": "d"}, []),
    ]:
        kind_name = address.split("[")[0].split(".")
        state.set(ResourceState(address=address, kind=kind, name=kind_name[1],
                                dependencies=deps, attributes=attrs))
    return state


def test_lineage_of_an_endpoint_names_the_run_and_the_data_it_read():
    runs = [record("run-1"), record("run-2", metrics={"auc": 0.9})]
    found = lineage_of('endpoint.api["eu"]', chain_state(), runs)
    jsonschema.validate(found.model_dump(mode="json"), Lineage.model_json_schema())
    assert found.run.run_id == "run-2"
    up = {n.address: n for n in found.upstream}
    assert set(up) == {"dataset.tx", "pipeline.train", "model.m"}
    assert up["pipeline.train"].run.data_digests["train"] == "sha256:" + "a" * 64
    assert up["dataset.tx"].depth == 3 and up["model.m"].depth == 1
    assert [n.address for n in found.downstream] == ["monitor.drift"]
    assert up["dataset.tx"].changed_since_run == []


def test_lineage_marks_a_dataset_that_changed_since_the_run():
    found = lineage_of("model.m", chain_state(digest="sha256:" + "e" * 64), [record("run-2")])
    [dataset] = [n for n in found.upstream if n.kind == "dataset"]
    assert dataset.changed_since_run == ["run-2"]
    assert {n.address for n in found.downstream} == {'endpoint.api["eu"]', "monitor.drift"}


def test_lineage_of_a_run_and_of_a_model_version():
    runs = [record("run-1"), record("run-2")]
    old = lineage_of("run-1", chain_state(), runs)
    assert old.kind == "run" and old.downstream == [] and "not the current run" in old.notes[0]
    assert [n.address for n in old.upstream] == ["dataset.tx"]
    current = lineage_of("run-2", chain_state(), runs)
    assert {n.address for n in current.downstream} >= {"model.m", "monitor.drift"}
    assert lineage_of("model.m@2", chain_state(), runs).version == 2
    with pytest.raises(DiagnosticError, match="at version 2, not 1"):
        lineage_of("model.m@1", chain_state(), runs)
    with pytest.raises(DiagnosticError, match="only models have versions"):
        lineage_of("dataset.tx@1", chain_state(), runs)
    with pytest.raises(DiagnosticError, match="neither a resource in the state nor a recorded run"):
        lineage_of("model.nope", chain_state(), runs)


def test_every_json_form_has_a_schema():
    schemas = json_schemas()
    assert set(schemas) == {"runs list", "runs show", "runs compare", "lineage"}
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)
