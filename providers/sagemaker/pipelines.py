"""`pipeline` on the `sagemaker` provider: one SageMaker training job per run fingerprint.

Jobs and their names
--------------------
A run is a training job named ``env.name(address, "<fingerprint[:10]>-<attempt>")``
(attempt 1, 2, ...): stack, environment and address readable first, then a hash of
them, the fingerprint and the attempt.  Before starting one, `create` lists the jobs
of this address and fingerprint: an InProgress or Completed job is adopted and waited
on, so a retried or crashed create never starts a duplicate (and Ctrl-C during the
wait leaves the job running, to be adopted by the next apply); only when every earlier
attempt Failed or was Stopped (or was deleted, or marked stale) does attempt n+1
start.  `run_id` is the job name, known at plan time whenever the fingerprint is.
A changed fingerprint is an update that starts a new job under a new name; training
jobs cannot be deleted in SageMaker, so earlier jobs stay as history.

The job
-------
==========================  ==========================================================
AlgorithmSpecification      ``settings.image`` or the provider's training image,
                            TrainingInputMode File, a MetricDefinition per metric
                            (the gate's and ``settings.metrics``): the regex
                            ``"<metric>":\\s*(<number>)`` over the job's log
code                        a tar.gz of the entrypoint (plus ``settings.source_dir``)
                            at ``code/<sha256>/sourcedir.tar.gz``, run by the AWS
                            framework containers through the ``sagemaker_program`` and
                            ``sagemaker_submit_directory`` hyperparameters
HyperParameters             the pipeline's, each value JSON-encoded (as the SageMaker
                            Python SDK does)
InputDataConfig             one channel per `inputs` entry: S3Prefix of the dataset's
                            `uri`, the upstream pipeline's `model_uri`, or an s3:// URI
OutputDataConfig            ``s3://<bucket>/<prefix>/runs/<name>/``
ResourceConfig              the cluster's profile (clusters.py), or one ml.m5.xlarge
StoppingCondition           `timeout_seconds` and the cluster's max runtime (the smaller),
                            MaxWaitTimeInSeconds and checkpoints with spot
Environment, Tags           below; tags are the ownership tags plus the pipeline's
==========================  ==========================================================

The run contract on SageMaker
-----------------------------
The script gets the kit's run contract (providers/kit/runs.py): the same variables,
with SageMaker's paths: ``MLFORM_OUTPUT_DIR=/opt/ml/model`` (SageMaker uploads it as
``model.tar.gz``, the pipeline's `model_uri`); ``MLFORM_INPUT_<NAME>`` is
``/opt/ml/input/data/<name>`` for a directory input (a URI ending in ``/``) and the file
inside that channel for a file input, so a script written for the local provider reads
the same kind of path; ``MLFORM_INPUTS``, ``MLFORM_HYPERPARAMETERS``, ``MLFORM_DEVICE``
(``cuda`` on GPU instances) and ``MLFORM_RUN_ID`` (the job name) as locally.  Metrics
are read from the job's log, not from ``metrics.json``: print the metrics as one JSON
line (``print(json.dumps(metrics))``), which the MetricDefinitions match; SageMaker
reports the last value of each in ``FinalMetricDataList``.

Gate, outputs, staleness
------------------------
A Completed job's metrics are judged by the `gate` (the kit's `check_gate`, in the
same words on every provider); a miss, or a gate metric the job never printed, fails the apply and
publishes nothing (no `model_uri`).  Because the gate is not part of the fingerprint,
it is judged again on every apply against the same job: a retry re-judges the finished
job rather than paying for a new one.  A gate with ``must_beat`` also compares the job's
metrics with the champion: the package whose ``mlform:stage`` is that stage, in the
group of `gate.model` or of every model registered from this pipeline, judged on the
``mlform:metric:*`` metadata recorded when it was registered (`models.champions`); the
run record ``runs/<name>/<job>.json`` keeps the job's lineage (what the registry records)
and the comparison's note.  Plan reads the champions as a fact and names the number.  Computed: `run_id`, `job_arn`, `model_uri`
(``ModelArtifacts.S3ModelArtifacts``), `metrics` (``FinalMetricDataList``) and `stale`.

`stale` is the reason a monitor gave when it wrote the pipeline's marker
(`env.stale_key`: ``stale/<env.name(address)>.json``, the kit's stale marker; the drift
check of monitors.py writes it, or call `mark_stale`), while the marker applies: it
names the current job (``run_id``), or, without a ``run_id``, the current fingerprint
and was written after the job was created (S3's LastModified against the job's
CreationTime, to the second; `kit.reruns.StaleMarker.marks`), so a marker against a
run that has since been redone is out of date by itself.  The next plan then re-runs
the pipeline with the marker's reason: the stale job is passed over and the next
attempt starts.

Distributed training
--------------------
A run with more than one process (``nodes > 1``: ``InstanceCount``; or an instance with
several GPUs: one process each) gets the PyTorch estimator's torch_distributed setting,
the hyperparameter ``sagemaker_torch_distributed_enabled = true``: the AWS PyTorch
framework container then starts the program through torchrun on every instance, which
sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``.
``MLFORM_WORLD_SIZE`` (instances × processes per instance) and ``MLFORM_DIST_BACKEND``
(``nccl`` on GPU instances, ``gloo`` otherwise) are in the job's Environment.

Run records
-----------
Every job the provider starts has a record (`kit.run_records`, kept by `kit.run_ledger`)
at ``records/<name>/<job>.json`` in the bucket, with the ownership tags: written
(status running, the planned parameters, digests and cluster) before CreateTrainingJob,
and closed when the job ends: its status, TrainingStartTime and TrainingEndTime,
``FinalMetricDataList``, FailureReason (or the gate's verdict on a Completed job that
missed it) and the model artifact.  The provider does not read the job's log, so a
SageMaker record has no step metrics.  `run_records` lists the records prefix once;
only a record still running costs a DescribeTrainingJob (a job that ended while no apply
watched is reported with its outcome, not written).  Records stay when the pipeline is
deleted, as the jobs do.

Planning reads one fact first: the address's jobs (with the tags of the ones that could
be adopted) and its stale marker, from which plan names the job a run will use.

``settings { sagemaker_pipeline = true }`` also keeps a SageMaker Pipeline named
``env.name(address, "pl")`` whose definition has one Training step with the same
request, so the run can be repeated from SageMaker Studio.  ``runs/<name>/<job>.json``
records the attributes a job was made for, so `read` recovers a create that was cut
off (no id) with what the spec asked.

Sweeps
------
A pipeline with a ``sweep`` runs as a HyperParameterTuningJob whose training job
definition is the request above (tuning.py): its best training job is the run.

Delete stops a job still running (and waits for Stopped), tags every job of the
address ``mlform:deleted=true`` (read treats such jobs as gone), deletes the Pipeline
and the stale marker; model artifacts and records under ``runs/`` are kept.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import partial
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from mlform.providers.base import (
    UNKNOWN, Desired, Diagnostic, FactKey, Facts, KindSchema, LiveObject, Planned,
    ProviderError, Timeouts, contains_unknown, error,
)
from mlform.providers.kit import reruns
from mlform.providers.kit.sweeps import SweepSpec, plan_sweep, sweep_of
from mlform.providers.kit.champions import (
    champion_key, gate_diagnostics, judge_challenger, run_lineage, with_champion_reason,
)
from mlform.providers.kit.gate import check_gate
from mlform.providers.kit.monitoring import stale_marker
from mlform.providers.kit.names import short_hash
from mlform.providers.kit.artifacts import input_uri
from mlform.providers.kit.reruns import StaleMarker, fingerprint_hex, plan_run, run_fingerprint
from mlform.providers.kit.run_ledger import RunLedger, closed_record
from mlform.providers.kit.run_records import FAILED, RUNNING, SUCCEEDED, run_record
from mlform.providers.kit.runs import code_archive, contract_environment

from . import bucket, tuning
from .clusters import DEFAULT_MAX_RUNTIME, ComputeProfile, read_profile
from .env import OWNER_TAGS, SageMakerHandler, stale_key, user_tags
from .models import champions

__all__ = ["PipelineHandler", "PipelineSettings", "mark_stale", "metric_regex",
           "TAG_DELETED", "RUN_OUTPUTS"]

TAG_DELETED = "mlform:deleted"
#: the kit's run outputs, and the training job's ARN
RUN_OUTPUTS = (*reruns.RUN_OUTPUTS, "job_arn")
ACTIVE, DONE = "InProgress", "Completed"
ENDED = ("Failed", "Stopped")
_NUMBER = r"(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"
# SageMaker's limits on a CreateTrainingJob request
_ENV_VALUE_LIMIT, _ENV_ENTRIES, _HYPER_ENTRIES, _METRICS, _JOB_TAGS = 512, 100, 100, 40, 50
#: what the SageMaker PyTorch estimator's distribution={"torch_distributed": {"enabled":
#: True}} sets: the framework container then starts the program through torchrun
TORCH_DISTRIBUTED = "sagemaker_torch_distributed_enabled"
_SDK_HYPERPARAMETERS = ("sagemaker_program", "sagemaker_submit_directory", "sagemaker_region",
                        "sagemaker_container_log_level", TORCH_DISTRIBUTED)
class PipelineSettings(BaseModel):
    """`settings { }` of a sagemaker pipeline."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(None, min_length=1, description=(
        "Training container image; default: the provider's training_image."))
    metrics: list[str] = Field(default_factory=list, description=(
        "Metrics to read from the job's log besides the gate's (each printed as "
        '"name": number, e.g. by print(json.dumps(metrics))).'))
    source_dir: str | None = Field(None, min_length=1, description=(
        "Directory (relative to the stack) packed with the entrypoint, for helper "
        "modules and requirements.txt."))
    sagemaker_pipeline: bool = Field(False, description=(
        "Also keep a SageMaker Pipeline whose one Training step is this run."))


