"""MLflow's side of tracking (`mlform.tracking`): runs logged, model versions mirrored.

One `sync_target` call per tracking target (URI and experiment):

- **Runs.**  One search of the experiment lists the runs mlform logged before (tag
  ``mlform.run_id``, this stack and environment); every finished record not among them
  becomes one MLflow run named after the record's run id: its parameters (nested ones
  flattened with dots), final metrics (at the last step, stamped at the run's end, so
  they are the run's latest value), step metrics (``step=``), ``mlform.*`` tags
  (fingerprint, pipeline, stack, environment, code and data digests, status, failure),
  the model directory as the ``model`` artifact when the record's model is a ``file://``
  directory (else a ``mlform.model_uri`` tag), the log as ``logs/``, start and end times,
  and status FINISHED or FAILED.  A run is marked terminated last: one left RUNNING by a
  sync that died half-way is deleted and logged again, so no run is logged twice or half.
  Records still running are left for a later sync.
- **Model versions.**  Each `model` resource of the state is a registered model named
  ``STACK.ADDRESS`` (``STACK.ENV.ADDRESS`` outside the default environment: registered
  models are global to the server) whose versions carry ``mlform.version``; a version
  not there yet is created, from the MLflow run it came from when that run is logged
  (the record whose model is the version's artifact), and the alias named after
  mlform's stage points at it (moved when the stage moves; the alias mlform set before
  is kept in the registered model's ``mlform.alias`` tag so a dropped stage is removed).

A server that is down costs seconds, not MLflow's minutes of retries: an HTTP(S) URI is
probed first, and MLflow's own retries and timeout are bounded for the sync (unless the
user set ``MLFLOW_HTTP_REQUEST_*`` already).  Any failure is one diagnostic for the target.

This module imports MLflow: `mlform.tracking` imports it only when a stack sets tracking.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping
from urllib.parse import unquote, urlsplit

import requests   # MLflow's own HTTP client: the probe sees the same proxies and certificates
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

from mlform.config.model import MlflowTarget
from mlform.diagnostics import Diagnostic, error

if TYPE_CHECKING:
    from mlform.state import ResourceState
    from mlform.tracking import TargetReport

__all__ = ["sync_target", "registered_model_name", "TAG", "PROBE_TIMEOUT_S"]

TAG = "mlform."
#: seconds a reachability probe waits for the server
PROBE_TIMEOUT_S = 5.0
#: MLflow's HTTP settings for a sync, where the user set none: a few quick retries, not
#: the default seven with exponential backoff (minutes against a dead server)
_HTTP_BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
# MLflow's limits: a log_batch call, a parameter value, a tag value
_BATCH_METRICS, _BATCH_PARAMS, _BATCH_TAGS = 1000, 100, 100
_PARAM_CHARS, _TAG_CHARS = 6000, 5000
_KEY_BAD = re.compile(r"[^\w\-. /:]")
_TERMINAL = {"succeeded": "FINISHED", "failed": "FAILED"}


class _Unreachable(Exception):
    pass


def sync_target(target: MlflowTarget, report: TargetReport, records: list[dict],
                models: list[ResourceState], *,
                stack: str, environment: str) -> list[Diagnostic]:
    """Log `records` and mirror `models` (state resources) at `target`; fills `report`."""
    try:
        with _bounded_http():
            _probe(target.uri)
            client = MlflowClient(tracking_uri=target.uri, registry_uri=target.uri)
            experiment_id = _experiment(client, target.experiment or stack)
            logged = _logged_runs(client, experiment_id, stack, environment)
            for record in records:
                if record.get("status") in _TERMINAL and record.get("run_id") not in logged:
                    logged[record["run_id"]] = _log_run(client, experiment_id, record,
                                                        stack, environment)
                    report.runs_logged.append(record["run_id"])
            by_model = {_norm(r.get("model_uri")): r for r in records if r.get("model_uri")}
            for rs in models:
                _mirror_model(client, rs, by_model, logged, report, stack, environment)
    except _DeletedExperiment as exc:
        return [error(f"could not log runs to MLflow at {target.uri}: the experiment "
                      f"{exc.name!r} is deleted there", source=target.source,
                      hint="Restore it in MLflow (mlflow experiments restore) or name another "
                           "experiment; the runs are kept by mlform (`mlform runs list`) and "
                           "the next apply logs them.")]
    except Exception as exc:   # MlflowException, requests' errors, OSError: all one story
        return [error(f"could not log runs to MLflow at {target.uri}: {_reason(exc)}",
                      source=target.source,
                      hint="The runs are kept by mlform (`mlform runs list`); the next apply "
                           "logs them once the tracking server answers.")]
    return []


# ------------------------------------------------------------------ connection

@contextlib.contextmanager
def _bounded_http() -> Iterator[None]:
    added = {k: v for k, v in _HTTP_BOUNDS.items() if k not in os.environ}
    os.environ.update(added)
    # MLflow's INFO lines ("Waiting up to 300 seconds for model version...") are its
    # business, not the apply's output
    chatty = logging.getLogger("mlflow")
    level = chatty.level
    chatty.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        chatty.setLevel(level)
        for key in added:
            os.environ.pop(key, None)


def _probe(uri: str) -> None:
    """Fail fast when an HTTP(S) tracking server does not answer at all (any HTTP answer
    will do: a server behind a proxy may have no /health)."""
    if urlsplit(uri).scheme not in ("http", "https"):
        return
    try:
        requests.get(f"{uri}/health", timeout=PROBE_TIMEOUT_S)
    except requests.RequestException as exc:
        raise _Unreachable(_reason(exc)) from None


def _reason(exc: BaseException) -> str:
    """A short reason for a failed call: the socket's, when one is in there."""
    text = str(exc)
    for pattern, reason in (("Connection refused", "connection refused"),
                            ("Name or service not known", "unknown host"),
                            ("nodename nor servname", "unknown host"),
                            ("timed out", "timed out")):
        if pattern in text:
            return reason
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first if len(first) <= 300 else first[:297] + "..."


