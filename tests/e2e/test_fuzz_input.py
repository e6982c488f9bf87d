"""Malformed input never crashes mlform: hypothesis mutates valid stacks.

Valid HCL and YAML stacks are broken by deleting, duplicating and inserting
characters and tokens, truncating, adding random unicode, deep nesting and huge
numbers; `validate` and `plan` must then answer with exit code 0, 1 or 2, never
a traceback nor an "internal error" (an uncaught exception the CLI's last-resort
guard converted: a bug), and print `error:` whenever they exit 1.

The CLI runs in-process for speed; examples are derandomized and the example
database is off, so CI sees the same inputs every run.
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import mlform.cli
from mlform.expr import functions as fnlib

HCL = textwrap.dedent('''\
    provider "memory" {
      store = ".mlform/memory.json"
    }

    variable "epochs" {
      type    = number
      default = 3
      validation {
        condition     = var.epochs > 0
        error_message = "epochs must be positive."
      }
    }

    variable "names" {
      type    = list(string)
      default = ["a", "b"]
    }

    locals {
      prefix = "demo-${var.epochs}"
      sizes  = { for n in var.names : n => length(n) * 2 }
      flag   = var.epochs > 2 ? "big" : "small"
      joined = join(",", [for n in var.names : upper(n)])
    }

    dataset "train" {
      source = "data/train.csv"
      format = "csv"
      schema = { a = "int", b = "int" }
      tags   = { prefix = local.prefix, flag = local.flag }
    }

    dataset "extra" {
      for_each = toset(var.names)
      source   = "data/train.csv"
      format   = "csv"
      tags     = { key = each.key, size = tostring(local.sizes[each.key]) }
    }

    training_cluster "cpu" {
      count         = 1
      accelerator   = "cpu"
      gpus_per_node = 0
      nodes         = 1
    }

    pipeline "train" {
      cluster         = training_cluster.cpu[0]
      inputs          = { train = dataset.train, extra = dataset.extra["a"] }
      entrypoint      = "train.py"
      hyperparameters = { epochs = var.epochs, lr = 0.01 * 2, names = local.joined }
      gate            = { metric = "accuracy", min = 0.5 }
    }

    model "clf" {
      artifact = pipeline.train.model_uri
      stage    = "production"
    }

    endpoint "clf" {
      model    = model.clf
      replicas = 1
      rollout  = { strategy = "canary", canary_percent = 10, bake_seconds = 0 }
      lifecycle {
        ignore_changes = ["replicas"]
      }
      depends_on = [dataset.train]
    }

    module "tiny" {
      source = "./modules/tiny"
      name   = local.flag
    }

    output "url" {
      value = endpoint.clf.url
    }

    output "sizes" {
      value = [for k, v in local.sizes : "${k}=${v}"]
    }

    output "module_id" {
      value = module.tiny.id
    }
    ''')

YAML = textwrap.dedent('''\
    variable:
      lr:
        type: number
        default: 0.1
    locals:
      tag: "y-${var.lr}"
    dataset:
      other:
        source: data/train.csv
        format: csv
        tags:
          t: "${local.tag}"
    pipeline:
      second:
        inputs:
          d: "${dataset.other}"
        entrypoint: train.py
        hyperparameters:
          lr: "${var.lr * 2}"
          n: "${length([1, 2, 3])}"
    monitor:
      drift:
        endpoint: "${endpoint.clf}"
        baseline: "${dataset.other}"
        checks:
          - metric: psi
            threshold: 0.2
        schedule: "*/10 * * * *"
        on_breach: retrain
    output:
      second_uri:
        value: "${pipeline.second.model_uri}"
    ''')

MODULE = textwrap.dedent('''\
    variable "name" {
      type = string
    }

    output "id" {
      value = "m-${var.name}"
    }
    ''')

ENVIRONMENT = textwrap.dedent('''\
    default_provider = "memory"
    variables        = { epochs = 4, names = ["a", "c"] }

    provider "memory" {
      store = ".mlform/memory-dev.json"
    }

    backend "local" {
      path = ".mlform/state/dev.json"
    }
    ''')

OTHER_FILES = {
    "train.py": "print('training')\n",
    "data/train.csv": "a,b\n1,2\n3,4\n",
    "modules/tiny/main.hcl": MODULE,
    "environments/dev.hcl": ENVIRONMENT,
}

# Pieces of syntax that break things in interesting ways.
TOKENS = [
    "{", "}", "[", "]", "(", ")", "=", '"', "${", "%{", "}\"", ",", ":", "?", "=>", "...",
    ".", "*", "[*]", "-", "!", "&&", "||", "==", "<", "/", "%", "\\", "\n", "\t", " ",
    "#", "//", "/*", "*/", "<<EOF\n", "\nEOF\n", "for", "in", "if", "null", "true",
    "each.key", "each.value", "count.index", "var.", "local.", "module.", "dataset.", "self",
    "1e999", "-0", "0.5", "9" * 400, "9" * 5000, "1 / 0", "lenght(1)", "file(\"nope\")",
    'dataset "x" {}', 'variable "v" {}', "depends_on = [", "for_each = ", "count = ",
    "lifecycle {", "settings {", "provider = ", "é", "\u202e", "\u0000", "\ufeff", "😀",
    # YAML-specific
    "- ", ": ", "? ", "&a ", "*a", "!!binary ", "!!python/object:os.system ", "!!set ",
    "---\n", "|\n", ">\n", "'", "~", ".inf", ".nan", "2020-01-01", "%YAML 1.1\n",
]
NESTERS = ["[", "{", "(", "${", "!", "-", "[{a=", "{a:", "- "]

fraction = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
MUTATION = st.one_of(
    st.tuples(st.just("delete"), fraction, st.integers(1, 40)),
    st.tuples(st.just("insert"), fraction, st.sampled_from(TOKENS)),
    st.tuples(st.just("insert"), fraction, st.text(min_size=1, max_size=6)),
    st.tuples(st.just("duplicate"), fraction, st.integers(1, 80)),
    st.tuples(st.just("truncate"), fraction),
    st.tuples(st.just("nest"), fraction, st.sampled_from(NESTERS), st.sampled_from([3, 60, 500])),
    st.tuples(st.just("swap-lines"), fraction, fraction),
)
MUTATIONS = st.lists(MUTATION, min_size=1, max_size=4)


def mutate(text: str, mutations) -> str:
    for m in mutations:
        op, at = m[0], int(m[1] * len(text))
        if op == "delete":
            text = text[:at] + text[at + m[2]:]
        elif op == "insert":
            text = text[:at] + m[2] + text[at:]
        elif op == "duplicate":
            text = text[:at] + text[at:at + m[2]] + text[at:]
        elif op == "truncate":
            text = text[:at]
        elif op == "nest":
            text = text[:at] + m[2] * m[3] + text[at:]
        elif op == "swap-lines":
            lines = text.split("\n")
            i, j = int(m[1] * (len(lines) - 1)), int(m[2] * (len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


_runner = CliRunner()


def invoke(stack: Path, *args: str):
    cwd = os.getcwd()
    try:
        return _runner.invoke(mlform.cli.app, ["-C", str(stack), "--no-color", *args],
                              catch_exceptions=False)
    finally:
        os.chdir(cwd)


def check(stack: Path, *args: str) -> None:
    result = invoke(stack, *args)
    output = result.stdout + result.stderr
    where = f"mlform {' '.join(args)} on:\n" + "".join(
        f"--- {p.relative_to(stack)}\n{p.read_text(errors='replace')[:3000]}\n"
        for p in sorted(stack.rglob("*")) if p.suffix in (".hcl", ".yaml", ".json")
        and "modules" not in p.parts)
    assert "Traceback" not in output, f"{where}\n{output}"
    assert "internal error" not in output.lower(), f"{where}\n{output}"
    assert result.exit_code in (0, 1, 2), f"{where}\nexit {result.exit_code}\n{output}"
    if result.exit_code == 1:
        assert "error:" in result.stderr, f"{where}\n{output}"


def run_stack(files: dict[str, str], *commands: tuple[str, ...]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stack = Path(tmp) / "stack"
        for rel, text in {**OTHER_FILES, **files}.items():
            (stack / rel).parent.mkdir(parents=True, exist_ok=True)
            (stack / rel).write_text(text, encoding="utf-8")
        for args in commands or (("validate",), ("plan",)):
            check(stack, *args)


def fuzz(examples: int):
    """Hypothesis settings: a fixed sequence of inputs (derandomized, no database), no
    deadline; the counts keep this file near a minute on a laptop."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_the_seed_stacks_are_valid():
    with tempfile.TemporaryDirectory() as tmp:
        stack = Path(tmp) / "stack"
        for rel, text in {**OTHER_FILES, "main.hcl": HCL, "extra.mlform.yaml": YAML}.items():
            (stack / rel).parent.mkdir(parents=True, exist_ok=True)
            (stack / rel).write_text(text)
        for args in (("validate",), ("plan",), ("plan", "--env", "dev")):
            result = invoke(stack, *args)
            assert result.exit_code == 0, result.stdout + result.stderr


