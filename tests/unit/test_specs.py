"""Tests of mlform.specs: the six kind models, validation, references, JSON Schema."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

import mlform.specs as specs
from mlform.expr.values import UNKNOWN, Sensitive, contains_unknown, is_unknown
from mlform.specs import (
    COMPUTED,
    KIND_MODELS,
    REFERENCE_FIELDS,
    address_kind,
    json_schema,
    project_refs,
    split_address,
    validate_attributes,
    validate_cron,
)

VALID = {
    "dataset": {
        "source": "./data/transactions.csv",
        "format": "csv",
        "schema": {"amount": "float", "label": "int"},
        "checks": {"min_rows": 100, "max_null_fraction": 0.01},
        "description": "card transactions",
    },
    "training_cluster": {"accelerator": "nvidia-h100", "gpus_per_node": 1, "nodes": 1,
                         "spot": True, "max_runtime_seconds": 3600},
    "pipeline": {
        "cluster": {"__ref__": "training_cluster.gpu", "accelerator": "nvidia-h100"},
        "inputs": {"train": {"__ref__": "dataset.transactions", "uri": "file:///x"},
                   "extra": "s3://bucket/extra.csv"},
        "entrypoint": "train.py",
        "hyperparameters": {"epochs": 5, "layers": [64, 32]},
        "gate": {"metric": "accuracy", "min": 0.9},
        "environment": {"SEED": "1"},
        "timeout_seconds": 600,
    },
    "model": {"artifact": "file:///models/run-1", "framework": "torch", "stage": "production",
              "approval": "approved"},
    "endpoint": {
        "model": {"__ref__": "model.fraud", "uri": "x", "version": 3},
        "replicas": 2,
        "rollout": {"strategy": "canary", "canary_percent": 10, "bake_seconds": 300},
        "capture": {"sample_percent": 100},
        "autoscaling": {"min": 1, "max": 4, "target_rps": 50},
        "settings": {"anything": {"goes": True}},
        "tags": {"team": "ml"},
    },
    "monitor": {
        "endpoint": {"__ref__": "endpoint.fraud"},
        "baseline": {"__ref__": "dataset.transactions"},
        "checks": [{"metric": "psi", "threshold": 0.2, "feature": "amount"},
                   {"metric": "latency_p99_ms", "threshold": 250}],
        "schedule": "*/10 * * * *",
        "on_breach": "retrain",
    },
}

MINIMAL = {
    "dataset": {"source": "x.csv"},
    "training_cluster": {},
    "pipeline": {"entrypoint": "train.py"},
    "model": {"artifact": "s3://b/model.tar.gz"},
    "endpoint": {"model": "model.fraud"},
    "monitor": {"endpoint": "endpoint.fraud", "baseline": "dataset.x",
                "checks": [{"metric": "ks", "threshold": 0.1}]},
}


def problems(kind, attributes, **kw):
    return validate_attributes(kind, attributes, is_unknown, **kw)


# ------------------------------------------------------------------ the tables

def test_tables_cover_the_six_kinds():
    kinds = ("dataset", "training_cluster", "pipeline", "model", "endpoint", "monitor")
    assert specs.KINDS == kinds
    assert set(KIND_MODELS) == set(COMPUTED) == set(REFERENCE_FIELDS) == set(kinds)
    assert "url" in COMPUTED["endpoint"] and "fingerprint" in COMPUTED["pipeline"]
    assert REFERENCE_FIELDS["endpoint"]["model"] == ("model",)


def test_all_names_exist():
    for name in specs.__all__:
        assert hasattr(specs, name), name


def test_specs_imports_nothing_else_of_mlform():
    code = ("import sys, mlform.specs; "
            "print(sorted(m for m in sys.modules if m.startswith('mlform')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = eval(out)  # noqa: S307 - our own subprocess output
    assert all(m == "mlform" or m.startswith("mlform.specs") for m in loaded), loaded


# -------------------------------------------------------------------- valid specs

@pytest.mark.parametrize("kind", list(VALID))
def test_valid_full_spec(kind):
    assert problems(kind, VALID[kind]) == []
    KIND_MODELS[kind].model_validate(VALID[kind])


@pytest.mark.parametrize("kind", list(MINIMAL))
def test_valid_minimal_spec_and_defaults(kind):
    assert problems(kind, MINIMAL[kind]) == []
    model = KIND_MODELS[kind].model_validate(MINIMAL[kind])
    assert model.settings == {} and model.tags == {}


def test_defaults():
    endpoint = specs.Endpoint.model_validate({"model": "model.x"})
    assert endpoint.replicas == 1
    assert endpoint.rollout.strategy == "all-at-once" and endpoint.rollout.canary_percent == 10
    assert specs.Dataset.model_validate({"source": "x"}).format == "csv"
    assert specs.Model.model_validate({"artifact": "x"}).approval == "approved"
    cluster = specs.TrainingCluster.model_validate({})
    assert (cluster.accelerator, cluster.gpus_per_node, cluster.nodes) == ("cpu", 0, 1)
    assert specs.Dataset.model_validate({"source": "x", "schema": {"a": "int"}}).schema_ == \
        {"a": "int"}


# ------------------------------------------------------------------ invalid specs

@pytest.mark.parametrize("kind, attributes, expected", [
    ("dataset", {}, [(("source",), 'attribute "source" is required')]),
    ("dataset", {"source": "x", "format": "xls"},
     [(("format",), 'expected one of "csv", "parquet", "jsonl", "json", "dir", "other", '
                    'got "xls"')]),
    ("dataset", {"source": "x", "schema": {"a": "flaot"}},
     [(("schema", "a"), 'expected one of "int", "float", "str", "bool", "datetime", '
                        'got "flaot"; did you mean "float"?')]),
    ("dataset", {"source": "x", "checks": {"max_null_fraction": 1.5}},
     [(("checks", "max_null_fraction"), "must be at most 1, got 1.5")]),
    ("training_cluster", {"nodes": 0}, [(("nodes",), "must be at least 1, got 0")]),
    ("training_cluster", {"gpus_per_node": "abc"},
     [(("gpus_per_node",), 'expected an integer, got "abc"')]),
    ("training_cluster", {"accelerator": "cpu", "gpus_per_node": 2},
     [((), 'gpus_per_node must be 0 when accelerator is "cpu"')]),
    ("training_cluster", {"accelerator": "nvidia-a100"},
     [((), 'gpus_per_node must be at least 1 when accelerator is "nvidia-a100"')]),
    ("training_cluster", {"spot": "maybe"}, [(("spot",), 'expected true or false, got "maybe"')]),
    ("pipeline", {}, [(("entrypoint",), 'attribute "entrypoint" is required')]),
    ("pipeline", {"entrypoint": "t.py", "gate": {"metric": "acc"}},
     [(("gate",), 'gate needs at least one bound: "min", "max" or "must_beat"')]),
    ("pipeline", {"entrypoint": "t.py", "gate": {"metric": "acc", "must_beat": "prod stage"}},
     [(("gate", "must_beat"), 'must_beat names a stage such as "production", got "prod stage"')]),
    ("pipeline", {"entrypoint": "t.py", "gate": {"metric": "acc", "must_beat": "production",
                                                 "model": "fraud"}},
     [(("gate", "model"), 'gate model must be a model address such as "model.fraud", '
                          'got "fraud"')]),
    ("pipeline", {"entrypoint": "t.py", "gate": {"metric": "acc", "must_beat": "production",
                                                 "margin": -1}},
     [(("gate", "margin"), "must be at least 0, got -1")]),
    ("pipeline", {"entrypoint": "t.py", "gate": {"metric": "acc", "min": 2, "max": 1}},
     [(("gate",), "gate min (2) is greater than max (1)")]),
    ("pipeline", {"entrypoint": "t.py", "cluster": "gpu"},
     [(("cluster",), 'expected a reference to a training_cluster such as '
                     'training_cluster.NAME, got "gpu"')]),
    ("pipeline", {"entrypoint": "t.py", "cluster": {"__ref__": "dataset.x"}},
     [(("cluster",), "expected a reference to a training_cluster, got dataset.x")]),
    ("pipeline", {"entrypoint": "t.py", "environment": {"A": [1]}},
     [(("environment", "A"), "expected a string, got a list")]),
    ("model", {"artifact": "x", "framework": "tensorflow"},
     [(("framework",), 'expected one of "torch", "sklearn", "onnx", "other", '
                       'got "tensorflow"')]),
    ("model", {"artifact": "x", "stage": "prod stage"},
     [(("stage",), 'stage must be a simple name such as "production", got "prod stage"')]),
    ("endpoint", {"model": "model.x", "replcas": 2},
     [(("replcas",), 'unknown attribute "replcas"; did you mean "replicas"?')]),
    ("endpoint", {"model": "model.x", "rollout": {"stratgy": "canary"}},
     [(("rollout", "stratgy"), 'unknown attribute "stratgy"; did you mean "strategy"?')]),
    ("endpoint", {"model": "model.x", "rollout": {"strategy": "canary", "canary_percent": 100}},
     [(("rollout", "canary_percent"), "must be at most 99, got 100")]),
    ("endpoint", {"model": "model.x", "autoscaling": {"min": 5, "max": 2}},
     [(("autoscaling",), "autoscaling min (5) is greater than max (2)")]),
    ("endpoint", {"model": {"__ref__": "dataset.t"}},
     [(("model",), "expected a reference to a model, got dataset.t")]),
    ("endpoint", {}, [((), 'an endpoint serves either "model" or "variants", and names neither')]),
    ("endpoint", {"model": "model.x", "variants": {"a": {"model": "model.y", "weight": 100}}},
     [((), 'an endpoint serves either "model" or "variants", not both')]),
    ("endpoint", {"variants": {"a": {"model": "model.x", "weight": 60},
                               "b": {"model": "model.y", "weight": 30}}},
     [((), "the live variants' weights sum to 90, not 100 (a = 60, b = 30)")]),
    ("endpoint", {"variants": {"a": {"model": "model.x", "weight": 100},
                               "b": {"model": "model.y"}},
                  "experiment": {"type": "shadow", "shadow": "b", "shadow_percent": 120}},
     [(("experiment", "shadow_percent"), "must be at most 100, got 120")]),
    ("endpoint", {"variants": {"a": {"model": "model.x", "weight": 90},
                               "b": {"model": "model.y", "weight": 10}},
                  "experiment": {"type": "shadow", "shadow": "b"}},
     [((), 'the shadow variant "b" gets no live traffic: give it weight 0, not 10')]),
    ("endpoint", {"variants": {"a": {"model": "model.x", "weight": 100},
                               "b": {"model": "model.y"}},
                  "experiment": {"type": "shadow", "shadow": "c"}},
     [((), 'shadow "c" is not one of the variants (a, b)')]),
    ("endpoint", {"variants": {"a": {"model": "model.x", "weight": 50},
                               "b": {"model": "model.y", "weight": 50}},
                  "experiment": {"type": "bandit"}},
     [((), 'a bandit needs "capture": its rewards are matched to the captured requests, '
           "and its state is rebuilt from them after a restart")]),
    ("endpoint", {"variants": {"a": {"model": "model.x", "weight": 100}},
                  "experiment": {"type": "ab"}},
     [((), 'experiment type "ab" needs at least two live variants')]),
    ("endpoint", {"variants": {"a_b": {"model": "model.x", "weight": 100}}},
     [((), 'variant name "a_b" must be letters, digits and single hyphens (at most 63), '
           "as SageMaker and metric labels accept")]),
    ("endpoint", {"model": "model.x", "experiment": {"type": "ab"}},
     [((), '"experiment" needs "variants" to compare')]),
    ("endpoint", {"variants": {"a": {"model": "model.x", "weight": 50},
                               "b": {"model": "model.y", "weight": 50}},
                  "experiment": {"type": "ab", "sticky_key": "cookie:user"}},
     [(("experiment", "sticky_key"), 'sticky_key is "header:NAME" or "input:NAME", '
                                     'got "cookie:user"')]),
    ("endpoint", {"model": "model.x", "rollout": {"strategy": "all-at-once",
                                                  "analysis": {"max_error_rate": 0.01}}},
     [(("rollout",), 'analysis needs strategy "canary" or "linear" and bake_seconds > 0 '
                     "(it judges the new version while it bakes)")]),
    ("endpoint", {"model": "model.x", "rollout": {"strategy": "canary", "bake_seconds": 5,
                                                  "analysis": {"interval_seconds": 2}}},
     [(("rollout", "analysis"), "analysis needs a threshold: max_error_rate, max_p99_ms "
                                "or metrics")]),
    ("endpoint", {"model": "model.x", "capture": "yes"},
     [(("capture",), 'expected an object, got "yes"')]),
    ("monitor", {"endpoint": "endpoint.x", "baseline": "dataset.b", "checks": []},
     [(("checks",), "must have at least 1 item")]),
    ("monitor", {"endpoint": "endpoint.x", "baseline": "dataset.b",
                 "checks": [{"metric": "error_rate", "threshold": 0.1, "feature": "a"}]},
     [(("checks", 0), '"feature" applies only to psi and ks, not error_rate')]),
    ("monitor", {"endpoint": "endpoint.x", "baseline": "dataset.b",
                 "checks": [{"metric": "psi", "threshold": 0.2}], "schedule": "every minute"},
     [(("schedule",), 'schedule must be a 5-field cron expression such as "*/10 * * * *", '
                      'got "every minute"')]),
    ("monitor", {"endpoint": "endpoint.x", "baseline": "dataset.b",
                 "checks": [{"metric": "psi", "threshold": 0.2}], "on_breach": "page"},
     [(("on_breach",), 'expected one of "alert", "retrain", "none", got "page"')]),
])
def test_invalid_specs(kind, attributes, expected):
    assert problems(kind, attributes) == expected


def test_several_problems_at_once():
    found = problems("pipeline", {"replicas": -1, "port": 70000}) + \
        problems("endpoint", {"model": "model.x", "replicas": -1, "port": 70000})
    assert sorted(found) == sorted([
        (("entrypoint",), 'attribute "entrypoint" is required'),
        (("port",), 'unknown attribute "port"'),
        (("replicas",), 'unknown attribute "replicas"'),
        (("replicas",), "must be at least 0, got -1"),
        (("port",), "must be at most 65535, got 70000"),
    ])


def test_unknown_kind():
    assert validate_attributes("datset", {}) == \
        [((), 'unknown resource kind "datset"; did you mean "dataset"?')]


def test_computed_attributes_cannot_be_set():
    assert problems("endpoint", {"model": "model.x", "url": "http://x"}) == \
        [(("url",), 'attribute "url" is computed by the provider and cannot be set')]
    assert problems("endpoint", {"model": "model.x", "url": "http://x"},
                    allow_computed=True) == []


def test_meta_arguments_are_skipped_and_suggested():
    attrs = {"source": "x", "provider": "local", "depends_on": ["a.b"], "count": 2,
             "for_each": {"a": 1}, "lifecycle": {"prevent_destroy": True}}
    assert problems("dataset", attrs) == []
    assert problems("dataset", {"source": "x", "depend_on": []}) == \
        [(("depend_on",), 'unknown attribute "depend_on"; did you mean "depends_on"?')]


def test_unknown_attribute_without_close_match():
    assert problems("dataset", {"source": "x", "zzz": 1}) == \
        [(("zzz",), 'unknown attribute "zzz"')]


def test_null_means_not_set():
    assert problems("endpoint", {"model": "model.x", "replicas": None, "capture": None}) == []
    assert problems("pipeline", {"entrypoint": None}) == \
        [(("entrypoint",), 'attribute "entrypoint" is required')]


def test_numbers_convert_to_strings_like_terraform():
    assert problems("dataset", {"source": "x", "tags": {"version": 2}}) == []


# ------------------------------------------------------------------ unknown values

def test_unknown_values_are_accepted_and_count_as_present():
    attrs = {
        "model": UNKNOWN,
        "replicas": UNKNOWN,
        "rollout": {"strategy": UNKNOWN, "canary_percent": UNKNOWN},
        "capture": UNKNOWN,
        "tags": {"owner": UNKNOWN},
    }
    assert problems("endpoint", attrs) == []
    assert problems("pipeline", {"entrypoint": UNKNOWN, "hyperparameters": UNKNOWN,
                                 "inputs": {"train": UNKNOWN}, "gate": UNKNOWN}) == []
    assert problems("model", {"artifact": UNKNOWN}) == []
    assert problems("monitor", {"endpoint": {"__ref__": "endpoint.e", "url": UNKNOWN},
                                "baseline": UNKNOWN, "checks": [UNKNOWN]}) == []


def test_known_parts_next_to_unknown_ones_are_still_checked():
    attrs = {"model": UNKNOWN, "rollout": {"strategy": UNKNOWN, "canary_percent": 0}}
    assert problems("endpoint", attrs) == \
        [(("rollout", "canary_percent"), "must be at least 1, got 0")]
    attrs = {"entrypoint": "t.py", "gate": {"min": UNKNOWN}}
    assert problems("pipeline", attrs) == [(("gate", "metric"), 'attribute "metric" is required')]


def test_without_is_unknown_the_marker_is_a_type_error():
    found = validate_attributes("endpoint", {"model": "model.x", "replicas": UNKNOWN})
    assert [path for path, _ in found] == [("replicas",)]


def test_sensitive_values_are_validated_but_never_shown():
    def unwrap(value):
        return value.value if isinstance(value, Sensitive) else value

    found = validate_attributes("pipeline", {"entrypoint": "t.py",
                                             "environment": {"TOKEN": Sensitive(["s3cr3t"])}},
                                is_unknown, unwrap=unwrap)
    assert found == [(("environment", "TOKEN"), "expected a string, got (sensitive value)")]
    found = validate_attributes("endpoint", {"model": "model.x", "replicas": Sensitive("s3cr3t")},
                                is_unknown, unwrap=unwrap)
    assert found == [(("replicas",), "expected an integer, got (sensitive value)")]
    assert validate_attributes("pipeline", {"entrypoint": "t.py",
                                            "environment": {"T": Sensitive("x")}},
                               is_unknown, unwrap=unwrap) == []


def test_contains_unknown_helper_agrees():
    assert contains_unknown({"a": [UNKNOWN]})


# ---------------------------------------------------------------------- references

def test_address_kind():
    assert address_kind("model.fraud") == "model"
    assert address_kind('dataset.x["a.b"]') == "dataset"
    assert address_kind("module.churn.dataset.x[0]") == "dataset"
    assert address_kind('module.m["k"].endpoint.e') == "endpoint"
    assert address_kind("fraud") is None
    assert split_address('module.m.dataset.x["a.b"]') == ["module", "m", "dataset", 'x["a.b"]']


@pytest.mark.parametrize("kind, field, value, ok", [
    ("endpoint", "model", "model.fraud", True),
    ("endpoint", "model", "s3://bucket/model.tar.gz", True),
    ("endpoint", "model", "module.churn.model.m", True),
    ("endpoint", "model", "dataset.transactions", False),
    ("endpoint", "model", "", False),
    ("endpoint", "model", 5, False),
    ("pipeline", "cluster", "training_cluster.gpu", True),
    ("pipeline", "cluster", "s3://x", False),
    ("monitor", "baseline", "./data/base.csv", True),
    ("monitor", "pipeline", "pipeline.train", True),
    ("monitor", "pipeline", {"__ref__": 'pipeline.train["a"]'}, True),
    ("monitor", "pipeline", {"__ref__": "model.m"}, False),
    ("model", "artifact", {"__ref__": "pipeline.train", "model_uri": "x"}, True),
])
def test_reference_fields(kind, field, value, ok):
    attrs = {**MINIMAL[kind], field: value}
    assert (problems(kind, attrs) == []) == ok


def test_pipeline_inputs_accept_refs_and_uris():
    attrs = {"entrypoint": "t.py", "inputs": {"a": {"__ref__": "dataset.a"}, "b": "s3://b/x",
                                               "c": {"__ref__": "pipeline.prep"},
                                               "d": {"__ref__": "endpoint.e"}}}
    assert problems("pipeline", attrs) == \
        [(("inputs", "d"), "expected a reference to a dataset or pipeline, got endpoint.e")]


def test_project_refs():
    value = {
        "inputs": {"train": {"__ref__": "dataset.t", "uri": "file:///t", "digest": "sha256:1",
                             "format": "csv", "source": "./t.csv", "rows": 10}},
        "cluster": {"__ref__": "training_cluster.gpu", "accelerator": "nvidia-h100",
                    "gpus_per_node": 1, "nodes": 1, "spot": False, "gpus_total": 1},
        "model": {"__ref__": "module.churn.model.m", "uri": "u", "version": 2,
                  "stage": "production", "framework": "torch", "approval": "approved",
                  "artifact": "a", "tags": {}},
        "eps": [{"__ref__": 'endpoint.e["x"]', "url": UNKNOWN, "model_version": 1,
                 "replicas": 2}],
        "run": {"__ref__": "pipeline.train", "model_uri": "m", "fingerprint": "f",
                "metrics": {"acc": 1}},
        "mod": {"__ref__": "module.churn", "url": "x", "inner": {"__ref__": "dataset.d",
                                                               "uri": "u", "rows": 1}},
        "plain": {"a": 1},
    }
    assert project_refs(value) == {
        "inputs": {"train": {"address": "dataset.t", "uri": "file:///t", "digest": "sha256:1",
                             "format": "csv"}},
        "cluster": {"address": "training_cluster.gpu", "accelerator": "nvidia-h100",
                    "gpus_per_node": 1, "nodes": 1},
        "model": {"address": "module.churn.model.m", "uri": "u", "version": 2,
                  "stage": "production", "framework": "torch", "approval": "approved"},
        "eps": [{"address": 'endpoint.e["x"]', "url": UNKNOWN, "model_version": 1}],
        "run": {"address": "pipeline.train", "model_uri": "m", "fingerprint": "f"},
        "mod": {"address": "module.churn", "url": "x",
                "inner": {"address": "dataset.d", "uri": "u"}},
        "plain": {"a": 1},
    }
    assert project_refs({"__ref__": "dataset.x"}) == {"address": "dataset.x"}
    assert project_refs(("a", 1)) == ("a", 1)


# ---------------------------------------------------------------------------- cron

@pytest.mark.parametrize("expression, ok", [
    ("*/10 * * * *", True),
    ("0 3 * * MON-FRI", True),
    ("5,35 0-23/2 1 JAN,jul 0", True),
    ("0 0 * * 7", True),
    ("* * * *", False),
    ("60 * * * *", False),
    ("* 24 * * *", False),
    ("* * 0 * *", False),
    ("* * * 13 *", False),
    ("*/0 * * * *", False),
    ("a * * * *", False),
    ("1-x * * * *", False),
])
def test_cron(expression, ok):
    assert (validate_cron(expression) is None) == ok


# --------------------------------------------------------------------- JSON Schema

STACK_YAML = """
variable:
  epochs: {type: number, default: 5, sensitive: false, description: "..."}
