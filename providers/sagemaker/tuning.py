"""A sagemaker pipeline's `sweep`: one SageMaker HyperParameterTuningJob per run.

What the kit (`kit.sweeps`) says of a sweep holds here; SageMaker does the searching:

==================================  ====================================================
HyperParameterTuningJobConfig       Strategy Bayesian (RandomSeed = `seed`), objective
                                    {Type Maximize|Minimize, MetricName `objective`},
                                    ResourceLimits {MaxNumberOfTrainingJobs `trials`,
                                    MaxParallelTrainingJobs `parallel`}, early stopping
                                    Auto with ``pruning = "median"`` (else Off)
ParameterRanges                     float: Continuous, int: Integer (ScalingType
                                    Logarithmic with ``log``, else Linear); an int range
                                    with a ``step`` and a categorical list: Categorical,
                                    each value JSON-encoded as the plain run's
                                    hyperparameters are
TrainingJobDefinition               the plain run's CreateTrainingJob request
                                    (`PipelineHandler.prepare`), its HyperParameters as
                                    StaticHyperParameters, the objective among its
                                    MetricDefinitions
==================================  ====================================================

SageMaker hands a trial's values to the container as hyperparameters, while the run
contract's ``MLFORM_HYPERPARAMETERS`` is in the job definition's Environment, the same for
every trial.  So a sweep's code archive holds a small launcher (`LAUNCHER`) run as the
program: it merges the trial's values (``SM_HPS``, which the SageMaker training toolkit
sets) into ``MLFORM_HYPERPARAMETERS``, sets ``MLFORM_RUN_ID`` to the trial's job name and
runs the entrypoint as ``__main__``: the script reads its parameters as it does on local.

The tuning job is named ``env.name(address, "<fingerprint[:8]>-<attempt>", limit=32)``
(SageMaker allows 32 characters).  A create first describes attempt 1, 2, ...: one still
InProgress or Completed (and not stale) is adopted, so a retried or crashed apply never
starts a second tuning job; a Failed or Stopped one makes the next attempt.  When it
ends, its BestTrainingJob is the pipeline's result: `run_id` (the best training job, so
lineage, models and `read` name the job that made the model), `model_uri`, `metrics`
(its FinalMetricDataList) and `best_parameters` (TunedHyperParameters typed back by the
sweep's parameters); the gate and a champion comparison judge it as any run.

Run records (`kit.run_ledger`): the tuning job has one (its `sweep`: trials, objective,
direction and, once it ended, the best run and values), written before
CreateHyperParameterTuningJob and closed when it ends; each of its training jobs
(ListTrainingJobsForHyperParameterTuningJob) gets one when the tuning job ends (its
`sweep`: the tuning job, the trial's number and values).
"""

from __future__ import annotations

import io
import json
import tarfile
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Mapping

from mlform.providers.base import (
    Desired, Diagnostic, LiveObject, Planned, ProviderError, contains_unknown, error,
)
from mlform.providers.kit.reruns import fingerprint_hex, run_fingerprint
from mlform.providers.kit.runs import reproducible_tar
from mlform.providers.kit.run_records import FAILED, RUNNING, SUCCEEDED, closed_record, run_record
from mlform.providers.kit.sweeps import BEST_PARAMETERS, SweepSpec, sweep_of, trial_hyperparameters

from .clusters import read_profile

if TYPE_CHECKING:
    from .pipelines import PipelineHandler

__all__ = ["diagnostics", "parameter_ranges", "tuning_request", "typed_values", "tuning_name",
           "with_launcher", "describe", "choose", "run", "open_record", "refresh_record",
           "delete", "LAUNCHER", "NAME_LIMIT", "KIND"]

#: SageMaker's limits on a HyperParameterTuningJob
NAME_LIMIT, MAX_RANGES, MAX_TRIALS, MAX_PARALLEL, MAX_VALUES = 32, 30, 750, 100, 30
ACTIVE, DONE, ENDED = "InProgress", "Completed", ("Failed", "Stopped")
#: the program a sweep's training jobs run (the entrypoint runs inside it)
LAUNCHER = "_mlform_sweep.py"
#: what a ledger entry's `job` says of a tuning job's record (a training job's has no kind)
KIND = "tuning"

