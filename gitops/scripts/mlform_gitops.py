"""What the GitOps job scripts share: running mlform, talking to the forge, comments.

The scripts (plan_comment.py, apply_merged.py, release_holds.py, drift_report.py,
changed_stacks.py) run on CI runners with nothing but Python 3.11's standard library,
the `mlform` command and, on GitHub, the `gh` command every hosted runner has.  GitHub
is reached only through `gh api`; GitLab through its REST API with urllib (a GitLab
runner image need not have `glab`).

The comment logic (markers, truncation) is pure so it is tested without a forge.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# GitHub refuses an issue comment longer than 65536 characters; GitLab's note limit is
# 1,000,000.  The reserve leaves room for the closing fences and the truncation note.
COMMENT_LIMITS = {"github": 65536, "gitlab": 1_000_000}
_RESERVE = 1200

PLAN_FILE = "plan.json"      # inside each plan's artifact folder
META_FILE = "meta.json"      # stack, env, hold, commit: what apply_merged.py needs


class GitOpsError(Exception):
    """A failure the job reports in one line (no traceback)."""


# --- running mlform ---------------------------------------------------------------------

@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def mlform_command() -> list[str]:
    """`mlform`, or what $MLFORM_COMMAND says (e.g. `python -m mlform.cli`)."""
    return shlex.split(os.environ.get("MLFORM_COMMAND") or "mlform")


def run_mlform(*args: str, cwd: str | None = None) -> Result:
    cmd = [*mlform_command(), *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                              env={**os.environ, "NO_COLOR": "1"})
    except FileNotFoundError as exc:
        raise GitOpsError(f"cannot run {cmd[0]!r}: is mlform installed? ({exc})") from exc
    return Result(proc.returncode, proc.stdout, proc.stderr)


def env_args(env: str) -> list[str]:
    return ["--env", env] if env else []


# --- names ------------------------------------------------------------------------------

def slug(text: str) -> str:
    """A name safe in an artifact name (GitHub forbids / \\ : * ? " < > |)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("./")) or "root"


def artifact_name(prefix: str, stack: str, env: str) -> str:
    return f"{prefix}-{slug(stack)}-{env or 'default'}"


def marker(kind: str, stack: str, env: str) -> str:
    """The hidden line that identifies a sticky comment: one per kind, stack and env."""
    return f"<!-- mlform:{kind} {stack} {env or 'default'} -->"


# --- comments ---------------------------------------------------------------------------

_FENCE = re.compile(r"^(`{3,}|~{3,})")


def truncate(body: str, limit: int, note) -> str:
    """`body` if it fits in `limit` characters; else whole lines from its start, the
    code fences and <details> blocks left open closed again (so the rest still renders),
    then `note(shown, total)`.  The result never exceeds `limit`."""
    if len(body) <= limit:
        return body
    budget = limit - _RESERVE - len(note(len(body), len(body)))
    if budget <= 0:
        raise ValueError(f"comment limit {limit} leaves no room for the note")
    kept: list[str] = []
    size = 0
    fence = ""          # the open fence's marker, "" when outside a code block
    details = 0
    for line in body.split("\n"):
        if size + len(line) + 1 > budget:
            break
        kept.append(line)
        size += len(line) + 1
        m = _FENCE.match(line)
        if fence:
            if m and line.strip() == fence:
                fence = ""
        elif m:
            fence = m.group(1)
        elif line.startswith("<details"):
            details += 1
        elif line.startswith("</details>"):
            details = max(0, details - 1)
    tail = []
    if fence:
        tail.append(fence)
    tail += ["", "</details>"] * details
    out = "\n".join(kept + tail) + "\n\n" + note(size, len(body)) + "\n"
    assert len(out) <= limit, (len(out), limit)
    return out


def truncation_note(where: str):
    """The note a truncated comment ends with, as `truncate` wants it."""
    def note(shown: int, total: int) -> str:
        return (f"> [!WARNING]\n> **Plan truncated**: it is {total:,} characters, more than "
                f"a comment can hold; the first {shown:,} are shown. {where}")
    return note


def fenced(text: str, info: str = "text") -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip()}\n{fence}"


# --- the forges -------------------------------------------------------------------------

def _json_values(text: str) -> list:
    """The JSON values in `text` one after another (`gh api --paginate` prints one
    array per page)."""
    decoder = json.JSONDecoder()
    values, i = [], 0
    text = text.strip()
    while i < len(text):
        value, i = decoder.raw_decode(text, i)
        values.append(value)
        while i < len(text) and text[i].isspace():
            i += 1
    return values


