"""The GitOps scripts with `--forge gitlab`, end to end against a recording GitLab API.

The API is a small stdlib HTTP server in the test (merge-request notes, diffs, the merge
request of a commit, pipelines, jobs and their artifact zips), reached through
CI_API_V4_URL exactly as a GitLab job reaches gitlab.com; the scripts and mlform run as
subprocesses with the GitLab CI variables, as the template's jobs run them.
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from e2e.harness import read_store

from .checkout import STACK, Checkout

pytestmark = pytest.mark.timeout(300)

PROJECT = "1234"
MR = 7
HOLD = f"gitlab:acme/ml!{MR}"
TOKEN = "glpat-test-token"


class FakeGitLab:
    """The parts of GitLab's REST API v4 the scripts use, recording every request."""

    def __init__(self) -> None:
        self.notes: dict[int, list[dict]] = {}
        self.diffs: dict[int, list[dict]] = {}
        self.commit_mrs: dict[str, list[dict]] = {}
        self.mr_pipelines: dict[int, list[dict]] = {}
        self.pipeline_jobs: dict[int, list[dict]] = {}
        self.artifacts: dict[int, bytes] = {}
        self.requests: list[tuple[str, str, dict | None, str | None]] = []
        self.next_id = 500
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, payload, raw: bool = False):
                data = payload if raw else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append((self.command, self.path, body,
                                      self.headers.get("PRIVATE-TOKEN")))
                if self.headers.get("PRIVATE-TOKEN") != TOKEN:
                    return self._reply(401, {"message": "401 Unauthorized"})
                status, payload, raw = fake.answer(self.command, self.path, body)
                self._reply(status, payload, raw)

            do_GET = do_POST = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v4"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def _page(items: list, query: dict) -> list:
        per_page = int(query.get("per_page", ["20"])[0])
        page = int(query.get("page", ["1"])[0])
        return items[(page - 1) * per_page: page * per_page]

    def answer(self, method: str, path: str, body):
        url = urlsplit(path)
        query = parse_qs(url.query)
        parts = url.path.split("/")[3:]            # after /api/v4
        if parts[:2] != ["projects", PROJECT]:
            return 404, {"message": "404 Project Not Found"}, False
        rest = parts[2:]
        if rest[:1] == ["merge_requests"] and rest[2:3] == ["notes"]:
            notes = self.notes.setdefault(int(rest[1]), [])
            if method == "GET":
                return 200, self._page(notes, query), False
            if method == "POST":
                self.next_id += 1
                notes.append({"id": self.next_id, "body": body["body"]})
                return 201, notes[-1], False
            if method == "PUT":
                for note in notes:
                    if note["id"] == int(rest[3]):
                        note["body"] = body["body"]
                        return 200, note, False
        if rest[:1] == ["merge_requests"] and rest[2:] == ["diffs"]:
            return 200, self._page(self.diffs.get(int(rest[1]), []), query), False
        if rest[:1] == ["merge_requests"] and rest[2:] == ["pipelines"]:
            return 200, self.mr_pipelines.get(int(rest[1]), []), False
        if rest[:2] == ["repository", "commits"] and rest[3:] == ["merge_requests"]:
            return 200, self.commit_mrs.get(rest[2], []), False
        if rest[:1] == ["pipelines"] and rest[2:] == ["jobs"]:
            jobs = self.pipeline_jobs.get(int(rest[1]), [])
            scope = query.get("scope[]")
            jobs = [j for j in jobs if not scope or j["status"] in scope]
            return 200, self._page(jobs, query), False
        if rest[:1] == ["jobs"] and rest[2:] == ["artifacts"]:
            return 200, self.artifacts[int(rest[1])], True
        return 404, {"message": f"404 {method} {url.path} Not Found"}, False


@pytest.fixture
def gitlab():
    fake = FakeGitLab()
    yield fake
    fake.close()


@pytest.fixture
def repo(tmp_path, gitlab) -> Checkout:
    checkout = Checkout(tmp_path)
    checkout.env.update({"CI_API_V4_URL": gitlab.url, "CI_PROJECT_ID": PROJECT,
                         "CI_MERGE_REQUEST_IID": str(MR), "CI_COMMIT_SHA": "abcdef0123456789",
                         "CI_JOB_URL": "https://gitlab.example/acme/ml/-/jobs/99",
                         "MLFORM_GITLAB_TOKEN": TOKEN})
    for key in ("GITHUB_ACTIONS", "GITHUB_EVENT_PATH", "GITHUB_REPOSITORY", "GITHUB_SHA",
                "GITHUB_RUN_ID", "GITHUB_SERVER_URL", "RUNNER_TEMP"):
        checkout.env.pop(key)
    return checkout


