"""`pipeline` on Kubernetes: one `batch/v1` Job per run fingerprint.

A run is a Job named ``env.name(address, "<fingerprint[:10]>-<attempt>")`` in its
training cluster's namespace (the provider's `namespace` without a cluster).  Before
starting one, `create` lists the Jobs of this address and fingerprint: an active or
complete Job is adopted and waited on (a retried or crashed create never starts a
duplicate; Ctrl-C during the wait leaves it running, to be adopted by the next
apply); only when every earlier attempt failed does attempt n+1 start.

The pod runs ``python -m mlform.providers.kubernetes.pod train`` in the provider's
`image`: it fetches the code (the entrypoint and its directory, or ``settings.source_dir``,
as a reproducible archive at ``code/<sha256>/code.tar.gz`` in `storage`)
and the inputs (the datasets' and upstream runs' storage URIs), runs the entrypoint
with the kit's run contract, and uploads ``MLFORM_OUTPUT_DIR`` to
``runs/<name>/<job>/output/`` (the `model_uri`; ``metrics.json`` in it gives the
`metrics`, judged by the `gate`).  GPUs are requested as ``nvidia.com/gpu`` (the
cluster's `gpus_per_node`), with the toleration the GPU operator's taint needs.
Termination messages fall back to the log on error, so a failed run's apply shows the
script's last lines; a pod that cannot pull its image or cannot be scheduled fails
the apply with the kubelet's or the scheduler's reason.

Several nodes (`nodes > 1`) make an Indexed Job (one pod per node, completions =
parallelism = nodes) and a headless Service; pods get torchrun's rendezvous variables
(``MASTER_ADDR`` = pod 0's DNS name, ``MASTER_PORT``, ``WORLD_SIZE``, ``NODE_RANK`` from
the completion index).  Pod 0 uploads the output.  ``settings { distributed = "jobset" }``
makes a JobSet instead (one replicated Job of `nodes` indexed pods, DNS by JobSet), and
``"pytorchjob"`` a Kubeflow PyTorchJob (a Master and `nodes - 1` Workers, rendezvous by
the training operator); plan checks that the API server serves the kind.

A node with several GPUs (``gpus_per_node > 1``) runs one process per GPU: the pod
launches the entrypoint through torchrun (``--nproc-per-node`` = the GPUs, ``--nnodes`` =
the nodes, ``--node-rank`` from the completion index, the static rendezvous at the
``MASTER_ADDR`` above; see pod.py), and ``MLFORM_WORLD_SIZE`` is nodes × GPUs.

Run records: every run has a record (`kit.run_records`, kept by `kit.run_ledger`) at
``records/<name>/<job>.json`` in storage, written (status running) before the Job is
made and closed when it ends: status, end, the ``metrics.json`` metrics, the failure
(the pod's termination message, or the gate's verdict), the model, and the step metrics
of the run's log, which pod 0 uploads as ``runs/<name>/<job>/logs.txt`` (succeeded or
not).  `run_records` lists the records prefix once; only a record still running costs a
read of its Job (a run that ended while no apply watched is reported with its outcome,
not written).  Records stay when the pipeline is deleted, as the outputs do.

A gate with ``must_beat`` also compares the run's metrics with the champion: the
newest version labelled with that stage in the registry of `gate.model`, or of every
model registered from this pipeline, on the lineage its ConfigMap recorded
(`models.champions`).  A published run leaves ``lineage.json`` next to its
``output/`` (what the registry records).  Plan reads the champions as a fact.

A pipeline with a `sweep` runs it instead of one run (`sweeps.py`): Optuna in the
apply, each trial one of these Jobs, named ``<sweep run>-t<N>`` and labelled `SWEEP` and
`TRIAL` (so `_wait` watches that trial's pods only); ``pruning = "median"`` is refused at
validate (`sweep_diagnostics`).  Deleting the pipeline deletes its studies too.

`stale` is the reason of the marker a monitor wrote to ``stale/<name>.json`` in
storage, when it marks the current run (kit `StaleMarker`).
"""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from mlform.providers.base import (
    UNKNOWN, Desired, Diagnostic, FactError, FactKey, Facts, KindSchema, LiveObject, Planned,
    ProviderError, Timeouts, error,
)
from mlform.providers.kit.artifacts import input_uri
from mlform.providers.kit.champions import (
    champion_key, gate_diagnostics, judge_challenger, run_lineage, with_champion_reason,
)
from mlform.providers.kit.gate import check_gate
from mlform.providers.kit.reruns import (
    RUN_OUTPUTS, StaleMarker, fingerprint_hex, plan_run, run_fingerprint,
)
from mlform.providers.kit.run_ledger import RunLedger, closed_record
from mlform.providers.kit.run_records import FAILED, RUNNING, SUCCEEDED, run_record, step_metrics
from mlform.providers.kit.runs import METRICS_FILE, code_archive
from mlform.providers.kit.sweeps import plan_sweep