_LAUNCHER_TEXT = '''\
"""mlform: run {program!r} as a trial of a SageMaker tuning job.

(Written by providers/sagemaker/tuning.py into a sweep's code archive.)
"""
import json, os, runpy, sys

here = os.path.dirname(os.path.abspath(__file__))
# the trial's values: hyperparameters, which the SageMaker training toolkit passes as SM_HPS
given = json.loads(os.environ.get("SM_HPS") or "{{}}")
fixed = json.loads(os.environ.get("MLFORM_HYPERPARAMETERS") or "{{}}")
fixed.update({{name: given[name] for name in {names!r} if name in given}})
os.environ["MLFORM_HYPERPARAMETERS"] = json.dumps(fixed)
job = json.loads(os.environ.get("SM_TRAINING_ENV") or "{{}}").get("job_name")
if job:
    os.environ["MLFORM_RUN_ID"] = job
program = os.path.join(here, {program!r})
sys.argv[0] = program
sys.path.insert(0, os.path.dirname(program))
runpy.run_path(program, run_name="__main__")
'''


# -- validate ---------------------------------------------------------------------------

def diagnostics(desired: Desired) -> list[Diagnostic]:
    """SageMaker's limits on the pipeline's sweep (the spec checked its shape)."""
    address, raw = desired.address, desired.attributes.get("sweep")
    if raw is None or contains_unknown(raw):
        return []
    spec = sweep_of(desired.attributes)
    if spec is None:
        return []
    found = []

    def refuse(summary: str, hint: str) -> None:
        found.append(error(f"{address}: {summary}", address=address, hint=hint))

    if spec.trials > MAX_TRIALS:
        refuse(f"sweep.trials is {spec.trials}, more than the {MAX_TRIALS} training jobs a "
               "SageMaker tuning job runs (MaxNumberOfTrainingJobs)",
               f"Set trials to at most {MAX_TRIALS}.")
    if spec.parallel > MAX_PARALLEL:
        refuse(f"sweep.parallel is {spec.parallel}, more than the {MAX_PARALLEL} training jobs "
               "a SageMaker tuning job runs at once (MaxParallelTrainingJobs)",
               f"Set parallel to at most {MAX_PARALLEL}.")
    if len(spec.parameters) > MAX_RANGES:
        refuse(f"sweep.parameters has {len(spec.parameters)} parameters, more than the "
               f"{MAX_RANGES} ranges a SageMaker tuning job searches",
               f"Search at most {MAX_RANGES} parameters; fix the others in hyperparameters.")
    for name, p in spec.parameters.items():
        values = _choices(p)
        if values is not None and len(values) > MAX_VALUES:
            what = ("values" if p["type"] == "categorical" else
                    f"steps of {int(p['step'])} (SageMaker's integer ranges have no step, so "
                    "they are searched as a categorical list)")
            refuse(f"sweep.parameters.{name} has {len(values)} {what}, more than the "
                   f"{MAX_VALUES} values a SageMaker categorical range takes",
                   "List fewer values, or search a range (without a step).")
    hyper = desired.attributes.get("hyperparameters")
    if isinstance(hyper, Mapping) and LAUNCHER[:-3] in hyper:
        refuse(f"hyperparameter {LAUNCHER[:-3]!r} is mlform's", "Rename it.")
    return found


def _choices(p: Mapping[str, Any]) -> list | None:
    """The values of a parameter SageMaker searches as a categorical list, else None."""
    if p["type"] == "categorical":
        return list(p["values"])
    if p["type"] == "int" and p.get("step") not in (None, 1) and not p.get("log"):
        step = int(p["step"])
        return list(range(int(p["min"]), int(p["max"]) + 1, step))
    return None


