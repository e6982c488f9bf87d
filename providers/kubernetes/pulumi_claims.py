"""The kubernetes provider's half of `mlform import-state pulumi`: which resources of a
``pulumi stack export`` are this stack environment's objects (`kit.pulumi_claims` does
the provider-neutral part).

Objects whose annotations name this stack and environment belong to the address they
name; the main one of each carries the id ``mlform import`` records
(``Kind/namespace/name``, a model's ``namespace/name``):

================================================  ================  ================
Pulumi type (marked by mlform)                    mlform kind       claim
================================================  ================  ================
``core/v1:Namespace``                             training_cluster  import id
``core/v1:ResourceQuota``, Kueue's queue objects  training_cluster  part
``apps/v1:Deployment`` (not a canary),            endpoint          import id
KServe's ``InferenceService``
``core/v1:Service``, ``autoscaling/v2:HPA``       endpoint          part
``batch/v1:CronJob``                              monitor           import id
``core/v1:ConfigMap`` (the newest version)        model             import id
``batch/v1:Job``, JobSet, PyTorchJob              pipeline          part (a run)
================================================  ================  ================

An object in another namespace than the provider's (for the kinds mlform keeps there)
gets no import id, and a note naming the setting to change: ``mlform import`` looks in
the provider's namespace.

Objects made outside mlform: a Deployment (with the Service selecting its pods and the
HPA scaling it) or an InferenceService is an endpoint, a Namespace holding a GPU quota a
training cluster, each at an address made from its name; nothing else unmarked is
claimed.  mlform imports only objects it made (it reads them by the name it gives them,
with the attributes its annotation keeps), so these claims carry no import id, and
their note says what to do instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

from mlform.providers.base import PulumiClaim
from mlform.providers.kit.pulumi_claims import (
    ClaimRule, address_kind, annotation_owner, claim_resources, field,
)

from .clusters import GPU
from .endpoints import TRACK
from .models import VERSION

__all__ = ["claims"]

Resource = Mapping[str, Any]
Parent = Callable[[Resource, Sequence[Resource]], "Resource | None"]


def _namespace(resource: Resource) -> str | None:
    return field(resource, "metadata", "namespace")


def _name(resource: Resource) -> str | None:
    return field(resource, "metadata", "name")


def _labels(resource: Resource, *path: str) -> Mapping[str, str]:
    found = field(resource, *path, "labels")
    return found if isinstance(found, Mapping) else {}


def _deployments(resource: Resource, found: Sequence[Resource]) -> list[Resource]:
    return [r for r in found if r.get("type") == "kubernetes:apps/v1:Deployment"
            and (_namespace(r) or "default") == (_namespace(resource) or "default")]


def _quota_namespace(resource: Resource, found: Sequence[Resource]) -> Resource | None:
    """An unmarked quota's Namespace."""
    return next((r for r in found if r.get("type") == "kubernetes:core/v1:Namespace"
                 and _name(r) == _namespace(resource)), None)


def _service_deployment(resource: Resource, found: Sequence[Resource]) -> Resource | None:
    """An unmarked Service's Deployment: of the same name, or whose pods it selects."""
    selector = field(resource, "spec", "selector")
    for r in _deployments(resource, found):
        pods = _labels(r, "spec", "template", "metadata")
        if _name(r) == _name(resource) or (isinstance(selector, Mapping) and selector and all(
                pods.get(k) == v for k, v in selector.items())):
            return r
    return None


def _scale_target(resource: Resource, found: Sequence[Resource]) -> Resource | None:
    """An unmarked HorizontalPodAutoscaler's Deployment (its scale target)."""
    target = field(resource, "spec", "scaleTargetRef", "name")
    return next((r for r in _deployments(resource, found) if _name(r) == target), None)


#: Pulumi types whose objects are the one `mlform import` of their address takes
_MAIN = {"kubernetes:core/v1:Namespace": "training_cluster",
         "kubernetes:apps/v1:Deployment": "endpoint",
         "kubernetes:serving.kserve.io/v1beta1:InferenceService": "endpoint",
         "kubernetes:batch/v1:CronJob": "monitor",
         "kubernetes:core/v1:ConfigMap": "model"}
#: Pulumi types whose objects are parts, and how an unmarked one finds its object
_PARTS: dict[str, tuple[str, Parent | None]] = {
    "kubernetes:core/v1:ResourceQuota": ("training_cluster", _quota_namespace),
    "kubernetes:kueue.x-k8s.io/v1beta1:ResourceFlavor": ("training_cluster", None),
    "kubernetes:kueue.x-k8s.io/v1beta1:ClusterQueue": ("training_cluster", None),
    "kubernetes:kueue.x-k8s.io/v1beta1:LocalQueue": ("training_cluster", None),
    "kubernetes:core/v1:Service": ("endpoint", _service_deployment),
    "kubernetes:autoscaling/v2:HorizontalPodAutoscaler": ("endpoint", _scale_target),
    "kubernetes:autoscaling/v1:HorizontalPodAutoscaler": ("endpoint", _scale_target),
    "kubernetes:batch/v1:Job": ("pipeline", None),
    "kubernetes:jobset.x-k8s.io/v1alpha2:JobSet": ("pipeline", None),
    "kubernetes:kubeflow.org/v1:PyTorchJob": ("pipeline", None)}
