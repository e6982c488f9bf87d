"""The checkout the GitOps script tests run in: a repository with a memory-provider stack,
a recording fake `gh` first on PATH (fake_gh.py), the GitHub Actions environment, and a
way to run the scripts as workflow steps do (subprocesses, real mlform CLI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from e2e.harness import make_stack, memory_provider, run_mlform

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "gitops" / "scripts"
REPO = "acme/ml-platform"
PR = 42
STACK = "stacks/app"
HOLD = f"github:{REPO}#{PR}"

MAIN_HCL = memory_provider() + """
model "clf" {
  artifact  = "s3://models/clf"
  framework = "torch"
}

endpoint "clf" {
  model    = model.clf
  replicas = 1
}
"""
ENVIRONMENT = 'default_provider = "memory"\n'


@dataclass
class Step:
    """A finished script run, with the step outputs it wrote to $GITHUB_OUTPUT."""

    args: tuple
    code: int
    stdout: str
    stderr: str
    outputs: dict

    def __str__(self) -> str:
        return (f"{' '.join(map(str, self.args))} -> exit {self.code}\n--- stdout ---\n"
                f"{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}\n"
                f"--- outputs ---\n{self.outputs}")


def parse_outputs(text: str) -> dict:
    """$GITHUB_OUTPUT's `key=value` and `key<<EOF ... EOF` entries."""
    out, lines = {}, iter(text.splitlines())
    for line in lines:
        if "<<" in line and "=" not in line.split("<<")[0]:
            key, end = line.split("<<", 1)
            value = []
            for inner in lines:
                if inner == end:
                    break
                value.append(inner)
            out[key] = "\n".join(value)
        elif "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


class Checkout:
    """A repository checkout on a runner, with a fake `gh` holding the forge's side."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "repo"
        self.stack = make_stack(self.root / "stacks", MAIN_HCL, name="app",
                                files={"environments/staging.hcl": ENVIRONMENT})
        self.temp = tmp / "runner-temp"
        self.temp.mkdir()
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        gh = bin_dir / "gh"
        gh.write_text(f"#!{sys.executable}\n" + (Path(__file__).parent / "fake_gh.py")
                      .read_text())
        gh.chmod(0o755)
        self.state_file = tmp / "gh-state.json"
        self.calls_file = tmp / "gh-calls.jsonl"
        self.forge = {"repo": REPO, "comments": {}, "files": {}, "runs": {}}
        self.save_forge()
        self.event = tmp / "event.json"
        self.set_event(PR)
        self.env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_GH_STATE": str(self.state_file), "FAKE_GH_CALLS": str(self.calls_file),
            "GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": REPO,
            "GITHUB_SERVER_URL": "https://github.com", "GITHUB_RUN_ID": "7001",
            "GITHUB_SHA": "0123456789abcdef0123", "GITHUB_EVENT_PATH": str(self.event),
            "RUNNER_TEMP": str(self.temp),
            "MLFORM_COMMAND": f"{sys.executable} -m mlform.cli",
            "NO_COLOR": "1", "COLUMNS": "200",
        }
        self.output_file = tmp / "github-output"
        self.summary_file = tmp / "step-summary.md"

    # --- the forge's side ----------------------------------------------------------------
    def save_forge(self) -> None:
        self.state_file.write_text(json.dumps(self.forge))

    def load_forge(self) -> dict:
        self.forge = json.loads(self.state_file.read_text())
        return self.forge

    def set_event(self, pr: int, **extra) -> None:
        self.event.write_text(json.dumps({"pull_request": {"number": pr, **extra}}))

    def comments(self, pr: int = PR) -> list[dict]:
        return self.load_forge()["comments"].get(str(pr), [])

    def calls(self) -> list[dict]:
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines()]

    # --- running things ------------------------------------------------------------------
    def script(self, name: str, *args, env: dict | None = None) -> Step:
        """Run gitops/scripts/NAME.py in the checkout, as a workflow step does."""
        self.output_file.write_text("")
        run_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFORM_", "GITHUB_"))}
        run_env.update(self.env, GITHUB_OUTPUT=str(self.output_file),
                       GITHUB_STEP_SUMMARY=str(self.summary_file), **(env or {}))
        proc = subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), *map(str, args)],
                              cwd=self.root, env=run_env, capture_output=True, text=True,
                              timeout=240)
        return Step((name, *args), proc.returncode, proc.stdout, proc.stderr,
                    parse_outputs(self.output_file.read_text()))

    def plan(self, *extra, env: str = "staging") -> Step:
        return self.script("plan_comment", "--stack", STACK, "--env", env, *extra)

    def mlform(self, *args):
        return run_mlform(*args, cwd=self.root)

    def edit(self, old: str, new: str) -> None:
        main = self.stack / "main.hcl"
        text = main.read_text()
        assert old in text
        main.write_text(text.replace(old, new))
