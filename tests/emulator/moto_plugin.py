"""Extensions to moto (5.2.x) that make it a usable SageMaker emulator for mlform's tests.

Installed into the emulator process by server.py (`install(calls, control)`), before
moto's server starts.  Everything is done by wrapping moto's own classes
(`DomainDispatcherApplication`, `BaseResponse`, `S3Response`, `SageMakerModelBackend`,
`SageMakerResponse`); nothing in moto's files is changed.

What moto lacks, and what this plugin adds:

* **Call log.**  moto keeps no record of requests.  Every request of every service
  (S3 included) appends one JSON line to the `calls` file once it is answered:
  ``{"service", "action", "name", "status", "error"}`` -- the API name (PutObject,
  CreateEndpoint, ...), the main resource name the request carries (EndpointName,
  TrainingJobName, Key, ... or null), the status a Describe* answer reports
  (EndpointStatus, TrainingJobStatus, ModelPackageStatus, ... or null) and the error
  code of a refused request (or null; the HTTP status where the answer is CBOR, as
  CloudWatch's).  Retried attempts are separate lines.

* **Status transitions.**  moto puts every resource straight into its final status.
  Here endpoints, training jobs and model packages move through the statuses AWS
  reports, one step per Describe* call, steered by the control file:
  ``steps = {"endpoint": N, "training_job": N, "model_package": N}`` (default 0: final
  at once, as moto).  Endpoint: Creating x N, then InService.  Training job:
  InProgress x N, then Completed with ``FinalMetricDataList`` built from
  ``training_metrics = {"accuracy": 0.93}``.  Model package: InProgress x N, then
  Completed.  Failure injection: ``fail_training = {"<substring of job name>": reason}``
  ends the job Failed with that FailureReason; ``fail_endpoint = {"<substring of
  endpoint or endpoint-config name>": reason}`` ends a create Failed, and an update
  RollingBack (one describe) then InService on the old configuration, FailureReason set.
  Each resource's script is fixed by the request that starts it.

* **Missing calls.**  UpdateEndpoint (refused unless InService, Updating x N, then the
  new EndpointConfigName and ProductionVariants; LastDeploymentConfig and
  PendingDeploymentSummary reported), StopTrainingJob (Stopping x N, then Stopped),
  DeleteModelPackage, DeleteModelPackageGroup (ConflictException while it still holds
  packages).  UpdateEndpointWeightsAndCapacities goes Updating x N, sets only the
  fields given, and is refused unless InService.  ``ShadowProductionVariants`` (moto
  drops them): CreateEndpointConfig keeps them (refused, as AWS does, unless there is
  exactly one production and one shadow variant, or when a shadow's Model is
  missing), DescribeEndpointConfig returns them, and DescribeEndpoint reports them
  (weights and counts, as for production variants) after CreateEndpoint and
  UpdateEndpoint.

* **Fixes of moto's answers.**  Creating a model, endpoint config, endpoint, training
  job or model package group under a name in use is refused as AWS does (moto silently
  overwrites).  Model package versions are never reused after a delete (moto numbers
  them len+1 and would overwrite).  A variant weight of 0 is reported (moto drops it)
  and the weight defaults to 1.0 as in AWS.  AddTags/ListTags/DeleteTags work on
  model-package ARNs and on resources created without tags, AddTags replaces a key's
  value instead of appending a duplicate, and an unknown ARN is a ValidationException
  ("... does not exist") instead of an HTTP 500.  CreateTrainingJob keeps the request's
  ``Environment`` (moto drops it) and ``AlgorithmSpecification.MetricDefinitions`` (moto
  replaces them with its own ``test:dcg``), and DescribeTrainingJob returns both as sent.

* **Tuning jobs** (tuning.py): CreateHyperParameterTuningJob runs its trials as the
  training jobs above (values drawn deterministically from the ranges; a metric can be
  planted per hyperparameter value with ``planted_metrics``), Describe reports the best
  one, plus ListTrainingJobsForHyperParameterTuningJob and StopHyperParameterTuningJob.

* **Throttling / 5xx injection.**  ``throttle = {"<Action>": k}``: the next k calls of
  that action answer HTTP 400 ThrottlingException; ``server_error = {"<Action>": k}``:
  HTTP 500 InternalFailure.  The counts are decremented in the control file itself, so
  setting them again re-arms them.

* **Latency.**  ``latency_ms = N`` delays every answer by N ms (outside the GIL, like a
  network round trip), so benchmarks can show how calls overlap against a real region.

* **Reset.**  ``POST /moto-api/reset`` also forgets the plugin's per-resource scripts and
  version counters.

* **Speed, answers unchanged.**  moto's per-request look-ups that never change (the
  backend for a host, a response class's methods) are cached, request ids are drawn in
  one call, the call log is appended through one descriptor and the control file is
  read once per request (`_install_dispatch_caches`, `_install_request_ids`); the HTTP
  side (connections kept open) is server.py's.

The control file is read once per request, when it arrives (tests change it between
requests); unknown keys are ignored and a malformed file counts as ``{}``.
`edit_control` is the one way to change it (tests use it through
`fixture.Emulator.control`): it holds an exclusive lock so the server's count
decrements and the tests' writes never overwrite each other.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tuning   # tests/emulator/tuning.py: this directory is on sys.path wherever this loads

_CALLS: Path | None = None
_CONTROL: Path | None = None

_log_lock = threading.Lock()
_state_lock = threading.RLock()    # moto's server is threaded; scripts change per request
_request = threading.local()       # the call-log record of the request this thread serves

# Parameters naming the main resource of a request, most specific first.
NAME_KEYS = ("HyperParameterTuningJobName", "EndpointName", "EndpointConfigName",
             "TrainingJobName", "ModelName", "ModelPackageName", "ModelPackageArn",
             "ModelPackageGroupName", "PipelineName", "Key", "Bucket", "AlarmName", "AlarmNames",
             "Name", "PolicyName", "ResourceId", "ResourceArn", "ResourceARN")
# Keys of a Describe* answer that carry the resource's status, most specific first.
STATUS_KEYS = ("HyperParameterTuningJobStatus", "EndpointStatus", "TrainingJobStatus",
               "ModelPackageStatus", "ModelPackageGroupStatus", "PipelineStatus",
               "PipelineExecutionStatus")


# --- control file -----------------------------------------------------------------------

def _read(path: Path | None) -> dict:
    try:
        data = json.loads(path.read_text()) if path else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def control() -> dict:
    """The tests' current instructions: read once per request (the snapshot the request
    took when it arrived; tests rewrite the file between requests), else re-read."""
    snapshot = getattr(_request, "control", None)
    return snapshot if snapshot is not None else _read(_CONTROL)


@contextmanager
def _locked(path: Path):
    # A sidecar lock file: the control file itself is replaced (new inode) on each write.
    with open(f"{path}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def edit_control(path: Path, change: Callable[[dict], bool | None]) -> None:
    """Apply `change` to the control file at `path` under an exclusive lock, atomically.

    `change` edits the dict in place; returning False means "nothing to write"."""
    with _locked(path):
        data = _read(path)
        if change(data) is False:
            return
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)


def _setting(section: str) -> dict:
    value = control().get(section)
    return value if isinstance(value, dict) else {}


def _steps(kind: str) -> int:
    try:
        return max(0, int(_setting("steps").get(kind, 0)))
    except (TypeError, ValueError):
        return 0


def _failure(section: str, *names: str | None) -> str | None:
    """The failure reason configured for the first substring found in one of `names`."""
    for needle, reason in _setting(section).items():
        if any(needle and name and needle in name for name in names):
            return str(reason)
    return None


def _take_fault(action: str) -> tuple[str, int] | None:
    """(error code, HTTP status) when a throttle/server_error count for `action` is due."""
    if _CONTROL is None or not action:
        return None
    taken: list[tuple[str, int]] = []

    def consume(data: dict) -> bool:
        for section, answer in (("throttle", ("ThrottlingException", 400)),
                                ("server_error", ("InternalFailure", 500))):
            counts = data.get(section)
            if not isinstance(counts, dict):
                continue
            try:
                left = int(counts.get(action, 0))
            except (TypeError, ValueError):
                continue
            if left > 0:
                counts[action] = left - 1
                taken.append(answer)
                return True
        return False

    if any(isinstance(_setting(s).get(action), int) for s in ("throttle", "server_error")):
        edit_control(_CONTROL, consume)      # only lock when a count is configured
    return taken[0] if taken else None


# --- call log and fault injection ---------------------------------------------------------

def _param_reader(response) -> Callable[[str], Any]:
    """`response._get_param`, answering the same, but with a JSON body parsed once:
    moto's services without automated parameter parsing (S3, Application Auto Scaling)
    parse the body again for every parameter asked, and `_name_of` asks up to 17."""
    from moto.core.responses import BaseResponse

    if (type(response)._get_param is not BaseResponse._get_param
            or response.automated_parameter_parsing):
        return response._get_param
    querystring, body = response.querystring, response.body
    uri = response.uri_match
    parsed: list = []

    def get(key: str) -> Any:
        value = querystring.get(key)
        if value is not None:
            return value[0]
        if body is not None:
            if not parsed:
                try:
                    parsed.append(json.loads(body))
                except (ValueError, TypeError):
                    parsed.append(None)
            if isinstance(parsed[0], dict) and key in parsed[0]:
                return parsed[0][key]
        if uri and key in uri:
            return uri[key]
        return None

    return get


def _name_of(response) -> str | None:
    uri = getattr(response, "uri_match", None) or {}
    try:
        param = _param_reader(response)
    except Exception:       # a response class unlike moto's BaseResponse: ask it directly
        param = response._get_param
    for key in NAME_KEYS:
        try:
            value = uri.get(key) or param(key)
        except Exception:   # parameter parsing differs per protocol; a miss is not an error
            value = None
        if isinstance(value, list):
            value = value[0] if value else None
        if value:
            return str(value)
    return None


def _answer_details(action: str, status: int, body: bytes) -> tuple[str | None, str | None]:
    """(status reported by a Describe* answer, error code of a refused request)."""
    answer: Any = None
    # Only errors and Describe* answers are read (not every JSON body, e.g. an S3 object).
    if body[:1] == b"{" and (status >= 400 or action.startswith("Describe")):
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
    if status >= 400:
        code = answer.get("__type") if isinstance(answer, dict) else None
        if not code:
            found = re.search(rb"<Code>([^<]+)</Code>", body)
            code = found.group(1).decode() if found else str(status)
        return None, str(code).split("#")[-1]
    if action.startswith("Describe") and isinstance(answer, dict):
        for key in STATUS_KEYS:
            if isinstance(answer.get(key), str):
                return answer[key], None
    return None, None


_calls_fd: int | None = None     # the call log, opened once in append mode


def _log_call(record: dict) -> None:
    """One line per call, appended through one O_APPEND descriptor: no open/close per
    request, and a truncation by the tests (`clear_calls`) is seen at once."""
    global _calls_fd
    if _CALLS is None:
        return
    line = (json.dumps(record) + "\n").encode()
    with _log_lock:
        if _calls_fd is None:
            _calls_fd = os.open(_CALLS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_calls_fd, line)


def _install_call_log() -> None:
    """Log every request: a WSGI wrapper around moto's dispatcher sees each one (S3 too,
    which bypasses `BaseResponse.call_action`); `BaseResponse.setup_class`, which every
    service runs, tells it the service, action and resource name."""
    from moto.core.responses import BaseResponse
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original_setup = BaseResponse.setup_class

    def setup_class(self, *args, **kwargs):
        original_setup(self, *args, **kwargs)
        record = getattr(_request, "record", None)
        if record is not None:
            try:
                record["action"] = self._get_action() or record["action"]
            except Exception:
                pass
            record["service"] = str(self.service_name or record["service"])
            record["name"] = _name_of(self)

    BaseResponse.setup_class = setup_class

    original_call = DomainDispatcherApplication.__call__

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/moto-api"):
            result = original_call(self, environ, start_response)
            if path.startswith("/moto-api/reset"):
                _reset_state()
            return result
        record = {"service": "?", "action": "?", "name": None, "status": None, "error": None}
        _request.record = record
        _request.control = _read(_CONTROL)     # the one read of the control file
        latency = _request.control.get("latency_ms")
        if isinstance(latency, (int, float)) and latency > 0:
            time.sleep(latency / 1000)      # a network round trip to AWS (benchmarks)
        answered: list[int] = []

        def capture(status, headers, exc_info=None):
            answered.append(int(str(status).split()[0]))
            return start_response(status, headers, exc_info)

        try:
            try:
                result = original_call(self, environ, capture)
            except Exception:
                record["error"] = "500"
                raise
            try:
                body = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
            record["status"], record["error"] = _answer_details(
                record["action"], answered[0] if answered else 200, body)
            return [body]
        finally:
            _request.record = _request.control = None
            _log_call(record)   # written before the client can read the answer

    DomainDispatcherApplication.__call__ = __call__


def _install_dispatch_caches() -> None:
    """Answer moto's per-request look-ups that never change from a cache.

    moto's dispatcher finds the backend for every request by listing moto's package
    directory (a stat per service, ~150) and trying its URL patterns, all under one
    lock that every request thread takes; and `call_action` lists the methods of the
    response class with `inspect.getmembers`.  Both are pure functions of their
    argument once the patches of `install` are in place, so they are remembered:
    the emulator's answers stay the same, each costs a dict look-up."""
    import moto.core.responses as responses
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original_backend = DomainDispatcherApplication.get_backend_for_host
    backends: dict[str | None, Any] = {}

    def get_backend_for_host(self, host):
        if host not in backends:
            backends[host] = original_backend(self, host)
        return backends[host]

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host

    original_names = responses.method_names_from_class
    names: dict[type, list[str]] = {}

    def method_names_from_class(clazz):
        found = names.get(clazz)
        if found is None:
            found = names[clazz] = original_names(clazz)
        return list(found)           # a copy: moto's callers may change the list

    responses.method_names_from_class = method_names_from_class