#: kinds whose objects live in the provider's namespace (where `mlform import` looks)
_IN_PROVIDER_NAMESPACE = frozenset({"endpoint", "monitor", "model"})
#: the objects of the runs mlform starts, and their notes
_RUN_TYPES = frozenset({"kubernetes:batch/v1:Job", "kubernetes:core/v1:Service",
                        "kubernetes:jobset.x-k8s.io/v1alpha2:JobSet",
                        "kubernetes:kubeflow.org/v1:PyTorchJob"})
_RUNS = {"pipeline": "a run of {address}: runs are not imported (the pipeline's block "
                     "re-runs it, or adopts the Job of the same fingerprint)",
         "monitor": "a run of {address}'s check (`mlform monitor run`): not imported"}


def claims(provider: Any, found: Sequence[Resource]) -> list[PulumiClaim]:
    """Which of a stack export's resources are this provider's objects (the module
    docstring): `provider` gives the stack, environment and namespace.  Pure."""
    context, namespace = provider.context, provider.config.namespace
    newest = _newest_models(found, context.stack, context.env)

    def main_id(kind: str) -> Callable[[Resource], str | None]:
        def import_id(resource: Resource) -> str | None:
            owner = annotation_owner(resource)
            if owner is None:   # offered under a name-made address; `_settled` says more
                return _ref(resource) if _adoptable(resource, found) else None
            if address_kind(owner.address) != kind or _canary(resource):
                return None
            if kind in _IN_PROVIDER_NAMESPACE and _namespace(resource) != namespace:
                return None
            if kind == "model":
                return _ref(resource, with_kind=False) if resource["urn"] in newest else None
            return _ref(resource)
        return import_id

    rules = {**{t: ClaimRule(kind, import_id=main_id(kind)) for t, kind in _MAIN.items()},
             **{t: ClaimRule(kind, parent=parent) for t, (kind, parent) in _PARTS.items()}}
    by_urn = {r["urn"]: r for r in found}
    return [_settled(c, by_urn[c.urn], namespace)
            for c in claim_resources(found, rules, stack=context.stack, env=context.env,
                                     owner_of=annotation_owner)]


def _settled(claim: PulumiClaim, resource: Resource, namespace: str) -> PulumiClaim:
    """The kit's claim with what Kubernetes adds: mlform imports only objects it made
    (it reads them by the name it gives them, and the attributes its annotation keeps),
    so an object made outside mlform has no import id and a note saying what to do
    instead; notes for runs, and for an object in a namespace mlform does not look in."""
    token = str(resource.get("type"))
    if annotation_owner(resource) is None:
        note = (f"not made by mlform (no ownership marks): mlform imports only objects it "
                f"made; write the {claim.kind} block for {claim.address} and apply (mlform "
                "makes its own objects), then remove this one from the Pulumi stack"
                if token in _MAIN else
                f"not made by mlform: part of {claim.address}, which mlform makes anew")
        return dataclasses.replace(claim, import_id=None, note=note)
    if claim.kind in _RUNS and token in _RUN_TYPES:
        return dataclasses.replace(claim, note=_RUNS[claim.kind].format(address=claim.address))
    if (claim.import_id is None and token in _MAIN and claim.kind in _IN_PROVIDER_NAMESPACE
            and _namespace(resource) != namespace):
        return dataclasses.replace(claim, note=(
            f"in namespace {_namespace(resource)}, where `mlform import` does not look: set "
            f"namespace = \"{_namespace(resource)}\" in the provider block first"))
    return claim


def _ref(resource: Resource, *, with_kind: bool = True) -> str:
    """The id mlform records: ``Kind/namespace/name`` (`env.object_key`), a model's
    ``namespace/name``."""
    kind = str(resource["type"]).rsplit(":", 1)[-1] if with_kind else None
    return "/".join(p for p in (kind, _namespace(resource), _name(resource)) if p)


def _canary(resource: Resource) -> bool:
    """A rollout's canary Deployment (a part: the stable one is imported)."""
    return _labels(resource, "metadata").get(TRACK) == "canary"


def _adoptable(resource: Resource, found: Sequence[Resource]) -> bool:
    """Whether an unmarked object can stand for an mlform resource: a Deployment or an
    InferenceService (an endpoint), a Namespace holding a GPU quota (a training
    cluster); not a ConfigMap, a CronJob or a namespace of anything."""
    token = str(resource.get("type"))
    if token == "kubernetes:core/v1:Namespace":
        return any(r.get("type") == "kubernetes:core/v1:ResourceQuota"
                   and _namespace(r) == _name(resource)
                   and f"requests.{GPU}" in (field(r, "spec", "hard") or {}) for r in found)
    return _MAIN.get(token) == "endpoint"


def _newest_models(found: Sequence[Resource], stack: str, env: str) -> set[str]:
    """URNs of each model's newest version ConfigMap (the one `mlform import` reads)."""
    newest: dict[str, tuple[int, str]] = {}
    for r in found:
        owner = annotation_owner(r)
        if (r.get("type") != "kubernetes:core/v1:ConfigMap" or owner is None
                or (owner.stack, owner.env) != (stack, env)):
            continue
        try:
            version = int(_labels(r, "metadata").get(VERSION, "0"))
        except ValueError:
            continue
        if version >= newest.get(owner.address, (-1, ""))[0]:
            newest[owner.address] = (version, str(r["urn"]))
    return {urn for _, urn in newest.values()}
