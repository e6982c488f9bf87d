"""Experiment actions of the `local` provider's endpoints (`mlform experiment report|step`).

`action(env, live, name, args)` answers `EndpointHandler.action`:

* ``experiment_records``: what the report is computed from, in the shared shape
  (``{"experiment", "variants", "captures", "feedback"}``): the experiment and the
  variants from the server's spec (``server.json``), the variants' current weights from
  the running server's ``/v2/admin/status`` when it answers (a bandit moves them), the
  capture lines of ``capture.jsonl`` and its rotated files, oldest first, and the
  feedback lines of ``feedback.jsonl``.  Captured ``inputs`` are left out (the report
  never looks at them, and they are most of a capture's bytes), and so are ``outputs``
  unless the experiment is a shadow (the report compares its answers with the live ones).
  ``served`` says whether the weights are the running server's (else the spec's).
* ``experiment_step``: the local server moves a bandit's weights itself on every
  feedback, so a step changes nothing; it answers with the weights now.

A line the server is still writing (no newline yet) and a corrupt line are skipped.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlform.providers.base import LiveObject, ProviderError
from mlform.providers.kit.experiment_records import (
    CAPTURE_FIELDS, json_objects, pick,
)
from mlform.providers.kit.monitor_check import capture_files, read_json
from mlform.providers.kit.variants import PRIMARY

from .endpoints import endpoint_dir
from .env import LocalEnv

__all__ = ["action", "records", "read_lines"]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # loopback: no proxies


def action(env: LocalEnv, live: LiveObject, name: str, args: dict) -> dict:
    if name == "experiment_records":
        return records(env, live)
    if name == "experiment_step":
        return step(env, live)
    raise NotImplementedError(name)


def read_lines(path: Path, fields: tuple[str, ...] | None = None) -> list[dict]:
    """The JSON-object lines of `path` (only `fields` of each when given); a missing file
    is empty, a torn last line and corrupt lines are skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ProviderError(f"cannot read {path}: {exc.strerror}", retryable=True) from None
    return [pick(doc, fields) for doc in json_objects(data)]


def _spec(env: LocalEnv, live: LiveObject) -> tuple[Path, dict]:
    folder = endpoint_dir(env, live.address)
    spec = read_json(folder / "server.json")
    if not isinstance(spec, dict):
        raise ProviderError(f"{live.address} has no local server files: run mlform apply to "
                            f"create it first", address=live.address,
                            service_message=f"{folder / 'server.json'} does not exist.")
    return folder, spec


def _status(folder: Path) -> dict | None:
    """The running server's /v2/admin/status, None when none answers."""
    record = read_json(folder / "process.json", {}) or {}
    host, port = record.get("host"), record.get("port")
    if not host or not port:
        return None
    origin = f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"
    try:
        with _OPENER.open(f"{origin}/v2/admin/status", timeout=2.0) as response:
            doc = json.loads(response.read() or b"null")
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return doc if isinstance(doc, dict) and doc.get("ready") else None


def _variants(entries: Any) -> list[dict]:
    """``[{"name", "version", "weight", "role"}]`` of the spec's models (or of the
    status's ``variants``, already in that shape)."""
    found = []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, Mapping):
            found.append({"name": str(entry.get("name") or entry.get("variant") or PRIMARY),
                          "version": entry.get("version"),
                          "weight": entry.get("weight", 0),
                          "role": entry.get("role") or "live"})
    return found


def _served(status: Mapping) -> list[dict]:
    """The variants a running server reports, with their shares now (a bandit's)."""
    return _variants(status.get("variants") or status.get("versions"))


def _weights(variants: list[dict]) -> dict[str, float]:
    """Variant name -> its share in percent (the versions of one variant added up)."""
    shares: dict[str, float] = {}
    for v in variants:
        shares[v["name"]] = shares.get(v["name"], 0) + (v["weight"] or 0)
    return shares


def records(env: LocalEnv, live: LiveObject) -> dict:
    folder, spec = _spec(env, live)
    variants = _variants(spec.get("models"))
    status = _status(folder)
    if status is not None:
        served = _served(status)
        # the server's own weights win: a bandit has moved them since the spec was written
        if {(v["name"], v["version"]) for v in served} == {(v["name"], v["version"]) for v in variants}:
            variants = served
    experiment = spec.get("experiment") if isinstance(spec.get("experiment"), Mapping) else None
    capture = (spec.get("capture") or {}).get("path") if isinstance(spec.get("capture"), Mapping) \
        else None
    fields = CAPTURE_FIELDS + (("outputs",) if (experiment or {}).get("type") == "shadow" else ())
    captures: list[dict] = []
    for path in capture_files(Path(capture) if capture else folder / "capture.jsonl"):
        captures += read_lines(path, fields)
    feedback_path = (experiment or {}).get("feedback_path") or folder / "feedback.jsonl"
    return {"experiment": dict(experiment) if experiment else None, "variants": variants,
            "captures": captures, "feedback": read_lines(Path(feedback_path)),
            "served": status is not None}


def step(env: LocalEnv, live: LiveObject) -> dict:
    folder, spec = _spec(env, live)
    status = _status(folder)
    if status is None:
        raise ProviderError(f"{live.address}: its server is not running, so there are no "
                            f"weights to step", address=live.address,
                            service_message="run mlform apply to start it")
    weights = _weights(_served(status))
    experiment = spec.get("experiment") if isinstance(spec.get("experiment"), Mapping) else None
    kind = (experiment or {}).get("type")
    why = ("the local server moves a bandit's weights itself on every feedback"
           if kind == "bandit" else
           f"{live.address} runs no bandit ({kind or 'no experiment'}): its weights are the spec's")
    now = ", ".join(f"{name} {share:g}%" for name, share in weights.items())
    return {"summary": f"{live.address}: nothing to step: {why}. Weights now: {now}.",
            "weights": {"before": weights, "after": dict(weights)}, "changed": False}
