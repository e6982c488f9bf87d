"""Providers built from one handler per kind: the shared set-up and dispatch.

A provider written on the kit is a `HandlerProvider` subclass with a table of
`KindHandler` classes (``HANDLERS``, kind -> handler) and a `make_env` that builds the
object its handlers share (paths, clients, the run context).  The kit does the rest:

* `kinds` is derived from the table (each handler's `schema`), once, when the class is
  made, so a provider declares its kinds in one place;
* the provider block is parsed with `config_model` into `self.config` (the engine
  already checked it and reported problems at the block's file and line);
* every call of the contract is routed to the handler of the resource's kind through
  the table (no if/elif over kinds), and `read_facts` groups keys by kind.

Semantics of each call are the contract's (`mlform.providers.base`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar, Mapping, Sequence

from pydantic import BaseModel, ValidationError

from mlform.providers.base import (
    Desired, Diagnostic, FactKey, Facts, KindSchema, LiveObject, Planned, Provider,
    ProviderContext, ProviderError,
)

__all__ = ["KindHandler", "HandlerProvider"]


class KindHandler:
    """One kind's implementation of the contract; see `mlform.providers.base`.

    `env` is the provider's configured view, built by `HandlerProvider.make_env`.
    Handlers that read nothing before planning keep the default `fact_keys`.
    """

    schema: ClassVar[KindSchema] = KindSchema()

    def __init__(self, env: Any) -> None:
        self.env = env

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> Sequence[FactKey]:
        return ()

    def read_facts(self, keys: Sequence[FactKey]) -> dict[FactKey, Any]:
        return {}

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        return []

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        raise NotImplementedError

    def create(self, planned: Planned) -> LiveObject:
        raise NotImplementedError

    def read(self, prior: LiveObject) -> LiveObject | None:
        raise NotImplementedError

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        raise NotImplementedError

    def delete(self, prior: LiveObject) -> None:
        raise NotImplementedError

    def import_(self, kind: str, address: str, id: str) -> LiveObject | None:
        return self.read(LiveObject(address=address, kind=kind, id=id, attributes={}))

    def action(self, live: LiveObject, name: str, args: dict) -> dict:
        """Kind-specific operations outside plan/apply (e.g. `mlform monitor run`)."""
        raise NotImplementedError(name)

    def run_records(self, pipeline: str | None) -> list[dict]:
        """The runs this kind made (the pipeline handler's): `Provider.run_records`."""
        return []

    def close(self) -> None:
        pass


class HandlerProvider(Provider):
    """A provider whose kinds are served by `HANDLERS` (kind -> KindHandler class)."""

    HANDLERS: ClassVar[Mapping[str, type[KindHandler]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.HANDLERS:   # the kinds a provider serves: declared once, by its table
            cls.kinds = {kind: handler.schema for kind, handler in cls.HANDLERS.items()}

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.config = self.parse_config()
        self.env = self.make_env(context, self.config)
        self._handlers = {kind: handler(self.env) for kind, handler in self.HANDLERS.items()}

    def make_env(self, context: ProviderContext, config: BaseModel) -> Any:
        """The object every handler of this provider gets (override)."""
        return context

    def parse_config(self) -> BaseModel:
        """The provider block as a `config_model` instance.

        The engine validated the block already; this only fails when a provider is
        built by hand (a test, a script) with a wrong configuration.
        """
        settings = {k: v for k, v in dict(self.context.config).items() if k != "alias"}
        try:
            return self.config_model.model_validate(settings)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}"
                                 for e in exc.errors())
            raise ProviderError(
                f'invalid provider "{self.name}" configuration: {problems}') from exc

    def handler(self, kind: str, address: str = "") -> KindHandler:
        found = self._handlers.get(kind)
        if found is None:
            raise ProviderError(f"the {self.name} provider does not serve {kind!r} resources",
                                address=address)
        return found

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> Sequence[FactKey]:
        return self.handler(desired.kind, desired.address).fact_keys(desired, prior)

    def read_facts(self, keys: Sequence[FactKey]) -> dict[FactKey, Any]:
        by_kind: dict[str, list[FactKey]] = defaultdict(list)
        for key in keys:
            by_kind[key.kind].append(key)
        found: dict[FactKey, Any] = {}
        for kind, group in by_kind.items():
            found.update(self.handler(kind).read_facts(group))
        return found

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        return self.handler(desired.kind, desired.address).validate(desired, facts)

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        return self.handler(desired.kind, desired.address).plan(desired, prior, facts)

    def create(self, planned: Planned) -> LiveObject:
        return self.handler(planned.kind, planned.address).create(planned)

    def read(self, prior: LiveObject) -> LiveObject | None:
        return self.handler(prior.kind, prior.address).read(prior)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        return self.handler(planned.kind, planned.address).update(prior, planned)

    def delete(self, prior: LiveObject) -> None:
        self.handler(prior.kind, prior.address).delete(prior)

    def import_(self, kind: str, address: str, id: str) -> LiveObject | None:
        return self.handler(kind, address).import_(kind, address, id)

    def action(self, live: LiveObject, name: str, args: dict | None = None) -> dict:
        try:
            return self.handler(live.kind, live.address).action(live, name, args or {})
        except NotImplementedError:
            raise ProviderError(f"{live.kind} resources have no action {name!r}",
                                address=live.address)

    def run_records(self, pipeline: str | None = None) -> list[dict]:
        return [record for kind in self.HANDLERS
                for record in self.handler(kind).run_records(pipeline)]

    def close(self) -> None:
        for handler in self._handlers.values():
            handler.close()
