"""The merge job: apply exactly the plans reviewed on the pull request.

    apply_merged.py find-run --sha HEAD_SHA [--workflow mlform-plan.yml]     (GitHub)
    apply_merged.py download --sha MERGE_SHA --dest DIR [--job-prefix mlform-plan] (GitLab)
    apply_merged.py apply --plans-dir DIR [--pr N] [--forge github|gitlab]

`find-run` names the plan workflow's newest run for the pull request's head commit
(output `run-id`), whose plan artifacts the workflow then downloads with
actions/download-artifact; it refuses when that run did not succeed (a failed plan was
never a reviewed one).  On GitLab `download` fetches the artifacts of the merged merge
request's plan jobs itself.

`apply` runs `mlform apply PLAN` for every saved plan (a folder with plan.json and
meta.json) under DIR and comments the outcome on the pull request.  mlform refuses a
stale plan (the state moved, or the spec changed, since the review) and applies nothing;
the comment and the log then say to re-plan.  After a failed or refused apply the pull
request's hold is released (`mlform release`): the request is merged, nothing will apply
under its hold again, and the fix comes in a new pull request that must be able to plan.
Exit 1 when any plan failed or was refused.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
from pathlib import Path

import mlform_gitops as g

STALE = "Saved plan is stale"
REPLAN = ("re-plan: nothing was applied. Run the plan again on the merged commit (push a "
          "new pull request, or run `mlform plan --out` and review it) and apply the new plan.")


def find_run(forge: g.GitHub, workflow: str, sha: str) -> int:
    run = forge.plan_run(workflow, sha)
    if run is None:
        raise g.GitOpsError(f"no {workflow} run for commit {sha}: there is no reviewed plan "
                            "to apply; re-plan")
    if run.get("status") != "completed" or run.get("conclusion") != "success":
        raise g.GitOpsError(
            f"the plan run for commit {sha} ({run.get('html_url', run.get('id'))}) is "
            f"{run.get('status')}/{run.get('conclusion')}, not a successful reviewed plan: "
            "nothing is applied; re-plan")
    g.set_outputs(**{"run-id": run["id"]})
    print(f"plan run {run['id']} for {sha}", file=sys.stderr)
    return int(run["id"])


def download(forge: g.GitLab, sha: str, dest: Path, job_prefix: str) -> int:
    mr = forge.merge_request_of(sha)
    if mr is None:
        print(f"commit {sha} belongs to no merge request: nothing to apply", file=sys.stderr)
        return 0
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "merge_request.json").write_text(json.dumps({"iid": mr["iid"]}) + "\n")
    jobs = forge.plan_jobs(mr, job_prefix)
    if not jobs:
        raise g.GitOpsError(f"merge request !{mr['iid']} has no successful {job_prefix} job "
                            f"for its head {mr.get('sha')}: no reviewed plan; re-plan")
    for job in jobs:
        with zipfile.ZipFile(io.BytesIO(forge.job_artifacts(job["id"]))) as z:
            z.extractall(dest / f"job-{job['id']}")
    return len(jobs)


def saved_plans(plans_dir: Path) -> list[tuple[Path, dict]]:
    """(plan folder, meta) for each saved plan under `plans_dir`, in a stable order."""
    out = []
    for meta_file in sorted(plans_dir.rglob(g.META_FILE)):
        meta = json.loads(meta_file.read_text())
        if meta.get("plan") and (meta_file.parent / meta["plan"]).is_file():
            out.append((meta_file.parent, meta))
    return out


def apply_one(folder: Path, meta: dict) -> tuple[str, g.Result]:
    """("applied" | "stale" | "failed", the run)."""
    result = g.run_mlform("apply", str((folder / meta["plan"]).resolve()))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.code == 0:
        return "applied", result
    return ("stale" if STALE in result.stderr else "failed"), result


def release(meta: dict) -> g.Result | None:
    if not meta.get("hold"):
        return None
    result = g.run_mlform("release", meta["hold"], meta["stack"], *g.env_args(meta["env"]))
    sys.stderr.write(result.stdout + result.stderr)
    return result


def outcome_comment(meta: dict, outcome: str, result: g.Result, released) -> str:
    stack, env = meta["stack"], meta["env"] or "default"
    title = {"applied": "applied", "stale": "refused: the reviewed plan is stale",
             "failed": "failed"}[outcome]
    out = [f"### mlform apply `{stack}` (env `{env}`): {title}", ""]
    commit = meta.get("commit") or ""
    if commit:
        out.append(f"Plan reviewed on commit `{commit[:12]}`.")
    run = g.run_url()
    if run:
        out.append(f"[Apply run]({run}).")
    out.append("")
    if outcome == "stale":
        out += [f"**{REPLAN}**", ""]
    text = (result.stdout + result.stderr).strip()
    if text:
        out.append(g.fenced(text[-30000:]))
    if released is not None:
        how = "released" if released.code == 0 else f"NOT released (exit {released.code})"
        out += ["", f"The hold `{meta['hold']}` was {how}."]
    return "\n".join(out) + "\n"


def apply_all(plans_dir: Path, forge, pr: int | None) -> int:
    plans = saved_plans(plans_dir) if plans_dir.is_dir() else []
    if not plans:
        print(f"no saved plan under {plans_dir}: nothing to apply", file=sys.stderr)
        return 0
    bad = []
    for folder, meta in plans:
        outcome, result = apply_one(folder, meta)
        released = release(meta) if outcome != "applied" else None
        if outcome == "stale":
            print(f"{meta['stack']} ({meta['env'] or 'default'}): {REPLAN}")
        if outcome != "applied":
            bad.append(f"{meta['stack']} ({meta['env'] or 'default'}): {outcome}")
        if forge is not None and pr is not None:
            g.upsert_comment(forge, pr, g.marker("apply", meta["stack"], meta["env"]),
                             outcome_comment(meta, outcome, result, released))
    if bad:
        return g.fail("not applied: " + "; ".join(bad)
                      + (f". {REPLAN}" if any(b.endswith("stale") for b in bad) else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--forge", default="github", choices=["github", "gitlab"])
    ap.add_argument("--repo")
    sub = ap.add_subparsers(dest="command", required=True)
    fr = sub.add_parser("find-run")
    fr.add_argument("--sha", required=True)
    fr.add_argument("--workflow", default="mlform-plan.yml")
    dl = sub.add_parser("download")
    dl.add_argument("--sha", required=True)
    dl.add_argument("--dest", required=True)
    dl.add_argument("--job-prefix", default="mlform-plan")
    ap_ = sub.add_parser("apply")
    ap_.add_argument("--plans-dir", required=True)
    ap_.add_argument("--pr", type=int)
    ap_.add_argument("--no-comment", action="store_true")
    args = ap.parse_args(argv)

    if args.command == "find-run":
        find_run(g.GitHub(args.repo), args.workflow, args.sha)
        return 0
    if args.command == "download":
        download(g.GitLab(args.repo), args.sha, Path(args.dest), args.job_prefix)
        return 0
    plans_dir = Path(args.plans_dir)
    pr = args.pr or g.pull_request_number()
    mr_file = plans_dir / "merge_request.json"
    if pr is None and mr_file.is_file():
        pr = json.loads(mr_file.read_text())["iid"]
    forge = None if args.no_comment or pr is None else g.forge(args.forge, args.repo)
    return apply_all(plans_dir, forge, pr)


if __name__ == "__main__":
    g.main_guard(main)
