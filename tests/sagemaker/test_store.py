"""The sagemaker provider's S3 access is the kit's `ObjectStore` (`env.store`): one per
bucket, built once, with the provider's endpoint and retries, and keys unchanged."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mlform.providers.base import ProviderContext
from mlform.providers.kit.storage import ObjectStore
from mlform.providers.sagemaker import bucket
from mlform.providers.sagemaker.aws import Aws
from mlform.providers.sagemaker.config import SageMakerConfig
from mlform.providers.sagemaker.env import SageMakerEnv, stale_key

ROLE = "arn:aws:iam::123456789012:role/mlform"


def _env(tmp_path: Path, **config) -> SageMakerEnv:
    settings = {"region": "eu-west-1", "role_arn": ROLE, "bucket": "ml-bucket", **config}
    context = ProviderContext(name="sagemaker", alias=None, stack="shop", env="prod",
                              stack_dir=tmp_path, config=settings)
    parsed = SageMakerConfig.model_validate(settings)
    return SageMakerEnv(context=context, config=parsed, aws=Aws(parsed, context))


def test_the_store_is_the_configured_bucket_and_prefix_built_once(tmp_path):
    env = _env(tmp_path, endpoint_url="http://127.0.0.1:9", max_attempts=3, profile="ml")
    with ThreadPoolExecutor(8) as pool:
        stores = list(pool.map(lambda _: env.store, range(32)))
    store = stores[0]
    assert isinstance(store, ObjectStore) and all(s is store for s in stores)
    assert (store.bucket, store.prefix) == ("ml-bucket", "mlform/shop/prod")
    assert (store.endpoint_url, store.region, store.max_attempts, store.profile) == (
        "http://127.0.0.1:9", "eu-west-1", 3, "ml")
    assert env.bucket_store("ml-bucket") is store


def test_another_bucket_gets_its_own_store_without_the_prefix(tmp_path):
    env = _env(tmp_path, endpoint_url="http://127.0.0.1:9")
    other = env.bucket_store("raw-data")
    assert other is env.bucket_store("raw-data") and other is not env.store
    assert (other.bucket, other.prefix, other.endpoint_url) == (
        "raw-data", "", "http://127.0.0.1:9")


@pytest.mark.parametrize("prefix", ["mlform/{stack}/{env}", "/team/{env}/", "x"])
def test_keys_are_the_ones_buckets_already_hold(tmp_path, prefix):
    env = _env(tmp_path, prefix=prefix)
    for parts in [("datasets", "a", "dataset.json"), ("code", "/abc/", "sourcedir.tar.gz"),
                  ("monitors", "m", "")]:
        assert env.key(*parts) == env.store.key(*parts)
        assert env.s3_uri(*parts) == env.store.uri(*parts)
    assert bucket.dataset_record(env, "dataset.a").startswith(env.store.prefix + "/datasets/")
    assert stale_key(env, "pipeline.p") == env.store.key("stale",
                                                         env.name("pipeline.p") + ".json")


def test_an_empty_prefix_keeps_its_leading_slash(tmp_path):
    """`env.key` is not `store.key`: with no prefix it has always written ``/datasets/…``
    (existing buckets hold those keys)."""
    env = _env(tmp_path, prefix="")
    assert env.key("datasets", "a") == "/datasets/a"
    assert env.store.key("datasets", "a") == "datasets/a"
