"""The `sagemaker` provider's bucket: where things are kept, and small JSON objects in it.

Everything lives under the provider's prefix (``mlform/{stack}/{env}`` by default)::

    datasets/<name>/dataset.json              the dataset's record (attributes, digest, keys)
    datasets/<name>/<sha256>/<file name>      an uploaded file dataset
    datasets/<name>/<sha256>/<relative path>  every file of an uploaded directory dataset
    clusters/<name>.json                      a training cluster's compute profile
    code/<sha256>/sourcedir.tar.gz            a pipeline's code, once per content
    runs/<name>/<job name>/output/model.tar.gz  a training job's model (written by SageMaker)
    runs/<name>/<job name>.json               the attributes a job was started with
    stale/<name>.json                         a monitor's "re-run this pipeline" marker
                                              (`env.stale_key`)
    resources/<kind>/<name>.json              the attributes last applied to a model,
                                              endpoint or monitor (`record_key`)
    monitors/<name>/code/                     a monitor's drift check scripts
    monitors/<name>/reports/                  its reports (written by the check)

`<name>` is ``env.name(address)``, the provider's one naming rule (readable stack,
environment and address, then a hash of them), so two addresses never share a folder.
Handlers of other kinds (a pipeline reading a cluster profile) use these functions,
never their own copy of the layout.

Records, profiles and markers are small JSON objects written whole with the ownership
tags (S3 object tagging) and read back with their tags, so a key some other stack wrote
(a shared bucket, a copied prefix) is refused rather than adopted.  The
``resources/`` records (`save_record` / `load_record`) are checked by the address they
hold instead: records written before they were tagged must still be read.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any, Mapping

from mlform.providers.base import ProviderError

from .aws import Missing
from .env import SageMakerEnv, tag_dict

__all__ = ["dataset_prefix", "dataset_record", "cluster_profile", "code_key", "runs_prefix",
           "run_record", "record_key", "tagging", "put_json", "get_json", "object_tags",
           "delete_keys", "list_keys", "save_record", "load_record", "delete_record"]


def dataset_prefix(env: SageMakerEnv, address: str) -> str:
    """Key prefix (ending in /) of every object a dataset uploads."""
    return env.key("datasets", env.name(address)) + "/"


def dataset_record(env: SageMakerEnv, address: str) -> str:
    return env.key("datasets", env.name(address), "dataset.json")


def cluster_profile(env: SageMakerEnv, address: str) -> str:
    return env.key("clusters", f"{env.name(address)}.json")


def code_key(env: SageMakerEnv, sha256: str) -> str:
    return env.key("code", sha256, "sourcedir.tar.gz")


def runs_prefix(env: SageMakerEnv, address: str) -> str:
    """The training jobs' S3OutputPath folder (ending in /) of a pipeline."""
    return env.key("runs", env.name(address)) + "/"


def run_record(env: SageMakerEnv, address: str, job_name: str) -> str:
    return env.key("runs", env.name(address), f"{job_name}.json")


def record_key(env: SageMakerEnv, kind: str, address: str) -> str:
    """S3 key of the attributes last applied to `address` (what AWS cannot tell: the spec's
    references), read back when the engine recovers a create or imports by id."""
    return env.key("resources", kind, env.name(address) + ".json")


# -- small objects -----------------------------------------------------------------

def tagging(tags: list[dict]) -> str:
    """An AWS tag list as S3's ``Tagging`` request parameter (URL-encoded query)."""
    return urllib.parse.urlencode([(t["Key"], t["Value"]) for t in tags])


def put_json(env: SageMakerEnv, key: str, doc: Any, *, address: str,
             user_tags: Mapping[str, str] | None = None) -> None:
    body = json.dumps(doc, sort_keys=True, indent=1, default=str).encode()
    env.aws.call("s3", "put_object", address=address, Bucket=env.config.bucket, Key=key,
                 Body=body, ContentType="application/json",
                 Tagging=tagging(env.tags(address, user_tags)))


def get_json(env: SageMakerEnv, key: str, *, address: str = "") -> tuple[Any, dict] | None:
    """(document, the GetObject answer without its body), or None when there is no such key.

    A body that is not JSON reads as None too: such a key was not written by mlform.
    """
    found = env.aws.find("s3", "get_object", address=address, Bucket=env.config.bucket, Key=key)
    if found is None:
        return None
    body = found.pop("Body")
    try:
        return json.loads(body.read()), found
    except ValueError:
        return None
    finally:
        body.close()


def object_tags(env: SageMakerEnv, key: str, *, address: str = "") -> dict[str, str] | None:
    found = env.aws.find("s3", "get_object_tagging", address=address,
                         Bucket=env.config.bucket, Key=key)
    return None if found is None else tag_dict(found.get("TagSet"))


def list_keys(env: SageMakerEnv, prefix: str, *, address: str = "",
              bucket: str | None = None) -> list[dict]:
    """Every object under `prefix` (Key, Size, ETag, LastModified), in key order."""
    items: list[dict] = []
    kwargs: dict[str, Any] = {"Bucket": bucket or env.config.bucket, "Prefix": prefix}
    while True:
        page = env.aws.call("s3", "list_objects_v2", address=address, **kwargs)
        items.extend(page.get("Contents") or [])
        if not page.get("IsTruncated"):
            return items
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


def delete_keys(env: SageMakerEnv, keys: list[str], *, address: str) -> None:
    """Delete keys of the provider's bucket, 1,000 per request (S3's limit)."""
    for start in range(0, len(keys), 1000):
        batch = keys[start:start + 1000]
        answer = env.aws.call("s3", "delete_objects", address=address, Bucket=env.config.bucket,
                              Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
        failed = answer.get("Errors") or []
        if failed:
            first = failed[0]
            raise ProviderError(f"could not delete {len(failed)} object(s), e.g. "
                                f"s3://{env.config.bucket}/{first.get('Key')}: "
                                f"{first.get('Code')}: {first.get('Message')}",
                                address=address, retryable=True)


# -- resource records --------------------------------------------------------------

def save_record(env: SageMakerEnv, kind: str, address: str, attributes: Mapping[str, Any],
                **extra: Any) -> None:
    """Write `address`'s record, unless the stored one already says the same: a repeated
    apply must make no mutating call."""
    key = record_key(env, kind, address)
    # the document as it reads back (JSON types, default=str), so equal means unchanged
    doc = json.loads(json.dumps({"address": address, "kind": kind,
                                 "attributes": dict(attributes), **extra}, default=str))
    found = get_json(env, key, address=address)
    if found is not None and found[0] == doc:
        return
    put_json(env, key, doc, address=address)


def load_record(env: SageMakerEnv, kind: str, address: str) -> dict:
    """The saved record ({"attributes": ...}), or {} when there is none (or it is another
    address's)."""
    found = get_json(env, record_key(env, kind, address), address=address)
    doc = found[0] if found is not None else None
    return doc if isinstance(doc, dict) and doc.get("address") == address else {}


def delete_record(env: SageMakerEnv, kind: str, address: str) -> None:
    try:
        env.aws.call("s3", "delete_object", address=address, Bucket=env.config.bucket,
                     Key=record_key(env, kind, address))
    except Missing:
        pass
