"""Recovery: settle operations a killed run started but never recorded.

The state journal holds an intent before every provider call and a result after it
(`mlform.state`).  An intent without a result is an operation that may or may not have
happened.  Providers name objects deterministically, so reading by address finds an
object a create made before the kill; it is adopted rather than orphaned.  This runs
under the state lock, before anything is planned (`mlform.operations.load_state`).
"""

from __future__ import annotations

from mlform.addresses import parse_address
from mlform.diagnostics import Diagnostic, DiagnosticError, error
from mlform.plan.inputs import ProviderSet
from mlform.providers.base import LiveObject, ProviderError
from mlform.state.backend import StateWriter
from mlform.state.model import ResourceState


def recover_pending(providers: ProviderSet, writer: StateWriter, pending) -> list[Diagnostic]:
    """Settle operations a killed run started but never recorded.

    Providers name objects deterministically, so reading by address finds an
    object a create made before the kill; it is adopted rather than orphaned.
    """
    diags: list[Diagnostic] = []
    for op in pending:
        current = writer.state().get(op.address)
        deposed = _deposed(current, op) if op.action == "delete-deposed" else None
        try:
            provider = providers.get(op.provider)
            live = provider.read(LiveObject(op.address, op.kind, op.id,
                                            deposed.get("attributes", {}) if deposed else {}))
        except DiagnosticError as exc:
            diags.extend(exc.diagnostics)
            continue
        except ProviderError as exc:
            diags.append(error(f"Recovering interrupted {op.action} of {op.address} failed: {exc.message}",
                               address=op.address, hint="Run the command again to retry."))
            continue
        _SETTLE.get(op.action, _settle_call)(writer, op, current, live)
    return diags


def _deposed(current: ResourceState | None, op) -> dict | None:
    return next((d for d in (current.deposed if current else ()) if d.get("id") == op.id), None)


def _settle_call(writer: StateWriter, op, current: ResourceState | None, live) -> None:
    """A create, update or delete: record what exists now (or that nothing does)."""
    if op.replaces is not None:
        _settle_replacement(writer, op, current, live)
        return
    if live is None:
        if current is not None:
            writer.record_delete(op.address)
        else:
            writer.abandon(op.address)
        return
    base = current or _new_resource_state(op)
    base.attributes = dict(live.attributes)
    base.id = live.id
    writer.record(base)


def _settle_replacement(writer: StateWriter, op, current: ResourceState | None, live) -> None:
    """A create_before_destroy create: the object found by address is either the new
    one (recorded, with the old one kept as deposed for the next plan to delete) or still
    the old one (the create made nothing)."""
    if live is None or live.id == op.replaces or current is None:
        writer.abandon(op.address)
        return
    old = {"id": current.id, "attributes": current.attributes}
    new = current.with_deposed([*current.deposed, old])
    new.id, new.attributes = live.id, dict(live.attributes)
    writer.record(new)


def _settle_deposed(writer: StateWriter, op, current: ResourceState | None, live) -> None:
    """The delete of a deposed object: gone, or still there for the next plan to delete."""
    if live is None and current is not None:
        writer.record(current.with_deposed([d for d in current.deposed if d.get("id") != op.id]))
    else:
        writer.abandon(op.address)


#: how an interrupted call is settled, by the action its intent announced
_SETTLE = {"delete-deposed": _settle_deposed}


def _new_resource_state(op) -> ResourceState:
    addr = parse_address(op.address)
    return ResourceState(address=op.address, kind=op.kind or addr.kind, name=addr.name,
                         module=addr.module, index_key=addr.index_key,
                         provider=op.provider, id=op.id, attributes={})


__all__ = ["recover_pending"]
