"""Refresh: read every recorded object through its provider, in parallel.

Produces the refreshed state (what really exists now) and the drift: changes
made outside mlform.  It runs before the planner (which does no I/O) and hands it
the result as a value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlform.diagnostics import Diagnostic, DiagnosticError, error
from mlform.expr.values import get_path, set_path
from mlform.plan.diff import changed_paths, dotted, parse_dotted
from mlform.plan.model import Action, Change
from mlform.plan.inputs import ProviderSet
from mlform.providers.base import LiveObject, ProviderError
from mlform.providers.kit.parallel import run_parallel
from mlform.state.model import ResourceState, State
from mlform.state.sensitive import mask

_MISSING = object()
_UNCHANGED = object()   # a refreshed object that is exactly as recorded


@dataclass
class RefreshResult:
    state: State
    drift: list[Change] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)


def keep_service_managed(prior: dict, live: dict, paths: tuple[str, ...]) -> dict:
    """Live fields the service manages (autoscaled counts...) keep their recorded value."""
    out = dict(live)
    for dotted_path in paths:
        path = parse_dotted(dotted_path)
        old = get_path(prior, path, _MISSING)
        if old is not _MISSING:
            out = set_path(out, path, old)
    return out


def refresh(providers: ProviderSet, state: State, parallelism: int) -> RefreshResult:
    # Refresh replaces ResourceState objects (set/remove) and never edits one in place,
    # so the refreshed state shares the unchanged ones instead of deep-copying 10,000.
    result = RefreshResult(State(serial=state.serial, lineage=state.lineage,
                                 mlform_version=state.mlform_version,
                                 resources=dict(state.resources), outputs=dict(state.outputs),
                                 version=state.version))
    resources = list(state.resources.values())

    def read_object(provider, rs: ResourceState):
        """None when the object is gone, _UNCHANGED, or (attributes, id) as refreshed."""
        if rs.holds_only_deposed:
            return None                # it only holds deposed objects: nothing to read
        live = provider.read(LiveObject(rs.address, rs.kind, rs.id, rs.attributes))
        if live is None:
            return None
        try:
            managed = providers.schema(rs.provider, rs.kind).service_managed
        except DiagnosticError:
            managed = ()
        attrs = mask(dict(live.attributes), rs.sensitive_paths, state.lineage)
        attrs = keep_service_managed(rs.attributes, attrs, managed)
        if attrs == rs.attributes and live.id == rs.id:
            return _UNCHANGED
        return attrs, live.id

    def read(rs: ResourceState):
        """(rs, outcome, diagnostics, deposed): the object's outcome (`read_object`), and
        the deposed objects that still exist (None when it had none).  Compared here, as
        each read returns, so 10,000 live copies are not all held until the last read."""
        try:
            provider = providers.get(rs.provider)
            deposed = _still_there(provider, rs) if rs.deposed else None
            return rs, read_object(provider, rs), None, deposed
        except DiagnosticError as exc:
            return rs, None, exc.diagnostics, None
        except ProviderError as exc:
            return rs, None, [error(f"Refreshing {rs.address} failed: {exc.message}",
                                    detail=exc.service_message, address=rs.address,
                                    hint="Retrying may help." if exc.retryable else "")], None
        except Exception as exc:  # a provider bug must not crash the engine
            return rs, None, [error(f'Provider "{rs.provider}" crashed reading {rs.address}: '
                                    f"{type(exc).__name__}: {exc}", address=rs.address,
                                    hint="This is a bug in the provider.")], None

    for rs, outcome, diags, deposed in run_parallel(resources, read, parallelism,
                                                    "mlform-refresh"):
        if diags:
            result.diagnostics.extend(diags)
            continue
        if deposed is not None and deposed != rs.deposed:
            rs = rs.with_deposed(deposed)      # the ones found gone are forgotten
            result.state.set(rs)
        if outcome is _UNCHANGED:
            continue
        if outcome is None:
            if not rs.holds_only_deposed:
                result.drift.append(_gone(rs))
            if rs.deposed:
                # the object is gone, its deposed objects are not: keep them (a placeholder)
                result.state.set(ResourceState(**{**rs.__dict__, "id": None, "attributes": {}}))
            else:
                result.state.remove(rs.address)
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


def _gone(rs: ResourceState) -> Change:
    return Change(address=rs.address, kind=rs.kind, name=rs.name, provider=rs.provider,
                  action=Action.DELETE, before=rs.attributes, after=None, module=rs.module,
                  index_key=rs.index_key, reasons=("deleted outside mlform",),
                  before_sensitive=tuple(map(tuple, rs.sensitive_paths)), prior_id=rs.id)


def _still_there(provider, rs: ResourceState) -> list[dict]:
    """The deposed objects of `rs` that still exist (read by their ids)."""
    return [obj for obj in rs.deposed
            if provider.read(LiveObject(rs.address, rs.kind, obj["id"],
                                        obj.get("attributes") or {})) is not None]


__all__ = ["refresh", "RefreshResult", "keep_service_managed"]