# -- the request --------------------------------------------------------------------------

def _encode(value: Any) -> str:
    """A value as the plain run's HyperParameters spell it (JSON): the toolkit decodes it."""
    return json.dumps(value)


def parameter_ranges(spec: SweepSpec) -> dict[str, list[dict]]:
    """The sweep's `parameters` as SageMaker's ParameterRanges."""
    ranges: dict[str, list[dict]] = {"ContinuousParameterRanges": [],
                                     "IntegerParameterRanges": [],
                                     "CategoricalParameterRanges": []}
    for name, p in spec.parameters.items():
        choices = _choices(p)
        scaling = "Logarithmic" if p.get("log") else "Linear"
        if choices is not None:
            ranges["CategoricalParameterRanges"].append(
                {"Name": name, "Values": [_encode(v) for v in choices]})
        elif p["type"] == "int":
            ranges["IntegerParameterRanges"].append(
                {"Name": name, "MinValue": str(int(p["min"])), "MaxValue": str(int(p["max"])),
                 "ScalingType": scaling})
        else:
            ranges["ContinuousParameterRanges"].append(
                {"Name": name, "MinValue": repr(float(p["min"])),
                 "MaxValue": repr(float(p["max"])), "ScalingType": scaling})
    return {k: v for k, v in ranges.items() if v}


def tuning_request(name: str, spec: SweepSpec, training: Mapping[str, Any]) -> dict:
    """CreateHyperParameterTuningJob for the run whose CreateTrainingJob request (what a
    plain run of the pipeline would send) is `training`."""
    # the objective is among the MetricDefinitions: the handler's metric names include it
    definition = {k: v for k, v in training.items()
                  if k not in ("TrainingJobName", "Tags", "HyperParameters")}
    definition["StaticHyperParameters"] = {k: v for k, v in training["HyperParameters"].items()
                                           if k not in spec.parameters}
    config: dict[str, Any] = {
        "Strategy": "Bayesian",
        "HyperParameterTuningJobObjective": {
            "Type": "Maximize" if spec.direction == "maximize" else "Minimize",
            "MetricName": spec.objective},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": spec.trials,
                           "MaxParallelTrainingJobs": spec.parallel},
        "ParameterRanges": parameter_ranges(spec),
        "TrainingJobEarlyStoppingType": "Auto" if spec.pruning == "median" else "Off",
    }
    if spec.seed is not None:
        config["RandomSeed"] = spec.seed
    return {"HyperParameterTuningJobName": name, "HyperParameterTuningJobConfig": config,
            "TrainingJobDefinition": definition, "Tags": list(training.get("Tags") or [])}


