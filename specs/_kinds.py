"""Pydantic models of the six resource kinds, provider-agnostic.

Each model describes what a user may set on a resource block (the *arguments*).
Attributes that providers compute (``uri``, ``url``, ``fingerprint``, ...) are
listed in `COMPUTED` and are not settable.  Meta-arguments (``provider``,
``depends_on``, ``for_each``, ``count``, ``lifecycle``) belong to the engine and
are listed in `META_ARGUMENTS`; the common attributes ``settings`` and ``tags``
are on every model.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator,
)

from ._cron import validate_cron
from ._refs import ref

__all__ = [
    "SpecModel", "Dataset", "DatasetChecks", "TrainingCluster", "Pipeline", "Gate",
    "Sweep", "SweepParameter",
    "Model", "Endpoint", "Rollout", "Analysis", "Variant", "Experiment", "Capture",
    "Autoscaling", "Monitor", "MonitorCheck",
    "Lifecycle", "KIND_MODELS", "COMPUTED", "REFERENCE_FIELDS", "META_ARGUMENTS",
    "COLUMN_TYPES",
]

#: Column types a dataset schema may name.
COLUMN_TYPES = ("int", "float", "str", "bool", "datetime")
ColumnType = Literal["int", "float", "str", "bool", "datetime"]

# Reference types of the fields that point at other resources (see REFERENCE_FIELDS).
ClusterRef = ref("training_cluster")
InputRef = ref("dataset", "pipeline", allow_uri=True)
ArtifactRef = ref("pipeline", allow_uri=True,
                  description="Model artifact: a URI such as pipeline.NAME.model_uri, or "
                              "pipeline.NAME itself.")
ModelRef = ref("model", allow_uri=True)
EndpointRef = ref("endpoint", allow_uri=True)
BaselineRef = ref("dataset", allow_uri=True)
PipelineRef = ref("pipeline")


class SpecModel(BaseModel):
    """Base of every spec model: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class _Common(SpecModel):
    """Attributes every resource kind accepts."""

    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Provider-specific settings; checked by the engine against the settings "
                    "model of the provider that serves the resource, free-form here.")
    tags: dict[str, str] = Field(
        default_factory=dict, description="Labels passed to the provider's objects.")


# --------------------------------------------------------------------------- dataset

class DatasetChecks(SpecModel):
    """Data quality checks run when the dataset is materialised."""

    min_rows: int | None = Field(None, ge=0, description="Fail unless at least this many rows.")
    max_null_fraction: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Fail if any column has a larger fraction of null values (0..1).")


class Dataset(_Common):
    """A versioned dataset: a file, directory or object-store prefix, content-addressed."""

    source: str = Field(
        ..., min_length=1,
        description="Where the data comes from: a path relative to the stack, s3://..., "
                    "gs://..., or another provider's URI.")
    format: Literal["csv", "parquet", "jsonl", "json", "dir", "other"] = Field(
        "csv", description="File format of the source.")
    schema_: dict[str, ColumnType] | None = Field(
        None, alias="schema",
        description="Expected columns: column name -> type "
                    "(int, float, str, bool, datetime).")
    checks: DatasetChecks = Field(
        default_factory=DatasetChecks, description="Data quality checks.")
    description: str | None = Field(None, description="Free text shown in plans and registries.")


# ------------------------------------------------------------------ training_cluster

class TrainingCluster(_Common):
    """Compute for training pipelines: accelerator type and how many of them."""

    accelerator: str = Field(
        "cpu", min_length=1,
        description='Accelerator type: "cpu", "nvidia-h100", "nvidia-h200", "nvidia-a100", '
                    '"nvidia-l4", "any-gpu", ...')
    gpus_per_node: int = Field(0, ge=0, description="GPUs per node (0 for CPU-only).")
    nodes: int = Field(1, ge=1, description="Number of nodes.")
    instance_type: str | None = Field(
        None, description="Provider instance type (e.g. ml.p5.48xlarge); the provider picks "
                          "one when unset.")
    spot: bool = Field(False, description="Use spot / preemptible capacity.")
    max_runtime_seconds: int | None = Field(
        None, ge=1, description="Upper bound on any job's runtime on this cluster.")

    @model_validator(mode="after")
    def _accelerator_matches_gpus(self) -> "TrainingCluster":
        if self.accelerator == "cpu" and self.gpus_per_node > 0:
            raise ValueError('gpus_per_node must be 0 when accelerator is "cpu"')
        if self.accelerator != "cpu" and self.gpus_per_node == 0:
            raise ValueError(
                f'gpus_per_node must be at least 1 when accelerator is "{self.accelerator}"')
        return self


