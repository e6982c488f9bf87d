"""`mlform history [verify]`: a stack environment's audit trail, and the check of its chain.

Also the two helpers the mutating commands use to write it (`note`, `audited`): the record
is written after the work, and a failure to write it is shown as a warning, never as an
error that would hide the work or change the exit code.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import typer

from mlform import audit
from mlform.cli import output as out
from mlform.cli.runner import show_diagnostics
from mlform.diagnostics import DiagnosticError
from mlform.session import Session, SessionOptions


def note(session, command: str, **kwargs) -> None:
    """Append a record (`mlform.audit.record`) and show the warning if it failed."""
    problem = audit.record(session, command, **kwargs)
    if problem is not None:
        show_diagnostics([problem])


@contextmanager
def audited(session, command: str, *, changes=None, plan=None,
            outcome: str = "error") -> Iterator[None]:
    """Record `outcome` (or, on Ctrl-C, a cancellation) when the body raises; the body
    records its own success."""
    try:
        yield
    except (typer.Exit, SystemExit):
        raise
    except KeyboardInterrupt:
        note(session, command, outcome="cancelled", plan=plan, changes=changes,
             detail="interrupted")
        raise
    except Exception as exc:
        note(session, command, outcome=outcome, plan=plan, changes=changes,
             detail=audit.failure_detail(exc))
        raise


# ---------------------------------------------------------------- mlform history


def history(what: str | None, dir: Path | None, env: str | None, as_json: bool,
            expect: str | None = None) -> int:
    """`history [DIR]` lists the records; `history verify [DIR]` checks the chain."""
    if what == "verify":
        return verify(dir or Path("."), env, as_json, expect)
    if expect is not None:
        raise DiagnosticError.single("--expect goes with `mlform history verify`")
    if what is not None and dir is not None:
        raise DiagnosticError.single(
            f'Unknown history action "{what}"',
            hint="Use: mlform history [DIR] or mlform history verify [DIR]")
    stack = Path(what) if what is not None else (dir or Path("."))
    session = Session(stack, SessionOptions(env=env))
    read, verdict = audit.verify(session)
    records = [e.record if e.record is not None else {"corrupt": e.where}
               for e in read.entries if not (e.torn and e.record is None)]
    if as_json:
        out.raw(json.dumps({"log": read.source,
                            "head": None if read.head is None else
                            {"seq": read.head.seq, "hash": read.head.hash},
                            "records": records,
                            "chain": {"intact": verdict.ok, "problem": verdict.problem}},
                           indent=2, sort_keys=True))
        return 0
    if not records:
        out.echo(f"No audit records yet for environment {session.env_name!r} "
                 f"({read.source}).")
    else:
        out.echo(_table(records))
    if not verdict.ok:
        # Listing is still useful with a damaged log; say so rather than fail.
        out.echo(f"\nwarning: the audit log fails verification: {verdict.problem}\n"
                 f"  Run `mlform history verify` for details.", err=True)
    return 0


def _who(record: dict) -> str:
    who = record.get("who") or {}
    ci = who.get("ci") or {}
    if ci.get("system") in ("github", "gitlab") and ci.get("actor"):
        return f"{ci['actor']} ({ci['system']})"
    base = f"{who.get('user', '?')}@{who.get('host', '?')}"
    return f"{base} ({ci['system']})" if ci.get("system") else base


def _table(records: list[dict]) -> str:
    from rich.markup import escape
    header = ("SEQ", "TIME", "WHO", "COMMAND", "OUTCOME", "CHANGES")
    rows = []
    for r in records:
        if "corrupt" in r and len(r) == 1:
            rows.append(("?", "", "", "(corrupted record)", "", r["corrupt"]))
            continue
        changes = r.get("changes") if isinstance(r.get("changes"), list) else []
        rows.append((str(r.get("seq", "?")), str(r.get("time", "")), _who(r),
                     str(r.get("command", "")), str(r.get("outcome", "")), str(len(changes))))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in (header, *rows)]
    return escape("\n".join(lines))


def _expected(expect: str) -> tuple[int, str]:
    seq, _, digest = expect.partition(":")
    digest = digest.removeprefix("sha256:") if digest.startswith("sha256:") else digest
    if not seq.isdigit() or len(digest) != 64:
        raise DiagnosticError.single(
            f"--expect {expect!r} is not SEQ:HASH",
            hint="Give a head as verify prints it, e.g. --expect 12:5be1…(64 hex digits).")
    return int(seq), digest.lower()


def verify(dir: Path, env: str | None, as_json: bool, expect: str | None = None) -> int:
    wanted = _expected(expect) if expect is not None else None
    session = Session(Path(dir), SessionOptions(env=env))
    read, verdict = audit.verify(session)
    if verdict.ok and wanted is not None:
        # The head kept elsewhere must still be in the chain: catches a log and head
        # rewritten (or rolled back) together, which the chain alone cannot.
        seq, digest = wanted
        found = next((e.record for e in read.entries
                      if isinstance(e.record, dict) and e.record.get("seq") == seq), None)
        if found is None or found.get("hash") != digest:
            verdict.problem = (f"record {seq} is not the one expected (hash {digest[:12]}…"
                               + (")" if found is not None else
                                  f"; the log ends at record {verdict.count})")
                               + ": the log was rewritten or rolled back")
            verdict.where = "expect"
    head = None if read.head is None else {"seq": read.head.seq, "hash": read.head.hash}
    if as_json:
        out.raw(json.dumps({"log": read.source, "records": verdict.count, "head": head,
                            "intact": verdict.ok, "problem": verdict.problem,
                            "where": verdict.where, "notes": verdict.notes},
                           indent=2, sort_keys=True))
        return 0 if verdict.ok else 1
    if not verdict.ok:
        raise DiagnosticError.single(
            f"The audit log {read.source} fails verification",
            detail=verdict.problem,
            hint="Records were changed, removed, reordered or damaged after they were "
                 "written. Compare with a copy (bucket versions, backups) to see what.")
    for note_ in verdict.notes:
        out.echo(f"note: {note_}")
    tail = (f" (head: record {read.head.seq}, sha256 {read.head.hash})"
            if read.head is not None and read.head.seq > 0 else "")
    out.echo(f"{verdict.count} record{'s' if verdict.count != 1 else ''}, chain intact{tail}")
    return 0


# ---------------------------------------------------------------- apply's records


def note_apply(session, plan, result, plan_file=None) -> None:
    """Record an apply, destroy or refresh that ran, with how it ended."""
    problem = audit.record_apply(session, plan, result,
                                 plan_file=None if plan_file is None else str(plan_file))
    if problem is not None:
        show_diagnostics([problem])


def note_not_applied(session, plan, outcome: str, detail: str) -> None:
    """Record an apply that stopped before changing anything (not confirmed)."""
    note(session, audit.command_for(plan), outcome=outcome, plan=plan, detail=detail)


def note_refused(session, plan) -> None:
    """Record an apply refused by a mandatory policy (other plan errors are mistakes in
    the spec, which change nothing and are not recorded)."""
    why = audit.policy_refusal(plan)
    if why:
        note(session, audit.command_for(plan), outcome="refused", plan=plan, detail=why)
