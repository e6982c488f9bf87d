"""The scripts the GitOps workflows run, end to end.

Each test builds a repository checkout in tmp_path holding a memory-provider stack, puts a
recording fake `gh` (tests/gitops/fake_gh.py, written there as an executable) first on
PATH, and runs the scripts as the workflow steps do: as subprocesses, with the GitHub
Actions environment (GITHUB_REPOSITORY, GITHUB_EVENT_PATH, GITHUB_OUTPUT, RUNNER_TEMP, ...)
and the real mlform CLI (`python -m mlform.cli` through MLFORM_COMMAND).  What the fake
`gh` was asked to post, the step outputs, the saved plans, the memory store and the JUnit
report are what the tests check.
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from e2e.harness import make_stack, memory_provider, read_store, write_store

from .checkout import ENVIRONMENT, HOLD, PR, REPO, ROOT, STACK, Checkout, Step

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def repo(tmp_path) -> Checkout:
    return Checkout(tmp_path)


def marker(env: str = "staging", kind: str = "plan") -> str:
    return f"<!-- mlform:{kind} {STACK} {env} -->"


def download(step: Step, into: Path) -> Path:
    """What actions/download-artifact leaves: the artifact's folder, by its name."""
    target = into / step.outputs["artifact-name"]
    shutil.copytree(step.outputs["plan-dir"], target)
    return into


# --- the plan job ----------------------------------------------------------------------------

def test_changed_stacks_matrix_from_the_pull_request_files(repo):
    module = repo.root / "modules" / "serving"
    module.mkdir(parents=True)
    (module / "main.hcl").write_text('variable "replicas" {\n  default = 1\n}\n')
    other = make_stack(repo.root / "stacks", memory_provider() + 'module "serving" {\n'
                       '  source = "../../modules/serving"\n}\n', name="other",
                       files={"environments/prod.hcl": ENVIRONMENT,
                              "environments/dev.hcl": ENVIRONMENT})
    assert other.is_dir()
    repo.forge["files"][str(PR)] = [f"{STACK}/environments/staging.hcl", "README.md"]
    repo.save_forge()
    step = repo.script("changed_stacks")
    assert step.code == 0, step
    assert json.loads(step.outputs["matrix"]) == {
        "include": [{"stack": STACK, "env": "staging"}]}
    assert step.outputs["any"] == "true"

    # a module change plans every environment of every stack calling it
    repo.forge["files"][str(PR)] = ["modules/serving/main.hcl"]
    repo.save_forge()
    step = repo.script("changed_stacks")
    assert json.loads(step.outputs["matrix"])["include"] == [
        {"stack": "stacks/other", "env": "dev"}, {"stack": "stacks/other", "env": "prod"}]

    repo.forge["files"][str(PR)] = ["docs/unrelated.md"]
    repo.save_forge()
    step = repo.script("changed_stacks")
    assert step.code == 0 and step.outputs["any"] == "false", step
    assert json.loads(step.outputs["matrix"]) == {"include": []}


def test_plan_posts_one_comment_then_updates_it_in_place(repo):
    first = repo.plan()
    assert first.code == 0, first
    assert first.outputs["exitcode"] == "2" and first.outputs["has-changes"] == "true", first
    [comment] = repo.comments()
    assert comment["body"].startswith(marker() + "\n"), comment["body"][:300]
    assert "### mlform plan (env `staging`): 2 to add, 0 to change, 0 to destroy" \
        in comment["body"]
    assert "| create | `endpoint.clf` |" in comment["body"]
    assert "hold" not in comment["body"].split("\n")[1]      # no --hold given

    # the artifact: the saved plan and its meta, where the upload step looks
    plan_dir = Path(first.outputs["plan-dir"])
    assert plan_dir.parent == repo.temp / "mlform-plans"
    assert first.outputs["artifact-name"] == "mlform-plan-stacks_app-staging"
    assert plan_dir.name == first.outputs["artifact-name"]
    assert Path(first.outputs["plan-file"]) == plan_dir / "plan.json"
    saved = json.loads((plan_dir / "plan.json").read_text())
    assert saved["plan_file"]["format"] == "mlform-plan" and saved["env"] == "staging"
    meta = json.loads((plan_dir / "meta.json").read_text())
    assert meta == {"stack": STACK, "env": "staging", "hold": "", "commit":
                    "0123456789abcdef0123", "exitcode": 2, "plan": "plan.json"}

    # a second push changes the spec: the same comment is edited, none is added
    repo.edit("replicas = 1", "replicas = 3")
    second = repo.plan()
    assert second.code == 0, second
    [updated] = repo.comments()
    assert updated["id"] == comment["id"]
    assert second.outputs["comment-id"] == str(comment["id"])
    assert "replicas      = 3" in updated["body"], updated["body"]
    writes = [(c["method"], c["endpoint"]) for c in repo.calls() if c["method"] != "GET"]
    assert writes == [("POST", f"repos/{REPO}/issues/{PR}/comments"),
                      ("PATCH", f"repos/{REPO}/issues/comments/{comment['id']}")]

    # another environment of the same stack gets its own comment
    (repo.stack / "environments" / "prod.hcl").write_text(ENVIRONMENT)
    assert repo.plan(env="prod").code == 0
    bodies = [c["body"] for c in repo.comments()]
    assert len(bodies) == 2 and bodies[1].startswith(marker("prod"))


