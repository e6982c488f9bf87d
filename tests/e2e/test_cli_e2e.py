"""The CLI end to end, as a subprocess, on stacks backed by the memory provider.

Every test runs `python -m mlform.cli` in a fresh process and checks what a user or a
CI script sees (exit codes, output) and what happened to the "service" (the memory
store and its call log of mutating calls).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from .harness import (
    CallLog, assert_store_matches_state, load_state, memory_provider, read_calls, read_store,
    state_path, store_path, write_store,
)

pytestmark = pytest.mark.timeout(300)

RESOURCES = """
dataset "train" {
  source = "s3://bucket/train.csv"
  format = "csv"
}

model "clf" {
  artifact  = dataset.train.uri
  framework = "torch"
  stage     = "production"
}

endpoint "clf" {
  model    = model.clf
  replicas = 1
}

output "url" {
  value = endpoint.clf.url
}

output "version" {
  value = model.clf.version
}
"""
STACK = memory_provider() + RESOURCES
ADDRESSES = ["dataset.train", "endpoint.clf", "model.clf"]


def object_id(stack, address: str) -> str:
    return f"{stack.name}/default/{address}"


@pytest.fixture
def applied(make_stack, mlform):
    """The stack, applied once."""
    stack = make_stack(STACK)
    first = mlform("apply", "--auto-approve", cwd=stack)
    assert first.code == 0, first
    return stack


# --- plan / apply / no-op -------------------------------------------------------------------

def test_plan_apply_then_nothing_to_do(make_stack, mlform):
    stack = make_stack(STACK)
    plan = mlform("plan", "--detailed-exitcode", cwd=stack)
    assert plan.code == 2, plan
    assert "Plan: 3 to add, 0 to change, 0 to destroy." in plan.stdout, plan
    assert read_calls(stack) == [], "plan must not call mutating operations"

    applied = mlform("apply", "--auto-approve", cwd=stack)
    assert applied.code == 0, applied
    assert "Apply complete! Resources: 3 added, 0 changed, 0 destroyed." in applied.stdout
    assert sorted(c["address"] for c in read_calls(stack)) == ADDRESSES
    assert_store_matches_state(stack)

    calls = CallLog(stack)
    again = mlform("plan", "--detailed-exitcode", cwd=stack)
    assert again.code == 0, again
    assert "No changes" in again.stdout, again
    assert calls.since() == [], "a no-op plan made mutating calls"

    noop = mlform("apply", "--auto-approve", cwd=stack)
    assert noop.code == 0, noop
    assert "No changes" in noop.stdout, noop
    assert calls.since() == [], "a no-op apply made mutating calls"
    assert_store_matches_state(stack)


def test_directory_argument_and_chdir_option(make_stack, mlform, tmp_path):
    stack = make_stack(STACK)
    assert mlform("plan", stack.name, "--detailed-exitcode", cwd=tmp_path).code == 2
    assert mlform("-C", str(stack), "apply", "--auto-approve", cwd=tmp_path).code == 0
    listed = mlform("-C", stack.name, "state", "list", cwd=tmp_path)
    assert listed.code == 0, listed
    assert listed.stdout.split() == ADDRESSES
    assert not (tmp_path / ".mlform").exists(), "-C must make DIR the working directory"
    missing = mlform("-C", "no-such-dir", "state", "list", cwd=tmp_path)
    assert missing.code == 1 and "no-such-dir" in missing.stderr, missing
    assert "Traceback" not in missing.output


# --- drift ------------------------------------------------------------------------------------

def test_drift_is_reported_in_every_format_and_healed(applied, mlform):
    stack = applied
    assert not store_path(stack).with_name("memory.json.log").exists(), "store not compacted"
    objects = read_store(stack)
    objects[object_id(stack, "endpoint.clf")]["attributes"]["replicas"] = 3
    write_store(stack, objects)

    drift = mlform("drift", cwd=stack)
    assert drift.code == 2, drift
    assert "endpoint.clf" in drift.stdout and "replicas" in drift.stdout, drift
    assert "1 -> 3" in drift.stdout, drift

    as_json = mlform("drift", "--format", "json", cwd=stack)
    assert as_json.code == 2, as_json
    doc = json.loads(as_json.stdout)
    [entry] = doc["resource_drift"]
    assert entry["address"] == "endpoint.clf"
    assert entry["change"]["actions"] == ["update"]
    assert entry["change"]["before"]["replicas"] == 1 and entry["change"]["after"]["replicas"] == 3

    junit = mlform("drift", "--format", "junit", cwd=stack)
    assert junit.code == 2, junit
    suite = ET.fromstring(junit.stdout)
    failed = [case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None]
    assert failed == ["endpoint.clf"], junit.stdout
    assert int(suite.get("failures")) == 1

    calls = CallLog(stack)
    heal = mlform("apply", "--auto-approve", cwd=stack)
    assert heal.code == 0, heal
    assert [(c["op"], c["address"]) for c in calls.since()] == [("update", "endpoint.clf")]
    assert read_store(stack)[object_id(stack, "endpoint.clf")]["attributes"]["replicas"] == 1
    clean = mlform("drift", cwd=stack)
    assert clean.code == 0, clean


def test_object_deleted_outside_is_recreated(applied, mlform):
    stack = applied
    objects = read_store(stack)
    del objects[object_id(stack, "model.clf")]
    write_store(stack, objects)

    drift = mlform("drift", cwd=stack)
    assert drift.code == 2, drift
    assert "model.clf" in drift.stdout and "deleted" in drift.stdout, drift
    junit = mlform("drift", "--format", "junit", cwd=stack)
    assert junit.code == 2 and ET.fromstring(junit.stdout).find(".//failure") is not None

    calls = CallLog(stack)
    again = mlform("apply", "--auto-approve", cwd=stack)
    assert again.code == 0, again
    made = [(c["op"], c["address"]) for c in calls.since()]
    assert ("create", "model.clf") in made, made
    assert object_id(stack, "model.clf") in read_store(stack)
    assert_store_matches_state(stack)
    assert mlform("drift", cwd=stack).code == 0
    assert mlform("plan", "--detailed-exitcode", cwd=stack).code == 0


# --- saved plans ------------------------------------------------------------------------------

def test_saved_plan_applies_once(make_stack, mlform):
    stack = make_stack(STACK)
    plan = mlform("plan", "--out", "p.plan", cwd=stack)
    assert plan.code == 0, plan
    assert read_calls(stack) == []
    shown = mlform("show", "p.plan", "--json", cwd=stack)
    assert shown.code == 0, shown
    assert len(json.loads(shown.stdout)["resource_changes"]) == 3

    first = mlform("apply", "p.plan", cwd=stack)       # a reviewed plan needs no approval
    assert first.code == 0, first
    assert len(read_calls(stack)) == 3
    serial = load_state(stack).serial

    calls = CallLog(stack)
    second = mlform("apply", "p.plan", cwd=stack)
    assert second.code == 1, second
    assert "stale" in second.stderr.lower(), second
    assert calls.since() == [], "a stale plan must apply nothing"
    assert load_state(stack).serial == serial


def test_saved_plan_is_refused_after_the_spec_changes(applied, mlform):
    stack = applied
    main = stack / "main.hcl"
    main.write_text(main.read_text().replace("replicas = 1", "replicas = 2"))
    assert mlform("plan", "--out", "p.plan", cwd=stack).code == 0
    main.write_text(main.read_text().replace("replicas = 2", "replicas = 5"))
    serial = load_state(stack).serial
    calls = CallLog(stack)
    refused = mlform("apply", "p.plan", cwd=stack)
    assert refused.code == 1, refused
    assert "stale" in refused.stderr.lower() and "spec" in refused.stderr, refused
    assert calls.since() == []
    assert load_state(stack).serial == serial
    assert load_state(stack).get("endpoint.clf").attributes["replicas"] == 1


def test_apply_and_destroy_without_a_terminal_or_auto_approve_refuse(make_stack, mlform):
    stack = make_stack(STACK)
    refused = mlform("apply", cwd=stack)             # stdin is not a terminal
    assert refused.code == 1, refused
    assert "--auto-approve" in refused.stderr, refused
    assert read_calls(stack) == []
    assert not state_path(stack).exists() or not load_state(stack).resources

    assert mlform("apply", "--auto-approve", cwd=stack).code == 0
    calls = CallLog(stack)
    kept = mlform("destroy", cwd=stack)
    assert kept.code == 1 and "--auto-approve" in kept.stderr, kept
    assert calls.since() == []
    assert sorted(load_state(stack).resources) == ADDRESSES


# --- selection, destroy -----------------------------------------------------------------------

def test_target_applies_the_target_and_its_dependencies_only(make_stack, mlform):
    stack = make_stack(STACK)
    plan = mlform("plan", "--target", "model.clf", "--format", "json", cwd=stack)
    assert plan.code == 0, plan
    planned = sorted(c["address"] for c in json.loads(plan.stdout)["resource_changes"])
    assert planned == ["dataset.train", "model.clf"]
    targeted = mlform("apply", "--auto-approve", "--target", "model.clf", cwd=stack)
    assert targeted.code == 0, targeted
    assert sorted(load_state(stack).resources) == ["dataset.train", "model.clf"]
    assert sorted(c["address"] for c in read_calls(stack)) == ["dataset.train", "model.clf"]
    rest = mlform("plan", "--detailed-exitcode", cwd=stack)
    assert rest.code == 2 and "endpoint.clf will be created" in rest.stdout, rest
    unknown = mlform("plan", "--target", "model.nope", cwd=stack)
    assert unknown.code == 1 and "model.nope" in unknown.stderr, unknown


def test_destroy_empties_the_store(applied, mlform):
    stack = applied
    gone = mlform("destroy", "--auto-approve", cwd=stack)
    assert gone.code == 0, gone
    assert "Destroy complete! Resources: 3 destroyed." in gone.stdout, gone   # as Terraform says
    assert read_store(stack) == {}
    assert load_state(stack).resources == {}
    assert mlform("state", "list", cwd=stack).stdout.strip() == ""
    assert mlform("output", "--json", cwd=stack).stdout.strip() in ("{}", "")
    assert mlform("plan", "--detailed-exitcode", cwd=stack).code == 2


# --- outputs and state ------------------------------------------------------------------------

def test_outputs(applied, mlform):
    stack = applied
    url = f"memory://{stack.name}/default/endpoint/endpoint.clf"
    every = mlform("output", cwd=stack)
    assert every.code == 0, every
    assert f'url = "{url}"' in every.stdout and "version = 1" in every.stdout, every
    one = mlform("output", "url", cwd=stack)
    assert one.code == 0 and one.stdout.strip() == url, one
    as_json = mlform("output", "--json", cwd=stack)
    assert json.loads(as_json.stdout)["version"] == {"value": 1, "sensitive": False}
    missing = mlform("output", "nope", cwd=stack)
    assert missing.code == 1 and '"nope" not found' in missing.stderr, missing


def test_state_list_show_mv_pull_push(applied, mlform, tmp_path):
    stack = applied
    listed = mlform("state", "list", cwd=stack)
    assert listed.code == 0 and listed.stdout.split() == ADDRESSES, listed
    shown = mlform("state", "show", "model.clf", cwd=stack)
    assert shown.code == 0, shown
    assert "# model.clf" in shown.stdout and "version = 1" in shown.stdout, shown
    assert mlform("state", "show", "model.nope", cwd=stack).code == 1

    moved = mlform("state", "mv", "model.clf", "model.other", cwd=stack)
    assert moved.code == 0, moved
    assert "model.other" in load_state(stack).resources
    # The block is still model.clf: the plan wants to create it and drop model.other.
    plan = mlform("plan", "--format", "json", cwd=stack)
    actions = {c["address"]: c["change"]["actions"] for c in json.loads(plan.stdout)["resource_changes"]}
    assert actions["model.clf"] == ["create"] and actions["model.other"] == ["delete"], actions
    assert mlform("state", "mv", "model.other", "model.clf", cwd=stack).code == 0
    assert mlform("plan", "--detailed-exitcode", cwd=stack).code == 0

    pulled = mlform("state", "pull", cwd=stack)
    assert pulled.code == 0, pulled
    doc = json.loads(pulled.stdout)
    assert sorted(r["address"] for r in doc["resources"]) == ADDRESSES
    saved = tmp_path / "pulled.json"
    saved.write_text(pulled.stdout)
    # An older serial is refused; the same document is accepted.
    older = dict(doc, serial=doc["serial"] - 1)
    (tmp_path / "older.json").write_text(json.dumps(older))
    refused = mlform("state", "push", tmp_path / "older.json", cwd=stack)
    assert refused.code == 1 and "serial" in refused.stderr, refused
    pushed = mlform("state", "push", saved, cwd=stack)
    assert pushed.code == 0, pushed
    assert sorted(load_state(stack).resources) == ADDRESSES


def test_state_rm_then_import(applied, mlform):
    stack = applied
    calls = CallLog(stack)
    removed = mlform("state", "rm", "model.clf", cwd=stack)
    assert removed.code == 0, removed
    assert "model.clf" not in load_state(stack).resources
    assert object_id(stack, "model.clf") in read_store(stack), "state rm must not destroy"
    plan = mlform("plan", "--detailed-exitcode", cwd=stack)
    assert plan.code == 2 and "model.clf will be created" in plan.stdout, plan

    imported = mlform("import", "model.clf", object_id(stack, "model.clf"), cwd=stack)
    assert imported.code == 0, imported
    assert load_state(stack).get("model.clf").attributes["version"] == 1
    again = mlform("import", "model.clf", object_id(stack, "model.clf"), cwd=stack)
    assert again.code == 1 and "already managed" in again.stderr, again
    nothing = mlform("import", "endpoint.nope", "x", cwd=stack)
    assert nothing.code == 1, nothing
    after = mlform("plan", "--detailed-exitcode", cwd=stack)
    assert after.code == 0, after
    assert calls.since() == [], "state rm, import and plan must not change the service"
    assert_store_matches_state(stack)


# --- inspection commands ----------------------------------------------------------------------

def test_graph_providers_schema_validate(make_stack, mlform):
    stack = make_stack(STACK)
    dot = mlform("graph", "--format", "dot", cwd=stack)
    assert dot.code == 0, dot
    assert dot.stdout.startswith("digraph")
    assert '"model.clf" -> "dataset.train"' in dot.stdout and '"endpoint.clf" -> "model.clf"' in dot.stdout
    mermaid = mlform("graph", "--format", "mermaid", cwd=stack)
    assert mermaid.code == 0 and mermaid.stdout.startswith("graph"), mermaid
    assert "-->" in mermaid.stdout

    providers = mlform("providers", cwd=stack)
    assert providers.code == 0 and "memory" in providers.stdout, providers
    for kind in ("dataset", "endpoint", "model", "monitor", "pipeline", "training_cluster"):
        assert kind in providers.stdout

    whole = mlform("schema", cwd=stack)
    assert whole.code == 0 and isinstance(json.loads(whole.stdout), dict), whole
    model = json.loads(mlform("schema", "model", cwd=stack).stdout)
    assert "artifact" in model["properties"]
    assert mlform("schema", "nope", cwd=stack).code == 1

    valid = mlform("validate", cwd=stack)
    assert valid.code == 0 and "valid" in valid.stdout, valid
    (stack / "broken.hcl").write_text('model "bad" {\n  artifact = dataset.missing.uri\n}\n')
    invalid = mlform("validate", cwd=stack)
    assert invalid.code == 1, invalid
    assert "broken.hcl" in invalid.stderr and "Traceback" not in invalid.output, invalid
    assert read_calls(stack) == []


def test_fmt_check_then_fmt(make_stack, mlform):
    stack = make_stack(STACK, files={"extra.hcl": 'locals {\nx=1\n    y = "two"\n}\n'})
    check = mlform("fmt", "--check", cwd=stack)
    assert check.code == 3, check
    assert "extra.hcl" in check.stdout and "main.hcl" not in check.stdout, check
    assert (stack / "extra.hcl").read_text() == 'locals {\nx=1\n    y = "two"\n}\n', "--check changed a file"
    fixed = mlform("fmt", cwd=stack)
    assert fixed.code == 0, fixed
    assert mlform("fmt", "--check", cwd=stack).code == 0
    assert "x = 1" in (stack / "extra.hcl").read_text()
    assert mlform("validate", cwd=stack).code == 0


# --- failures ---------------------------------------------------------------------------------

FAILING = memory_provider(latency_ms=100, fail={"create:model.x": "boom"}) + """
provider "memory" {
  alias      = "slow"
  store      = ".mlform/memory.json"
  call_log   = ".mlform/calls.jsonl"
  latency_ms = 1500
}

