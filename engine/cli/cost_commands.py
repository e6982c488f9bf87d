"""`mlform cost [DIR] [--env E] [--json]`: what the current state costs, per resource.

The state as last recorded (no refresh, no lock: it only reads), priced by each
resource's provider (`Provider.cost_basis`) exactly as a plan's cost section is.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlform import operations
from mlform.cli import output as out
from mlform.cli.commands import _session
from mlform.cost import state_cost


def cost(dir: Path, env: str | None, as_json: bool) -> int:
    from mlform.views.cost import state_cost_lines
    session = _session(dir, env)
    state = operations.load_state(session, recover=False)
    report = state_cost(state, session.provider_set(state))
    if as_json:
        out.raw(json.dumps(report.to_json(), sort_keys=True, indent=2))
    else:
        from rich.markup import escape   # addresses such as endpoint.x["a"] are not markup
        out.echo(escape("\n".join(state_cost_lines(report))))
    return 0
