"""Run records: what every pipeline run leaves behind, in one shape on every provider.

A provider keeps a record for each run it makes (where it keeps the run: the local
provider in ``run.json``, SageMaker in the training job, Kubernetes beside the Job) and
returns them from `Provider.run_records`; `mlform runs`, `mlform lineage` and the MLflow
tracking read nothing else.  A record is `RunRecord` as JSON: the run's id, pipeline,
fingerprint, parameters, final and per-step metrics, input dataset digests, entrypoint
digest, cluster and accelerator, start/end/duration, status and failure reason, and its
artifacts.

Step metrics (the run contract): a script reports a step by printing one JSON object
with an integer ``"step"`` on a line of its own, e.g. ``{"step": 3, "loss": 0.41}``;
the numbers beside ``step`` are that step's metrics.  `step_metrics` reads them from a
run's log (torchrun's ``[default0]:`` rank prefix removed; only rank 0's lines count).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Iterable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field

from mlform.providers.base import contains_unknown

from .champions import run_lineage

__all__ = ["RunRecord", "StepMetrics", "RUNNING", "SUCCEEDED", "FAILED", "STATUSES",
           "step_metrics", "parse_step_line", "run_record", "closed_record", "duration_seconds",
           "MAX_STEPS"]

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
STATUSES = (RUNNING, SUCCEEDED, FAILED)

#: steps kept per run: a script logging every batch must not grow a record without bound
#: (the first and the latest steps are kept, evenly thinned between)
MAX_STEPS = 2000

# torchrun's --tee / --log-dir console prefix of a rank's line: "[default0]:"
_RANK_PREFIX = re.compile(r"^\[[A-Za-z_]+(\d+)\]:")


class StepMetrics(BaseModel):
    """One step's metrics, as the script reported them."""

    model_config = ConfigDict(extra="forbid")

    step: int
    metrics: dict[str, float]


class RunRecord(BaseModel):
    """One pipeline run (its JSON form is what `Provider.run_records` returns)."""

    model_config = ConfigDict(extra="ignore")

    run_id: str = Field(description="the run's id, unique within the stack environment")
    pipeline: str = Field(description="the pipeline's address")
    provider: str = Field("", description="the provider that ran it")
    status: Literal["running", "succeeded", "failed"]
    failure: str | None = Field(None, description="why the run failed (status failed)")
    fingerprint: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict,
                                       description="the pipeline's hyperparameters")
    metrics: dict[str, Any] = Field(default_factory=dict, description="final metrics")
    steps: list[StepMetrics] = Field(default_factory=list, description="per-step metrics")
    inputs: dict[str, str | None] = Field(
        default_factory=dict, description="input name -> the address it came from")
    data_digests: dict[str, str | None] = Field(
        default_factory=dict, description="input name -> the content digest it had")
    code_digest: str | None = Field(None, description="sha256 of the entrypoint")
    entrypoint: str | None = None
    cluster: str | None = Field(None, description="the training cluster's address")
    accelerator: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    processes: int = 1
    started: str | None = None
    finished: str | None = None
    duration_seconds: float | None = None
    artifacts: dict[str, str] = Field(default_factory=dict,
                                      description="name -> URI (model, logs, ...)")
    model_uri: str | None = Field(None, description="the published model (succeeded runs)")
    sweep: dict[str, Any] | None = Field(
        None, description="a sweep's trial: the sweep's run, trial number, its parameters")
    tags: dict[str, str] = Field(default_factory=dict)


