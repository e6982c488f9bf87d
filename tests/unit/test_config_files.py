"""Which files make a stack, and how JSON stack files are read (mlform.config)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlform.config.loader import available_environments, files_read, load_stack, spec_files
from mlform.config.syntax import parse_json, parse_yaml
from mlform.diagnostics import DiagnosticError, SourceRange
from mlform.graph import build_graph

MEMORY = 'provider "memory" {\n  store = ".mlform/memory.json"\n}\n'


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def errors(exc: pytest.ExceptionInfo) -> list[tuple[str, str]]:
    return [(d.summary, str(d.source)) for d in exc.value.diagnostics]


# ------------------------------------------------------------------ the stack file rule


def test_stack_files_are_hcl_and_mlform_yaml_yml_json(tmp_path):
    write(tmp_path, {name: "" for name in (
        "main.hcl", "a.mlform.yaml", "b.mlform.yml", "c.mlform.json",
        "plan.json", "params.yaml", "dvc.yml", "memory.json", "mlform.json",
        ".hidden.mlform.json", "notes.txt", "main.tf")})
    (tmp_path / "dir.mlform.json").mkdir()
    assert [p.name for p in spec_files(tmp_path)] == [
        "a.mlform.yaml", "b.mlform.yml", "c.mlform.json", "main.hcl"]


def test_other_yaml_and_json_files_are_not_read(tmp_path):
    write(tmp_path, {
        "main.hcl": MEMORY + 'dataset "d" {\n  source = "s3://b/d.csv"\n}\n',
        "plan.json": json.dumps({"format_version": "1.2", "resource_changes": []}),
        "params.yaml": "epochs: 3\n",
        "broken.json": "{not json",
    })
    config = load_stack(tmp_path)
    assert [p.name for p in config.root.files] == ["main.hcl"]
    assert set(config.root.resources) == {"dataset.d"}


def test_the_config_digest_ignores_other_files(tmp_path):
    """A plan saved beside the spec must not make that plan stale."""
    write(tmp_path, {"main.hcl": MEMORY})
    before = load_stack(tmp_path).digest
    write(tmp_path, {"plan.json": "{}", "params.yaml": "x: 1\n"})
    assert load_stack(tmp_path).digest == before


def test_environment_files_are_picked_by_name(tmp_path):
    write(tmp_path, {
        "main.hcl": MEMORY + 'variable "epochs" {\n  default = 1\n}\n',
        "environments/dev.hcl": "variables = { epochs = 2 }\n",
        "environments/staging.yaml": "variables: {epochs: 3}\n",
        "environments/prod.mlform.json": '{"variables": {"epochs": 4}}',
        "environments/qa.mlform.yml": "variables: {epochs: 5}\n",
        "environments/README.md": "not an environment\n",
    })
    assert available_environments(tmp_path) == ["dev", "prod", "qa", "staging"]
    for env, want in (("dev", 2), ("staging", 3), ("prod", 4), ("qa", 5)):
        config = load_stack(tmp_path, env)
        assert config.env.variables["epochs"].evaluate(None) == want, env
        assert config.env.file.name.startswith(env + ".")


def test_no_stack_file_hint_says_to_rename_yaml_and_json(tmp_path):
    write(tmp_path, {"main.yaml": "dataset: {}\n", "params.yaml": "x: 1\n"})
    with pytest.raises(DiagnosticError) as exc:
        load_stack(tmp_path)
    [diag] = exc.value.diagnostics
    assert diag.summary.startswith("No spec files in ")
    assert "(main.yaml, params.yaml)" in diag.hint
    assert diag.hint.endswith("rename them: main.yaml to main.mlform.yaml.")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DiagnosticError) as exc:
        load_stack(empty)
    assert "mlform init DIR" in exc.value.diagnostics[0].hint


def test_a_module_directory_follows_the_rule(tmp_path):
    write(tmp_path, {
        "main.hcl": MEMORY + 'module "m" {\n  source = "./modules/m"\n}\n',
        "modules/m/main.mlform.yaml": "dataset:\n  d:\n    source: s3://b/d.csv\n",
        "modules/m/params.yaml": "epochs: 3\n",
        "modules/m/plan.json": "[]",
    })
    config = load_stack(tmp_path)
    assert [p.name for p in config.root.children["m"].files] == ["main.mlform.yaml"]

    (tmp_path / "modules/m/main.mlform.yaml").rename(tmp_path / "modules/m/main.yaml")
    with pytest.raises(DiagnosticError) as exc:
        load_stack(tmp_path)
    [diag] = exc.value.diagnostics
    assert diag.summary == 'Module "m": no spec files in ./modules/m'
    assert "main.yaml to main.mlform.yaml" in diag.hint


def test_files_read_in_reading_order(tmp_path):
    write(tmp_path, {
        "main.hcl": MEMORY + 'module "a" {\n  source = "./m"\n}\nmodule "b" {\n  source = "./m"\n}\n',
        "z.mlform.json": "{}",
        "m/main.hcl": "",
        "environments/staging.hcl": "",
    })
    config = load_stack(tmp_path, "staging")
    # Module "b" reads the same directory as "a": its file is listed once.
    assert [p.resolve().relative_to(tmp_path.resolve()) for p in files_read(config)] == [
        Path("main.hcl"), Path("z.mlform.json"), Path("m/main.hcl"),
        Path("environments/staging.hcl")]


# ------------------------------------------------------------------ JSON stack files

GOLDEN_JSON = Path(__file__).parents[1] / "golden/cases/spec_format_json/stack.mlform.json"


def outline(body, out=None, indent=""):
    """Every block, attribute and position of a Body, as lines to compare."""
    out = [] if out is None else out
    out.append(f"{indent}body @{body.source}")
    for name, attr in body.attributes.items():
        expr = attr.expr
        out.append(f"{indent}  {name} @{attr.source} value@{expr.source} "
                   f"refs={[str(r) for r in expr.references]} {expr.source_text()!r}")
    for block in body.blocks:
        out.append(f"{indent}  {block.type} {block.labels} @{block.source}")
        outline(block.body, out, indent + "    ")
    return out


def test_json_reads_as_the_yaml_composer_read_it():
    """JSON used to be read through PyYAML (JSON is YAML): the fast reading must give
    the same blocks, attributes, values and positions."""
    documents = [
        GOLDEN_JSON.read_text(),
        json.dumps(json.loads(GOLDEN_JSON.read_text())),                  # on one line
        '  \n {  "dataset" : { "x" : { "a" : 1 , "b" : [ ] , "c" : { } } } }  \n',
        '{"provider": {"memory": [{"store": "a"}, {"alias": "x", "store": "b"}, 3]}}',
        '{"dataset": {"x": {"source": "a", "source": "b"}, "x": {"format": "csv"}}}',
        '{"dataset": {"x": 5, "y": {"tags": {"k\\u00e9": "v\\"${var.a}"}}}, "model": []}',
        '{"endpoint": {"e": {"settings": {"a": {"b": 1}, "lifecycle": {"x": 1}},'
        ' "lifecycle": {"ignore_changes": ["replicas"]}, "validation": 3}}}',
        '{"locals": {"a": "${var.x}", "b": {"c": [1, "${local.a}"]}}, "variable": {}}',
        '{"model": {"m": {"artifact": "${pipeline.}", "n": null, "t": true, "f": -1.5}}}',
        "[1, 2]", '"text"', "{}",
    ]
    for text in documents:
        body, diags = parse_json(text, "s.mlform.json")
        yaml_body, yaml_diags = parse_yaml(text, "s.mlform.json")
        assert outline(body) == outline(yaml_body), text
        assert [(d.summary, d.source) for d in diags] == \
            [(d.summary, d.source) for d in yaml_diags], text


def test_json_positions_of_keys_labels_and_nested_blocks():
    text = GOLDEN_JSON.read_text()
    lines = text.splitlines()

    def at(needle: str, nth: int = 0) -> tuple[int, int]:
        found = [(n + 1, line.index(needle) + 1) for n, line in enumerate(lines) if needle in line]
        return found[nth]

    body, diags = parse_json(text, "s.json")
    assert not diags
    endpoint = next(b for b in body.blocks if b.type == "endpoint")
    assert (endpoint.source.line, endpoint.source.column) == at('"clf": {', 1)   # the label
    assert endpoint.body.source.line == at('"clf": {', 1)[0]                      # its "{"
    replicas = endpoint.body.attributes["replicas"]
    assert (replicas.source.line, replicas.source.column) == at('"replicas": "${')
    lifecycle = endpoint.body.blocks_of("lifecycle")[0]
    assert (lifecycle.source.line, lifecycle.source.column) == at('"lifecycle"')
    ignore = lifecycle.body.attributes["ignore_changes"]
    assert (ignore.source.line, ignore.source.column) == at('"ignore_changes"')
    # A value's position is where its text starts, inside the quotes.
    line, column = at('"${count.index + 2}"')
    assert (replicas.expr.source.line, replicas.expr.source.column) == (line, column + 1)


def test_json_stack_diagnostics_point_at_the_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = {
        "provider": {"memory": {"store": ".mlform/memory.json"}},
        "dataset": {"train": {"source": "s3://bucket/train.csv"}},
        "endpoint": {"clf": {
            "model": "${model.nope}",
            "replicas": 1,
            "lifecycle": {"prevent_destroy": True, "ignore_chnages": ["replicas"]},
        }},
    }
    text = json.dumps(doc, indent=2)
    (tmp_path / "main.mlform.json").write_text(text)
    lines = text.splitlines()
    key_line = next(n for n, ln in enumerate(lines, 1) if '"ignore_chnages"' in ln)
    with pytest.raises(DiagnosticError) as exc:          # a wrong attribute in a nested block
        load_stack(tmp_path)
    assert errors(exc) == [('Unsupported argument "ignore_chnages" in lifecycle',
                            f"main.mlform.json:{key_line}:9")]

    doc["endpoint"]["clf"]["lifecycle"] = {"ignore_changes": ["replicas"]}
    text = json.dumps(doc, indent=2)
    (tmp_path / "main.mlform.json").write_text(text)
    ref_line = next(n for n, ln in enumerate(text.splitlines(), 1) if "model.nope" in ln)
    with pytest.raises(DiagnosticError) as exc:          # a bad reference in a labeled block
        build_graph(load_stack(tmp_path))
    # `      "model": "${model.nope}"`: the reference starts at column 19.
    assert errors(exc) == [('Reference to undeclared resource "model.nope"',
                            f"main.mlform.json:{ref_line}:19")]


@pytest.mark.parametrize("text, summary, where", [
    ('{"dataset": {"other": {"source": "a",}}}\n',
     "Invalid JSON syntax: Expecting property name enclosed in double quotes", "s.json:1:38"),
    ('{"dataset": {"x": {"a": 1, "b": NaN}}}',
     "Invalid JSON value: NaN is not a JSON number (infinite and NaN numbers are not supported)",
     "s.json:1:33"),
    ('{"dataset": {"x": {"a": [1e999]}}}',
     "Invalid JSON value: 1e999 is too large (infinite numbers are not supported)", "s.json:1:25"),
    ('{"a": ' + "9" * 5000 + "}", "Invalid JSON value: a number has too many digits", "s.json"),
    ("[" * 100_000 + "]" * 100_000, "Invalid JSON: nesting too deep", "s.json:1:1"),
])
def test_json_errors(text, summary, where):
    body, diags = parse_json(text, "s.json")
    assert [(d.summary, str(d.source)) for d in diags] == [(summary, where)]


def test_json_numbers_and_tabs_read_as_json_means_them():
    """Through the YAML composer, `1e3` was the string "1e3" (YAML 1.1 wants a dot and a
    signed exponent) and a tab-indented file could not be read; json reads both."""
    body, diags = parse_json('{\n\t"locals": {"a": 1e3, "b": 2.5E-1, "c": "\\u00e9"}\n}', "s.json")
    assert not diags
    values = {k: a.expr.evaluate(None) for k, a in body.blocks[0].body.attributes.items()}
    assert values == {"a": 1000.0, "b": 0.25, "c": "é"}
    assert body.blocks[0].source == SourceRange("s.json", 2, 2)
