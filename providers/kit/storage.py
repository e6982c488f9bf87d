"""Object storage: one S3-compatible bucket and prefix, the kit's one S3 code.

Providers that keep datasets, code, artifacts and records in an object store (the
`kubernetes` provider's `storage`, the pods it starts) use `ObjectStore`; the AWS error
helpers (`error_code`, `error_message`, `is_missing`, `Missing`) are shared with the
`sagemaker` provider's clients, so an S3 answer means the same thing everywhere.

An `ObjectStore` is made from a URI (``s3://bucket/prefix``) and an optional
`endpoint_url` (MinIO, moto, a VPC endpoint).  Keys are relative to the prefix
(`key`), errors become `ProviderError`s naming the call and the service's answer, a
missing object is `Missing` (or None from the ``find``-style readers).  boto3 is
imported when the first client is built, so providers that never touch a store
still import without it.  Throttling and 5xx answers are retried by botocore's
``standard`` retry mode.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, Mapping

from mlform.providers.base import ProviderError

from .sources import parse_s3

__all__ = ["ObjectStore", "Missing", "error_code", "error_message", "is_missing",
           "RETRYABLE_CODES", "api_name", "tagging", "s3_client"]

# Error codes that mean "no such object" across the AWS services mlform uses.
_MISSING_CODES = {
    "ResourceNotFound", "ResourceNotFoundException", "NoSuchKey", "NoSuchBucket", "404",
    "NotFound", "NoSuchEntity",
}
# SageMaker answers a describe of a missing object with ValidationException and a text.
_MISSING_TEXT = ("could not find", "does not exist", "not found", "cannot find")
RETRYABLE_CODES = frozenset({
    "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
    "ServiceUnavailable", "InternalFailure", "InternalError", "SlowDown",
})


class Missing(Exception):
    """The object asked for does not exist."""


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or "")


def error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Message") or exc)


def is_missing(exc: BaseException) -> bool:
    """True when an AWS error says the object does not exist."""
    code = error_code(exc)
    if code in _MISSING_CODES:
        return True
    status = ((getattr(exc, "response", None) or {}).get("ResponseMetadata") or {}).get(
        "HTTPStatusCode")
    if status == 404:
        return True
    return code == "ValidationException" and any(
        text in error_message(exc).lower() for text in _MISSING_TEXT)


def api_name(operation: str) -> str:
    """``put_object`` -> ``PutObject`` (how AWS names the call in its documentation)."""
    return "".join(part.title() for part in operation.split("_"))


def tagging(tags: Mapping[str, str]) -> str:
    """Tags as S3's ``Tagging`` request parameter (a URL-encoded query)."""
    return urllib.parse.urlencode(sorted((k, str(v)) for k, v in tags.items()))