from .clusters import KUEUE_LABEL, KUEUE_QUEUE, ClusterSettings, cluster_namespace
from .env import KubeEnv, KubeHandler
from .models import champions
from .pods import pod_failure, pod_spec

__all__ = ["PipelineHandler", "PipelineSettings", "stale_key", "run_prefix"]

JOB_LABEL = "batch.kubernetes.io/job-name"
ROLE = "mlform.dev/role"
FINGERPRINT = "mlform.dev/fingerprint"
ATTEMPT = "mlform.dev/attempt"
#: a sweep's trial Job (`kubernetes/sweeps.py`): the sweep run and the trial number
SWEEP, TRIAL = "mlform.dev/sweep", "mlform.dev/trial"
MASTER_PORT = 29500
#: settings.distributed -> (apiVersion, kind, its success and failure condition types)
RUN_KINDS = {
    "job": ("batch/v1", "Job", ("Complete", "SuccessCriteriaMet"), "Failed"),
    "jobset": ("jobset.x-k8s.io/v1alpha2", "JobSet", ("Completed",), "Failed"),
    "pytorchjob": ("kubeflow.org/v1", "PyTorchJob", ("Succeeded",), "Failed"),
}


class PipelineSettings(BaseModel):
    """`settings { }` of a pipeline on Kubernetes."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(None, min_length=1, description="Image of the training pod; "
                                                             "default: the provider's.")
    schedule_timeout_seconds: float = Field(
        300.0, gt=0, description="How long a pod may stay unschedulable (no node with the "
                                 "GPUs) before the run fails.")
    source_dir: str | None = Field(
        None, min_length=1, description="Directory (relative to the stack) shipped with the "
                                        "entrypoint, for helper modules; default: the "
                                        "entrypoint's own directory.")
    distributed: Literal["job", "jobset", "pytorchjob"] = Field(
        "job", description="How a run on several nodes is made: an Indexed Job with a "
                           "headless Service (job), a JobSet (jobset.x-k8s.io), or a "
                           "PyTorchJob (the Kubeflow training operator); the last two need "
                           "their controllers installed.")
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Let Kubernetes delete finished Jobs after this long (the "
                                "run's record stays in storage).")


def stale_key(env: KubeEnv, pipeline_address: str) -> str:
    """Storage key of a pipeline's stale marker (a monitor writes it on a breach)."""
    return env.store.key("stale", env.name(pipeline_address) + ".json")


def run_prefix(env: KubeEnv, address: str, job: str) -> str:
    return env.store.key("runs", env.name(address), job)


#: the run's log beside its output, uploaded by the pod (node 0's)
LOG_FILE = "logs.txt"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _shape(attrs: Mapping[str, Any]) -> tuple[int, int]:
    """(nodes, processes per node): one process per GPU when a node has several."""
    cluster = attrs.get("cluster") if isinstance(attrs.get("cluster"), Mapping) else {}
    gpus = int(cluster.get("gpus_per_node") or 0)
    return int(cluster.get("nodes") or 1), max(gpus, 1)


