"""The provider contract (DESIGN.md section 5).

A provider is configured once per run (`Provider(context)`) and serves the
kinds it declares in `kinds`.  Every call gets and returns plain values:

* `Desired`   - what the spec asks for one resource instance (attributes may
  hold `UNKNOWN` where they depend on something not yet applied).
* `Planned`   - the provider's answer to `plan`: the attributes it will
  produce (computed ones known or `UNKNOWN`), plus any extra replace paths.
* `LiveObject` - what exists: provider-side id and live attributes.

Semantics each implementation must keep (the engine checks answers and names
the provider when they disagree with the plan):

| call | must |
| --- | --- |
| validate(desired) | no side effects; return diagnostics |
| plan(desired, prior) | no side effects; known values stay what apply produces |
| create(planned) | deterministic provider-side name from stack, env and address, so a retried or crashed create adopts rather than duplicates; if it raises, nothing it made may be left unrecorded (adopt or clean up) |
| read(prior) | no side effects; None when gone; `prior.id` may be None when the engine recovers an interrupted create (look it up by the deterministic name) |
| update(prior, planned) | in place, idempotent, waits until ready |
| delete(prior) | absent already = success |
| import_(kind, address, id) | no side effects; None when no such object |
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from pydantic import BaseModel, ConfigDict

from mlform.diagnostics import Diagnostic

__all__ = [
    "ProviderContext", "KindSchema", "Timeouts", "Desired", "Planned", "LiveObject",
    "ProgressEvent", "ProviderError", "Provider", "AnySettings", "KINDS",
]

KINDS = ("dataset", "training_cluster", "pipeline", "model", "endpoint", "monitor")


@dataclass(frozen=True)
class ProgressEvent:
    """A status line for a long operation (rendered by the CLI, never printed here)."""

    address: str
    message: str
    waiting_on: str = ""


@dataclass(frozen=True)
class ProviderContext:
    """Everything a provider learns at configure time; passed explicitly, no globals."""

    name: str                      # provider type, e.g. "memory"
    alias: str | None
    stack: str                     # stack name (its directory name)
    env: str                       # environment name or "default"
    stack_dir: Path
    config: Mapping[str, Any]      # evaluated `provider "x" { ... }` block
    progress: Callable[[ProgressEvent], None] = lambda event: None


@dataclass(frozen=True)
class Timeouts:
    create: float = 1800.0
    update: float = 1800.0
    delete: float = 900.0


class AnySettings(BaseModel):
    """Settings model for providers that accept any `settings { }`."""

    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True)
class KindSchema:
    """What a provider declares for one kind it serves.

    Paths are dotted attribute paths (``"settings.instance_type"``).
    """

    settings_model: type[BaseModel] = AnySettings
    replace_paths: tuple[str, ...] = ()     # changes here force replacement
    computed: tuple[str, ...] = ()          # attributes the provider fills in
    service_managed: tuple[str, ...] = ()   # live fields ignored for drift
    timeouts: Timeouts = field(default_factory=Timeouts)


@dataclass(frozen=True)
class Desired:
    """One resource instance as the spec asks for it."""

    address: str
    kind: str
    name: str
    attributes: Mapping[str, Any]


@dataclass(frozen=True)
class LiveObject:
    """An object that exists (or existed) on the provider side."""

    address: str
    kind: str
    id: str | None
    attributes: Mapping[str, Any]


@dataclass(frozen=True)
class Planned:
    """The provider's plan for one instance.

    `attributes` is the full attribute set after apply, with `UNKNOWN` where
    the value is only known then.  `replace_paths` adds provider-decided
    reasons for replacement to the declared `KindSchema.replace_paths`.
    """

    address: str
    kind: str
    name: str
    attributes: Mapping[str, Any]
    replace_paths: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


class ProviderError(Exception):
    """A provider call failed: which resource, what the service said, retry or not."""

    def __init__(self, message: str, *, address: str = "", retryable: bool = False,
                 service_message: str = "", partial: "LiveObject | None" = None) -> None:
        super().__init__(message)
        self.message = message
        self.address = address
        self.retryable = retryable
        self.service_message = service_message
        # An object the failed call did make (half-created): the engine records
        # it as tainted so the next apply replaces it instead of orphaning it.
        self.partial = partial


class Provider(abc.ABC):
    """Base class of every provider plugin (found through entry points)."""

    #: provider type name, as used in `provider "NAME" { }`
    name: ClassVar[str]
    #: kinds served and what the provider declares about each
    kinds: ClassVar[Mapping[str, KindSchema]]
    #: pydantic model of the `provider "NAME" { }` block
    config_model: ClassVar[type[BaseModel]] = AnySettings
    #: the interface version this provider implements
    contract_version: ClassVar[int] = 1

    def __init__(self, context: ProviderContext) -> None:
        self.context = context

    def validate(self, desired: Desired) -> list[Diagnostic]:
        return []

    @abc.abstractmethod
    def plan(self, desired: Desired, prior: LiveObject | None) -> Planned: ...

    @abc.abstractmethod
    def create(self, planned: Planned) -> LiveObject: ...

    @abc.abstractmethod
    def read(self, prior: LiveObject) -> LiveObject | None: ...

    @abc.abstractmethod
    def update(self, prior: LiveObject, planned: Planned) -> LiveObject: ...

    @abc.abstractmethod
    def delete(self, prior: LiveObject) -> None: ...

    def action(self, live: LiveObject, name: str, args: dict | None = None) -> dict:
        """Kind-specific operations outside plan/apply (`mlform monitor run ADDR`).

        Returns a JSON-able report.  Providers without such operations keep this default.
        """
        raise ProviderError(f'provider "{self.name}" has no action {name!r} for {live.kind}',
                            address=live.address)

    def import_(self, kind: str, address: str, id: str) -> LiveObject | None:
        return self.read(LiveObject(address=address, kind=kind, id=id, attributes={}))

    def close(self) -> None:
        """Release whatever the provider holds (files, clients, threads)."""
