"""The `sagemaker` provider's bucket: where things are kept, and small JSON objects in it.

Everything lives under the provider's prefix (``mlform/{stack}/{env}`` by default)::

    datasets/<name>/dataset.json              the dataset's record (attributes, digest, keys)
    datasets/<name>/<sha256>/<file name>      an uploaded file dataset
    datasets/<name>/<sha256>/<relative path>  every file of an uploaded directory dataset
    clusters/<name>.json                      a training cluster's compute profile
    code/<sha256>/sourcedir.tar.gz            a pipeline's code, once per content
    runs/<name>/<job name>/output/model.tar.gz  a training job's model (written by SageMaker)
    runs/<name>/<job name>.json               the attributes a job was started with
    records/<name>/<job name>.json            a run's record (kit.run_ledger)
    stale/<name>.json                         a monitor's "re-run this pipeline" marker
                                              (`env.stale_key`)
    resources/<kind>/<name>.json              the attributes last applied to a model,
                                              endpoint or monitor (`record_key`)
    capture/<name>/<endpoint name>/           an endpoint's captured requests (SageMaker)
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

The S3 calls themselves are the kit's `ObjectStore` (`env.store`: JSON, tags, listing,
batched deletes); this module only says where things are and which tags they carry.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from .env import SageMakerEnv

__all__ = ["dataset_prefix", "dataset_record", "cluster_profile", "capture_destination",
           "capture_prefix", "monitor_code", "code_key", "runs_prefix",
           "run_record", "record_key", "put_json", "save_record", "load_record",
           "delete_record"]


def dataset_prefix(env: SageMakerEnv, address: str) -> str:
    """Key prefix (ending in /) of every object a dataset uploads."""
    return env.key("datasets", env.name(address)) + "/"


def dataset_record(env: SageMakerEnv, address: str) -> str:
    return env.key("datasets", env.name(address), "dataset.json")


def cluster_profile(env: SageMakerEnv, address: str) -> str:
    return env.key("clusters", f"{env.name(address)}.json")


def capture_destination(env: SageMakerEnv, endpoint_address: str) -> str:
    """The DestinationS3Uri of an endpoint's data capture (SageMaker writes under it,
    one folder per endpoint name: `capture_prefix`)."""
    return env.s3_uri("capture", env.name(endpoint_address))


def capture_prefix(destination: str, endpoint_name: str) -> str:
    """Where the captured requests of the endpoint `endpoint_name` land, under its
    config's DestinationS3Uri `destination` (what a monitor's check reads)."""
    return f"{destination.rstrip('/')}/{endpoint_name}/"


def monitor_code(env: SageMakerEnv, address: str) -> str:
    """The key prefix (no trailing /) of a monitor's drift check scripts."""
    return env.key("monitors", env.name(address), "code")


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

def put_json(env: SageMakerEnv, key: str, doc: Any, *, address: str,
             user_tags: Mapping[str, str] | None = None) -> None:
    """Write `doc` at `key`, tagged with `user_tags` and `address`'s ownership tags."""
    env.store.put_json(key, doc, address=address, tags=env.tag_map(address, user_tags))


# -- resource records --------------------------------------------------------------

def save_record(env: SageMakerEnv, kind: str, address: str, attributes: Mapping[str, Any],
                **extra: Any) -> None:
    """Write `address`'s record, unless the stored one already says the same: a repeated
    apply must make no mutating call."""
    key = record_key(env, kind, address)
    # the document as it reads back (JSON types, default=str), so equal means unchanged
    doc = json.loads(json.dumps({"address": address, "kind": kind,
                                 "attributes": dict(attributes), **extra}, default=str))
    if env.store.get_json(key, address=address) == doc:
        return
    put_json(env, key, doc, address=address)


def load_record(env: SageMakerEnv, kind: str, address: str) -> dict:
    """The saved record ({"attributes": ...}), or {} when there is none (or it is another
    address's)."""
    doc = env.store.get_json(record_key(env, kind, address), address=address)
    return doc if isinstance(doc, dict) and doc.get("address") == address else {}


def delete_record(env: SageMakerEnv, kind: str, address: str) -> None:
    env.store.find("delete_object", address=address, Bucket=env.store.bucket,
                   Key=record_key(env, kind, address))
