"""What every kind handler of the `local` provider shares.

`LocalEnv` holds the provider's paths and context; `KindHandler` is the
per-kind half of the provider contract (the provider dispatches by kind
through a table, not if/elif chains).
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

from mlform.diagnostics import Diagnostic
from mlform.providers.base import Desired, KindSchema, LiveObject, Planned, ProviderContext


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


class KindHandler:
    """One kind's implementation of the contract; see mlform.providers.base for semantics."""

    schema: KindSchema = KindSchema()

    def __init__(self, env: LocalEnv) -> None:
        self.env = env

    def validate(self, desired: Desired) -> list[Diagnostic]:
        return []

    def plan(self, desired: Desired, prior: LiveObject | None) -> Planned:
        raise NotImplementedError

    def create(self, planned: Planned) -> LiveObject:
        raise NotImplementedError

    def read(self, prior: LiveObject) -> LiveObject | None:
        raise NotImplementedError

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        raise NotImplementedError

    def delete(self, prior: LiveObject) -> None:
        raise NotImplementedError

    def action(self, live: LiveObject, name: str, args: dict) -> dict:
        """Kind-specific operations outside plan/apply (e.g. `mlform monitor run`)."""
        raise NotImplementedError(name)

    def close(self) -> None:
        pass


def default_python() -> str:
    return sys.executable
