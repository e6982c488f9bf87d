"""`pip install ".[sagemaker]"` alone is enough for the sagemaker provider.

A clean install without the `local` extra has none of what only that extra brings:
torch, numpy, fastapi (and starlette), uvicorn[standard] (uvloop, httptools, ...),
orjson, nvidia-ml-py, and what those depend on.  This runs the CLI in a fresh process
where those imports fail (as they would there: `sys.modules[name] = None` makes
`import name` raise ImportError) and checks that `mlform providers` lists every provider
and that a sagemaker plan of the quickstart works against the emulator.  The kit imports
numpy only where statistics are computed, and no provider imports another, so nothing on
this path needs them.

The blocked set is worked out from pyproject.toml and the installed packages' metadata
(`local_only`): every distribution the `local` extra pulls in, that neither mlform's own
dependencies nor the `sagemaker` extra pull in (pyarrow is in both extras, so it stays),
by the names it is imported as.  A package added to the `local` extra is blocked here
without anyone remembering to list it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from e2e.harness import cli_env

from .test_quickstart_e2e import ENV, _vars, stack  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[2]

#: blocked even where the metadata cannot tell (the package is not installed here):
#: the `local` extra's own packages by import name, and scipy, which it never needed
ALWAYS_BLOCKED = frozenset({"numpy", "torch", "fastapi", "starlette", "uvicorn", "uvloop",
                            "httptools", "orjson", "pynvml", "scipy"})


def _closure(requirements: list[str]) -> set[str]:
    """The distributions `requirements` install, transitively, by canonical name (only
    as far as the installed metadata tells: an absent package ends its branch)."""
    found: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        found.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": extra})
                                         for extra in {"", *req.extras}):
                todo.append(sub)
    return found


def local_only() -> frozenset[str]:
    """Import names of what the `local` extra installs and the core or `sagemaker` does not."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    kept = _closure(project["dependencies"] + extras["sagemaker"])
    dropped = _closure(extras["local"]) - kept
    imports: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            imports.setdefault(canonicalize_name(dist), set()).add(module)
    # a module some kept distribution also provides (a shared namespace) is not blocked
    kept_modules = {m for dist in kept for m in imports.get(dist, ())}
    computed = {m for dist in dropped for m in imports.get(dist, ())
                if m.isidentifier() and m not in kept_modules}
    return frozenset(computed | ALWAYS_BLOCKED)


#: what the `local` extra brings and `sagemaker` does not
LOCAL_ONLY = tuple(sorted(local_only()))

LAUNCHER = f"""
import sys
for name in {LOCAL_ONLY!r}:
    if name not in sys.modules:       # (not what the interpreter's start-up imported)
        sys.modules[name] = None      # `import name` now raises ImportError
from mlform.cli import main
sys.argv = ["mlform"] + sys.argv[1:]
main()
"""


def run(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LAUNCHER, *map(str, args)],
                          env=cli_env(env), input="", capture_output=True, text=True,
                          timeout=300)


def test_the_blocked_set_is_what_only_the_local_extra_brings():
    blocked = set(LOCAL_ONLY)
    assert blocked >= ALWAYS_BLOCKED
    # shared with the core or the sagemaker extra: must stay importable
    assert blocked.isdisjoint({"pyarrow", "boto3", "botocore", "s3transfer", "yaml",
                               "pydantic", "typer", "jinja2", "prometheus_client"})


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
