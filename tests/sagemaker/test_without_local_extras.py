"""`pip install ".[sagemaker]"` alone is enough for the sagemaker provider.

A clean install without the `local` extra has no numpy, torch, fastapi, uvicorn or
nvidia-ml-py.  This runs the CLI in a fresh process where those imports fail (as they
would there: `sys.modules[name] = None` makes `import name` raise ImportError) and checks
that `mlform providers` lists every provider and that a sagemaker plan of the quickstart
works against the emulator.  The kit imports numpy only where statistics are computed,
and no provider imports another, so nothing on this path needs them.
"""

from __future__ import annotations

import json
import subprocess
import sys

from e2e.harness import cli_env

from .test_quickstart_e2e import ENV, _vars, stack  # noqa: F401  (the fixture)

#: what the `local` extra brings and `sagemaker` does not
LOCAL_ONLY = ("numpy", "torch", "fastapi", "uvicorn", "pynvml", "starlette", "scipy")

LAUNCHER = f"""
import sys
for name in {LOCAL_ONLY!r}:
    sys.modules[name] = None          # `import name` now raises ImportError
from mlform.cli import main
sys.argv = ["mlform"] + sys.argv[1:]
main()
"""


def run(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LAUNCHER, *map(str, args)],
                          env=cli_env(env), input="", capture_output=True, text=True,
                          timeout=300)


def test_providers_lists_sagemaker_without_the_local_extras():
    found = run("providers")
    assert found.returncode == 0, found.stdout + found.stderr
    assert "sagemaker" in found.stdout and "INVALID" not in found.stdout, found.stdout


def test_a_sagemaker_plan_works_without_the_local_extras(stack, aws):  # noqa: F811
    found = run("-C", stack, "plan", "--env", ENV, "--format", "json", env=_vars(aws))
    assert found.returncode == 0, found.stdout + found.stderr
    plan = json.loads(found.stdout)
    kinds = {rc["kind"] for rc in plan["resource_changes"]}
    assert kinds == {"dataset", "training_cluster", "pipeline", "model", "endpoint", "monitor"}
    assert all(rc["change"]["actions"] == ["create"] for rc in plan["resource_changes"])
