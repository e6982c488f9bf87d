"""What every kind handler of the `sagemaker` provider shares: names, tags, ownership.

Names are deterministic from stack, environment and address (plus, for immutable
objects, a hash of their content), so a retried or crashed create finds what it made.
Every object carries three ownership tags; `check_owner` refuses to adopt an object
whose tags say another stack or environment (or another address) owns it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from mlform.providers.base import Diagnostic
from mlform.providers.base import Desired, ProviderContext, ProviderError
from mlform.providers.dispatch import KindHandler as BaseKindHandler

from .aws import Aws, Missing
from .config import SageMakerConfig

TAG_STACK, TAG_ENV, TAG_ADDRESS = "mlform:stack", "mlform:env", "mlform:address"
OWNER_TAGS = (TAG_STACK, TAG_ENV, TAG_ADDRESS)

# SageMaker names: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}
NAME_LIMIT = 63


# Characters both S3 and SageMaker accept in tag values (S3's set is the narrower one,
# minus "%", which SageMaker refuses).  An address such as dataset.d["k1"] holds others.
_TAG_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _.:/+-@")


def tag_value(text: str) -> str:
    """`text` spelled with tag-safe characters only: every other byte as ``=XX``.

    Deterministic and reversible (`untag_value`), and the identity for plain addresses
    (``endpoint.fraud``), so the tags people read stay readable.
    """
    out = []
    for ch in text:
        if ch in _TAG_SAFE:
            out.append(ch)
        else:
            out.extend(f"={b:02X}" for b in ch.encode())
    return "".join(out)


def untag_value(text: str) -> str:
    """The inverse of `tag_value`."""
    return re.sub(rb"=([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]),
                  text.encode()).decode(errors="replace")


def short_hash(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def content_hash(value: Any, length: int = 8) -> str:
    """A stable hash of a JSON-able value (for immutable, content-named objects)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _clean(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9]+", "-", text)).strip("-")


@dataclass
class SageMakerEnv:
    """The provider's configured view: AWS access, config and the run context."""

    context: ProviderContext
    config: SageMakerConfig
    aws: Aws

    @property
    def prefix(self) -> str:
        return (self.config.prefix.replace("{stack}", self.context.stack)
                .replace("{env}", self.context.env).strip("/"))

    def key(self, *parts: str) -> str:
        """An S3 key under the provider's prefix."""
        return "/".join([self.prefix, *[p.strip("/") for p in parts if p]])

    def s3_uri(self, *parts: str) -> str:
        return f"s3://{self.config.bucket}/{self.key(*parts)}"

    @property
    def name_prefix(self) -> str:
        """What every name of this stack and environment starts with (`name`'s readable
        part begins with it), for listings by prefix."""
        return _clean(f"{self.context.stack}-{self.context.env}")

    def name(self, address: str, suffix: str = "", limit: int = NAME_LIMIT) -> str:
        """A SageMaker-valid name, unique per (stack, env, address[, suffix]).

        Readable part first (``stack-env-kind-name``), cut to fit, then a hash of the
        full identity so cutting never makes two names equal.
        """
        ident = short_hash(self.context.stack, self.context.env, address)
        tail = f"-{ident}" + (f"-{_clean(suffix)}" if suffix else "")
        readable = _clean(f"{self.context.stack}-{self.context.env}-{address}")
        room = max(1, limit - len(tail))
        return (readable[:room].rstrip("-") or "mlform") + tail

    def model_name(self, model_address: str, version: int | str) -> str:
        """The SageMaker Model made for version `version` of `model_address`.

        Shared by the model handler (which creates it) and the endpoint handler (which
        serves it, knowing only the model's compact reference: address and version).
        """
        return self.name(model_address, suffix=f"v{version}")

    def owner_tags(self, address: str) -> dict[str, str]:
        return {TAG_STACK: tag_value(self.context.stack), TAG_ENV: tag_value(self.context.env),
                TAG_ADDRESS: tag_value(address)}

    def tags(self, address: str, user: Mapping[str, str] | None = None) -> list[dict]:
        """AWS tag list: the user's tags plus the ownership tags (which win)."""
        merged = {**dict(user or {}), **self.owner_tags(address)}
        return [{"Key": k, "Value": str(v)} for k, v in sorted(merged.items())]

    def owns(self, tags: Mapping[str, str], address: str) -> bool:
        """True when the ownership tags name this stack, environment and address."""
        return {k: tags.get(k) for k in OWNER_TAGS} == self.owner_tags(address)

    def check_owner(self, tags: Mapping[str, str], address: str, what: str, *,
                    untagged_ok: bool = False) -> None:
        """Refuse an object another stack, environment or resource owns.

        An object with no ownership tags at all is refused too, unless `untagged_ok`
        (read and import: an object made outside mlform may be imported, not adopted).
        """
        want = self.owner_tags(address)
        if not any(k in tags for k in OWNER_TAGS):
            if untagged_ok:
                return
            raise ProviderError(
                f"{what} exists but carries no mlform ownership tags, so mlform will not "
                f"adopt it", address=address,
                service_message="Import it with `mlform import` or delete it, then apply again.")
        theirs = {k: tags.get(k) for k in OWNER_TAGS}
        if theirs != want:
            theirs = {k: untag_value(v) if isinstance(v, str) else v for k, v in theirs.items()}
            want = {TAG_STACK: self.context.stack, TAG_ENV: self.context.env, TAG_ADDRESS: address}
            raise ProviderError(
                f"{what} belongs to stack {theirs[TAG_STACK]!r}, environment "
                f"{theirs[TAG_ENV]!r}, resource {theirs[TAG_ADDRESS]!r}; refusing to adopt it "
                f"as {address} of stack {want[TAG_STACK]!r}, environment {want[TAG_ENV]!r}",
                address=address)


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


def settings_errors(model: type, desired: Desired) -> list[Diagnostic]:
    """Diagnostics for a `settings { }` block that `model` (pydantic, extra="forbid") refuses."""
    from pydantic import ValidationError

    from mlform.providers.base import error
    from mlform.providers.base import contains_unknown

    settings = desired.attributes.get("settings")
    if settings is None or contains_unknown(settings):
        return []
    if not isinstance(settings, Mapping):
        return [error(f"Invalid settings for {desired.address}: expected a block of settings",
                      address=desired.address)]
    try:
        model.model_validate(dict(settings))
    except ValidationError as exc:
        return [error(f"Invalid settings for {desired.address}: "
                      f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}",
                      address=desired.address,
                      hint="The sagemaker provider takes: " + ", ".join(model.model_fields))
                for e in exc.errors()]
    return []


class KindHandler(BaseKindHandler):
    """One kind's handler on SageMaker: the shared dispatch base plus AWS helpers."""

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


__all__ = ["SageMakerEnv", "KindHandler", "OWNER_TAGS", "TAG_STACK", "TAG_ENV", "TAG_ADDRESS",
           "tag_dict", "user_tags", "tag_value", "untag_value", "short_hash", "content_hash", "name_from_url",
           "stale_key", "settings_errors"]