def _install_request_ids() -> None:
    """moto draws each answer's 52-character ``x-amzn-requestid`` with one `choice` call
    per character, about 5% of the emulator's time per request; here 52 random bytes
    from the same seedable generator are mapped onto the same letters and digits."""
    import string

    import moto.core.responses as responses
    from moto.moto_api._internal import mock_random

    alphabet = string.ascii_letters + string.digits
    to_letters = bytes(ord(alphabet[i % len(alphabet)]) for i in range(256))

    def gen_amzn_requestid_long(headerdict: dict | None = None) -> str:
        request_id = mock_random.randbytes(52).translate(to_letters).decode()
        if isinstance(headerdict, dict):
            headerdict["x-amzn-requestid"] = request_id
        return request_id

    responses.gen_amzn_requestid_long = gen_amzn_requestid_long


def _fault_response(response, fault: tuple[str, int]):
    from moto.core.exceptions import ServiceException
    from moto.core.responses import ActionResult

    class InjectedFault(ServiceException):
        # moto looks up an exception's AWS service from its module name when that starts
        # with "moto" -- as "moto_plugin" does, which would make the lookup fail.
        __module__ = "emulator"

    code, http_status = fault
    error = InjectedFault(code, "Rate exceeded" if http_status == 400
                          else "Injected internal failure (emulator control)")
    _, headers, body = response.serialized(ActionResult(error))
    headers, body = response._enrich_response(headers, body)
    return http_status, headers, body