def typed_values(spec: SweepSpec, tuned: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's TunedHyperParameters (strings) as the sweep's types: float, int, or the
    categorical value itself."""
    out: dict[str, Any] = {}
    for name, p in spec.parameters.items():
        if name not in tuned:
            continue
        text = str(tuned[name])
        choices = _choices(p)
        if choices is not None:
            # SageMaker answers with one of the encoded values sent (or, from elsewhere, the
            # bare text): the value it stands for
            out[name] = next((v for v in choices if _encode(v) == text or str(v) == text), text)
        elif p["type"] == "int":
            out[name] = int(float(text))
        else:
            out[name] = float(text)
    return out


def tuning_name(handler: "PipelineHandler", address: str, fingerprint: str, attempt: int) -> str:
    return handler.env.name(address, suffix=f"{fingerprint_hex(fingerprint)[:8]}-{attempt}",
                            limit=NAME_LIMIT)


def with_launcher(archive: bytes, program: str, names: list[str]) -> tuple[bytes, str]:
    """The code archive with `LAUNCHER` added (`kit.runs.reproducible_tar`, as
    `code_archive` writes it), and the launcher as the program to run."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                files[member.name] = tar.extractfile(member).read()   # type: ignore[union-attr]
    if LAUNCHER in files:
        raise ProviderError(f"the code archive already holds {LAUNCHER}, the file mlform runs "
                            "a sweep's trials through: rename it")
    files[LAUNCHER] = _LAUNCHER_TEXT.format(program=program, names=sorted(names)).encode()
    return reproducible_tar(files), LAUNCHER


# -- apply --------------------------------------------------------------------------------

def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return value.isoformat(timespec="seconds")
    return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def describe(handler: "PipelineHandler", name: str, address: str) -> dict | None:
    return handler.aws.find("sagemaker", "describe_hyper_parameter_tuning_job",
                            address=address, HyperParameterTuningJobName=name)


def choose(handler: "PipelineHandler", address: str, fingerprint: str
           ) -> tuple[str, dict | None]:
    """(tuning job name, its description when there is one to adopt): the first attempt
    that does not exist yet, unless an earlier one still runs or completed (not stale)."""
    from .pipelines import TAG_DELETED
    marker = handler.stale_marker(address)
    attempt = 1
    while True:
        name = tuning_name(handler, address, fingerprint, attempt)
        desc = describe(handler, name, address)
        if desc is None:
            return name, None
        status = desc.get("HyperParameterTuningJobStatus")
        best = (desc.get("BestTrainingJob") or {}).get("TrainingJobName")
        stale = status == DONE and any(handler._marks(marker, job, fingerprint,
                                                      desc.get("CreationTime"))
                                       for job in (name, best) if job)
        if status in (ACTIVE, DONE) and not stale:
            tags = handler.sagemaker_tags(desc["HyperParameterTuningJobArn"], address)
            if tags.get(TAG_DELETED) != "true":
                handler.env.check_owner(tags, address, f"tuning job {name}")
                return name, desc
        attempt += 1


def run(handler: "PipelineHandler", planned: Planned, attrs: dict) -> LiveObject:
    """Run (or adopt) the pipeline's tuning job and publish its best training job."""
    address = planned.address
    spec = sweep_of(attrs)
    assert spec is not None
    from .pipelines import processes_of
    name, adopted = choose(handler, address, run_fingerprint(planned))
    slug = handler.env.name(address)
    profile = read_profile(handler.env, attrs.get("cluster"), address=address)
    processes = processes_of(profile)   # of each training job
    if adopted is None:
        training, _ = handler.prepare(address, attrs, name, sweep=spec)
        request = tuning_request(name, spec, training)
        open_record(handler, address, attrs, spec, name, processes=processes)
        handler.aws.progress(address, f"starting tuning job {name}: {spec.trials} training "
                                      f"jobs, {spec.parallel} at a time")
        try:
            handler.aws.call("sagemaker", "create_hyper_parameter_tuning_job", address=address,
                             **request)
        except ProviderError as exc:
            # a concurrent or retried create got there first: adopt its tuning job
            if "ResourceInUse" not in exc.message or describe(handler, name, address) is None:
                handler.ledger.close(slug, name, FAILED, address=address, finished=_now(),
                                     failure=exc.message)
                raise
    else:
        handler.aws.progress(address, f"adopting tuning job {name} "
                                      f"({adopted.get('HyperParameterTuningJobStatus')})")
        if handler.ledger.entry(slug, name, address=address) is None:
            open_record(handler, address, attrs, spec, name, processes=processes,
                  started=_iso(adopted.get("CreationTime")))
    try:
        desc = _wait(handler, address, name)
    except ProviderError as exc:
        ended = describe(handler, name, address)
        if ended is not None and ended.get("HyperParameterTuningJobStatus") in ENDED:
            _record_trials(handler, address, attrs, spec, name, processes)
            _close(handler, address, name, ended, failure=exc.message)
        raise   # else still running (a timeout): its record stays open for the next apply
    _record_trials(handler, address, attrs, spec, name, processes)
    best = desc.get("BestTrainingJob") or {}
    best_desc = handler.describe(best["TrainingJobName"], address) if best else None
    if best_desc is None:
        failure = (f"{address}: no training job of tuning job {name} reported the objective "
                   f"{spec.objective!r}")
        _close(handler, address, name, desc, failure=failure)
        raise ProviderError(failure, address=address, service_message=(
            "SageMaker reads metrics from the job's log: print them as JSON "
            f'("{spec.objective}": 0.93), e.g. print(json.dumps(metrics)).'))
    values = typed_values(spec, best.get("TunedHyperParameters") or {})
    attrs[BEST_PARAMETERS] = values
    handler.aws.progress(address, f"tuning job {name}: best {best['TrainingJobName']} ("
                                  + ", ".join(f"{k}={v}" for k, v in values.items()) + ")")
    try:
        live = handler._publish(planned, attrs, best_desc, None)
    except ProviderError as exc:
        _close(handler, address, name, desc, best=best_desc, values=values, failure=exc.message)
        raise
    _close(handler, address, name, desc, best=best_desc, values=values)
    return live


def _wait(handler: "PipelineHandler", address: str, name: str) -> dict:
    """Poll the tuning job to Completed; how many of its training jobs ended is progress."""
    seen: list[str] = []

    def poll() -> dict | None:
        desc = describe(handler, name, address)
        counters = (desc or {}).get("TrainingJobStatusCounters") or {}
        done = sum(int(counters.get(k) or 0) for k in ("Completed", "Stopped",
                                                         "NonRetryableError", "RetryableError"))
        line = (f"tuning job {name}: {done} training jobs ended, "
                f"{counters.get('InProgress', 0)} running")
        if counters and (not seen or seen[-1] != line):
            seen.append(line)
            handler.aws.progress(address, line, waiting_on=f"tuning job {name}")
        return desc

    desc = handler.aws.wait(poll, "HyperParameterTuningJobStatus", address=address,
                            what=f"tuning job {name}", ready=(DONE,), failed=ENDED,
                            timeout=handler.schema.timeouts.create)
    assert desc is not None
    return desc


# -- run records --------------------------------------------------------------------------

def _summary(spec: SweepSpec, name: str) -> dict:
    return {"tuning_job": name, "trials": spec.trials, "parallel": spec.parallel,
            "objective": spec.objective, "direction": spec.direction}


def open_record(handler: "PipelineHandler", address: str, attrs: Mapping[str, Any],
                spec: SweepSpec, name: str, *, processes: int = 1,
                started: str | None = None) -> None:
    """The tuning job's record, running (written before CreateHyperParameterTuningJob)."""
    handler.ledger.open(handler.env.name(address), run_record(
        provider=handler.env.context.name, address=address, attrs=attrs, run_id=name,
        status=RUNNING, started=started or _now(), processes=processes,
        sweep=_summary(spec, name)), job={"name": name, "kind": KIND}, address=address)


def _close(handler: "PipelineHandler", address: str, name: str, desc: Mapping[str, Any], *,
           best: Mapping[str, Any] | None = None, values: Mapping[str, Any] | None = None,
           failure: str | None = None) -> None:
    """Close the tuning job's record: the best run's metrics and model, or why it failed."""
    slug = handler.env.name(address)
    entry = handler.ledger.entry(slug, name, address=address)
    if entry is None:
        return
    from .pipelines import _metrics_of
    model = ((best or {}).get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    ok = failure is None and best is not None
    record = closed_record(
        entry["record"], SUCCEEDED if ok else FAILED,
        started=_iso(desc.get("CreationTime")),
        finished=_iso(desc.get("HyperParameterTuningEndTime") or desc.get("LastModifiedTime")),
        metrics=_metrics_of(best or {}), failure=failure or (desc.get("FailureReason") if not ok
                                                             else None),
        model_uri=model if ok else None, artifacts={"model": model} if ok and model else {})
    if best is not None:
        record["sweep"] = {**(record.get("sweep") or {}), "best_run_id": best["TrainingJobName"],
                           BEST_PARAMETERS: dict(values or {})}
        # as on local: the tuning job's parameters are the ones its best run had
        record["parameters"] = {**dict(record.get("parameters") or {}), **dict(values or {})}
    if record != entry["record"]:
        handler.ledger.open(slug, record, job=entry["job"], address=address)


def _record_trials(handler: "PipelineHandler", address: str, attrs: Mapping[str, Any],
                   spec: SweepSpec, name: str, processes: int) -> None:
    """One record per training job of the tuning job (each written once it ended)."""
    slug = handler.env.name(address)
    summaries = list(handler.aws.pages(
        "sagemaker", "list_training_jobs_for_hyper_parameter_tuning_job",
        "TrainingJobSummaries", address=address, HyperParameterTuningJobName=name,
        MaxResults=100))
    summaries.sort(key=lambda s: (str(s.get("CreationTime")), s["TrainingJobName"]))
    for number, summary in enumerate(summaries, start=1):
        job = summary["TrainingJobName"]
        desc = handler.describe(job, address)
        if desc is None or desc.get("TrainingJobStatus") not in (DONE, *ENDED):
            continue
        values = typed_values(spec, summary.get("TunedHyperParameters") or {})
        trial_attrs = {**attrs, "hyperparameters": trial_hyperparameters(attrs, values)}
        status, outcome = handler._outcome(desc)
        record = closed_record(run_record(
            provider=handler.env.context.name, address=address, attrs=trial_attrs, run_id=job,
            status=RUNNING, started=None, processes=processes,
            sweep={"run_id": name, "trial": number, "parameters": values}), status, **outcome)
        entry = handler.ledger.entry(slug, job, address=address)
        if entry is None or entry["record"] != record:
            handler.ledger.open(slug, record, job={"name": job}, address=address)


def refresh_record(handler: "PipelineHandler", record: dict, job: Mapping[str, Any]
                   ) -> dict | None:
    """A tuning job's record still running, as its tuning job is now (`run_records`)."""
    address = str(record.get("pipeline") or "")
    desc = describe(handler, str(job.get("name") or record["run_id"]), address)
    if desc is None:
        return {**record, "status": FAILED,
                "failure": f"tuning job {record['run_id']} no longer exists"}
    status = desc.get("HyperParameterTuningJobStatus")
    if status not in (DONE, *ENDED):
        return None
    return closed_record(record, SUCCEEDED if status == DONE else FAILED,
                         finished=_iso(desc.get("HyperParameterTuningEndTime")),
                         failure=None if status == DONE else
                         (desc.get("FailureReason") or f"tuning job {status}"))


# -- delete -------------------------------------------------------------------------------

def delete(handler: "PipelineHandler", address: str) -> None:
    """Stop the address's tuning jobs still running and mark them deleted (tuning jobs,
    like training jobs, stay as history)."""
    from .pipelines import TAG_DELETED
    for summary in handler.aws.pages("sagemaker", "list_hyper_parameter_tuning_jobs",
                                     "HyperParameterTuningJobSummaries", address=address,
                                     NameContains=handler._ident(address), MaxResults=100):
        name, arn = summary["HyperParameterTuningJobName"], summary["HyperParameterTuningJobArn"]
        tags = handler.sagemaker_tags(arn, address)
        if tags.get(TAG_DELETED) == "true" or not handler.env.owns(tags, address):
            continue
        if summary.get("HyperParameterTuningJobStatus") == ACTIVE:
            handler.aws.progress(address, f"stopping tuning job {name}")
            handler.aws.call("sagemaker", "stop_hyper_parameter_tuning_job", address=address,
                             HyperParameterTuningJobName=name)
            handler.aws.wait(lambda: describe(handler, name, address),
                             "HyperParameterTuningJobStatus", address=address,
                             what=f"tuning job {name}", ready=("Stopped", DONE, "Failed"),
                             timeout=handler.schema.timeouts.delete, gone_ok=True)
        handler.aws.call("sagemaker", "add_tags", address=address, ResourceArn=arn,
                         Tags=[{"Key": TAG_DELETED, "Value": "true"}])