# -------------------------------------------------------------------------- pipeline

class Gate(SpecModel):
    """A metric the run must meet before its model is published: within bounds, and/or
    better than the version a registry stage points at now (champion/challenger)."""

    metric: str = Field(..., min_length=1, description="Metric name reported by the run.")
    min: float | None = Field(None, description="Lowest acceptable value.")
    max: float | None = Field(None, description="Highest acceptable value.")
    must_beat: str | None = Field(
        None, description='Registry stage (e.g. "production") whose current version the run '
                          "must beat on the same metric, by `margin`; passes when the stage "
                          "has no version yet.")
    margin: float = Field(0.0, ge=0, description="How much better than the stage's version "
                                                 "the run must be (absolute, same metric).")
    goal: Literal["maximize", "minimize"] = Field(
        "maximize", description="Whether a higher (maximize) or lower (minimize) metric is better.")
    model: str | None = Field(
        None, description="The model (model.NAME) whose registry holds the stage; by default "
                          "the models whose versions were registered from this pipeline.")

    @field_validator("must_beat")
    @classmethod
    def _stage_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(f'must_beat names a stage such as "production", got "{value}"')
        return value

    @field_validator("model")
    @classmethod
    def _model_address(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"(module\.[^.]+\.)*model\.[A-Za-z_][\w-]*(\[[^\]]+\])?", value):
            raise ValueError(f'gate model must be a model address such as "model.fraud", '
                             f'got "{value}"')
        return value

    @model_validator(mode="after")
    def _bounds(self) -> "Gate":
        if self.min is None and self.max is None and self.must_beat is None:
            raise ValueError('gate needs at least one bound: "min", "max" or "must_beat"')
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"gate min ({self.min:g}) is greater than max ({self.max:g})")
        return self


SweepValue = bool | int | float | str


class SweepParameter(SpecModel):
    """One searched hyperparameter: a float or int range (optionally log-scaled, an int
    range optionally stepped) or a list of categorical values."""

    type: Literal["float", "int", "categorical"] = Field(
        ..., description="float or int: a range from min to max; categorical: one of values.")
    min: float | None = Field(None, description="Lowest value of a range (float, int).")
    max: float | None = Field(None, description="Highest value of a range (float, int).")
    log: bool = Field(False, description="Sample the range on a log scale (min must be > 0).")
    step: float | None = Field(None, gt=0, description="Spacing of an int range (default 1).")
    values: list[SweepValue] | None = Field(
        None, description="The choices of a categorical parameter.")

    @model_validator(mode="after")
    def _shape(self) -> "SweepParameter":
        if self.type == "categorical":
            stray = [n for n in ("min", "max", "step") if getattr(self, n) is not None]
            if stray or self.log:
                raise ValueError(f'a categorical parameter takes "values", not '
                                 f'{", ".join(stray or ["log"])}')
            if not self.values:
                raise ValueError('a categorical parameter needs "values": a list of at least '
                                 "one choice")
            return self
        if self.values is not None:
            raise ValueError(f'"values" is for categorical parameters; a {self.type} range '
                             'takes "min" and "max"')
        if self.min is None or self.max is None:
            missing = " and ".join(n for n in ("min", "max") if getattr(self, n) is None)
            article = "an" if self.type == "int" else "a"
            raise ValueError(f'{article} {self.type} range needs "min" and "max" '
                             f"({missing} missing)")
        if self.min >= self.max:
            what = "empty" if self.min == self.max else "inverted"
            raise ValueError(f"the range is {what}: min ({self.min:g}) must be less than "
                             f"max ({self.max:g})")
        if self.log and self.min <= 0:
            raise ValueError(f"a log-scale range must be above 0, but min is {self.min:g}: "
                             "set min > 0, or log = false")
        if self.type == "int":
            for name in ("min", "max", "step"):
                value = getattr(self, name)
                if value is not None and not float(value).is_integer():
                    raise ValueError(f"an int range needs whole numbers, but {name} is {value:g}")
            if self.log and self.step not in (None, 1):
                raise ValueError("a log-scale int range cannot have a step (Optuna samples it "
                                 "with step 1)")
        elif self.step is not None:
            raise ValueError('"step" is for int ranges (a float range is continuous)')
        return self


