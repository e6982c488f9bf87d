"""Shared pieces of the benchmarks: stack generators, in-process runs, result lines.

Every figure is printed as one JSON line and appended to
``bench-results/latest.jsonl`` (gitignored) at the repository root, so CI and
people read the same numbers.  Benchmarks measure and report; they assert only
correctness (a no-op plan has no changes, an apply created everything), never
timings.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

from mlform import operations
from mlform.plan.inputs import PlanOptions
from mlform.session import Session, SessionOptions

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench-results" / "latest.jsonl"


def record(bench: str, value: Any, unit: str, target: Any = None, **extra: Any) -> dict:
    """Print one figure as a JSON line and append it to bench-results/latest.jsonl."""
    line = {"bench": bench, "value": value, "unit": unit, "target": target, **extra,
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    text = json.dumps(line, sort_keys=False)
    print(text, flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(text + "\n")
    return line


# ---------------------------------------------------------------- stacks

def chained_stack(directory: Path, keys: int, latency_ms: float = 0) -> Path:
    """dataset -> model -> endpoint -> monitor, each block `for_each` over the one before:
    4 x `keys` resource instances, every instance referencing its upstream instance."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.hcl").write_text(f'''
provider "memory" {{
  store      = ".mlform/memory.json"
  latency_ms = {latency_ms}
}}

locals {{
  keys = [for i in range({keys}) : format("k%05d", i)]
}}

dataset "d" {{
  for_each = toset(local.keys)
  source   = "s3://bench/${{each.key}}.csv"
  format   = "csv"
  tags     = {{ team = "bench", key = each.key }}
}}

model "m" {{
  for_each  = dataset.d
  artifact  = each.value.uri
  framework = "sklearn"
}}

endpoint "e" {{
  for_each = model.m
  model    = each.value
  replicas = 1
  rollout  = {{ strategy = "canary", canary_percent = 10, bake_seconds = 0 }}
}}

monitor "mon" {{
  for_each = endpoint.e
  endpoint = each.value
  baseline = dataset.d[each.key]
  checks   = [{{ metric = "psi", threshold = 0.2 }}]
}}
''')
    return directory


def layered_stack(directory: Path, width: int, latency_ms: float) -> Path:
    """A DAG of depth 5: dataset -> pipeline -> model -> endpoint -> monitor, `width`
    instances each, every block `for_each` over the previous block."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.py").write_text("print('train')\n")
    (directory / "main.hcl").write_text(f'''
provider "memory" {{
  store      = ".mlform/memory.json"
  latency_ms = {latency_ms}
}}

dataset "l1" {{
  for_each = toset([for i in range({width}) : format("k%04d", i)])
  source   = "s3://bench/${{each.key}}.csv"
}}

pipeline "l2" {{
  for_each        = dataset.l1
  inputs          = {{ train = each.value }}
  entrypoint      = "train.py"
  hyperparameters = {{ key = each.key }}
}}

model "l3" {{
  for_each = pipeline.l2
  artifact = each.value.model_uri
}}

endpoint "l4" {{
  for_each = model.l3
  model    = each.value
}}

monitor "l5" {{
  for_each = endpoint.l4
  endpoint = each.value
  baseline = dataset.l1[each.key]
  checks   = [{{ metric = "psi", threshold = 0.2 }}]
}}
''')
    return directory


def many_blocks_hcl(blocks: int) -> str:
    """One HCL file of `blocks` resource blocks (datasets and the models built on them)."""
    parts = []
    for i in range(blocks // 2):
        parts.append(f'''
dataset "d{i}" {{
  source = "s3://bench/d{i}.csv"
  format = "csv"
  schema = {{ amount = "float", label = "int" }}
  tags   = {{ team = "bench", index = "{i}" }}
}}

model "m{i}" {{
  artifact  = dataset.d{i}.uri
  framework = "sklearn"
  stage     = "staging"
}}
''')
    return "".join(parts)


JSON_KINDS = ("dataset", "pipeline", "model", "endpoint", "monitor")


def many_resources_json(resources: int, references: bool = True) -> str:
    """One `main.mlform.json` stack of `resources` resource blocks on the memory provider:
    chains dataset -> pipeline -> model -> endpoint -> monitor (one of each kind per
    group), every block referencing the one before, with nested `settings`/`lifecycle`
    blocks and map/list attributes, indented as `json.dumps(indent=2)` writes it.

    `references=False` writes each `${...}` without its `${` and `}`: the same file,
    whose strings are all literals (the JSON reading alone, no expression compiled)."""
    text = _many_resources_json(resources)
    return text if references else re.sub(r"\$\{([^}]*)\}", r"\1", text)


def _many_resources_json(resources: int) -> str:
    groups = resources // len(JSON_KINDS)
    doc: dict[str, Any] = {
        "provider": {"memory": {"store": ".mlform/memory.json"}},
        "variable": {"epochs": {"type": "number", "default": 3}},
        "training_cluster": {"cpu": {"accelerator": "cpu", "nodes": 1}},
        **{kind: {} for kind in JSON_KINDS},
    }
    for i in range(groups):
        doc["dataset"][f"d{i}"] = {
            "source": f"s3://bench/d{i}.csv", "format": "csv",
            "schema": {"amount": "float", "label": "int"},
            "tags": {"team": "bench", "index": str(i)}}
        doc["pipeline"][f"p{i}"] = {
            "inputs": {"train": f"${{dataset.d{i}}}"}, "entrypoint": "train.py",
            "hyperparameters": {"epochs": "${var.epochs}", "lr": 0.01}}
        doc["model"][f"m{i}"] = {
            "artifact": f"${{pipeline.p{i}.model_uri}}", "framework": "sklearn",
            "stage": "staging"}
        doc["endpoint"][f"e{i}"] = {
            "model": f"${{model.m{i}}}", "replicas": 1,
            "rollout": {"strategy": "canary", "canary_percent": 10, "bake_seconds": 0},
            "settings": {"region": "eu-west-1"},
            "lifecycle": {"ignore_changes": ["replicas"]}}
        doc["monitor"][f"mon{i}"] = {
            "endpoint": f"${{endpoint.e{i}}}", "baseline": f"${{dataset.d{i}}}",
            "checks": [{"metric": "psi", "threshold": 0.2}]}
    # The shared cluster counts as one of the blocks: drop one monitor to keep the total.
    if groups:
        del doc["monitor"][f"mon{groups - 1}"]
    return json.dumps(doc, indent=2)


def json_stack(directory: Path, resources: int, references: bool = True) -> Path:
    """A stack directory whose only spec file is `many_resources_json(...)`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.py").write_text("print('train')\n")
    (directory / "main.mlform.json").write_text(many_resources_json(resources, references))
    return directory


