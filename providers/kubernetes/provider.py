"""`KubernetesProvider`: the ML chain on any conformant Kubernetes cluster.

| kind | Kubernetes objects |
| --- | --- |
| dataset | object(s) in the S3-compatible `storage`, once per digest (`s3://` read in place) |
| training_cluster | Namespace + ResourceQuota; capacity from the nodes' `nvidia.com/gpu` |
| pipeline | a `batch/v1` Job per run fingerprint (Indexed Job + headless Service for several nodes) |
| model | immutable ConfigMaps, one per version (stage and approval labels) |
| endpoint | Deployment + Service (+ HPA), rolling updates, canary Deployment |
| monitor | a CronJob running the drift check on captured requests in `storage` |

`mlform export pulumi` and `import-state pulumi` map these objects to and from
pulumi_kubernetes resources (`pulumi_export`, `pulumi_claims`).

Built on the provider kit: each kind is one handler module; this class only says
which, and builds their `KubeEnv` (docs/kubernetes-provider.md).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from mlform.providers.base import (
    CostBasis, Desired, Diagnostic, ExportObject, FactError, FactKey, Facts, LiveObject,
    ProviderContext, ProviderError, PulumiClaim, PulumiResource, error,
)
from mlform.providers.kit.handlers import HandlerProvider
from mlform.providers.kit.pricing import config_table, table_cost_basis

from . import pulumi_claims, pulumi_export
from .api import Kube
from .clusters import ClusterHandler
from .config import KubernetesConfig
from .datasets import DatasetHandler
from .endpoints import EndpointHandler
from .env import KubeEnv
from .models import ModelHandler
from .monitors import MonitorHandler
from .pipelines import PipelineHandler

__all__ = ["KubernetesProvider"]

#: the fact every plan reads once: does the cluster answer (FactError: why not)
REACHABLE = FactKey("kubernetes", "reachable")


class KubernetesProvider(HandlerProvider):
    name = "kubernetes"
    config_model = KubernetesConfig
    HANDLERS = {
        "dataset": DatasetHandler,
        "training_cluster": ClusterHandler,
        "pipeline": PipelineHandler,
        "model": ModelHandler,
        "endpoint": EndpointHandler,
        "monitor": MonitorHandler,
    }

    def cost_basis(self, kind: str, attributes: Mapping[str, Any],
                   prior: Mapping[str, Any] | None = None) -> CostBasis | None:
        """Endpoints and pipelines priced from the block's `prices` (none: not priced)."""
        return table_cost_basis(config_table(self.name, self.config.prices), kind,
                                attributes, prior)

    def pulumi_resources(self, obj: ExportObject) -> list[PulumiResource]:
        """The pulumi_kubernetes resources of the objects `create` makes for `obj`."""
        return pulumi_export.resources(self, obj)

    def pulumi_claims(self, resources: Sequence[Mapping[str, Any]]) -> list[PulumiClaim]:
        """Which objects of a Pulumi stack export are this stack environment's."""
        return pulumi_claims.claims(self, resources)

    def make_env(self, context: ProviderContext, config: KubernetesConfig) -> KubeEnv:
        try:
            import boto3  # noqa: F401
            import lightkube  # noqa: F401  (fail at configure time, with the fix)
        except ImportError as exc:
            raise ProviderError('the kubernetes provider needs lightkube and boto3: '
                                'pip install "mlform[kubernetes]"') from exc
        return KubeEnv(context=context, config=config, kube=Kube(config, context))

    # Every plan asks the cluster once whether it answers (whatever the kinds planned): a
    # wrong kubeconfig or context is a diagnostic at plan, naming both, not an apply error.
    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> Sequence[FactKey]:
        return (*super().fact_keys(desired, prior), REACHABLE)

    def read_facts(self, keys: Sequence[FactKey]) -> dict[FactKey, Any]:
        found = super().read_facts([k for k in keys if k != REACHABLE])
        if REACHABLE in keys:
            try:   # mlform keeps its models there: any identity that can use it may list them
                self.env.kube.list("v1", "ConfigMap", self.config.namespace,
                                   labels={"app.kubernetes.io/managed-by": "mlform"})
                found[REACHABLE] = True
            except ProviderError as exc:
                found[REACHABLE] = FactError(exc.message, retryable=exc.retryable)
        return found

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        reached = facts.get(REACHABLE)
        if isinstance(reached, FactError):
            return [error(f"{desired.address}: {reached.message}", address=desired.address,
                          hint="Check the provider's kubeconfig and context (or KUBECONFIG).")]
        return super().validate(desired, facts)

    def close(self) -> None:
        super().close()
        self.env.kube.close()
