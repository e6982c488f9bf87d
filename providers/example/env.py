"""What the example provider's handlers share: the record directory and ownership marks."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlform.providers.base import LiveObject, ProviderContext
from mlform.providers.kit.digests import DigestCache
from mlform.providers.kit.handlers import KindHandler
from mlform.providers.kit.names import Owner, object_id, slug

__all__ = ["ExampleEnv", "ExampleHandler"]


@dataclass
class ExampleEnv:
    """Where records live, and who this run is (stack, environment)."""

    context: ProviderContext
    root: Path

    @property
    def digests(self) -> DigestCache:
        return DigestCache.shared(self.context.cache_dir)

    def owner(self, address: str) -> Owner:
        return Owner(self.context.stack, self.context.env, address)

    def record_path(self, address: str) -> Path:
        # deterministic from the address: a retried create finds what an earlier one wrote
        return self.root / f"{slug(address)}.json"

    def object_id(self, address: str) -> str:
        return object_id(self.context.stack, self.context.env, address)


class ExampleHandler(KindHandler):
    """A kind whose objects are JSON records: read, write and delete are the same for all."""

    env: ExampleEnv

    def load(self, address: str) -> dict | None:
        """The record of `address`, or None; one another stack wrote is refused."""
        try:
            doc = json.loads(self.env.record_path(address).read_text())
        except (OSError, ValueError):
            return None
        found = Owner.from_annotations(doc.get("owner") or {})
        self.env.owner(address).check(found, f"record {self.env.record_path(address)}")
        return doc

    def save(self, address: str, kind: str, attributes: dict) -> LiveObject:
        path = self.env.record_path(address)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"owner": self.env.owner(address).annotations(), "attributes": attributes}
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        os.replace(tmp, path)          # whole or not at all: a kill never leaves half
        return LiveObject(address, kind, self.env.object_id(address), attributes)

    def read(self, prior: LiveObject) -> LiveObject | None:
        doc = self.load(prior.address)
        if doc is None:
            return None
        return LiveObject(prior.address, prior.kind, self.env.object_id(prior.address),
                          doc["attributes"])

    def update(self, prior: LiveObject, planned) -> LiveObject:
        return self.create(planned)

    def delete(self, prior: LiveObject) -> None:
        self.env.record_path(prior.address).unlink(missing_ok=True)   # absent: fine


def plain(value: Any) -> Any:
    """JSON round trip: what a record reads back as."""
    return json.loads(json.dumps(value))