# ---------------------------------------------------------------- in-process runs

class Timed:
    """What one in-process plan took, phase by phase (seconds)."""

    def __init__(self) -> None:
        self.session = self.lock_load = self.refresh = self.walk = self.total = 0.0
        self.cpu = 0.0      # CPU time of this process over the same span (all threads)

    def as_dict(self) -> dict:
        return {k: round(v, 4) for k, v in vars(self).items()}


def timed_plan(stack: Path, parallelism: int = 10, **options: Any):
    """Session creation + lock + load + plan, in this process; returns (plan, Timed)."""
    t = Timed()
    c0 = time.process_time()
    t0 = time.perf_counter()
    session = Session(stack, SessionOptions(parallelism=parallelism))
    t1 = time.perf_counter()
    try:
        with operations.locked(session, "plan"):
            state = operations.load_state(session)
            t2 = time.perf_counter()
            timing = operations.PlanTiming()
            plan = operations.plan(session, state, PlanOptions(parallelism=parallelism, **options),
                                   timing)
        t3 = time.perf_counter()
    finally:
        session.close()
    t.session, t.lock_load = t1 - t0, t2 - t1
    t.refresh, t.walk = timing.refresh_s, timing.walk_s + timing.facts_s
    t.total = t3 - t0
    t.cpu = time.process_time() - c0
    return plan, t


def apply_stack(stack: Path, parallelism: int = 10) -> dict:
    """Plan and apply in this process (as `mlform apply --auto-approve`, minus rendering).

    Returns the phase times and the apply result."""
    t0 = time.perf_counter()
    session = Session(stack, SessionOptions(parallelism=parallelism))
    try:
        with operations.locked(session, "apply"):
            state = operations.load_state(session)
            plan = operations.plan(session, state, PlanOptions(parallelism=parallelism))
            assert not plan.errored, [d.summary for d in plan.diagnostics]
            t1 = time.perf_counter()
            result = operations.apply(session, state, plan, parallelism=parallelism)
            t2 = time.perf_counter()
    finally:
        session.close()
    t3 = time.perf_counter()
    assert result.ok, result.failures[:5]
    return {"plan_s": t1 - t0, "apply_s": t2 - t1, "total_s": t3 - t0, "result": result,
            "plan": plan}


def changed(plan) -> list:
    return [c.address for c in plan.changes if c.action.value != "no-op"]
