"""Tests of mlform.fmt: canonical HCL formatting that keeps comments."""

from __future__ import annotations

import hcl2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlform.fmt import FormatError, format_hcl


def meaning(text):
    """hcl2.loads, with whitespace inside comment text collapsed.

    python-hcl2 reports adjacent comments as one value that includes the
    indentation between them, so reindenting changes that text.
    """
    def walk(data):
        if isinstance(data, dict):
            return {k: ([" ".join(c["value"].split()) for c in v]
                        if k in ("__comments__", "__inline_comments__") else walk(v))
                    for k, v in data.items()}
        if isinstance(data, list):
            return [walk(item) for item in data]
        return data
    return walk(hcl2.loads(text))

GOLDEN = [
    pytest.param(
        # indentation, "=" spacing and alignment, comments kept, blank lines collapsed
        '\n\n# top comment\n'
        'variable "epochs" {   type=number  default = 5 }   \n'
        'dataset "transactions" {\n'
        'source = "./data/transactions.csv"        # path\n'
        '    format="csv"\n'
        '  checks = {\n'
        '      min_rows = 100\n'
        '      max_null_fraction = 0.01\n'
        '  }\n'
        '\n\n\n'
        '  // the owner\n'
        '\ttags = { team = "ml" }\n'
        '}\n\n\n',
        '# top comment\n'
        'variable "epochs" {   type = number  default = 5 }\n'
        'dataset "transactions" {\n'
        '  source = "./data/transactions.csv"        # path\n'
        '  format = "csv"\n'
        '  checks = {\n'
        '    min_rows          = 100\n'
        '    max_null_fraction = 0.01\n'
        '  }\n'
        '\n'
        '  // the owner\n'
        '  tags = { team = "ml" }\n'
        '}\n',
        id="basic",
    ),
    pytest.param(
        # heredocs, multi-line strings and block comments are left as written
        'locals {\n'
        'script = <<EOF\n'
        '   keep   \n'
        '\n\n'
        '  this\n'
        'EOF\n'
        '  trimmed = <<-EOT\n'
        '      body\n'
        '      EOT\n'
        '     /* block\n'
        '          comment   \n'
        '  */\n'
        'multi = "first\n'
        '   second   \n'
        'third"   \n'
        '}\n',
        'locals {\n'
        '  script = <<EOF\n'
        '   keep   \n'
        '\n\n'
        '  this\n'
        'EOF\n'
        '  trimmed = <<-EOT\n'
        '      body\n'
        '      EOT\n'
        '  /* block\n'
        '          comment   \n'
        '  */\n'
        '  multi = "first\n'
        '   second   \n'
        'third"\n'
        '}\n',
        id="opaque-content",
    ),
    pytest.param(
        'pipeline "train" {\n'
        'list = [{\n'
        'a = 1\n'
        '}, {\n'
        'b = 2\n'
        '}]\n'
        'args = merge(\n'
        '  var.a,\n'
        '      { b = 1 },\n'
        '    )\n'
        'nested {\n'
        'deep {\n'
        '  x = "a=b"\n'
        '  yy = var.a >= 2 && var.b != 3 || var.c == 4\n'
        '  f = {for k, v in var.m : k => v}\n'
        '}\n'
        '}\n'
        '}\n',
        'pipeline "train" {\n'
        '  list = [{\n'
        '    a = 1\n'
        '  }, {\n'
        '    b = 2\n'
        '  }]\n'
        '  args = merge(\n'
        '    var.a,\n'
        '    { b = 1 },\n'
        '  )\n'
        '  nested {\n'
        '    deep {\n'
        '      x  = "a=b"\n'
        '      yy = var.a >= 2 && var.b != 3 || var.c == 4\n'
        '      f  = {for k, v in var.m : k => v}\n'
        '    }\n'
        '  }\n'
        '}\n',
        id="brackets-and-operators",
    ),
    pytest.param(
        # alignment runs are broken by comments, blank lines and multi-line values
        'endpoint "e" {\n'
        '  model = model.fraud\n'
        '  replicas = 1\n'
        '  # rollout\n'
        '  rollout = { strategy = "canary" }\n'
        '  capture_more = {\n'
        '    sample_percent = 100\n'
        '  }\n'
        '  port = 8080\n'
        '\n'
        '  tags = {\n'
        '    "quoted key" = 1\n'
        '    b = 2\n'
        '  }\n'
        '}\n',
        'endpoint "e" {\n'
        '  model    = model.fraud\n'
        '  replicas = 1\n'
        '  # rollout\n'
        '  rollout = { strategy = "canary" }\n'
        '  capture_more = {\n'
        '    sample_percent = 100\n'
        '  }\n'
        '  port = 8080\n'
        '\n'
        '  tags = {\n'
        '    "quoted key" = 1\n'
        '    b            = 2\n'
        '  }\n'
        '}\n',
        id="alignment-runs",
    ),
    pytest.param(
        'a = "${ {for k, v in var.m : k => v}["a"] }"\r\n'
        'b = "%{ if var.on }on%{ else }off%{ endif }"\r\n'
        'ccc = "$${literal} \\"q\\" = { ["\r\n'
        'obj = {\r\n'
        '(var.k) = 2\r\n'
        '  plain: 3\r\n'
        '}',
        'a   = "${ {for k, v in var.m : k => v}["a"] }"\n'
        'b   = "%{ if var.on }on%{ else }off%{ endif }"\n'
        'ccc = "$${literal} \\"q\\" = { ["\n'
        'obj = {\n'
        '  (var.k) = 2\n'
        '  plain: 3\n'
        '}\n',
        id="templates-crlf-no-final-newline",
    ),
]


