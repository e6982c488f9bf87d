"""The pull-request plan job for one stack and environment.

    plan_comment.py --stack DIR [--env E] [--hold ID] [--out-dir DIR] [--pr N]
                    [--forge github|gitlab] [--no-comment] [--artifact-prefix P]

1. `mlform plan DIR --env E --hold ID --out PLAN --format markdown --detailed-exitcode`;
2. saves the plan and a meta.json (stack, env, hold, commit) in OUT_DIR/ARTIFACT/, the
   folder the upload step sends as artifact ARTIFACT;
3. posts the Markdown plan as one sticky comment on the pull request, found again on the
   next push by its hidden marker `<!-- mlform:plan STACK ENV -->` and edited in place,
   truncated with a note within the forge's comment limit;
4. writes the step outputs (exitcode, has-changes, plan-dir, plan-file, artifact-name,
   comment-id) and exits 1 when the plan failed (an error, a mandatory policy, a plan
   held by another pull request), so the check fails; 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import mlform_gitops as g


def comment_body(*, stack: str, env: str, result: g.Result, hold: str, sha: str,
                 run: str, artifact: str, limit: int) -> str:
    """The whole comment: marker, context line, the Markdown plan (or the error)."""
    mark = g.marker("plan", stack, env)
    context = [f"Stack `{stack}`", f"environment `{env or 'default'}`"]
    if sha:
        context.append(f"commit `{sha[:12]}`")
    if hold:
        context.append(f"hold `{hold}`")
    if run:
        context.append(f"[run]({run})")
    head = [mark, " · ".join(context), ""]
    parts = []
    if result.code == 1:
        parts.append("**The plan failed** (exit 1): nothing can be applied from this "
                     "commit. Fix the problem and push again.")
        parts.append("")
        log = g.fenced(result.stderr[-20000:]) if result.stderr.strip() else ""
        if result.stdout.strip():
            # a plan that failed a mandatory policy: its Markdown names the policy; the
            # same diagnostics on stderr go in a collapsed section
            parts += [result.stdout.rstrip(), ""]
            if log:
                parts += ["<details><summary>mlform plan output</summary>", "", log, "",
                          "</details>"]
        elif log:
            parts.append(log)
    else:
        parts.append(result.stdout.rstrip())
        parts.append("")
        parts.append(f"Saved as artifact `{artifact}`; merging applies exactly this plan "
                     "(a stale plan is refused).")
    body = "\n".join(head + parts).rstrip() + "\n"
    where = (f"The full plan is in artifact `{artifact}`"
             + (f" of [this run]({run})" if run else "") + " (`mlform show plan.json`).")
    return g.truncate(body, limit, g.truncation_note(where))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stack", required=True)
    ap.add_argument("--env", default="")
    ap.add_argument("--hold", default="", help="the hold ID (plan --hold); empty: none")
    ap.add_argument("--out-dir", default=os.environ.get("RUNNER_TEMP", ".") + "/mlform-plans")
    ap.add_argument("--artifact-prefix", default="mlform-plan")
    ap.add_argument("--forge", default="github", choices=["github", "gitlab"])
    ap.add_argument("--repo")
    ap.add_argument("--pr", type=int)
    ap.add_argument("--no-comment", action="store_true")
    ap.add_argument("--comment-limit", type=int)
    args = ap.parse_args(argv)
    env = "" if args.env == "default" else args.env

    artifact = g.artifact_name(args.artifact_prefix, args.stack, env)
    plan_dir = Path(args.out_dir) / artifact
    if plan_dir.exists():
        shutil.rmtree(plan_dir)
    plan_dir.mkdir(parents=True)
    plan_file = plan_dir / g.PLAN_FILE

    hold = ["--hold", args.hold] if args.hold else []
    result = g.run_mlform("plan", args.stack, *g.env_args(env), *hold,
                          "--out", str(plan_file.resolve()), "--format", "markdown",
                          "--detailed-exitcode")
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    failed = result.code not in (0, 2)
    if failed and plan_file.exists():
        plan_file.unlink()          # an errored plan must never be applied
    sha = g.commit_sha()
    (plan_dir / g.META_FILE).write_text(json.dumps({
        "stack": args.stack, "env": env, "hold": args.hold, "commit": sha,
        "exitcode": result.code, "plan": g.PLAN_FILE if not failed else None,
    }, indent=2) + "\n")

    comment_id = ""
    pr = args.pr or g.pull_request_number()
    if not args.no_comment and pr is not None:
        forge = g.forge(args.forge, args.repo)
        body = comment_body(stack=args.stack, env=env, result=result, hold=args.hold,
                            sha=sha, run=g.run_url(), artifact=artifact,
                            limit=args.comment_limit or g.COMMENT_LIMITS[forge.name])
        how, comment = g.upsert_comment(forge, pr, g.marker("plan", args.stack, env), body)
        comment_id = str((comment or {}).get("id", ""))
        print(f"{how} the plan comment {comment_id} on #{pr}", file=sys.stderr)

    g.set_outputs(**{"exitcode": result.code,
                     "has-changes": "true" if result.code == 2 else "false",
                     "plan-dir": str(plan_dir.resolve()),
                     "plan-file": "" if failed else str(plan_file.resolve()),
                     "artifact-name": artifact, "comment-id": comment_id})
    if failed:
        return g.fail(f"mlform plan {args.stack} ({env or 'default'}) failed "
                      f"(exit {result.code})")
    return 0


if __name__ == "__main__":
    g.main_guard(main)
