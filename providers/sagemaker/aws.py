"""AWS access for the `sagemaker` provider: clients, error mapping, waiting.

SageMaker, CloudWatch, EventBridge Scheduler and Application Auto Scaling go through
`Aws`; S3 goes through the kit's `ObjectStore` (`SageMakerEnv.store`), whose error
helpers this module shares.

One `Aws` per configured provider.  boto3 clients are thread-safe once built (the
engine refreshes and applies from many threads), but building them is not, so they
are built once under a lock.  Throttling and 5xx answers are retried by botocore's
``standard`` retry mode (exponential backoff with jitter, `max_attempts` tries);
what still fails becomes a `ProviderError` carrying the service's code and message.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable

from mlform.providers.base import ProgressEvent, ProviderContext, ProviderError

from mlform.providers.kit.storage import (
    RETRYABLE_CODES, Missing, api_name, error_code, error_message, is_missing,
)

from .config import SageMakerConfig

class Aws:
    """Clients for the services the provider uses, built lazily, shared by threads."""

    SERVICES = ("sagemaker", "cloudwatch", "scheduler", "application-autoscaling")

    def __init__(self, config: SageMakerConfig, context: ProviderContext) -> None:
        self.config = config
        self.context = context
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._session = None

    def client(self, service: str) -> Any:
        found = self._clients.get(service)
        if found is not None:
            return found
        with self._lock:
            if service not in self._clients:
                import boto3
                from botocore.config import Config

                if self._session is None:
                    self._session = boto3.session.Session(
                        profile_name=self.config.profile, region_name=self.config.region)
                self._clients[service] = self._session.client(
                    service, endpoint_url=self.config.endpoint_url,
                    config=Config(retries={"mode": "standard",
                                           # total, first try included ("max_attempts"
                                           # would count retries only)
                                           "total_max_attempts": self.config.max_attempts},
                                  max_pool_connections=64, connect_timeout=10,
                                  read_timeout=60,
                                  # path-style addressing works with every S3-compatible
                                  # endpoint (moto, MinIO); AWS accepts it too.
                                  s3={"addressing_style": "path"}
                                  if self.config.endpoint_url else None))
        return self._clients[service]

    def call(self, service: str, operation: str, *, address: str = "", **kwargs: Any) -> dict:
        """One API call; an error becomes a ProviderError naming the call and the service's
        answer (a missing object raises `Missing`, which callers usually turn into None)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client(service), operation)(**kwargs)
        except ClientError as exc:
            if is_missing(exc):
                raise Missing(f"{service}.{operation}: {error_message(exc)}") from exc
            code = error_code(exc)
            raise ProviderError(
                f"{service} {api_name(operation)} failed: {code}: {error_message(exc)}",
                address=address, service_message=error_message(exc),
                retryable=code in RETRYABLE_CODES) from exc
        except BotoCoreError as exc:   # connection refused, timeouts, credentials
            raise ProviderError(f"{service} {api_name(operation)} failed: {exc}",
                                address=address, retryable=True) from exc

    def find(self, service: str, operation: str, **kwargs: Any) -> dict | None:
        """`call`, with a missing object answered by None."""
        try:
            return self.call(service, operation, **kwargs)
        except Missing:
            return None

    def pages(self, service: str, operation: str, key: str, **kwargs: Any) -> Iterable[dict]:
        """Every item under `key` across a paginated listing."""
        token_in, token_out = "NextToken", "NextToken"
        while True:
            page = self.call(service, operation, **kwargs)
            yield from page.get(key) or []
            token = page.get(token_out)
            if not token:
                return
            kwargs[token_in] = token

    def progress(self, address: str, message: str, waiting_on: str = "") -> None:
        self.context.progress(ProgressEvent(address, message, waiting_on))

    def wait(self, describe: Callable[[], dict | None], status_key: str, *, address: str,
             what: str, ready: Iterable[str], failed: Iterable[str] = (),
             timeout: float, gone_ok: bool = False) -> dict | None:
        """Poll `describe` until `status_key` reaches a ready status.

        A failed status raises a ProviderError carrying the service's FailureReason;
        so does running past `timeout`.  Each status change is reported as progress.
        `gone_ok`: the object disappearing is success (waiting for a delete) and
        answers None; otherwise it is an error.
        """
        ready, failed = set(ready), set(failed)
        deadline = time.monotonic() + timeout
        last = None
        while True:
            desc = describe()
            if desc is None:
                if gone_ok:
                    return None
                raise ProviderError(f"{what} disappeared while waiting for it", address=address)
            status = desc.get(status_key)
            if status != last:
                self.progress(address, f"{what}: {status}", waiting_on=what)
                last = status
            if status in ready:
                return desc
            if status in failed:
                reason = desc.get("FailureReason") or "no FailureReason given"
                raise ProviderError(f"{what} ended {status}: {reason}", address=address,
                                    service_message=str(reason))
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"{what} still {status} after {timeout:g} s (timeout)", address=address,
                    retryable=True)
            time.sleep(self.config.poll_seconds)


__all__ = ["Aws", "Missing", "is_missing", "error_code", "error_message"]