class Sweep(SpecModel):
    """A hyperparameter search: `trials` runs of the entrypoint, each with values drawn
    from `parameters`; the best by `objective` becomes the pipeline's result."""

    objective: str = Field(..., min_length=1,
                           description="The metric to optimize: a key of the metrics.json the "
                                       "script writes (its step lines feed pruning).")
    direction: Literal["maximize", "minimize"] = Field(
        ..., description="Whether a higher (maximize) or lower (minimize) objective is better.")
    trials: int = Field(..., ge=1, description="How many trials (runs) the sweep makes.")
    parallel: int = Field(1, ge=1, description="Trials run at once (at most `trials`; the "
                                               "provider may run fewer, e.g. one per GPU).")
    seed: int | None = Field(None, description="The sampler's seed (reproducible draws).")
    pruning: Literal["none", "median"] = Field(
        "none", description='"median": stop a trial whose objective at a step (its step '
                            "lines) is worse than the median of earlier trials at that step.")
    parameters: dict[str, SweepParameter] = Field(
        ..., min_length=1, description="The search space: hyperparameter name -> its range "
                                       "or values; each trial gets them on top of "
                                       "`hyperparameters`.")

    @model_validator(mode="after")
    def _parallel(self) -> "Sweep":
        if self.parallel > self.trials:
            raise ValueError(f"parallel ({self.parallel}) is more than trials ({self.trials}): "
                             f"set parallel to at most {self.trials}")
        return self


class Pipeline(_Common):
    """A training run; its identity is a fingerprint of inputs, code and settings."""

    cluster: ClusterRef | None = Field(
        None, description="Training cluster to run on; the provider's default compute "
                          "when unset.")
    inputs: dict[str, InputRef] = Field(
        default_factory=dict,
        description="Named inputs: references to datasets (or pipelines), or paths/URIs.")
    entrypoint: str = Field(
        ..., min_length=1,
        description="Script to run, relative to the stack; its content is part of the "
                    "fingerprint.")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="Passed to the entrypoint; part of the fingerprint.")
    gate: Gate | None = Field(None, description="Quality gate the run's metrics must pass.")
    environment: dict[str, str] = Field(
        default_factory=dict, description="Environment variables for the run.")
    timeout_seconds: int | None = Field(None, ge=1, description="Kill the run after this long.")
    sweep: Sweep | None = Field(
        None, description="Search hyperparameters: run trials and keep the best one's model, "
                          "metrics and parameters (`best_parameters`).")

    @field_validator("sweep")
    @classmethod
    def _sweep_not_fixed(cls, sweep: Sweep | None, info: ValidationInfo) -> Sweep | None:
        fixed = info.data.get("hyperparameters") or {}
        both = sorted(set(fixed) & set(sweep.parameters)) if sweep is not None else []
        if both:
            names = ", ".join(f'"{n}"' for n in both)
            raise ValueError(f"{names} {'is' if len(both) == 1 else 'are'} both swept and set "
                             f"in hyperparameters: remove {'it' if len(both) == 1 else 'them'} "
                             "from hyperparameters (each trial sets the swept values)")
        return sweep


# ----------------------------------------------------------------------------- model

class Model(_Common):
    """A registered model version built from a pipeline's artifact."""

    artifact: ArtifactRef = Field(
        ..., description="Model artifact URI, usually pipeline.NAME.model_uri.")
    framework: Literal["torch", "sklearn", "onnx", "other"] = Field(
        "torch", description="Framework the artifact was saved with.")
    stage: str | None = Field(
        None, description='Alias pointing at this version, e.g. "staging" or "production".')
    approval: Literal["pending", "approved", "rejected"] = Field(
        "approved", description="Approval status; endpoints serve only approved versions.")
    description: str | None = Field(None, description="Free text shown in the registry.")

    @field_validator("stage")
    @classmethod
    def _stage_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(
                f'stage must be a simple name such as "production", got "{value}"')
        return value


