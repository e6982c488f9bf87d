"""Which files make a stack, end to end: `*.hcl` and `*.mlform.yaml`/`.yml`/`.json`.

Other YAML and JSON in a stack directory is left alone, so the files people and tools
put there (a saved `plan --format json`, the memory provider's store, `params.yaml`)
never break the next command. The CLI runs as a subprocess, as a user runs it.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from .harness import memory_provider, read_store

pytestmark = pytest.mark.timeout(300)

RESOURCES = """
dataset "train" {
  source = "s3://bucket/train.csv"
  format = "csv"
}

model "clf" {
  artifact  = dataset.train.uri
  framework = "torch"
}
"""

# A JSON stack file beside the HCL one: an endpoint on the HCL model.
ENDPOINT_JSON = json.dumps({"endpoint": {"clf": {"model": "${model.clf}", "replicas": 1}}},
                           indent=2)


def test_plan_output_store_and_params_beside_the_spec_are_left_alone(make_stack, mlform):
    # The store is a top-level .json file, and so is the plan saved below.
    stack = make_stack(memory_provider(store="memory.json") + RESOURCES, files={
        "extra.mlform.json": ENDPOINT_JSON,
        "params.yaml": "epochs: 3\nlr: 0.01\n",        # another tool's YAML, not a spec
        "dvc.yaml": "stages:\n  train:\n    cmd: python train.py\n",
    })
    saved = mlform("plan", "--format", "json", cwd=stack)
    assert saved.code == 0, saved
    (stack / "plan.json").write_text(saved.stdout)
    planned = sorted(c["address"] for c in json.loads(saved.stdout)["resource_changes"])
    assert planned == ["dataset.train", "endpoint.clf", "model.clf"]

    applied = mlform("apply", "--auto-approve", cwd=stack)
    assert applied.code == 0, applied
    assert len(read_store(stack, "memory.json")) == 3

    again = mlform("plan", "--detailed-exitcode", cwd=stack)
    assert again.code == 0, again                      # no changes, nothing misread
    listed = mlform("validate", cwd=stack)
    assert listed.code == 0, listed
    assert "Read extra.mlform.json and main.hcl." in listed.stdout.splitlines(), listed


def test_validate_says_which_files_it_read(make_stack, mlform):
    stack = make_stack(memory_provider() + RESOURCES, files={
        "variables.hcl": 'variable "epochs" {\n  default = 3\n}\n',
        "environments/staging.hcl": 'variables = { epochs = 5 }\n',
        "modules/tiny/main.mlform.yaml": "variable:\n  name: {type: string}\n",
        "modules/tiny/notes.json": '{"not": "a spec"}\n',
        "module.hcl": 'module "tiny" {\n  source = "./modules/tiny"\n  name   = "x"\n}\n',
    })
    result = mlform("validate", "--env", "staging", cwd=stack)
    assert result.code == 0, result
    lines = result.stdout.splitlines()
    assert lines[-2:] == [
        "Read main.hcl, module.hcl, variables.hcl, modules/tiny/main.mlform.yaml and "
        "environments/staging.hcl.",
        "Success! The configuration is valid (2 resource blocks)."], result


def test_plain_yaml_and_json_are_not_read_and_the_hint_says_to_rename(make_stack, mlform):
    stack = make_stack(memory_provider() + RESOURCES)
    (stack / "main.hcl").rename(stack / "old.hcl.txt")
    (stack / "main.yaml").write_text("dataset:\n  d:\n    source: s3://b/d.csv\n")
    result = mlform("plan", cwd=stack)
    assert result.code == 1, result
    assert "error: No spec files in ." in result.stderr, result
    assert "rename them: main.yaml to main.mlform.yaml." in result.stderr, result

    (stack / "main.yaml").rename(stack / "main.mlform.yaml")
    assert mlform("validate", cwd=stack).code == 0


def test_a_spec_file_without_the_suffix_beside_the_stack_is_warned_about(make_stack, mlform):
    # An older stack split across main.hcl and endpoints.json: the JSON file is no
    # longer read, so the plan would lose its blocks; every command says so.
    stack = make_stack(memory_provider() + RESOURCES, files={
        "endpoints.json": ENDPOINT_JSON,
        "params.yaml": "model:\n  layers: 3\nepochs: 3\n",   # not only block types: quiet
    })
    planned = mlform("plan", cwd=stack)
    assert planned.code == 0, planned
    shown = planned.stdout + planned.stderr
    assert "endpoints.json looks like a spec file but is not read" in shown, planned
    assert "rename it to endpoints.mlform.json" in shown, planned
    assert "params.yaml" not in shown, planned
    as_json = mlform("plan", "--format", "json", cwd=stack)
    assert [d["summary"] for d in as_json.json()["diagnostics"]] == [
        "endpoints.json looks like a spec file but is not read"], as_json
    assert "looks like a spec file" in mlform("validate", cwd=stack).stderr

    (stack / "endpoints.json").rename(stack / "endpoints.mlform.json")
    quiet = mlform("plan", "--format", "json", cwd=stack)
    assert quiet.json()["diagnostics"] == [], quiet
    assert "endpoint.clf" in [c["address"] for c in quiet.json()["resource_changes"]]


def test_a_module_directory_follows_the_same_rule(make_stack, mlform):
    module_json = json.dumps({
        "variable": {"name": {"type": "string"}},
        "dataset": {"d": {"source": "s3://bucket/${var.name}.csv"}},
        "output": {"uri": {"value": "${dataset.d.uri}"}},
    }, indent=2)
    stack = make_stack(memory_provider() + textwrap.dedent('''
        module "m" {
          source = "./modules/m"
          name   = "churn"
        }

        module "plain" {
          source = "./modules/plain"
        }
        '''), files={
        "modules/m/main.mlform.json": module_json,
        "modules/m/plan.json": '{"format_version": "1.2", "resource_changes": []}',
        "modules/m/params.yaml": "epochs: 3\n",
        "modules/plain/main.json": module_json,     # a spec file, but not named as one
    })
    result = mlform("validate", cwd=stack)
    assert result.code == 1, result
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ['error: Module "plain": no spec files in ./modules/plain'], result
    assert "main.json to main.mlform.json" in result.stderr, result

    (stack / "modules/plain/main.json").rename(stack / "modules/plain/main.mlform.json")
    (stack / "main.hcl").write_text((stack / "main.hcl").read_text().replace(
        'source = "./modules/plain"', 'source = "./modules/plain"\n  name   = "p"'))
    planned = mlform("plan", "--format", "json", cwd=stack)
    assert planned.code == 0, planned
    assert sorted(c["address"] for c in planned.json()["resource_changes"]) == [
        "module.m.dataset.d", "module.plain.dataset.d"]


def test_init_counts_only_stack_files(tmp_path, mlform):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "main.mlform.yaml").write_text("locals: {}\n")
    refused = mlform("init", taken, cwd=tmp_path)
    assert refused.code == 1 and "already holds spec files (main.mlform.yaml)" in refused.stderr

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "params.yaml").write_text("epochs: 3\n")
    (shared / "plan.json").write_text("{}\n")
    created = mlform("init", shared, cwd=tmp_path)
    assert created.code == 0, created
    assert mlform("validate", cwd=shared).code == 0