@fuzz(200)
@given(MUTATIONS)
@example([("nest", 0.5, "[", 500)])
@example([("nest", 0.3, "${", 500)])
@example([("insert", 0.4, "9" * 5000)])
@example([("truncate", 0.37)])
@example([("insert", 0.0, "\ufeff")])
@example([("swap-lines", 1.0, 0.03125)])  # a `type` inside a block nested in a provider
def test_mutated_hcl_never_crashes(mutations):
    run_stack({"main.hcl": mutate(HCL, mutations), "extra.mlform.yaml": YAML})


@fuzz(150)
@given(MUTATIONS)
@example([("nest", 0.5, "- ", 500)])
@example([("nest", 0.5, "{a:", 500)])
@example([("insert", 0.2, "!!python/object:os.system ")])
@example([("insert", 0.1, "&a ")])
def test_mutated_yaml_never_crashes(mutations):
    run_stack({"main.hcl": HCL, "extra.mlform.yaml": mutate(YAML, mutations)})


@fuzz(80)
@given(MUTATIONS)
@example([("insert", 0.0, "9" * 5000)])
def test_mutated_json_never_crashes(mutations):
    import json

    import yaml
    doc = json.dumps(yaml.safe_load(YAML), indent=2)
    run_stack({"main.hcl": HCL, "extra.mlform.json": mutate(doc, mutations)})


