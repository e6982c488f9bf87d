"""Command bodies: compose sessions, operations and renderers; return exit codes."""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from mlform import operations
from mlform.cli import output as out
from mlform.cli.runner import show_diagnostics
from mlform.diagnostics import DiagnosticError, error
from mlform import planfile
from mlform.plan.inputs import PlanOptions
from mlform.session import Session, SessionOptions


def _session(dir: Path, env: str | None, vars=(), var_files=(), parallelism: int = 10) -> Session:
    options = SessionOptions(env=env, vars=list(vars), var_files=[Path(f) for f in var_files],
                             parallelism=parallelism, progress=_progress)
    return Session(Path(dir), options)


_progress_lock = threading.Lock()


def _progress(event) -> None:
    """One whole line per event: workers report at once, and lines must not interleave."""
    suffix = f" (waiting on {event.waiting_on})" if event.waiting_on else ""
    line = f"{event.address}: {event.message}{suffix}"
    if out.color():
        from rich.markup import escape
        with _progress_lock:
            out.echo(escape(line))
    else:
        # No styles to add: the text as it is (what echo would print after escaping it
        # and parsing the escapes back), without a markup parse per line: an apply of
        # 10,000 resources prints 20,000 of them, each with a `[` in its address.
        with _progress_lock:
            out.raw(line + "\n")
    out.log.info("progress %s: %s", event.address, event.message)


def _render_plan(plan, format: str) -> None:
    from mlform.views import plan_to_json, render_plan, render_plan_markdown
    if format == "json":
        out.raw(json.dumps(plan_to_json(plan), sort_keys=True, default=str))
    elif format == "markdown":
        out.raw(render_plan_markdown(plan))
    elif out.color():
        out.echo(render_plan(plan, color=True))
    else:
        # The rendered plan is final text (it never holds markup: mlform.views.human), so
        # it is written as it is, not parsed for markup as echo would: the same bytes,
        # without a markup parse of a text that is megabytes for a big plan.
        out.raw(render_plan(plan, color=False) + "\n")


# ---------------------------------------------------------------- validate / fmt


def validate(dir: Path, env: str | None) -> int:
    from rich.markup import escape

    from mlform.config.loader import display_path, files_read
    from mlform.validate import validate_stack
    session = _session(dir, env)
    out.echo(escape(f"Read {_and_list([display_path(p) for p in files_read(session.config)])}."))
    diags = validate_stack(session)
    if diags:
        show_diagnostics(diags)
        if any(d.severity == "error" for d in diags):
            return 1
    n = len(session.graph.resources())
    out.echo(f"Success! The configuration is valid ({n} resource block{'s' if n != 1 else ''}).")
    return 0


def _and_list(items: list[str]) -> str:
    """a, b and c"""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def fmt(dir: Path, check: bool) -> int:
    from mlform.config.loader import display_path
    from mlform.fmt import FormatError, format_hcl
    root = Path(dir)
    files = sorted(p for sub in (root, root / "environments") if sub.is_dir()
                   for p in sub.iterdir() if p.suffix == ".hcl")
    problems, changed = [], []
    for path in files:
        text = path.read_text()
        try:
            formatted = format_hcl(text)
        except FormatError as exc:
            from mlform.diagnostics import SourceRange
            problems.append(error(f"Cannot format: {exc}", source=SourceRange(
                display_path(path), getattr(exc, "line", 0), getattr(exc, "column", 0))))
            continue
        if formatted != text:
            changed.append(path)
            if not check:
                tmp = path.with_suffix(".hcl.tmp")
                tmp.write_text(formatted)
                os.replace(tmp, path)
    if problems:
        show_diagnostics(problems)
        return 1
    for path in changed:
        out.echo(display_path(path))
    # Terraform's `fmt -check` exits 3 when files need formatting.
    return 3 if check and changed else 0


# ---------------------------------------------------------------- plan / apply


