"""Computed attributes of the memory provider, one `KindRules` entry per kind.

Each entry holds what the provider declares (`KindSchema`) and two functions:

* ``plan(scope, address, attributes, prior)`` - pure: the computed attributes
  as far as plan can know them, `UNKNOWN` where only apply can (a new run id,
  a new model version), plus display reasons;
* ``realize(scope, address, attributes, apply)`` - at create/update: concrete
  values for the computed attributes the plan left `UNKNOWN`.  Its only side
  effect is through ``apply.next_counter`` (run and version numbers), and a
  failing pipeline gate raises before that, so a failed gate makes nothing.

The provider dispatches through `RULES`; no if/elif over kinds.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping  # not typing.Mapping: isinstance on it is ~5x slower
from typing import Any, Callable

from mlform.providers.base import UNKNOWN, contains_unknown
from mlform.providers.base import AnySettings, KindSchema, ProviderError

from .trees import to_plain

__all__ = ["Scope", "ApplyContext", "PlanResult", "KindRules", "RULES", "FileFacts",
           "ContentDigests", "check_gate"]

Attributes = Mapping[str, Any]


# -- inputs and outputs ------------------------------------------------------

@dataclass(frozen=True)
class FileFacts:
    digest: str   # sha256 hex of the content
    size: int
    lines: int


class ContentDigests:
    """sha256, size and line count of files, cached by (path, size, mtime).

    Plan hashes every dataset source; the cache keeps repeated plans cheap.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple, FileFacts] = {}
        self._lock = threading.Lock()

    def of(self, path: Path) -> FileFacts | None:
        """Facts of a regular file, or None when `path` is not one."""
        try:
            st = path.stat()
        except (OSError, ValueError):  # ValueError: a NUL byte in a "path"
            return None
        if not path.is_file():
            return None
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        facts = _hash_file(path)
        with self._lock:
            self._cache[key] = facts
        return facts


def _hash_file(path: Path) -> FileFacts:
    digest, size, lines, last = hashlib.sha256(), 0, 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":  # a last line without a newline still counts
        lines += 1
    return FileFacts(digest.hexdigest(), size, lines)


@dataclass(frozen=True)
class Scope:
    """Where the provider runs: names that go into URIs, and the stack directory."""

    stack: str
    env: str
    stack_dir: Path
    files: ContentDigests = field(default_factory=ContentDigests, compare=False)

    def uri(self, *parts: str) -> str:
        return "memory://" + "/".join((self.stack, self.env) + parts)


@dataclass(frozen=True)
class ApplyContext:
    """What `realize` may use at create/update time."""

    id: str
    existing: Attributes | None                 # stored attributes, if the object exists
    next_counter: Callable[[str, int], int]     # (key, at_least) -> next value, persisted


@dataclass(frozen=True)
class PlanResult:
    computed: dict[str, Any]
    reasons: tuple[str, ...] = ()


PlanFn = Callable[[Scope, str, Attributes, "Attributes | None"], PlanResult]
RealizeFn = Callable[[Scope, str, Attributes, ApplyContext], dict[str, Any]]


@dataclass(frozen=True)
class KindRules:
    schema: KindSchema
    plan: PlanFn
    realize: RealizeFn


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(to_plain(value), sort_keys=True)


def _replan(plan: PlanFn) -> RealizeFn:
    """Realize by computing again from the (now more known) planned attributes."""
    def realize(scope: Scope, address: str, attrs: Attributes, apply: ApplyContext) -> dict:
        return plan(scope, address, attrs, None).computed
    return realize


# -- dataset -----------------------------------------------------------------

def _source_file(scope: Scope, source: str) -> Path | None:
    if "://" in source or not source:
        return None
    path = Path(source).expanduser()
    return path if path.is_absolute() else Path(scope.stack_dir) / path


