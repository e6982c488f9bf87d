"""Providers built from one handler per kind: the shared dispatch.

The `local` and `sagemaker` providers each implement the contract as a table of kind
handlers (one module per kind).  `KindHandler` is the per-kind half of the contract;
`HandlerProvider` configures nothing itself and only routes each call to the handler of
the resource's kind, through a table rather than if/elif chains.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from pydantic import BaseModel, ValidationError

from mlform.providers.base import Diagnostic
from mlform.providers.base import Desired, KindSchema, LiveObject, Planned, Provider, ProviderError

__all__ = ["KindHandler", "HandlerProvider"]


class KindHandler:
    """One kind's implementation of the contract; see mlform.providers.base for semantics.

    `env` is the provider's configured view (its paths, clients and run context).
    """

    schema: KindSchema = KindSchema()

    def __init__(self, env: Any) -> None:
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


class HandlerProvider(Provider):
    """A provider whose kinds are served by `HANDLERS` (kind -> KindHandler class).

    Subclasses set `HANDLERS`, derive `kinds` from it, and call `start_handlers(env)`
    once configured.
    """

    HANDLERS: ClassVar[Mapping[str, type[KindHandler]]] = {}

    def parse_config(self, model: type[BaseModel]) -> Any:
        """The provider block checked against `model`; a ProviderError naming every problem."""
        settings = {k: v for k, v in dict(self.context.config).items() if k != "alias"}
        try:
            return model.model_validate(settings)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}"
                                 for e in exc.errors())
            raise ProviderError(
                f'invalid provider "{self.name}" configuration: {problems}') from exc

    def start_handlers(self, env: Any) -> None:
        self._handlers = {kind: cls(env) for kind, cls in self.HANDLERS.items()}

    def _handler(self, kind: str, address: str) -> KindHandler:
        handler = self._handlers.get(kind)
        if handler is None:
            raise ProviderError(f"the {self.name} provider does not serve {kind!r} resources",
                                address=address)
        return handler

    def validate(self, desired: Desired) -> list[Diagnostic]:
        return self._handler(desired.kind, desired.address).validate(desired)

    def plan(self, desired: Desired, prior: LiveObject | None) -> Planned:
        return self._handler(desired.kind, desired.address).plan(desired, prior)

    def create(self, planned: Planned) -> LiveObject:
        return self._handler(planned.kind, planned.address).create(planned)

    def read(self, prior: LiveObject) -> LiveObject | None:
        return self._handler(prior.kind, prior.address).read(prior)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        return self._handler(planned.kind, planned.address).update(prior, planned)

    def delete(self, prior: LiveObject) -> None:
        self._handler(prior.kind, prior.address).delete(prior)

    def action(self, live: LiveObject, name: str, args: dict | None = None) -> dict:
        try:
            return self._handler(live.kind, live.address).action(live, name, args or {})
        except NotImplementedError:
            raise ProviderError(f"{live.kind} resources have no action {name!r}",
                                address=live.address)

    def close(self) -> None:
        for handler in self._handlers.values():
            handler.close()
