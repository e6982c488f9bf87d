"""`SageMakerProvider`: the ML chain on Amazon SageMaker, through boto3.

| kind | SageMaker objects |
| --- | --- |
| dataset | S3 object(s), uploaded once per digest (`s3://` sources are read, not copied) |
| training_cluster | a validated compute profile (JSON in S3) that training jobs use |
| pipeline | a training job named from the run fingerprint (+ a Pipeline definition) |
| model | model package group, model package (approval), SageMaker Model |
| endpoint | hash-named EndpointConfig + Endpoint, blue/green updates |
| monitor | drift-check Pipeline, EventBridge Scheduler schedule, CloudWatch alarm |

Each kind is one handler module; this class only configures them and dispatches.
"""

from __future__ import annotations

from pydantic import ValidationError

from mlform.diagnostics import Diagnostic
from mlform.providers.base import (
    Desired, LiveObject, Planned, Provider, ProviderContext, ProviderError,
)

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


class SageMakerProvider(Provider):
    name = "sagemaker"
    kinds = {kind: handler.schema for kind, handler in HANDLERS.items()}
    config_model = SageMakerConfig

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        settings = {k: v for k, v in dict(context.config).items() if k != "alias"}
        try:
            config = SageMakerConfig.model_validate(settings)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}"
                                 for e in exc.errors())
            raise ProviderError(f'invalid provider "sagemaker" configuration: {problems}') from exc
        try:
            import boto3  # noqa: F401  (fail at configure time, with the fix)
        except ImportError as exc:
            raise ProviderError('the sagemaker provider needs boto3: pip install "mlform[sagemaker]"') from exc
        self.env = SageMakerEnv(context=context, config=config, aws=Aws(config, context))
        self._handlers = {kind: cls(self.env) for kind, cls in HANDLERS.items()}

    def _handler(self, kind: str, address: str) -> KindHandler:
        handler = self._handlers.get(kind)
        if handler is None:
            raise ProviderError(f"the sagemaker provider does not serve {kind!r} resources",
                                address=address)
        return handler

    def validate(self, desired: Desired) -> list[Diagnostic]:
        return self._handler(desired.kind, desired.address).validate(desired)

    def plan(self, desired: Desired, prior: LiveObject | None) -> Planned:
        return self._handler(desired.kind, desired.address).plan(desired, prior)

    def create(self, planned: Planned) -> LiveObject:
        return self._handler(planned.kind, planned.address).create(planned)

    def read(self, prior: LiveObject) -> LiveObject | None:
        return self._handler(prior.kind, prior.address).read(prior)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        return self._handler(planned.kind, planned.address).update(prior, planned)

    def delete(self, prior: LiveObject) -> None:
        self._handler(prior.kind, prior.address).delete(prior)

    def action(self, live: LiveObject, name: str, args: dict | None = None) -> dict:
        try:
            return self._handler(live.kind, live.address).action(live, name, args or {})
        except NotImplementedError:
            raise ProviderError(f"{live.kind} resources have no action {name!r}",
                                address=live.address)

    def close(self) -> None:
        for handler in self._handlers.values():
            handler.close()