def plan(repo: Checkout, out_dir: Path):
    return repo.script("plan_comment", "--forge", "gitlab", "--stack", STACK, "--env",
                       "staging", "--hold", HOLD, "--out-dir", out_dir)


def test_merge_request_note_is_created_then_edited(repo, gitlab, tmp_path):
    gitlab.diffs[MR] = [{"new_path": f"{STACK}/main.hcl", "old_path": f"{STACK}/main.hcl"}]
    changed = repo.script("changed_stacks", "--forge", "gitlab", "--format", "lines")
    assert changed.code == 0, changed
    assert changed.stdout == f"{STACK}\tstaging\n"

    first = plan(repo, tmp_path / "plans")
    assert first.code == 0, first
    [note] = [dict(n) for n in gitlab.notes[MR]]      # a copy: the server edits in place
    assert note["body"].startswith(f"<!-- mlform:plan {STACK} staging -->\n")
    assert "2 to add" in note["body"] and f"hold `{HOLD}`" in note["body"]
    assert "[run](https://gitlab.example/acme/ml/-/jobs/99)" in note["body"]

    repo.edit("replicas = 1", "replicas = 2")
    second = plan(repo, tmp_path / "plans")
    assert second.code == 0, second
    [edited] = gitlab.notes[MR]
    assert edited["id"] == note["id"] and "replicas" in edited["body"]
    assert edited["body"] != note["body"]
    writes = [(m, p.split("?")[0]) for m, p, _, _ in gitlab.requests if m != "GET"]
    assert writes == [("POST", f"/api/v4/projects/{PROJECT}/merge_requests/{MR}/notes"),
                      ("PUT", f"/api/v4/projects/{PROJECT}/merge_requests/{MR}/notes/"
                              f"{note['id']}")]
    assert all(token == TOKEN for *_, token in gitlab.requests)


def test_merge_applies_the_plan_of_the_merge_requests_pipeline(repo, gitlab, tmp_path):
    out = tmp_path / "job" / ".mlform-plans"
    planned = plan(repo, out)
    assert planned.code == 0, planned
    # the plan job's artifact archive, as GitLab keeps it (paths: [.mlform-plans/])
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for file in out.rglob("*"):
            if file.is_file():
                z.write(file, file.relative_to(out.parent).as_posix())
    gitlab.commit_mrs["merge0001"] = [{"iid": MR, "state": "merged", "sha": "head0001"}]
    gitlab.mr_pipelines[MR] = [{"id": 31, "sha": "head0001"}, {"id": 30, "sha": "old0000"}]
    gitlab.pipeline_jobs[31] = [{"id": 77, "name": "mlform-plan", "status": "success"},
                                {"id": 78, "name": "lint", "status": "success"}]
    gitlab.artifacts[77] = archive.getvalue()

    env = {"CI_MERGE_REQUEST_IID": "", "CI_COMMIT_SHA": "merge0001"}
    dest = tmp_path / "reviewed"
    fetched = repo.script("apply_merged", "--forge", "gitlab", "download", "--sha",
                          "merge0001", "--dest", dest, env=env)
    assert fetched.code == 0, fetched
    applied = repo.script("apply_merged", "--forge", "gitlab", "apply", "--plans-dir", dest,
                          env=env)
    assert applied.code == 0, applied
    assert sorted(o["address"] for o in read_store(repo.stack).values()) == \
        ["endpoint.clf", "model.clf"]
    apply_notes = [n for n in gitlab.notes[MR] if "mlform:apply" in n["body"]]
    assert len(apply_notes) == 1 and ": applied" in apply_notes[0]["body"]


def test_merge_without_a_successful_plan_job_is_refused(repo, gitlab, tmp_path):
    gitlab.commit_mrs["merge0002"] = [{"iid": MR, "state": "merged", "sha": "head0002"}]
    gitlab.mr_pipelines[MR] = [{"id": 40, "sha": "head0002"}]
    gitlab.pipeline_jobs[40] = [{"id": 90, "name": "mlform-plan", "status": "failed"}]
    step = repo.script("apply_merged", "--forge", "gitlab", "download", "--sha", "merge0002",
                       "--dest", tmp_path / "reviewed", env={"CI_MERGE_REQUEST_IID": ""})
    assert step.code == 1, step
    assert "no successful mlform-plan job" in step.stderr and "re-plan" in step.stderr
    assert "Traceback" not in step.stderr


def test_a_missing_token_is_one_clear_error(repo, gitlab, tmp_path):
    step = repo.script("plan_comment", "--forge", "gitlab", "--stack", STACK, "--env",
                       "staging", "--out-dir", tmp_path / "plans",
                       env={"MLFORM_GITLAB_TOKEN": ""})
    assert step.code == 1, step
    assert "HTTP 401" in step.stderr and "Traceback" not in step.stderr