def test_replacement_reason_is_said_once_in_the_comment(repo):
    (repo.stack / "data.hcl").write_text(
        'dataset "train" {\n  source = "s3://bucket/train.csv"\n  format = "csv"\n}\n')
    applied = repo.mlform("apply", STACK, "--env", "staging", "--auto-approve")
    assert applied.code == 0, applied
    (repo.stack / "data.hcl").write_text(
        (repo.stack / "data.hcl").read_text().replace('"csv"', '"parquet"'))
    assert repo.plan().code == 0
    [comment] = repo.comments()
    assert "| replace | `dataset.train` | forces replacement: format |" in comment["body"], \
        comment["body"]


def test_plan_comment_is_found_among_many_comments(repo):
    """The sticky comment is found on a later page of comments, not duplicated."""
    repo.forge["comments"][str(PR)] = [{"id": i, "body": f"chatter {i}"} for i in range(1, 251)]
    # a reviewer quoting the plan comment's source must not be taken for it
    repo.forge["comments"][str(PR)][3]["body"] = f"> {marker()}\n> looks big"
    repo.save_forge()
    assert repo.plan().code == 0
    repo.edit("replicas = 1", "replicas = 2")
    assert repo.plan().code == 0
    ours = [c for c in repo.comments() if c["body"].startswith(marker())]
    assert len(ours) == 1 and "replicas      = 2" in ours[0]["body"], ours
    assert repo.comments()[3]["body"] == f"> {marker()}\n> looks big"
    assert len(repo.comments()) == 251


def test_long_plan_is_truncated_with_a_note(repo):
    datasets = "".join(
        f'dataset "d{i:03}" {{\n  source = "s3://bucket/{"x" * 120}/{i}.csv"\n'
        f'  format = "csv"\n}}\n' for i in range(400))
    (repo.stack / "datasets.hcl").write_text(datasets)
    full = repo.mlform("plan", STACK, "--env", "staging", "--format", "markdown")
    assert len(full.stdout) > 65536, len(full.stdout)

    step = repo.plan()
    assert step.code == 0, step
    [comment] = repo.comments()
    body = comment["body"]
    assert len(body) <= 65536
    assert body.startswith(marker())
    assert "**Plan truncated**" in body and "mlform-plan-stacks_app-staging" in body
    assert "https://github.com/acme/ml-platform/actions/runs/7001" in body
    # what is cut is closed again, so the rest of the page still renders
    fences = [line for line in body.splitlines() if line.startswith("```")]
    assert len(fences) % 2 == 0, fences[-3:]
    assert body.count("<details>") == body.count("</details>")
    shown = int(re.search(r"the first ([\d,]+) are shown", body).group(1).replace(",", ""))
    assert 50000 < shown < 65536
    # the saved plan is whole
    saved = json.loads(Path(step.outputs["plan-file"]).read_text())
    assert len(saved["resource_changes"]) == 402


def test_failed_plan_fails_the_check_and_says_why(repo):
    repo.edit("replicas = 1", "replicas = var.missing")
    step = repo.plan()
    assert step.code == 1, step
    assert step.outputs["exitcode"] == "1" and step.outputs["plan-file"] == ""
    assert "::error::mlform plan stacks/app (staging) failed (exit 1)" in step.stderr
    assert not (Path(step.outputs["plan-dir"]) / "plan.json").exists()
    [comment] = repo.comments()
    assert "**The plan failed** (exit 1)" in comment["body"]
    assert "var.missing" in comment["body"] or "missing" in comment["body"]

    # fixed on the next push: the same comment shows the plan
    repo.edit("replicas = var.missing", "replicas = 1")
    assert repo.plan().code == 0
    [comment] = repo.comments()
    assert "The plan failed" not in comment["body"] and "2 to add" in comment["body"]