def _plan_options(refresh_only: bool, refresh: bool, targets, replace, destroy: bool,
                  parallelism: int) -> PlanOptions:
    if refresh_only and destroy:
        raise DiagnosticError.single("--refresh-only and --destroy cannot be combined")
    mode = "destroy" if destroy else ("refresh-only" if refresh_only else "normal")
    return PlanOptions(mode=mode, refresh=refresh, targets=tuple(targets), replace=tuple(replace),
                       parallelism=parallelism)


def plan(dir: Path, *, env, vars, var_files, out_file, detailed_exitcode, refresh_only, refresh,
         targets, replace, destroy, format, parallelism, hold=None) -> int:
    from mlform.cli import hold_commands
    session = _session(dir, env, vars, var_files, parallelism)
    try:
        options = _plan_options(refresh_only, refresh, targets, replace, destroy, parallelism)
        with operations.locked(session, "plan"):
            hold_commands.before_plan(session, hold)
            state = operations.load_state(session)
            result = operations.plan(session, state, options)
            hold_commands.after_plan(session, hold, result)
    finally:
        session.close()
    if result.errored:
        show_diagnostics(list(result.diagnostics))
        # Machine readers get the errored plan with its diagnostics; a plan refused only
        # by policies is shown too, so a reviewer sees what the policies refused.
        if format == "json" or _refused_by_policy(result):
            _render_plan(result, format)
        return 1
    show_diagnostics(list(result.diagnostics))
    _render_plan(result, format)
    if out_file is not None:
        planfile.save(result, out_file, session.stack_dir, hold=hold)
        if format == "human":
            out.echo(f"\nSaved the plan to {out_file}. Apply exactly this plan with: "
                     f"mlform apply {out_file}")
    out.log.info("plan: %s", result.summary)
    if detailed_exitcode and result.has_changes:
        return 2
    return 0


def _refused_by_policy(plan) -> bool:
    """True when every error of a plan is a failed mandatory policy: the plan itself
    was made and is worth showing."""
    from mlform.policy import POLICY_FAILED
    errors = [d for d in plan.diagnostics if d.severity == "error"]
    return bool(errors) and all(d.code == POLICY_FAILED for d in errors)


def _confirm(plan, auto_approve: bool) -> bool:
    if auto_approve:
        return True
    if not sys.stdin.isatty():
        raise DiagnosticError.single(
            "apply needs confirmation, but there is no terminal to ask on",
            hint="Pass --auto-approve, or apply a reviewed plan file: mlform apply PLANFILE.")
    verb = "destroy all these resources" if plan.mode == "destroy" else "perform these actions"
    out.echo(f"\nDo you want to {verb}?\n  Only 'yes' will be accepted to approve.\n")
    try:
        answer = input("  Enter a value: ")
    except EOFError:
        answer = ""
    return answer.strip() == "yes"


