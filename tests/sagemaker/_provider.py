"""Building a `SageMakerProvider` against the emulator, for the handler tests."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from mlform.plan.planner import settings_problems
from mlform.providers.base import Desired, LiveObject, ProgressEvent, ProviderContext
from mlform.providers.sagemaker import SageMakerProvider
from mlform.providers.kit import calls as contract

BUCKET = "mlform-test"


def build(aws, stack_dir: Path, *, stack: str = "shop", env: str = "test",
          progress: Callable[[ProgressEvent], None] | None = None, **config) -> SageMakerProvider:
    """A provider for stack/env whose bucket exists; progress events go to `progress`."""
    buckets = [b["Name"] for b in aws.client("s3").list_buckets().get("Buckets", [])]
    if BUCKET not in buckets:
        aws.client("s3").create_bucket(Bucket=BUCKET)
    context = ProviderContext(name="sagemaker", alias=None, stack=stack, env=env,
                              stack_dir=stack_dir, config=aws.provider_config(BUCKET, **config),
                              progress=progress or (lambda event: None))
    return SageMakerProvider(context)


def apply(provider: SageMakerProvider, kind: str, address: str, attrs: dict,
          prior: LiveObject | None = None) -> LiveObject:
    """plan, then create (no prior) or update (a prior): what `mlform apply` does."""
    desired = Desired(address, kind, address.split(".", 1)[1], attrs)
    planned = contract.plan(provider, desired, prior)
    return provider.update(prior, planned) if prior else provider.create(planned)


def keys(aws, prefix: str = "") -> list[str]:
    listed = aws.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def count(aws, action: str) -> int:
    return sum(1 for call in aws.calls() if call["action"] == action)


def settings_summaries(kind: str, address: str, settings: dict) -> list[str]:
    """What the engine says of a `settings { }` block checked against the sagemaker
    provider's settings model of `kind` (providers do not check settings themselves)."""
    model = SageMakerProvider.kinds[kind].settings_model
    return [d.summary for d in settings_problems(model, settings, address, None, "sagemaker", kind)]
