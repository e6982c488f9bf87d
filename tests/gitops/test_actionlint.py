"""The shipped GitHub workflows and action pass actionlint; the action and the GitLab
template are well formed and call the scripts with flags the scripts know.

actionlint reads a composite action's metadata only through a workflow that uses it as a
local action (`uses: ./`) inside a git repository, so one test copies action.yml and the
workflows into such a repository, with `mlform/mlform@v1` turned into `./`: actionlint then
checks action.yml's `runs`, and every input the workflows pass against its `inputs`.
A control run proves the check can fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from _tools import tool

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "gitops" / "github" / "workflows").glob("*.yml"))
ACTION = ROOT / "action.yml"
GITLAB = ROOT / "gitops" / "gitlab" / "mlform.gitlab-ci.yml"
SCRIPTS = ROOT / "gitops" / "scripts"
USES = "mlform/mlform@v1"


def actionlint(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool("actionlint")), "-no-color", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_the_three_workflows_are_shipped():
    assert [w.name for w in WORKFLOWS] == ["mlform-apply.yml", "mlform-drift.yml",
                                           "mlform-plan.yml"]
    for workflow in WORKFLOWS:
        assert USES in workflow.read_text(), workflow


def test_shipped_workflows_pass_actionlint():
    result = actionlint(*WORKFLOWS, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def _local_action_repo(tmp_path: Path) -> Path:
    """A git repository holding action.yml at its root and the workflows using it as `./`."""
    repo = tmp_path / "repo"
    (repo / ".github" / "workflows").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    shutil.copy(ACTION, repo / "action.yml")
    for workflow in WORKFLOWS:
        (repo / ".github" / "workflows" / workflow.name).write_text(
            workflow.read_text().replace(USES, "./"))
    return repo


def test_the_action_passes_actionlint_through_the_workflows(tmp_path):
    repo = _local_action_repo(tmp_path)
    result = actionlint(cwd=repo)
    assert result.returncode == 0, result.stdout + result.stderr

    # control: a wrong input and a broken action are reported, so the run above checked
    drift = repo / ".github" / "workflows" / "mlform-drift.yml"
    drift.write_text(drift.read_text().replace("command: drift", "command: drift\n"
                                                                 "          stak: x"))
    action = repo / "action.yml"
    action.write_text(action.read_text().replace("using: composite", "using: compose"))
    result = actionlint(cwd=repo)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'input "stak" is not defined in action "mlform"' in result.stdout, result.stdout
    assert 'invalid runner name "compose"' in result.stdout, result.stdout


# --- action.yml's structure, which actionlint does not check in full -----------------------

def _action() -> dict:
    return yaml.safe_load(ACTION.read_text())


def _expressions(value) -> list[str]:
    text = yaml.safe_dump(value)
    return re.findall(r"\$\{\{(.*?)\}\}", text, re.S)


def test_action_metadata_is_complete():
    action = _action()
    assert action["name"] == "mlform" and action["description"]
    assert action["runs"]["using"] == "composite"
    for name, spec in action["inputs"].items():
        assert spec.get("description"), name
        assert "default" in spec or spec.get("required"), name
    assert action["inputs"]["command"]["required"] is True
    assert action["inputs"]["hold-id"]["default"] == \
        "github:${{ github.repository }}#${{ github.event.pull_request.number }}"
    for name, spec in action["outputs"].items():
        assert spec.get("description") and spec.get("value"), name
    for step in action["runs"]["steps"]:
        assert ("run" in step) != ("uses" in step), step
        if "run" in step:       # composite run steps must name their shell
            assert step.get("shell") == "bash", step
        else:
            assert re.fullmatch(r"actions/[a-z-]+@v\d+", step["uses"]), step


def test_action_references_only_declared_inputs_and_earlier_steps():
    action = _action()
    inputs = set(action["inputs"])
    seen: set[str] = set()
    for step in action["runs"]["steps"]:
        for expr in _expressions(step):
            for name in re.findall(r"inputs\.([A-Za-z0-9_-]+)", expr):
                assert name in inputs, (name, step.get("name"))
            for sid in re.findall(r"steps\.([A-Za-z0-9_-]+)\.outputs", expr):
                assert sid in seen, (sid, step.get("name"))
        if step.get("id"):
            seen.add(step["id"])
    for name, spec in action["outputs"].items():
        for sid in re.findall(r"steps\.([A-Za-z0-9_-]+)\.outputs", spec["value"]):
            assert sid in seen, (name, sid)
    for name, spec in action["inputs"].items():
        for expr in _expressions(spec.get("default", "")):
            assert re.fullmatch(r"\s*github\.[a-z_.]+\s*", expr), (name, expr)


def _script_calls(text: str) -> list[tuple[str, list[str]]]:
    """(script file, the --flags written after it) for each script a run block calls."""
    calls = []
    for m in re.finditer(r"gitops/scripts/([a-z_]+\.py)\"?((?:[^\n]|\\\n)*)", text):
        calls.append((m.group(1), re.findall(r"(?<![\w-])--[a-z][a-z-]*", m.group(2))))
    return calls


def _flags_of(script: str) -> set[str]:
    return set(re.findall(r'"(--[a-z][a-z-]*)"', (SCRIPTS / script).read_text()))


def test_action_calls_existing_scripts_with_known_flags():
    action = _action()
    called = set()
    for step in action["runs"]["steps"]:
        run = step.get("run", "")
        for script, flags in _script_calls(run):
            assert (SCRIPTS / script).is_file(), script
            called.add(script)
            # flags the run block adds through bash arrays count too
            flags += re.findall(r"(?<![\w-])--[a-z][a-z-]*", run)
            unknown = set(flags) - _flags_of(script)
            assert not unknown, (script, unknown)
    assert called == {"changed_stacks.py", "plan_comment.py", "apply_merged.py",
                      "release_holds.py", "drift_report.py"}


# --- the GitLab template ----------------------------------------------------------------

def test_gitlab_template_is_well_formed():
    doc = yaml.safe_load(GITLAB.read_text())
    jobs = {k: v for k, v in doc.items() if isinstance(v, dict) and "script" in v}
    assert set(doc["stages"]) >= {"plan", "apply", "drift"}
    assert {"mlform-plan", "mlform-apply", "mlform-drift"} <= set(jobs)
    for name, job in jobs.items():
        assert job.get("stage") in doc["stages"], name
        assert job.get("rules"), name
        script = "\n".join(job["script"])
        for file, flags in _script_calls(script):
            assert (SCRIPTS / file).is_file(), (name, file)
            unknown = set(flags) - _flags_of(file)
            assert not unknown, (name, file, unknown)
            assert "--forge gitlab" in script or file in ("drift_report.py",), (name, file)
    assert jobs["mlform-drift"]["artifacts"]["reports"]["junit"]
    assert jobs["mlform-drift"]["artifacts"]["when"] == "always"
    plan_paths = jobs["mlform-plan"]["artifacts"]["paths"]
    assert any("mlform-plans" in p for p in plan_paths)
    assert "merge_request_event" in str(jobs["mlform-plan"]["rules"])
    assert "schedule" in str(jobs["mlform-drift"]["rules"])


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.py")))
def test_scripts_use_only_the_standard_library(script):
    """The runner has Python, mlform and gh: nothing else may be imported."""
    import sys

    stdlib = set(sys.stdlib_module_names)
    local = {p.stem for p in SCRIPTS.glob("*.py")}
    for m in re.finditer(r"^(?:from|import) ([a-zA-Z_][\w]*)", (SCRIPTS / script).read_text(),
                         re.M):
        assert m.group(1) in stdlib | local | {"__future__"}, (script, m.group(1))


# --- what each example workflow wires up -------------------------------------------------

def _workflow(name: str) -> dict:
    doc = yaml.safe_load((ROOT / "gitops" / "github" / "workflows" / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))        # YAML 1.1 reads the key `on` as true
    return doc


def _action_steps(job: dict) -> list[dict]:
    return [s["with"] for s in job["steps"] if s.get("uses") == USES]


def test_plan_workflow_plans_each_changed_pair_with_the_needed_permissions():
    doc = _workflow("mlform-plan.yml")
    assert "pull_request" in doc["on"]
    assert doc["permissions"] == {"contents": "read", "pull-requests": "write"}
    changes, plan = doc["jobs"]["changes"], doc["jobs"]["plan"]
    assert _action_steps(changes) == [{"command": "changed-stacks"}]
    assert plan["needs"] == "changes" and plan["if"] == "needs.changes.outputs.any == 'true'"
    assert plan["strategy"]["matrix"] == "${{ fromJSON(needs.changes.outputs.matrix) }}"
    assert plan["strategy"]["fail-fast"] is False
    [with_] = _action_steps(plan)
    assert with_ == {"command": "plan", "stack": "${{ matrix.stack }}",
                     "env": "${{ matrix.env }}"}


def test_apply_workflow_applies_on_merge_and_releases_on_close():
    doc = _workflow("mlform-apply.yml")
    assert doc["on"] == {"pull_request": {"types": ["closed"], "branches": ["main"]}}
    assert doc["permissions"] == {"contents": "read", "pull-requests": "write",
                                  "actions": "read"}
    assert doc["concurrency"]["cancel-in-progress"] is False
    apply, release = doc["jobs"]["apply"], doc["jobs"]["release"]
    assert apply["if"] == "github.event.pull_request.merged == true"
    assert apply["steps"][0]["with"]["ref"] == \
        "${{ github.event.pull_request.merge_commit_sha }}"
    assert _action_steps(apply) == [{"command": "apply"}]
    assert release["if"] == "github.event.pull_request.merged == false"
    assert _action_steps(release) == [{"command": "release"}]


def test_drift_workflow_checks_every_pair_on_a_schedule():
    doc = _workflow("mlform-drift.yml")
    assert doc["on"]["schedule"] and "workflow_dispatch" in doc["on"]
    assert doc["permissions"] == {"contents": "read"}
    assert _action_steps(doc["jobs"]["stacks"]) == [{"command": "changed-stacks",
                                                     "all": "true"}]
    [with_] = _action_steps(doc["jobs"]["drift"])
    assert with_["command"] == "drift"
