"""The `endpoint` kind of the `local` provider: one detached model server per endpoint.

Files, under ``<root>/endpoints/<slug of address>/``:

* ``server.json``  the server's spec (models, weights, capture, host, port, admin
  token; mode 0600).  Its path is on the server's command line, which is how
  `processes.is_ours` tells our process from anything else with that pid.
* ``process.json`` pid, host and port of the process we started (and pids of
  replaced ones not yet stopped), written right after the spawn.
* ``server.log``, and ``capture.jsonl`` when `capture` is set (see `capture_path`),
  rotated to ``capture.jsonl.1``, ``.2`` ... by size (and age) and capped in files
  (`EndpointSettings`; the monitors read the rotated files too).

How an apply reaches the planned state (`_converge`, shared by create and update):

* our process is alive, healthy and bound where the plan wants it → **hot path**:
  rewrite the spec and ask the server to reload (`POST /v2/admin/reload`); it loads
  the new versions beside the old ones and swaps atomically, so no request fails.
  A rollout is a list of such reloads (`ROLLOUTS`): a canary serves
  {old: 100-p, new: p} for `bake_seconds`, then promotes to 100% new.
* otherwise (first create, a killed or hung server, a new host/port or torch
  settings) → **new process**: spawn, wait for ready, record it, then stop the old
  one, if any and only if `is_ours` accepts it.  The listening socket uses
  SO_REUSEPORT, so a replacement can take over the same port before the old
  process goes; a port held by anyone else is refused.  A new process serves the
  planned version at once: a rollout splits traffic only within a running server.

The state records `pid` and `port`; `read` asks the server what it serves
(`/v2/admin/status`), so a killed server reads as gone and a server moved to
another version reads as drift.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from mlform.providers.base import (
    UNKNOWN, Desired, Diagnostic, FactKey, Facts, KindSchema, LiveObject, Planned,
    ProgressEvent, ProviderError, contains_unknown, error, warning,
)
from mlform.providers.kit.artifacts import uri_to_path
from mlform.providers.kit.canary import Analysis, Scrape, metric_problem
from mlform.providers.kit.plans import plan_of
from mlform.providers.kit.variants import (
    PRIMARY, endpoint_variants, experiment_of, variant_changes,
)
from mlform.specs import looks_like_address, split_address

from . import gpus, processes
from .clusters import MACHINE
from .env import LocalEnv, LocalHandler, read_json, write_json_atomic
from .models import aliases, artifact_digest, read_meta, registry_dir, version_dir

__all__ = ["EndpointHandler", "EndpointSettings", "endpoint_dir", "capture_path",
           "SERVER_PROGRAM", "TOKEN_HEADER", "ROLLOUTS"]

#: The server program, started by path: it imports nothing of mlform, so the
#: configured interpreter needs only torch, fastapi and uvicorn.
SERVER_PROGRAM = Path(__file__).parent.parent / "kit" / "serving.py"
TOKEN_HEADER = "x-mlform-token"
COMPUTED = ("url", "model_version", "pid", "serving")

#: The artifact files the server loads, by the model's `framework` (any one of them).
ARTIFACT_FILES: dict[str, tuple[str, ...]] = {
    "torch": ("model.pt",), "sklearn": ("model.skops", "model.joblib", "model.pkl"),
    "onnx": ("model.onnx",), "other": ("model.pt",),
}


class EndpointSettings(BaseModel):
    """`settings { }` of a local endpoint."""

    model_config = ConfigDict(extra="forbid")

    torch_threads: int = Field(1, ge=1, le=256,
                               description="torch intra-op threads of the server process "
                                           "(changing it starts a new process).")
    capture_max_mb: int = Field(64, ge=1, le=1_000_000,
                                description="Rotate capture.jsonl when the next request would "
                                            "take it past this many MiB.")
    capture_max_files: int = Field(4, ge=1, le=1000,
                                   description="Capture files kept (capture.jsonl and its rotated "
                                               "capture.jsonl.1, .2, ...); the oldest is deleted.")
    capture_max_age_seconds: int | None = Field(
        None, ge=1, description="Also rotate capture.jsonl once it is this old (no age limit "
                                "when unset).")
    capture_queue: int = Field(10_000, ge=1, le=10_000_000,
                               description="Captured requests that may wait for the capture writer; "
                                           "beyond that they are dropped and counted "
                                           "(mlform_capture_dropped_total), never waited for.")
    workers: int = Field(1, ge=1, le=256,
                         description="Threads that run inference, off the event loop (changing "
                                     "it starts a new process).")
    worker_processes: int = Field(0, ge=0, le=64,
                                  description="Run inference in this many worker processes, each "
                                              "holding the models (0: threads of the server "
                                              "process; changing it starts a new process).")
    max_batch_size: int = Field(1, ge=1, le=65_536,
                                description="Dynamic batching: rows of concurrent requests joined "
                                            "into one forward pass, at most (1: no batching).")
    max_delay_ms: float = Field(5.0, ge=0, le=10_000,
                                description="Dynamic batching: how long a request may wait for "
                                            "others to join its batch.")
    hooks: str | None = Field(None, min_length=1,
                              description="A Python file (relative to the stack) defining "
                                          "preprocess(doc) and/or postprocess(doc, result), run "
                                          "around each inference request.")
    gpu: int | None = Field(None, ge=0, le=1023,
                            description="Serve torch models on this GPU (its NVML index; the "
                                        "server sees only it, as CUDA_VISIBLE_DEVICES); unset: "
                                        "the CPU.  Changing it starts a new process.")
    auth_token: str | None = Field(None, min_length=1,
                                   description="Bearer token the inference and feedback routes "
                                               "require (pass a sensitive variable; never "
                                               "logged).")

    @classmethod
    def of(cls, attrs: Mapping) -> "EndpointSettings":
        """The settings of `attrs`, defaults where unset (the engine checked them already;
        keys of another provider's settings are left out)."""
        raw = attrs.get("settings")
        return cls.model_validate({k: v for k, v in raw.items() if k in cls.model_fields}
                                  if isinstance(raw, Mapping) else {})


def endpoint_dir(env: LocalEnv, address: str) -> Path:
    return env.root / "endpoints" / env.slug(address)


def capture_path(env: LocalEnv, address: str) -> Path:
    """Where the endpoint at `address` appends captured requests (JSON lines)."""
    return endpoint_dir(env, address) / "capture.jsonl"


@dataclass(frozen=True)
class _Files:
    dir: Path

    @property
    def spec(self) -> Path:
        return self.dir / "server.json"

    @property
    def process(self) -> Path:
        return self.dir / "process.json"

    @property
    def log(self) -> Path:
        return self.dir / "server.log"

    @property
    def capture(self) -> Path:
        return self.dir / "capture.jsonl"

    @property
    def marker(self) -> str:
        return str(self.spec)


@dataclass(frozen=True)
class _Running:
    """Our process as found: `status` is its /v2/admin/status answer, None if it gave none."""

    pid: int
    host: str
    port: int
    status: dict | None

    @property
    def healthy(self) -> bool:
        return bool(self.status and self.status.get("ready") and self.status.get("pid") == self.pid)


# ----------------------------------------------------------------- rollouts

Entry = dict          # {"version", "path", "weight"}
Stages = list[list[Entry]]


def _at_once(old: Entry | None, new: Entry, rollout: Mapping) -> Stages:
    return [[{**new, "weight": 100}]]


def _canary(old: Entry | None, new: Entry, rollout: Mapping) -> Stages:
    if old is None or not rollout.get("bake_seconds"):
        return _at_once(old, new, rollout)
    share = int(rollout.get("canary_percent", 10))
    return [[{**old, "weight": 100 - share}, {**new, "weight": share}], [{**new, "weight": 100}]]


def _linear(old: Entry | None, new: Entry, rollout: Mapping) -> Stages:
    if old is None or not rollout.get("bake_seconds"):
        return _at_once(old, new, rollout)
    step = int(rollout.get("step_percent", 10))
    stages = [[{**old, "weight": 100 - share}, {**new, "weight": share}]
              for share in range(step, 100, step)]
    return stages + [[{**new, "weight": 100}]]


#: strategy -> (version served now, version to serve, rollout) -> the splits to go through.
#: Every split is loaded before it takes traffic, so "blue-green" is "all-at-once" here.
ROLLOUTS: dict[str, Callable[[Entry | None, Entry, Mapping], Stages]] = {
    "all-at-once": _at_once,
    "blue-green": _at_once,
    "canary": _canary,
    "linear": _linear,
}


# ----------------------------------------------------------------- small helpers

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # loopback: no proxies


def _http(method: str, url: str, token: str | None = None,
          timeout: float = 2.0) -> tuple[int, Any] | None:
    """(status, JSON body) of a call to our server; None when nothing answered."""
    headers = {TOKEN_HEADER: token} if token else {}
    request = urllib.request.Request(url, method=method, headers=headers,
                                     data=b"" if method == "POST" else None)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (OSError, ValueError):
        return None


def _origin(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _url(host: str, port: int, name: str) -> str:
    return f"{_origin(host, port)}/v2/models/{name}"


def _host_of(url: Any) -> str | None:
    return urlsplit(url).hostname if isinstance(url, str) else None


def _threads(attrs: Mapping) -> tuple[int, int, int, int | None]:
    """What the server process is started with and a reload cannot change: torch threads,
    inference worker threads, worker processes and the GPU."""
    settings = attrs.get("settings")
    settings = settings if isinstance(settings, Mapping) else {}

    def number(key: str, default: int) -> int:
        value = settings.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else default
    gpu = settings.get("gpu")
    return (number("torch_threads", 1), number("workers", 1), number("worker_processes", 0),
            gpu if isinstance(gpu, int) and not isinstance(gpu, bool) else None)


def _gpu_of(attrs: Mapping) -> int | None:
    """`settings.gpu` when it is known."""
    settings = attrs.get("settings")
    gpu = settings.get("gpu") if isinstance(settings, Mapping) else None
    return gpu if isinstance(gpu, int) and not isinstance(gpu, bool) else None


def _gpu_problems(address: str, attrs: Mapping, facts: Facts) -> list[Diagnostic]:
    """A `settings.gpu` this machine does not have (NVML's answer is a fact of the plan)."""
    gpu = _gpu_of(attrs)
    machine = facts.get(MACHINE) if gpu is not None else None
    if machine is None or any(g.index == gpu for g in machine.gpus):
        return []
    have = (f"its GPUs are {', '.join(str(g.index) for g in machine.gpus)} "
            f"({gpus.describe(machine.gpus)})" if machine.gpus
            else f"it has none ({machine.reason})")
    return [error(f"{address} is to be served on GPU {gpu}, but this machine has no GPU {gpu}: "
                  f"{have}", address=address,
                  hint="Set settings.gpu to the index of one of this machine's GPUs "
                       "(nvidia-smi lists them), or leave it unset to serve on the CPU.")]


def _capture(attrs: Mapping, files: _Files) -> dict | None:
    """The server spec's `capture`, as the server's status reports it back."""
    capture = attrs.get("capture")
    if not isinstance(capture, Mapping):
        return None
    settings = EndpointSettings.of(attrs)
    return {"path": str(files.capture), "sample_percent": int(capture.get("sample_percent", 100)),
            "max_bytes": settings.capture_max_mb * 1024 * 1024,
            "max_files": settings.capture_max_files,
            "max_age_seconds": settings.capture_max_age_seconds,
            "queue": settings.capture_queue}


def _main_variant(variants: list[dict]) -> str:
    """The live variant with the largest weight (the first declared on a tie): the one
    whose version is the endpoint's `model_version`."""
    live = [v for v in variants if v["role"] == "live"] or variants
    return max(reversed(live), key=lambda v: v["weight"])["name"]


def _serving(variants: list[dict], versions: Mapping[str, Any]) -> list[dict]:
    """The `serving` attribute: ``[{"version", "weight"}]`` for a single-model endpoint,
    with ``"variant"`` (and ``"role": "shadow"``) for each variant otherwise."""
    if len(variants) == 1 and variants[0]["name"] == PRIMARY:
        return [{"version": versions[PRIMARY], "weight": 100}]
    return [{"variant": v["name"], "version": versions.get(v["name"]), "weight": v["weight"],
             **({"role": "shadow"} if v["role"] == "shadow" else {})} for v in variants]


def _served_versions(attrs: Mapping) -> dict[str, Any]:
    """variant -> version from a prior `serving` attribute."""
    serving = attrs.get("serving")
    if not isinstance(serving, list):
        return {}
    return {str(s.get("variant", PRIMARY)): s.get("version") for s in serving
            if isinstance(s, Mapping)}


def _entries(models: Any) -> list[tuple]:
    """Server spec model entries, comparable (what a reload would change)."""
    if not isinstance(models, list):
        return []
    return [tuple(m.get(k) for k in ("variant", "version", "path", "weight", "role", "framework"))
            for m in models if isinstance(m, Mapping)]


def _file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _main_version(serving: list[dict]) -> Any:
    """The version with the largest share (the newer one on a tie)."""
    if not serving:
        return None
    return max(enumerate(serving), key=lambda iv: (iv[1]["weight"], iv[0]))[1]["version"]


def _write_private(path: Path, doc: Any) -> None:
    """Like write_json_atomic, but owner-only from the first byte: it holds the admin token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _wait_closed(host: str, port: int, seconds: float) -> None:
    """Until nothing accepts connections on host:port, for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while processes.port_open(host, port) and time.monotonic() < deadline:
        time.sleep(0.02)


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ----------------------------------------------------------------- the handler

class EndpointHandler(LocalHandler):
    """`endpoint` resources: an OIP v2 server process per endpoint, hot-reloaded on updates."""

    schema = KindSchema(settings_model=EndpointSettings, computed=COMPUTED)

    # -- facts ----------------------------------------------------------------

    @staticmethod
    def _version_key(model: Any) -> FactKey | None:
        """The fact that says which version `model` resolves to, when the model value does
        not carry it: the model's stage alias in the registry, or a model directory."""
        if isinstance(model, Mapping):
            if "version" in model or not isinstance(model.get("address"), str):
                return None
            return FactKey("endpoint", "alias", (model["address"], model.get("stage")))
        if isinstance(model, str) and looks_like_address(model):
            return FactKey("endpoint", "alias", (model, None))
        if isinstance(model, str):
            return FactKey("endpoint", "directory", (model,))
        return None

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> Sequence[FactKey]:
        keys = []
        for variant in endpoint_variants(desired.attributes):
            model = variant["model"]
            key = None if contains_unknown(model) and not isinstance(model, Mapping) \
                else self._version_key(model)
            if key is not None and key not in keys:
                keys.append(key)
        if _gpu_of(desired.attributes) is not None:
            keys.append(MACHINE)   # the GPU it serves on must be there
        return tuple(keys)

    def read_facts(self, keys: Sequence[FactKey]) -> dict[FactKey, Any]:
        found: dict[FactKey, Any] = {}
        for key in keys:
            if key == MACHINE:
                found[key] = gpus.discover()
            elif key.name == "alias":
                found[key] = self._alias_version(*key.args)
            else:
                path = uri_to_path(key.args[0], self.env.stack_dir)
                found[key] = self._directory_version(path) \
                    if path is not None and path.exists() else UNKNOWN
        return found

    def _alias_version(self, address: str, stage: Any) -> Any:
        """What the model's stage alias points to, else the version last applied."""
        table = aliases(self.env, address)
        if isinstance(stage, str) and stage in table:
            return table[stage]
        stored = read_json(registry_dir(self.env, address) / "resource.json", {})
        return (stored.get("attributes") or {}).get("version") if isinstance(stored, dict) else None

    def _directory_version(self, path: Path) -> Any:
        meta = read_meta(path)
        return meta["version"] if meta and "version" in meta else \
            artifact_digest(path, self.env.digests)[7:19]

    # -- pure half ----------------------------------------------------------

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        attrs, address = desired.attributes, desired.address
        found: list[Diagnostic] = []
        variants = endpoint_variants(attrs)
        for variant in variants:
            model = variant["model"]
            what = address if len(variants) == 1 else f"{address} (variant {variant['name']})"
            approval = model.get("approval") if isinstance(model, Mapping) else None
            if approval == "rejected":
                found.append(error(
                    f"{what} would serve a rejected model version",
                    detail=f"{model.get('address', 'the model')} has approval = \"rejected\".",
                    address=address, hint='Approve the model, or point the endpoint at another one.'))
            elif approval == "pending":
                found.append(warning(f"{what} serves a model version whose approval is pending",
                                     address=address))
            if isinstance(model, str) and not looks_like_address(model) \
                    and uri_to_path(model, self.env.stack_dir) is None:
                found.append(error(f"The local provider cannot serve the model of {what}",
                                   detail=f'"{model}" is not a file:// URI or a path on this machine.',
                                   address=address))
        found += _gpu_problems(address, attrs, facts)
        rollout = attrs.get("rollout") if isinstance(attrs.get("rollout"), Mapping) else {}
        analysis = rollout.get("analysis") if isinstance(rollout.get("analysis"), Mapping) else {}
        for key in analysis.get("metrics") or {}:
            problem = metric_problem(key)
            if problem:
                found.append(error(f"{address}: rollout.analysis.metrics: {problem}",
                                   address=address, hint='Name a metric the server exports at '
                                   '/metrics, e.g. "mlform_request_rows" or '
                                   '\'mlform_requests_total{code="503"}\'.'))
        hooks = EndpointSettings.of(attrs).hooks if not contains_unknown(attrs.get("settings")) \
            else None
        if hooks is not None and not self.env.resolve(hooks).is_file():
            found.append(error(f"{address}: the hooks file {hooks} does not exist",
                               detail=f"looked for {self.env.resolve(hooks)}", address=address,
                               hint="settings.hooks is a .py file relative to the stack "
                                    "directory."))
        replicas = attrs.get("replicas")
        if replicas == 0:
            found.append(error(f"{address}: the local provider cannot scale an endpoint to 0 replicas",
                               address=address, hint="Destroy the endpoint instead."))
        elif isinstance(replicas, int) and replicas > 1:
            found.append(warning(f"{address}: the local provider runs one server process; "
                                 f"replicas = {replicas} is not applied", address=address))
        for ignored in ("autoscaling", "instance_type"):
            if attrs.get(ignored) is not None:
                found.append(warning(f"{address}: {ignored} is not used by the local provider",
                                     address=address))
        return found

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        attrs = dict(desired.attributes)
        before = dict(prior.attributes) if prior is not None else None
        variants = endpoint_variants(attrs)
        versions = {v["name"]: self._planned_version(v["model"], facts) for v in variants}
        version = versions[_main_variant(variants)]
        host = self.env.host
        port = attrs.get("port", before.get("port", UNKNOWN) if before else UNKNOWN)
        new_process = (before is None or _host_of(before.get("url")) != host
                       or before.get("port") != port or _threads(before) != _threads(attrs))
        computed = {
            "port": port,
            "url": UNKNOWN if contains_unknown(port) else _url(host, port, desired.name),
            "model_version": version,
            "pid": UNKNOWN if new_process else before.get("pid"),
            "serving": UNKNOWN if any(contains_unknown(v) for v in versions.values())
            else _serving(variants, versions),
        }
        reasons = self._reasons(attrs, before, version, new_process)
        if before is not None:
            reasons += tuple(variant_changes(before, attrs, versions, _served_versions(before)))
        return plan_of(desired, computed, reasons=reasons)

    @staticmethod
    def _reasons(attrs: Mapping, before: Mapping | None, version: Any, new_process: bool) -> tuple:
        if before is None:
            return ()
        reasons = []
        old = before.get("model_version")
        if not contains_unknown(version) and version != old:
            rollout = attrs.get("rollout") if isinstance(attrs.get("rollout"), Mapping) else {}
            strategy = rollout.get("strategy", "all-at-once")
            how = (f"canary {rollout.get('canary_percent', 10)}% for "
                   f"{rollout.get('bake_seconds', 0)}s, then all"
                   if strategy == "canary" and rollout.get("bake_seconds") else strategy)
            reasons.append(f"serves model version {version} instead of {old} ({how})")
        if new_process:
            reasons.append("needs a new server process (host, port, GPU or torch settings "
                           "changed)")
        return tuple(reasons)

    def _planned_version(self, model: Any, facts: Facts) -> Any:
        """The version the endpoint will serve, as far as plan knows (UNKNOWN while the
        model itself is being re-registered)."""
        if contains_unknown(model) and not isinstance(model, Mapping):
            return UNKNOWN
        if isinstance(model, Mapping) and "version" in model:
            return model["version"]
        key = self._version_key(model)
        return facts[key] if key is not None else None

    # -- what to serve ------------------------------------------------------

    def _targets(self, address: str, attrs: Mapping) -> list[Entry]:
        """Every variant's model version to serve, as server spec entries."""
        return [{**self._target(address, v["model"]), "weight": v["weight"], "variant": v["name"],
                 "role": v["role"]} for v in endpoint_variants(attrs)]

    def _target(self, address: str, model: Any) -> Entry:
        """The model version dir to serve, checked: it exists and is not rejected."""
        key = self._version_key(model)
        version = self._planned_version(model, self.read_facts([key]) if key else {})
        if version is None or contains_unknown(version):
            raise ProviderError(f"{address}: the model version to serve is not known",
                                address=address)
        path: Path | None = None
        if isinstance(model, Mapping) and isinstance(model.get("address"), str):
            path = version_dir(self.env, model["address"], version)
            if not path.exists() and isinstance(model.get("uri"), str):
                path = uri_to_path(model["uri"], self.env.stack_dir)
        elif isinstance(model, str) and looks_like_address(model):
            path = version_dir(self.env, model, version)
        elif isinstance(model, str):
            path = uri_to_path(model, self.env.stack_dir)
        framework = model.get("framework") if isinstance(model, Mapping) else None
        framework = framework if framework in ARTIFACT_FILES else "torch"
        if path is None or not any((path / name).exists() for name in ARTIFACT_FILES[framework]):
            raise ProviderError(f"{address}: no {' or '.join(ARTIFACT_FILES[framework])} for "
                                f"model version {version!r} (looked in {path})", address=address,
                                hint=f'framework = "{framework}" serves those files; set the '
                                     "model's framework to what its artifact holds.")
        meta = read_meta(path) or {}
        if meta.get("approval") == "rejected":
            raise ProviderError(f"{address}: model version {version} is rejected; "
                                "the endpoint will not serve it", address=address)
        return {"version": version, "path": str(path), "framework": framework}

    # -- apply --------------------------------------------------------------

    def create(self, planned: Planned) -> LiveObject:
        return self._converge(planned, None)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        return self._converge(planned, dict(prior.attributes))

    def _converge(self, planned: Planned, prior: dict | None) -> LiveObject:
        address, attrs = planned.address, dict(planned.attributes)
        files = _Files(self.env.area("endpoints", self.env.slug(address)))
        targets = self._targets(address, attrs)
        host, threads = self.env.host, _threads(attrs)
        want_port = attrs.get("port") if isinstance(attrs.get("port"), int) else None
        record = read_json(files.process, {}) or {}
        current = self._running(files, record)
        started = read_json(files.spec, {}) or {}
        if (current is not None and current.healthy and current.host == host
                and want_port in (None, current.port)
                and (current.status.get("torch_threads", 1), started.get("workers", 1),
                     started.get("worker_processes", 0), started.get("gpu")) == threads):
            if len(targets) == 1 and targets[0]["variant"] == PRIMARY:
                self._roll_out(address, files, current, targets[0], attrs)
            settings = self._server_settings(attrs, files)
            served = read_json(files.spec, {}) or {}
            if any(served.get(k) != v for k, v in settings.items()) or (
                    len(targets) > 1 or targets[0]["variant"] != PRIMARY) \
                    and _entries(served.get("models")) != _entries(targets):
                # variants change all at once (each variant is loaded before it takes
                # traffic); settings such as batching or hooks need a reload too
                self._reload(address, files, current, targets, settings)
            pid, port = current.pid, current.port
        else:
            pid, port = self._start(address, files, targets, attrs, want_port, current, record)
        # Stop what this endpoint left running before (a replaced or crashed-over process).
        leftovers = {record.get("pid"), *record.get("retired", ()), (prior or {}).get("pid")} - {pid}
        for old in leftovers:
            processes.stop(old, files.marker)
        now = read_json(files.process, {}) or {}
        write_json_atomic(files.process, {"pid": pid, "host": host, "port": port,
                                          "started": now.get("started")})
        variants = endpoint_variants(attrs)
        versions = {t["variant"]: t["version"] for t in targets}
        live = {**attrs, "port": port, "url": _url(host, port, planned.name), "pid": pid,
                "model_version": versions[_main_variant(variants)],
                "serving": _serving(variants, versions)}
        spec = read_json(files.spec, {})
        _write_private(files.spec, {**spec, "resource": live})
        return LiveObject(address, planned.kind, self.env.object_id(address), live)

    def _running(self, files: _Files, record: Mapping) -> _Running | None:
        """Our recorded process, if alive (healthy or not); None when there is none."""
        pid = record.get("pid")
        if not processes.is_ours(pid, files.marker):
            return None
        host, port = record.get("host"), record.get("port")
        answer = _http("GET", f"{_origin(host, port)}/v2/admin/status") if host and port else None
        status = answer[1] if answer and answer[0] == 200 and isinstance(answer[1], dict) else None
        return _Running(pid, host, port, status)

    def _server_settings(self, attrs: Mapping, files: _Files) -> dict:
        """The server spec's keys besides models, host and port: capture, experiment,
        threads and workers, batching, hooks (with a digest of the file, so an edited
        hook reloads) and the bearer token."""
        settings = EndpointSettings.of(attrs)
        experiment = experiment_of(attrs)
        if experiment is not None:
            experiment = {**experiment, "state_path": str(files.dir / "bandit.json"),
                          "feedback_path": str(files.dir / "feedback.jsonl")}
        hooks = self.env.resolve(settings.hooks) if settings.hooks else None
        return {"capture": _capture(attrs, files), "experiment": experiment,
                "torch_threads": settings.torch_threads, "workers": settings.workers,
                "worker_processes": settings.worker_processes, "gpu": settings.gpu,
                "device": "cpu" if settings.gpu is None else "cuda",
                "max_batch_size": settings.max_batch_size, "max_delay_ms": settings.max_delay_ms,
                "hooks": str(hooks) if hooks else None,
                "hooks_digest": _file_digest(hooks) if hooks else None,
                "auth_token": settings.auth_token}

    # -- hot path -----------------------------------------------------------

    def _roll_out(self, address: str, files: _Files, running: _Running, target: Entry,
                  attrs: Mapping) -> None:
        """Reload the running server through the rollout's splits, baking between them."""
        capture = _capture(attrs, files)
        served = [dict(v) for v in running.status.get("versions", [])]
        final = [{**target, "weight": 100}]
        if [(v["version"], v["path"], v["weight"]) for v in served] == \
                [(v["version"], v["path"], v["weight"]) for v in final] \
                and running.status.get("capture") == capture:
            return      # already serving exactly this: an update is idempotent
        others = [v for v in served if v["version"] != target["version"]]
        old = max(others, key=lambda v: v["weight"]) if others else None
        if old is not None:
            # the old version's entry as the spec has it (framework, variant), else the basics
            spec_models = (read_json(files.spec, {}) or {}).get("models") or []
            old = next(({k: v for k, v in m.items() if k != "weight"} for m in spec_models
                        if isinstance(m, Mapping) and m.get("version") == old["version"]
                        and m.get("path") == old["path"]),
                       {"version": old["version"], "path": old["path"]})
        rollout = attrs.get("rollout") if isinstance(attrs.get("rollout"), Mapping) else {}
        stages = ROLLOUTS[rollout.get("strategy", "all-at-once")](old, target, rollout)
        analysis = self._canary_analysis(rollout, target) if len(stages) > 1 else None
        for number, models in enumerate(stages, start=1):
            settings = self._server_settings(attrs, files)
            self._reload(address, files, running, models, settings)
            if number < len(stages):
                self._bake(address, files, running, models, int(rollout.get("bake_seconds", 0)),
                           analysis)
                if analysis is not None and analysis.rollback:
                    self._roll_back(address, files, running, old, settings, analysis)
        if analysis is not None:
            self._progress(address, analysis.summary(), _origin(running.host, running.port))

    def _reload(self, address: str, files: _Files, running: _Running, models: list[Entry],
                settings: dict) -> None:
        """Rewrite the spec with `models` and `settings` (`_server_settings`) and have the
        running server load it; returns once it serves the new generation."""
        spec = self._write_spec(files, address, running.host, running.port, models, settings)
        origin = _origin(running.host, running.port)
        answer = _http("POST", f"{origin}/v2/admin/reload", token=spec["token"], timeout=10)
        if answer is None or answer[0] != 202:
            raise ProviderError(f"{address}: the server refused to reload",
                                service_message=json.dumps(answer[1]) if answer else "no answer",
                                address=address, retryable=True)
        self._wait(address, files, running.pid, running.host, running.port, spec["generation"],
                   "waiting for the server to load the new model version")

    def _bake(self, address: str, files: _Files, running: _Running, models: list[Entry],
              seconds: int, analysis: Any = None) -> None:
        """Watch a split for `seconds`: the server must stay healthy (polled each second).
        With a canary `analysis` (kit/canary.py `Analysis`), /metrics is scraped every
        `interval_seconds` and the new version's own traffic judged, then the whole bake
        once more at its end; the bake ends early once the analysis says roll back."""
        split = ", ".join(f"version {m['version']} {m['weight']}%" for m in models)
        origin = _origin(running.host, running.port)
        self._progress(address, f"baking for {seconds}s: {split}", origin)
        first = last = self._scrape(origin) if analysis is not None else None
        deadline = time.monotonic() + seconds
        due = time.monotonic() + analysis.interval if analysis is not None else float("inf")
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(max(0.0, min(1.0, left, due - time.monotonic())))
            again = self._running(files, {"pid": running.pid, "host": running.host,
                                          "port": running.port})
            if again is None or not again.healthy:
                raise ProviderError(f"{address}: the server stopped answering during the rollout "
                                    f"({split})", address=address, retryable=True,
                                    service_message=_log_tail(files.log))
            if time.monotonic() >= due:
                due += analysis.interval
                scrape = self._scrape(origin)
                if scrape is not None:      # a missed scrape: the next check covers its span
                    self._judge(address, origin, analysis, last, scrape, "interval")
                    last = scrape
                    if analysis.rollback:
                        return
        if analysis is not None and (scrape := self._scrape(origin)) is not None:
            # the whole bake is judged too: a canary too quiet for any one interval
            # (every check skipped) is still judged on all of its traffic
            self._judge(address, origin, analysis, first, scrape, "bake")

    def _judge(self, address: str, origin: str, analysis: Any, before: Any, now: Any,
               span: str) -> None:
        check = analysis.check(before, now, span)
        self._progress(address, f"canary version {analysis.version} analysis: {check.describe()}",
                       f"{origin}/metrics")

    def _roll_back(self, address: str, files: _Files, running: _Running, old: Entry,
                   settings: dict, analysis: Any) -> None:
        """Serve only `old` again (the same hot reload: no request fails), then fail the
        apply with the measured values."""
        summary = analysis.summary()
        self._progress(address, f"{summary}; rolling back to version {old['version']}",
                       _origin(running.host, running.port))
        self._reload(address, files, running, [{**old, "weight": 100}], settings)
        raise ProviderError(f"{address}: {summary}; rolled back to version {old['version']}",
                            address=address, service_message=json.dumps(analysis.as_dict()))

    @staticmethod
    def _canary_analysis(rollout: Mapping, target: Entry) -> Any:
        """The rollout's canary `Analysis` of the target version; None without `analysis`."""
        spec = rollout.get("analysis")
        return Analysis(spec, target["version"]) if isinstance(spec, Mapping) else None

    @staticmethod
    def _scrape(origin: str) -> Any:
        """The server's /metrics, parsed (kit/canary.py `Scrape`); None when unreadable."""
        try:
            with _OPENER.open(f"{origin}/metrics", timeout=2) as response:
                return Scrape.parse(response.read().decode())
        except (OSError, ValueError):
            return None

    # -- new process --------------------------------------------------------

    def _start(self, address: str, files: _Files, targets: list[Entry], attrs: Mapping,
               want_port: int | None, current: _Running | None, record: Mapping) -> tuple[int, int]:
        """Spawn a server, wait until it is ready, and return (pid, port).

        The old process, if any, keeps serving until the new one is ready; the
        caller stops it afterwards."""
        host = self.env.host
        ours = {(current.host, current.port)} if current is not None else set()

        def usable(port: Any) -> bool:
            return isinstance(port, int) and ((host, port) in ours or not processes.port_open(host, port))

        if want_port is not None:
            if not usable(want_port):
                raise ProviderError(f"{address}: port {want_port} on {host} is in use by another "
                                    "program", address=address)
            candidates = [want_port]
        else:
            # Keep the endpoint's URL across restarts when its old port is still free.
            previous = record.get("port") if record.get("host") == host else None
            if current is None and isinstance(previous, int):
                # Our server there just died (killed): its listening socket can outlive
                # the process by a few ms, so give the port a moment before moving on.
                _wait_closed(host, previous, seconds=2.0)
            first = previous if usable(previous) else processes.free_port(host)
            candidates = [first, processes.free_port(host), processes.free_port(host)]
        models = targets
        failure = ""
        for port in candidates:
            spec = self._write_spec(files, address, host, port, models,
                                    self._server_settings(attrs, files))
            gpu = spec.get("gpu")
            # the server sees its own GPU only (as "cuda"), or none: a CPU server must not
            # take memory on a GPU a training run was handed
            pid = processes.spawn([self.env.python, str(SERVER_PROGRAM), files.marker], files.log,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1",
                                       "CUDA_VISIBLE_DEVICES": "" if gpu is None else str(gpu)},
                                  cwd=files.dir)
            # Recorded before the wait: a crash from here on still knows what to stop.
            retired = [p for p in {record.get("pid"), *record.get("retired", ())} if p]
            write_json_atomic(files.process, {"pid": pid, "host": host, "port": port,
                                              "started": time.time(), "retired": retired})
            try:
                self._wait(address, files, pid, host, port, spec["generation"],
                           "waiting for the server to be ready")
                return pid, port
            except _Exited as exc:
                failure = str(exc)      # most likely the port was taken meanwhile: next one
            except ProviderError:
                processes.stop(pid, files.marker)
                self._restore(files, record)
                raise
        self._restore(files, record)
        raise ProviderError(f"{address}: the server did not start", service_message=failure,
                            address=address, retryable=True)

    @staticmethod
    def _restore(files: _Files, record: Mapping) -> None:
        if record:
            write_json_atomic(files.process, dict(record))
        else:
            files.process.unlink(missing_ok=True)

    def _write_spec(self, files: _Files, address: str, host: str, port: int,
                    models: list[Entry], settings: dict) -> dict:
        old = read_json(files.spec, {}) or {}
        spec = {**old, **settings, "address": address, "name": self._name(address, old),
                "host": host, "port": port, "token": old.get("token") or secrets.token_urlsafe(24),
                "generation": int(old.get("generation", 0)) + 1, "models": models}
        _write_private(files.spec, spec)
        return spec

    @staticmethod
    def _name(address: str, old: Mapping) -> str:
        """The model name in the URL: the endpoint's block name."""
        return split_address(address)[-1].split("[", 1)[0] or old.get("name", "model")

    def _wait(self, address: str, files: _Files, pid: int, host: str, port: int,
              generation: int, message: str) -> dict:
        """Until `pid` answers ready with `generation` loaded; raises on failure or timeout."""
        origin = _origin(host, port)
        self._progress(address, message, f"{origin}/v2/health/ready")
        deadline = time.monotonic() + self.env.ready_timeout
        pause = 0.02
        while time.monotonic() < deadline:
            if not processes.is_ours(pid, files.marker):
                raise _Exited(_log_tail(files.log) or f"process {pid} exited")
            answer = _http("GET", f"{origin}/v2/admin/status", timeout=2)
            status = answer[1] if answer and answer[0] == 200 else None
            # With SO_REUSEPORT the old process may answer too: only `pid` counts.
            if isinstance(status, dict) and status.get("pid") == pid:
                if status.get("ready") and status.get("generation") == generation:
                    return status
                problem = status.get("error") or {}
                if problem.get("generation") == generation:
                    message = problem.get("message", "")
                    hooks = "hooks" in message.split(":", 1)[0]
                    raise ProviderError(
                        f"{address}: the server could not load "
                        + ("its hooks" if hooks else "the model"),
                        service_message=message, address=address,
                        hint=(f"The hook's traceback is in {files.log}; the version served "
                              "before keeps serving." if hooks else
                              f"The server's log is {files.log}; the version served before "
                              "keeps serving."))
            time.sleep(pause)
            pause = min(pause * 1.5, 0.25)
        raise ProviderError(f"{address}: the server was not ready within "
                            f"{self.env.ready_timeout:g}s", service_message=_log_tail(files.log),
                            address=address, retryable=True)

    def _progress(self, address: str, message: str, waiting_on: str) -> None:
        try:
            self.env.context.progress(ProgressEvent(address, message, waiting_on=waiting_on))
        except Exception:
            pass    # a broken progress renderer must not fail the apply

    # -- read / delete ------------------------------------------------------

    def read(self, prior: LiveObject) -> LiveObject | None:
        files = _Files(endpoint_dir(self.env, prior.address))
        record = read_json(files.process, {}) or {}
        spec = read_json(files.spec, {}) or {}
        running = self._running(files, record)
        if running is None or not running.healthy:
            return None
        base = dict(prior.attributes) or dict(spec.get("resource") or {})
        if not base:
            return None
        served = [v for v in running.status.get("versions", []) if isinstance(v, Mapping)]
        # "versions" lists what answers callers; a shadow variant is only in "variants"
        served += [{"variant": v.get("name"), "version": v.get("version"), "weight": 0,
                    "role": "shadow"} for v in running.status.get("variants") or ()
                   if isinstance(v, Mapping) and v.get("role") == "shadow"]
        if all(v.get("variant", PRIMARY) == PRIMARY for v in served):
            serving = [{"version": v["version"], "weight": v["weight"]} for v in served]
            main = _main_version(serving)
        else:
            variants = endpoint_variants(base)
            declared = {v["name"]: v["weight"] for v in variants}
            bandit = (experiment_of(base) or {}).get("type") == "bandit"
            # A bandit moves its variants' weights itself: those are service-managed, so
            # the state keeps the declared weights (the live ones are in the metrics and
            # `mlform experiment report`); a version or a variant that changed is drift.
            serving = [{"variant": v.get("variant"), "version": v["version"],
                        "weight": declared.get(v.get("variant"), v["weight"]) if bandit
                        else v["weight"], **({"role": "shadow"} if v.get("role") == "shadow" else {})}
                       for v in served]
            order = {v["name"]: i for i, v in enumerate(variants)}    # as `plan` lists them
            serving.sort(key=lambda s: order.get(s["variant"], len(order)))
            versions = {s["variant"]: s["version"] for s in serving}
            main = versions.get(_main_variant(variants)) if variants else None
        live = {**base, "port": running.port, "pid": running.pid, "serving": serving,
                "url": _url(running.host, running.port, spec.get("name") or self._name(prior.address, {})),
                "model_version": main}
        captured = running.status.get("capture")
        if captured is None:
            live.pop("capture", None)
        elif not isinstance(base.get("capture"), Mapping) \
                or base["capture"].get("sample_percent", 100) != captured.get("sample_percent"):
            live["capture"] = {**(base.get("capture") or {}),
                               "sample_percent": captured.get("sample_percent")}
        return LiveObject(prior.address, prior.kind, self.env.object_id(prior.address), live)

    def action(self, live: LiveObject, name: str, args: dict) -> dict:
        """`mlform experiment report|step`: the endpoint's variants, captured requests and
        rewards (`experiments.action`)."""
        from .experiments import action
        return action(self.env, live, name, args or {})

    def delete(self, prior: LiveObject) -> None:
        files = _Files(endpoint_dir(self.env, prior.address))
        record = read_json(files.process, {}) or {}
        for pid in {record.get("pid"), *record.get("retired", ()), prior.attributes.get("pid")}:
            # `stop` signals only a live process whose command line names this spec file.
            processes.stop(pid, files.marker)
        shutil.rmtree(files.dir, ignore_errors=True)


class _Exited(Exception):
    """The server process ended before it was ready (the message is its log's tail)."""

