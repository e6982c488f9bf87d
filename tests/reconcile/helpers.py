"""Helpers of the reconcile tests: a memory stack in a git repository made in the test.

The "remote" is a plain (non-bare) repository on disk: commits are made in it and the
reconciler clones and fetches it by path, as it would a URL.  Its stack lives in
`stacks/app`, so the reconciler's DIR-inside-the-repository is exercised too.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

from mlform import audit
from mlform.reconcile import GitSource, ReconcileOptions, Reconciler
from mlform.session import Session

STACK_DIR = Path("stacks/app")

PROVIDER = """
provider "memory" {
  store      = ".mlform/memory.json"
  call_log   = ".mlform/calls.jsonl"
  latency_ms = %(latency_ms)s
}
"""

RESOURCES = """
dataset "train" {
  source = "s3://bucket/train.csv"
  format = "csv"
}

model "clf" {
  artifact  = dataset.train.uri
  framework = "torch"
  stage     = "production"
}

endpoint "clf" {
  model    = model.clf
  replicas = %(replicas)s
}

output "url" {
  value = endpoint.clf.url
}
"""


def stack_hcl(replicas: int = 1, latency_ms: float = 0) -> str:
    return (PROVIDER % {"latency_ms": latency_ms}
            + RESOURCES % {"replicas": replicas})


GIT_ENV = {"GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
           "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
           "GIT_CONFIG_NOSYSTEM": "1"}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], env={**os.environ, **GIT_ENV},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def make_repo(path: Path, files: dict[str, str]) -> Path:
    """A repository at `path` (branch main) with `files` committed."""
    path.mkdir(parents=True)
    git(path, "init", "--quiet", "--initial-branch=main")
    commit(path, files, "first")
    return path


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    """Write `files` (path -> text; None deletes) and commit them; the new HEAD."""
    for rel, text in files.items():
        target = repo / rel
        if text is None:
            target.unlink()
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip())
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def reconciler(remote: Path, checkout: Path, auto_apply: str, **options) -> Reconciler:
    source = GitSource(str(remote), checkout, subdir=STACK_DIR)
    return Reconciler(source, ReconcileOptions(auto_apply=auto_apply, interval_s=0, **options))


# --- what the memory "service" holds -------------------------------------------------------

def store_file(stack: Path) -> Path:
    return stack / ".mlform" / "memory.json"


def objects(stack: Path) -> dict:
    """The memory store's live objects by address."""
    doc = json.loads(store_file(stack).read_text())
    return {obj["address"]: obj for obj in doc["objects"].values()}


def edit_live(stack: Path, address: str, **attributes) -> None:
    """An out-of-band change: edit one live object in the store (None deletes it)."""
    path = store_file(stack)
    doc = json.loads(path.read_text())
    [oid] = [k for k, o in doc["objects"].items() if o["address"] == address]
    if attributes.get("deleted"):
        del doc["objects"][oid]
    else:
        doc["objects"][oid]["attributes"].update(attributes)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))


def audit_records(stack: Path) -> list[dict]:
    session = Session(stack)
    try:
        return [e.record for e in audit.history(session).entries]
    finally:
        session.close()
