"""Golden plans: fixture directories with an expected JSON plan each (Terraform's testdata style).

Each directory under ``tests/golden/cases/`` is one case:

``main.hcl`` (and/or ``*.mlform.yaml``/``*.mlform.json``, ``modules/``, ``environments/``, data files,
entrypoints)
    the spec to plan.
``prior/`` (optional)
    an earlier version of the spec.  It is applied first (``mlform apply --auto-approve``,
    or the ``setup`` commands of ``args.json``), then every spec file is swapped for the
    case's own, keeping ``.mlform/`` (state and memory store).
``mutate.json`` (optional)
    out-of-band edits made after the swap, a list of
    ``{"op": "store_set", "address": A, "path": [...], "value": V}`` (edit the memory
    store's object for A: drift), ``{"op": "store_delete", "address": A}`` (deleted outside
    mlform) and ``{"op": "state_set", "address": A, "path": [...], "value": V}`` (edit the
    state, e.g. ``"path": ["status"], "value": "tainted"``).  ``store``/``state`` name the
    file when it is not the default one.
``args.json`` (optional)
    ``{"args": [...plan flags...], "exit_code": 0, "setup": [{"args": [...], "exit_code": 0}],
    "forbid": [...]}``: ``setup`` replaces the default prior apply, ``forbid`` lists strings
    (secrets) that must not appear anywhere in the plan's output.
``expected.json``
    the ``mlform plan --format json`` document, normalized (see `normalize`).

Shared fixture files live in ``tests/golden/shared/``: the common training entrypoint
``train.py`` and dataset ``data/train.csv``.  Each is copied into every case's stack, and
into its ``prior/`` stack, unless that spec has its own file at the same path, which wins
(the lineage cases change one of them between ``prior/`` and the case on purpose).  Plans
hold digests of these files, so edit them only together with every ``expected.json``;
a case that needs different content keeps its own copy.

Run with ``MLFORM_UPDATE_GOLDEN=1`` to rewrite the expected files; read every rewritten file
before committing it.  The cases run in-process through typer's CliRunner (fast), each in its
own temporary stack directory named ``stack`` (so memory URIs and ids are stable).
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import traceback
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlform import __version__
from mlform.cli import app

CASES_DIR = Path(__file__).parent / "golden" / "cases"
SHARED_DIR = Path(__file__).parent / "golden" / "shared"
CASE_META = {"prior", "expected.json", "args.json", "mutate.json", "README.md"}
KEEP_IN_STACK = {".mlform"}
UPDATE = bool(os.environ.get("MLFORM_UPDATE_GOLDEN"))
DEFAULT_STORE = ".mlform/memory.json"
DEFAULT_STATE = ".mlform/state/default.json"

CASES = sorted(p.name for p in CASES_DIR.iterdir() if p.is_dir()) if CASES_DIR.is_dir() else []


# ------------------------------------------------------------------ the CLI, in-process


def run_cli(stack: Path, args: list[str]) -> tuple[int, str, str, str]:
    """Run `mlform -C STACK ARGS...` in-process; returns (exit code, stdout, stderr, traceback)."""
    cwd = os.getcwd()
    try:
        result = CliRunner(env={"NO_COLOR": "1", "MLFORM_DEBUG": None, "COLUMNS": "200"}).invoke(
            app, ["-C", str(stack), *args], catch_exceptions=True)
    finally:
        os.chdir(cwd)  # -C changes the working directory of this process
    tb = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        tb = "".join(traceback.format_exception(result.exception))
    return result.exit_code, result.stdout, result.stderr, tb


# ------------------------------------------------------------------ preparing a stack


def copy_spec(src: Path, dst: Path) -> None:
    """Copy a spec (files and dirs) from `src` into `dst`, leaving out the case's own metadata.

    `copyfile`, not `copy2`: a swapped-in file gets a fresh mtime, as an edit would.
    """
    dst.mkdir(parents=True, exist_ok=True)
    for item in sorted(src.iterdir()):
        if item.name in CASE_META:
            continue
        if item.is_dir():
            shutil.copytree(item, dst / item.name, copy_function=shutil.copyfile)
        else:
            shutil.copyfile(item, dst / item.name)


def add_shared(stack: Path) -> None:
    """Copy each file of ``tests/golden/shared/`` into `stack` where the spec has none there."""
    for item in sorted(SHARED_DIR.rglob("*")):
        target = stack / item.relative_to(SHARED_DIR)
        if item.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item, target)


def clear_spec(stack: Path) -> None:
    """Remove the spec files from `stack`, keeping the state and the memory store."""
    for item in stack.iterdir():
        if item.name in KEEP_IN_STACK:
            continue
        shutil.rmtree(item) if item.is_dir() else item.unlink()


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _dump(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def _set_path(obj: dict, path: list, value) -> None:
    for part in path[:-1]:
        obj = obj[part]
    obj[path[-1]] = value


def _store_id(store: dict, address: str) -> str:
    ids = [i for i, o in store["objects"].items() if o.get("address") == address]
    assert len(ids) == 1, f"mutate.json: {len(ids)} memory objects have address {address!r}"
    return ids[0]


def _state_resource(state: dict, address: str) -> dict:
    found = [r for r in state["resources"] if r["address"] == address]
    assert found, f"mutate.json: no resource {address!r} in the state"
    return found[0]


def mutate(stack: Path, ops: list[dict]) -> None:
    for op in ops:
        kind = op["op"]
        if kind in ("store_set", "store_delete"):
            path = stack / op.get("store", DEFAULT_STORE)
            store = _load(path)
            oid = _store_id(store, op["address"])
            if kind == "store_delete":
                del store["objects"][oid]
            else:
                _set_path(store["objects"][oid], op["path"], op["value"])
            _dump(path, store)
        elif kind == "state_set":
            path = stack / op.get("state", DEFAULT_STATE)
            state = _load(path)
            _set_path(_state_resource(state, op["address"]), op["path"], op["value"])
            _dump(path, state)
        else:
            raise AssertionError(f"mutate.json: unknown op {kind!r}")


# ------------------------------------------------------------------ normalizing


def normalize(doc, stack: Path):
    """Replace what varies between runs: the temporary stack path and the mlform version."""
    text = json.dumps(doc, sort_keys=True)
    for p in sorted({str(stack.resolve()), str(stack)}, key=len, reverse=True):
        text = text.replace(json.dumps(p)[1:-1], "$STACK")
    out = json.loads(text)
    if isinstance(out, dict) and "mlform_version" in out:
        out["mlform_version"] = "$VERSION"
    return out


def render(doc) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------ the runner


def _setup_commands(case: Path, spec: dict) -> list[dict]:
    setup = spec.get("setup")
    if setup is None:
        return [{"args": ["apply", "--auto-approve"]}] if (case / "prior").is_dir() else []
    return [s if isinstance(s, dict) else {"args": s} for s in setup]


def _fail_cli(what: str, code: int, want: int, out: str, err: str, tb: str) -> None:
    pytest.fail(f"{what}: exit {code}, expected {want}\n--- stdout\n{out[-4000:]}\n"
                f"--- stderr\n{err[-4000:]}\n{tb}", pytrace=False)


@pytest.mark.parametrize("case_name", CASES)
def test_golden(case_name: str, tmp_path: Path) -> None:
    case = CASES_DIR / case_name
    spec = _load(case / "args.json") if (case / "args.json").exists() else {}
    stack = tmp_path / "stack"
    stack.mkdir()

    if (case / "prior").is_dir():
        copy_spec(case / "prior", stack)
        add_shared(stack)
    for step in _setup_commands(case, spec):
        want = step.get("exit_code", 0)
        code, out, err, tb = run_cli(stack, step["args"])
        if code != want:
            _fail_cli(f"setup `mlform {' '.join(step['args'])}`", code, want, out, err, tb)
    clear_spec(stack)
    copy_spec(case, stack)
    add_shared(stack)
    if (case / "mutate.json").exists():
        mutate(stack, _load(case / "mutate.json"))

    args = ["plan", "--format", "json", *spec.get("args", [])]
    code, out, err, tb = run_cli(stack, args)
    want = spec.get("exit_code", 0)
    if code != want:
        _fail_cli(f"`mlform {' '.join(args)}`", code, want, out, err, tb)
    for secret in spec.get("forbid", []):
        assert secret not in out + err, f"{secret!r} leaked into the plan's output"
    try:
        actual = normalize(json.loads(out), stack)
    except json.JSONDecodeError:
        pytest.fail(f"`mlform {' '.join(args)}` did not print one JSON document:\n{out[-4000:]}\n"
                    f"--- stderr\n{err[-4000:]}", pytrace=False)

    expected_path = case / "expected.json"
    if UPDATE:
        expected_path.write_text(render(actual), encoding="utf-8")
        return
    assert expected_path.exists(), f"{expected_path} is missing; run with MLFORM_UPDATE_GOLDEN=1"
    expected_text = expected_path.read_text(encoding="utf-8")
    actual_text = render(actual)
    if json.loads(expected_text) != actual:
        diff = "".join(difflib.unified_diff(
            render(json.loads(expected_text)).splitlines(keepends=True),
            actual_text.splitlines(keepends=True),
            fromfile=f"{case_name}/expected.json", tofile=f"{case_name} (actual plan)", n=4))
        pytest.fail(f"the plan of {case_name} differs from expected.json "
                    f"(MLFORM_UPDATE_GOLDEN=1 rewrites it):\n{diff}", pytrace=False)


def test_cases_exist() -> None:
    assert CASES, f"no golden cases under {CASES_DIR}"


def test_spec_formats_plan_alike() -> None:
    """The same stack written in HCL, YAML and JSON plans identically (each file is also
    checked against a real plan by `test_golden`)."""
    plans = {fmt: (CASES_DIR / f"spec_format_{fmt}" / "expected.json").read_text(encoding="utf-8")
             for fmt in ("hcl", "yaml", "json")}
    assert plans["yaml"] == plans["hcl"]
    assert plans["json"] == plans["hcl"]


def test_version_normalized() -> None:
    assert normalize({"mlform_version": __version__}, Path("/nonexistent")) == {"mlform_version": "$VERSION"}
