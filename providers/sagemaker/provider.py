"""`SageMakerProvider`: the ML chain on Amazon SageMaker, through boto3.

| kind | SageMaker objects |
| --- | --- |
| dataset | S3 object(s), uploaded once per digest (`s3://` sources are read, not copied) |
| training_cluster | a validated compute profile (JSON in S3) that training jobs use |
| pipeline | a training job named from the run fingerprint (+ a Pipeline definition) |
| model | model package group, model package (approval), SageMaker Model |
| endpoint | hash-named EndpointConfig + Endpoint, blue/green updates |
| monitor | drift-check Pipeline, EventBridge Scheduler schedule, CloudWatch alarm |

Each kind is one handler module; this class only configures them (dispatch is
`HandlerProvider`'s, shared with the local provider).
"""

from __future__ import annotations

from mlform.providers.base import ProviderContext, ProviderError
from mlform.providers.dispatch import HandlerProvider

from .aws import Aws
from .clusters import ClusterHandler
from .common import KindHandler, SageMakerEnv
from .config import SageMakerConfig
from .datasets import DatasetHandler
from .endpoints import EndpointHandler
from .models import ModelHandler
from .monitors import MonitorHandler
from .training import PipelineHandler

__all__ = ["SageMakerProvider"]

HANDLERS: dict[str, type[KindHandler]] = {
    "dataset": DatasetHandler,
    "training_cluster": ClusterHandler,
    "pipeline": PipelineHandler,
    "model": ModelHandler,
    "endpoint": EndpointHandler,
    "monitor": MonitorHandler,
}


class SageMakerProvider(HandlerProvider):
    name = "sagemaker"
    HANDLERS = HANDLERS
    kinds = {kind: handler.schema for kind, handler in HANDLERS.items()}
    config_model = SageMakerConfig

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        config = self.parse_config(SageMakerConfig)
        try:
            import boto3  # noqa: F401  (fail at configure time, with the fix)
        except ImportError as exc:
            raise ProviderError('the sagemaker provider needs boto3: '
                                'pip install "mlform[sagemaker]"') from exc
        self.env = SageMakerEnv(context=context, config=config, aws=Aws(config, context))
        self.start_handlers(self.env)