def _plan_dataset(scope: Scope, address: str, attrs: Attributes, prior: Attributes | None) -> PlanResult:
    computed: dict[str, Any] = {"uri": scope.uri("dataset", address)}
    source, fmt = attrs.get("source"), attrs.get("format")
    if contains_unknown(source):
        computed.update(digest=UNKNOWN, rows=UNKNOWN, bytes=UNKNOWN)
        return PlanResult(computed)
    path = _source_file(scope, source) if isinstance(source, str) else None
    facts = scope.files.of(path) if path is not None else None
    if facts is None:
        # not a file here (a URI, another provider's object): identify by the string
        text = "" if source is None else _canonical(source)
        computed.update(digest=_sha256(text), bytes=len(text.encode("utf-8")), rows=0)
        return PlanResult(computed)
    if fmt is UNKNOWN:
        is_csv: Any = UNKNOWN
    else:
        is_csv = fmt.lower() == "csv" if isinstance(fmt, str) else path.suffix.lower() == ".csv"
    rows = UNKNOWN if is_csv is UNKNOWN else (max(facts.lines - 1, 0) if is_csv else 0)
    computed.update(digest=facts.digest, bytes=facts.size, rows=rows)
    return PlanResult(computed)


# -- training_cluster --------------------------------------------------------

def _plan_cluster(scope: Scope, address: str, attrs: Attributes, prior: Attributes | None) -> PlanResult:
    per_node, nodes = attrs.get("gpus_per_node"), attrs.get("nodes")
    if per_node is UNKNOWN or nodes is UNKNOWN:
        return PlanResult({"gpus_total": UNKNOWN})
    per_node = per_node if isinstance(per_node, (int, float)) else 0
    nodes = nodes if isinstance(nodes, (int, float)) else 1
    return PlanResult({"gpus_total": per_node * nodes})


# -- pipeline ----------------------------------------------------------------

_RUN_OUTPUTS = ("run_id", "model_uri", "metrics")


def _plan_pipeline(scope: Scope, address: str, attrs: Attributes, prior: Attributes | None) -> PlanResult:
    fingerprint = attrs.get("fingerprint")
    stale = prior.get("stale") if prior is not None else None
    rerun = (prior is None or fingerprint is UNKNOWN or stale not in (None, False)
             or prior.get("fingerprint") != fingerprint or prior.get("run_id") is None)
    if not rerun:
        return PlanResult({**{key: prior.get(key) for key in _RUN_OUTPUTS}, "stale": None})
    reasons = (f"re-run requested: {stale}",) if stale not in (None, False) else ()
    return PlanResult({**{key: UNKNOWN for key in _RUN_OUTPUTS}, "stale": None}, reasons)


def check_gate(address: str, gate: Any, metrics: Mapping[str, Any]) -> None:
    """Raise when a metric misses the gate's bounds (`gate` = {metric, min?, max?})."""
    if not isinstance(gate, Mapping) or not isinstance(gate.get("metric"), str):
        return
    metric = gate["metric"]
    value = metrics.get(metric)
    if not isinstance(value, (int, float)):
        raise ProviderError(f"gate failed: metric {metric!r} was not reported",
                            address=address)
    low, high = gate.get("min"), gate.get("max")
    if isinstance(low, (int, float)) and value < low:
        raise ProviderError(f"gate failed: {metric} {value:.2f} < min {low:.2f}", address=address)
    if isinstance(high, (int, float)) and value > high:
        raise ProviderError(f"gate failed: {metric} {value:.2f} > max {high:.2f}", address=address)