def _install_faults() -> None:
    """Answer the next k calls of an action with a throttle or a 500, before moto runs it."""
    from moto.core.responses import BaseResponse
    from moto.s3.responses import S3Response

    original_call = BaseResponse.call_action

    def call_action(self):
        try:
            fault = _take_fault(self._get_action())
        except Exception:
            fault = None
        return _fault_response(self, fault) if fault else original_call(self)

    BaseResponse.call_action = call_action

    # S3 answers from its own dispatch methods, never from call_action.
    for method in ("_bucket_response", "_key_response"):
        def wrapped(self, request, full_url, _original=getattr(S3Response, method)):
            record = getattr(_request, "record", None) or {}
            fault = _take_fault(record.get("action", ""))
            return _fault_response(self, fault) if fault else _original(self, request, full_url)

        setattr(S3Response, method, wrapped)


# --- status scripts -------------------------------------------------------------------------

# ARN -> the statuses successive Describe* calls report (each a function applied to the
# moto object); the last one sticks.
_scripts: dict[str, deque] = {}
# (account, region, group) -> highest model package version ever given out.
_versions: dict[tuple[str, str, str], int] = {}


def _reset_state() -> None:
    with _state_lock:
        _scripts.clear()
        _versions.clear()
    tuning.reset()


def _now():
    from moto.core.utils import utcnow
    return utcnow()


