"""The no-op memo (`mlform.plan.memo`): a plan that reuses the last plan's no-ops is the
plan a full walk makes, over random stacks and random edits; and it does reuse them.

Each example builds a memory-provider stack (for_each chains, a pipeline whose
entrypoint is a fact, a dataset whose local file is a provider fact, optionally a
sensitive variable and a `file()` call), applies it, plans once (the memo is saved),
edits the stack (variables, literals, keys, files the facts and `file()` read, the
entrypoint), then plans with the saved memo and again with none: the two plans'
JSON (internal fields included) must be equal.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlform import operations
from mlform.plan.codec import plan_to_json
from mlform.plan.inputs import PlanOptions
from mlform.session import Session, SessionOptions

KEYS = ("a", "b", "c", "d")


def write_stack(root: Path, spec: dict) -> None:
    """The stack a spec dict describes (see `specs`)."""
    keys = ", ".join(f'"{k}"' for k in spec["keys"])
    tags = '{ team = var.team }'
    if spec["sensitive"]:
        tags = '{ team = var.team, token = var.token }'
    if spec["reads_file"]:
        tags = '{ team = var.team, note = file("note.txt") }'
    (root / "main.hcl").write_text(f'''
provider "memory" {{
  store = ".mlform/memory.json"
}}
variable "team" {{
  default = "{spec["team"]}"
}}
variable "token" {{
  default   = "s3cret-{spec["team"]}"
  sensitive = true
}}
locals {{
  keys = [{keys}]
}}
dataset "d" {{
  for_each = toset(local.keys)
  source   = "s3://bench/${{each.key}}-{spec["version"]}.csv"
  format   = "csv"
  tags     = {tags}
}}
dataset "local" {{
  source = "data/train.csv"
  format = "csv"
}}
model "m" {{
  for_each  = dataset.d
  artifact  = each.value.uri
  framework = "{spec["framework"]}"
  lifecycle {{
    ignore_changes = [framework]
  }}
}}
endpoint "e" {{
  for_each = model.m
  model    = each.value
  replicas = {spec["replicas"]}
  rollout  = {{ strategy = "canary", canary_percent = 10, bake_seconds = 0 }}
}}
training_cluster "cpu" {{
  accelerator   = "cpu"
  gpus_per_node = 0
  nodes         = 1
}}
pipeline "train" {{
  cluster    = training_cluster.cpu
  entrypoint = "train.py"
  inputs     = {{ train = dataset.local }}
}}
''')
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "train.csv").write_text(f"x,y\n1,{spec['data']}\n")
    (root / "train.py").write_text(f"print({spec['entrypoint']!r})\n")
    (root / "note.txt").write_text(spec["note"])


specs = st.fixed_dictionaries({
    "keys": st.lists(st.sampled_from(KEYS), min_size=1, max_size=4, unique=True),
    "team": st.sampled_from(["ml", "ops"]),
    "version": st.sampled_from(["v1", "v2"]),
    "framework": st.sampled_from(["sklearn", "torch"]),
    "replicas": st.integers(1, 3),
    "sensitive": st.booleans(),
    "reads_file": st.booleans(),
    "data": st.integers(0, 2),
    "entrypoint": st.sampled_from(["one", "two"]),
    "note": st.sampled_from(["n1", "n2"]),
    # a live model's framework changed outside mlform: ignored there (ignore_changes),
    # but the endpoints that reference the model see the new value
    "drift": st.sampled_from([None, "xgboost"]),
})


def drift_models(root: Path, framework: str | None) -> None:
    """Change the framework of every live model in the memory provider's store."""
    if framework is None:
        return
    store = root / ".mlform" / "memory.json"
    assert not store.with_name("memory.json.log").exists(), "the store was not compacted"
    document = json.loads(store.read_text())
    for object_id, obj in document["objects"].items():
        if "/model.m[" in object_id:
            obj["attributes"]["framework"] = framework
    store.write_text(json.dumps(document))


def plan(root: Path):
    session = Session(root, SessionOptions())
    try:
        with operations.locked(session, "plan"):
            state = operations.load_state(session)
            timing = operations.PlanTiming()
            result = operations.plan(session, state, PlanOptions(), timing)
    finally:
        session.close()
    return result, timing


def apply(root: Path) -> None:
    session = Session(root, SessionOptions())
    try:
        with operations.locked(session, "apply"):
            state = operations.load_state(session)
            planned = operations.plan(session, state, PlanOptions())
            assert not planned.errored, [d.summary for d in planned.diagnostics]
            assert operations.apply(session, state, planned, parallelism=4).ok
    finally:
        session.close()


