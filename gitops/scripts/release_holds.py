"""The closed-without-merge job: drop the pull request's plan holds.

    release_holds.py --hold ID [--pr N | --all] [--stacks DIR,DIR] [--envs E,E]

Runs `mlform release ID STACK --env E` for every stack/environment pair the pull request
touches (or, with --all, every pair in the repository: a pair the request once touched
and later reverted still holds).  `mlform release` exits 0 when ID holds nothing, so
releasing a pair that was never held is harmless.  Exit 1 when any release failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import changed_stacks
import mlform_gitops as g


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hold", required=True)
    ap.add_argument("--forge", default="github", choices=["github", "gitlab"])
    ap.add_argument("--repo")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--pr", type=int)
    src.add_argument("--all", action="store_true")
    ap.add_argument("--stacks")
    ap.add_argument("--envs")
    ap.add_argument("--root", default=".")
    args = ap.parse_args(argv)

    root = Path(args.root)
    stacks = changed_stacks._split(args.stacks) or changed_stacks.find_stacks(root)
    envs = changed_stacks._split(args.envs) or None
    if args.all:
        pairs = changed_stacks.all_pairs(root, stacks, envs)
    else:
        pr = args.pr or g.pull_request_number()
        if pr is None:
            raise g.GitOpsError("no pull request: pass --pr N or --all")
        files = g.forge(args.forge, args.repo).changed_files(pr)
        pairs = changed_stacks.changed_pairs(root, files, stacks, envs)
    failed = []
    for pair in pairs:
        result = g.run_mlform("release", args.hold, pair["stack"], *g.env_args(pair["env"]))
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        if result.code != 0:
            failed.append(f"{pair['stack']} ({pair['env'] or 'default'})")
    print(f"released {args.hold} on {len(pairs) - len(failed)} of {len(pairs)} "
          "stack environment(s)", file=sys.stderr)
    if failed:
        return g.fail(f"could not release {args.hold} on: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    g.main_guard(main)