def _set(**attrs) -> Callable[[Any], None]:
    def apply(obj) -> None:
        for key, value in attrs.items():
            setattr(obj, key, copy.deepcopy(value))
        obj.last_modified_time = _now()
    return apply


def _script(obj, states: list[Callable[[Any], None]]) -> None:
    """Put `obj` in states[0] now; the k-th Describe* afterwards reports states[k-1]."""
    with _state_lock:
        states[0](obj)
        _scripts[obj.arn] = deque(states)


def _advance(obj) -> None:
    """One Describe* call: move `obj` to the next status of its script."""
    with _state_lock:
        queue = _scripts.get(obj.arn)
        if queue:
            queue.popleft()(obj)


def _arn(kind: str, name: str, backend) -> str:
    from moto.sagemaker.utils import arn_formatter
    return arn_formatter(kind, name, backend.account_id, backend.region_name)


def _variants(config_variants: list[dict], current: list[dict] | None = None) -> list[dict]:
    """DescribeEndpoint's ProductionVariants for a config; `current` retains the live
    weights/counts of same-named variants (RetainAllVariantProperties)."""
    kept = {v["VariantName"]: v for v in current or []}
    out = []
    for variant in config_variants:
        entry: dict[str, Any] = {"VariantName": variant["VariantName"]}
        weight = variant.get("InitialVariantWeight")
        entry["CurrentWeight"] = entry["DesiredWeight"] = 1.0 if weight is None else weight
        if variant.get("InitialInstanceCount") is not None:
            entry["CurrentInstanceCount"] = entry["DesiredInstanceCount"] = \
                variant["InitialInstanceCount"]
        if variant.get("ServerlessConfig"):
            entry["CurrentServerlessConfig"] = entry["DesiredServerlessConfig"] = \
                variant["ServerlessConfig"]
        old = kept.get(variant["VariantName"])
        if old:
            entry.update({k: v for k, v in old.items()
                          if k.startswith(("Current", "Desired"))})
        out.append(entry)
    return out


