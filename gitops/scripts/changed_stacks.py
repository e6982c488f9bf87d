"""Which stack/environment pairs a pull request touches: the plan job's matrix.

A stack is a directory with spec files (`*.hcl`, `*.mlform.yaml|yml|json`) and an
`environments/` folder, or one named with `--stacks`.  A changed file counts for the
stack it lies in and for every stack whose spec calls the module directory it lies in
(`source = "../modules/x"`).  A changed `environments/NAME.*` file selects only that
environment; any other change selects all of the stack's environments (`default` for a
stack without any).

    changed_stacks.py [--pr N | --files-from FILE | --all] [--stacks DIR,DIR] [--envs E,E]
                      [--format github|json|lines]

`--format github` writes `matrix` (`{"include": [{"stack", "env"}]}`) and `any`
(`true`/`false`) to $GITHUB_OUTPUT; `lines` prints `STACK<TAB>ENV` per pair.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path, PurePosixPath

import mlform_gitops as g

SPEC_SUFFIXES = (".hcl", ".mlform.yaml", ".mlform.yml", ".mlform.json")
ENV_SUFFIXES = (".hcl", ".mlform.yaml", ".mlform.yml", ".mlform.json", ".yaml", ".yml",
                ".json")
_SKIP = {".git", ".mlform", ".venv", "node_modules", "__pycache__", ".tools"}
_SOURCE = re.compile(r"""source\s*[=:]\s*["']([^"']+)["']""")


def is_spec(name: str) -> bool:
    return name.endswith(SPEC_SUFFIXES)


def env_name(file: str) -> str | None:
    for suffix in ENV_SUFFIXES:
        if file.endswith(suffix):
            name = file[: -len(suffix)]
            return name[: -len(".mlform")] if name.endswith(".mlform") else name
    return None


def find_stacks(root: Path) -> list[str]:
    """Stack directories under `root` (relative POSIX paths, "." for the root)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP and not d.startswith("."))
        if "environments" in dirnames and any(is_spec(f) for f in filenames):
            found.append(Path(dirpath).relative_to(root).as_posix())
    return found


def environments(root: Path, stack: str) -> list[str]:
    folder = root / stack / "environments"
    names = {env_name(p.name) for p in folder.iterdir() if p.is_file()} if folder.is_dir() \
        else set()
    return sorted(n for n in names if n) or [""]


def module_dirs(root: Path, stack: str) -> set[str]:
    """The local module directories a stack calls, transitively (relative to root)."""
    seen: set[str] = set()
    todo = [stack]
    while todo:
        folder = root / todo.pop()
        if not folder.is_dir():
            continue
        for spec in folder.iterdir():
            if not (spec.is_file() and is_spec(spec.name)):
                continue
            for source in _SOURCE.findall(spec.read_text(errors="replace")):
                if not source.startswith("."):
                    continue        # a registry or git source: not in this repository
                target = (folder / source).resolve()
                try:
                    rel = target.relative_to(root.resolve()).as_posix()
                except ValueError:
                    continue
                if rel not in seen:
                    seen.add(rel)
                    todo.append(rel)
    return seen


def _under(path: str, folder: str) -> bool:
    return folder == "." or path == folder or path.startswith(folder.rstrip("/") + "/")


def changed_pairs(root: Path, files: list[str], stacks: list[str],
                  only_envs: list[str] | None = None) -> list[dict]:
    """The (stack, env) pairs `files` touch, in a stable order."""
    pairs: set[tuple[str, str]] = set()
    for stack in stacks:
        all_envs = environments(root, stack)
        modules = module_dirs(root, stack)
        for file in files:
            file = PurePosixPath(file).as_posix()
            if _under(file, stack):
                inner = file if stack == "." else file[len(stack.rstrip("/")) + 1:]
                if inner.startswith(".mlform/"):
                    continue
                if inner.startswith("environments/"):
                    name = env_name(inner[len("environments/"):])
                    if name in all_envs:
                        pairs.add((stack, name))
                    continue
                # a stack may nest another stack; the inner one owns its files
                if any(_under(file, other) and len(other) > len(stack)
                       for other in stacks if other != stack):
                    continue
                pairs.update((stack, env) for env in all_envs)
            elif any(_under(file, m) for m in modules):
                pairs.update((stack, env) for env in all_envs)
    if only_envs:
        pairs = {p for p in pairs if (p[1] or "default") in only_envs}
    return [{"stack": s, "env": e} for s, e in sorted(pairs)]


def all_pairs(root: Path, stacks: list[str], only_envs: list[str] | None = None) -> list[dict]:
    pairs = [{"stack": s, "env": e} for s in stacks for e in environments(root, s)]
    return [p for p in pairs if not only_envs or (p["env"] or "default") in only_envs]


def _split(text: str | None) -> list[str]:
    return [x.strip().rstrip("/") or "." for x in re.split(r"[,\n]", text or "") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--forge", default="github", choices=["github", "gitlab"])
    ap.add_argument("--repo", help="OWNER/NAME (GitHub) or project id (GitLab)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--pr", type=int, help="the pull/merge request whose files changed")
    src.add_argument("--files-from", help="a file listing the changed paths, one a line")
    src.add_argument("--all", action="store_true", help="every stack and environment")
    ap.add_argument("--stacks", help="stack directories (comma or newline separated); "
                                     "default: every directory with spec files and environments/")
    ap.add_argument("--envs", help="only these environments")
    ap.add_argument("--root", default=".", help="the repository checkout")
    ap.add_argument("--format", default="github", choices=["github", "json", "lines"])
    args = ap.parse_args(argv)

    root = Path(args.root)
    stacks = _split(args.stacks) or find_stacks(root)
    envs = _split(args.envs) or None
    if args.all:
        pairs = all_pairs(root, stacks, envs)
    else:
        if args.files_from:
            files = Path(args.files_from).read_text().split()
        else:
            pr = args.pr or g.pull_request_number()
            if pr is None:
                raise g.GitOpsError("no pull request: pass --pr N, --files-from FILE or --all")
            files = g.forge(args.forge, args.repo).changed_files(pr)
        pairs = changed_pairs(root, files, stacks, envs)

    lines = [f"{p['stack']}\t{p['env'] or 'default'}" for p in pairs]
    if args.format == "lines":
        print("\n".join(lines))
    elif args.format == "json":
        print(json.dumps({"include": pairs}))
    else:
        print("\n".join(lines) or "no stack changed", file=sys.stderr)
        g.set_outputs(matrix=json.dumps({"include": pairs}),
                      any="true" if pairs else "false")
    return 0


if __name__ == "__main__":
    g.main_guard(main)