class PipelineHandler(KubeHandler):
    """`pipeline` resources: a Job per run fingerprint, gated on the run's metrics."""

    schema = KindSchema(settings_model=PipelineSettings, computed=(*RUN_OUTPUTS, "stale"),
                        timeouts=Timeouts(create=24 * 3600.0, update=24 * 3600.0,
                                          delete=900.0))

    # -- names and lookups ---------------------------------------------------------------

    def namespace(self, attrs: Mapping[str, Any]) -> str:
        cluster = attrs.get("cluster")
        if isinstance(cluster, Mapping):
            if isinstance(cluster.get("namespace"), str):
                return cluster["namespace"]
            if isinstance(cluster.get("address"), str):
                return cluster_namespace(self.env, cluster["address"])
        return self.env.config.namespace

    def job_name(self, address: str, fingerprint: str, attempt: int) -> str:
        return self.env.name(address, f"{fingerprint_hex(fingerprint)[:10]}-{attempt}")

    def jobs(self, address: str, namespace: str, fingerprint: str | None = None,
             kind: str = "job") -> list[dict]:
        """This address's runs (of one fingerprint), lowest attempt first."""
        labels = dict(self.env.selector(address))
        if fingerprint is not None:
            labels[FINGERPRINT] = fingerprint_hex(fingerprint)[:40]
        api_version, run_kind = RUN_KINDS[kind][:2]
        found = self.kube.list(api_version, run_kind, namespace, labels=labels,
                               address=address)
        for job in found:
            self.env.check_owner(job, address)
        return sorted(found, key=lambda j: int(j["metadata"]["labels"].get(ATTEMPT, "0")))

    # -- plan ------------------------------------------------------------------------------

    @staticmethod
    def run_kind(attrs: Mapping[str, Any]) -> str:
        """Which RUN_KINDS entry this pipeline's runs are (a one-node run is always a Job)."""
        cluster = attrs.get("cluster") if isinstance(attrs.get("cluster"), Mapping) else {}
        settings = attrs.get("settings") if isinstance(attrs.get("settings"), Mapping) else {}
        wanted = settings.get("distributed", "job")
        return wanted if int(cluster.get("nodes") or 1) > 1 and wanted in RUN_KINDS else "job"

    def _served_keys(self, desired: Desired) -> tuple[FactKey, ...]:
        kind = self.run_kind(desired.attributes)
        return () if kind == "job" else (FactKey("pipeline", "served", RUN_KINDS[kind][:2]),)

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> Sequence[FactKey]:
        champions = champion_key(desired)
        return (*self._served_keys(desired), *([champions] if champions else []))

    def read_facts(self, keys: Sequence[FactKey]) -> dict[FactKey, Any]:
        found: dict[FactKey, Any] = {}
        for key in keys:      # does the API server serve the kind (is its CRD installed)?
            if key.name == "champions":
                found[key] = champions(self, *key.args)
                continue
            try:
                self.kube.list(*key.args, namespace=self.env.config.namespace)
                found[key] = True
            except ProviderError as exc:
                found[key] = FactError(exc.message)
        return found

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        found = [error(f"{desired.address}: settings.distributed = "
                       f"{self.run_kind(desired.attributes)!r}: {fact.message}",
                       address=desired.address,
                       hint="Install its controller and CRD, or use distributed = \"job\".")
                 for key in self._served_keys(desired)
                 if isinstance(fact := facts.get(key), FactError)]
        found += sweep_diagnostics(desired)
        return found + gate_diagnostics(desired, facts, found)

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        planned = plan_sweep(plan_run(desired, prior), prior)
        return with_champion_reason(planned, desired, facts,
                                    runs=planned.attributes.get("model_uri") is UNKNOWN)

    # -- apply -----------------------------------------------------------------------------

    def create(self, planned: Planned) -> LiveObject:
        return self._run(planned)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        if planned.attributes.get("run_id") == prior.attributes.get("run_id") and \
                prior.attributes.get("model_uri"):
            attrs = {**planned.attributes}
            return LiveObject(planned.address, planned.kind, prior.id, attrs)
        return self._run(planned)

    def _run(self, planned: Planned) -> LiveObject:
        if planned.attributes.get("sweep") is not None:
            from .sweeps import run_sweep   # Optuna is loaded only for a sweep
            return run_sweep(self, planned)
        address, attrs = planned.address, dict(planned.attributes)
        fingerprint = run_fingerprint(planned)
        namespace = self.namespace(attrs)
        jobs = self.jobs(address, namespace, fingerprint, self.run_kind(attrs))
        marker = self.stale_marker(address)
        chosen = None
        for job in jobs:
            if marker is not None and marker.marks(job["metadata"]["name"], fingerprint):
                continue                      # a stale run is a reason to run anew
            if not _failed(job, RUN_KINDS[self.run_kind(attrs)][3]):
                chosen = job                  # running or complete: adopt it
        if chosen is None:
            attempt = 1 + max((int(j["metadata"]["labels"].get(ATTEMPT, "0")) for j in jobs),
                              default=0)
            chosen = self._start(address, attrs, namespace, fingerprint, attempt)
        elif self.ledger.entry(self.env.name(address), chosen["metadata"]["name"],
                               address=address) is None:
            # a run started before run records were kept: on record from now on
            self._open_record(address, attrs, namespace, chosen["metadata"]["name"],
                              started=(chosen.get("metadata") or {}).get("creationTimestamp"))
        name = chosen["metadata"]["name"]
        self._wait(address, namespace, chosen, attrs)
        return self._publish(planned, attrs, namespace, name)

    def _start(self, address: str, attrs: Mapping[str, Any], namespace: str,
               fingerprint: str, attempt: int, *, name: str | None = None,
               labels: Mapping[str, str] | None = None,
               sweep: Mapping[str, Any] | None = None) -> dict:
        """Start a run: its record, then its Job.  A sweep's trial (`sweeps.py`) names its
        Job, labels it (`SWEEP`, `TRIAL`) and puts its place in the sweep on record."""
        name = name or self.job_name(address, fingerprint, attempt)
        code_uri, program = self._upload_code(address, attrs)
        docs = self.job_manifests(address, attrs, namespace, name, fingerprint, attempt,
                                  code_uri, program, labels=labels)
        # the record first: an apply cut off after starting the run still leaves it on record
        self._open_record(address, attrs, namespace, name, sweep=sweep)
        for doc in docs[1:]:            # the headless Service of several nodes
            self.env.apply(doc, address)
        return self.env.apply(docs[0], address)

    # -- run records (`kit.run_ledger`) --------------------------------------------------

    @property
    def ledger(self) -> RunLedger:
        """``records/<name>/<job>.json`` in storage."""
        return RunLedger(self.env.store, self.env.store.key("records"))

    def _open_record(self, address: str, attrs: Mapping[str, Any], namespace: str, name: str,
                     started: str | None = None, sweep: Mapping[str, Any] | None = None
                     ) -> None:
        prefix = f"s3://{self.env.store.bucket}/{run_prefix(self.env, address, name)}"
        nodes, per_node = _shape(attrs)
        api_version, kind = RUN_KINDS[self.run_kind(attrs)][:2]
        self.ledger.open(self.env.name(address), run_record(
            provider=self.env.context.name, address=address, attrs=attrs, run_id=name,
            status=RUNNING, started=started or _now(), processes=nodes * per_node,
            artifacts={"output": f"{prefix}/output/", "logs": f"{prefix}/{LOG_FILE}"},
            sweep=sweep),
            job={"api_version": api_version, "kind": kind, "name": name,
                 "namespace": namespace}, address=address)

    def _steps(self, address: str, name: str) -> list:
        """The step metrics the run's log reports (`kit.run_records.step_metrics`)."""
        body = self.env.store.get_bytes(f"{run_prefix(self.env, address, name)}/{LOG_FILE}",
                                        address=address)
        return step_metrics(body.decode(errors="replace").splitlines()) if body else []

    def _close_record(self, address: str, name: str, status: str, *, metrics: Any = None,
                      failure: str | None = None, model_uri: str | None = None) -> None:
        self.ledger.close(self.env.name(address), name, status, address=address,
                          finished=_now(), metrics=metrics, failure=failure,
                          steps=self._steps(address, name), model_uri=model_uri)

    def run_records(self, pipeline: str | None) -> list[dict]:
        """Every run's record in storage (the pipeline's only, when named), from one
        listing; a record still running is reported as its Job is now (one read each): a
        run that ended while no apply watched it is reported with its outcome (a complete
        one as succeeded: the next apply judges its gate and publishes it)."""
        def refresh(record: dict, job: dict) -> dict | None:
            if job.get("kind") == SWEEP_RUN:
                return None   # a sweep has no Job: running until an apply ends it
            address, name = str(record.get("pipeline") or ""), str(record["run_id"])
            found = self.kube.get(job.get("api_version", "batch/v1"), job.get("kind", "Job"),
                                  name, job.get("namespace"), address=address)
            done_types, failed_type = next(
                (v[2], v[3]) for v in RUN_KINDS.values() if v[1] == job.get("kind", "Job"))
            prefix = run_prefix(self.env, address, name)
            metrics = self.env.store.get_json(f"{prefix}/output/{METRICS_FILE}",
                                              address=address)
            if found is not None and _failed(found, failed_type):
                status, failure = FAILED, _failed(found, failed_type)
            elif (found is not None and any(_condition(found, c) for c in done_types)) or \
                    (found is None and isinstance(metrics, dict)):   # a TTL took the Job
                status, failure = SUCCEEDED, None
            elif found is None:
                status, failure = FAILED, f"its {job.get('kind', 'Job')} is gone"
            else:
                return None   # still running
            ended = ((found or {}).get("status") or {}).get("completionTime")
            return closed_record(record, status, finished=ended or record.get("finished"),
                                 metrics=metrics if status == SUCCEEDED else None,
                                 failure=failure, steps=self._steps(address, name),
                                 model_uri=(f"s3://{self.env.store.bucket}/{prefix}/output/"
                                            if status == SUCCEEDED else None))

        return self.ledger.records(self.env.name(pipeline) if pipeline else None,
                                   address=pipeline or "", refresh=refresh)

    def _upload_code(self, address: str, attrs: Mapping[str, Any]) -> tuple[str, str]:
        """Ship the entrypoint and its directory (or settings.source_dir) to storage, once
        per content: (the archive's URI, the program's path inside it)."""
        settings = PipelineSettings.model_validate(dict(attrs.get("settings") or {}))
        entry = str(attrs.get("entrypoint_path") or attrs.get("entrypoint") or "")
        source_dir = settings.source_dir or str(Path(entry).parent)
        archive, program = code_archive(Path(self.env.context.stack_dir), address, attrs,
                                        source_dir)
        key = self.env.store.key("code", hashlib.sha256(archive).hexdigest(), "code.tar.gz")
        if self.env.store.head(key, address=address) is None:
            self.env.store.put_bytes(key, archive, address=address,
                                     content_type="application/gzip")
        return f"s3://{self.env.store.bucket}/{key}", program

    def job_manifests(self, address: str, attrs: Mapping[str, Any], namespace: str, name: str,
                      fingerprint: str, attempt: int, code_uri: str, program: str,
                      labels: Mapping[str, str] | None = None) -> list[dict]:
        settings = PipelineSettings.model_validate(dict(attrs.get("settings") or {}))
        cluster = attrs.get("cluster") if isinstance(attrs.get("cluster"), Mapping) else {}
        gpus = int(cluster.get("gpus_per_node") or 0)
        nodes = int(cluster.get("nodes") or 1)
        sizes = ClusterSettings.model_validate(dict(cluster.get("settings") or {}))
        inputs = {str(k): input_uri(v) for k, v in (attrs.get("inputs") or {}).items()}
        for key, uri in inputs.items():
            if not isinstance(uri, str) or not uri.startswith("s3://"):
                raise ProviderError(f"{address}: inputs.{key} is {uri!r}; pods read inputs "
                                    "from storage (s3://)", address=address)
        labels = {ROLE: "train", FINGERPRINT: fingerprint_hex(fingerprint)[:40],
                  ATTEMPT: str(attempt), **dict(attrs.get("tags") or {}), **dict(labels or {})}
        work = {"storage": self.env.store.uri(), "code": code_uri, "program": program,
                "inputs": inputs, "hyperparameters": attrs.get("hyperparameters") or {},
                "output": f"s3://{self.env.store.bucket}/{run_prefix(self.env, address, name)}/",
                "device": "cuda" if gpus else "cpu", "run_id": name,
                # torchrun in the pod: one process per GPU of the node (pod.py `train`)
                "nodes": nodes, "processes_per_node": _shape(attrs)[1],
                "environment": {str(k): str(v) for k, v in
                                (attrs.get("environment") or {}).items()}}
        kind = self.run_kind(attrs)
        extra_env = {}
        if nodes > 1 and kind != "pytorchjob":      # the training operator sets its own
            host = f"{name}-0" if kind == "job" else f"{name}-workers-0-0"
            extra_env = {"MASTER_ADDR": f"{host}.{name}.{namespace}.svc",
                         "MASTER_PORT": str(MASTER_PORT), "WORLD_SIZE": str(nodes),
                         "NNODES": str(nodes)}
        pod = pod_spec(self.env, "train", image=settings.image, command="train", work=work,
                       gpus=gpus, cpu=sizes.cpu_per_node, memory=sizes.memory_per_node,
                       extra_env=extra_env)
        pod["restartPolicy"] = "Never"
        if nodes > 1 and kind == "job":
            pod["subdomain"] = name
        if sizes.kueue:         # Kueue admits the run: it unsuspends it
            labels[KUEUE_LABEL] = KUEUE_QUEUE
        meta = self.env.metadata(name, address, namespace, labels=labels)
        template = {"metadata": {"labels": {**self.env.selector(address), **labels}},
                    "spec": pod}
        spec: dict[str, Any] = {"backoffLimit": 0, "template": template}
        if nodes > 1:
            spec.update(completionMode="Indexed", completions=nodes, parallelism=nodes)
        if cluster.get("max_runtime_seconds"):
            spec["activeDeadlineSeconds"] = int(cluster["max_runtime_seconds"])
        if sizes.kueue:
            spec["suspend"] = True
        if settings.ttl_seconds_after_finished is not None:
            spec["ttlSecondsAfterFinished"] = settings.ttl_seconds_after_finished
        api_version, run_kind = RUN_KINDS[kind][:2]
        if kind == "jobset":     # one replicated Job of `nodes` indexed pods; DNS by JobSet
            spec.pop("ttlSecondsAfterFinished", None)
            suspend = spec.pop("suspend", None)
            body: dict[str, Any] = {
                "network": {"enableDNSHostnames": True},
                "replicatedJobs": [{"name": "workers", "replicas": 1,
                                    "template": {"spec": spec}}]}
            if suspend:
                body["suspend"] = True
            return [{"apiVersion": api_version, "kind": run_kind, "metadata": meta,
                     "spec": body}]
        if kind == "pytorchjob":  # a Master and nodes - 1 Workers, same pod
            replicas = {"Master": {"replicas": 1, "restartPolicy": "Never",
                                   "template": template}}
            replicas["Worker"] = {"replicas": nodes - 1, "restartPolicy": "Never",
                                  "template": template}
            body = {"pytorchReplicaSpecs": replicas,
                    "runPolicy": {"backoffLimit": 0, **({"suspend": True} if sizes.kueue
                                                        else {})}}
            return [{"apiVersion": api_version, "kind": run_kind, "metadata": meta,
                     "spec": body}]
        docs = [{"apiVersion": api_version, "kind": run_kind, "metadata": meta, "spec": spec}]
        if nodes > 1:
            docs.append({"apiVersion": "v1", "kind": "Service",
                         "metadata": self.env.metadata(name, address, namespace, labels=labels),
                         "spec": {"clusterIP": "None", "selector": {JOB_LABEL: name},
                                  "ports": [{"name": "rendezvous", "port": MASTER_PORT}]}})
        return docs

    def _wait(self, address: str, namespace: str, run: Mapping[str, Any],
              attrs: Mapping[str, Any], stop: threading.Event | None = None) -> None:
        """Wait until the run's Job completes; a ProviderError when it fails, or (the run
        going on) as soon as `stop` is set (a sweep stopping)."""
        settings = PipelineSettings.model_validate(dict(attrs.get("settings") or {}))
        api_version, kind, done, failed_type = RUN_KINDS[self.run_kind(attrs)]
        name = run["metadata"]["name"]
        labels = run["metadata"].get("labels") or {}
        # the run's pods, whichever controller made them: our template's labels
        pod_labels = {**self.env.selector(address), FINGERPRINT: labels.get(FINGERPRINT, ""),
                      ATTEMPT: labels.get(ATTEMPT, ""),
                      **{k: labels[k] for k in (SWEEP, TRIAL) if k in labels}}

        def check() -> tuple[bool, str]:
            if stop is not None and stop.is_set():
                raise ProviderError(f"{address}: stopped waiting for {kind} {namespace}/{name} "
                                    "(it goes on, for the next apply)", address=address)
            job = self.kube.get(api_version, kind, name, namespace, address=address)
            if job is None:
                raise ProviderError(f"{address}: {kind} {namespace}/{name} disappeared while "
                                    "waiting for it", address=address)
            if any(_condition(job, c) for c in done):
                return True, "complete"
            pods = self.kube.list("v1", "Pod", namespace, labels=pod_labels, address=address)
            failed = _failed(job, failed_type)
            problem = pod_failure(pods, settings.schedule_timeout_seconds)
            if failed or problem:
                self._close_record(address, name, FAILED, failure=problem or failed)
                raise ProviderError(
                    f"{address}: training {kind} {namespace}/{name} failed: "
                    f"{problem or failed}", address=address,
                    service_message=problem or str(failed))
            status = job.get("status") or {}
            if (job.get("spec") or {}).get("suspend"):
                return False, f"suspended, waiting for Kueue to admit it (queue {KUEUE_QUEUE})"
            return False, (f"active {status.get('active', 0)}, succeeded "
                           f"{status.get('succeeded', 0)}" if kind == "Job"
                           else f"{len(pods)} pod(s)")

        self.kube.wait(check, address=address, what=f"{kind} {namespace}/{name}",
                       timeout=self.schema.timeouts.create)

    def _publish(self, planned: Planned, attrs: dict, namespace: str, name: str) -> LiveObject:
        address = planned.address
        prefix = run_prefix(self.env, address, name)
        metrics = self.env.store.get_json(f"{prefix}/output/{METRICS_FILE}", address=address)
        metrics = metrics if isinstance(metrics, dict) else {}
        gate = attrs.get("gate")
        missed, note = check_gate(gate, metrics), None
        if missed is None:
            missed, note = judge_challenger(gate, metrics, partial(champions, self, address),
                                            run_id=name)
        model_uri = f"s3://{self.env.store.bucket}/{prefix}/output/"
        self._close_record(address, name, FAILED if missed else SUCCEEDED, metrics=metrics,
                           failure=missed, model_uri=None if missed else model_uri)
        if missed is not None:
            raise ProviderError(f"{address}: {missed}", address=address)
        # what the registry records for a version made from this run, next to its output
        self.env.store.put_json(f"{prefix}/lineage.json",
                                {**run_lineage(address, attrs, name, metrics),
                                 **({"champion": note} if note else {})}, address=address)
        attrs.update(run_id=name, model_uri=model_uri, metrics=metrics, stale=None)
        record = {"address": address, "namespace": namespace, "job": name,
                  "attributes": attrs}
        self.env.store.put_json(self.record_key(address), record, address=address)
        return LiveObject(address, planned.kind, f"{namespace}/{name}", attrs)

    def record_key(self, address: str) -> str:
        return self.env.store.key("runs", self.env.name(address), "current.json")

    def stale_marker(self, address: str) -> StaleMarker | None:
        return StaleMarker.from_json(self.env.store.get_json(stale_key(self.env, address),
                                                             address=address))

    # -- read / delete -----------------------------------------------------------------------

    def read(self, prior: LiveObject) -> LiveObject | None:
        record = self.env.store.get_json(self.record_key(prior.address), address=prior.address)
        if not isinstance(record, dict) or record.get("address") != prior.address:
            return None
        attrs = dict(record["attributes"])
        api_version, kind = RUN_KINDS[self.run_kind(attrs)][:2]
        job = self.kube.get(api_version, kind, record["job"], record["namespace"],
                            address=prior.address)
        if job is not None:
            self.env.check_owner(job, prior.address)
        elif not (PipelineSettings.model_validate(dict(attrs.get("settings") or {}))
                  .ttl_seconds_after_finished is not None):
            return None                        # deleted outside mlform: run it again
        marker = self.stale_marker(prior.address)
        # a sweep's run_id is the sweep's, its job the best trial's: a monitor marks the former
        attrs["stale"] = (marker.reason if marker is not None
                          and marker.marks(str(attrs.get("run_id") or record["job"]),
                                           attrs.get("fingerprint")) else None)
        return LiveObject(prior.address, prior.kind, f"{record['namespace']}/{record['job']}",
                          attrs)

    def delete(self, prior: LiveObject) -> None:
        address = prior.address
        record = self.env.store.get_json(self.record_key(address), address=address)
        namespaces = {self.namespace(prior.attributes)}
        if isinstance(record, dict) and record.get("address") == address:
            namespaces.add(record["namespace"])
        found = []
        for namespace in sorted(namespaces):
            if self.kube.get("v1", "Namespace", namespace, address=address) is None:
                continue
            kinds = [("batch/v1", "Job"), ("v1", "Service")]
            run_kind = self.run_kind(prior.attributes)
            if run_kind != "job":
                kinds.insert(0, RUN_KINDS[run_kind][:2])
            for api, kind in kinds:
                found += self.kube.list(api, kind, namespace,
                                        labels=self.env.selector(address), address=address)
        self._delete_objects(found, address)
        self.env.store.delete([self.record_key(address), stale_key(self.env, address)],
                              address=address)
        # a sweep's studies (`sweeps.py`); run records stay, as the outputs do
        self.env.store.delete_prefix(self.env.store.key("sweeps", self.env.name(address)) + "/",
                                     address=address)


#: the `job` of a sweep's own run record (`sweeps.py`): it has no Job of its own
SWEEP_RUN = "sweep"


def sweep_diagnostics(desired: Desired) -> list[Diagnostic]:
    """What a `sweep` asks that trials as Jobs cannot do: pruning, which would read each
    trial's steps while it runs (a pod's log reaches storage when the run ends)."""
    raw = desired.attributes.get("sweep")
    if not isinstance(raw, Mapping) or raw.get("pruning") != "median":
        return []
    return [error(f'{desired.address}: sweep.pruning = "median": the kubernetes provider '
                  "does not prune trials (a trial's step lines reach storage only when its "
                  "Job ends)", address=desired.address,
                  hint='Use pruning = "none" (each trial runs to its end), or run the sweep '
                       "on the local provider.")]


def _condition(job: Mapping[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def _failed(job: Mapping[str, Any], kind: str = "Failed") -> str:
    """The run's failure condition's message, or ""."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return f"{c.get('reason') or 'Failed'}: {c.get('message') or ''}".strip(": ")
    return ""


__all__ += ["JOB_LABEL", "ROLE"]