class GitHub:
    """GitHub through `gh api` (GH_TOKEN / GITHUB_TOKEN authenticate it)."""

    name = "github"

    def __init__(self, repo: str | None = None) -> None:
        self.repo = repo or os.environ.get("GITHUB_REPOSITORY") or ""
        if not self.repo:
            raise GitOpsError("no repository: pass --repo OWNER/NAME or set GITHUB_REPOSITORY")

    def api(self, method: str, endpoint: str, body: dict | None = None,
            paginate: bool = False):
        cmd = ["gh", "api", "--method", method, endpoint]
        if paginate:
            cmd.append("--paginate")
        if body is not None:
            cmd += ["--input", "-"]
        try:
            proc = subprocess.run(cmd, input=json.dumps(body) if body is not None else None,
                                  capture_output=True, text=True)
        except FileNotFoundError as exc:
            raise GitOpsError("cannot run `gh`: it is on every GitHub-hosted runner; "
                              "install it on a self-hosted one") from exc
        if proc.returncode != 0:
            raise GitOpsError(f"gh api {method} {endpoint} failed: "
                              f"{(proc.stderr or proc.stdout).strip()}")
        values = _json_values(proc.stdout)
        if paginate:
            return [item for page in values for item in page]
        return values[0] if values else None

    # comments on a pull request are issue comments
    def comments(self, pr: int) -> list[dict]:
        return self.api("GET", f"repos/{self.repo}/issues/{pr}/comments?per_page=100",
                        paginate=True)

    def create_comment(self, pr: int, body: str) -> dict:
        return self.api("POST", f"repos/{self.repo}/issues/{pr}/comments", {"body": body})

    def update_comment(self, pr: int, comment_id, body: str) -> dict:
        return self.api("PATCH", f"repos/{self.repo}/issues/comments/{comment_id}",
                        {"body": body})

    def changed_files(self, pr: int) -> list[str]:
        files = self.api("GET", f"repos/{self.repo}/pulls/{pr}/files?per_page=100",
                         paginate=True)
        out = []
        for f in files:
            out.append(f["filename"])
            if f.get("previous_filename"):      # a rename touches both places
                out.append(f["previous_filename"])
        return out

    def plan_run(self, workflow: str, sha: str) -> dict | None:
        """The newest run of `workflow` for the pull request commit `sha`."""
        doc = self.api("GET", f"repos/{self.repo}/actions/workflows/{workflow}/runs"
                              f"?head_sha={sha}&event=pull_request&per_page=20")
        runs = sorted(doc.get("workflow_runs", []), key=lambda r: r.get("created_at", ""),
                      reverse=True)
        return runs[0] if runs else None


class GitLab:
    """GitLab's REST API with urllib.  Notes need a token with the `api` scope
    (MLFORM_GITLAB_TOKEN or GITLAB_TOKEN, sent as PRIVATE-TOKEN): a job token
    (CI_JOB_TOKEN) may read job artifacts but may not write merge-request notes."""

    name = "gitlab"

    def __init__(self, project: str | None = None) -> None:
        self.url = (os.environ.get("CI_API_V4_URL") or "").rstrip("/")
        self.project = urllib.parse.quote(project or os.environ.get("CI_PROJECT_ID") or "",
                                          safe="")
        if not self.url or not self.project:
            raise GitOpsError("no GitLab project: CI_API_V4_URL and CI_PROJECT_ID are unset")
        token = os.environ.get("MLFORM_GITLAB_TOKEN") or os.environ.get("GITLAB_TOKEN")
        self.headers = ({"PRIVATE-TOKEN": token} if token
                        else {"JOB-TOKEN": os.environ.get("CI_JOB_TOKEN", "")})

    def request(self, method: str, path: str, body: dict | None = None, raw: bool = False):
        url = f"{self.url}/projects/{self.project}/{path}"
        data = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, **({"Content-Type": "application/json"} if data else {})}
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise GitOpsError(f"GitLab {method} {path}: HTTP {exc.code} {detail}") from exc
        except urllib.error.URLError as exc:
            raise GitOpsError(f"GitLab {method} {path}: {exc.reason}") from exc
        return payload if raw else (json.loads(payload) if payload else None)

    def _pages(self, path: str) -> list:
        out, page = [], 1
        sep = "&" if "?" in path else "?"
        while True:
            items = self.request("GET", f"{path}{sep}per_page=100&page={page}")
            out += items
            if len(items) < 100:
                return out
            page += 1

    def comments(self, mr: int) -> list[dict]:
        return self._pages(f"merge_requests/{mr}/notes")

    def create_comment(self, mr: int, body: str) -> dict:
        return self.request("POST", f"merge_requests/{mr}/notes", {"body": body})

    def update_comment(self, mr: int, note_id, body: str) -> dict:
        return self.request("PUT", f"merge_requests/{mr}/notes/{note_id}", {"body": body})

    def changed_files(self, mr: int) -> list[str]:
        out = []
        for d in self._pages(f"merge_requests/{mr}/diffs"):
            out += [d["new_path"], d["old_path"]]
        return out

    def merge_request_of(self, sha: str) -> dict | None:
        mrs = self.request("GET", f"repository/commits/{sha}/merge_requests")
        merged = [m for m in mrs if m.get("state") == "merged"]
        return (merged or mrs or [None])[0]

    def plan_jobs(self, mr: dict, job_prefix: str) -> list[dict]:
        """The successful plan jobs of the merge request's newest pipeline for its head."""
        pipelines = self.request("GET", f"merge_requests/{mr['iid']}/pipelines")
        for pipeline in pipelines:      # newest first
            if pipeline.get("sha") != mr.get("sha"):
                continue
            jobs = self._pages(f"pipelines/{pipeline['id']}/jobs?scope[]=success")
            return [j for j in jobs if j["name"].startswith(job_prefix)]
        return []

    def job_artifacts(self, job_id) -> bytes:
        return self.request("GET", f"jobs/{job_id}/artifacts", raw=True)