def s3_client(*, endpoint_url: str | None = None, region: str | None = None,
              max_attempts: int = 8, profile: str | None = None) -> Any:
    """A boto3 S3 client the way mlform builds them: standard retries, path-style
    addressing where an endpoint is given (moto, MinIO; AWS accepts it too)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(profile_name=profile, region_name=region)
    return session.client("s3", endpoint_url=endpoint_url, config=Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        max_pool_connections=64, connect_timeout=10, read_timeout=60,
        s3={"addressing_style": "path"} if endpoint_url else None))


class ObjectStore:
    """A bucket and a key prefix in an S3-compatible store, shared by threads."""

    def __init__(self, uri: str, *, endpoint_url: str | None = None,
                 region: str | None = None, max_attempts: int = 8,
                 profile: str | None = None) -> None:
        self.bucket, prefix = parse_s3(uri if uri.endswith("/") else uri + "/")
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.max_attempts = max_attempts
        self.profile = profile
        self._client: Any = None
        self._lock = threading.Lock()

    # -- where ---------------------------------------------------------------------

    def key(self, *parts: str) -> str:
        """A key under the store's prefix."""
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"

    # -- calls ---------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:   # building a boto3 client is not thread-safe; using one is
                if self._client is None:
                    self._client = s3_client(endpoint_url=self.endpoint_url,
                                             region=self.region,
                                             max_attempts=self.max_attempts,
                                             profile=self.profile)
        return self._client

    def call(self, operation: str, *, address: str = "", **kwargs: Any) -> Any:
        """One S3 call; errors become ProviderErrors naming it (`Missing` when absent)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            if is_missing(exc):
                raise Missing(f"s3.{operation}: {error_message(exc)}") from exc
            code = error_code(exc)
            raise ProviderError(f"s3 {api_name(operation)} failed: {code}: {error_message(exc)}",
                                address=address, service_message=error_message(exc),
                                retryable=code in RETRYABLE_CODES) from exc
        except BotoCoreError as exc:   # connection refused, timeouts, credentials
            raise ProviderError(f"s3 {api_name(operation)} failed: {exc} (storage "
                                f"{self.uri()}"
                                + (f", endpoint {self.endpoint_url}" if self.endpoint_url else "")
                                + ")", address=address, retryable=True) from exc

    def find(self, operation: str, **kwargs: Any) -> Any:
        """`call`, with a missing object answered by None."""
        try:
            return self.call(operation, **kwargs)
        except Missing:
            return None

    # -- objects -------------------------------------------------------------------

    def head(self, key: str, *, address: str = "") -> dict | None:
        return self.find("head_object", address=address, Bucket=self.bucket, Key=key)

    def put_bytes(self, key: str, body: bytes, *, address: str = "",
                  tags: Mapping[str, str] | None = None,
                  content_type: str = "application/octet-stream") -> None:
        extra = {"Tagging": tagging(tags)} if tags else {}
        self.call("put_object", address=address, Bucket=self.bucket, Key=key, Body=body,
                  ContentType=content_type, **extra)

    def put_json(self, key: str, doc: Any, *, address: str = "",
                 tags: Mapping[str, str] | None = None) -> None:
        body = json.dumps(doc, sort_keys=True, indent=1, default=str).encode()
        self.put_bytes(key, body, address=address, tags=tags,
                       content_type="application/json")

    def get_bytes(self, key: str, *, address: str = "") -> bytes | None:
        found = self.find("get_object", address=address, Bucket=self.bucket, Key=key)
        if found is None:
            return None
        body = found["Body"]
        try:
            return body.read()
        finally:
            body.close()

    def get_json(self, key: str, *, address: str = "") -> Any:
        """The JSON document at `key`; None when there is none (or it is not JSON: such
        a key was not written by mlform)."""
        body = self.get_bytes(key, address=address)
        if body is None:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None

    def tags(self, key: str, *, address: str = "") -> dict[str, str] | None:
        found = self.find("get_object_tagging", address=address, Bucket=self.bucket, Key=key)
        return None if found is None else {t["Key"]: t["Value"]
                                           for t in found.get("TagSet") or []}

    def list(self, prefix: str, *, address: str = "") -> list[dict]:
        """Every object under `prefix` (Key, Size, ETag, LastModified), in key order."""
        items: list[dict] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            page = self.call("list_objects_v2", address=address, **kwargs)
            items.extend(page.get("Contents") or [])
            if not page.get("IsTruncated"):
                return items
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def delete(self, keys: Iterable[str], *, address: str = "") -> None:
        """Delete keys, 1,000 per request (S3's limit); absent keys are fine."""
        keys = list(keys)
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            answer = self.call("delete_objects", address=address, Bucket=self.bucket,
                               Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            failed = answer.get("Errors") or []
            if failed:
                first = failed[0]
                raise ProviderError(f"could not delete {len(failed)} object(s), e.g. "
                                    f"s3://{self.bucket}/{first.get('Key')}: "
                                    f"{first.get('Code')}: {first.get('Message')}",
                                    address=address, retryable=True)

    def delete_prefix(self, prefix: str, *, address: str = "") -> None:
        self.delete([item["Key"] for item in self.list(prefix, address=address)],
                    address=address)

    def upload(self, path: Path, key: str, *, address: str = "",
               tags: Mapping[str, str] | None = None) -> None:
        """Upload one file (multipart when large, through boto3's transfer manager)."""
        extra = {"Tagging": tagging(tags)} if tags else {}
        try:
            self.client.upload_file(str(path), self.bucket, key, ExtraArgs=extra or None)
        except Exception as exc:   # S3UploadFailedError wraps the ClientError
            raise ProviderError(f"uploading {path} to s3://{self.bucket}/{key} failed: {exc}",
                                address=address, retryable=True) from exc

    def download(self, key: str, path: Path, *, address: str = "") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, key, str(path))
        except Exception as exc:
            if is_missing(exc) or "404" in str(exc):
                raise Missing(f"s3://{self.bucket}/{key} does not exist") from exc
            raise ProviderError(f"downloading s3://{self.bucket}/{key} failed: {exc}",
                                address=address, retryable=True) from exc
        return path

    def download_prefix(self, prefix: str, target: Path, *, address: str = "") -> list[Path]:
        """Every object under `prefix` into `target`, keeping the paths below it."""
        prefix = prefix.rstrip("/") + "/"
        found = []
        for item in self.list(prefix, address=address):
            relative = item["Key"][len(prefix):]
            if relative and not relative.endswith("/"):
                found.append(self.download(item["Key"], target / relative, address=address))
        return found
