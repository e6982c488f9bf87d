"""The `local` provider: datasets, GPUs, training runs, a model registry, served
endpoints and drift monitors on this machine."""

from .provider import LocalProvider

__all__ = ["LocalProvider"]