@pytest.mark.parametrize("source, expected", GOLDEN)
def test_golden(source, expected):
    result = format_hcl(source)
    assert result == expected
    assert format_hcl(result) == result
    assert hcl2.loads(result) == hcl2.loads(source.replace("\r\n", "\n"))


DESIGN_EXAMPLE = '''\
variable "epochs" { type = number  default = 5  sensitive = false  description = "..." }
locals { prefix = "fraud-${var.env}" }
provider "local" { root = ".mlform/local" }

dataset "transactions" {
  source = "./data/transactions.csv"        # path, s3://, or another provider's URI
  format = "csv"
  schema = { amount = "float", label = "int" }
  checks = { min_rows = 100, max_null_fraction = 0.01 }
}
training_cluster "gpu" { accelerator = "nvidia-h100"  gpus_per_node = 1  nodes = 1 }
pipeline "train" {
  cluster         = training_cluster.gpu         # optional: the provider's default compute
  inputs          = { train = dataset.transactions }
  entrypoint      = "train.py"                  # relative to the stack; its content is hashed
  hyperparameters = { epochs = var.epochs }
  gate            = { metric = "accuracy", min = 0.9 }
}
model "fraud" { artifact = pipeline.train.model_uri  framework = "torch"  stage = "production" }
endpoint "fraud" {
  model    = model.fraud
  replicas = 1
  rollout  = { strategy = "canary", canary_percent = 10, bake_seconds = 300 }
  capture  = { sample_percent = 100 }
  settings { }                                   # provider-specific, validated by the provider
  lifecycle { prevent_destroy = true  ignore_changes = ["replicas"] }
}
monitor "drift" {
  endpoint  = endpoint.fraud
  baseline  = dataset.transactions
  checks    = [{ metric = "psi", threshold = 0.2 }]
  schedule  = "*/10 * * * *"
  on_breach = "retrain"
}
module "churn" { source = "../../modules/tabular-classifier"  name = "churn" }
output "url" { value = endpoint.fraud.url }
'''


def test_formatted_text_is_a_fixed_point():
    assert format_hcl(DESIGN_EXAMPLE) == DESIGN_EXAMPLE


def test_messy_design_example_comes_back_canonical():
    messy = "\n".join("   " + line.replace(" = ", "=") + "  "
                      for line in DESIGN_EXAMPLE.splitlines()) + "\n\n\n"
    assert format_hcl(messy) == DESIGN_EXAMPLE