locals:
  prefix: "fraud-${var.env}"
provider:
  local: {root: .mlform/local}
dataset:
  transactions:
    source: ./data/transactions.csv
    format: csv
    schema: {amount: float, label: int}
    checks: {min_rows: 100, max_null_fraction: 0.01}
training_cluster:
  gpu: {accelerator: nvidia-h100, gpus_per_node: 1, nodes: "${var.nodes}"}
pipeline:
  train:
    cluster: "${training_cluster.gpu}"
    inputs: {train: "${dataset.transactions}"}
    entrypoint: train.py
    hyperparameters: {epochs: "${var.epochs}"}
    gate: {metric: accuracy, min: 0.9}
model:
  fraud: {artifact: "${pipeline.train.model_uri}", framework: torch, stage: production}
endpoint:
  fraud:
    model: "${model.fraud}"
    replicas: 1
    rollout: {strategy: canary, canary_percent: 10, bake_seconds: 300}
    capture: {sample_percent: 100}
    settings: {}
    lifecycle: {prevent_destroy: true, ignore_changes: [replicas]}
monitor:
  drift:
    endpoint: "${endpoint.fraud}"
    baseline: "${dataset.transactions}"
    checks: [{metric: psi, threshold: 0.2}]
    schedule: "*/10 * * * *"
    on_breach: retrain
    count: "${var.monitoring ? 1 : 0}"