# -------------------------------------------------------------------------- endpoint

class MetricBound(SpecModel):
    """Bounds on one metric of the canary analysis."""

    min: float | None = Field(None, description="Lowest acceptable value.")
    max: float | None = Field(None, description="Highest acceptable value.")

    @model_validator(mode="after")
    def _bounds(self) -> "MetricBound":
        if self.min is None and self.max is None:
            raise ValueError('a metric bound needs "min" or "max"')
        return self


class Analysis(SpecModel):
    """Canary analysis: thresholds the new version's own traffic must meet while it bakes."""

    max_error_rate: float | None = Field(
        None, ge=0, le=1, description="Highest share (0-1) of the canary's requests answered "
                                      "with an error status (4xx or 5xx).")
    max_p99_ms: float | None = Field(
        None, gt=0, description="Highest p99 latency of the canary's requests, in ms.")
    metrics: dict[str, MetricBound] = Field(
        default_factory=dict,
        description="Bounds on any other metric the server exports, by metric name.")
    interval_seconds: int = Field(10, ge=1, description="Seconds between two checks.")
    failures_allowed: int = Field(0, ge=0, description="Failed checks tolerated before the "
                                                       "rollout is rolled back.")
    min_requests: int = Field(10, ge=1, description="A check that saw fewer canary requests "
                                                    "is skipped, not failed.")

    @model_validator(mode="after")
    def _something(self) -> "Analysis":
        if self.max_error_rate is None and self.max_p99_ms is None and not self.metrics:
            raise ValueError("analysis needs a threshold: max_error_rate, max_p99_ms or metrics")
        return self


class Rollout(SpecModel):
    """How a new model version replaces the one being served."""

    strategy: Literal["all-at-once", "canary", "linear", "blue-green"] = Field(
        "all-at-once", description="Traffic shifting strategy.")
    canary_percent: int = Field(
        10, ge=1, le=99, description="Traffic share of the canary (strategy canary).")
    step_percent: int = Field(
        10, ge=1, le=100, description="Traffic added per step (strategy linear).")
    bake_seconds: int = Field(
        0, ge=0, description="Time to watch each step before shifting more traffic.")
    analysis: Analysis | None = Field(
        None, description="Judge the new version on its own traffic while it bakes; a failed "
                          "analysis rolls back to the old version and fails the apply.")

    @model_validator(mode="after")
    def _analysis_needs_bake(self) -> "Rollout":
        if self.analysis is not None and (self.strategy not in ("canary", "linear")
                                          or not self.bake_seconds):
            raise ValueError('analysis needs strategy "canary" or "linear" and bake_seconds > 0 '
                             "(it judges the new version while it bakes)")
        return self


#: A variant's name: what SageMaker accepts as a VariantName, and a Prometheus label value.
VARIANT_NAME = re.compile(r"[A-Za-z0-9](?:-?[A-Za-z0-9]){0,62}")


class Variant(SpecModel):
    """One model an endpoint serves beside others, with its share of the traffic."""

    model: ModelRef = Field(..., description="Model to serve: model.NAME, or a model URI.")
    weight: int = Field(0, ge=0, le=100,
                        description="Share of live traffic in percent; the live variants' "
                                    "weights sum to 100 (a shadow variant's is 0).")


class Experiment(SpecModel):
    """How an endpoint's variants share traffic and are compared."""

    type: Literal["ab", "shadow", "bandit"] = Field(
        ..., description="ab: split by weight; shadow: mirror a share of requests to the "
                         "shadow variant; bandit: weights move toward the better variant "
                         "from posted rewards (Thompson sampling).")
    sticky_key: str | None = Field(
        None, description='Keeps a user on one variant: "header:NAME" (a request header) or '
                          '"input:NAME" (the request\'s parameters.NAME, else the input '
                          "tensor NAME). ab and bandit.")
    shadow: str | None = Field(None, description="The variant requests are mirrored to (shadow).")
    shadow_percent: int = Field(100, ge=0, le=100,
                                description="Share of requests mirrored to the shadow (shadow).")
    reward: Literal["binary", "continuous"] = Field(
        "binary", description="Rewards posted back: 0/1 (a bandit's Beta posterior, the report's "
                              "two-proportion test) or numbers (Gaussian; Welch's test).")
    floor_percent: float = Field(5, ge=0, le=50,
                                 description="Least traffic share each variant keeps (bandit).")

    @field_validator("sticky_key")
    @classmethod
    def _sticky_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"(header|input):[A-Za-z0-9_.-]+", value):
            raise ValueError('sticky_key is "header:NAME" or "input:NAME", '
                             f'got "{value}"')
        return value


