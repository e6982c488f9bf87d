"""What the planner takes, as values: options, the configured providers, the facts read.

The planner does no I/O (DESIGN.md section 1).  Everything it needs is read before it
runs and handed to it here: the loaded configuration and graph, the variable values,
the state as loaded and as refreshed (with the drift refresh found), the providers of
the run, configured (`ProviderSet`), and the facts they asked for (`FactTable`), read by
`mlform.facts` in rounds: when the walk reaches an instance whose facts are not in the
table yet, the planner returns the requests and is run again once they are in.

A fact request is ``(provider key, FactKey)``; the provider key is None for the
engine's own facts (a pipeline entrypoint's digest, `entrypoint_key`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from mlform.config.model import VariableValues
from mlform.diagnostics import Diagnostic, DiagnosticError, SourceRange
from mlform.graph import Graph
from mlform.plan.memo import PlanMemo
from mlform.providers.base import FactKey, KindSchema, Provider
from mlform.state.model import State

__all__ = ["PlanOptions", "PlanInputs", "ProviderSet", "FactTable", "FactRequest",
           "entrypoint_key", "ENGINE"]

#: The provider key of the engine's own facts.
ENGINE = None

#: (provider key or ENGINE, the fact)
FactRequest = tuple[str | None, FactKey]


def entrypoint_key(path: Path) -> FactKey:
    """The engine's fact: the sha256 of a pipeline's entrypoint file."""
    return FactKey("pipeline", "entrypoint", (str(path),))


@dataclass(frozen=True)
class PlanOptions:
    mode: str = "normal"            # "normal" | "destroy" | "refresh-only"
    refresh: bool = True
    targets: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    parallelism: int = 10


class ProviderSet:
    """The providers of one run, configured before anything is planned.

    `key_for` says which provider serves a resource block; `get` returns the
    configured instance, or raises the diagnostic its configuration failed with (so a
    broken provider block is reported on each block that uses it, and only then).
    """

    def __init__(self, providers: Mapping[str, Provider], failures: Mapping[str, DiagnosticError],
                 default_key: str) -> None:
        self._providers = dict(providers)
        self._failures = dict(failures)
        self.default_key = default_key

    def key_for(self, resource: Any) -> str:
        return resource.provider or self.default_key

    def get(self, key: str) -> Provider:
        provider = self._providers.get(key)
        if provider is None:
            failure = self._failures.get(key)
            if failure is not None:
                raise DiagnosticError(list(failure.diagnostics))
            raise DiagnosticError.single(f'Provider "{key}" was not configured for this run',
                                         hint="This is a bug in mlform.")
        return provider

    def schema(self, key: str, kind: str, source: SourceRange | None = None) -> KindSchema:
        provider = self.get(key)
        schema = provider.kinds.get(kind)
        if schema is None:
            raise DiagnosticError.single(
                f'Provider "{key}" does not serve {kind} resources',
                source=source,
                hint=f"It serves: {', '.join(sorted(provider.kinds))}. "
                     "Pick another with provider = NAME.")
        return schema

    def items(self) -> Iterable[tuple[str, Provider]]:
        return self._providers.items()

    @property
    def failures(self) -> Mapping[str, DiagnosticError]:
        """The providers that failed to configure, with why."""
        return dict(self._failures)


class FactTable:
    """Facts read so far, by provider key (a plain value the planner only reads)."""

    def __init__(self) -> None:
        self._by_provider: dict[str | None, dict[FactKey, Any]] = {}

    def __contains__(self, request: FactRequest) -> bool:
        provider, key = request
        return key in self._by_provider.get(provider, ())

    def missing(self, provider: str | None, keys: Iterable[FactKey]) -> set[FactRequest]:
        have = self._by_provider.get(provider, {})
        return {(provider, key) for key in keys if key not in have}

    def view(self, provider: str | None) -> Mapping[FactKey, Any]:
        """The facts of one provider, read-only."""
        return MappingProxyType(self._by_provider.setdefault(provider, {}))

    def add(self, values: Mapping[FactRequest, Any]) -> None:
        for (provider, key), value in values.items():
            self._by_provider.setdefault(provider, {})[key] = value

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_provider.values())


@dataclass(frozen=True)
class PlanInputs:
    """Everything one plan is made from (see the module docstring)."""

    graph: Graph
    stack_dir: Path
    env: str
    config_digest: str
    variables: VariableValues
    providers: ProviderSet
    state: State                                   # as loaded
    refreshed: State                               # after refresh (the state itself without)
    options: PlanOptions = field(default_factory=PlanOptions)
    drift: tuple = ()                              # changes made outside mlform
    diagnostics: tuple[Diagnostic, ...] = ()       # what refresh reported
    cwd: str = "."                                 # `path.cwd` in expressions
    memo: PlanMemo | None = None                   # no-ops of the last plan (plan.memo)
