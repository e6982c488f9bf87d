"""Common mistakes, each with the one diagnostic a user should see, and no harm done.

Every row of MISTAKES starts from the same applied stack (state and memory store
on disk), breaks it in one way, and runs `validate`, `plan` and `apply` on it.
Each run must exit 1 without a traceback and print exactly one diagnostic, with
the pinned summary, location (`FILE:LINE:COL`) and hint; afterwards every file
of the stack (spec, state, store) must be byte-for-byte as it was.

The CLI runs in-process (typer's CliRunner) so the table stays fast; the
process-level behaviour (real exit codes, stderr) is covered by the other e2e
tests, which start `python -m mlform.cli`.
"""

from __future__ import annotations

import os
import re
import shutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mlform.cli

MAIN = textwrap.dedent('''\
    provider "memory" {
      store = ".mlform/memory.json"
    }

    variable "epochs" {
      type    = number
      default = 3
    }

    locals {
      prefix = "demo"
    }

    dataset "train" {
      source = "data/train.csv"
      format = "csv"
    }

    pipeline "train" {
      inputs          = { train = dataset.train }
      entrypoint      = "train.py"
      hyperparameters = { epochs = var.epochs }
    }

    model "clf" {
      artifact = pipeline.train.model_uri
      stage    = "production"
    }

    endpoint "clf" {
      model    = model.clf
      replicas = 1
      tags     = { name = "${local.prefix}-clf" }
    }

    output "url" {
      value = endpoint.clf.url
    }
    ''')  # 38 lines: text appended by a case starts on line 40 (after a blank line)

MODULE = textwrap.dedent('''\
    variable "name" {
      type    = string
      default = "x"
    }

    output "id" {
      value = "m-${var.name}"
    }
    ''')

FILES = {
    "main.hcl": MAIN,
    "train.py": "print('training')\n",
    "data/train.csv": "a,b\n1,2\n3,4\n",
    "modules/tiny/main.hcl": MODULE,
}

CHECKS = ("validate", "plan", "apply")  # apply: --auto-approve is added


@dataclass(frozen=True)
class Mistake:
    id: str
    summary: str                 # the text after "error: ", exactly ({stack}: its directory)
    at: str | None               # "FILE:LINE:COL" exactly, or None when no file is involved
    hint: str                    # a substring of the hint line
    replace: tuple = ()          # (old, new) in main.hcl
    append: str = ""             # added to main.hcl after a blank line (starts on line 40)
    files: dict = field(default_factory=dict)  # path -> text, or None to delete it
    args: tuple = ()             # extra CLI arguments for plan/apply (and validate's --env)
    commands: tuple = CHECKS
    detail: tuple = ()           # substrings of the diagnostic's detail lines


