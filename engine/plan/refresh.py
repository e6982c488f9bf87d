"""Refresh: read every recorded object through its provider, in parallel.

Produces the refreshed state (what really exists now) and the drift: changes
made outside mlform.  Also recovers operations a killed run left pending in
the journal, by reading the object by its deterministic name and adopting it.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from mlform.addresses import parse_address
from mlform.diagnostics import Diagnostic, DiagnosticError, error
from mlform.expr.values import get_path, set_path
from mlform.plan.diff import changed_paths, dotted, parse_dotted
from mlform.plan.model import Action, Change
from mlform.providers.base import LiveObject, ProviderError
from mlform.state import ResourceState, State, StateWriter, mask

_MISSING = object()
_UNCHANGED = object()   # a refreshed object that is exactly as recorded


@dataclass
class RefreshResult:
    state: State
    drift: list[Change] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def run_parallel(items: list, fn: Callable, parallelism: int) -> list:
    """Map `fn` over items (results in order), on a thread pool when that helps.

    Threads only help calls that wait (network, disk, a provider's latency): under
    the GIL, calls that never wait (an in-memory provider) run 2-3x slower on a pool
    than inline.  So calls run inline, in growing batches, for as long as they keep
    the CPU busy; as soon as a batch spends its time waiting, the rest goes to the
    pool (chunked, so short calls don't drown in overhead).  A waiting provider pays
    one inline call for the probe.
    """
    if not items:
        return []
    if parallelism <= 1 or len(items) == 1:
        return [fn(x) for x in items]
    out: list = []
    pos, batch = 0, 1
    while pos < len(items):
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        out.extend(fn(x) for x in items[pos:pos + batch])
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        pos += batch
        batch = min(batch * 2, 256)
        if wall > 2 * cpu + 0.002:
            break                       # the calls wait on something: overlap the rest
    rest = items[pos:]
    if not rest:
        return out
    chunk = max(1, min(64, len(rest) // (parallelism * 4)))
    with cf.ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="mlform-refresh") as pool:
        parts = pool.map(lambda part: [fn(x) for x in part], _chunks(rest, chunk))
        return out + [r for part in parts for r in part]


def keep_service_managed(prior: dict, live: dict, paths: tuple[str, ...]) -> dict:
    """Live fields the service manages (autoscaled counts...) keep their recorded value."""
    out = dict(live)
    for dotted_path in paths:
        path = parse_dotted(dotted_path)
        old = get_path(prior, path, _MISSING)
        if old is not _MISSING:
            out = set_path(out, path, old)
    return out


def refresh(session, state: State, parallelism: int) -> RefreshResult:
    # Refresh replaces ResourceState objects (set/remove) and never edits one in place,
    # so the refreshed state shares the unchanged ones instead of deep-copying 10,000.
    result = RefreshResult(State(serial=state.serial, lineage=state.lineage,
                                 mlform_version=state.mlform_version,
                                 resources=dict(state.resources), outputs=dict(state.outputs),
                                 version=state.version))
    resources = list(state.resources.values())

    def read(rs: ResourceState):
        """(rs, outcome, diagnostics): outcome is None when the object is gone,
        _UNCHANGED, or (attributes, id) as refreshed.  Compared here, as each read
        returns, so 10,000 live copies are not all held until the last read is in."""
        try:
            provider = session.provider(rs.provider)
            live = provider.read(LiveObject(rs.address, rs.kind, rs.id, rs.attributes))
            if live is None:
                return rs, None, None
            try:
                managed = session.schema(rs.provider, rs.kind).service_managed
            except DiagnosticError:
                managed = ()
            attrs = mask(dict(live.attributes), rs.sensitive_paths, state.lineage)
            attrs = keep_service_managed(rs.attributes, attrs, managed)
            if attrs == rs.attributes and live.id == rs.id:
                return rs, _UNCHANGED, None
            return rs, (attrs, live.id), None
        except DiagnosticError as exc:
            return rs, None, exc.diagnostics
        except ProviderError as exc:
            return rs, None, [error(f"Refreshing {rs.address} failed: {exc.message}",
                                    detail=exc.service_message, address=rs.address,
                                    hint="Retrying may help." if exc.retryable else "")]
        except Exception as exc:  # a provider bug must not crash the engine
            return rs, None, [error(f'Provider "{rs.provider}" crashed reading {rs.address}: '
                                    f"{type(exc).__name__}: {exc}", address=rs.address,
                                    hint="This is a bug in the provider.")]

    for rs, outcome, diags in run_parallel(resources, read, parallelism):
        if diags:
            result.diagnostics.extend(diags)
            continue
        if outcome is _UNCHANGED:
            continue
        if outcome is None:
            result.state.remove(rs.address)
            result.drift.append(Change(
                address=rs.address, kind=rs.kind, name=rs.name, provider=rs.provider,
                action=Action.DELETE, before=rs.attributes, after=None, module=rs.module,
                index_key=rs.index_key, reasons=("deleted outside mlform",),
                before_sensitive=tuple(map(tuple, rs.sensitive_paths)), prior_id=rs.id))
            continue
        attrs, live_id = outcome
        paths = changed_paths(rs.attributes, attrs)
        updated = ResourceState(**{**rs.__dict__, "attributes": attrs, "id": live_id or rs.id})
        result.state.set(updated)
        if paths:
            result.drift.append(Change(
                address=rs.address, kind=rs.kind, name=rs.name, provider=rs.provider,
                action=Action.UPDATE, before=rs.attributes, after=attrs, module=rs.module,
                index_key=rs.index_key, changed_paths=paths,
                reasons=("changed outside mlform: " + ", ".join(dotted(p) for p in paths),),
                before_sensitive=tuple(map(tuple, rs.sensitive_paths)),
                after_sensitive=tuple(map(tuple, rs.sensitive_paths)), prior_id=rs.id))
    return result


def recover_pending(session, writer: StateWriter, pending, kinds_of: dict | None = None) -> list[Diagnostic]:
    """Settle operations a killed run started but never recorded.

    Providers name objects deterministically, so reading by address finds an
    object a create made before the kill; it is adopted rather than orphaned.
    """
    diags: list[Diagnostic] = []
    for op in pending:
        try:
            provider = session.provider(op.provider)
            live = provider.read(LiveObject(op.address, op.kind, op.id, {}))
        except DiagnosticError as exc:
            diags.extend(exc.diagnostics)
            continue
        except ProviderError as exc:
            diags.append(error(f"Recovering interrupted {op.action} of {op.address} failed: {exc.message}",
                               address=op.address, hint="Run the command again to retry."))
            continue
        current = writer.state().get(op.address)
        if live is None:
            if current is not None:
                writer.record_delete(op.address)
            else:
                writer.abandon(op.address)
            continue
        base = current or _new_resource_state(op)
        base.attributes = dict(live.attributes)
        base.id = live.id
        writer.record(base)
    return diags


def _new_resource_state(op) -> ResourceState:
    addr = parse_address(op.address)
    return ResourceState(address=op.address, kind=op.kind or addr.kind, name=addr.name,
                         module=addr.module, index_key=addr.index_key,
                         provider=op.provider, id=op.id, attributes={})


__all__ = ["refresh", "recover_pending", "RefreshResult", "run_parallel", "keep_service_managed"]
