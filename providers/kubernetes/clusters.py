"""`training_cluster` on Kubernetes: a Namespace and a ResourceQuota for its runs.

The namespace (named from the address) holds the cluster's training Jobs; its quota
caps ``requests.nvidia.com/gpu`` at ``gpus_per_node × nodes`` (and cpu / memory when
`settings` give them), so runs of one stack cannot take the GPUs of another.

Capacity is checked at plan: the nodes' allocatable ``nvidia.com/gpu`` and their GPU
product label (``nvidia.com/gpu.product``, set by NVIDIA's GPU operator / feature
discovery) are a fact read before planning; a cluster asking for more GPUs per node, or
more such nodes, than the cluster has is an error naming what it has.

With ``settings { kueue = true }`` the cluster is also a Kueue queue: a ResourceFlavor
and a ClusterQueue (named like the namespace, with the cluster's quota) and a LocalQueue
``mlform`` in the namespace; its runs are created suspended with the queue's label, and
Kueue admits them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from mlform.providers.base import (
    Desired, Diagnostic, FactError, FactKey, Facts, KindSchema, LiveObject, ProviderError,
    Timeouts, contains_unknown, error,
)
from mlform.providers.kit.accelerators import CPU, matches

from .env import KubeHandler

__all__ = ["ClusterHandler", "ClusterSettings", "GPU", "GPU_PRODUCT", "KUEUE_LABEL",
           "KUEUE_QUEUE", "cluster_namespace"]

GPU = "nvidia.com/gpu"
#: the LocalQueue a Kueue-enabled cluster's runs go to, and the label that says so
KUEUE_QUEUE, KUEUE_LABEL = "mlform", "kueue.x-k8s.io/queue-name"
GPU_PRODUCT = "nvidia.com/gpu.product"
NODES = FactKey("training_cluster", "nodes")


class ClusterSettings(BaseModel):
    """`settings { }` of a training cluster on Kubernetes."""

    model_config = ConfigDict(extra="forbid")

    cpu: str | None = Field(None, description="Quota on requests.cpu, e.g. \"64\".")
    memory: str | None = Field(None, description="Quota on requests.memory, e.g. \"512Gi\".")
    cpu_per_node: str = Field("4", description="CPU each training pod requests.")
    kueue: bool = Field(False, description="Queue the runs with Kueue: a ResourceFlavor, a "
                                           "ClusterQueue with the cluster's quota and a "
                                           "LocalQueue in its namespace (Kueue must be "
                                           "installed).")
    memory_per_node: str = Field("16Gi", description="Memory each training pod requests.")


def cluster_namespace(env: Any, address: str) -> str:
    """The namespace of a training cluster (pipelines on it run there)."""
    return env.name(address)


class ClusterHandler(KubeHandler):
    schema = KindSchema(settings_model=ClusterSettings, replace_paths=("accelerator",),
                        computed=("gpus_total", "namespace", "objects"),
                        timeouts=Timeouts(create=300, update=300, delete=900))

    def manifests(self, address: str, attrs: Mapping[str, Any]) -> list[dict]:
        namespace = cluster_namespace(self.env, address)
        settings = ClusterSettings.model_validate(attrs.get("settings") or {})
        hard = {f"requests.{GPU}": str(int(attrs.get("gpus_per_node") or 0)
                                       * int(attrs.get("nodes") or 1))}
        if settings.cpu:
            hard["requests.cpu"] = settings.cpu
        if settings.memory:
            hard["requests.memory"] = settings.memory
        labels = attrs.get("tags") or {}
        docs = [
            {"apiVersion": "v1", "kind": "Namespace",
             "metadata": self.env.metadata(namespace, address, labels=labels)},
            {"apiVersion": "v1", "kind": "ResourceQuota",
             "metadata": self.env.metadata("mlform-gpus", address, namespace, labels=labels),
             "spec": {"hard": hard}},
        ]
        if settings.kueue:
            docs += self.kueue(address, attrs, settings, namespace, labels)
        return docs

    def kueue(self, address: str, attrs: Mapping[str, Any], settings: ClusterSettings,
              namespace: str, labels: Mapping[str, str]) -> list[dict]:
        """ResourceFlavor + ClusterQueue (the cluster's quota) + LocalQueue `mlform`."""
        api = "kueue.x-k8s.io/v1beta1"
        gpus = int(attrs.get("gpus_per_node") or 0) * int(attrs.get("nodes") or 1)
        flavor: dict[str, Any] = {}
        product = str(attrs.get("accelerator") or "")
        if gpus and product not in ("", CPU):
            flavor["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
        resources = [{"name": GPU, "nominalQuota": str(gpus)},
                     {"name": "cpu", "nominalQuota": settings.cpu or "1000"},
                     {"name": "memory", "nominalQuota": settings.memory or "4Ti"}]
        return [
            {"apiVersion": api, "kind": "ResourceFlavor",
             "metadata": self.env.metadata(namespace, address, labels=labels), "spec": flavor},
            {"apiVersion": api, "kind": "ClusterQueue",
             "metadata": self.env.metadata(namespace, address, labels=labels),
             "spec": {"namespaceSelector": {"matchLabels": {
                          "kubernetes.io/metadata.name": namespace}},
                      "resourceGroups": [{"coveredResources": [GPU, "cpu", "memory"],
                                          "flavors": [{"name": namespace,
                                                       "resources": resources}]}]}},
            {"apiVersion": api, "kind": "LocalQueue",
             "metadata": self.env.metadata(KUEUE_QUEUE, address, namespace, labels=labels),
             "spec": {"clusterQueue": namespace}},
        ]

    def main_ref(self, address: str) -> tuple[str, str, str, str | None]:
        return "v1", "Namespace", cluster_namespace(self.env, address), None

    def computed(self, address: str, attrs: Mapping[str, Any],
                 manifests: Sequence[dict]) -> dict[str, Any]:
        return {"gpus_total": int(attrs.get("gpus_per_node") or 0) * int(attrs.get("nodes") or 1),
                "namespace": cluster_namespace(self.env, address)}

    # -- capacity --------------------------------------------------------------------

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> Sequence[FactKey]:
        return (*super().fact_keys(desired, prior), NODES)

    def read_facts(self, keys: Sequence[FactKey]) -> dict[FactKey, Any]:
        found = super().read_facts([k for k in keys if k != NODES])
        if NODES in keys:
            try:
                found[NODES] = [
                    {"name": node["metadata"]["name"],
                     "gpus": int(((node.get("status") or {}).get("allocatable") or {})
                                 .get(GPU, 0) or 0),
                     "product": ((node["metadata"].get("labels") or {}).get(GPU_PRODUCT) or ""),
                     "unschedulable": bool((node.get("spec") or {}).get("unschedulable"))}
                    for node in self.kube.list("v1", "Node")]
            except ProviderError as exc:
                found[NODES] = FactError(exc.message, retryable=exc.retryable)
        return found

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        found = super().validate(desired, facts)
        attrs = desired.attributes
        nodes = facts.get(NODES)
        if isinstance(nodes, FactError):
            return [*found, error(f"{desired.address}: {nodes.message}",
                                  address=desired.address)]
        if contains_unknown([attrs.get("accelerator"), attrs.get("gpus_per_node"),
                             attrs.get("nodes")]) or nodes is None:
            return found
        accelerator = str(attrs.get("accelerator") or CPU)
        per_node, count = int(attrs.get("gpus_per_node") or 0), int(attrs.get("nodes") or 1)
        if accelerator == CPU or per_node == 0:
            return found
        fitting = [n for n in nodes if not n["unschedulable"] and n["gpus"] >= per_node
                   and matches(accelerator, n["product"].replace("-", " "))]
        if len(fitting) >= count:
            return found
        have = ", ".join(f"{n['name']}: {n['gpus']} × {n['product'] or 'unlabelled GPU'}"
                         for n in nodes if n["gpus"]) or "no node with nvidia.com/gpu"
        return [*found, error(
            f"{desired.address}: the cluster has {len(fitting)} node(s) with {per_node} "
            f"allocatable {accelerator} GPU(s), {count} needed",
            detail=f"Nodes with GPUs: {have}.", address=desired.address,
            hint="Lower gpus_per_node or nodes, pick another accelerator, or add nodes "
                 f"({GPU} allocatable, {GPU_PRODUCT} label).")]