class _Interrupts:
    """First Ctrl-C: stop scheduling and finish in-flight work; second: exit at once.

    The journal already holds every started call's intent, so exiting at once
    leaves a consistent state that the next run settles.
    """

    def __init__(self) -> None:
        self.applier = None
        self.count = 0
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
            signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.count == 1 and self.applier is not None:
            sys.stderr.write("\nInterrupt received: finishing operations in flight, then stopping. "
                             "Press Ctrl-C again to exit at once.\n")
            sys.stderr.flush()
            self.applier.cancel()
            return
        sys.stderr.write("\nExiting now; the state journal keeps what was done.\n")
        sys.stderr.flush()
        os._exit(1)

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def apply(dir_or_plan: Path, *, auto_approve, env, vars, var_files, refresh_only, refresh, targets,
          replace, destroy, parallelism) -> int:
    from mlform import audit
    from mlform.cli import hold_commands, history_commands
    from mlform.views import ApplySummary, render_apply_summary
    saved = None
    if planfile.is_plan_file(Path(dir_or_plan)):
        saved, stack_dir = planfile.load(Path(dir_or_plan))
        if env is None and saved.env != "default":
            env = saved.env
        session = _session(stack_dir, env, vars, var_files, parallelism)
        session.use_variables(planfile.variables_for(saved, session))
    else:
        session = _session(dir_or_plan, env, vars, var_files, parallelism)
    interrupts = _Interrupts()
    try:
        with operations.locked(session, "apply"), interrupts:
            hold = hold_commands.before_apply(
                session, Path(dir_or_plan) if saved is not None else None)
            state = operations.load_state(session)
            if saved is not None:
                state = planfile.base_state(saved, state)
                with history_commands.audited(session, audit.command_for(saved), plan=saved,
                                              outcome="refused"):
                    planfile.check_fresh(saved, state, session.config.digest)
                the_plan = saved
            else:
                options = _plan_options(refresh_only, refresh, targets, replace, destroy, parallelism)
                the_plan = operations.plan(session, state, options)
                if the_plan.errored:
                    show_diagnostics(list(the_plan.diagnostics))
                    if _refused_by_policy(the_plan):
                        _render_plan(the_plan, "human")
                    history_commands.note_refused(session, the_plan)
                    return 1
                show_diagnostics(list(the_plan.diagnostics))
                _render_plan(the_plan, "human")
                if not the_plan.has_changes and the_plan.mode != "refresh-only":
                    # runs a failed tracking step missed are logged by the next apply
                    return 0 if _track(session, state, the_plan) else 1
                if not _confirm(the_plan, auto_approve):
                    out.echo("\nApply cancelled.")
                    history_commands.note_not_applied(session, the_plan, "cancelled",
                                                      "not confirmed")
                    return 1
            # This process ends after the apply: the config, state and plan made so far
            # live until then, so the collector's full passes need not walk them again
            # and again while the apply allocates (a 10,000-resource plan is millions of
            # objects; measured, a few tenths of a second of collector passes).
            # (Unfrozen afterwards, for a caller that runs commands in its own process.)
            gc.freeze()
            try:
                with history_commands.audited(session, audit.command_for(the_plan),
                                              plan=the_plan):
                    result = operations.apply(
                        session, state, the_plan, parallelism=parallelism, progress=_progress,
                        on_start=lambda a: setattr(interrupts, "applier", a))
            finally:
                gc.unfreeze()
            history_commands.note_apply(session, the_plan, result,
                                        plan_file=dir_or_plan if saved is not None else None)
            released = hold_commands.after_apply(session, hold, result)
    finally:
        session.close()
    summary = ApplySummary(added=result.added, changed=result.changed, destroyed=result.destroyed,
                           failed=_located(result), outputs=dict(result.outputs),
                           mode=the_plan.mode)
    # The summary names each failure once; show only the diagnostics it does not repeat.
    shown = {f"{address}: {message}" for address, message in result.failures}
    show_diagnostics([d for d in result.diagnostics if d.summary not in shown])
    out.echo("")
    out.echo(render_apply_summary(summary, color=out.color()), err=not summary.ok)
    hold_commands.report(released)
    # an interrupted apply logs nothing now: its finished runs stay on record for the next
    tracked = result.cancelled or _track(session, result.state, the_plan)
    if result.cancelled:
        sys.stderr.write(f"Interrupted: {result.not_started} resource block(s) not started; "
                         "the state records everything that finished.\n")
        return 1
    out.log.info("apply: %s added, %s changed, %s destroyed, %s failed", result.added,
                 result.changed, result.destroyed, len(result.failures))
    return 0 if result.ok and tracked else 1


def _track(session, state, the_plan) -> bool:
    """The apply's tracking step (`mlform.tracking`), once its state is committed: runs
    and model versions to MLflow when the stack sets tracking.  False when it failed.
    A destroy or a refresh runs nothing to log (and must not fail for MLflow's sake)."""
    from mlform import tracking
    if the_plan.mode != "normal":
        session.close()
        return True
    try:
        outcome = tracking.sync_after_apply(session, state)
    finally:
        session.close()
    for report in outcome.reports:
        if report.changed:
            out.echo(report.summary())
    show_diagnostics(outcome.diagnostics)
    return outcome.ok


