"""Renderers: plans, drift, diagnostics and apply results as text, JSON,
Markdown and JUnit XML.

Renderers live apart from the plan model: they take frozen values and return
strings or plain dicts, and never print.
"""

import importlib
from typing import Any

# Each renderer is imported on first use (PEP 562): a plan printed for a terminal does
# not import the JUnit writer's XML library or the Markdown one's HTML escaping.
_MODULE_OF = {
    "render_apply_summary": "mlform.views.human", "render_diagnostics": "mlform.views.human",
    "render_drift": "mlform.views.human", "render_plan": "mlform.views.human",
    "plan_from_json": "mlform.plan.codec", "plan_to_json": "mlform.plan.codec",
    "render_drift_junit": "mlform.views.junit",
    "render_plan_markdown": "mlform.views.markdown",
    "ApplySummary": "mlform.views.summary",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ApplySummary",
    "plan_from_json",
    "plan_to_json",
    "render_apply_summary",
    "render_diagnostics",
    "render_drift",
    "render_drift_junit",
    "render_plan",
    "render_plan_markdown",
]
