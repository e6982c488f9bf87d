"""What every kind handler of the `local` provider shares.

`LocalEnv` holds the provider's paths and context; `KindHandler` is the
per-kind half of the provider contract (dispatch: mlform.providers.dispatch).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlform.providers.base import ProviderContext
from mlform.providers.dispatch import KindHandler as BaseKindHandler


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

    def object_id(self, address: str) -> str:
        """Deterministic from stack, env and address: a retried create adopts, never duplicates."""
        return f"{self.context.stack}/{self.context.env}/{address}"

    def slug(self, address: str) -> str:
        """A file-system-safe, unique name for an address (`endpoint.x["a"]` → `endpoint.x_a_-1a2b3c`)."""
        clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", address).strip("_")
        return f"{clean}-{hashlib.sha256(address.encode()).hexdigest()[:6]}"

    def area(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else (self.stack_dir / p)


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write-then-rename so a reader (or a kill) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


class KindHandler(BaseKindHandler):
    """One kind's handler on this machine (the shared dispatch base, typed for LocalEnv)."""

    def __init__(self, env: LocalEnv) -> None:
        super().__init__(env)
        self.env: LocalEnv = env


def default_python() -> str:
    return sys.executable