def drift(dir: Path, *, env, vars, var_files, format, parallelism) -> int:
    from mlform.views import plan_to_json, render_drift, render_drift_junit, render_plan_markdown
    session = _session(dir, env, vars, var_files, parallelism)
    try:
        with operations.locked(session, "drift"):
            state = operations.load_state(session)
            result = operations.plan(session, state, PlanOptions(mode="refresh-only",
                                                                 parallelism=parallelism))
    finally:
        session.close()
    if result.errored:
        show_diagnostics(list(result.diagnostics))
        return 1
    if format == "json":
        out.raw(json.dumps(plan_to_json(result), sort_keys=True, default=str))
    elif format == "junit":
        out.raw(render_drift_junit(result))
    elif format == "markdown":
        out.raw(render_plan_markdown(result))
    else:
        out.echo(render_drift(result, color=out.color()))
    return 2 if result.drift else 0


# ---------------------------------------------------------------- inspection


def _state_session(env: str | None, dir: Path = Path(".")) -> Session:
    return _session(dir, env)


def show(plan_file: Path | None, as_json: bool, env: str | None) -> int:
    from mlform.views import plan_to_json, render_plan
    if plan_file is not None:
        p, _ = planfile.load(plan_file)
        if as_json:
            out.raw(json.dumps(plan_to_json(p), sort_keys=True, default=str))
        else:
            out.echo(render_plan(p, color=out.color()))
        return 0
    session = _state_session(env)
    state = operations.load_state(session, recover=False)
    if as_json:
        out.raw(json.dumps(state.to_json(), sort_keys=True, indent=2))
        return 0
    if not state.resources:
        out.echo("The state is empty.")
        return 0
    from mlform.cli.state_commands import format_resource
    for rs in state.resources.values():
        out.echo(format_resource(rs))
    return 0


def output(name: str | None, as_json: bool, env: str | None) -> int:
    session = _state_session(env)
    state = operations.load_state(session, recover=False)
    outputs = state.outputs
    if name is not None:
        if name not in outputs:
            raise DiagnosticError.single(f'Output "{name}" not found',
                                         hint=("Outputs: " + ", ".join(sorted(outputs))) if outputs
                                         else "The state has no outputs yet; run apply first.")
        o = outputs[name]
        if o.get("sensitive"):
            out.echo("(sensitive)")
        elif as_json:
            out.raw(json.dumps(o.get("value")))
        else:
            v = o.get("value")
            out.echo(v if isinstance(v, str) else json.dumps(v))
        return 0
    if as_json:
        out.raw(json.dumps({k: {"value": None if o.get("sensitive") else o.get("value"),
                                "sensitive": bool(o.get("sensitive"))}
                            for k, o in sorted(outputs.items())}, indent=2))
        return 0
    for k, o in sorted(outputs.items()):
        shown = "(sensitive)" if o.get("sensitive") else json.dumps(o.get("value"))
        out.echo(f"{k} = {shown}")
    return 0


def import_(address: str, id: str, env, vars, var_files) -> int:
    from mlform.addresses import AddressError, parse_address
    from mlform.state import ResourceState
    session = _session(Path("."), env, vars, var_files)
    try:
        addr = parse_address(address)
    except AddressError as exc:
        raise DiagnosticError.single(str(exc))
    node = session.graph.nodes.get(addr.config_key)
    if node is None or node.type != "resource":
        raise DiagnosticError.single(
            f"No block in the spec for {address}",
            hint=f'Write the block first ({addr.kind} "{addr.name}" {{ ... }}), then import into it.')
    from mlform.cli import history_commands
    changes = [{"address": address, "actions": ["import"]}]
    try:
        with operations.locked(session, "import"), \
                history_commands.audited(session, "import", changes=changes):
            state = operations.load_state(session)
            if state.get(address) is not None:
                raise DiagnosticError.single(f"{address} is already managed",
                                             hint="Remove it first with mlform state rm ADDRESS.")
            key = session.provider_key_for(node.config)
            live = session.provider(key).import_(addr.kind, address, id)
            if live is None:
                raise DiagnosticError.single(f'Cannot import {address}: provider "{key}" found no '
                                             f'object with id "{id}"')
            writer = session.backend.open_writer(state)
            writer.record(ResourceState(address=address, kind=addr.kind, name=addr.name,
                                        module=addr.module, index_key=addr.index_key, provider=key,
                                        id=live.id, attributes=dict(live.attributes)))
            writer.close()
            history_commands.note(session, "import", outcome="success", changes=changes,
                                  detail=f"id {live.id}")
    finally:
        session.close()
    out.echo(f"Import successful: {address} (id {live.id}). Run plan to see how it compares with the spec.")
    return 0