def test_mandatory_policy_failure_fails_the_check(repo):
    """A failing mandatory policy (the lead's `policy` blocks) makes plan exit 1: the job
    fails, the comment shows the plan with the failed policy, nothing is saved."""
    (repo.stack / "policies.hcl").write_text(
        'policy "max_replicas" {\n  level     = "mandatory"\n  kinds     = ["endpoint"]\n'
        '  condition = change.after.replicas <= 3\n'
        '  message   = "replicas = ${change.after.replicas}"\n}\n')
    assert repo.plan().code == 0
    repo.edit("replicas = 1", "replicas = 4")
    step = repo.plan()
    assert step.code == 1, step
    assert step.outputs["exitcode"] == "1" and step.outputs["plan-file"] == ""
    assert not (Path(step.outputs["plan-dir"]) / "plan.json").exists()
    [comment] = repo.comments()
    body = comment["body"]
    assert "**The plan failed** (exit 1)" in body
    assert "policy.max_replicas" in body and "replicas = 4" in body, body
    assert "<details><summary>mlform plan output</summary>" in body


# --- the merge job ---------------------------------------------------------------------------

def _runs(sha: str, conclusion: str, run_id: int = 555) -> dict:
    return {"mlform-plan.yml": [{"id": run_id, "head_sha": sha, "event": "pull_request",
                                 "status": "completed", "conclusion": conclusion,
                                 "created_at": "2026-12-01T10:00:00Z",
                                 "html_url": f"https://github.com/{REPO}/actions/runs/{run_id}"}]}


def test_find_run_names_the_reviewed_plan_run(repo):
    repo.forge["runs"] = _runs("feedbeef", "success")
    repo.save_forge()
    step = repo.script("apply_merged", "find-run", "--sha", "feedbeef")
    assert step.code == 0, step
    assert step.outputs["run-id"] == "555"

    repo.forge["runs"] = _runs("feedbeef", "failure")
    repo.save_forge()
    step = repo.script("apply_merged", "find-run", "--sha", "feedbeef")
    assert step.code == 1, step
    assert "not a successful reviewed plan" in step.stderr and "re-plan" in step.stderr
    step = repo.script("apply_merged", "find-run", "--sha", "0000")
    assert step.code == 1 and "no mlform-plan.yml run for commit 0000" in step.stderr, step


def test_merge_applies_exactly_the_reviewed_plan(repo, tmp_path):
    planned = repo.plan()
    assert planned.code == 0, planned
    downloaded = download(planned, tmp_path / "downloaded")
    assert read_store(repo.stack) == {}

    repo.set_event(PR, merged=True)
    step = repo.script("apply_merged", "apply", "--plans-dir", downloaded)
    assert step.code == 0, step
    assert "Apply complete! Resources: 2 added, 0 changed, 0 destroyed." in step.stdout
    objects = read_store(repo.stack)
    assert sorted(o["address"] for o in objects.values()) == ["endpoint.clf", "model.clf"]
    applied = [c for c in repo.comments() if marker(kind="apply") in c["body"]]
    assert len(applied) == 1
    assert "### mlform apply `stacks/app` (env `staging`): applied" in applied[0]["body"]
    assert repo.mlform("plan", STACK, "--env", "staging", "--detailed-exitcode").code == 0


def test_merge_refuses_a_stale_plan_and_says_to_replan(repo, tmp_path):
    planned = repo.plan()
    assert planned.code == 0, planned
    downloaded = download(planned, tmp_path / "downloaded")
    # the state moves after the review: another apply in between
    repo.edit("replicas = 1", "replicas = 2")
    other = repo.mlform("apply", STACK, "--env", "staging", "--auto-approve")
    assert other.code == 0, other
    repo.edit("replicas = 2", "replicas = 1")
    before = read_store(repo.stack)

    step = repo.script("apply_merged", "apply", "--plans-dir", downloaded)
    assert step.code == 1, step
    assert "re-plan" in step.stdout and "Saved plan is stale" in step.stderr, step
    assert read_store(repo.stack) == before, "a stale plan applied something"
    [comment] = [c for c in repo.comments() if marker(kind="apply") in c["body"]]
    assert "refused: the reviewed plan is stale" in comment["body"]
    assert "re-plan" in comment["body"]


def test_merge_with_no_saved_plan_applies_nothing(repo, tmp_path):
    step = repo.script("apply_merged", "apply", "--plans-dir", tmp_path / "nothing")
    assert step.code == 0, step
    assert "nothing to apply" in step.stderr
    assert repo.comments() == []


# --- the drift job ---------------------------------------------------------------------------

