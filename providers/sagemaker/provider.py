"""`SageMakerProvider`: the ML chain on Amazon SageMaker, through boto3.

| kind | SageMaker objects |
| --- | --- |
| dataset | S3 object(s), uploaded once per digest (`s3://` sources are read, not copied) |
| training_cluster | a validated compute profile (JSON in S3) that training jobs use |
| pipeline | a training job named from the run fingerprint (+ a Pipeline definition) |
| model | model package group, model package (approval), SageMaker Model |
| endpoint | hash-named EndpointConfig + Endpoint, blue/green updates |
| monitor | drift-check Pipeline, EventBridge Scheduler schedule, CloudWatch alarm |

Built on the provider kit: each kind is one handler module; this class only says
which, and builds their `SageMakerEnv`.  `pulumi_export` and `pulumi_import` are its
half of `mlform export pulumi` and `mlform import-state pulumi` (docs/pulumi.md).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from mlform.providers.base import (
    CostBasis, ExportObject, ProviderContext, ProviderError, PulumiClaim, PulumiResource,
)
from mlform.providers.kit.handlers import HandlerProvider

from . import pricing, pulumi_export, pulumi_import
from .aws import Aws
from .clusters import ClusterHandler
from .config import SageMakerConfig
from .datasets import DatasetHandler
from .endpoints import EndpointHandler
from .env import SageMakerEnv
from .models import ModelHandler
from .monitors import MonitorHandler
from .pipelines import PipelineHandler

__all__ = ["SageMakerProvider"]


class SageMakerProvider(HandlerProvider):
    name = "sagemaker"
    config_model = SageMakerConfig
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
        """Endpoints and pipelines priced from the shipped, dated table (`pricing`)."""
        return pricing.cost_basis(self.config.region, kind, attributes, prior)

    def pulumi_resources(self, obj: ExportObject) -> list[PulumiResource]:
        """pulumi_aws resources declaring what `create` makes (`pulumi_export`)."""
        return pulumi_export.pulumi_resources(self.handler(obj.kind, obj.address), obj)

    def pulumi_claims(self, resources: Sequence[Mapping[str, Any]]) -> list[PulumiClaim]:
        """The resources of a Pulumi stack export this provider manages (`pulumi_import`)."""
        return pulumi_import.pulumi_claims(self.env, resources)

    def make_env(self, context: ProviderContext, config: SageMakerConfig) -> SageMakerEnv:
        try:
            import boto3  # noqa: F401  (fail at configure time, with the fix)
        except ImportError as exc:
            raise ProviderError('the sagemaker provider needs boto3: '
                                'pip install "mlform[sagemaker]"') from exc
        return SageMakerEnv(context=context, config=config, aws=Aws(config, context))