def forge(name: str, repo: str | None = None):
    if name == "github":
        return GitHub(repo)
    if name == "gitlab":
        return GitLab(repo)
    raise GitOpsError(f"unknown forge {name!r}: github or gitlab")


def upsert_comment(forge, pr: int, mark: str, body: str) -> tuple[str, dict]:
    """Update the comment holding `mark` in place, or create it: one comment per mark.
    Returns ("updated"|"created", the comment)."""
    if not body.startswith(mark):
        body = f"{mark}\n{body}"
    for comment in forge.comments(pr):
        # ours start with the marker; a reply quoting one merely contains it
        if (comment.get("body") or "").lstrip().startswith(mark):
            return "updated", forge.update_comment(pr, comment["id"], body)
    return "created", forge.create_comment(pr, body)


# --- the CI around the scripts ----------------------------------------------------------

def pull_request_number() -> int | None:
    """The pull request (GitHub event payload) or merge request (GitLab) being built."""
    if os.environ.get("CI_MERGE_REQUEST_IID"):
        return int(os.environ["CI_MERGE_REQUEST_IID"])
    path = os.environ.get("GITHUB_EVENT_PATH")
    if path and Path(path).is_file():
        event = json.loads(Path(path).read_text())
        number = (event.get("pull_request") or {}).get("number")
        if number:
            return int(number)
    return None


def run_url() -> str:
    """A link to this CI run, for comments ("" when unknown)."""
    if os.environ.get("CI_JOB_URL"):
        return os.environ["CI_JOB_URL"]
    server, repo, run = (os.environ.get(k) for k in
                         ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    return f"{server}/{repo}/actions/runs/{run}" if server and repo and run else ""


def commit_sha() -> str:
    return os.environ.get("CI_COMMIT_SHA") or os.environ.get("GITHUB_SHA") or ""


def set_outputs(**values) -> None:
    """Step outputs ($GITHUB_OUTPUT); also printed so a GitLab log shows them."""
    path = os.environ.get("GITHUB_OUTPUT")
    lines = []
    for key, value in values.items():
        value = str(value)
        if "\n" in value:
            lines.append(f"{key}<<MLFORM_EOF\n{value}\nMLFORM_EOF")
        else:
            lines.append(f"{key}={value}")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


def fail(message: str) -> int:
    """Report a job failure the way the runner shows it best; returns the exit status."""
    if os.environ.get("GITHUB_ACTIONS"):
        print(f"::error::{message}", file=sys.stderr)
    else:
        print(f"error: {message}", file=sys.stderr)
    return 1


def main_guard(main) -> None:
    """Run `main()`; a GitOpsError is one line and exit 1, never a traceback."""
    try:
        sys.exit(main())
    except GitOpsError as exc:
        sys.exit(fail(str(exc)))
