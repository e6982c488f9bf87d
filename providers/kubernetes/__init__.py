"""The `kubernetes` provider: datasets, training clusters, pipelines, models and
endpoints as Kubernetes objects (docs/kubernetes-provider.md)."""

from .provider import KubernetesProvider

__all__ = ["KubernetesProvider"]
