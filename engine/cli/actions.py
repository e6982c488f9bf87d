"""Provider actions on one recorded resource, outside plan/apply (`mlform monitor run`,
`mlform experiment report|step`).

The resource is found in the state read-only (no lock, nothing recovered or written) and
its provider answers through `Provider.action(live, name, args)`; every mistake (not in
the state, another kind, the provider failing) is a diagnostic.
"""

from __future__ import annotations

from pathlib import Path

from mlform import operations
from mlform.diagnostics import DiagnosticError
from mlform.providers.base import LiveObject, ProviderError
from mlform.session import Session, SessionOptions


def run_action(address: str, kind: str, name: str, *, command: str, env: str | None,
               vars: list[str], var_files: list[Path], args: dict | None = None,
               failure: str = "Running") -> dict:
    """Provider action `name` on the `kind` resource at `address`; `command` (``monitor
    run``) names the command in hints, `failure` starts the summary of a failed action."""
    session = Session(Path("."), SessionOptions(env=env, vars=list(vars),
                                                var_files=[Path(f) for f in var_files]))
    try:
        state = operations.load_state(session, recover=False)
        rs = state.get(address)
        if rs is None:
            same = sorted(a for a, r in state.resources.items() if r.kind == kind)
            raise DiagnosticError.single(
                f"No resource at {address} in the state",
                hint=(f"{kind.capitalize()}s in the state: " + ", ".join(same[:5])) if same
                else "Apply the stack first; see mlform state list.")
        if rs.kind != kind:
            article = "an" if kind[0] in "aeiou" else "a"
            raise DiagnosticError.single(f"{address} is a {rs.kind}, not {article} {kind}",
                                         hint=f"mlform {command} takes {article} {kind} address.")
        provider = session.provider(rs.provider)
        try:
            return provider.action(LiveObject(rs.address, rs.kind, rs.id, rs.attributes),
                                   name, args or {})
        except ProviderError as exc:
            raise DiagnosticError.single(
                f"{failure} {address} failed: {exc.message}", detail=exc.service_message,
                address=address, hint=" ".join(h for h in (
                    exc.hint, "Retrying may help." if exc.retryable else "") if h))
    finally:
        session.close()
