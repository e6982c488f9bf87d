"""`MemoryProvider`: the built-in in-product fake, as httpx's MockTransport is to httpx.

It serves all six kinds, keeps live objects in a JSON file that people edit
by hand to simulate drift, computes what real providers compute (URIs,
digests, run ids, model versions) and can be made slow (`latency_ms`) or
failing (`fail`) per operation and address.  Tests and benchmarks drive the
engine through it; nothing in it is test-only.

Ids are ``"{stack}/{env}/{address}"``, so a retried or interrupted create
finds and adopts the object it (or an earlier process) made.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from mlform.providers.base import Diagnostic, error
from mlform.providers.base import Desired, LiveObject, Planned, Provider, ProviderContext, ProviderError

from .calllog import CallLog
from .compute import RULES, ApplyContext, KindRules, Scope
from .config import FailurePlan, MemoryConfig, injected_error, resolve_path
from .store import MemoryStore, acquire, release
from .trees import fill_unknowns, pick_from, realizes, to_plain

__all__ = ["MemoryProvider"]


class MemoryProvider(Provider):
    """Live objects in a local JSON store; see the package docstring for the config."""

    name = "memory"
    kinds = {kind: rules.schema for kind, rules in RULES.items()}
    config_model = MemoryConfig

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        # `alias` is the provider block's meta-argument, not a memory setting
        settings = {k: v for k, v in dict(context.config).items() if k != "alias"}
        try:
            self.config = MemoryConfig.model_validate(settings)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}"
                                 for e in exc.errors())
            raise ProviderError(f'invalid provider "memory" configuration: {problems}') from exc
        where = dict(stack_dir=Path(context.stack_dir), stack=context.stack, env=context.env)
        self.store_path = resolve_path(self.config.store, **where)
        self._calls = CallLog(resolve_path(self.config.call_log, **where)) if self.config.call_log else None
        self._scope = Scope(context.stack, context.env, Path(context.stack_dir))
        self._failures = FailurePlan(self.config.fail)
        self._latency_s = self.config.latency_ms / 1000.0
        self._store_lock = threading.Lock()
        self._store: MemoryStore | None = None
        self._open_store()  # load now, so a broken store file is reported at configure time

    def object_id(self, address: str) -> str:
        """The deterministic provider-side id of the object at `address`."""
        return f"{self.context.stack}/{self.context.env}/{address}"

    # -- the contract --------------------------------------------------------

    def validate(self, desired: Desired) -> list[Diagnostic]:
        found: list[Diagnostic] = []
        if desired.kind not in RULES:
            found.append(error(f"the memory provider does not serve {desired.kind!r} resources",
                               address=desired.address))
        message = self._failures.message("validate", desired.address)
        if message is not None:
            found.append(error(message, "injected by the memory provider's `fail` setting",
                               address=desired.address))
        return found

    def plan(self, desired: Desired, prior: LiveObject | None) -> Planned:
        rules = self._rules(desired.kind, desired.address)
        self._failures.raise_for("plan", desired.address)
        result = rules.plan(self._scope, desired.address, desired.attributes,
                            prior.attributes if prior is not None else None)
        return Planned(address=desired.address, kind=desired.kind, name=desired.name,
                       attributes={**desired.attributes, **result.computed},
                       reasons=result.reasons)

    def create(self, planned: Planned) -> LiveObject:
        id = self.object_id(planned.address)
        self._begin("create", planned.address, id)
        live = self._apply(planned, id)
        message = self._failures.message("create-partial", planned.address)
        if message is not None:
            raise injected_error("create", planned.address, message, partial=live)
        return live

    def read(self, prior: LiveObject) -> LiveObject | None:
        id = prior.id or self.object_id(prior.address)
        self._pause()
        self._failures.raise_for("read", prior.address)
        store = self._open_store()
        store.refresh()  # someone may have edited the file since it was loaded
        return self._live(store.get(id), prior.kind, prior.address, id)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        id = prior.id or self.object_id(planned.address)
        self._begin("update", planned.address, id)
        return self._apply(planned, id)

    def delete(self, prior: LiveObject) -> None:
        id = prior.id or self.object_id(prior.address)
        self._begin("delete", prior.address, id)
        self._open_store().delete(id)

    def import_(self, kind: str, address: str, id: str) -> LiveObject | None:
        self._pause()
        self._failures.raise_for("import", address)
        store = self._open_store()
        store.refresh()
        return self._live(store.get(id), kind, address, id)

    def close(self) -> None:
        """Compact the store file and close the call log; a later call reopens both."""
        with self._store_lock:
            store, self._store = self._store, None
        if store is not None:
            release(store)
        if self._calls is not None:
            self._calls.close()

    # -- helpers -------------------------------------------------------------

    def _open_store(self) -> MemoryStore:
        with self._store_lock:
            if self._store is None:
                self._store = acquire(self.store_path)
            return self._store

    def _rules(self, kind: str, address: str) -> KindRules:
        rules = RULES.get(kind)
        if rules is None:
            raise ProviderError(f"{address}: the memory provider does not serve {kind!r} resources",
                                address=address)
        return rules

    def _pause(self) -> None:
        # slept outside every lock, so slow calls still overlap as on a real service
        if self._latency_s:
            time.sleep(self._latency_s)

    def _begin(self, op: str, address: str, id: str) -> None:
        """Start a mutating call: log it, wait the latency, fail if told to."""
        if self._calls is not None:
            self._calls.record(op, address, id)
        self._pause()
        self._failures.raise_for(op, address)

    def _apply(self, planned: Planned, id: str) -> LiveObject:
        """Make the store hold what `planned` asks for; return it with unknowns filled."""
        rules = self._rules(planned.kind, planned.address)
        store = self._open_store()
        existing = store.get(id)
        placeholder = self._placeholder(planned.address)
        if (existing is not None and existing.get("kind") == planned.kind
                and realizes(planned.attributes, existing["attributes"])):
            # A retried create or a repeated update: the object already is what the
            # plan asks for, so adopt it rather than run or version it again.
            attributes = fill_unknowns(planned.attributes, pick_from(existing["attributes"], placeholder))
            return LiveObject(planned.address, planned.kind, id, attributes)
        apply = ApplyContext(id=id, existing=existing["attributes"] if existing else None,
                             next_counter=store.next_counter)
        computed = rules.realize(self._scope, planned.address, planned.attributes, apply)
        attributes = fill_unknowns(planned.attributes, pick_from(computed, placeholder))
        try:
            store.put(id, {"kind": planned.kind, "address": planned.address,
                           "attributes": to_plain(attributes)})
        except (TypeError, ValueError) as exc:
            raise ProviderError(f"{planned.address}: attributes cannot be stored as JSON: {exc}",
                                address=planned.address) from exc
        return LiveObject(planned.address, planned.kind, id, attributes)

    def _placeholder(self, address: str) -> Callable[[tuple], Any]:
        """A deterministic stand-in for an unknown leaf no rule computes."""
        return lambda path: self._scope.uri("unknown", address, ".".join(map(str, path)))

    def _live(self, obj: dict | None, kind: str, address: str, id: str) -> LiveObject | None:
        if obj is None:
            return None
        if obj.get("kind") not in (None, kind):
            raise ProviderError(f"{address}: memory object {id!r} has kind {obj.get('kind')!r}, "
                                f"not {kind!r}", address=address)
        return LiveObject(address=address, kind=kind, id=id, attributes=obj["attributes"])