def metric_regex(metric: str) -> str:
    """The MetricDefinition regex: a JSON member ``"metric": number`` in the log."""
    return f'"{re.escape(metric)}":\\s*{_NUMBER}'


def mark_stale(env, address: str, *, reason: str, run_id: str | None = None,
               fingerprint: str | None = None, monitor: str = "",
               report: str | None = None) -> None:
    """Mark the pipeline at `address` stale (a monitor's drift check does), so the next
    plan re-runs it.  Name the job (`run_id`) when known; else the fingerprint."""
    bucket.put_json(env, stale_key(env, address), stale_marker(
        reason, monitor=monitor, pipeline=address, report=report, run_id=run_id,
        fingerprint=fingerprint,
        time=datetime.now(timezone.utc).isoformat(timespec="seconds")), address=address)


def _settings(attrs: Mapping[str, Any]) -> PipelineSettings:
    return PipelineSettings.model_validate(dict(attrs.get("settings") or {}))


def _channel_path(name: str, uri: str) -> str:
    """Where SageMaker puts a channel's data: the channel folder, or the one file in it."""
    base = f"/opt/ml/input/data/{name}"
    return base if uri.endswith("/") else f"{base}/{PurePosixPath(uri).name}"


def _metrics_of(desc: Mapping[str, Any]) -> dict[str, float]:
    return {m["MetricName"]: m["Value"] for m in desc.get("FinalMetricDataList") or []
            if "MetricName" in m and isinstance(m.get("Value"), (int, float))}


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return None


