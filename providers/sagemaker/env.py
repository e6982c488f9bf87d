"""What every kind handler of the `sagemaker` provider shares: AWS access, the bucket
(`SageMakerEnv.store`, the kit's `ObjectStore`), names and ownership tags.

Names are deterministic from stack, environment and address (plus, for immutable
objects, a hash of their content; `kit.names.bounded_name`), so a retried or crashed
create finds what it made.  Every object carries the kit's three ownership tags;
`check_owner` refuses to adopt an object whose tags say another stack or environment
(or another address) owns it.  `SageMakerHandler` is the per-kind handler base.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

from mlform.providers.base import ProviderContext
from mlform.providers.kit.digests import DigestCache
from mlform.providers.kit.handlers import KindHandler
from mlform.providers.kit.names import OWNER_TAGS, Owner, bounded_name
from mlform.providers.kit.storage import ObjectStore

from .aws import Aws, Missing
from .config import SageMakerConfig

#: SageMaker names: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}
NAME_LIMIT = 63


def _clean(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9]+", "-", text)).strip("-")


@dataclass
class SageMakerEnv:
    """The provider's configured view: AWS access, the bucket, config and the run context.

    `aws` is for SageMaker, CloudWatch, Scheduler and Application Auto Scaling; every S3
    call goes through `store` (the provider's bucket) or `bucket_store` (another bucket,
    e.g. an ``s3://`` dataset source).  Stores are built once, on first use, and shared
    by the engine's threads.
    """

    context: ProviderContext
    config: SageMakerConfig
    aws: Aws
    _stores: dict[str, ObjectStore] = field(default_factory=dict, init=False, repr=False,
                                            compare=False)
    _stores_lock: threading.Lock = field(default_factory=threading.Lock, init=False,
                                         repr=False, compare=False)

    @property
    def digests(self) -> DigestCache:
        """The digest cache the engine and every provider of this stack share."""
        return DigestCache.shared(self.context.cache_dir)

    @property
    def prefix(self) -> str:
        return (self.config.prefix.replace("{stack}", self.context.stack)
                .replace("{env}", self.context.env).strip("/"))

    @property
    def store(self) -> ObjectStore:
        """The provider's bucket, ``s3://{bucket}/{prefix}``."""
        return self.bucket_store(self.config.bucket)

    def bucket_store(self, bucket: str) -> ObjectStore:
        """The store of `bucket`, reached with the provider's endpoint, region, profile and
        retries (the provider's own bucket carries the prefix); one per bucket."""
        found = self._stores.get(bucket)
        if found is None:
            with self._stores_lock:
                found = self._stores.get(bucket)
                if found is None:
                    prefix = self.prefix if bucket == self.config.bucket else ""
                    found = self._stores[bucket] = ObjectStore(
                        f"s3://{bucket}/{prefix}", endpoint_url=self.config.endpoint_url,
                        region=self.config.region, max_attempts=self.config.max_attempts,
                        profile=self.config.profile)
        return found

    def key(self, *parts: str) -> str:
        """An S3 key under the provider's prefix.

        The same as ``store.key(*parts)`` for every prefix but the empty one, where this
        has always written a leading ``/`` (``/datasets/...``): the keys buckets already
        hold, so it is kept rather than delegated.
        """
        return "/".join([self.prefix, *[p.strip("/") for p in parts if p]])

    def s3_uri(self, *parts: str) -> str:
        return f"s3://{self.config.bucket}/{self.key(*parts)}"

    @property
    def name_prefix(self) -> str:
        """What every name of this stack and environment starts with (`name`'s readable
        part begins with it), for listings by prefix."""
        return _clean(f"{self.context.stack}-{self.context.env}")

    def name(self, address: str, suffix: str = "", limit: int = NAME_LIMIT) -> str:
        """A SageMaker-valid name, unique per (stack, env, address[, suffix])
        (`kit.names.bounded_name`: readable part first, then a hash of the identity)."""
        return bounded_name(self.context.stack, self.context.env, address, suffix, limit=limit)

    def model_name(self, model_address: str, version: int | str) -> str:
        """The SageMaker Model made for version `version` of `model_address`.

        Shared by the model handler (which creates it) and the endpoint handler (which
        serves it, knowing only the model's compact reference: address and version).
        """
        return self.name(model_address, suffix=f"v{version}")

    def owner(self, address: str) -> Owner:
        return Owner(self.context.stack, self.context.env, address)

    def owner_tags(self, address: str) -> dict[str, str]:
        return self.owner(address).tags()

    def tag_map(self, address: str, user: Mapping[str, str] | None = None) -> dict[str, str]:
        """The user's tags plus the ownership tags (which win); S3 objects take these."""
        return {k: str(v) for k, v in {**dict(user or {}), **self.owner_tags(address)}.items()}

    def tags(self, address: str, user: Mapping[str, str] | None = None) -> list[dict]:
        """AWS tag list (`tag_map`, sorted), as SageMaker and CloudWatch take them."""
        return [{"Key": k, "Value": v} for k, v in sorted(self.tag_map(address, user).items())]

    def owns(self, tags: Mapping[str, str], address: str) -> bool:
        """True when the ownership tags name this stack, environment and address."""
        return Owner.from_tags(tags) == self.owner(address)

    def check_owner(self, tags: Mapping[str, str], address: str, what: str, *,
                    untagged_ok: bool = False) -> None:
        """Refuse an object another stack, environment or resource owns (`kit.names`)."""
        self.owner(address).check(Owner.from_tags(tags), what, unmarked_ok=untagged_ok,
                                  marks="ownership tags")


def tag_dict(tags: list[dict] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}


def user_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Tags without the ownership ones (what the spec's `tags` holds)."""
    return {k: v for k, v in tags.items() if k not in OWNER_TAGS}


def name_from_url(url: str) -> str | None:
    """The endpoint name inside an invocation URL (…/endpoints/NAME/invocations)."""
    match = re.search(r"/endpoints/([^/]+)/invocations", url or "")
    return match.group(1) if match else None


def stale_key(env: SageMakerEnv, pipeline_address: str) -> str:
    """S3 key of `pipeline_address`'s stale marker: a monitor's drift check writes it on a
    breach when on_breach = "retrain"; the pipeline handler reads it and re-runs."""
    return env.key("stale", env.name(pipeline_address) + ".json")


class SageMakerHandler(KindHandler):
    """One kind's handler on SageMaker: the kit's handler plus AWS helpers."""

    def __init__(self, env: SageMakerEnv) -> None:
        super().__init__(env)
        self.env: SageMakerEnv = env
        self.aws = env.aws

    # -- helpers every SageMaker-backed handler uses -------------------------------------

    def sagemaker_tags(self, arn: str, address: str) -> dict[str, str]:
        """The tags of a SageMaker object, as a dict."""
        return tag_dict(list(self.aws.pages("sagemaker", "list_tags", "Tags", address=address,
                                            ResourceArn=arn)))

    def heal_tags(self, arn: str, live: Mapping[str, str], want: list[dict],
                  address: str) -> None:
        """Make a SageMaker object's tags `want` (an AWS tag list, as `SageMakerEnv.tags`
        makes): tags changed outside mlform are drift.  AWS's own ``aws:`` tags stay."""
        wanted = tag_dict(want)
        add = [{"Key": k, "Value": v} for k, v in sorted(wanted.items()) if live.get(k) != v]
        drop = sorted(k for k in live if k not in wanted and not k.startswith("aws:"))
        if add:
            self.aws.call("sagemaker", "add_tags", address=address, ResourceArn=arn, Tags=add)
        if drop:
            self.aws.call("sagemaker", "delete_tags", address=address, ResourceArn=arn,
                          TagKeys=drop)

    def forget(self, operation: str, address: str, **kwargs: Any) -> None:
        """A SageMaker delete call for which absent already is success."""
        try:
            self.aws.call("sagemaker", operation, address=address, **kwargs)
        except Missing:
            pass

    def close(self) -> None:
        pass


__all__ = ["SageMakerEnv", "SageMakerHandler", "OWNER_TAGS", "tag_dict", "user_tags",
           "name_from_url", "stale_key"]
