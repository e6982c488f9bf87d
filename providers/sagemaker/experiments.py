"""Experiment actions of the `sagemaker` provider's endpoints (`mlform experiment report|step`).

`action(handler, live, name, args)` answers `EndpointHandler.action`:

* ``experiment_records``: the shared shape ``{"experiment", "variants", "captures",
  "feedback", "served"}`` (as `local` answers it) built from SageMaker's data capture:
  each capture line (``<capture>/<endpoint>/<variant>/yyyy/mm/dd/hh/*.jsonl``, written
  by SageMaker) becomes ``{"time", "request_id", "variant", "role", "version",
  "status"}``: the request id is ``eventMetadata.inferenceId`` (the ``InferenceId`` the
  application passed to InvokeEndpoint), else ``eventId``; the variant is the capture
  key's folder.  SageMaker captures no latency and only answered requests, so
  ``latency_ms`` is absent and ``status`` is 200 (CloudWatch holds the rest).
  The variants' weights are the endpoint's DesiredWeights now, in percent.
* ``experiment_step``: a bandit's weights move here (SageMaker does not move them): the
  application writes its rewards as JSON lines ``{"request_id", "reward"[, "variant",
  "time"]}`` to objects under ``<capture>/feedback/`` (beside the endpoint's capture
  folder, so a capture listing never reads them); a line without ``variant`` takes the
  one its request was captured on.  The policy (`kit.bandit.Policy`) is rebuilt from
  the whole feedback log on every step, so the log in S3 is its durable state, and its
  weights (the floor included) go to UpdateEndpointWeightsAndCapacities as each
  variant's DesiredWeight (percent / 100).  A step with no usable feedback moves
  nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlform.providers.base import LiveObject, ProviderError
from mlform.providers.kit.experiment_records import json_objects
from mlform.providers.kit.variants import endpoint_variants, experiment_of

if TYPE_CHECKING:
    from .endpoints import EndpointHandler

__all__ = ["action", "records", "step", "feedback_prefix", "capture_prefix"]


def capture_prefix(handler: "EndpointHandler", name: str) -> str:
    """The key prefix SageMaker writes the endpoint's capture under (DestinationS3Uri)."""
    return handler.env.key("capture", name) + "/"


def feedback_prefix(handler: "EndpointHandler", name: str) -> str:
    """Where the application writes its rewards (JSON lines, any object name)."""
    return handler.env.key("capture", name, "feedback") + "/"


def action(handler: "EndpointHandler", live: LiveObject, name: str, args: dict) -> dict:
    if name == "experiment_records":
        return records(handler, live)
    if name == "experiment_step":
        return step(handler, live)
    raise NotImplementedError(name)


def _lines(handler: "EndpointHandler", prefix: str, address: str,
           skip: str | None = None) -> Iterable[tuple[str, dict]]:
    """(key, JSON object) of every line of every object under `prefix`, in key order;
    keys under `skip` are left out, lines that are not JSON objects skipped."""
    store = handler.env.store
    for item in store.list(prefix, address=address):
        key = item["Key"]
        if skip and key.startswith(skip):
            continue
        body = store.get_bytes(key, address=address) or b""
        for doc in json_objects(body if body.endswith(b"\n") else body + b"\n"):
            yield key, doc