def _endpoint(backend, name: str):
    from moto.sagemaker.exceptions import ValidationError
    endpoint = backend.endpoints.get(name)
    if endpoint is None:
        arn = _arn("endpoint", name, backend)
        raise ValidationError(message=f"Could not find endpoint '{arn}'.")
    return endpoint


def _require_in_service(endpoint) -> None:
    from moto.sagemaker.exceptions import ValidationError
    if endpoint.endpoint_status != "InService":
        raise ValidationError(message=f'Cannot update in-progress endpoint "{endpoint.arn}" '
                                      f'(status {endpoint.endpoint_status}).')


def _shadows(config) -> list[dict] | None:
    """DescribeEndpoint's ShadowProductionVariants for a config (None: it has none, and
    the answer leaves the key out)."""
    shadows = getattr(config, "shadow_production_variants", None)
    return _variants(shadows) if shadows else None


def _install_endpoints(backend_cls, response_cls) -> None:
    """Endpoints: Creating/Updating/RollingBack scripts, UpdateEndpoint, and
    UpdateEndpointWeightsAndCapacities that goes through Updating."""
    from moto.core.responses import ActionResult
    from moto.sagemaker.exceptions import AWSValidationException, ValidationError

    original_create = backend_cls.create_endpoint
    original_describe = backend_cls.describe_endpoint

    def create_endpoint(self, endpoint_name, endpoint_config_name, tags):
        endpoint = original_create(self, endpoint_name, endpoint_config_name, tags)
        config = self.endpoint_configs[endpoint_config_name]
        endpoint.production_variants = _variants(config.production_variants)
        endpoint.shadow_production_variants = _shadows(config)
        reason = _failure("fail_endpoint", endpoint_name, endpoint_config_name)
        final = (_set(endpoint_status="Failed", failure_reason=reason) if reason
                 else _set(endpoint_status="InService", failure_reason=None))
        _script(endpoint, [_set(endpoint_status="Creating")] * _steps("endpoint") + [final])
        return endpoint

    def describe_endpoint(self, endpoint_name):
        if endpoint_name in self.endpoints:
            _advance(self.endpoints[endpoint_name])
        return original_describe(self, endpoint_name)

    def update_endpoint(self, endpoint_name, endpoint_config_name, deployment_config=None,
                        retain_all_variant_properties=False, retain_deployment_config=False):
        endpoint = _endpoint(self, endpoint_name)
        config = self.endpoint_configs.get(endpoint_config_name)
        if config is None:
            arn = _arn("endpoint-config", endpoint_config_name, self)
            raise ValidationError(message=f"Could not find endpoint configuration '{arn}'.")
        _require_in_service(endpoint)
        old_name, old_variants = endpoint.endpoint_config_name, endpoint.production_variants
        new_variants = _variants(config.production_variants,
                                 old_variants if retain_all_variant_properties else None)
        if deployment_config or not retain_deployment_config:
            endpoint.last_deployment_config = deployment_config
        pending = {"EndpointConfigName": endpoint_config_name, "StartTime": _now(),
                   "ProductionVariants": [{"VariantName": v["VariantName"]} for v in new_variants]}
        updating = _set(endpoint_status="Updating", pending_deployment_summary=pending)
        reason = _failure("fail_endpoint", endpoint_name, endpoint_config_name)
        if reason:
            ending = [_set(endpoint_status="RollingBack", failure_reason=reason,
                           pending_deployment_summary=None),
                      _set(endpoint_status="InService", endpoint_config_name=old_name,
                           production_variants=old_variants)]
        else:
            ending = [_set(endpoint_status="InService", endpoint_config_name=endpoint_config_name,
                           production_variants=new_variants, pending_deployment_summary=None,
                           failure_reason=None, shadow_production_variants=_shadows(config))]
        _script(endpoint, [updating] * _steps("endpoint") + ending)
        return endpoint.arn

    def update_endpoint_weights_and_capacities(self, endpoint_name,
                                               desired_weights_and_capacities):
        endpoint = _endpoint(self, endpoint_name)
        _require_in_service(endpoint)
        by_name = {v["VariantName"]: v for v in endpoint.production_variants}
        for wanted in desired_weights_and_capacities:
            if wanted.get("VariantName") not in by_name:
                raise AWSValidationException(
                    f'The variant name(s) "{wanted.get("VariantName")}" is/are not present '
                    f'within endpoint configuration "{endpoint.endpoint_config_name}".')
        desired = copy.deepcopy(endpoint.production_variants)
        for wanted in desired_weights_and_capacities:
            variant = next(v for v in desired if v["VariantName"] == wanted["VariantName"])
            if wanted.get("DesiredWeight") is not None:
                variant["DesiredWeight"] = wanted["DesiredWeight"]
            if wanted.get("DesiredInstanceCount") is not None:
                variant["DesiredInstanceCount"] = wanted["DesiredInstanceCount"]
        settled = copy.deepcopy(desired)
        for variant in settled:
            variant["CurrentWeight"] = variant.get("DesiredWeight")
            if "DesiredInstanceCount" in variant:
                variant["CurrentInstanceCount"] = variant["DesiredInstanceCount"]
        _script(endpoint,
                [_set(endpoint_status="Updating", production_variants=desired)]
                * _steps("endpoint")
                + [_set(endpoint_status="InService", production_variants=settled)])
        return endpoint.arn

    def respond_update_endpoint(self):
        arn = self.sagemaker_backend.update_endpoint(
            endpoint_name=self._get_param("EndpointName"),
            endpoint_config_name=self._get_param("EndpointConfigName"),
            deployment_config=self._get_param("DeploymentConfig"),
            retain_all_variant_properties=bool(self._get_param("RetainAllVariantProperties")),
            retain_deployment_config=bool(self._get_param("RetainDeploymentConfig")))
        return ActionResult({"EndpointArn": arn})

    original_respond_config = response_cls.create_endpoint_config

    def respond_create_endpoint_config(self):
        shadows = self._get_param("ShadowProductionVariants") or []
        production = self._get_param("ProductionVariants") or []
        backend = self.sagemaker_backend
        if shadows:
            if len(shadows) != 1 or len(production) != 1:
                raise ValidationError(message=(
                    "When ShadowProductionVariants is given, ProductionVariants and "
                    "ShadowProductionVariants must each hold exactly one variant."))
            backend.validate_production_variants(shadows)     # its Model must exist
            names = [v.get("VariantName") for v in production + shadows]
            if len(set(names)) != len(names):
                raise ValidationError(message="Variant names must be unique across "
                                              "ProductionVariants and ShadowProductionVariants.")
        result = original_respond_config(self)
        if shadows:
            config = backend.endpoint_configs[self._get_param("EndpointConfigName")]
            # FakeEndpointConfig answers every attribute, CamelCased
            config.shadow_production_variants = copy.deepcopy(shadows)
        return result

    backend_cls.create_endpoint = create_endpoint
    response_cls.create_endpoint_config = respond_create_endpoint_config
    backend_cls.describe_endpoint = describe_endpoint
    backend_cls.update_endpoint = update_endpoint
    backend_cls.update_endpoint_weights_and_capacities = update_endpoint_weights_and_capacities
    response_cls.update_endpoint = respond_update_endpoint