MISTAKES = [
    # ---------------------------------------------------------------- syntax
    Mistake("hcl-missing-closing-brace",
            'Invalid HCL syntax: missing "}"', "main.hcl:14:17", 'Add "}" before line 19.',
            replace=('format = "csv"\n}', 'format = "csv"\n'),
            detail=('The "{" opened on line 14 is never closed.',)),
    Mistake("hcl-missing-equals-before-string",
            'Invalid HCL syntax: missing "=" after "format"', "main.hcl:16:3",
            'Write format = VALUE for an attribute',
            replace=('format = "csv"', 'format "csv"')),
    Mistake("hcl-missing-equals-before-number",
            'Invalid HCL syntax: missing "=" after "replicas"', "main.hcl:32:3",
            "Attributes are written replicas = VALUE.",
            replace=("replicas = 1", "replicas 1")),
    Mistake("hcl-unterminated-string",
            "Invalid HCL syntax: unterminated string", "main.hcl:27:14",
            'Close the string with " on the same line.',
            replace=('stage    = "production"', 'stage    = "production'),
            detail=('stage    = "production',)),
    Mistake("hcl-unterminated-interpolation",
            'Invalid HCL syntax: unterminated "${"', "main.hcl:33:24",
            'Close it with "}"',
            replace=('"${local.prefix}-clf"', '"${local.prefix-clf"')),
    Mistake("hcl-stray-closing-brace",
            'Invalid HCL syntax: unexpected "}"', "main.hcl:42:1", "closes nothing",
            append="locals {\n}\n}\n"),
    Mistake("yaml-syntax-error",
            "Invalid YAML syntax: expected ',' or ']', but got ':'", "extra.mlform.yaml:4:11",
            "Check indentation and quoting",
            files={"extra.mlform.yaml": "dataset:\n  other:\n    source: [a\n    format: csv\n"}),
    Mistake("json-syntax-error",
            "Invalid JSON syntax: Expecting property name enclosed in double quotes",
            "extra.mlform.json:1:38", "no trailing commas",
            files={"extra.mlform.json": '{"dataset": {"other": {"source": "a",}}}\n'}),
    Mistake("file-not-utf8",
            "Spec file is not valid UTF-8", "extra.hcl:2:6", "Save the file as UTF-8.",
            files={"extra.hcl": b'locals {\n  caf\xe9 = "x"\n}\n'}),
    # ---------------------------------------------------------------- blocks and attributes
    Mistake("unknown-block-type",
            'Unknown block type "datset"', "main.hcl:40:1", 'Did you mean "dataset"?',
            append='datset "x" {}\n'),
    Mistake("unknown-attribute",
            'Invalid endpoint endpoint.clf: unknown attribute "replcas"', "main.hcl:32:3",
            'Did you mean "replicas"?', replace=("replicas = 1", "replcas = 1")),
    Mistake("wrong-attribute-type",
            'Invalid endpoint endpoint.clf: attribute "replicas": expected an integer, '
            'got "abc"', "main.hcl:32:3", "mlform schema endpoint",
            replace=("replicas = 1", 'replicas = "abc"')),
    Mistake("missing-required-attribute",
            'Invalid pipeline pipeline.train: attribute "entrypoint" is required',
            "main.hcl:19:1", "See `mlform schema pipeline`",
            replace=('  entrypoint      = "train.py"\n', "")),
    Mistake("duplicate-resource",
            'Duplicate resource "dataset.train"', "main.hcl:40:1",
            "Names must be unique within a module",
            append='dataset "train" {\n  source = "data/train.csv"\n}\n',
            detail=("It was already declared at main.hcl:14:1.",)),
    Mistake("lifecycle-written-as-attribute",
            "lifecycle is a block", "main.hcl:33:3", "without '='",
            replace=("  tags     = {", "  lifecycle = { prevent_destroy = true }\n  tags     = {")),
    Mistake("provider-unknown-argument",
            'Unsupported argument "stor" in provider "memory"', "main.hcl:3:3",
            'Did you mean "store"?',
            replace=('store = ".mlform/memory.json"\n',
                     'store = ".mlform/memory.json"\n  stor = "x"\n')),
    # ---------------------------------------------------------------- references
    Mistake("undeclared-resource",
            'Reference to undeclared resource "model.clff"', "main.hcl:31:14",
            'Did you mean "model.clf"?', replace=("model    = model.clf", "model    = model.clff")),
    Mistake("undeclared-variable",
            'Reference to undeclared input variable "epoch"', "main.hcl:22:32",
            'Did you mean "epochs"?', replace=("= var.epochs", "= var.epoch")),
    Mistake("undeclared-local",
            'Reference to undeclared local value "prefx"', "main.hcl:33:26",
            'Did you mean "prefix"?', replace=("local.prefix", "local.prefx")),
    Mistake("undeclared-module",
            'Reference to undeclared module "tiny"', "main.hcl:41:11",
            'Declare it: module "tiny"', append='output "m" {\n  value = module.tiny.id\n}\n'),
    Mistake("undeclared-module-output",
            'Module "tiny" has no output "idd"', "main.hcl:46:11", "Its outputs: id",
            append='module "tiny" {\n  source = "./modules/tiny"\n  name   = "x"\n}\n\n'
                   'output "m" {\n  value = module.tiny.idd\n}\n'),
    Mistake("depends-on-nonexistent",
            'Reference to undeclared resource "dataset.tran"', "main.hcl:33:17",
            'Did you mean "dataset.train"?',
            replace=("  tags     = {", "  depends_on = [dataset.tran]\n  tags     = {")),
    Mistake("each-without-for-each",
            '"each" is only available with for_each', "main.hcl:27:14",
            "Add for_each to this block",
            replace=('stage    = "production"', "stage    = each.key")),
    # ---------------------------------------------------------------- variables
    Mistake("missing-required-variable",
            'No value for required variable "epochs"', "main.hcl:5:1",
            "Pass --var epochs=VALUE", replace=("  default = 3\n", ""),
            commands=("plan", "apply")),  # validate treats a missing value as unknown
    Mistake("var-for-undeclared-variable",
            'Value for undeclared variable "epoch"', None, 'Did you mean "epochs"?',
            args=("--var", "epoch=5"), commands=("plan", "apply"), detail=("Set by --var.",)),
    Mistake("var-value-of-wrong-type",
            'Invalid value for variable "epochs"', "main.hcl:5:1", "The type is number",
            args=("--var", "epochs=abc"), commands=("plan", "apply"),
            detail=('A number is required, got string "abc". Set by --var.',)),
    Mistake("variable-validation-fails",
            'Invalid value for variable "epochs"', "main.hcl:8:3",
            "variable's validation block",
            replace=("  default = 3\n", "  default = 3\n  validation {\n"
                     "    condition     = var.epochs <= 10\n"
                     '    error_message = "epochs must be at most 10."\n  }\n'),
            args=("--var", "epochs=20"), commands=("plan", "apply"),
            detail=("epochs must be at most 10.",)),
    # ---------------------------------------------------------------- graph
    Mistake("cycle-between-locals",
            "Dependency cycle: local.a -> local.b -> local.a", "main.hcl:41:7",
            "Break the cycle", append="locals {\n  a = local.b\n  b = local.a\n}\n",
            detail=("local.a -> local.b  (at main.hcl:41:7)",
                    "local.b -> local.a  (at main.hcl:42:7)")),
    Mistake("cycle-between-resources",
            "Dependency cycle: endpoint.clf -> model.clf -> endpoint.clf", "main.hcl:32:14",
            "Break the cycle",
            replace=('stage    = "production"',
                     'stage    = "production"\n  depends_on = [endpoint.clf]'),
            detail=("endpoint.clf -> model.clf  (at main.hcl:32:14)",
                    "model.clf -> endpoint.clf  (at main.hcl:28:17)")),
    # ---------------------------------------------------------------- expressions
    Mistake("for-each-not-a-collection",
            "Invalid for_each argument", "main.hcl:33:3", "toset(...)",
            replace=("  tags     = {", "  for_each = 5\n  tags     = {"),
            detail=("for_each needs a map or a set of strings; got int.",)),
    Mistake("count-negative",
            "Invalid count argument", "main.hcl:33:3", "count = 0 for no instances",
            replace=("  tags     = {", "  count = -1\n  tags     = {"),
            detail=("count must be a whole number ≥ 0; got -1.",)),
    Mistake("unknown-function",
            "Call to unknown function", "main.hcl:22:32", '"length"',
            replace=("= var.epochs }", "= lenght([1]) }"),
            detail=('There is no function named "lenght".',)),
    Mistake("division-by-zero",
            "Division by zero", "main.hcl:22:32", "Guard it: b == 0 ? 0 : a / b.",
            replace=("= var.epochs }", "= var.epochs / 0 }"),
            detail=("The right operand of '/' is zero.",)),
    Mistake("huge-number",
            "Invalid number", "main.hcl:22:32", "",
            replace=("= var.epochs }", "= " + "9" * 5000 + " }"),
            detail=("The number has too many digits.",)),
    # ---------------------------------------------------------------- environments and modules
    Mistake("unknown-environment",
            'Unknown environment "nope"', None, "Create environments/nope.hcl",
            args=("--env", "nope")),
    Mistake("unknown-environment-with-others",
            'Unknown environment "prdo"', None, "Known environments: prod",
            files={"environments/prod.hcl": "variables = { epochs = 5 }\n"},
            args=("--env", "prdo")),
    Mistake("module-source-missing",
            'Module "tiny": source directory not found', "main.hcl:40:1",
            'Did you mean "./modules/tiny"?',
            append='module "tiny" {\n  source = "./modules/tinny"\n  name   = "x"\n}\n'),
    Mistake("module-input-not-declared",
            'Module "tiny" has no input variable "nme"', "main.hcl:42:3",
            'Did you mean "name"?',
            append='module "tiny" {\n  source = "./modules/tiny"\n  nme    = "x"\n}\n'),
    Mistake("entrypoint-file-missing",
            "Entrypoint not found for pipeline.train", "main.hcl:21:3",
            "relative to the module directory", files={"train.py": None},
            detail=('There is no file "train.py" in the stack directory.',)),
    # ---------------------------------------------------------------- command line and state
    Mistake("target-matches-nothing",
            '--target "endpoint.cfl" matches no resource', None, 'Did you mean "endpoint.clf"?',
            args=("--target", "endpoint.cfl"), commands=("plan", "apply")),
    Mistake("corrupt-state-file",
            "Invalid state in {stack}/.mlform/state/default.json", None,
            "mlform left the file as it is",
            files={".mlform/state/default.json": "{not json"}, commands=("plan", "apply"),
            detail=("not valid JSON: Expecting property name enclosed in double quotes",)),
]