def memo_file(root: Path) -> Path:
    return root / ".mlform" / "cache" / "plan-memo.default.json"


def comparable(result) -> dict:
    doc = plan_to_json(result, include_internal=True)
    doc.pop("created_at", None)
    return doc


FIELDS = ("keys", "team", "version", "framework", "replicas", "sensitive", "reads_file",
          "data", "entrypoint", "note", "drift")


@st.composite
def stack_and_edit(draw):
    before = draw(specs)
    after = dict(before)
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        after[name] = draw(specs)[name]
    return before, after


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=stack_and_edit())
def test_a_plan_with_the_memo_equals_a_full_plan(tmp_path_factory, case):
    before, after = case
    before = {**before, "drift": None}
    root = tmp_path_factory.mktemp("memo")
    write_stack(root, before)
    apply(root)
    plan(root)                                    # saves the memo of this state
    assert memo_file(root).exists()
    write_stack(root, after)
    drift_models(root, after["drift"])
    saved = memo_file(root).read_bytes()

    with_memo, timing = plan(root)
    memo_file(root).unlink()
    full, full_timing = plan(root)
    assert full_timing.memo_hits == 0
    assert comparable(with_memo) == comparable(full)
    if after == before and not before["sensitive"] and not before["reads_file"]:
        # nothing changed: every instance but the ones never memoised is a hit
        assert timing.memo_hits == len(before["keys"]) * 3 + 3
    memo_file(root).write_bytes(saved)
    shutil.rmtree(root)


def test_unchanged_instances_are_answered_by_the_memo_and_changed_ones_are_planned(tmp_path):
    spec = {"keys": ["a", "b"], "team": "ml", "version": "v1", "framework": "torch",
            "replicas": 1, "sensitive": False, "reads_file": False, "data": 0,
            "entrypoint": "one", "note": "n1", "drift": None}
    write_stack(tmp_path, spec)
    apply(tmp_path)
    first, timing = plan(tmp_path)
    assert timing.memo_hits == 0 and not [c for c in first.changes if c.is_change]
    again, timing = plan(tmp_path)
    assert timing.memo_hits == 9          # 2 keys x 3 blocks, the local dataset, cluster, pipeline
    # the entrypoint is a fact: its change reaches the pipeline through the memo
    write_stack(tmp_path, {**spec, "entrypoint": "two"})
    changed, timing = plan(tmp_path)
    assert [c.address for c in changed.changes if c.is_change] == ["pipeline.train"]
    assert timing.memo_hits == 8
    # one key's upstream changes: only its chain is planned again
    write_stack(tmp_path, {**spec, "replicas": 2})
    changed, timing = plan(tmp_path)
    assert sorted(c.address for c in changed.changes if c.is_change) == \
        ['endpoint.e["a"]', 'endpoint.e["b"]']
    # drift the model ignores still reaches the endpoints that reference it
    write_stack(tmp_path, spec)
    plan(tmp_path)
    drift_models(tmp_path, "xgboost")
    drifted, timing = plan(tmp_path)
    assert sorted(c.address for c in drifted.changes if c.is_change) == \
        ['endpoint.e["a"]', 'endpoint.e["b"]']


def test_blocks_that_read_files_or_hold_sensitive_values_are_always_planned(tmp_path):
    spec = {"keys": ["a"], "team": "ml", "version": "v1", "framework": "torch",
            "replicas": 1, "sensitive": False, "reads_file": True, "data": 0,
            "entrypoint": "one", "note": "n1", "drift": None}
    write_stack(tmp_path, spec)
    apply(tmp_path)
    plan(tmp_path)
    _, timing = plan(tmp_path)
    assert timing.memo_hits == 5           # dataset.d["a"] reads note.txt: never memoised
    write_stack(tmp_path, {**spec, "note": "n2"})
    changed, _ = plan(tmp_path)
    assert [c.address for c in changed.changes if c.is_change][:1] == ['dataset.d["a"]']


def test_the_memo_salt_names_the_provider_kit_and_each_file_once():
    """The kit is planning code too (`kit.plans`, `kit.reruns`): an edit to it must make
    a memo of older code unused, in a checkout (its own folder) as when installed."""
    import mlform.providers.kit as kit

    class NoProviders:
        def items(self):
            return []

    files = [path for path, _, _ in operations._code_files(NoProviders())]
    kit_dir = list(kit.__path__)[0]
    assert any(path.startswith(kit_dir + "/") for path in files)
    assert len(files) == len(set(files))