def _realize_pipeline(scope: Scope, address: str, attrs: Attributes, apply: ApplyContext) -> dict:
    if attrs.get("run_id") is not UNKNOWN:
        return {}  # plan kept the previous run: nothing to run
    settings = attrs.get("settings")
    metrics = settings.get("metrics") if isinstance(settings, Mapping) else None
    if not isinstance(metrics, Mapping) or contains_unknown(metrics):
        metrics = {"accuracy": 1.0}
    metrics = to_plain(metrics)
    check_gate(address, attrs.get("gate"), metrics)   # before anything is counted or stored
    fingerprint = attrs.get("fingerprint")
    fingerprint = "" if fingerprint is None or contains_unknown(fingerprint) else _canonical(fingerprint)
    # The first run of a fingerprint has the documented id; a re-run of the same
    # fingerprint (a stale pipeline) must still be a new run, so later ones add a count.
    number = apply.next_counter(f"{apply.id}#run:{fingerprint}", 0)
    seed = address + fingerprint + ("" if number == 1 else f"#{number}")
    run_id = "run-" + _sha256(seed)[:12]
    return {"run_id": run_id, "model_uri": scope.uri("artifacts", address, run_id),
            "metrics": metrics, "stale": None}


# -- model -------------------------------------------------------------------

def _plan_model(scope: Scope, address: str, attrs: Attributes, prior: Attributes | None) -> PlanResult:
    artifact = attrs.get("artifact")
    if (prior is None or contains_unknown(artifact) or prior.get("artifact") != artifact
            or prior.get("version") is None):
        return PlanResult({"version": UNKNOWN, "uri": UNKNOWN})
    return PlanResult({"version": prior.get("version"), "uri": prior.get("uri")})


def _realize_model(scope: Scope, address: str, attrs: Attributes, apply: ApplyContext) -> dict:
    computed: dict[str, Any] = {}
    version = attrs.get("version")
    if version is UNKNOWN:
        # never below what a hand-written store already shows for this object
        seen = (apply.existing or {}).get("version")
        version = apply.next_counter(f"{apply.id}#version", seen if isinstance(seen, int) else 0)
        computed["version"] = version
    if attrs.get("uri") is UNKNOWN:
        computed["uri"] = scope.uri("model", address, f"v{version}")
    return computed


# -- endpoint ----------------------------------------------------------------

def _plan_endpoint(scope: Scope, address: str, attrs: Attributes, prior: Attributes | None) -> PlanResult:
    model = attrs.get("model")
    if model is UNKNOWN:
        model_version: Any = UNKNOWN
    elif isinstance(model, Mapping) and "version" in model:
        model_version = model["version"]
    else:
        model_version = None
    return PlanResult({"url": scope.uri("endpoint", address), "model_version": model_version})


# -- monitor -----------------------------------------------------------------

def _plan_monitor(scope: Scope, address: str, attrs: Attributes, prior: Attributes | None) -> PlanResult:
    # a breach is reported by the service (or written into the store by hand): keep it
    if prior is None:
        return PlanResult({"breached": False, "last_report": None})
    return PlanResult({"breached": prior.get("breached", False),
                       "last_report": prior.get("last_report")})


# -- the table ---------------------------------------------------------------

def _schema(replace: tuple[str, ...], computed: tuple[str, ...]) -> KindSchema:
    return KindSchema(settings_model=AnySettings, replace_paths=replace, computed=computed)


RULES: Mapping[str, KindRules] = {
    "dataset": KindRules(_schema(("format",), ("uri", "digest", "rows", "bytes")),
                         _plan_dataset, _replan(_plan_dataset)),
    "training_cluster": KindRules(_schema(("accelerator",), ("gpus_total",)),
                                  _plan_cluster, _replan(_plan_cluster)),
    "pipeline": KindRules(_schema((), ("run_id", "model_uri", "metrics", "stale")),
                          _plan_pipeline, _realize_pipeline),
    "model": KindRules(_schema(("framework",), ("version", "uri")),
                       _plan_model, _realize_model),
    "endpoint": KindRules(_schema(("settings.region",), ("url", "model_version")),
                          _plan_endpoint, _replan(_plan_endpoint)),
    "monitor": KindRules(_schema((), ("breached", "last_report")),
                         _plan_monitor, _replan(_plan_monitor)),
}
