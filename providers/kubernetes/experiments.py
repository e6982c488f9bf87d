"""Experiment actions of the `kubernetes` provider's endpoints (`mlform experiment report|step`).

`action(handler, live, name, args)` answers `EndpointHandler.action`:

* ``experiment_records``: the shared shape ``{"experiment", "variants", "captures",
  "feedback"}`` (as `local` and `sagemaker` answer it), read from storage, where every
  serving pod uploads its files (`pod.py serve`): the capture lines of every object
  under ``capture/<name>/`` (one per pod, ``<pod>.jsonl``) and the feedback lines under
  ``feedback/<name>/``, each pooled over the pods and ordered by time.  Captured
  ``inputs`` are left out (the report never looks at them, and they are most of a
  capture's bytes), and so are ``outputs`` unless the experiment is a shadow.  The
  variants' weights are the declared ones; a bandit's are those of its policy replayed
  from every reward uploaded (the weights a serving pod starting now begins with: a
  bandit runs in one pod, so they are that pod's as of its last upload).  There is no
  ``served``: the pods' own weights are not read (their servers are reached through
  the Service, one pod per request).
* ``experiment_step``: the server in the serving pod moves a bandit's weights itself on
  every reward, so a step changes nothing; it answers with the weights now (as `local`).

What pods upload lags their servers by at most ``settings.capture_upload_seconds``.  A
line that is not a JSON object (a torn last line) is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlform.providers.base import LiveObject, ProviderError
from mlform.providers.kit.experiment_records import (
    CAPTURE_FIELDS, FEEDBACK_FIELDS, json_objects, pick,
)
from mlform.providers.kit.variants import endpoint_variants, experiment_of

if TYPE_CHECKING:
    from .endpoints import EndpointHandler

__all__ = ["action", "records", "step"]

#: Capture fields the report uses (the same as `local`'s); the rest of a line is dropped.

def action(handler: "EndpointHandler", live: LiveObject, name: str, args: dict) -> dict:
    if name == "experiment_records":
        return records(handler, live)
    if name == "experiment_step":
        return step(handler, live)
    raise NotImplementedError(name)


def _lines(handler: "EndpointHandler", prefix: str, address: str,
           fields: tuple[str, ...]) -> list[dict]:
    """`fields` of every JSON-object line of every object under `prefix`, by time."""
    store = handler.env.store
    found = []
    for item in store.list(prefix, address=address):
        body = store.get_bytes(item["Key"], address=address) or b""
        found += [pick(doc, fields) for doc in json_objects(body)]
    found.sort(key=lambda d: d["time"] if isinstance(d.get("time"), (int, float)) else 0.0)
    return found


def _attributes(handler: "EndpointHandler", live: LiveObject) -> Mapping[str, Any]:
    """The endpoint's attributes, once its Deployment (or InferenceService) is there."""
    api_version, kind, name, namespace = handler.main_ref(live.address)
    if handler.kube.get(api_version, kind, name, namespace, address=live.address) is None:
        raise ProviderError(f"{live.address}: {kind} {namespace}/{name} does not exist: run "
                            "mlform apply to create it first", address=live.address)
    return live.attributes or handler.recorded(live) or {}


def _weights(attrs: Mapping[str, Any], feedback: list[dict]) -> dict[str, float]:
    """Live variant -> its share now, in percent (see the module docstring)."""
    declared = {v["name"]: float(v["weight"]) for v in endpoint_variants(attrs)
                if v["role"] == "live"}
    experiment = experiment_of(attrs) or {}
    if experiment.get("type") != "bandit" or not feedback:
        return declared
    from mlform.providers.kit import bandit
    policy = bandit.Policy(list(declared), experiment["reward"], experiment["floor_percent"],
                           None, seed=len(feedback))    # the same log, the same weights
    policy.replay(feedback)
    return {k: round(w, 2) for k, w in policy.weights().items()}


def records(handler: "EndpointHandler", live: LiveObject) -> dict:
    from .endpoints import capture_prefix, feedback_prefix, variant_versions

    address = live.address
    attrs = _attributes(handler, live)
    experiment = experiment_of(attrs)
    fields = CAPTURE_FIELDS + (("outputs",) if (experiment or {}).get("type") == "shadow"
                               else ())
    captures = _lines(handler, capture_prefix(handler.env, address), address, fields)
    feedback = _lines(handler, feedback_prefix(handler.env, address), address, FEEDBACK_FIELDS)
    weights = _weights(attrs, feedback)
    versions = variant_versions(attrs)
    variants = [{"name": v["name"], "version": versions.get(v["name"]),
                 "weight": weights.get(v["name"], 0) if v["role"] == "live" else 0,
                 "role": v["role"]} for v in endpoint_variants(attrs)]
    return {"experiment": experiment, "variants": variants, "captures": captures,
            "feedback": feedback}


def step(handler: "EndpointHandler", live: LiveObject) -> dict:
    from .endpoints import feedback_prefix

    attrs = _attributes(handler, live)
    kind = (experiment_of(attrs) or {}).get("type")
    feedback = _lines(handler, feedback_prefix(handler.env, live.address), live.address,
                      FEEDBACK_FIELDS) if kind == "bandit" else []
    weights = _weights(attrs, feedback)
    why = ("the server in its serving pod moves a bandit's weights itself on every reward"
           if kind == "bandit" else
           f"{live.address} runs no bandit ({kind or 'no experiment'}): its weights are the "
           "spec's")
    now = ", ".join(f"{name} {share:g}%" for name, share in weights.items())
    return {"summary": f"{live.address}: nothing to step: {why}. Weights now: {now}.",
            "weights": {"before": weights, "after": dict(weights)}, "changed": False}