class Capture(SpecModel):
    """Request/response capture, used by monitors."""

    sample_percent: int = Field(100, ge=0, le=100, description="Share of requests captured.")


class Autoscaling(SpecModel):
    """Replica autoscaling."""

    min: int = Field(1, ge=0, description="Fewest replicas.")
    max: int = Field(..., ge=1, description="Most replicas.")
    target_rps: float | None = Field(
        None, gt=0, description="Requests per second per replica to scale on.")

    @model_validator(mode="after")
    def _order(self) -> "Autoscaling":
        if self.min > self.max:
            raise ValueError(f"autoscaling min ({self.min}) is greater than max ({self.max})")
        return self


class Endpoint(_Common):
    """An online inference endpoint serving a model, or several variants of one."""

    model: ModelRef | None = Field(
        None, description="Model to serve: model.NAME, or a model URI (or give `variants`).")
    variants: dict[str, Variant] | None = Field(
        None, description="Models served side by side, by variant name, each with a weight "
                          "(instead of `model`).")
    experiment: Experiment | None = Field(
        None, description="How the variants are compared: ab, shadow or bandit.")
    replicas: int = Field(1, ge=0, description="Serving replicas (0 keeps it scaled down).")
    instance_type: str | None = Field(None, description="Provider instance type.")
    rollout: Rollout = Field(default_factory=Rollout, description="Deployment strategy.")
    capture: Capture | None = Field(None, description="Request capture for monitoring.")
    port: int | None = Field(None, ge=1, le=65535, description="Port to listen on (local).")
    autoscaling: Autoscaling | None = Field(None, description="Replica autoscaling.")

    @model_validator(mode="after")
    def _variants(self) -> "Endpoint":
        if (self.model is None) == (self.variants is None):
            raise ValueError('an endpoint serves either "model" or "variants", '
                             + ("not both" if self.model is not None else "and names neither"))
        experiment = self.experiment
        if self.variants is None:
            if experiment is not None:
                raise ValueError('"experiment" needs "variants" to compare')
            return self
        if not self.variants:
            raise ValueError('"variants" names no variant')
        for name in self.variants:
            if not VARIANT_NAME.fullmatch(name):
                raise ValueError(f'variant name "{name}" must be letters, digits and single '
                                 "hyphens (at most 63), as SageMaker and metric labels accept")
        shadow = experiment.shadow if experiment is not None else None
        if experiment is not None and experiment.type == "shadow":
            if shadow is None:
                raise ValueError('experiment type "shadow" needs "shadow": the variant requests '
                                 "are mirrored to")
        elif shadow is not None:
            raise ValueError(f'"shadow" applies only to experiment type "shadow", '
                             f'not "{experiment.type}"')
        if shadow is not None:
            if shadow not in self.variants:
                raise ValueError(f'shadow "{shadow}" is not one of the variants '
                                 f"({', '.join(sorted(self.variants))})")
            if self.variants[shadow].weight:
                raise ValueError(f'the shadow variant "{shadow}" gets no live traffic: give it '
                                 f"weight 0, not {self.variants[shadow].weight}")
        live = {name: v.weight for name, v in self.variants.items() if name != shadow}
        if not live:
            raise ValueError("the variants need at least one live (non-shadow) variant")
        total = sum(live.values())
        if total != 100:
            raise ValueError(f"the live variants' weights sum to {total}, not 100 ("
                             + ", ".join(f"{n} = {w}" for n, w in live.items()) + ")")
        if experiment is not None and experiment.type in ("ab", "bandit") and len(live) < 2:
            raise ValueError(f'experiment type "{experiment.type}" needs at least two live variants')
        if experiment is not None and experiment.type == "bandit" and self.capture is None:
            raise ValueError('a bandit needs "capture": its rewards are matched to the captured '
                             "requests, and its state is rebuilt from them after a restart")
        return self


