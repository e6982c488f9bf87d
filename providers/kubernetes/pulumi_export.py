"""The kubernetes provider's half of `mlform export pulumi` (`pulumi_claims` has the
half of `mlform import-state pulumi`).

What each kind becomes in the exported program (``pulumi_kubernetes``), and the id
``pulumi import`` adopts the live object by (``namespace/name``; ``name`` for
cluster-scoped objects; none for an object not made yet):

================  ======================================================  ===============
mlform kind       pulumi_kubernetes resources                             import id
================  ======================================================  ===============
training_cluster  ``core.v1.Namespace``; ``core.v1.ResourceQuota``        ``name``;
                  ``mlform-gpus`` in it; with ``settings { kueue }``      ``ns/name``
                  Kueue's ResourceFlavor, ClusterQueue (cluster-scoped)
                  and LocalQueue as ``apiextensions.CustomResource``
endpoint          ``apps.v1.Deployment``, ``core.v1.Service``,            ``ns/name``
                  ``autoscaling.v2.HorizontalPodAutoscaler`` (with
                  `autoscaling`); with ``settings { serving = "kserve" }``
                  one KServe InferenceService (``CustomResource``)
monitor           ``batch.v1.CronJob``                                    ``ns/name``
pipeline          none: runs (Jobs), not infrastructure; the engine
                  writes them as comments
dataset           none: data in the S3-compatible `storage`
model             none: mlform's registry of versions (below)
================  ======================================================  ===============

The objects are the ones apply makes: `KubeHandler.applied` builds the manifests (the
one function `create` and `update` use), and `python_args` only respells them the way
the Python SDK takes them (field names in snake_case, map keys such as label keys as
they are; the SDK turns them back into the API's names).  The Namespace of a training
cluster is a `PulumiRef` in the objects that live in it, so Pulumi makes it first.
Values the engine handed over as `PulumiInput`s (sensitive ones, ones known only after
apply) stay whole where a field is exactly that value; one that would end up inside a
larger string (the pods' ``MLFORM_POD`` JSON) or a number cannot be read from config, and
the export says so.  mlform's record of the applied attributes (the main object's
``mlform.dev/attributes`` annotation, which ``mlform import`` reads) is declared too, so an
object Pulumi makes from the program can come back to mlform; it is left out when some
attribute is a `PulumiInput`.

Not exported: a model is mlform's registry (an immutable ConfigMap per version, whose
data holds the lineage the training run left in storage, read at registration): the
endpoint's pods carry the model's storage URI themselves, and a program declaring one
version would make Pulumi replace it on the next.  A rollout's canary Deployment lives
only during the rollout.  The Secret named by `storage_secret` is the user's.
"""

from __future__ import annotations

import keyword
import re
from typing import Any, Mapping, Sequence

from mlform.providers.base import (
    ExportObject, ProviderError, PulumiInput, PulumiRef, PulumiResource,
)
from mlform.providers.kit.names import pulumi_name

from .env import ATTRIBUTES, KubeHandler, object_key

__all__ = ["EXPORTED", "NOT_EXPORTED", "resources", "python_args", "python_name",
           "logical_name"]

#: kinds whose resource is the set of objects its handler applies
EXPORTED = frozenset({"training_cluster", "endpoint", "monitor"})
#: the other kinds, and why they declare nothing
NOT_EXPORTED = {
    "pipeline": "a run (a Job per run fingerprint), not long-lived infrastructure",
    "dataset": "data in the S3-compatible storage, uploaded once per content",
    "model": "mlform's registry of versions; the endpoint's pods carry the model's URI",
}

#: API groups of pulumi_kubernetes' typed classes (``kubernetes.<module>.<version>``);
#: any other group is a custom resource
_GROUPS = {"": "core", "apps": "apps", "autoscaling": "autoscaling", "batch": "batch"}
#: fields whose values map user keys (label keys, resource names, data keys) to values:
#: their keys stay as written; every other key is a field name
_MAPS = frozenset({"labels", "annotations", "matchLabels", "nodeSelector", "data",
                   "binaryData", "stringData", "hard", "requests", "limits"})
#: fields that are such maps in one kind only (a Deployment's selector is a struct)
_KIND_MAPS = {"Service": frozenset({("spec", "selector")})}
#: one field name: a plural acronym (IPs), an acronym with digits (APIV3), an acronym
#: before a word (CPUUtilization), a word, a trailing acronym
_WORD = re.compile(r"[A-Z]{2,}s(?![a-z])|[A-Z]+[0-9]+(?![a-z])|[A-Z]+(?=[A-Z][a-z])"
                   r"|[A-Z]?[a-z0-9]+|[A-Z]+")


# -- names ---------------------------------------------------------------------------

def python_name(key: str) -> str:
    """An API field name as pulumi_kubernetes' Python classes spell it (``clusterIPs`` ->
    ``cluster_ips``, ``$ref`` -> ``_ref``, ``except`` -> ``except_``)."""
    if key.startswith("$"):
        return "_" + key[1:]
    name = "_".join(_WORD.findall(key)).lower() or key
    return name + "_" if keyword.iskeyword(name) or name == "exec" else name