def test_empty_file():
    assert format_hcl("") == ""
    assert format_hcl("\n\n  \n") == ""


@pytest.mark.parametrize("source, message, line, column", [
    ("x {\n  a = 1\n", 'unexpected end of file; expected "}"', 3, 1),
    ("a = 1 2\n", 'unexpected "2"', 1, 7),
    ('a = "x\n', "unterminated string", 1, 6),
    ("a = @\n", 'unexpected character "@"', 1, 5),
])
def test_invalid_hcl(source, message, line, column):
    with pytest.raises(FormatError) as caught:
        format_hcl(source)
    assert (caught.value.message, caught.value.line, caught.value.column) == \
        (message, line, column)
    assert f"line {line}" in str(caught.value)


# --------------------------------------------------------------- property test

NAMES = st.sampled_from(["a", "bb", "name", "replicas", "source_uri", "x1"])
SPACE = st.sampled_from(["", " ", "  ", "\t", "   "])
COMMENT = st.sampled_from(["# note", "// note", "/* note */", "#", "# a = { [ \"", "/* x\n  y */"])
SCALAR = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.sampled_from(["true", "false", "null", "1.5", '"s"', '"a = b"', '"${var.x}"',
                     "var.env", "upper(var.a)", '"{["']),
)


@st.composite
def values(draw, depth=0):
    if depth >= 2 or draw(st.booleans()):
        return draw(SCALAR)
    if draw(st.booleans()):
        items = draw(st.lists(values(depth + 1), max_size=3))
        sep = draw(st.sampled_from([", ", ",\n", ",\n\n"]))
        return "[" + sep.join(items) + "]"
    keys = draw(st.lists(NAMES, max_size=3, unique=True))
    sep = draw(st.sampled_from([", ", "\n"]))
    inner = sep.join(f"{k}{draw(SPACE)}={draw(SPACE)}{draw(values(depth + 1))}" for k in keys)
    return "{" + ("\n" if sep == "\n" and keys else "") + inner + \
        ("\n" if sep == "\n" and keys else "") + "}"


@st.composite
def bodies(draw, depth=0):
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        indent = draw(SPACE)
        choice = draw(st.integers(-1, 5 if depth < 2 else 3))
        if choice == -1:  # values whose inside must not change
            value = draw(st.sampled_from(['<<EOT\n  x = { [  \n\nEOT', '<<-EOT\n    a\n  EOT',
                                          '"multi\n  line = {  \n"']))
            lines.append(f"{indent}{draw(NAMES)} = {value}")
        elif choice <= 1:
            line = f"{indent}{draw(NAMES)}{draw(SPACE)}={draw(SPACE)}{draw(values())}"
            if draw(st.booleans()):
                line += " " + draw(COMMENT)
            lines.append(line + draw(SPACE))
        elif choice == 2:
            lines.append(indent + draw(COMMENT))
        elif choice == 3:
            lines.append(draw(st.sampled_from(["", "  ", "\t"])))
        else:
            label = draw(st.sampled_from(["", ' "lbl"', ' "a" "b"']))
            inner = draw(bodies(depth + 1))
            lines.append(f"{indent}{draw(NAMES)}{label} {{\n{inner}\n{draw(SPACE)}}}")
    return "\n".join(lines)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_format_is_idempotent_and_keeps_meaning(source):
    try:
        before = meaning(source)
    except Exception:  # the generator can produce text python-hcl2 rejects: fmt must too
        with pytest.raises(FormatError):
            format_hcl(source)
        return
    result = format_hcl(source)
    assert format_hcl(result) == result
    assert meaning(result) == before
    assert result == "" or result.endswith("\n") and not result.endswith("\n\n")
    opaque = ("x = { [", "line = {")  # heredoc and multi-line string content keep theirs
    assert all(line == line.rstrip() for line in result.splitlines()
               if line.strip() not in opaque)