module:
  churn: {source: ../../modules/tabular-classifier, name: churn}
output:
  url: {value: "${endpoint.fraud.url}"}
"""


def test_json_schema_shape():
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) >= {"variable", "locals", "output", "provider", "module",
                                         *KIND_MODELS}
    block = schema["$defs"]["endpoint_block"]
    assert {"provider", "depends_on", "for_each", "count", "lifecycle", "settings",
            "tags", "replicas", "rollout"} <= set(block["properties"])
    assert block["additionalProperties"] is False
    assert "url" not in block["properties"]
    replicas = block["properties"]["replicas"]
    assert {"$ref": "#/$defs/Expression"} in replicas["anyOf"]
    assert replicas["description"]


def test_json_schema_one_kind():
    schema = json_schema("pipeline")
    assert schema["$schema"].endswith("2020-12/schema")
    assert "entrypoint" in schema["required"]
    assert set(schema["$defs"]) == {"Gate", "Sweep", "SweepParameter", "Expression"}
    with pytest.raises(KeyError):
        json_schema("nope")


def test_json_schema_validates_a_stack():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json_schema())
    validator.check_schema(json_schema())
    document = yaml.safe_load(STACK_YAML)
    assert list(validator.iter_errors(document)) == []
    bad = yaml.safe_load(STACK_YAML)
    bad["endpoint"]["fraud"]["replcas"] = 2
    bad["endpoint"]["fraud"]["rollout"]["strategy"] = "sideways"
    bad["bogus"] = {}
    assert len(list(validator.iter_errors(bad))) == 3
    for kind in KIND_MODELS:
        jsonschema.Draft202012Validator.check_schema(json_schema(kind))
