"""Experiment tracking: the runs the providers keep, logged to MLflow after an apply.

Where runs go is a `tracking` setting: the stack's ``tracking { mlflow { uri, experiment } }``
block, or a provider's own ``tracking = { mlflow = { ... } }`` argument, which overrides
the stack's for that provider's runs (the session takes it out of the provider's
arguments, so no provider's config model knows it).  The experiment defaults to the
stack's name.

`sync` reads every configured provider's `Provider.run_records` and the `model`
resources of a state, and hands them to `tracking_mlflow`, one call per tracking target:
runs not yet in MLflow are logged, model versions are mirrored into the registry.  It
runs after the apply has committed its state, so MLflow being down or refusing costs
the apply nothing but a diagnostic: the records stay with the provider and the next
sync logs them.  MLflow is imported only here, only when a stack has a tracking setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlform.config.decode import tracking_target
from mlform.config.model import MlflowTarget, Tracking
from mlform.diagnostics import Diagnostic, DiagnosticError, error, warning
from mlform.expr import ExprError, strip_sensitive
from mlform.state import State

__all__ = ["TargetReport", "TrackingResult", "configured", "targets", "sync",
           "sync_after_apply"]


@dataclass
class TargetReport:
    """What one sync did at one MLflow target."""

    uri: str
    experiment: str
    providers: tuple[str, ...]
    runs_logged: list[str] = field(default_factory=list)        # mlform run ids
    versions_registered: list[str] = field(default_factory=list)  # "name v3"
    aliases_set: list[str] = field(default_factory=list)          # "name@production -> 3"

    @property
    def changed(self) -> bool:
        return bool(self.runs_logged or self.versions_registered or self.aliases_set)

    def summary(self) -> str:
        parts = [f"{len(self.runs_logged)} run(s)"]
        if self.versions_registered:
            parts.append(f"{len(self.versions_registered)} model version(s)")
        if self.aliases_set:
            parts.append(f"alias(es) {', '.join(self.aliases_set)}")
        return (f"MLflow: logged {', '.join(parts)} to {self.uri} "
                f"(experiment {self.experiment!r})")


@dataclass
class TrackingResult:
    reports: list[TargetReport] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)


def configured(session) -> bool:
    """Whether the stack sets tracking anywhere (no provider is configured to know)."""
    declared = {*session.config.root.providers, *session.config.env.providers}
    return (session.stack_tracking is not None
            or any(session.provider_tracking(key) is not None for key in declared)
            or any(True for _ in _module_tracking(session.config.root)))   # to warn of it


def _provider_keys(session, state: State | None) -> set[str]:
    keys = {session.provider_key_for(node.config) for node in session.graph.resources()}
    keys |= {*session.config.root.providers, *session.config.env.providers}
    if state is not None:
        keys |= {rs.provider for rs in state.resources.values() if rs.provider}
    return keys


def _evaluate(session, tracking: Tracking) -> tuple[MlflowTarget | None, list[Diagnostic]]:
    try:
        value, _ = strip_sensitive(tracking.value.evaluate(session.config_scope()))
    except ExprError as exc:
        return None, [exc.diagnostic()]
    except DiagnosticError as exc:   # the variables themselves (a missing value)
        return None, list(exc.diagnostics)
    return tracking_target(value, tracking)


def targets(session, state: State | None = None
            ) -> tuple[dict[str, MlflowTarget], list[Diagnostic]]:
    """Provider key -> the MLflow target its runs go to (providers without one left out),
    with the experiment named (the stack's name when the setting names none)."""
    out: dict[str, MlflowTarget] = {}
    diags: list[Diagnostic] = [
        warning(f"module {name}: its tracking block is ignored", source=tracking.source,
                hint="Only the stack's own tracking block (and its providers') applies; "
                     "move it to the stack.")
        for name, tracking in _module_tracking(session.config.root)]
    evaluated: dict[int, MlflowTarget | None] = {}
    for key in sorted(_provider_keys(session, state)):
        tracking = session.provider_tracking(key) or session.stack_tracking
        if tracking is None:
            continue
        if id(tracking) not in evaluated:   # the stack's block: evaluated (and reported) once
            target, problems = _evaluate(session, tracking)
            diags.extend(problems)
            evaluated[id(tracking)] = target
        target = evaluated[id(tracking)]
        if target is not None:
            out[key] = MlflowTarget(target.uri, target.experiment or session.config.stack_name,
                                    target.source)
    return out, diags


def _module_tracking(module, prefix: str = ""):
    for name, child in sorted(module.children.items()):
        if child.tracking is not None:
            yield f"{prefix}{name}", child.tracking
        yield from _module_tracking(child, f"{prefix}{name}.")


def sync(session, state: State | None = None) -> TrackingResult:
    """Log the runs not yet in MLflow and mirror `state`'s model versions, for every
    provider with a tracking target.  Never raises for MLflow's sake: a target that is
    down or refuses is one error diagnostic, and the other targets still sync.
    (`mlform runs sync` can call this on its own; the apply calls `sync_after_apply`.)"""
    result = TrackingResult()
    if not configured(session):
        return result
    by_provider, result.diagnostics = targets(session, state)
    groups: dict[tuple[str, str], list[str]] = {}
    for key, target in by_provider.items():
        groups.setdefault((target.uri, target.experiment or ""), []).append(key)
    if not groups:
        return result
    try:
        from mlform import tracking_mlflow
    except ImportError as exc:
        result.diagnostics.append(error(
            f"tracking is set, but MLflow cannot be imported: {exc}",
            source=next(iter(by_provider.values())).source,
            hint="Install it: pip install 'mlform[tracking]' (or pip install mlflow); the "
                 "runs are kept by mlform (`mlform runs list`) and the next apply logs them."))
        return result
    for (uri, experiment), keys in sorted(groups.items()):
        target = by_provider[keys[0]]
        report = TargetReport(uri, experiment, tuple(keys))
        records, problems = _records(session, keys)
        result.diagnostics.extend(problems)
        models = _models(state, keys)
        result.diagnostics.extend(tracking_mlflow.sync_target(
            target, report, records, models, stack=session.config.stack_name,
            environment=session.env_name))
        result.reports.append(report)
    return result


def sync_after_apply(session, state: State | None) -> TrackingResult:
    """The apply's tracking step, run once the apply has committed `state`."""
    return sync(session, state)


def _records(session, keys: list[str]) -> tuple[list[dict[str, Any]], list[Diagnostic]]:
    records: list[dict[str, Any]] = []
    diags: list[Diagnostic] = []
    for key in keys:
        try:
            records.extend(session.provider(key).run_records())
        except DiagnosticError as exc:
            diags.extend(exc.diagnostics)
        except Exception as exc:   # a provider's bug must not hide the others' runs
            diags.append(error(f'provider "{key}" could not list its runs: {exc}'))
    return records, diags


def _models(state: State | None, keys: list[str]) -> list[Any]:
    if state is None:
        return []
    return [rs for address, rs in sorted(state.resources.items())
            if rs.kind == "model" and rs.provider in keys]