def force_unlock(lock_id: str, env: str | None) -> int:
    from mlform.state import StateError
    from mlform.cli import history_commands
    session = _state_session(env)
    try:
        session.backend.force_unlock(lock_id)
    except StateError as exc:
        from mlform.cli import hold_commands    # no such lock: maybe a pull request's hold
        with history_commands.audited(session, "force-unlock"):
            code = hold_commands.force_unlock_hold(lock_id, env, exc)
        history_commands.note(session, "force-unlock", outcome="success" if code == 0 else "error",
                              detail=f"hold {lock_id}")
        return code
    history_commands.note(session, "force-unlock", outcome="success", detail=f"lock {lock_id}")
    out.echo(f"The state has been unlocked (lock {lock_id}).")
    return 0


def graph(dir: Path, format: str, env: str | None) -> int:
    from mlform.graph import to_dot, to_mermaid
    session = _session(dir, env)
    out.raw(to_dot(session.graph) if format == "dot" else to_mermaid(session.graph))
    return 0


def providers() -> int:
    from mlform import registry
    found = registry.discover()
    if not found:
        out.echo("No providers installed.")
        return 0
    bad = 0
    for name, info in sorted(found.items()):
        if info.ok:
            kinds = ", ".join(sorted(info.cls.kinds))
            out.echo(f"{name:<12} {info.origin}\n{'':<12} kinds: {kinds}")
        else:
            bad += 1
            out.echo(f"{name:<12} {info.origin}\n{'':<12} INVALID: " + "; ".join(info.problems))
    return 1 if bad else 0


def schema(kind: str | None) -> int:
    from mlform.specs import KIND_MODELS, json_schema
    if kind is not None and kind not in KIND_MODELS:
        raise DiagnosticError.single(f'Unknown kind "{kind}"',
                                     hint="Kinds: " + ", ".join(KIND_MODELS) + ".")
    out.raw(json.dumps(json_schema(kind), indent=2, sort_keys=True))
    return 0


def init(dir: Path, template: str) -> int:
    from mlform.config.loader import is_stack_file
    from mlform.templates import TEMPLATES
    if template not in TEMPLATES:
        raise DiagnosticError.single(f'Unknown template "{template}"',
                                     hint="Templates: " + ", ".join(sorted(TEMPLATES)) + ".")
    dir = Path(dir)
    try:
        dir.mkdir(parents=True, exist_ok=True)
        existing = [p.name for p in dir.iterdir() if is_stack_file(p.name)]
        if existing:
            raise DiagnosticError.single(
                f"{dir} already holds spec files ({', '.join(sorted(existing))})",
                hint="Pick an empty directory.")
        for rel, text in TEMPLATES[template].items():
            target = dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    except OSError as exc:
        raise DiagnosticError.single(f"Cannot create the stack in {dir}: {exc.strerror}",
                                     hint="Pick a directory you can write to.") from None
    out.echo(f"Created a {template} stack in {dir}. Next: cd {dir} && mlform plan")
    return 0


def _located(result: Any) -> list[tuple[str, str, str, str]]:
    """The apply's failures for its summary, each with where its block is and the hint
    (`ApplyResult.failures` is built from the error diagnostics, in their order)."""
    errors = [d for d in result.diagnostics if d.severity == "error"]
    return [(address, message, str(d.source) if d.source is not None else "", d.hint or "")
            for (address, message), d in zip(result.failures, errors)]
