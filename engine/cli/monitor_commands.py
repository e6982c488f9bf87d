"""`mlform monitor run ADDR`: run a monitor's checks now, outside plan/apply.

The monitor is found in the state (read-only: no lock, nothing recovered or written)
and its provider runs the check through `Provider.action(live, "run", {})`, which
returns the report.  Exit codes follow `drift`: 0 no breach, 2 breach, 1 error.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlform.cli import output as out
from mlform.cli.actions import run_action

EXIT_BREACH = 2


def run(address: str, env: str | None, vars: list[str], var_files: list[Path], as_json: bool) -> int:
    report = run_action(address, "monitor", "run", command="monitor run", env=env, vars=vars,
                        var_files=var_files)
    if as_json:
        out.raw(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        out.raw(report.get("summary") or json.dumps(report, indent=2, sort_keys=True, default=str))
    return EXIT_BREACH if report.get("breached") else 0