@fuzz(60)
@given(MUTATIONS)
def test_mutated_environment_file_never_crashes(mutations):
    run_stack({"main.hcl": HCL, "extra.mlform.yaml": YAML,
               "environments/dev.hcl": mutate(ENVIRONMENT, mutations)},
              ("validate", "--env", "dev"), ("plan", "--env", "dev"))


ARG_TEXT = st.one_of(st.sampled_from(TOKENS), st.text(max_size=12))


@fuzz(30)
@given(epochs=ARG_TEXT, names=ARG_TEXT, target=ARG_TEXT, env=ARG_TEXT, var_file=ARG_TEXT)
def test_odd_command_line_values_never_crash(epochs, names, target, env, var_file):
    run_stack({"main.hcl": HCL, "extra.mlform.yaml": YAML, "vars.yaml": f"epochs: {var_file}\n"},
              ("plan", "--var", f"epochs={epochs}", "--var", f"names={names}"),
              ("plan", "--target", target),
              ("plan", "--replace", target),
              ("validate", "--env", env),
              ("plan", "--var-file", "vars.yaml"))


# ------------------------------------------------------------------ well-formed, odd expressions

ATOMS = st.sampled_from([
    "1", "0", "-1", "1.5", "1e300", "9" * 30, '"a"', '""', '"1"', "true", "false", "null",
    "var.epochs", "var.names", "local.sizes", "local.prefix", "dataset.train", "dataset.extra",
    "training_cluster.cpu", "dataset.train.uri", "pipeline.train.model_uri", "[]", "{}",
    "{ a = 1 }", '["x", "y"]', "[1, [2]]", '"${var.epochs}"', "path.root", "env.name"])
FUNCTIONS = sorted(n for n in fnlib.FUNCTIONS if not n.startswith("file")
                   and n not in ("templatefile", "abspath")) + list(fnlib.LAZY_FUNCTIONS)


def _compound(inner):
    return st.one_of(
        st.tuples(st.sampled_from(FUNCTIONS), st.lists(inner, max_size=3), st.booleans()).map(
            lambda t: f"{t[0]}({', '.join(t[1])}{'...' if t[2] and t[1] else ''})"),
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "%", "==", "<", "&&", "||"]),
                  inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
        inner.map(lambda c: f"{c}[*].a"),
        inner.map(lambda c: f"!{c}"),
        st.tuples(inner, inner).map(lambda t: f"[for x in {t[0]} : {t[1]}]"),
        st.tuples(inner, inner).map(lambda t: f"{{for k, v in {t[0]} : tostring(k) => {t[1]}...}}"),
        st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
        inner.map(lambda c: '"pre-${' + c + '}"'),
        inner.map(lambda c: '"%{ for x in ' + c + ' }${x}%{ endfor }"'),
        inner.map(lambda c: "{ k = " + c + " }"),
    )


EXPRESSIONS = st.recursive(ATOMS, _compound, max_leaves=8)
PLACES = {  # where in the HCL seed an expression replaces a value
    "local": 'var.epochs > 2 ? "big" : "small"',
    "hyperparameter": "0.01 * 2",
    "count": "count         = 1",
    "for_each": "toset(var.names)",
    "tags": "{ prefix = local.prefix, flag = local.flag }",
    "replicas": "replicas = 1",
    "output": "endpoint.clf.url",
}


@fuzz(120)
@given(EXPRESSIONS, st.sampled_from(sorted(PLACES)))
def test_odd_expressions_never_crash(expression, place):
    old = PLACES[place]
    new = old.split("=")[0] + "= " + expression if place in ("count", "replicas") else expression
    run_stack({"main.hcl": HCL.replace(old, new, 1), "extra.mlform.yaml": YAML})
