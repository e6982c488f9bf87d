"""Deterministic names and ownership marks: how a provider finds what it made.

Every provider-side name comes from the stack, the environment and the address (plus,
for immutable objects, a hash of their content), so a retried or crashed create finds
the object an earlier attempt made and adopts it instead of making a second one:

* `object_id` - ``stack/env/address``, where the service takes any string;
* `slug` - a file-system-safe unique name of an address (``endpoint.x_a_-1a2b3c``);
* `bounded_name` - a name within a service's length and character limits: the
  readable part (``stack-env-kind-name``) cut to fit, then a hash of the whole identity
  so cutting never makes two names equal.

Every object also carries *ownership marks* naming its stack, environment and
address (`Owner`): AWS tags (`tags`, values spelled with tag-safe characters),
Kubernetes labels and annotations (`labels`, `annotations`).  `Owner.check` refuses to
adopt an object whose marks name another owner (a shared bucket, a copied prefix, a
namespace two stacks use), with the sentence every provider says.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from mlform.providers.base import ProviderError

__all__ = ["object_id", "slug", "short_hash", "content_hash", "bounded_name", "Owner",
           "OWNER_TAGS", "TAG_STACK", "TAG_ENV", "TAG_ADDRESS", "MANAGED_BY", "tag_value",
           "untag_value", "label_value", "pulumi_name", "pulumi_config_key"]

TAG_STACK, TAG_ENV, TAG_ADDRESS = "mlform:stack", "mlform:env", "mlform:address"
OWNER_TAGS = (TAG_STACK, TAG_ENV, TAG_ADDRESS)

#: Kubernetes' recommended label, and mlform's own label and annotation keys
MANAGED_BY = ("app.kubernetes.io/managed-by", "mlform")
LABEL_STACK, LABEL_ENV, LABEL_ADDRESS = "mlform.dev/stack", "mlform.dev/env", "mlform.dev/address"


def object_id(stack: str, env: str, address: str) -> str:
    """``stack/env/address``: the id of an object where any string will do."""
    return f"{stack}/{env}/{address}"


def short_hash(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def content_hash(value: Any, length: int = 8) -> str:
    """A stable hash of a JSON-able value (for immutable, content-named objects)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def slug(address: str) -> str:
    """A file-system-safe, unique name for an address (`endpoint.x["a"]` → `endpoint.x_a_-1a2b3c`)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", address).strip("_")
    return f"{clean}-{hashlib.sha256(address.encode()).hexdigest()[:6]}"


def _clean(text: str, lower: bool) -> str:
    text = text.lower() if lower else text
    pattern = r"[^a-z0-9]+" if lower else r"[^A-Za-z0-9]+"
    return re.sub(r"-+", "-", re.sub(pattern, "-", text)).strip("-")


def bounded_name(stack: str, env: str, address: str, suffix: str = "", *, limit: int = 63,
                 lower: bool = False) -> str:
    """A name of letters, digits and ``-``, unique per (stack, env, address[, suffix]),
    at most `limit` characters (`lower`: lower case only, as DNS names want)."""
    ident = short_hash(stack, env, address)
    tail = f"-{ident}" + (f"-{_clean(suffix, lower)}" if suffix else "")
    readable = _clean(f"{stack}-{env}-{address}", lower)
    room = max(1, limit - len(tail))
    return (readable[:room].rstrip("-") or "mlform") + tail


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


_LABEL = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$")


def label_value(text: str) -> str:
    """`text` as a Kubernetes label value (at most 63 of ``[A-Za-z0-9_.-]``, alphanumeric
    at both ends): itself when valid, else a readable part and a hash of the text."""
    if _LABEL.match(text):
        return text
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")[:54].rstrip("-_.")
    return f"{readable}-{short_hash(text)}" if readable else short_hash(text)


@dataclass(frozen=True)
class Owner:
    """The stack, environment and address an object belongs to."""

    stack: str
    env: str
    address: str

    # -- marks ---------------------------------------------------------------------

    def tags(self) -> dict[str, str]:
        """AWS tags (S3 objects, SageMaker objects, alarms)."""
        return {TAG_STACK: tag_value(self.stack), TAG_ENV: tag_value(self.env),
                TAG_ADDRESS: tag_value(self.address)}

    def labels(self) -> dict[str, str]:
        """Kubernetes labels: selectable, so value-limited (see `annotations`)."""
        return {MANAGED_BY[0]: MANAGED_BY[1], LABEL_STACK: label_value(self.stack),
                LABEL_ENV: label_value(self.env), LABEL_ADDRESS: label_value(self.address)}

    def annotations(self) -> dict[str, str]:
        """Kubernetes annotations: the marks spelled in full."""
        return {LABEL_STACK: self.stack, LABEL_ENV: self.env, LABEL_ADDRESS: self.address}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> "Owner | None":
        """The owner AWS tags name, or None when they carry no ownership tags."""
        if not any(k in tags for k in OWNER_TAGS):
            return None
        return cls(*(untag_value(str(tags.get(k, ""))) for k in OWNER_TAGS))

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str]) -> "Owner | None":
        if not any(k in annotations for k in (LABEL_STACK, LABEL_ENV, LABEL_ADDRESS)):
            return None
        return cls(*(str(annotations.get(k, "")) for k in (LABEL_STACK, LABEL_ENV,
                                                          LABEL_ADDRESS)))

    # -- refusing what is not ours ----------------------------------------------------

    def check(self, found: "Owner | None", what: str, *, unmarked_ok: bool = False,
              marks: str = "ownership marks") -> None:
        """Raise unless `found` (the owner an object's marks name) is this owner.

        An object with no marks at all is refused too, unless `unmarked_ok` (read and
        import: an object made outside mlform may be imported, not adopted).  `marks` is
        what the service calls them ("ownership tags", "labels").
        """
        if found is None:
            if unmarked_ok:
                return
            raise ProviderError(
                f"{what} exists but carries no mlform {marks}, so mlform will not "
                f"adopt it", address=self.address,
                service_message="Import it with `mlform import` or delete it, then apply again.")
        if found != self:
            raise ProviderError(
                f"{what} belongs to stack {found.stack!r}, environment {found.env!r}, "
                f"resource {found.address!r}; refusing to adopt it as {self.address} of stack "
                f"{self.stack!r}, environment {self.env!r}", address=self.address)


def pulumi_name(address: str, part: str = "") -> str:
    """The logical name an exported Pulumi program gives one object of `address`
    (``endpoint.fraud-config``; the address's main object: ``endpoint.fraud``): readable,
    and unique (a hash is added when characters had to be replaced, as in an indexed
    address, so two keys spelled alike stay apart)."""
    text = f"{address}-{part}" if part else address
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")
    return clean if clean == text else f"{clean}-{short_hash(text, length=6)}"


def pulumi_config_key(*parts: Any) -> str:
    """The key an exported Pulumi program reads one value from (letters, digits, ``-``
    and ``_``): ``endpoint_fraud_environment_API_KEY`` for the value at
    ``endpoint.fraud`` / ``environment`` / ``API_KEY``."""
    cleaned = (re.sub(r"[^A-Za-z0-9_-]+", "_", str(p)).strip("_") for p in parts)
    return "_".join(p for p in cleaned if p)