def _time(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _describe(handler: "EndpointHandler", live: LiveObject) -> dict:
    name = live.id or handler.env.name(live.address)
    desc = handler._describe(name, live.address)
    if desc is None:
        raise ProviderError(f"{live.address}: endpoint {name} does not exist: run mlform apply "
                            "to create it first", address=live.address)
    return desc


def _weights(desc: Mapping) -> dict[str, float]:
    """Production variant -> its share now, in percent of the live weights."""
    raw = {v["VariantName"]: float(v.get("DesiredWeight", v.get("CurrentWeight")) or 0.0)
           for v in desc.get("ProductionVariants") or []}
    total = sum(raw.values())
    return {k: round(100.0 * w / total, 4) if total else 0.0 for k, w in raw.items()}


def _captures(handler: "EndpointHandler", live: LiveObject, name: str) -> list[dict]:
    attrs = live.attributes
    roles = {v["name"]: v["role"] for v in endpoint_variants(attrs)}
    versions = dict(attrs.get("variant_versions") or {})
    if not versions and attrs.get("model_version") is not None:
        versions = {v: attrs.get("model_version") for v in roles}
    base = capture_prefix(handler, name)
    found = []
    for key, doc in _lines(handler, base, live.address, skip=feedback_prefix(handler, name)):
        # <capture>/<endpoint name>/<variant>/yyyy/mm/dd/hh/file.jsonl
        parts = key[len(base):].split("/")
        variant = parts[1] if len(parts) > 2 else None
        meta = doc.get("eventMetadata") if isinstance(doc.get("eventMetadata"), dict) else {}
        request_id = meta.get("inferenceId") or meta.get("eventId")
        if not request_id or not variant:
            continue
        found.append({"time": _time(meta.get("inferenceTime")), "request_id": str(request_id),
                      "variant": variant, "role": roles.get(variant, "live"),
                      "version": versions.get(variant), "status": 200})
    found.sort(key=lambda c: (c["time"] is None, c["time"] or 0.0))
    return found


def _feedback(handler: "EndpointHandler", live: LiveObject, name: str,
              captures: list[dict] | None) -> tuple[list[dict], list[dict] | None]:
    """The feedback lines (contract shape), each with its variant, and the captures read
    to find the variants the lines did not name (None when none was needed)."""
    raw = [doc for _, doc in _lines(handler, feedback_prefix(handler, name), live.address)]
    if captures is None and any(not doc.get("variant") for doc in raw):
        captures = _captures(handler, live, name)
    by_id = {c["request_id"]: c["variant"] for c in captures or [] if c["role"] == "live"}
    lines = []
    for doc in raw:
        request_id = doc.get("request_id")
        variant = doc.get("variant") or by_id.get(str(request_id))
        if request_id is None or not variant:
            continue        # a reward for a request never captured: nothing to credit
        lines.append({"time": doc.get("time"), "request_id": str(request_id),
                      "variant": str(variant), "reward": doc.get("reward")})
    return lines, captures


def records(handler: "EndpointHandler", live: LiveObject) -> dict:
    desc = _describe(handler, live)
    name = desc["EndpointName"]
    attrs = live.attributes
    weights = _weights(desc)
    versions = dict(attrs.get("variant_versions") or {})
    variants = [{"name": v["name"],
                 "version": versions.get(v["name"], attrs.get("model_version")),
                 "weight": weights.get(v["name"], 0.0) if v["role"] == "live" else 0,
                 "role": v["role"]} for v in endpoint_variants(attrs)]
    captures = _captures(handler, live, name)
    feedback, _ = _feedback(handler, live, name, captures)
    return {"experiment": experiment_of(attrs), "variants": variants, "captures": captures,
            "feedback": feedback, "served": desc.get("EndpointStatus") == "InService"}


def step(handler: "EndpointHandler", live: LiveObject) -> dict:
    from mlform.providers.kit import bandit

    address, attrs = live.address, live.attributes
    desc = _describe(handler, live)
    name = desc["EndpointName"]
    before = _weights(desc)
    experiment = experiment_of(attrs) or {}
    now = ", ".join(f"{k} {w:g}%" for k, w in before.items())
    if experiment.get("type") != "bandit":
        return {"summary": f"{address}: nothing to step: it runs no bandit "
                           f"({experiment.get('type') or 'no experiment'}): its weights are the "
                           f"spec's. Weights now: {now}.",
                "weights": {"before": before, "after": dict(before)}, "changed": False}
    if desc.get("EndpointStatus") != "InService":
        raise ProviderError(f"{address}: endpoint {name} is {desc.get('EndpointStatus')}; its "
                            "weights can move once it is InService", address=address,
                            retryable=True)
    lines, _ = _feedback(handler, live, name, None)
    arms = sorted(before)
    policy = bandit.Policy(arms, experiment["reward"], experiment["floor_percent"], None,
                           seed=len(lines))     # the same log always gives the same weights
    used = policy.replay(lines)
    if not used:
        return {"summary": f"{address}: nothing to step: no usable feedback under "
                           f"s3://{handler.env.store.bucket}/{feedback_prefix(handler, name)} "
                           f"yet. Weights now: {now}.",
                "weights": {"before": before, "after": dict(before)}, "changed": False,
                "feedback": 0}
    after = {k: round(w, 2) for k, w in policy.weights().items()}
    handler.aws.progress(address, "bandit step: " + ", ".join(f"{k} {w:g}%"
                                                              for k, w in after.items()))
    handler.aws.call("sagemaker", "update_endpoint_weights_and_capacities", address=address,
                     EndpointName=name, DesiredWeightsAndCapacities=[
                         {"VariantName": k, "DesiredWeight": round(w / 100.0, 4)}
                         for k, w in after.items()])
    handler._wait(name, address, handler.schema.timeouts.update)
    best = {k: round(p, 4) for k, p in policy.prob_best().items()}
    moved = ", ".join(f"{k} {before.get(k, 0):g}% -> {after[k]:g}%" for k in arms)
    return {"summary": f"{address}: bandit step from {used} rewards: {moved} "
                       f"(floor {experiment['floor_percent']:g}%).",
            "weights": {"before": before, "after": after}, "changed": True,
            "feedback": used, "prob_best": best}