def parse_step_line(line: str) -> StepMetrics | None:
    """The step a log line reports, or None (any other line)."""
    text = line.strip()
    match = _RANK_PREFIX.match(text)
    if match:
        if match.group(1) != "0":
            return None   # only rank 0 reports for the run
        text = text[match.end():].strip()
    if not text.startswith("{") or '"step"' not in text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    step = doc.get("step") if isinstance(doc, dict) else None
    if not isinstance(step, int) or isinstance(step, bool):
        return None
    metrics = {str(k): float(v) for k, v in doc.items()
               if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return StepMetrics(step=step, metrics=metrics) if metrics else None


def _thin(steps: list[StepMetrics], limit: int) -> list[StepMetrics]:
    if len(steps) <= limit:
        return steps
    if limit <= 1:
        return steps[-1:] if limit == 1 else []
    # more than one step apart before rounding, so no step is taken twice; the first and
    # the last are always kept
    stride = (len(steps) - 1) / (limit - 1)
    return [steps[round(i * stride)] for i in range(limit)]


def step_metrics(lines: Iterable[str], limit: int = MAX_STEPS) -> list[StepMetrics]:
    """The steps a run's log reports, in order (at most `limit`, thinned evenly)."""
    found = [step for step in map(parse_step_line, lines) if step is not None]
    return _thin(found, limit)


def duration_seconds(started: Any, finished: Any) -> float | None:
    """Seconds between two ISO times, or None when either is missing or unreadable."""
    try:
        begin = datetime.fromisoformat(str(started))
        end = datetime.fromisoformat(str(finished))
    except ValueError:
        return None
    return round((end - begin).total_seconds(), 3) if started and finished else None


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def run_record(*, provider: str, address: str, attrs: Mapping[str, Any], run_id: str,
               status: str, started: str | None, finished: str | None = None,
               metrics: Mapping[str, Any] | None = None, failure: str | None = None,
               steps: Iterable[StepMetrics] = (), processes: int = 1,
               artifacts: Mapping[str, str] | None = None, model_uri: str | None = None,
               sweep: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A run's record (JSON) from the pipeline's planned attributes and what the run did;
    the digests are the ones `kit.champions.run_lineage` gives the registry."""
    lineage = run_lineage(address, attrs, run_id, metrics or {})
    cluster = attrs.get("cluster") if isinstance(attrs.get("cluster"), Mapping) else {}
    given = attrs.get("inputs") if isinstance(attrs.get("inputs"), Mapping) else {}
    inputs = {str(k): (v.get("address") if isinstance(v, Mapping) and
                       isinstance(v.get("address"), str) else None)
              for k, v in sorted(given.items())}
    hyper = attrs.get("hyperparameters")
    parameters = dict(hyper) if isinstance(hyper, Mapping) and not contains_unknown(hyper) else {}
    record = RunRecord(
        run_id=run_id, pipeline=address, provider=provider, status=status,  # type: ignore[arg-type]
        failure=failure, fingerprint=lineage["fingerprint"], parameters=parameters,
        metrics=dict(metrics or {}), steps=list(steps), inputs=inputs, data_digests=lineage["data_digests"],
        code_digest=lineage["code_digest"],
        entrypoint=str(attrs["entrypoint"]) if attrs.get("entrypoint") else None,
        cluster=cluster.get("address") if isinstance(cluster.get("address"), str) else None,
        accelerator=(str(cluster["accelerator"]) if isinstance(cluster.get("accelerator"), str)
                     else None),
        nodes=_int(cluster.get("nodes"), 1), gpus_per_node=_int(cluster.get("gpus_per_node"), 0),
        processes=processes, started=started, finished=finished,
        duration_seconds=duration_seconds(started, finished),
        artifacts=dict(artifacts or {}), model_uri=model_uri,
        sweep=dict(sweep) if sweep else None)
    return record.model_dump(mode="json")


def closed_record(record: Mapping[str, Any], status: str, *, finished: str | None,
                  started: str | None = None, metrics: Any = None,
                  failure: str | None = None, steps: Iterable[StepMetrics | dict] = (),
                  model_uri: str | None = None,
                  artifacts: Mapping[str, str] | None = None) -> dict:
    """`record` finished: its status, times, final and step metrics, failure and model."""
    started = started or record.get("started")
    return {**record, "status": status, "started": started, "finished": finished,
            "failure": failure, "duration_seconds": duration_seconds(started, finished),
            "metrics": dict(metrics) if isinstance(metrics, Mapping) else {},
            "steps": [s.model_dump() if isinstance(s, StepMetrics) else dict(s) for s in steps],
            "artifacts": {**dict(record.get("artifacts") or {}), **dict(artifacts or {})},
            "model_uri": model_uri}