dataset "slow" {
  provider = memory.slow
  source   = "s3://bucket/slow.csv"
}

model "x" {
  artifact  = "s3://bucket/model.tar.gz"
  framework = "torch"
}

endpoint "x" {
  model    = model.x
  replicas = 1
}

model "after_slow" {
  artifact  = dataset.slow.uri
  framework = "torch"
}
"""


def test_failed_create_reports_once_finishes_in_flight_and_starts_no_dependents(make_stack, mlform):
    stack = make_stack(FAILING)
    failed = mlform("apply", "--auto-approve", cwd=stack)
    assert failed.code == 1, failed
    assert failed.output.count("boom") == 1, failed
    assert "model.x" in failed.stderr and "Traceback" not in failed.output, failed
    called = [(c["op"], c["address"]) for c in read_calls(stack)]
    # dataset.slow was in flight when model.x failed: it finished and is recorded.
    assert ("create", "dataset.slow") in called
    state = load_state(stack)
    assert sorted(state.resources) == ["dataset.slow"], sorted(state.resources)
    assert state.get("dataset.slow").status == "ok"
    # Nothing new started after the failure: not the dependent, nor what waited on the slow one.
    assert ("create", "endpoint.x") not in called
    assert ("create", "model.after_slow") not in called
    assert mlform("state", "list", cwd=stack).code == 0
    assert_store_matches_state(stack)
    json.loads(state_path(stack).read_text())       # the snapshot is plain, valid JSON

    # Without the injected failure the next apply finishes the job.
    main = stack / "main.hcl"
    main.write_text(main.read_text().replace('  fail       = { "create:model.x" = "boom" }\n', ""))
    healed = mlform("apply", "--auto-approve", cwd=stack)
    assert healed.code == 0, healed
    assert sorted(load_state(stack).resources) == ["dataset.slow", "endpoint.x", "model.after_slow",
                                                   "model.x"]
    assert_store_matches_state(stack)


def test_partial_create_is_tainted_and_replaced(make_stack, mlform):
    stack = make_stack(memory_provider(fail={"create-partial:model.clf": "half made"}) + RESOURCES)
    failed = mlform("apply", "--auto-approve", cwd=stack)
    assert failed.code == 1, failed
    assert failed.output.count("half made") == 1, failed
    state = load_state(stack)
    assert state.get("model.clf").status == "tainted"
    assert "endpoint.clf" not in state.resources
    listed = mlform("state", "show", "model.clf", cwd=stack)
    assert "(tainted)" in listed.stdout, listed
    assert_store_matches_state(stack)               # the half-made object is tracked, not orphaned

    main = stack / "main.hcl"
    main.write_text(main.read_text().replace(
        '  fail       = { "create-partial:model.clf" = "half made" }\n', ""))
    plan = mlform("plan", "--format", "json", cwd=stack)
    assert plan.code == 0, plan
    changes = {c["address"]: c for c in json.loads(plan.stdout)["resource_changes"]}
    assert changes["model.clf"]["change"]["actions"] == ["delete", "create"]
    human = mlform("plan", "--detailed-exitcode", cwd=stack)
    assert human.code == 2 and "tainted" in human.stdout, human
    fixed = mlform("apply", "--auto-approve", cwd=stack)
    assert fixed.code == 0, fixed
    assert load_state(stack).get("model.clf").status == "ok"
    assert mlform("plan", "--detailed-exitcode", cwd=stack).code == 0
    assert_store_matches_state(stack)