class _DeletedExperiment(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _experiment(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, tags={f"{TAG}managed": "true"})
    if found.lifecycle_stage == "deleted":
        raise _DeletedExperiment(name)
    return found.experiment_id


# ------------------------------------------------------------------ runs

def _logged_runs(client, experiment_id: str, stack: str, environment: str) -> dict[str, Any]:
    """mlform run id -> the MLflow run logged for it (one paged search of the experiment);
    a run a dead sync left unfinished is deleted, to be logged again."""
    query = f"tags.`{TAG}stack` = '{stack}'" if "'" not in stack else ""
    found: dict[str, Any] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=query,
                                  run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                                  page_token=token)
        for run in page:
            tags = run.data.tags
            run_id = tags.get(f"{TAG}run_id")
            if (not run_id or tags.get(f"{TAG}stack") != stack
                    or tags.get(f"{TAG}environment") != environment):
                continue
            if run.info.status == "RUNNING":
                client.delete_run(run.info.run_id)
                continue
            found[run_id] = run
        token = page.token
        if not token:
            return found


def _log_run(client, experiment_id: str, record: Mapping[str, Any], stack: str,
             environment: str):
    run = client.create_run(experiment_id, start_time=_millis(record.get("started")),
                            tags={f"{TAG}run_id": record["run_id"], f"{TAG}stack": stack,
                                  f"{TAG}environment": environment},
                            run_name=record["run_id"])
    mlflow_id = run.info.run_id
    started = _millis(record.get("started")) or run.info.start_time
    # after the steps even when both times fall in one second: the final value is the latest
    finished = max(_millis(record.get("finished")) or started, started + 1)
    metrics, last = [], 0
    for step in record.get("steps") or []:
        last = max(last, int(step["step"]))
        metrics += [Metric(_key(k), v, started, int(step["step"]))
                    for k, v in (step.get("metrics") or {}).items() if _number(v)]
    metrics += [Metric(_key(k), float(v), finished, last)
                for k, v in (record.get("metrics") or {}).items() if _number(v)]
    params = [Param(_key(k), _text(v, _PARAM_CHARS)) for k, v in
              _flatten(record.get("parameters") or {}).items()]
    tags = [RunTag(k, _text(v, _TAG_CHARS)) for k, v in _run_tags(record).items()]
    for i in range(0, max(len(params), len(tags)), _BATCH_PARAMS):
        client.log_batch(mlflow_id, params=params[i:i + _BATCH_PARAMS],
                         tags=tags[i:i + _BATCH_TAGS], metrics=())
    for i in range(0, len(metrics), _BATCH_METRICS):
        client.log_batch(mlflow_id, metrics=metrics[i:i + _BATCH_METRICS])
    model_dir = _local_path(record.get("model_uri"))
    if model_dir is not None and model_dir.is_dir():
        client.log_artifacts(mlflow_id, str(model_dir), "model")
        client.set_tag(mlflow_id, f"{TAG}model_artifact", "model")
    logs = _local_path((record.get("artifacts") or {}).get("logs"))
    if logs is not None and logs.is_file():
        client.log_artifact(mlflow_id, str(logs), "logs")
    # last: a run marked terminated is complete (`_logged_runs` relies on it)
    client.set_terminated(mlflow_id, _TERMINAL[record["status"]], end_time=finished)
    return client.get_run(mlflow_id)


