"""What every kind handler of the `kubernetes` provider shares: the API, the storage,
names, ownership marks, and the life of a resource as a set of Kubernetes objects.

Names are DNS labels, deterministic from stack, environment and address
(`kit.names.bounded_name`, lower case), so a retried or crashed create finds what it
made.  Every object carries ``app.kubernetes.io/managed-by=mlform``, the kit's
ownership labels (selectable) and annotations (the marks in full), and the provider's
`labels`; an object whose annotations name another stack, environment or address is
refused, never adopted.

`KubeHandler` is the base of the handlers whose resource *is* a set of objects
(clusters, endpoints, monitors): each says which manifests its attributes make
(`manifests`, pure), and the base does the rest the same way for all:

* plan: each manifest goes through a server-side dry-run apply (a fact, read before
  the pure plan), so admission errors and quota refusals are diagnostics at plan and
  an immutable field the change would touch plans a replacement with the API
  server's own reason;
* apply: owner check, then server-side apply with field manager ``mlform``;
* read / drift: the live objects compared with the manifests, field by field, on the
  fields mlform applies (what its field manager owns): a ``kubectl scale`` or an
  edited label is drift, a field only another controller sets (an HPA's replicas,
  which mlform leaves out of the manifest) is not.  The computed attribute
  ``objects`` says per object ``applied``, ``missing`` or what changed, and by whom
  (the manager `managedFields` names);
* delete: every object, in reverse order, waiting until they are gone.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from mlform.providers.base import (
    Desired, Diagnostic, FactError, FactKey, Facts, LiveObject, Planned, ProviderContext,
    ProviderError, contains_unknown, error,
)
from mlform.providers.kit.digests import DigestCache
from mlform.providers.kit.handlers import KindHandler
from mlform.providers.kit.names import MANAGED_BY, Owner, bounded_name
from mlform.providers.kit.plans import plan_of, unknowns
from mlform.providers.kit.storage import ObjectStore

from .api import FIELD_MANAGER, Kube
from .config import KubernetesConfig

__all__ = ["KubeEnv", "KubeHandler", "APPLIED", "ATTRIBUTES", "differences", "object_key"]

#: `objects` value of an object that is as mlform applied it
APPLIED = "applied"
#: annotation of a resource's main object holding the attributes it was applied with
ATTRIBUTES = "mlform.dev/attributes"


@dataclass
class KubeEnv:
    """The provider's configured view: the API, the storage, config and run context."""

    context: ProviderContext
    config: KubernetesConfig
    kube: Kube
    _store: ObjectStore | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def digests(self) -> DigestCache:
        return DigestCache.shared(self.context.cache_dir)

    @property
    def store(self) -> ObjectStore:
        """The provider's `storage` (kit S3 code), built on first use."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = ObjectStore(
                        self.config.storage_uri(self.context.stack, self.context.env),
                        endpoint_url=self.config.endpoint_url, region=self.config.region)
        return self._store

    # -- names and marks ---------------------------------------------------------------

    def name(self, address: str, suffix: str = "", limit: int = 63) -> str:
        """A DNS-label name, unique per (stack, env, address[, suffix])."""
        return bounded_name(self.context.stack, self.context.env, address, suffix,
                            limit=limit, lower=True)

    def owner(self, address: str) -> Owner:
        return Owner(self.context.stack, self.context.env, address)

    def metadata(self, name: str, address: str, namespace: str | None = None, *,
                 labels: Mapping[str, str] | None = None,
                 annotations: Mapping[str, str] | None = None) -> dict:
        """An object's metadata: the configured labels, `labels`, then the ownership
        marks (which win)."""
        owner = self.owner(address)
        meta: dict[str, Any] = {
            "name": name,
            "labels": {**self.config.labels, **dict(labels or {}), **owner.labels()},
            "annotations": {**dict(annotations or {}), **owner.annotations()},
        }
        if namespace:
            meta["namespace"] = namespace
        return meta

    def selector(self, address: str) -> dict[str, str]:
        """The labels that select `address`'s objects (pods included)."""
        return {MANAGED_BY[0]: MANAGED_BY[1], **{k: v for k, v in
                                                 self.owner(address).labels().items()}}

    def check_owner(self, obj: Mapping[str, Any], address: str, *,
                    unmarked_ok: bool = False) -> None:
        meta = obj.get("metadata") or {}
        what = (f"{obj.get('kind', 'object')} "
                f"{meta.get('namespace') + '/' if meta.get('namespace') else ''}"
                f"{meta.get('name')}")
        self.owner(address).check(Owner.from_annotations(meta.get("annotations") or {}), what,
                                  unmarked_ok=unmarked_ok, marks="annotations")

    def apply(self, manifest: dict, address: str) -> dict:
        """Server-side apply of an object this address owns (refusing a foreign one)."""
        meta = manifest["metadata"]
        found = self.kube.get(manifest["apiVersion"], manifest["kind"], meta["name"],
                              meta.get("namespace"), address=address)
        if found is not None:
            self.check_owner(found, address)
        return self.kube.apply(manifest, address=address)