# --------------------------------------------------------------------------- monitor

class MonitorCheck(SpecModel):
    """One drift or health check."""

    metric: Literal["psi", "ks", "latency_p99_ms", "error_rate"] = Field(
        ..., description="psi / ks: feature drift against the baseline; latency_p99_ms, "
                         "error_rate: serving health.")
    threshold: float = Field(..., ge=0, description="Breach when the metric exceeds this.")
    feature: str | None = Field(
        None, description="Feature to check (psi, ks); all features when unset.")

    @model_validator(mode="after")
    def _feature_only_for_drift(self) -> "MonitorCheck":
        if self.feature is not None and self.metric not in ("psi", "ks"):
            raise ValueError(f'"feature" applies only to psi and ks, not {self.metric}')
        return self


class Monitor(_Common):
    """Watches an endpoint's traffic against a baseline dataset."""

    endpoint: EndpointRef = Field(
        ..., description="Endpoint to watch: endpoint.NAME (or its URL).")
    baseline: BaselineRef = Field(
        ..., description="Reference data: dataset.NAME (or a path/URI).")
    checks: list[MonitorCheck] = Field(..., min_length=1, description="Checks to run.")
    schedule: str | None = Field(
        None, description='5-field cron expression, e.g. "*/10 * * * *"; the provider\'s '
                          "default when unset.")
    on_breach: Literal["alert", "retrain", "none"] = Field(
        "alert", description="What a breach does: alert, mark the pipeline stale so the "
                             "next plan re-runs it (retrain), or nothing.")
    pipeline: PipelineRef | None = Field(
        None, description="Pipeline to retrain when on_breach is \"retrain\" (required "
                          "then by the local and sagemaker providers).")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            problem = validate_cron(value)
            if problem:
                raise ValueError(problem)
        return value


# ------------------------------------------------------------------------- lifecycle

class Lifecycle(SpecModel):
    """The ``lifecycle { }`` meta-argument of every resource."""

    prevent_destroy: bool = Field(False, description="Refuse any plan that destroys it.")
    ignore_changes: list[str] | Literal["all"] = Field(
        default_factory=list, description='Attributes whose changes are ignored, or "all".')
    create_before_destroy: bool = Field(
        False, description="When replacing, create the new object before deleting the old.")
    replace_triggered_by: list[str] = Field(
        default_factory=list, description="Addresses whose change forces a replacement.")


# ------------------------------------------------------------------------ the tables

KIND_MODELS: dict[str, type[SpecModel]] = {
    "dataset": Dataset,
    "training_cluster": TrainingCluster,
    "pipeline": Pipeline,
    "model": Model,
    "endpoint": Endpoint,
    "monitor": Monitor,
}

#: Attributes each kind's provider computes; users cannot set them.
COMPUTED: dict[str, tuple[str, ...]] = {
    "dataset": ("uri", "digest", "rows", "bytes"),
    "training_cluster": ("gpus_total",),
    "pipeline": ("fingerprint", "run_id", "model_uri", "metrics", "stale", "best_parameters"),
    "model": ("version", "uri"),
    "endpoint": ("url", "model_version"),
    "monitor": ("last_report", "breached"),
}

#: Fields holding references: kind -> field -> kinds it may reference.
#: ``pipeline.inputs`` is a map whose values are references.
REFERENCE_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "dataset": {},
    "training_cluster": {},
    "pipeline": {"cluster": ("training_cluster",), "inputs": ("dataset", "pipeline")},
    "model": {"artifact": ("pipeline",)},
    "endpoint": {"model": ("model",), "variants": ("model",)},
    "monitor": {"endpoint": ("endpoint",), "baseline": ("dataset",), "pipeline": ("pipeline",)},
}

#: Meta-arguments the engine handles on every resource block.
META_ARGUMENTS = ("provider", "depends_on", "for_each", "count", "lifecycle")
