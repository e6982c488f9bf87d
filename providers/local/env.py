"""What every kind handler of the `local` provider shares.

`LocalEnv` is the provider's view of this machine: its paths under the provider
root, the run context and the shared digest cache; `LocalHandler` is the per-kind
handler every kind module subclasses (the kit's `KindHandler`, typed for `LocalEnv`).
`write_json_atomic` and `read_json` keep the provider's small JSON records.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from mlform.providers.base import ProviderContext
from mlform.providers.kit.digests import DigestCache
from mlform.providers.kit.handlers import KindHandler
from mlform.providers.kit.monitor_check import read_json, write_json_atomic  # noqa: F401 (re-exported)
from mlform.providers.kit.names import object_id, slug


@dataclass
class LocalEnv:
    """The provider's view of this machine: paths under `root`, and the run context."""

    context: ProviderContext
    root: Path
    host: str
    python: str
    ready_timeout: float

    @property
    def stack_dir(self) -> Path:
        return Path(self.context.stack_dir)

    @property
    def digests(self) -> DigestCache:
        """The digest cache the engine and every provider of this stack share."""
        return DigestCache.shared(self.context.cache_dir)

    def object_id(self, address: str) -> str:
        """Deterministic from stack, env and address: a retried create adopts, never duplicates."""
        return object_id(self.context.stack, self.context.env, address)

    def slug(self, address: str) -> str:
        """A file-system-safe, unique name for an address (`endpoint.x["a"]` → `endpoint.x_a_-1a2b3c`)."""
        return slug(address)

    def area(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else (self.stack_dir / p)


class LocalHandler(KindHandler):
    """One kind's handler on this machine (the kit's handler, typed for LocalEnv)."""

    def __init__(self, env: LocalEnv) -> None:
        super().__init__(env)
        self.env: LocalEnv = env


def default_python() -> str:
    return sys.executable