def _run_tags(record: Mapping[str, Any]) -> dict[str, str]:
    tags = {f"{TAG}fingerprint": record.get("fingerprint"),
            f"{TAG}pipeline": record.get("pipeline"),
            f"{TAG}provider": record.get("provider"),
            f"{TAG}code_digest": record.get("code_digest"),
            f"{TAG}entrypoint": record.get("entrypoint"),
            f"{TAG}cluster": record.get("cluster"),
            f"{TAG}accelerator": record.get("accelerator"),
            f"{TAG}status": record.get("status"),
            f"{TAG}failure": record.get("failure")}
    for name, digest in (record.get("data_digests") or {}).items():
        tags[f"{TAG}data_digest.{_key(name)}"] = digest
    for name, address in (record.get("inputs") or {}).items():
        tags[f"{TAG}input.{_key(name)}"] = address
    for name, value in (record.get("sweep") or {}).items():
        tags[f"{TAG}sweep.{_key(name)}"] = value if isinstance(value, str) else json.dumps(value)
    model_uri = record.get("model_uri")
    if model_uri and _local_path(model_uri) is None:
        tags[f"{TAG}model_uri"] = model_uri
    if record.get("entrypoint"):
        tags["mlflow.source.name"] = record["entrypoint"]
    tags.update({_key(k): v for k, v in (record.get("tags") or {}).items()})
    return {k: str(v) for k, v in tags.items() if v is not None and v != ""}


# ------------------------------------------------------------------ models

def registered_model_name(address: str, stack: str, environment: str) -> str:
    """The registered model a `model` resource's versions go to."""
    return f"{stack}.{address}" if environment == "default" else f"{stack}.{environment}.{address}"


def _mirror_model(client, rs: ResourceState, by_model: Mapping[str, dict],
                  logged: Mapping[str, Any], report: TargetReport, stack: str,
                  environment: str) -> None:
    attrs = rs.attributes or {}
    version = attrs.get("version")
    if version is None or isinstance(version, bool):
        return
    name = registered_model_name(rs.address, stack, environment)
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        registered = client.create_registered_model(
            name, tags={f"{TAG}model": rs.address, f"{TAG}stack": stack,
                        f"{TAG}environment": environment})
    versions = {mv.tags.get(f"{TAG}version"): mv for mv in _model_versions(client, name)}
    mirrored = versions.get(str(version))
    if mirrored is None:
        record = by_model.get(_norm(attrs.get("artifact")))
        run = logged.get(record["run_id"]) if record else None
        tags = {f"{TAG}version": str(version), f"{TAG}model": rs.address,
                f"{TAG}run_id": record["run_id"] if record else None,
                f"{TAG}digest": attrs.get("digest"), f"{TAG}approval": attrs.get("approval"),
                f"{TAG}uri": attrs.get("uri")}
        has_model = run is not None and run.data.tags.get(f"{TAG}model_artifact") == "model"
        source = (f"{run.info.artifact_uri}/model" if has_model
                  else str(attrs.get("uri") or attrs.get("artifact") or ""))
        mirrored = client.create_model_version(
            name, source, run_id=run.info.run_id if run is not None else None,
            tags={k: str(v) for k, v in tags.items() if v is not None},
            description=attrs.get("description") or None)
        report.versions_registered.append(f"{name} v{mirrored.version} (mlform {version})")
    _point_alias(client, registered, name, attrs.get("stage"), mirrored.version, report)


def _model_versions(client, name: str) -> list:
    out, token = [], None
    escaped = name.replace("'", "\\'")
    while True:
        page = client.search_model_versions(f"name = '{escaped}'", page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _point_alias(client, registered, name: str, stage: Any, version: str,
                 report: TargetReport) -> None:
    """The alias named after mlform's stage at `version`; the alias mlform set before for
    another stage is removed (it is remembered in the registered model's tags)."""
    previous = registered.tags.get(f"{TAG}alias")
    aliases = dict(registered.aliases or {})
    if previous and previous != stage and previous in aliases:
        client.delete_registered_model_alias(name, previous)
    if stage and str(aliases.get(stage)) != str(version):
        client.set_registered_model_alias(name, stage, version)
        report.aliases_set.append(f"{name}@{stage} -> v{version}")
    if stage and previous != stage:
        client.set_registered_model_tag(name, f"{TAG}alias", stage)
    elif not stage and previous:
        client.delete_registered_model_tag(name, f"{TAG}alias")


# ------------------------------------------------------------------ values

def _millis(value: Any) -> int | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _key(name: Any) -> str:
    """A parameter, metric or tag name MLflow accepts (letters, digits, _ - . / : space)."""
    return _KEY_BAD.sub("_", str(name)) or "_"


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested hyperparameters as dotted names: {"opt": {"lr": 0.1}} -> {"opt.lr": 0.1}."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{key}."))
        else:
            out[key] = value
    return out


def _local_path(uri: Any) -> Path | None:
    if not isinstance(uri, str) or not uri.startswith("file:"):
        return None
    return Path(unquote(urlsplit(uri).path))


def _norm(uri: Any) -> str:
    return str(uri).rstrip("/") if uri else ""