def _iso(value: Any) -> str | None:
    found = _time(value)
    return found.isoformat(timespec="seconds") if found else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def processes_of(profile: ComputeProfile) -> int:
    """The run's processes: one per GPU (one per instance without GPUs) on every instance."""
    return profile.instance_count * max(profile.gpus_per_instance, 1)


class PipelineHandler(SageMakerHandler):
    """`pipeline`: a training job per fingerprint, gated on its final metrics."""

    schema = KindSchema(settings_model=PipelineSettings, computed=(*RUN_OUTPUTS, "stale"),
                        timeouts=Timeouts(create=24 * 3600.0, update=24 * 3600.0, delete=3600.0))

    # -- names -------------------------------------------------------------------

    def job_name(self, address: str, fingerprint: str, attempt: int) -> str:
        return self.env.name(address, suffix=f"{fingerprint_hex(fingerprint)[:10]}-{attempt}")

    def pipeline_name(self, address: str) -> str:
        return self.env.name(address, "pl")

    def _ident(self, address: str) -> str:
        """The part of every job name of this address that no cut shortens."""
        ctx = self.env.context
        return f"-{short_hash(ctx.stack, ctx.env, address)}-"

    def jobs(self, address: str, fingerprint: str | None = None) -> list[tuple[int, dict]]:
        """(attempt, summary) of this address's jobs (of one fingerprint), oldest first.

        Listed by the name fragment, then each name checked against the deterministic
        one, so a job whose name merely contains the fragment is never taken.
        """
        fragment = self._ident(address) + (f"{fingerprint_hex(fingerprint)[:10]}-" if fingerprint else "")
        found = []
        for summary in self.aws.pages("sagemaker", "list_training_jobs", "TrainingJobSummaries",
                                      address=address, NameContains=fragment, MaxResults=100):
            name = summary.get("TrainingJobName", "")
            match = re.search(r"-([0-9a-z]{1,10})-([0-9]+)$", name)
            if not match:
                continue
            attempt = int(match.group(2))
            if fingerprint is not None:
                if name != self.job_name(address, fingerprint, attempt):
                    continue
            elif self.env.name(address, suffix=f"{match.group(1)}-{attempt}") != name:
                continue
            found.append((attempt, summary))
        found.sort(key=lambda item: (_time(item[1].get("CreationTime")) or datetime.min.replace(
            tzinfo=timezone.utc), item[0]))
        return found

    def describe(self, name: str, address: str) -> dict | None:
        return self.aws.find("sagemaker", "describe_training_job", address=address,
                             TrainingJobName=name)

    # -- staleness ---------------------------------------------------------------

    def stale_marker(self, address: str) -> StaleMarker | None:
        key = stale_key(self.env, address)
        doc = self.env.store.get_json(key, address=address)
        if doc is None:
            return None
        # when it was written, as the store says (read after the document: a marker
        # rewritten in between can only make a run look older, i.e. re-run once more)
        head = self.env.store.head(key, address=address) or {}
        return StaleMarker.from_json(doc, written=_time(head.get("LastModified")))

    @staticmethod
    def _marks(marker: StaleMarker | None, job_name: str, fingerprint: Any, created: Any) -> bool:
        """Does the marker make the job `job_name` stale?"""
        return marker is not None and marker.marks(job_name, fingerprint, _time(created))

    # -- choosing the job for a run ----------------------------------------------

    def candidates(self, address: str, fingerprint: str | None = None
                   ) -> list[tuple[int, dict, dict | None]]:
        """(attempt, summary, tags) of this address's jobs; tags only of those a run could
        adopt (InProgress or Completed)."""
        return [(attempt, summary,
                 self.sagemaker_tags(summary["TrainingJobArn"], address)
                 if summary.get("TrainingJobStatus") in (ACTIVE, DONE) else None)
                for attempt, summary in self.jobs(address, fingerprint)]

    def pick(self, address: str, fingerprint: str, jobs: list[tuple[int, dict, dict | None]],
             marker: StaleMarker | None) -> tuple[str, dict | None]:
        """(job name, the summary of a job to adopt or None to start that name): the newest
        of this fingerprint's jobs still running or completed (and not stale, deleted or
        another owner's: refused), else the next attempt (pure)."""
        mine = [(a, s, t) for a, s, t in jobs
                if s.get("TrainingJobName") == self.job_name(address, fingerprint, a)]
        for attempt, summary, tags in sorted(mine, key=lambda item: -item[0]):
            if summary.get("TrainingJobStatus") not in (ACTIVE, DONE):
                continue
            name = summary["TrainingJobName"]
            if summary.get("TrainingJobStatus") == DONE and self._marks(
                    marker, name, fingerprint, summary.get("CreationTime")):
                continue
            if (tags or {}).get(TAG_DELETED) == "true":
                continue
            self.env.check_owner(tags or {}, address, f"training job {name}")
            return name, summary
        attempt = max((a for a, _, _ in mine), default=0) + 1
        return self.job_name(address, fingerprint, attempt), None

    def choose(self, address: str, fingerprint: str) -> tuple[str, dict | None]:
        """`pick`, from the jobs as they are now (at apply)."""
        return self.pick(address, fingerprint, self.candidates(address, fingerprint),
                         self.stale_marker(address))

    # -- facts ---------------------------------------------------------------------

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> Sequence[FactKey]:
        champions = champion_key(desired)
        keys = [champions] if champions is not None else []
        if contains_unknown(desired.attributes.get("fingerprint")):
            return keys
        return [FactKey("pipeline", "jobs", (desired.address,)), *keys]

    def read_facts(self, keys: Sequence[FactKey]) -> dict[FactKey, Any]:
        return {key: champions(self, *key.args) if key.name == "champions" else
                {"jobs": self.candidates(key.args[0]), "marker": self.stale_marker(key.args[0])}
                for key in keys}

    # -- validate / plan -----------------------------------------------------------

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        address, attrs = desired.address, desired.attributes
        found: list[Diagnostic] = tuning.diagnostics(desired)
        inputs = attrs.get("inputs") or {}
        for name, value in (inputs.items() if isinstance(inputs, Mapping) else ()):
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", str(name)):
                found.append(error(f"{address}: input name {name!r} is not a SageMaker channel "
                                   f"name (letters, digits, . _ -, at most 64)", address=address))
            uri = input_uri(value)
            if uri is UNKNOWN or contains_unknown(uri):
                continue
            if not (isinstance(uri, str) and uri.startswith("s3://")):
                found.append(error(
                    f"{address}: inputs.{name} is {uri!r}, but SageMaker training reads S3: "
                    f"give a dataset (on the sagemaker provider) or an s3:// URI",
                    address=address))
        tags = attrs.get("tags")
        if isinstance(tags, Mapping) and len(tags) > _JOB_TAGS - len(OWNER_TAGS):
            found.append(error(f"{address} has {len(tags)} tags, more than the "
                               f"{_JOB_TAGS - len(OWNER_TAGS)} a training job takes beside "
                               f"mlform's {len(OWNER_TAGS)} ownership tags", address=address))
        if not found and not contains_unknown({k: attrs.get(k) for k in (
                "hyperparameters", "environment", "settings", "gate")}):
            found += self._limits(address, attrs)
        return found + gate_diagnostics(desired, facts, found)

    def _limits(self, address: str, attrs: Mapping[str, Any]) -> list[Diagnostic]:
        found = []
        hyper = json.dumps(attrs.get("hyperparameters") or {}, sort_keys=True, default=str)
        if len(hyper) > _ENV_VALUE_LIMIT:
            found.append(error(
                f"{address}: the hyperparameters are {len(hyper)} characters as JSON, more than "
                f"the {_ENV_VALUE_LIMIT} SageMaker allows in MLFORM_HYPERPARAMETERS",
                address=address, hint="Pass large values as an input (a dataset) instead."))
        if len(attrs.get("hyperparameters") or {}) > _HYPER_ENTRIES - len(_SDK_HYPERPARAMETERS):
            found.append(error(f"{address}: more than "
                               f"{_HYPER_ENTRIES - len(_SDK_HYPERPARAMETERS)} hyperparameters",
                               address=address))
        for key, value in (attrs.get("environment") or {}).items():
            if len(str(value)) > _ENV_VALUE_LIMIT:
                found.append(error(f"{address}: environment.{key} is longer than the "
                                   f"{_ENV_VALUE_LIMIT} characters SageMaker allows",
                                   address=address))
        # the run contract's variables count too (one per input, plus its fixed ones)
        contract = contract_environment(inputs={str(k): "" for k in attrs.get("inputs") or {}},
                                        hyperparameters={}, output_dir="", device="cpu",
                                        run_id="")
        entries = len(attrs.get("environment") or {}) + len(contract)
        if entries > _ENV_ENTRIES:
            found.append(error(f"{address}: {entries} environment variables (with mlform's), "
                               f"more than SageMaker's {_ENV_ENTRIES}", address=address))
        if len(self._metric_names(attrs)) > _METRICS:
            found.append(error(f"{address}: more than {_METRICS} metrics to read from the log",
                               address=address))
        return found

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        address, fingerprint = desired.address, desired.attributes.get("fingerprint")
        known = {}
        # a sweep's run is its best training job: not known before the tuning job ends
        sweep = desired.attributes.get("sweep")
        if isinstance(fingerprint, str) and fingerprint and sweep is None:
            found = facts[FactKey("pipeline", "jobs", (address,))]
            known["run_id"] = self.pick(address, fingerprint, found["jobs"], found["marker"])[0]
        planned = plan_sweep(plan_run(desired, prior, outputs=RUN_OUTPUTS, known=known), prior)
        return with_champion_reason(planned, desired, facts,
                                    runs=planned.attributes.get("model_uri") is UNKNOWN)

    # -- the training job request ----------------------------------------------------

    def _metric_names(self, attrs: Mapping[str, Any]) -> list[str]:
        gate = attrs.get("gate")
        names = [gate["metric"]] if isinstance(gate, Mapping) and gate.get("metric") else []
        spec = sweep_of(attrs)
        for name in [*_settings(attrs).metrics, *([spec.objective] if spec else [])]:
            if name not in names:
                names.append(name)
        return names

    def code(self, address: str, attrs: Mapping[str, Any]) -> tuple[bytes, str]:
        """(a reproducible sourcedir.tar.gz, the program's path inside it)."""
        return code_archive(Path(self.env.context.stack_dir), address, attrs,
                            _settings(attrs).source_dir)

    def _upload_code(self, address: str, archive: bytes) -> str:
        key = bucket.code_key(self.env, hashlib.sha256(archive).hexdigest())
        if self.env.store.head(key, address=address) is None:
            self.env.store.put_bytes(key, archive, address=address,
                                     content_type="application/gzip",
                                     tags=self.env.tag_map(address))
        return f"s3://{self.env.config.bucket}/{key}"

    def request(self, address: str, attrs: Mapping[str, Any], job_name: str, code_uri: str,
                program: str, profile: ComputeProfile) -> dict:
        """The CreateTrainingJob request for one run (also the Pipeline's Training step)."""
        settings = _settings(attrs)
        inputs = {str(k): input_uri(v) for k, v in (attrs.get("inputs") or {}).items()}
        for name, uri in inputs.items():
            if not (isinstance(uri, str) and uri.startswith("s3://")):
                raise ProviderError(f"{address}: inputs.{name} is {uri!r}, not an s3:// URI",
                                    address=address)
        hyper = attrs.get("hyperparameters") or {}
        hyperparameters = {str(k): json.dumps(v, default=str) for k, v in hyper.items()}
        hyperparameters.update({
            "sagemaker_program": json.dumps(program),
            "sagemaker_submit_directory": json.dumps(code_uri),
            "sagemaker_region": json.dumps(self.env.config.region),
            "sagemaker_container_log_level": "20",
        })
        processes = processes_of(profile)
        if processes > 1:   # torchrun on every instance, one process per GPU
            hyperparameters[TORCH_DISTRIBUTED] = "true"
        paths = {name: _channel_path(name, uri) for name, uri in inputs.items()}
        environment = {str(k): str(v) for k, v in (attrs.get("environment") or {}).items()}
        environment.update(contract_environment(
            inputs=paths, hyperparameters=hyper, output_dir="/opt/ml/model",
            device="cuda" if profile.gpus_per_instance else "cpu", run_id=job_name,
            world_size=processes))
        runtime_limits = [v for v in (attrs.get("timeout_seconds"),
                                      profile.get("max_runtime_seconds")) if isinstance(v, int)]
        runtime = min(runtime_limits) if runtime_limits else DEFAULT_MAX_RUNTIME
        stopping: dict[str, int] = {"MaxRuntimeInSeconds": runtime}
        resources: dict[str, Any] = {"InstanceType": profile.instance_type,
                                     "InstanceCount": profile.instance_count,
                                     "VolumeSizeInGB": int(profile.get("volume_gb") or 30)}
        if profile.get("warm_pool_seconds"):
            resources["KeepAlivePeriodInSeconds"] = int(profile["warm_pool_seconds"])
        output = f"s3://{self.env.config.bucket}/{bucket.runs_prefix(self.env, address)}"
        request: dict[str, Any] = {
            "TrainingJobName": job_name,
            "AlgorithmSpecification": {
                "TrainingImage": settings.image or self.env.config.image("training"),
                "TrainingInputMode": "File",
                "MetricDefinitions": [{"Name": m, "Regex": metric_regex(m)}
                                      for m in self._metric_names(attrs)],
            },
            "RoleArn": self.env.config.role_arn,
            "HyperParameters": hyperparameters,
            "InputDataConfig": [{
                "ChannelName": name,
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                                "S3DataDistributionType": "FullyReplicated"}},
                "InputMode": "File",
            } for name, uri in sorted(inputs.items())],
            "OutputDataConfig": {"S3OutputPath": output},
            "ResourceConfig": resources,
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": profile.spot,
            "Environment": environment,
            "Tags": self.env.tags(address, attrs.get("tags")),
        }
        if not request["InputDataConfig"]:
            del request["InputDataConfig"]
        if profile.spot:
            wait = profile.get("max_wait_seconds") or runtime
            if wait < runtime:
                raise ProviderError(f"{address}: timeout_seconds = {runtime} is more than the "
                                    f"cluster's settings.max_wait_seconds = {wait}; spot jobs "
                                    f"must finish within the wait", address=address)
            stopping["MaxWaitTimeInSeconds"] = int(wait)
            # spot capacity can be taken back: checkpoints let SageMaker resume the job
            request["CheckpointConfig"] = {"S3Uri": f"{output}{job_name}/checkpoints/"}
        return request

    # -- create / update ---------------------------------------------------------------

    def create(self, planned: Planned) -> LiveObject:
        address, attrs = planned.address, dict(planned.attributes)
        if attrs.get("sweep") is not None:
            return tuning.run(self, planned, attrs)
        name, adopted = self.choose(address, run_fingerprint(planned))
        if adopted is None:
            request = self._start(address, attrs, name)
        else:
            self.aws.progress(address, f"adopting training job {name} "
                                       f"({adopted.get('TrainingJobStatus')})")
            if self.ledger.entry(self.env.name(address), name, address=address) is None:
                # a job started before run records were kept: on record from now on
                self._open_record(address, attrs, name, read_profile(
                    self.env, attrs.get("cluster"), address=address),
                    started=_iso(adopted.get("CreationTime")))
            request = None
        try:
            desc = self._wait(address, name, self.schema.timeouts.create)
        except ProviderError:
            ended = self.describe(name, address)
            if ended is not None and ended.get("TrainingJobStatus") in ENDED:
                self._close_record(address, ended)
            raise   # else still running (a timeout): its record stays open for the next apply
        return self._publish(planned, attrs, desc, request)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        attrs = dict(planned.attributes)
        if attrs.get("model_uri") is UNKNOWN:   # the plan wants a run (a new or an adopted job)
            return self.create(planned)
        kept = prior.attributes.get("run_id")
        # the same run: re-judge the gate, bring tags and the Pipeline up to date
        address = planned.address
        desc = self.describe(str(kept), address)
        if desc is None or desc.get("TrainingJobStatus") != DONE:
            raise ProviderError(f"{address}: training job {kept}, which the plan keeps, is "
                                f"{'gone' if desc is None else desc.get('TrainingJobStatus')}; "
                                f"run plan again", address=address)
        tags = self.sagemaker_tags(desc["TrainingJobArn"], address)
        self.env.check_owner(tags, address, f"training job {kept}")
        self._sync_tags(address, desc["TrainingJobArn"], tags, attrs.get("tags") or {})
        return self._publish(planned, attrs, desc, None, record=False)

    # -- run records (`kit.run_ledger`) --------------------------------------------------

    @property
    def ledger(self) -> RunLedger:
        """``records/<name>/<job>.json`` in the provider's bucket, with the ownership tags."""
        return RunLedger(self.env.store, self.env.key("records"), tags=self.env.tag_map)

    def _open_record(self, address: str, attrs: Mapping[str, Any], name: str,
                     profile: ComputeProfile, started: str | None = None) -> None:
        output = f"s3://{self.env.config.bucket}/{bucket.runs_prefix(self.env, address)}{name}/"
        self.ledger.open(self.env.name(address), run_record(
            provider=self.env.context.name, address=address, attrs=attrs, run_id=name,
            status=RUNNING, started=started or _now(), processes=processes_of(profile),
            artifacts={"output": output + "output/"}), job={"name": name}, address=address)

    @staticmethod
    def _outcome(desc: Mapping[str, Any], missed: str | None = None) -> tuple[str, dict]:
        """(status, `closed_record`'s fields) of an ended job, as DescribeTrainingJob has
        it; `missed` is the gate's verdict on a Completed job."""
        done = desc.get("TrainingJobStatus") == DONE and missed is None
        model = (desc.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        failure = None if done else (missed or desc.get("FailureReason") or
                                     f"training job {desc.get('TrainingJobStatus')}")
        return (SUCCEEDED if done else FAILED), {
            "started": _iso(desc.get("TrainingStartTime") or desc.get("CreationTime")),
            "finished": _iso(desc.get("TrainingEndTime") or desc.get("LastModifiedTime")),
            "metrics": _metrics_of(desc), "failure": failure,
            "model_uri": model if done else None,
            "artifacts": {"model": model} if model and done else {}}

    def _close_record(self, address: str, desc: Mapping[str, Any],
                      missed: str | None = None) -> None:
        status, outcome = self._outcome(desc, missed)
        self.ledger.close(self.env.name(address), desc["TrainingJobName"], status,
                          address=address, **outcome)

    def run_records(self, pipeline: str | None) -> list[dict]:
        """Every run's record in the bucket (the pipeline's only, when named), from one
        listing; a record still running is reported as its job is now (one describe each):
        a job that ended while no apply watched it is reported with its outcome (a
        Completed one as succeeded: the next apply judges its gate and publishes it)."""
        def refresh(record: dict, job: dict) -> dict | None:
            if job.get("kind") == tuning.KIND:
                return tuning.refresh_record(self, record, job)
            address = str(record.get("pipeline") or "")
            desc = self.describe(str(job.get("name") or record["run_id"]), address)
            if desc is None:
                return {**record, "status": FAILED,
                        "failure": f"training job {record['run_id']} no longer exists"}
            if desc.get("TrainingJobStatus") not in (DONE, *ENDED):
                return None   # InProgress or Stopping: running it is
            status, outcome = self._outcome(desc)
            return closed_record(record, status, **outcome)

        return self.ledger.records(self.env.name(pipeline) if pipeline else None,
                                   address=pipeline or "", refresh=refresh)

    def prepare(self, address: str, attrs: Mapping[str, Any], name: str,
                sweep: SweepSpec | None = None) -> tuple[dict, ComputeProfile]:
        """(the CreateTrainingJob request of a run named `name`, with its code uploaded,
        and the cluster's profile): what a training job and a sweep's tuning job (its
        training job definition, `tuning.tuning_request`) are made from.  A sweep's code
        runs through `tuning.LAUNCHER`, which hands the entrypoint a trial's values."""
        archive, program = self.code(address, attrs)
        if sweep is not None:
            archive, program = tuning.with_launcher(archive, program, sweep.names)
        profile = read_profile(self.env, attrs.get("cluster"), address=address)
        return self.request(address, attrs, name, self._upload_code(address, archive),
                            program, profile), profile

    def _start(self, address: str, attrs: Mapping[str, Any], name: str) -> dict:
        request, profile = self.prepare(address, attrs, name)
        # the record first: a create cut off after CreateTrainingJob is still recoverable
        bucket.put_json(self.env, bucket.run_record(self.env, address, name),
                        {"address": address, "job": name, "attributes": self._recorded(attrs)},
                        address=address, user_tags=None)
        self._open_record(address, attrs, name, profile)
        processes = processes_of(profile)
        self.aws.progress(address, f"starting training job {name} on "
                                   f"{profile.instance_count} × {profile.instance_type}"
                                   + (" (spot)" if profile.spot else "")
                                   + (f", {processes} processes (torchrun)"
                                      if processes > 1 else ""))
        try:
            self.aws.call("sagemaker", "create_training_job", address=address, **request)
        except ProviderError as exc:
            # a concurrent or retried create got there first: adopt its job
            if "ResourceInUse" not in exc.message or self.describe(name, address) is None:
                self.ledger.close(self.env.name(address), name, FAILED, address=address,
                                  finished=_now(), failure=exc.message)
                raise
        return request

    @staticmethod
    def _recorded(attrs: Mapping[str, Any]) -> dict:
        return {k: v for k, v in attrs.items() if k not in RUN_OUTPUTS and k != "stale"}

    def _wait(self, address: str, name: str, timeout: float) -> dict:
        """Poll the job to Completed; SecondaryStatus changes are shown as progress."""
        seen: list[str] = []

        def describe() -> dict | None:
            desc = self.describe(name, address)
            secondary = (desc or {}).get("SecondaryStatus")
            # the main status is reported by aws.wait; repeat nothing it says already
            if secondary == (desc or {}).get("TrainingJobStatus"):
                secondary = None
            if secondary and (not seen or seen[-1] != secondary):
                seen.append(secondary)
                self.aws.progress(address, f"training job {name}: {secondary}",
                                  waiting_on=f"training job {name}")
            return desc

        desc = self.aws.wait(describe, "TrainingJobStatus", address=address,
                             what=f"training job {name}", ready=(DONE,), failed=ENDED,
                             timeout=timeout)
        assert desc is not None   # gone_ok is False: a vanished job raised
        return desc

    def _publish(self, planned: Planned, attrs: dict, desc: Mapping[str, Any],
                 request: dict | None, *, record: bool = True) -> LiveObject:
        """Judge a Completed job by the gate; on a pass, the pipeline's attributes.  The
        run's record is closed with the verdict (`record`: not when re-judging a kept run,
        whose record says how it ended)."""
        address, name = planned.address, desc["TrainingJobName"]
        metrics = _metrics_of(desc)
        gate = attrs.get("gate")
        missed, note = check_gate(gate, metrics), None
        if missed is None:
            missed, note = judge_challenger(gate, metrics, partial(champions, self, address),
                                            run_id=name)
        if record:
            self._close_record(address, desc, missed)
        if missed is not None:
            raise ProviderError(f"{missed} (training job {name})", address=address,
                                service_message="SageMaker reads metrics from the job's log: "
                                                'print them as JSON ("accuracy": 0.93), e.g. '
                                                "print(json.dumps(metrics)).")
        attrs.update(run_id=name, job_arn=desc["TrainingJobArn"], metrics=metrics,
                     model_uri=(desc.get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
                     stale=None)
        record_key = bucket.run_record(self.env, address, name)
        # the lineage is what the registry records for a version made from this job
        record = {"address": address, "job": name, "attributes": self._recorded(attrs),
                  "lineage": run_lineage(address, attrs, name, metrics),
                  **({"champion": note} if note else {})}
        if self.env.store.get_json(record_key, address=address) != record:
            bucket.put_json(self.env, record_key, record, address=address)
        self._sync_pipeline(address, attrs, desc, request)
        return LiveObject(address, planned.kind, name, attrs)

    def _sync_tags(self, address: str, arn: str, live: Mapping[str, str],
                   wanted: Mapping[str, str]) -> None:
        have = user_tags(live)
        have.pop(TAG_DELETED, None)
        stale = sorted(k for k in have if k not in wanted)
        changed = [{"Key": k, "Value": str(v)} for k, v in sorted(wanted.items())
                   if have.get(k) != str(v)]
        if changed:
            self.aws.call("sagemaker", "add_tags", address=address, ResourceArn=arn, Tags=changed)
        if stale:
            self.aws.call("sagemaker", "delete_tags", address=address, ResourceArn=arn,
                          TagKeys=stale)

    # -- the SageMaker Pipeline definition ------------------------------------------------

    def _sync_pipeline(self, address: str, attrs: Mapping[str, Any], desc: Mapping[str, Any],
                       request: dict | None) -> None:
        name = self.pipeline_name(address)
        current = self.aws.find("sagemaker", "describe_pipeline", address=address,
                                PipelineName=name)
        if not _settings(attrs).sagemaker_pipeline:
            if current is not None:
                self._delete_pipeline(address, current)
            return
        if request is None:   # an adopted or kept job: its request, as SageMaker has it
            request = self._request_of(desc, attrs)
        step = {k: v for k, v in request.items() if k not in ("TrainingJobName", "Tags")}
        definition = json.dumps({
            "Version": "2020-12-01", "Metadata": {}, "Parameters": [],
            "Steps": [{"Name": "Train", "Type": "Training", "Arguments": step}],
        }, sort_keys=True)
        if current is None:
            self.aws.call("sagemaker", "create_pipeline", address=address, PipelineName=name,
                          PipelineDefinition=definition, RoleArn=self.env.config.role_arn,
                          PipelineDescription=f"mlform {address}",
                          Tags=self.env.tags(address, attrs.get("tags")))
            return
        tags = self.sagemaker_tags(current["PipelineArn"], address)
        self.env.check_owner(tags, address, f"SageMaker Pipeline {name}")
        if current.get("PipelineDefinition") != definition:
            self.aws.call("sagemaker", "update_pipeline", address=address, PipelineName=name,
                          PipelineDefinition=definition, RoleArn=self.env.config.role_arn)
        self._sync_tags(address, current["PipelineArn"], tags, attrs.get("tags") or {})

    @staticmethod
    def _request_of(desc: Mapping[str, Any], attrs: Mapping[str, Any]) -> dict:
        keys = ("AlgorithmSpecification", "RoleArn", "HyperParameters", "InputDataConfig",
                "OutputDataConfig", "ResourceConfig", "StoppingCondition",
                "EnableManagedSpotTraining", "Environment", "CheckpointConfig")
        return {k: desc[k] for k in keys if k in desc}

    def _delete_pipeline(self, address: str, current: Mapping[str, Any]) -> None:
        tags = self.sagemaker_tags(current["PipelineArn"], address)
        self.env.check_owner(tags, address, f"SageMaker Pipeline {current['PipelineName']}")
        self.aws.find("sagemaker", "delete_pipeline", address=address,
                      PipelineName=current["PipelineName"])

    # -- read / delete ---------------------------------------------------------------------

    def read(self, prior: LiveObject) -> LiveObject | None:
        address = prior.address
        if prior.id:
            desc = self.describe(prior.id, address)
        else:
            desc = None
            for _, summary in reversed(self.jobs(address)):   # newest first
                if summary.get("TrainingJobStatus") in ENDED:
                    continue
                candidate = self.describe(summary["TrainingJobName"], address)
                tags = self.sagemaker_tags(summary["TrainingJobArn"], address) if candidate else {}
                if candidate is not None and tags.get(TAG_DELETED) != "true":
                    desc = candidate
                    break
        if desc is None or desc.get("TrainingJobStatus") not in (ACTIVE, DONE):
            return None   # no job, or it failed / was stopped: no usable run
        name = desc["TrainingJobName"]
        tags = self.sagemaker_tags(desc["TrainingJobArn"], address)
        if tags.get(TAG_DELETED) == "true":
            return None
        self.env.check_owner(tags, address, f"training job {name}")
        attrs = dict(prior.attributes)
        if not attrs:
            found = self.env.store.get_json(bucket.run_record(self.env, address, name),
                                            address=address)
            attrs = dict((found or {}).get("attributes") or {})
        done = desc.get("TrainingJobStatus") == DONE
        attrs.update(
            run_id=name, job_arn=desc["TrainingJobArn"],
            model_uri=(desc.get("ModelArtifacts") or {}).get("S3ModelArtifacts") if done else None,
            metrics=_metrics_of(desc) if done else {})
        marker = self.stale_marker(address)
        attrs["stale"] = marker.reason if self._marks(marker, name, attrs.get("fingerprint"),
                                                      desc.get("CreationTime")) else None
        live_tags = user_tags(tags)
        live_tags.pop(TAG_DELETED, None)
        if live_tags != (attrs.get("tags") or {}):
            attrs["tags"] = live_tags
        return LiveObject(address, prior.kind, name, attrs)

    def delete(self, prior: LiveObject) -> None:
        address = prior.address
        for _, summary in self.jobs(address):
            name, arn = summary["TrainingJobName"], summary["TrainingJobArn"]
            tags = self.sagemaker_tags(arn, address)
            if tags.get(TAG_DELETED) == "true":
                continue
            if not self.env.owns(tags, address):
                continue   # not ours (a name collision can only come from outside mlform)
            desc = self.describe(name, address)
            if desc is not None and desc.get("TrainingJobStatus") in (ACTIVE, "Stopping"):
                if desc.get("TrainingJobStatus") == ACTIVE:
                    self.aws.progress(address, f"stopping training job {name}")
                    try:
                        self.aws.call("sagemaker", "stop_training_job", address=address,
                                      TrainingJobName=name)
                    except ProviderError:
                        # it may have ended between the describe and the stop: look again
                        again = self.describe(name, address)
                        if again is not None and again.get("TrainingJobStatus") == ACTIVE:
                            raise
                self.aws.wait(lambda: self.describe(name, address), "TrainingJobStatus",
                              address=address, what=f"training job {name}",
                              ready=("Stopped", "Completed", "Failed"),
                              timeout=self.schema.timeouts.delete, gone_ok=True)
            # training jobs cannot be deleted: the tag makes read treat it as gone
            self.aws.call("sagemaker", "add_tags", address=address, ResourceArn=arn,
                          Tags=[{"Key": TAG_DELETED, "Value": "true"}])
        if prior.attributes.get("sweep") is not None:
            tuning.delete(self, address)
        current = self.aws.find("sagemaker", "describe_pipeline", address=address,
                                PipelineName=self.pipeline_name(address))
        if current is not None:
            self._delete_pipeline(address, current)
        marker = stale_key(self.env, address)
        if self.env.store.tags(marker, address=address) is not None:
            self.env.store.delete([marker], address=address)
