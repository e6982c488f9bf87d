"""The `tracking` settings without a server: mistakes are located diagnostics with a
hint (HCL block, provider argument, YAML), a provider's setting overrides the stack's,
the experiment defaults to the stack's name, and a stack without tracking (or a plan of
one with it) never imports MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlform.config.model import MlflowTarget
from mlform.session import Session
from mlform.tracking import targets

from .test_mlflow import mlform

MEMORY = '''
provider "memory" {}

dataset "d" {
  source = "memory://d"
}
'''


def stack_with(directory: Path, text: str, name: str = "main.hcl") -> Path:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(text)
    return directory


@pytest.mark.parametrize("text, expected", [
    ('tracking {\n  mlflow {\n    url = "http://127.0.0.1:5000"\n  }\n}\n',
     ['error: Unsupported argument "url" in tracking mlflow\n  at main.hcl:3:5\n'
      '  hint: Did you mean "uri"?',
      "error: tracking: mlflow needs a uri\n  at main.hcl:2:3"]),
    ('tracking {\n  mlfow {\n    uri = "http://127.0.0.1:5000"\n  }\n}\n',
     ['error: Unsupported tracking system "mlfow" in tracking\n  at main.hcl:2:3\n'
      '  hint: Did you mean "mlflow"?']),
    ('tracking {\n  mlflow {\n    uri = 5\n  }\n}\n',
     ["error: tracking: mlflow's uri must be a URI\n  at main.hcl:3:5"]),
    ('tracking {\n  mlflow {\n    uri = "http://x"\n    experiment = ""\n  }\n}\n',
     ["error: tracking: mlflow's experiment must be a name\n  at main.hcl:4:5"]),
    ('tracking "x" {\n}\n', ['error: A "tracking" block takes no labels\n  at main.hcl:1:1']),
    ('tracking {\n  mlflow { uri = "http://a" }\n}\ntracking {\n  mlflow { uri = "http://b" }\n}\n',
     ["error: Duplicate tracking block\n  at main.hcl:4:1"]),
    ('provider "memory" {\n  tracking = { mlflow = { uri = "http://a", experimnt = "x" } }\n}\n',
     ['error: Unsupported argument "experimnt" in provider "memory" mlflow\n  at main.hcl:2:3\n'
      '  hint: Did you mean "experiment"?']),
])
def test_a_mistake_is_a_located_diagnostic(tmp_path, text, expected):
    # the provider's own block stands in for the plain one
    rest = MEMORY.replace('provider "memory" {}\n', "") if text.startswith("provider") else MEMORY
    stack = stack_with(tmp_path, text + rest)
    run = mlform(stack, "validate")
    assert run.code == 1, run
    for message in expected:
        assert message in run.output, run
    assert "Traceback" not in run.output


def test_the_yaml_form_is_checked_too(tmp_path):
    stack = stack_with(tmp_path, "tracking:\n  mlflow:\n    uri: 7\n", "main.mlform.yaml")
    stack_with(tmp_path, MEMORY)
    run = mlform(stack, "validate")
    assert run.code == 1, run
    assert "error: tracking: mlflow's uri must be a URI\n  at main.mlform.yaml:1:1" in run.output


def test_a_provider_setting_overrides_the_stacks(tmp_path):
    stack = stack_with(tmp_path / "shop", '''
tracking {
  mlflow {
    uri = "http://stack:5000/"
  }
}

provider "memory" {}

provider "memory" {
  alias    = "b"
  tracking = { mlflow = { uri = "http://b:5000", experiment = "${var.team}-runs" } }
}

variable "team" {
  default = "growth"
}

dataset "d" {
  source = "memory://d"
}

dataset "e" {
  provider = memory.b
  source   = "memory://e"
}
''')
    session = Session(stack)
    try:
        found, diags = targets(session)
    finally:
        session.close()
    assert diags == []
    assert {key: (t.uri, t.experiment) for key, t in found.items()} == {
        "memory": ("http://stack:5000", "shop"),        # the stack's name by default
        "memory.b": ("http://b:5000", "growth-runs"),
    }
    assert all(isinstance(t, MlflowTarget) and t.source for t in found.values())


def test_a_modules_tracking_block_is_ignored_with_a_warning(tmp_path):
    stack = stack_with(tmp_path / "stack", 'module "m" {\n  source = "../mod"\n}\n' + MEMORY)
    stack_with(tmp_path / "mod", 'tracking {\n  mlflow { uri = "http://127.0.0.1:9" }\n}\n')
    session = Session(stack)
    try:
        found, diags = targets(session)
    finally:
        session.close()
    assert found == {}
    [diag] = diags
    assert (diag.severity, diag.summary) == ("warning", "module m: its tracking block is ignored")
    assert str(diag.source).endswith("mod/main.hcl:1:1")


def _imports_mlflow(stack: Path, *args: str) -> tuple[int, str]:
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('MLFLOW' if 'mlflow' in sys.modules else 'NO-MLFLOW'))\n"
            "from mlform.cli.app import main\n"
            f"sys.argv = ['mlform', '-C', {str(stack)!r}, *{list(args)!r}]\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, input="")
    return proc.returncode, proc.stdout + proc.stderr


def test_mlflow_is_imported_only_when_tracking_logs(tmp_path):
    plain = stack_with(tmp_path / "plain", MEMORY)
    code, output = _imports_mlflow(plain, "apply", "--auto-approve")
    assert code == 0 and output.rstrip().endswith("NO-MLFLOW"), output
    tracked = stack_with(tmp_path / "tracked",
                         'tracking {\n  mlflow { uri = "http://127.0.0.1:9" }\n}\n' + MEMORY)
    code, output = _imports_mlflow(tracked, "plan")
    assert code == 0 and output.rstrip().endswith("NO-MLFLOW"), output