def _install_training_jobs(backend_cls, response_cls) -> None:
    """Training jobs: InProgress scripts ending Completed (with `training_metrics`) or
    Failed (`fail_training`), StopTrainingJob, and the request's Environment and
    MetricDefinitions kept as sent."""
    from moto.core.responses import EmptyResult
    from moto.sagemaker.exceptions import ResourceNotFound, ValidationError

    original_create = backend_cls.create_training_job
    original_describe = backend_cls.describe_training_job
    original_respond_create = response_cls.create_training_job

    def create_training_job(self, training_job_name, *args, **kwargs):
        spec = kwargs.get("algorithm_specification") or {}
        sent = spec.get("MetricDefinitions")
        job = original_create(self, training_job_name, *args, **kwargs)
        # moto writes its own "test:dcg" definition into the request's spec: put back what
        # was sent (nothing, when nothing was: AWS then describes none)
        job.algorithm_specification = {k: v for k, v in job.algorithm_specification.items()
                                       if k != "MetricDefinitions"}
        if sent is not None:
            job.algorithm_specification["MetricDefinitions"] = sent
        reason = _failure("fail_training", training_job_name)
        metrics = {k: float(v) for k, v in _setting("training_metrics").items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        metrics.update(tuning.planted(kwargs.get("hyper_parameters"),
                                      _setting("planted_metrics")))

        def completed(job) -> None:
            now = _now()
            _set(training_job_status="Completed", secondary_status="Completed",
                 training_end_time=now,
                 final_metric_data_list=[{"MetricName": k, "Value": v, "Timestamp": now}
                                         for k, v in metrics.items()])(job)

        failed = _set(training_job_status="Failed", secondary_status="Failed",
                      failure_reason=reason, training_end_time=_now(),
                      final_metric_data_list=None)
        running = _set(training_job_status="InProgress", secondary_status="Training",
                       training_end_time=None, final_metric_data_list=None)
        _script(job, [running] * _steps("training_job") + [failed if reason else completed])
        return job

    def describe_training_job(self, training_job_name):
        if training_job_name in self.training_jobs:
            _advance(self.training_jobs[training_job_name])
        return original_describe(self, training_job_name)

    def stop_training_job(self, training_job_name):
        job = self.training_jobs.get(training_job_name)
        if job is None:
            raise ResourceNotFound(f"Could not find training job '{training_job_name}'.")
        if job.training_job_status != "InProgress":
            raise ValidationError(message="The request was rejected because the training job "
                                          f"is in status {job.training_job_status}.")
        _script(job, [_set(training_job_status="Stopping", secondary_status="Stopping")]
                * _steps("training_job")
                + [_set(training_job_status="Stopped", secondary_status="Stopped",
                        training_end_time=_now())])

    def respond_create_training_job(self):
        # moto's response drops Environment before the backend sees it: keep it on the job,
        # where DescribeTrainingJob's answer (built from the job's attributes) returns it
        result = original_respond_create(self)
        environment = self._get_param("Environment")
        job = self.sagemaker_backend.training_jobs.get(self._get_param("TrainingJobName"))
        if job is not None and environment:
            job.environment = dict(environment)
        return result

    def respond_stop_training_job(self):
        self.sagemaker_backend.stop_training_job(self._get_param("TrainingJobName"))
        return EmptyResult()

    backend_cls.create_training_job = create_training_job
    backend_cls.describe_training_job = describe_training_job
    backend_cls.stop_training_job = stop_training_job
    response_cls.create_training_job = respond_create_training_job
    response_cls.stop_training_job = respond_stop_training_job


def _install_model_packages(backend_cls, response_cls) -> None:
    """Model packages: InProgress scripts, versions never reused, DeleteModelPackage and
    DeleteModelPackageGroup."""
    from moto.core.responses import EmptyResult
    from moto.sagemaker.exceptions import ConflictException, ValidationError

    original_create = backend_cls.create_model_package
    original_describe = backend_cls.describe_model_package

    def create_model_package(self, **kwargs):
        group = kwargs.get("model_package_group_name")
        before = dict(self.model_packages)
        arn = original_create(self, **kwargs)
        package = self.model_packages[arn]
        if group:
            with _state_lock:
                key = (self.account_id, self.region_name, group)
                used = [p.model_package_version or 0 for p in before.values()
                        if p.model_package_group_name == group]
                version = max(used + [_versions.get(key, 0)]) + 1
                _versions[key] = version
            if package.model_package_version != version:
                # moto numbered it len+1, maybe over a live package: put that one back.
                if arn in before:
                    self.model_packages[arn] = before[arn]
                else:
                    del self.model_packages[arn]
                arn = f"{arn.rsplit('/', 1)[0]}/{version}"
                package.model_package_version, package.arn = version, arn
                for details in package.model_package_status_details.values():
                    for entry in details:
                        entry["Name"] = arn
                self.model_packages[arn] = package
                self.model_package_name_mapping[arn] = arn
                self.model_package_name_mapping[package.model_package_name] = arn
        _script(package, [_set(model_package_status="InProgress")] * _steps("model_package")
                + [_set(model_package_status="Completed")])
        return arn

    def describe_model_package(self, model_package_name):
        package = original_describe(self, model_package_name)
        _advance(package)
        return package

    def delete_model_package(self, model_package_name):
        arn = self.model_package_name_mapping.get(model_package_name, model_package_name)
        if arn not in self.model_packages:
            raise ValidationError(f"ModelPackage {model_package_name} does not exist.")
        del self.model_packages[arn]
        for alias in [k for k, v in self.model_package_name_mapping.items() if v == arn]:
            del self.model_package_name_mapping[alias]
        with _state_lock:
            _scripts.pop(arn, None)

    def delete_model_package_group(self, group_name):
        if group_name not in self.model_package_groups:
            arn = _arn("model-package-group", group_name, self)
            raise ValidationError(f"ModelPackageGroup {arn} does not exist.")
        held = [p for p in self.model_packages.values() if p.model_package_group_name == group_name]
        if held:
            raise ConflictException(f"Model Package Group {group_name} still holds {len(held)} "
                                    "model package(s); delete them before the group.")
        del self.model_package_groups[group_name]

    def respond_delete_model_package(self):
        self.sagemaker_backend.delete_model_package(self._get_param("ModelPackageName"))
        return EmptyResult()

    def respond_delete_model_package_group(self):
        self.sagemaker_backend.delete_model_package_group(
            self._get_param("ModelPackageGroupName"))
        return EmptyResult()

    backend_cls.create_model_package = create_model_package
    backend_cls.describe_model_package = describe_model_package
    backend_cls.delete_model_package = delete_model_package
    backend_cls.delete_model_package_group = delete_model_package_group
    response_cls.delete_model_package = respond_delete_model_package
    response_cls.delete_model_package_group = respond_delete_model_package_group


def _install_unique_names(backend_cls) -> None:
    """Refuse creating under a name in use, with AWS's error (moto overwrites)."""
    from moto.sagemaker.exceptions import ResourceInUseException, ValidationError

    rules = {  # method: (name parameter, collection, ARN kind, error class, message)
        "create_model": ("model_name", "_models", "model", ValidationError,
                         'Cannot create already existing model "{arn}".'),
        "create_endpoint_config": ("endpoint_config_name", "endpoint_configs", "endpoint-config",
                                   ValidationError, "Cannot create already existing endpoint "
                                                    'configuration "{arn}".'),
        "create_endpoint": ("endpoint_name", "endpoints", "endpoint", ValidationError,
                            'Cannot create already existing endpoint "{arn}".'),
        "create_training_job": ("training_job_name", "training_jobs", "training-job",
                                ResourceInUseException,
                                "Training job names must be unique within an AWS account and "
                                "region, and a training job with this name already exists ({arn})"),
        "create_model_package_group": ("model_package_group_name", "model_package_groups",
                                       "model-package-group", ValidationError,
                                       "Model Package Group already exists: {arn}"),
    }
    for method, rule in rules.items():
        def create(self, *args, _original=getattr(backend_cls, method), _rule=rule, **kwargs):
            param, collection, kind, error, message = _rule
            name = kwargs[param] if param in kwargs else args[0]
            if name in getattr(self, collection):
                raise error(message.format(arn=_arn(kind, name, self)))
            return _original(self, *args, **kwargs)

        setattr(backend_cls, method, create)


def _install_tags(backend_cls) -> None:
    """Tags on every ARN kind mlform uses (model packages included), merge by key."""
    from moto.sagemaker.exceptions import ValidationError

    original_resource = backend_cls._get_resource_from_arn

    def _get_resource_from_arn(self, arn):
        kind = arn.split(":", 5)[-1].split("/", 1)[0]
        try:
            if kind == "model-package":
                resource = self.model_packages.get(self.model_package_name_mapping.get(arn, arn))
            else:
                resource = original_resource(self, arn)
        except (ValueError, AttributeError, KeyError, IndexError):
            resource = None
        if resource is None:
            raise ValidationError(message=f"Resource {arn} does not exist.")
        if getattr(resource, "tags", None) is None:
            resource.tags = []
        return resource

    def add_tags(self, arn, tags):
        resource = self._get_resource_from_arn(arn)
        keys = {tag["Key"] for tag in tags or []}
        resource.tags = [t for t in resource.tags if t["Key"] not in keys] + list(tags or [])
        return resource.tags

    backend_cls._get_resource_from_arn = _get_resource_from_arn
    backend_cls.add_tags = add_tags


def install(calls: Path, control: Path) -> None:
    """Patch moto in this process; call once, before moto's server starts."""
    global _CALLS, _CONTROL
    _CALLS, _CONTROL = calls, control
    from moto.sagemaker.models import SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse

    _install_call_log()
    _install_faults()
    _install_dispatch_caches()
    _install_request_ids()
    _install_unique_names(SageMakerModelBackend)     # first: the wrappers below call these
    _install_endpoints(SageMakerModelBackend, SageMakerResponse)
    _install_training_jobs(SageMakerModelBackend, SageMakerResponse)
    _install_model_packages(SageMakerModelBackend, SageMakerResponse)
    _install_tags(SageMakerModelBackend)
    tuning.install(SageMakerModelBackend, SageMakerResponse, now=_now)
