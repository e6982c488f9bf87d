"""What every kind of the memory provider shares: the store, and how objects are kept.

`MemoryEnv` is the provider's configured view (the store file, the call log, injected
failures and latency, the names that go into URIs); `MemoryHandler` is the per-kind
handler every kind module subclasses.  A kind only says what it computes: `compute`
(pure, at plan: known values or `UNKNOWN`) and, for values only apply can know,
`realize`.  Creating, reading, updating, deleting and importing are the same for every
kind: an object is ``{"kind", "address", "attributes"}`` in the store under its id,
and a create or update whose object already is what the plan asks for adopts it
instead of acting again (a retried create, a repeated update).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from mlform.providers.base import (
    Desired, Diagnostic, Facts, KindSchema, LiveObject, Planned, ProviderContext, ProviderError,
    error,
)
from mlform.providers.kit.digests import DigestCache
from mlform.providers.kit.handlers import KindHandler
from mlform.providers.kit.names import object_id
from mlform.providers.kit.plans import plan_of

from .calllog import CallLog
from .config import FailurePlan, MemoryConfig, injected_error, resolve_path
from .store import MemoryStore, acquire, release
from .trees import fill_unknowns, pick_from, realizes, to_plain

__all__ = ["MemoryEnv", "MemoryHandler", "Computed"]

Attributes = Mapping[str, Any]


@dataclass
class Computed:
    """What a kind computes at plan: values (UNKNOWN where only apply knows) and reasons."""

    values: dict[str, Any]
    reasons: tuple[str, ...] = ()


@dataclass
class MemoryEnv:
    """The memory provider's configured view, shared by its handlers."""

    context: ProviderContext
    config: MemoryConfig
    store_path: Path
    digests: DigestCache
    calls: CallLog | None = None
    failures: FailurePlan = field(default_factory=lambda: FailurePlan({}))
    _store: MemoryStore | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def configure(cls, context: ProviderContext, config: MemoryConfig) -> "MemoryEnv":
        where = dict(stack_dir=Path(context.stack_dir), stack=context.stack, env=context.env)
        env = cls(context, config, resolve_path(config.store, **where),
                  DigestCache.shared(context.cache_dir),
                  CallLog(resolve_path(config.call_log, **where)) if config.call_log else None,
                  FailurePlan(config.fail))
        env.store()   # load now, so a broken store file is reported at configure time
        return env

    @property
    def stack_dir(self) -> Path:
        return Path(self.context.stack_dir)

    def uri(self, *parts: str) -> str:
        return "memory://" + "/".join((self.context.stack, self.context.env) + parts)

    def object_id(self, address: str) -> str:
        return object_id(self.context.stack, self.context.env, address)

    def store(self) -> MemoryStore:
        with self._lock:
            if self._store is None:
                self._store = acquire(self.store_path)
            return self._store

    def pause(self) -> None:
        # slept outside every lock, so slow calls still overlap as on a real service
        if self.config.latency_ms:
            time.sleep(self.config.latency_ms / 1000.0)

    def begin(self, op: str, address: str, id: str) -> None:
        """Start a mutating call: log it, wait the latency, fail if told to."""
        if self.calls is not None:
            self.calls.record(op, address, id)
        self.pause()
        self.failures.raise_for(op, address)

    def close(self) -> None:
        """Compact the store file and close the call log; a later call reopens both."""
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            release(store)
        if self.calls is not None:
            self.calls.close()