# ------------------------------------------------------------------------ harness

_runner = CliRunner()


def invoke(stack: Path, *args: str):
    """`mlform -C STACK ARGS...` in-process; the working directory is restored."""
    cwd = os.getcwd()
    try:
        return _runner.invoke(mlform.cli.app, ["-C", str(stack), "--no-color", *args],
                              catch_exceptions=False)
    finally:
        os.chdir(cwd)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` and its bytes (lock files, which only hold an OS lock, and
    the digest cache in .mlform/cache, which a plan may fill, aside)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")
            and ".mlform/cache" not in p.relative_to(root).as_posix()}


@pytest.fixture(scope="module")
def applied(tmp_path_factory) -> Path:
    """The base stack, applied once: state and memory store exist."""
    stack = tmp_path_factory.mktemp("base") / "stack"
    for rel, text in FILES.items():
        (stack / rel).parent.mkdir(parents=True, exist_ok=True)
        (stack / rel).write_text(text)
    result = invoke(stack, "apply", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert (stack / ".mlform/state/default.json").is_file()
    assert (stack / ".mlform/memory.json").is_file()
    return stack


def broken(base: Path, tmp_path: Path, m: Mistake) -> Path:
    stack = tmp_path / "stack"
    shutil.copytree(base, stack)
    main = stack / "main.hcl"
    text = main.read_text()
    if m.replace:
        old, new = m.replace
        assert text.count(old) == 1, f"{m.id}: {old!r} must occur once in main.hcl"
        text = text.replace(old, new)
    if m.append:
        text += "\n" + m.append
    main.write_text(text)
    for rel, content in m.files.items():
        path = stack / rel
        if content is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return stack


def command_line(command: str, m: Mistake) -> list[str]:
    if command == "validate":
        env = list(m.args[m.args.index("--env"):][:2]) if "--env" in m.args else []
        return ["validate", *env]
    extra = ["--auto-approve"] if command == "apply" else []
    return [command, *extra, *m.args]


def diagnostic_block(stderr: str, summary: str) -> list[str]:
    """The lines of the diagnostic whose first line is `error: SUMMARY`."""
    lines = stderr.splitlines()
    head = f"error: {summary}"
    assert head in lines, f"no diagnostic {head!r} in:\n{stderr}"
    start = lines.index(head)
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        block.append(line)
    return block


# ------------------------------------------------------------------------ the table


def test_every_mistake_has_a_distinct_id():
    ids = [m.id for m in MISTAKES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("m", MISTAKES, ids=lambda m: m.id)
def test_mistake_gets_one_clear_diagnostic_and_changes_nothing(m, applied, tmp_path):
    stack = broken(applied, tmp_path, m)
    before = snapshot(stack)
    summary = m.summary.replace("{stack}", str(stack.resolve()))
    for command in m.commands:
        args = command_line(command, m)
        result = invoke(stack, *args)
        where = f"mlform {' '.join(args)} ({m.id})"
        output = result.stdout + result.stderr
        assert "Traceback" not in output, f"{where}\n{output}"
        assert "internal error" not in output.lower(), f"{where}\n{output}"
        assert result.exit_code == 1, f"{where}: exit {result.exit_code}\n{output}"
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
        assert errors == [f"error: {summary}"], f"{where}: expected one diagnostic\n{output}"
        block = diagnostic_block(result.stderr, summary)
        at = [ln for ln in block if ln.startswith("  at ")]
        if m.at is None:
            assert not at, f"{where}: unexpected location\n{output}"
        else:
            assert at == [f"  at {m.at}"], f"{where}\n{output}"
        hints = [ln for ln in block if ln.startswith("  hint: ")]
        if m.hint:
            assert len(hints) == 1 and m.hint in hints[0], f"{where}\n{output}"
        for text in m.detail:
            assert any(text in ln for ln in block), f"{where}: no {text!r}\n{output}"
        assert snapshot(stack) == before, f"{where} changed files on disk"


def test_validate_writes_nothing_on_a_fresh_stack(tmp_path):
    """Before any apply: validating a broken stack creates no file (no .mlform either)."""
    fresh = tmp_path / "fresh"
    for rel, text in FILES.items():
        (fresh / rel).parent.mkdir(parents=True, exist_ok=True)
        (fresh / rel).write_text(text)
    for n, m in enumerate(m for m in MISTAKES if "validate" in m.commands):
        stack = broken(fresh, tmp_path / str(n), m)
        before = snapshot(stack)
        result = invoke(stack, *command_line("validate", m))
        assert result.exit_code == 1, f"{m.id}\n{result.stderr}"
        assert snapshot(stack) == before and not (stack / ".mlform").exists(), m.id


def test_validate_accepts_the_base_stack(applied, tmp_path):
    # The table's expectations are only meaningful if the unbroken stack is fine.
    stack = tmp_path / "stack"
    shutil.copytree(applied, stack)
    result = invoke(stack, "validate")
    assert result.exit_code == 0, result.output
    result = invoke(stack, "plan", "--detailed-exitcode")
    assert result.exit_code == 0, result.output  # applied: no changes


def test_diagnostics_are_the_same_in_a_fresh_process(applied, tmp_path):
    """One row through the real entry point: stderr, exit status, no traceback."""
    import subprocess
    import sys

    m = next(m for m in MISTAKES if m.id == "unknown-attribute")
    stack = broken(applied, tmp_path, m)
    proc = subprocess.run([sys.executable, "-m", "mlform.cli", "plan"], cwd=stack,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(r'^error: Invalid endpoint endpoint\.clf: unknown attribute "replcas"$\n'
                     r"^  at main\.hcl:32:3$", proc.stderr, re.MULTILINE), proc.stderr
