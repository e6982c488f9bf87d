"""The scheduled drift job for one stack and environment.

    drift_report.py --stack DIR [--env E] [--junit FILE] [--summary FILE]

Runs `mlform drift DIR --env E --format junit`, writes the JUnit report to FILE (the
upload step's path, and GitLab's `artifacts:reports:junit`), appends a Markdown table of
the drifted resources and attributes to the job summary ($GITHUB_STEP_SUMMARY), marks
each drifted resource with an `::error` annotation on GitHub, and exits with mlform's
status: 0 no drift, 2 drift, 1 error, so the job fails on drift.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import mlform_gitops as g


def drifted(junit: str) -> list[tuple[str, str, str]]:
    """(address, message, diff) for each failed test case of the report."""
    out = []
    for case in ET.fromstring(junit).iter("testcase"):
        failure = case.find("failure")
        if failure is not None:
            out.append((case.get("name", ""), failure.get("message", ""),
                        failure.text or ""))
    return out


def summary(stack: str, env: str, code: int, junit: str, stderr: str) -> str:
    title = f"### mlform drift: `{stack}` (env `{env or 'default'}`)"
    if code == 1 or not junit.strip():
        return "\n".join([title, "", "**The drift check failed** (exit 1):", "",
                          g.fenced(stderr.strip() or "(no output)"), ""])
    rows = drifted(junit)
    if not rows:
        return f"{title}\n\nNo drift: live objects match the state.\n"
    out = [title, "", f"{len(rows)} resource(s) changed outside of mlform.", "",
           "| Resource | Drift |", "| --- | --- |"]
    out += [f"| `{a}` | {html.escape(m).replace('|', '&#124;')} |" for a, m, _ in rows]
    out.append("")
    for address, _, diff in rows:
        out += [f"<details><summary>{html.escape(address)}</summary>", "",
                g.fenced(diff, "diff"), "", "</details>", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stack", required=True)
    ap.add_argument("--env", default="")
    ap.add_argument("--junit", help="the JUnit report's path (default OUT_DIR/NAME.xml)")
    ap.add_argument("--out-dir", default=".", help="where the report goes without --junit")
    ap.add_argument("--artifact-prefix", default="mlform-drift")
    ap.add_argument("--summary", default=os.environ.get("GITHUB_STEP_SUMMARY"))
    args = ap.parse_args(argv)
    env = "" if args.env == "default" else args.env

    name = g.artifact_name(args.artifact_prefix, args.stack, env)
    junit_path = Path(args.junit) if args.junit else Path(args.out_dir) / f"{name}.xml"
    result = g.run_mlform("drift", args.stack, *g.env_args(env), "--format", "junit")
    sys.stderr.write(result.stderr)
    junit_path.parent.mkdir(parents=True, exist_ok=True)
    junit_path.write_text(result.stdout)
    rows = drifted(result.stdout) if result.code != 1 and result.stdout.strip() else []
    for address, message, _ in rows:
        print(f"{args.stack} ({env or 'default'}) {address}: {message}")
        if os.environ.get("GITHUB_ACTIONS"):
            print(f"::error title=drift in {args.stack}::{address} {message}")
    if args.summary:
        with open(args.summary, "a", encoding="utf-8") as f:
            f.write(summary(args.stack, env, result.code, result.stdout, result.stderr) + "\n")
    g.set_outputs(**{"exitcode": result.code, "junit": str(junit_path.resolve()),
                     "artifact-name": name, "drifted": len(rows)})
    if result.code == 2:
        g.fail(f"{len(rows)} resource(s) drifted in {args.stack} ({env or 'default'}); "
               f"see {junit_path}")
        return 2
    if result.code != 0:
        return g.fail(f"mlform drift {args.stack} failed (exit {result.code})")
    return 0


if __name__ == "__main__":
    g.main_guard(main)
