"""Access to the Kubernetes API for the `kubernetes` provider, through lightkube.

One `Kube` per configured provider.  The cluster is found as kubectl finds it
(`kubeconfig`, then ``KUBECONFIG``, then ``~/.kube/config``, then the in-cluster
service account), and every failure to find or reach it names what was tried, so a
plan against the wrong machine says which file and context it used.

Objects travel as plain dicts (manifests): `apply` is a server-side apply with
field manager ``mlform`` (forced: mlform's spec wins over a field someone changed by
hand, which is how drift heals), `apply(..., dry_run=True)` asks the API server to
run admission, quota and validation without storing anything (plan uses it), `get`
reads, `delete` deletes with a propagation policy.  API errors become
`ProviderError`s carrying the API server's own message (an RBAC refusal names the
verb, resource and namespace the identity lacks); a missing object is `Missing`.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from mlform.providers.base import ProgressEvent, ProviderContext, ProviderError

from .config import KubernetesConfig

__all__ = ["Kube", "Missing", "FIELD_MANAGER"]

FIELD_MANAGER = "mlform"
#: custom resources mlform writes: (apiVersion, kind) -> (plural, namespaced)
CUSTOM_RESOURCES = {
    ("kueue.x-k8s.io/v1beta1", "ResourceFlavor"): ("resourceflavors", False),
    ("kueue.x-k8s.io/v1beta1", "ClusterQueue"): ("clusterqueues", False),
    ("kueue.x-k8s.io/v1beta1", "LocalQueue"): ("localqueues", True),
    ("serving.kserve.io/v1beta1", "InferenceService"): ("inferenceservices", True),
    ("jobset.x-k8s.io/v1alpha2", "JobSet"): ("jobsets", True),
    ("kubeflow.org/v1", "PyTorchJob"): ("pytorchjobs", True),
}
_SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class Missing(Exception):
    """The object asked for does not exist."""


class Kube:
    """A lightkube client for the configured cluster, built once, shared by threads."""

    def __init__(self, config: KubernetesConfig, context: ProviderContext) -> None:
        self.config = config
        self.context = context
        self._client: Any = None
        self._lock = threading.Lock()
        self.tried = ""          # which kubeconfig and context, for messages
        self.server = ""

    # -- the connection --------------------------------------------------------------

    def _load(self) -> Any:
        from lightkube import Client, KubeConfig
        from lightkube.core.exceptions import ConfigError

        given = self.config.kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        home = Path("~/.kube/config").expanduser()
        try:
            if given:
                path = Path(given).expanduser()
                if not path.is_absolute() and self.config.kubeconfig:
                    path = self.context.stack_dir / path
                source = f"kubeconfig {path}" + ("" if self.config.kubeconfig
                                                 else " (from KUBECONFIG)")
                if not path.is_file():
                    raise _NoCluster(f"{source} does not exist")
                kube = KubeConfig.from_file(path)
            elif home.is_file():
                source, kube = f"kubeconfig {home}", KubeConfig.from_file(home)
            elif (_SERVICE_ACCOUNT / "token").is_file():
                source, kube = "the in-cluster service account", \
                    KubeConfig.from_service_account()
            else:
                raise _NoCluster("no kubeconfig: KUBECONFIG is not set, ~/.kube/config does "
                                 "not exist and this is not a pod with a service account")
            single = kube.get(self.config.context)
        except ConfigError as exc:
            raise _NoCluster(f"{source if 'source' in locals() else 'kubeconfig'}: {exc}")
        if single is None:
            known = ", ".join(sorted(getattr(kube, "contexts", {}) or {})) or "none"
            raise _NoCluster(f"{source} has no context {self.config.context!r} "
                             f"(contexts: {known})")
        self.tried = f"{source}, context {single.context_name}"
        self.server = single.cluster.server
        return Client(single, field_manager=FIELD_MANAGER, timeout=30.0)

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = self._load()
                    except _NoCluster as exc:
                        raise ProviderError(
                            f"cannot use the Kubernetes cluster: {exc}",
                            service_message="Set the provider's kubeconfig and context, or "
                                            "KUBECONFIG.") from None
        return self._client

    # -- calls -----------------------------------------------------------------------

    def _call(self, what: str, call: Callable[[], Any], address: str) -> Any:
        from lightkube import ApiError

        client = self.client
        try:
            return call(client)
        except ApiError as exc:
            status = exc.status
            code = getattr(status, "code", 0) or 0
            message = getattr(status, "message", None) or str(exc)
            if code == 404 and "the server could not find the requested resource" in message:
                raise ProviderError(f"{what}: the API server does not serve this kind (is "
                                    "its CustomResourceDefinition installed?)",
                                    address=address, service_message=message) from None
            if code == 404:
                raise Missing(message) from None
            raise ProviderError(f"{what}: {message}", address=address, service_message=message,
                                retryable=code in (429, 500, 502, 503, 504)) from None
        except _http_errors("HTTPStatusError") as exc:   # an answer that is no Status
            code = exc.response.status_code
            if code == 404:
                raise ProviderError(f"{what}: the API server does not serve this kind (is "
                                    "its CustomResourceDefinition installed?)",
                                    address=address, service_message=str(exc)) from None
            raise ProviderError(f"{what}: HTTP {code} from {self.server}", address=address,
                                retryable=code >= 500) from None
        except _http_errors("TransportError") as exc:
            raise ProviderError(f"{what}: cannot reach the Kubernetes API server {self.server} "
                                f"({self.tried}): {exc}", address=address,
                                retryable=True) from None

    @staticmethod
    def resource(api_version: str, kind: str) -> Any:
        from lightkube.core.exceptions import LoadResourceError
        from lightkube.core.resource_registry import resource_registry

        try:
            found = resource_registry.load(api_version, kind)
        except LoadResourceError:
            found = None
        if found is None and (api_version, kind) in CUSTOM_RESOURCES:
            from lightkube import generic_resource

            plural, namespaced = CUSTOM_RESOURCES[(api_version, kind)]
            group, version = api_version.split("/")
            make = (generic_resource.create_namespaced_resource if namespaced
                    else generic_resource.create_global_resource)
            found = make(group, version, kind, plural)
        if found is None:
            raise ProviderError(f"the API server has no {kind} ({api_version}): is its "
                                f"CustomResourceDefinition installed?")
        return found

    def apply(self, manifest: dict, *, address: str = "", dry_run: bool = False) -> dict:
        """Server-side apply of `manifest` as mlform (forced); the object as stored."""
        from lightkube import codecs

        meta = manifest["metadata"]
        what = (f"{'dry-run ' if dry_run else ''}apply of {manifest['kind']} "
                f"{_where(meta)}")
        self.resource(manifest["apiVersion"], manifest["kind"])   # custom kinds: registered
        obj = codecs.from_dict(manifest)
        done = self._call(what, lambda c: c.apply(obj, field_manager=FIELD_MANAGER,
                                                  force=True, dry_run=dry_run), address)
        return done.to_dict()

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
            address: str = "") -> dict | None:
        res = self.resource(api_version, kind)
        try:
            return self._call(f"reading {kind} {namespace + '/' if namespace else ''}{name}",
                              lambda c: c.get(res, name, namespace=namespace),
                              address).to_dict()
        except Missing:
            return None

    def list(self, api_version: str, kind: str, namespace: str | None = None, *,
             labels: dict | None = None, address: str = "") -> list[dict]:
        res = self.resource(api_version, kind)
        where = (namespace or "*") if _namespaced(res) else None
        return self._call(f"listing {kind}",
                          lambda c: [_with_kind(o.to_dict(), api_version, kind)
                                     for o in c.list(res, namespace=where, labels=labels)],
                          address)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               address: str = "", foreground: bool = False) -> None:
        """Delete (absent already is success); `foreground`: dependents first."""
        from lightkube.types import CascadeType

        res = self.resource(api_version, kind)
        cascade = CascadeType.FOREGROUND if foreground else CascadeType.BACKGROUND
        try:
            self._call(f"deleting {kind} {namespace + '/' if namespace else ''}{name}",
                       lambda c: c.delete(res, name, namespace=namespace, cascade=cascade),
                       address)
        except Missing:
            pass

    def patch(self, api_version: str, kind: str, name: str, namespace: str | None,
              patch: dict, *, address: str = "") -> dict:
        """A JSON merge patch (for what server-side apply does not own: annotations a
        rollout records)."""
        from lightkube.types import PatchType

        res = self.resource(api_version, kind)
        return self._call(f"patching {kind} {name}",
                          lambda c: c.patch(res, name, patch, namespace=namespace,
                                            patch_type=PatchType.MERGE), address).to_dict()

    # -- waiting ---------------------------------------------------------------------

    def progress(self, address: str, message: str, waiting_on: str = "") -> None:
        self.context.progress(ProgressEvent(address, message, waiting_on))

    def wait(self, check: Callable[[], tuple[bool, str]], *, address: str, what: str,
             timeout: float | None = None) -> None:
        """Poll `check` (-> (done, status line)) until done; each new status is reported
        as progress, and running past the timeout is an error naming the last status.
        `check` raises a ProviderError itself when what it waits on failed."""
        timeout = self.config.wait_seconds if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last = None
        while True:
            done, status = check()
            if status != last:
                self.progress(address, f"{what}: {status}", waiting_on=what)
                last = status
            if done:
                return
            if time.monotonic() >= deadline:
                raise ProviderError(f"{what}: still {status} after {timeout:g} s (timeout)",
                                    address=address, retryable=True)
            time.sleep(self.config.poll_seconds)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _http_errors(name: str) -> tuple[type[BaseException], ...]:
    """The HTTP client's error class `name` (lightkube 1.x ships its own httpx, httpx2;
    httpx's is caught as well)."""
    found: list[type[BaseException]] = []
    for module in ("httpx2", "httpx"):
        try:
            found.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found) or (OSError,)


class _NoCluster(Exception):
    """The kubeconfig, its context or the in-cluster account cannot be used."""


def _where(meta: dict) -> str:
    return f"{meta.get('namespace') + '/' if meta.get('namespace') else ''}{meta['name']}"


def _namespaced(res: Any) -> bool:
    from lightkube.core.resource import NamespacedResource

    return issubclass(res, NamespacedResource)


def _with_kind(obj: dict, api_version: str, kind: str) -> dict:
    """List items come without apiVersion and kind; put them back."""
    obj.setdefault("apiVersion", api_version)
    obj.setdefault("kind", kind)
    return obj
