"""Mistakes in an endpoint's variants and experiment, on the `local` provider, through
the CLI (`python -m mlform.cli`, a fresh process each run).

Each row of MISTAKES breaks the applied stack in one way and runs `validate`, `plan` and
`apply` on it: each must exit 1 with the pinned diagnostic (summary, `FILE:LINE:COL`,
hint) and no traceback, the state must stay byte for byte as it was, and the endpoint,
applied once for the whole table, must keep serving from the same process.

A hook module that fails to import passes every check before apply (it is the user's
code): the apply fails with a diagnostic carrying the hook's error, the server's log
holds the hook's traceback, and the version applied before keeps serving, in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from local._cli import REPO, alive, mlform, resource, stack_processes, state, teardown

pytest.importorskip("torch")
pytest.importorskip("fastapi")

from local.test_endpoints import oip, save_mlp  # noqa: E402  (needs torch)
from local.test_experiments_e2e import MODELS, ab_endpoint  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
              pytest.mark.timeout(300)]

ADDRESS = "endpoint.fraud"

GOOD = MODELS + ab_endpoint(50, 50)
# the endpoint block starts on line 13, `variants` on 14, `experiment` on 18

SCHEMA_HINT = "See `mlform schema endpoint`"


@dataclass(frozen=True)
class Mistake:
    id: str
    summary: str                      # the text after "error: "
    at: str                           # "FILE:LINE:COL"
    hint: str                         # a substring of the hint line
    replace: tuple[tuple[str, str], ...]
    commands: tuple[str, ...] = ("validate", "plan", "apply")


MISTAKES = [
    Mistake("weights-do-not-sum-to-100",
            "Invalid endpoint endpoint.fraud: the live variants' weights sum to 90, not 100 "
            "(a = 60, b = 30)", "main.hcl:13:1", SCHEMA_HINT,
            (("model.m1, weight = 50", "model.m1, weight = 60"),
             ("model.m2, weight = 50", "model.m2, weight = 30"))),
    Mistake("variant-names-an-unknown-model",
            'Reference to undeclared resource "model.nope"', "main.hcl:16:19",
            'Did you mean "model.m2"?', (("model = model.m2", "model = model.nope"),)),
    Mistake("shadow-share-above-100",
            'Invalid endpoint endpoint.fraud: attribute "experiment.shadow_percent": must be '
            "at most 100, got 120", "main.hcl:18:3", SCHEMA_HINT,
            (("weight = 50 }\n    b", "weight = 100 }\n    b"),
             ("model.m2, weight = 50", "model.m2, weight = 0"),
             ('{ type = "ab", sticky_key = "header:x-user" }',
              '{ type = "shadow", shadow = "b", shadow_percent = 120 }'))),
    Mistake("bandit-without-capture",
            'Invalid endpoint endpoint.fraud: a bandit needs "capture": its rewards are matched '
            "to the captured requests, and its state is rebuilt from them after a restart",
            "main.hcl:13:1", SCHEMA_HINT,
            (('{ type = "ab", sticky_key = "header:x-user" }', '{ type = "bandit" }'),
             ("  capture    = { sample_percent = 100 }\n", ""))),
    Mistake("sticky-key-from-a-cookie",
            'Invalid endpoint endpoint.fraud: attribute "experiment.sticky_key": sticky_key is '
            '"header:NAME" or "input:NAME", got "cookie:x"', "main.hcl:18:3", SCHEMA_HINT,
            (('"header:x-user"', '"cookie:x"'),)),
    Mistake("hooks-file-missing",
            "endpoint.fraud: the hooks file missing.py does not exist", "main.hcl:13:1",
            "settings.hooks is a .py file relative to the stack directory",
            (("  capture    = { sample_percent = 100 }\n",
              '  capture    = { sample_percent = 100 }\n  settings {\n    hooks = "missing.py"\n'
              "  }\n"),),
            commands=("plan", "apply")),    # whether a file exists is the provider's check
]


def broken(mistake: Mistake) -> str:
    text = GOOD
    for old, new in mistake.replace:
        assert old in text, old
        text = text.replace(old, new)
    return text


def answers(url: str) -> int:
    return httpx.post(f"{url}/infer", json=oip([[1.0, 2.0, 3.0, 4.0]]), timeout=30,
                      trust_env=False).status_code


def state_bytes(stack: Path) -> dict[str, bytes]:
    return {str(p.relative_to(stack)): p.read_bytes()
            for p in sorted((stack / ".mlform" / "state").rglob("*")) if p.is_file()}


def applied_stack(root: Path) -> Path:
    stack = root / "stack"
    stack.mkdir()
    save_mlp(stack / "runs" / "m1", seed=1)
    save_mlp(stack / "runs" / "m2", seed=2)
    (stack / "main.hcl").write_text(GOOD)
    run = mlform(stack, "apply", "--auto-approve")
    assert run.code == 0, run
    return stack


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One applied stack for the whole table: (stack, url, pid)."""
    stack = applied_stack(tmp_path_factory.mktemp("mistakes"))
    try:
        yield stack, resource(stack, ADDRESS)["url"], resource(stack, ADDRESS)["pid"]
    finally:
        (stack / "main.hcl").write_text(GOOD)
        left = teardown(stack)
    assert not left, f"still running after destroy: {left}"


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.id)
def test_located_diagnostic_and_no_harm(served, mistake):
    stack, url, pid = served
    before = state_bytes(stack)
    (stack / "main.hcl").write_text(broken(mistake))
    try:
        for command in mistake.commands:
            run = mlform(stack, command, *(["--auto-approve"] if command == "apply" else []))
            assert run.code == 1, run
            assert "Traceback" not in run.output, run
            assert run.output.count("error: ") == 1, run
            assert f"error: {mistake.summary}\n" in run.output, run
            assert f"  at {mistake.at}\n" in run.output, run
            assert "hint: " in run.output and mistake.hint in run.output, run
    finally:
        (stack / "main.hcl").write_text(GOOD)
    assert state_bytes(stack) == before
    assert resource(stack, ADDRESS)["pid"] == pid and alive(pid)
    assert answers(url) == 200


