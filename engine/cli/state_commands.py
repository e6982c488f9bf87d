"""`mlform state ...`: list, show, rm, mv, pull, push."""

from __future__ import annotations

import json
from pathlib import Path

from mlform import operations
from mlform.addresses import AddressError, matches, parse_address
from mlform.cli import output as out
from mlform.cli.history_commands import audited, note
from mlform.diagnostics import DiagnosticError
from mlform.session import Session, SessionOptions
from mlform.state import ResourceState, State, StateError, is_marker


def _session(env: str | None) -> Session:
    return Session(Path("."), SessionOptions(env=env))


def format_resource(rs: ResourceState) -> str:
    lines = [f"# {rs.address}" + (" (tainted)" if rs.status == "tainted" else ""),
             f"  id       = {json.dumps(rs.id)}", f"  provider = {json.dumps(rs.provider)}"]
    sensitive = {tuple(p) for p in rs.sensitive_paths}
    for key, value in sorted(rs.attributes.items()):
        shown = "(sensitive value)" if (key,) in sensitive else json.dumps(
            _hide_markers(value), sort_keys=True)
        lines.append(f"  {key} = {shown}")
    return "\n".join(lines)


def _hide_markers(value):
    """Nested sensitive values are stored as keyed hashes: show them as people expect."""
    if is_marker(value):
        return "(sensitive value)"
    if isinstance(value, dict):
        return {k: _hide_markers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hide_markers(v) for v in value]
    return value


def _require(state: State, address: str) -> ResourceState:
    rs = state.get(address)
    if rs is None:
        close = [a for a in state.resources if matches(address, a)]
        raise DiagnosticError.single(f"No resource at {address} in the state",
                                     hint=("Instances under it: " + ", ".join(close[:5])) if close
                                     else "See mlform state list.")
    return rs


def list_(env: str | None) -> int:
    state = operations.load_state(_session(env), recover=False)
    for address in sorted(state.resources):
        out.echo(address)
    return 0


def show(address: str, env: str | None) -> int:
    state = operations.load_state(_session(env), recover=False)
    out.echo(format_resource(_require(state, address)))
    return 0


def rm(address: str, env: str | None) -> int:
    session = _session(env)
    with operations.locked(session, "state rm"), \
            audited(session, "state rm", changes=[{"address": address, "actions": ["forget"]}]):
        state = operations.load_state(session)
        targets = [a for a in state.resources if matches(address, a)]
        if not targets:
            _require(state, address)
        writer = session.backend.open_writer(state)
        for a in targets:
            writer.record_delete(a)
        writer.close()
        note(session, "state rm", outcome="success",
             changes=[{"address": a, "actions": ["forget"]} for a in targets])
    for a in targets:
        out.echo(f"Removed {a} (the object itself was not destroyed)")
    return 0


def mv(source: str, destination: str, env: str | None) -> int:
    session = _session(env)
    try:
        dest = parse_address(destination)
    except AddressError as exc:
        raise DiagnosticError.single(str(exc))
    changes = [{"address": destination, "actions": ["move"], "from": source}]
    with operations.locked(session, "state mv"), audited(session, "state mv", changes=changes):
        state = operations.load_state(session)
        rs = _require(state, source)
        if state.get(destination) is not None:
            raise DiagnosticError.single(f"{destination} already exists in the state")
        if dest.kind != rs.kind:
            raise DiagnosticError.single(f"Cannot move a {rs.kind} to a {dest.kind} address")
        moved = ResourceState(**{**rs.__dict__, "address": destination, "name": dest.name,
                                 "module": dest.module, "index_key": dest.index_key})
        writer = session.backend.open_writer(state)
        writer.record_delete(source)
        writer.record(moved)
        writer.close()
        note(session, "state mv", outcome="success", changes=changes)
    out.echo(f"Moved {source} to {destination}")
    return 0


def pull(env: str | None) -> int:
    session = _session(env)
    try:
        doc = session.backend.pull()
    except StateError as exc:
        raise DiagnosticError([exc.diagnostic()])
    out.raw(json.dumps(doc, indent=2, sort_keys=True))
    return 0


def push(file: Path, force: bool, env: str | None) -> int:
    session = _session(env)
    try:
        doc = json.loads(Path(file).read_text())
    except (OSError, ValueError) as exc:
        raise DiagnosticError.single(f"Cannot read {file}: {exc}")
    with operations.locked(session, "state push"), audited(session, "state push"):
        try:
            session.backend.push(doc, force=force)
        except StateError as exc:
            raise DiagnosticError([exc.diagnostic()])
        note(session, "state push", outcome="success",
             detail=f"serial {doc.get('serial')}" + (", forced" if force else "")
             if isinstance(doc, dict) else "")
    out.echo(f"Pushed {file} to {session.backend.describe()}")
    return 0
