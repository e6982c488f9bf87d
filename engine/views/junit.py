"""Drift as JUnit XML, so CI systems show each drifted resource as a failed
test.  One test case per refreshed resource; sensitive values are redacted
in the diff text like everywhere else.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, Mapping

from mlform.plan.model import Action, Change, Plan
from mlform.views._lines import Line, change_lines, changed_attributes

SUITE_NAME = "mlform drift"

_DRIFT_MESSAGES = {
    Action.DELETE: lambda c: "drifted: deleted outside of mlform",
    Action.CREATE: lambda c: "drifted: created outside of mlform",
}


def _kind_of(address: str, entry: Any) -> str:
    """The resource kind: from the refreshed entry, else from the address
    (`module.a.KIND.NAME[key]`)."""
    if isinstance(entry, Mapping) and entry.get("kind"):
        return str(entry["kind"])
    parts = address.split(".")
    while len(parts) > 2 and parts[0] == "module":
        parts = parts[2:]
    return parts[0]


def _message(change: Change) -> str:
    default = lambda c: "drifted: " + ", ".join(changed_attributes(c))  # noqa: E731
    return _DRIFT_MESSAGES.get(change.action, default)(change)


def _diff_text(change: Change) -> str:
    def layout(line: Line) -> str:
        return (f"{line.symbol:>{3 + 4 * line.depth}} {line.text}"
                + (f" {line.note}" if line.note else ""))
    return "\n".join(layout(ln) for ln in change_lines(change))


def render_drift_junit(plan: Plan) -> str:
    """`<testsuite name="mlform drift">` with a test case per refreshed
    resource and a `<failure>` for each drifted one."""
    drift = {c.address: c for c in plan.drift}
    addresses = sorted(set(plan.refreshed) | set(drift))
    suite = ET.Element("testsuite", {
        "name": SUITE_NAME,
        "tests": str(len(addresses)),
        "failures": str(len(drift)),
        "errors": "0",
        "skipped": "0",
    })
    for address in addresses:
        change = drift.get(address)
        kind = change.kind if change else _kind_of(address, plan.refreshed.get(address))
        case = ET.SubElement(suite, "testcase", {"classname": kind, "name": address})
        if change is not None:
            failure = ET.SubElement(case, "failure", {"message": _message(change),
                                                      "type": "drift"})
            failure.text = _diff_text(change)
    ET.indent(suite)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            + ET.tostring(suite, encoding="unicode") + "\n")