# ------------------------------------------------------------------ a hook that fails

HOOKED = GOOD.replace("  capture    = { sample_percent = 100 }\n",
                      '  capture    = { sample_percent = 100 }\n  settings {\n'
                      '    hooks = "hooks.py"\n  }\n')

BROKEN_HOOK = 'import json\n\nraise RuntimeError("hook exploded at import")\n'

GOOD_HOOK = '''\
"""Marks each answer, so a test can see the hook ran."""


def postprocess(doc, result):
    result["parameters"] = {"hooked": True}
    return result
'''


@pytest.fixture
def stack(tmp_path):
    path = applied_stack(tmp_path)
    yield path
    left = teardown(path)
    assert not left, f"still running after destroy: {left}"


def test_hook_that_fails_to_import_leaves_the_applied_version_serving(stack):
    url, pid = resource(stack, ADDRESS)["url"], resource(stack, ADDRESS)["pid"]
    log = next((stack / ".mlform" / "local" / "default" / "endpoints").glob("*/server.log"))
    (stack / "hooks.py").write_text(BROKEN_HOOK)
    (stack / "main.hcl").write_text(HOOKED)
    assert mlform(stack, "validate").code == 0        # the user's code runs in the server only
    before = state(stack)["resources"]

    run = mlform(stack, "apply", "--auto-approve")
    assert run.code == 1, run
    assert f'File "{REPO}' not in run.output, run       # no frame of mlform's own
    assert run.output.count("error: ") == 1, run
    assert "error: endpoint.fraud: update failed" in run.output, run
    assert "hooks.py" in run.output and "RuntimeError: hook exploded at import" in run.output
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "hook exploded at import" in text
    assert f'File "{stack / "hooks.py"}", line 3' in text

    # the version applied before still serves, from the same process; the state's
    # resources are as they were (the failed apply is in the audit log only)
    assert state(stack)["resources"] == before
    assert resource(stack, ADDRESS)["pid"] == pid and alive(pid)
    assert {answers(url) for _ in range(10)} == {200}
    status = httpx.get(f"{url.split('/v2/')[0]}/v2/admin/status", trust_env=False).json()
    assert status["pid"] == pid and status["hooks"] is None
    assert {v["name"]: v["weight"] for v in status["variants"]} == {"a": 50, "b": 50}

    # fixed, the hook is loaded by a reload of the same process
    (stack / "hooks.py").write_text(GOOD_HOOK)
    fixed = mlform(stack, "apply", "--auto-approve")
    assert fixed.code == 0, fixed
    assert resource(stack, ADDRESS)["pid"] == pid
    answer = httpx.post(f"{url}/infer", json=oip([[1.0, 2.0, 3.0, 4.0]]), trust_env=False)
    assert answer.status_code == 200 and answer.json()["parameters"] == {"hooked": True}
    assert len(stack_processes(stack)) == 1
    assert mlform(stack, "plan", "--detailed-exitcode").code == 0

    # the failed apply's diagnostic is located at the endpoint, with a hint, as any other
    assert "  at main.hcl:13:1\n" in run.output, run
    assert "hint: " in run.output, run