def object_key(manifest: Mapping[str, Any]) -> str:
    """``Kind/namespace/name``: how `objects` names an object."""
    meta = manifest["metadata"]
    return "/".join(p for p in (manifest["kind"], meta.get("namespace"), meta["name"]) if p)


def _leaves(value: Any, path: tuple = ()) -> Iterable[tuple[tuple, Any]]:
    if isinstance(value, Mapping):
        if not value:
            yield path, value
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        # lists of named items (containers, ports, env) are matched by name
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path, value


def _at(obj: Any, path: tuple) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(obj, list) or part >= len(obj):
                return _ABSENT
            obj = obj[part]
        else:
            if not isinstance(obj, Mapping) or part not in obj:
                return _ABSENT
            obj = obj[part]
    return obj


_ABSENT = object()
#: kinds whose objects own others (deleted in the foreground, waited on until those go)
_OWNERS = frozenset({"Namespace", "Deployment", "Job", "CronJob", "ReplicaSet"})
_IGNORED = ("metadata.annotations",)   # kubectl and controllers add their own


def _dotted(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _manager_of(live: Mapping[str, Any], path: tuple) -> str | None:
    """The field manager (other than mlform) whose managedFields hold `path`."""
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER:
            continue
        node = entry.get("fieldsV1") or {}
        for part in path:
            if isinstance(part, int) or not isinstance(node, Mapping):
                break
            node = node.get(f"f:{part}")
            if node is None:
                break
        else:
            return entry.get("manager")
    return None


def differences(manifest: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """The fields `manifest` sets whose live value differs, as "path (want → got, by
    manager)".  Only fields mlform applies are compared."""
    found = []
    for path, want in _leaves({k: v for k, v in manifest.items() if k != "status"}):
        text = _dotted(path)
        if any(text.startswith(ignored) for ignored in _IGNORED):
            continue
        got = _at(live, path)
        if got is _ABSENT and want in ({}, None):
            continue
        if got != want and str(got) != str(want):
            by = _manager_of(live, path)
            shown = "absent" if got is _ABSENT else json.dumps(got, default=str)
            found.append(f"{text} ({json.dumps(want, default=str)} → {shown}"
                         + (f", by {by})" if by else ")"))
    return found


class KubeHandler(KindHandler):
    """A kind whose resource is a set of Kubernetes objects (see the module docstring).

    Subclasses give `manifests(address, attrs)` (pure) and may extend `computed`,
    `wait_ready` and `live_attributes`.
    """

    def __init__(self, env: KubeEnv) -> None:
        super().__init__(env)
        self.env: KubeEnv = env
        self.kube = env.kube

    # -- what a resource is ------------------------------------------------------------

    def manifests(self, address: str, attrs: Mapping[str, Any]) -> list[dict]:
        raise NotImplementedError

    def computed(self, address: str, attrs: Mapping[str, Any],
                 manifests: Sequence[dict]) -> dict[str, Any]:
        """Computed attributes known from the manifests alone (plan = apply)."""
        return {}

    def wait_ready(self, address: str, attrs: Mapping[str, Any], applied: list[dict]) -> None:
        """Wait until what was applied is ready (rollouts, ...)."""

    def live_attributes(self, prior: LiveObject, live: Mapping[str, dict]) -> dict[str, Any]:
        """Attributes read back from the live objects (e.g. replicas), over the prior ones."""
        return {}

    # -- plan: dry-run facts -----------------------------------------------------------

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> Sequence[FactKey]:
        if contains_unknown(desired.attributes):
            return ()
        docs = self.manifests(desired.address, desired.attributes)
        return (FactKey(desired.kind, "dry-run",
                        (desired.address, json.dumps(docs, sort_keys=True, default=str))),)

    def read_facts(self, keys: Sequence[FactKey]) -> dict[FactKey, Any]:
        namespaces: dict[str, bool] = {}      # namespace -> exists, asked once per batch
        return {key: self._dry_run(*key.args, namespaces=namespaces) for key in keys}

    def _dry_run(self, address: str, text: str, *, namespaces: dict[str, bool]) -> Any:
        """Each manifest through a server-side dry-run apply: {"refused": [...],
        "immutable": [...]} (messages of the API server), or a FactError."""
        refused, immutable = [], []
        try:
            for manifest in json.loads(text):
                meta = manifest["metadata"]
                found = self.kube.get(manifest["apiVersion"], manifest["kind"], meta["name"],
                                      meta.get("namespace"), address=address)
                if found is not None:
                    self.env.check_owner(found, address)
                elif meta.get("namespace") and not self._namespace_exists(meta["namespace"],
                                                                         namespaces):
                    continue    # made by this apply (a training cluster's): nothing to ask
                try:
                    self.kube.apply(manifest, address=address, dry_run=True)
                except ProviderError as exc:
                    target = immutable if _is_immutable(exc.service_message) else refused
                    target.append(f"{object_key(manifest)}: {exc.service_message or exc}")
        except ProviderError as exc:
            return FactError(exc.message + (f" ({exc.service_message})"
                                            if exc.service_message and exc.service_message
                                            not in exc.message else ""),
                             retryable=exc.retryable)
        return {"refused": refused, "immutable": immutable}

    def _namespace_exists(self, namespace: str, known: dict[str, bool]) -> bool:
        if namespace not in known:
            known[namespace] = self.kube.get("v1", "Namespace", namespace) is not None
        return known[namespace]

    def _dry_run_fact(self, desired: Desired, facts: Facts) -> Any:
        keys = self.fact_keys(desired, None)
        return facts.get(keys[0]) if keys else None

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        found = self._dry_run_fact(desired, facts)
        if isinstance(found, FactError):
            return [error(f"{desired.address}: {found.message}", address=desired.address,
                          hint="Check the provider's kubeconfig and context."
                          if "cannot" in found.message else "")]
        if not found:
            return []
        return [error(f"{desired.address}: the API server refuses {message}",
                      address=desired.address,
                      hint="A server-side dry run at plan time; nothing was changed.")
                for message in found["refused"]]

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        attrs = desired.attributes
        if contains_unknown(attrs):
            return plan_of(desired, unknowns(("objects", *self.computed_names())))
        docs = self.manifests(desired.address, attrs)
        computed = {"objects": {object_key(m): APPLIED for m in docs},
                    **self.computed(desired.address, attrs, docs)}
        found = self._dry_run_fact(desired, facts)
        if prior is not None and isinstance(found, Mapping) and found.get("immutable"):
            changed = sorted(k for k in attrs if prior.attributes.get(k) != attrs.get(k))
            return plan_of(desired, computed, replace_paths=changed or ("objects",),
                           reasons=[f"the API server cannot change it in place: {m}"
                                    for m in found["immutable"]])
        return plan_of(desired, computed)

    def computed_names(self) -> tuple[str, ...]:
        return tuple(n for n in self.schema.computed if n != "objects")

    # -- apply ---------------------------------------------------------------------------

    def create(self, planned: Planned) -> LiveObject:
        return self._apply(planned)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        live = self._apply(planned)
        stale = {object_key(m): m for m in self.manifests(prior.address, prior.attributes)
                 if not contains_unknown(prior.attributes)}
        for key in set(stale) - set(live.attributes.get("objects") or {}):
            self._delete_object(stale[key], prior.address)
        return live

    def applied(self, address: str, attrs: Mapping[str, Any]) -> tuple[list[dict], dict]:
        """The manifests `create` and `update` apply for `attrs`, and the attributes
        they record (with the computed ones).  The one place a resource's objects are
        built whole: apply uses it, and so does `mlform export pulumi`
        (`pulumi_export`), so the exported program declares exactly these objects."""
        attrs = dict(attrs)
        docs = self.manifests(address, attrs)
        attrs.update({"objects": {object_key(m): APPLIED for m in docs},
                      **self.computed(address, attrs, docs)})
        # the spec's attributes ride on the main object, for a create whose id was lost
        docs[0]["metadata"]["annotations"][ATTRIBUTES] = json.dumps(
            {k: v for k, v in attrs.items() if k != "objects"}, sort_keys=True, default=str)
        return docs, attrs

    def _apply(self, planned: Planned) -> LiveObject:
        docs, attrs = self.applied(planned.address, planned.attributes)
        applied = [self.env.apply(doc, planned.address) for doc in docs]
        self.wait_ready(planned.address, attrs, applied)
        return LiveObject(planned.address, planned.kind, self.object_id(docs), attrs)

    def object_id(self, docs: Sequence[dict]) -> str:
        return object_key(docs[0])

    # -- read ----------------------------------------------------------------------------

    def read(self, prior: LiveObject) -> LiveObject | None:
        attrs = dict(prior.attributes)
        if not attrs or contains_unknown(attrs):
            attrs = self.recorded(prior)
            if attrs is None:
                return None
        docs = self.manifests(prior.address, attrs)
        live: dict[str, dict] = {}
        status: dict[str, str] = {}
        for doc in docs:
            meta = doc["metadata"]
            found = self.kube.get(doc["apiVersion"], doc["kind"], meta["name"],
                                  meta.get("namespace"), address=prior.address)
            key = object_key(doc)
            if found is None:
                status[key] = "missing"
                continue
            self.env.check_owner(found, prior.address)
            live[key] = found
            changed = differences(doc, found)
            status[key] = ("changed: " + "; ".join(changed)) if changed else APPLIED
        if object_key(docs[0]) not in live:
            return None          # the resource's main object is gone: it is gone
        attrs.update(self.live_attributes(LiveObject(prior.address, prior.kind, prior.id, attrs),
                                          live))
        attrs["objects"] = status
        return LiveObject(prior.address, prior.kind, object_key(docs[0]), attrs)

    def main_ref(self, address: str) -> tuple[str, str, str, str | None]:
        """(apiVersion, kind, name, namespace) of the resource's main object, from the
        address alone (how a lost id is found)."""
        raise NotImplementedError

    def recorded(self, prior: LiveObject) -> dict | None:
        """The attributes last applied, when the engine lost them (a crashed create):
        read from the main object's ``mlform.dev/attributes`` annotation."""
        api_version, kind, name, namespace = self.main_ref(prior.address)
        found = self.kube.get(api_version, kind, name, namespace, address=prior.address)
        if found is None:
            return None
        self.env.check_owner(found, prior.address)
        text = ((found.get("metadata") or {}).get("annotations") or {}).get(ATTRIBUTES)
        try:
            return json.loads(text) if text else None
        except ValueError:
            return None

    # -- delete --------------------------------------------------------------------------

    def delete(self, prior: LiveObject) -> None:
        attrs = prior.attributes
        if not attrs or contains_unknown(attrs):
            attrs = self.recorded(prior)
            if attrs is None:
                return
        docs = list(reversed(self.manifests(prior.address, attrs)))
        # what lives in a namespace this resource deletes goes with it
        doomed = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
        self._delete_objects([d for d in docs if d["metadata"].get("namespace") not in doomed],
                             prior.address)

    def _delete_object(self, doc: Mapping[str, Any], address: str) -> None:
        self._delete_objects([doc], address)

    def _delete_objects(self, docs: Sequence[Mapping[str, Any]], address: str) -> None:
        """Delete these objects (ours only), then wait once until all are gone.  Objects
        with dependents (a Deployment's pods, a Job's, a namespace's objects) are deleted
        in the foreground: they are gone only when what they own is."""
        pending = []
        for doc in docs:
            meta = doc["metadata"]
            found = self.kube.get(doc["apiVersion"], doc["kind"], meta["name"],
                                  meta.get("namespace"), address=address)
            if found is None:
                continue
            self.env.check_owner(found, address)
            self.kube.delete(doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace"),
                             address=address, foreground=doc["kind"] in _OWNERS)
            pending.append(doc)
        if not pending:
            return

        def gone() -> tuple[bool, str]:
            left = [object_key(d) for d in pending
                    if self.kube.get(d["apiVersion"], d["kind"], d["metadata"]["name"],
                                     d["metadata"].get("namespace"), address=address)]
            return not left, ("deleted" if not left else "waiting for " + ", ".join(left))

        self.kube.wait(gone, address=address, what=f"deletion of {address}'s objects")

    def close(self) -> None:
        pass


def _is_immutable(message: str) -> bool:
    text = (message or "").lower()
    return "immutable" in text or "may not change once set" in text