def test_drift_job_fails_with_junit_naming_the_attribute(repo, tmp_path):
    applied = repo.mlform("apply", STACK, "--env", "staging", "--auto-approve")
    assert applied.code == 0, applied
    clean = repo.script("drift_report", "--stack", STACK, "--env", "staging",
                        "--junit", tmp_path / "clean.xml")
    assert clean.code == 0, clean
    assert "No drift" in repo.summary_file.read_text()

    objects = read_store(repo.stack)
    objects["app/staging/endpoint.clf"]["attributes"]["replicas"] = 5
    write_store(repo.stack, objects)
    step = repo.script("drift_report", "--stack", STACK, "--env", "staging",
                       "--junit", tmp_path / "drift.xml")
    assert step.code == 2, step
    assert step.outputs["exitcode"] == "2" and step.outputs["drifted"] == "1"
    suite = ET.parse(tmp_path / "drift.xml").getroot()
    [failed] = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed.get("name") == "endpoint.clf"
    assert "replicas" in failed.find("failure").get("message")
    assert "::error title=drift in stacks/app::endpoint.clf drifted: replicas" in step.stdout
    summary = repo.summary_file.read_text()
    assert "| `endpoint.clf` | drifted: replicas |" in summary, summary


# --- holds across pull requests (the hold helper's `plan --hold` / `mlform release`) --------

def test_a_second_pull_request_is_refused_until_the_first_closes(repo):
    first = repo.plan("--hold", HOLD)
    assert first.code == 0, first
    [comment] = repo.comments()
    assert f"hold `{HOLD}`" in comment["body"]
    assert json.loads((Path(first.outputs["plan-dir"]) / "meta.json").read_text())["hold"] \
        == HOLD

    other_hold = f"github:{REPO}#43"
    repo.set_event(43)
    refused = repo.plan("--hold", other_hold)
    assert refused.code == 1, refused
    [refused_comment] = repo.comments(43)
    assert "The state is held by another pull request" in refused_comment["body"]
    assert HOLD in refused_comment["body"]

    # #42 is closed without merging: its holds are released
    repo.set_event(PR, merged=False)
    repo.forge["files"][str(PR)] = [f"{STACK}/main.hcl"]
    repo.save_forge()
    released = repo.script("release_holds", "--hold", HOLD)
    assert released.code == 0, released
    assert "released" in released.stderr

    repo.set_event(43)
    assert repo.plan("--hold", other_hold).code == 0
    assert "The plan failed" not in repo.comments(43)[0]["body"]


def test_apply_of_a_held_plan_releases_the_hold(repo, tmp_path):
    planned = repo.plan("--hold", HOLD)
    assert planned.code == 0, planned
    downloaded = download(planned, tmp_path / "downloaded")
    repo.set_event(PR, merged=True)
    step = repo.script("apply_merged", "apply", "--plans-dir", downloaded)
    assert step.code == 0, step
    repo.set_event(43)
    assert repo.plan("--hold", f"github:{REPO}#43").code == 0


def test_stale_apply_releases_the_merged_pull_requests_hold(repo, tmp_path):
    planned = repo.plan("--hold", HOLD)
    assert planned.code == 0, planned
    downloaded = download(planned, tmp_path / "downloaded")
    # the spec moves on main after the review (another merge that touched it)
    repo.edit("replicas = 1", "replicas = 4")
    step = repo.script("apply_merged", "apply", "--plans-dir", downloaded)
    assert step.code == 1, step
    assert "re-plan" in step.stdout
    [comment] = [c for c in repo.comments() if marker(kind="apply") in c["body"]]
    assert f"The hold `{HOLD}` was released." in comment["body"]
    repo.set_event(43)
    assert repo.plan("--hold", f"github:{REPO}#43").code == 0


# --- the action's plumbing -------------------------------------------------------------------

def test_action_uploads_what_the_plan_step_wrote():
    """The upload and download steps use the paths and names the scripts write."""
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    steps = {s.get("id"): s for s in action["runs"]["steps"] if s.get("id")}
    upload = steps["upload-plan"]
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["with"]["path"] == "${{ steps.plan.outputs.plan-dir }}"
    assert upload["with"]["name"] == "${{ steps.plan.outputs.artifact-name }}"
    assert "plan_comment.py" in steps["plan"]["run"]
    download_step = steps["download-plans"]
    assert download_step["uses"].startswith("actions/download-artifact@")
    assert download_step["with"]["run-id"] == "${{ steps.find-run.outputs.run-id }}"
    assert download_step["with"]["pattern"] == "${{ inputs.artifact-prefix }}-*"
    assert "apply_merged.py" in steps["apply"]["run"]
    assert download_step["with"]["path"] in steps["apply"]["run"] \
        or "steps.download-plans" in steps["apply"]["run"] \
        or "MLFORM_PLANS" in str(steps["apply"].get("env", ""))