class MemoryHandler(KindHandler):
    """One kind on the memory provider: `compute` at plan, `realize` at apply."""

    env: MemoryEnv
    kind: ClassVar[str] = ""
    schema: ClassVar[KindSchema] = KindSchema()

    # -- what a kind says ------------------------------------------------------

    def compute(self, address: str, attrs: Attributes, prior: Attributes | None,
                facts: Facts) -> Computed:
        """The computed attributes as far as plan knows them (pure)."""
        return Computed({})

    def kept(self, address: str, attrs: Attributes, existing: Mapping[str, Any] | None
             ) -> dict[str, Any]:
        """Fields besides the attributes that the stored object keeps (e.g. a registry's
        per-version records); `existing` is the whole object stored before, if any."""
        return {}

    def realize(self, address: str, attrs: Attributes, existing: Attributes | None,
                next_counter: Callable[[str, int], int], id: str) -> dict[str, Any]:
        """Concrete values for what `compute` left UNKNOWN, at create/update (by default:
        compute again from the now better-known attributes, reading its facts afresh).
        The only side effect allowed is `next_counter` (run and version numbers)."""
        desired = Desired(address, self.kind, address.rsplit(".", 1)[-1], attrs)
        facts = self.read_facts(list(self.fact_keys(desired, None)))
        return self.compute(address, attrs, None, facts).values

    # -- the contract ----------------------------------------------------------

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        message = self.env.failures.message("validate", desired.address)
        if message is not None:
            return [error(message, "injected by the memory provider's `fail` setting",
                          address=desired.address)]
        return []

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        self.env.failures.raise_for("plan", desired.address)
        found = self.compute(desired.address, desired.attributes,
                             prior.attributes if prior is not None else None, facts)
        return plan_of(desired, found.values, reasons=found.reasons)

    def create(self, planned_: Planned) -> LiveObject:
        id = self._new_id(planned_)
        self.env.begin("create", planned_.address, id)
        live = self._apply(planned_, id)
        message = self.env.failures.message("create-partial", planned_.address)
        if message is not None:
            raise injected_error("create", planned_.address, message, partial=live)
        return live

    def read(self, prior: LiveObject) -> LiveObject | None:
        return self._lookup("read", prior.kind, prior.address,
                            prior.id or self._newest_id(prior.address))

    def import_(self, kind: str, address: str, id: str) -> LiveObject | None:
        return self._lookup("import", kind, address, id)

    def update(self, prior: LiveObject, planned_: Planned) -> LiveObject:
        id = prior.id or self.env.object_id(planned_.address)
        self.env.begin("update", planned_.address, id)
        return self._apply(planned_, id)

    def delete(self, prior: LiveObject) -> None:
        id = prior.id or self.env.object_id(prior.address)
        self.env.begin("delete", prior.address, id)
        self.env.store().delete(id)

    # -- ids -------------------------------------------------------------------

    def _ids(self, address: str) -> tuple[str, str]:
        """The two ids an address's object may have: ``stack/env/address``, and the same
        with ``#2`` for the new object of a create_before_destroy replacement (the old
        one still holds the first); replacements alternate between them."""
        base = self.env.object_id(address)
        return base, f"{base}#2"

    def _new_id(self, planned_: Planned) -> str:
        first, second = self._ids(planned_.address)
        return second if planned_.replaces == first else first

    def _newest_id(self, address: str) -> str:
        """The id of the object most recently made for `address` (the engine asks by
        address after a create it could not record)."""
        store = self.env.store()
        found = [(obj.get("generation", 0), id) for id in self._ids(address)
                 if (obj := store.get(id)) is not None]
        return max(found)[1] if found else self._ids(address)[0]

    # -- helpers ---------------------------------------------------------------

    def _lookup(self, op: str, kind: str, address: str, id: str) -> LiveObject | None:
        self.env.pause()
        self.env.failures.raise_for(op, address)
        store = self.env.store()
        store.refresh()  # someone may have edited the file since it was loaded
        obj = store.get(id)
        if obj is None:
            return None
        if obj.get("kind") not in (None, kind):
            raise ProviderError(f"{address}: memory object {id!r} has kind {obj.get('kind')!r}, "
                                f"not {kind!r}", address=address)
        return LiveObject(address=address, kind=kind, id=id, attributes=obj["attributes"])

    def _apply(self, planned_: Planned, id: str) -> LiveObject:
        """Make the store hold what `planned_` asks for; return it with unknowns filled."""
        store = self.env.store()
        existing = store.get(id)
        placeholder = self._placeholder(planned_.address)
        if (existing is not None and existing.get("kind") == planned_.kind
                and realizes(planned_.attributes, existing["attributes"])):
            # A retried create or a repeated update: the object already is what the
            # plan asks for, so adopt it rather than run or version it again.
            attributes = fill_unknowns(planned_.attributes,
                                       pick_from(existing["attributes"], placeholder))
            return LiveObject(planned_.address, planned_.kind, id, attributes)
        computed = self.realize(planned_.address, planned_.attributes,
                                existing["attributes"] if existing else None,
                                store.next_counter, id)
        attributes = fill_unknowns(planned_.attributes, pick_from(computed, placeholder))
        obj = {"kind": planned_.kind, "address": planned_.address,
               "attributes": to_plain(attributes)}
        obj.update(to_plain(self.kept(planned_.address, obj["attributes"], existing)))
        # which of an address's two objects is the newer (`_newest_id`): only the objects
        # of replacements carry a generation, so plain creates cost no counter
        generation = (store.next_counter("generation") if planned_.replaces is not None
                      else (existing or {}).get("generation"))
        if generation:
            obj["generation"] = generation
        try:
            store.put(id, obj)
        except (TypeError, ValueError) as exc:
            raise ProviderError(f"{planned_.address}: attributes cannot be stored as JSON: {exc}",
                                address=planned_.address) from exc
        return LiveObject(planned_.address, planned_.kind, id, attributes)

    def _placeholder(self, address: str) -> Callable[[tuple], Any]:
        """A deterministic stand-in for an unknown leaf no rule computes."""
        return lambda path: self.env.uri("unknown", address, ".".join(map(str, path)))