def python_args(value: Any, kind: str, path: tuple = ()) -> Any:
    """A manifest's value with every field name in snake_case (`python_name`) and the
    keys of maps (`_MAPS`) kept: what the SDK translates back into the manifest."""
    if isinstance(value, Mapping):
        if path and (path[-1] in _MAPS or path in _KIND_MAPS.get(kind, ())):
            return dict(value)
        return {python_name(k): python_args(v, kind, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [python_args(v, kind, path) for v in value]
    return value


def logical_name(address: str, kind: str) -> str:
    """The program's name for `address`'s object of `kind` (one of each per address):
    ``endpoint.fraud-deployment`` (`kit.names.pulumi_name`)."""
    return pulumi_name(address, kind.lower())


# -- export --------------------------------------------------------------------------

def resources(provider: Any, obj: ExportObject) -> list[PulumiResource]:
    """The Pulumi resources declaring `obj`'s objects, as the handler of its kind (of
    `provider`) applies them (the module docstring); [] for the kinds in
    `NOT_EXPORTED`.  Pure."""
    if obj.kind not in EXPORTED:
        return []
    handler: KubeHandler = provider.handler(obj.kind, obj.address)
    marks: dict[str, PulumiInput] = {}
    attrs = _stand_ins(obj.attributes, marks)
    try:
        docs, _ = handler.applied(obj.address, attrs)
    except (TypeError, ValueError) as exc:
        if not marks:
            raise
        # a stand-in where a number or a setting is read (replicas, a model version)
        raise _unexportable(obj, list(marks.values()), f"its objects cannot be built "
                                                       f"without them ({exc})") from None
    comments: dict[int, str] = {}
    if marks:     # the record is JSON of every attribute: it would hold them as text
        del docs[0]["metadata"]["annotations"][ATTRIBUTES]
        comments[0] = (f"Without mlform's annotation {ATTRIBUTES} (the attributes it "
                       "applied): some of them are read from config.")
    docs = [_restored(doc, marks, obj) for doc in docs]
    namespaces = {d["metadata"]["name"]: logical_name(obj.address, d["kind"])
                  for d in docs if d["kind"] == "Namespace"}
    return [_resource(doc, obj, namespaces, comments.get(i, "")) for i, doc in enumerate(docs)]


def _resource(doc: Mapping[str, Any], obj: ExportObject, namespaces: Mapping[str, str],
              comment: str) -> PulumiResource:
    api_version, kind, meta = doc["apiVersion"], doc["kind"], dict(doc["metadata"])
    exists = _exists(obj, doc)
    namespace = meta.get("namespace")
    import_id = (f"{namespace}/{meta['name']}" if namespace else meta["name"]) if exists \
        else None
    if namespace in namespaces:        # made by this program: Pulumi orders by the ref
        meta["namespace"] = PulumiRef(namespaces[namespace], "metadata.name")
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    group, _, version = api_version.rpartition("/")
    if kind == "Deployment" and "replicas" not in doc.get("spec", {}):
        comment = " ".join(filter(None, [comment, "No replicas: the HorizontalPodAutoscaler "
                                                   "sets them (mlform leaves them out too)."]))
    if group not in _GROUPS:           # a custom resource: its spec is untyped, as applied
        return PulumiResource(
            module="kubernetes.apiextensions", cls="CustomResource",
            token=f"kubernetes:{api_version}:{kind}", name=logical_name(obj.address, kind),
            args={"api_version": api_version, "kind": kind, "metadata": meta, **body},
            address=obj.address, import_id=import_id, comment=comment)
    return PulumiResource(
        module=f"kubernetes.{_GROUPS[group]}.{version}", cls=kind,
        token=f"kubernetes:{_GROUPS[group]}/{version}:{kind}",
        name=logical_name(obj.address, kind),
        args={"metadata": python_args(meta, kind, ("metadata",)),
              **python_args(body, kind)},
        address=obj.address, import_id=import_id, comment=comment)


def _exists(obj: ExportObject, doc: Mapping[str, Any]) -> bool:
    """Whether the state says the object exists: listed in `objects` and not missing
    (an HPA autoscaling has just been given is not there yet)."""
    objects = (obj.recorded or {}).get("objects")
    if isinstance(objects, Mapping):
        return objects.get(object_key(doc), "missing") != "missing"
    return obj.recorded is not None and obj.id is not None


def _stand_ins(value: Any, marks: dict[str, PulumiInput]) -> Any:
    """`value` with each `PulumiInput` replaced by a unique string (noted in `marks`), so
    the handler builds its manifests from plain values."""
    if isinstance(value, PulumiInput):
        mark = f"@@mlform-pulumi-input-{len(marks)}@@"
        marks[mark] = value
        return mark
    if isinstance(value, Mapping):
        return {k: _stand_ins(v, marks) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stand_ins(v, marks) for v in value]
    return value


def _restored(value: Any, marks: Mapping[str, PulumiInput], obj: ExportObject,
              path: str = "") -> Any:
    """`value` with each stand-in put back as its `PulumiInput`; one inside a longer
    string cannot be (the program reads a config value whole)."""
    if isinstance(value, str):
        if value in marks:
            return marks[value]
        inside = [i for m, i in marks.items() if m in value]
        if inside:
            raise _unexportable(obj, inside, f"they would be written inside {path} with "
                                             "other text, where the program cannot read "
                                             "them from config")
        return value
    if isinstance(value, Mapping):
        return {k: _restored(v, marks, obj, f"{path}.{k}" if path else k)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_restored(v, marks, obj, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _unexportable(obj: ExportObject, inputs: Sequence[PulumiInput], why: str) -> ProviderError:
    named = ", ".join(i.description or i.key for i in inputs)
    return ProviderError(
        f"{obj.address}: cannot export it to Pulumi: {named}: {why}", address=obj.address,
        hint="A sensitive value cannot be written into the program: leave this resource "
             "with mlform." if any(i.secret for i in inputs) else
             "Run `mlform apply` first, so the values are known, then export.")
