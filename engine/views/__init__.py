"""Renderers: plans, drift, diagnostics and apply results as text, JSON,
Markdown and JUnit XML.

Renderers live apart from the plan model: they take frozen values and return
strings or plain dicts, and never print.
"""

from mlform.views.human import (
    render_apply_summary, render_diagnostics, render_drift, render_plan,
)
from mlform.plan.codec import plan_from_json, plan_to_json
from mlform.views.junit import render_drift_junit
from mlform.views.markdown import render_plan_markdown
from mlform.views.summary import ApplySummary

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
