"""Layering (DESIGN.md section 1), enforced with import-linter.

The contracts live in pyproject.toml (`[tool.importlinter]`): specs import nothing of
mlform; the provider contract imports nothing of mlform; providers import the
contract, the kit and specs only; no provider imports another; the engine reaches
concrete providers only through the registry; the planner imports no I/O module;
the model server's modules (run by file path) import nothing of mlform but each other.

`mlform` is assembled from three folders (engine/, providers/, specs/) by
setuptools' package-dir, which import-linter (through grimp) cannot follow in an
editable install, so the test copies the sources into one `mlform` tree first and
lints that; the same copy with a forbidden import added must fail, naming the
contract it breaks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed")


def assemble(target: Path) -> Path:
    """engine/ as mlform/, providers/ as mlform/providers/, specs/ as mlform/specs/."""
    package = target / "mlform"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "engine", package, ignore=ignore)
    shutil.copytree(REPO / "providers", package / "providers", ignore=ignore)
    shutil.copytree(REPO / "specs", package / "specs", ignore=ignore)
    return target


def lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT), str(REPO / "pyproject.toml"), "--no-cache"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_the_layers_hold(tmp_path):
    found = lint(assemble(tmp_path))
    assert found.returncode == 0, found.stdout + found.stderr
    assert "0 broken" in found.stdout, found.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("providers/sagemaker/env.py", "import mlform.providers.local.gpus",
     "no provider imports another"),
    ("providers/local/datasets.py", "from mlform.plan import planner",
     "providers and the kit import the contract, the kit and specs only"),
    ("plan/planner.py", "from mlform import session",
     "the planner imports no I/O modules"),
    ("plan/evaluate.py", "import subprocess",
     "the planner imports no I/O modules"),
    ("specs/_kinds.py", "from mlform.expr import values",
     "specs import nothing of mlform"),
    ("providers/base.py", "import mlform.diagnostics",
     "the provider contract (providers/base.py) imports nothing of mlform"),
    ("operations.py", "import mlform.providers.memory",
     "the engine reaches concrete providers only through the registry"),
    ("providers/kit/serving_experiments.py", "from mlform.providers.kit import names",
     "the model server's modules import nothing of mlform but each other"),
    ("providers/kit/bandit.py", "import mlform.providers.base",
     "the model server's modules import nothing of mlform but each other"),
])
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, line, contract):
    tree = assemble(tmp_path)
    path = tree / "mlform" / module
    path.write_text(path.read_text() + f"\n{line}  # forbidden\n")
    found = lint(tree)
    assert found.returncode != 0, found.stdout
    broken = found.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, found.stdout


def test_every_engine_module_is_in_the_contracts():
    """A new top-level engine module must be listed, or the contracts would miss it."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"]
                    if c["name"] == "the engine reaches concrete providers only through the registry")
    listed = set(contract["source_modules"])
    modules = {f"mlform.{p.stem}" for p in (REPO / "engine").glob("*.py") if p.stem != "__init__"}
    modules |= {f"mlform.{p.name}" for p in (REPO / "engine").iterdir()
                if (p / "__init__.py").exists()}
    assert modules - listed == set(), "add these to every ENGINE list in pyproject.toml"
    providers = {f"mlform.providers.{p.name}" for p in (REPO / "providers").iterdir()
                 if (p / "__init__.py").exists() and p.name != "kit"}
    independent = next(c for c in config["contracts"] if c["type"] == "independence")
    assert providers == set(independent["modules"]), "list every provider package"
