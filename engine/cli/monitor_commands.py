"""`mlform monitor run ADDR`: run a monitor's checks now, outside plan/apply.

The monitor is found in the state (read-only: no lock, nothing recovered or written)
and its provider runs the check through `Provider.action(live, "run", {})`, which
returns the report.  Exit codes follow `drift`: 0 no breach, 2 breach, 1 error.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlform import operations
from mlform.cli import output as out
from mlform.diagnostics import DiagnosticError
from mlform.providers.base import LiveObject, ProviderError
from mlform.session import Session, SessionOptions

EXIT_BREACH = 2


def run(address: str, env: str | None, vars: list[str], var_files: list[Path], as_json: bool) -> int:
    session = Session(Path("."), SessionOptions(env=env, vars=list(vars),
                                                var_files=[Path(f) for f in var_files]))
    try:
        state = operations.load_state(session, recover=False)
        rs = state.get(address)
        if rs is None:
            monitors = sorted(a for a, r in state.resources.items() if r.kind == "monitor")
            raise DiagnosticError.single(
                f"No resource at {address} in the state",
                hint=("Monitors in the state: " + ", ".join(monitors[:5])) if monitors
                else "Apply the stack first; see mlform state list.")
        if rs.kind != "monitor":
            raise DiagnosticError.single(f"{address} is a {rs.kind}, not a monitor",
                                         hint="mlform monitor run takes a monitor address.")
        provider = session.provider(rs.provider)
        try:
            report = provider.action(LiveObject(rs.address, rs.kind, rs.id, rs.attributes), "run", {})
        except ProviderError as exc:
            raise DiagnosticError.single(
                f"Running {address} failed: {exc.message}", detail=exc.service_message,
                address=address, hint="Retrying may help." if exc.retryable else "")
    finally:
        session.close()
    if as_json:
        out.raw(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        out.raw(report.get("summary") or json.dumps(report, indent=2, sort_keys=True, default=str))
    return EXIT_BREACH if report.get("breached") else 0
