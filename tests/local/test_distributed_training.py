"""Distributed training on the local provider: real torchrun runs, CPU processes, gloo.

The training script is written by the test: each rank trains a one-feature logistic
regression wrapped in DistributedDataParallel on its own shard of the rows (so only the
all-reduce of the gradients keeps the ranks' weights equal), records what it saw in
``rank-<RANK>.json`` beside the stack, and rank 0 alone writes the model and metrics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mlform.providers.base import Desired, ProviderError
from mlform.providers.kit import calls as contract
from mlform.providers.local import torchrun
from mlform.providers.local.pipelines import PipelineHandler, PipelineSettings, RunDir

from .test_runs import lost, path_of, pipeline, stack  # noqa: F401  (the stack fixture)

torch = pytest.importorskip("torch")

DDP = '''
import json, os, sys
from pathlib import Path

rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
seen = Path(os.environ["MLFORM_INPUT_TRAIN"]).parent
mark = Path(os.environ["MARK_DIR"]) / f"rank-{rank}.json"
mark.write_text(json.dumps({"pid": os.getpid()}))
if os.environ.get("HANG"):          # the timeout test: every rank stays until it is killed
    import threading
    threading.Event().wait()

import torch
import torch.distributed as dist

dist.init_process_group(os.environ["MLFORM_DIST_BACKEND"])
rows = [line.split(",") for line in open(os.environ["MLFORM_INPUT_TRAIN"]).read().split()[1:]]
x = torch.tensor([[float(r[0])] for r in rows])
y = torch.tensor([[float(r[1])] for r in rows])
shard = slice(rank, None, world)    # every rank its own rows
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(1, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.5)
for step in range(20):
    opt.zero_grad()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[shard]), y[shard])
    loss.backward()                 # DDP all-reduces the gradients here
    opt.step()
if rank == 1 and os.environ.get("FAIL_RANK_1"):
    raise RuntimeError("rank 1 cannot read its shard")
total = torch.tensor([float(len(x[shard]))])
dist.all_reduce(total)
mark.write_text(json.dumps({
    "pid": os.getpid(), "rows": len(x[shard]), "total_rows": total.item(),
    "weight": model.module.weight.item(), "bias": model.module.bias.item(),
    "env": {k: os.environ[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                       "MASTER_PORT", "MLFORM_WORLD_SIZE",
                                       "MLFORM_DIST_BACKEND", "MLFORM_DEVICE")}}))
if rank == 0:                       # the run contract: only rank 0 publishes
    out = Path(os.environ["MLFORM_OUTPUT_DIR"])
    accuracy = ((model.module(x) > 0).float() == y).float().mean().item()
    torch.jit.save(torch.jit.script(model.module), str(out / "model.pt"))
    (out / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "rank": rank}))
dist.barrier()                      # leaving the group together
dist.destroy_process_group()
'''


def distributed(stack, processes=2, **extra) -> Desired:
    (stack["env"].stack_dir / "train.py").write_text(DDP)
    environment = {"MARK_DIR": str(stack["env"].stack_dir), **extra.pop("environment", {})}
    d = pipeline(stack, settings={"processes_per_node": processes}, **extra)
    return Desired(d.address, d.kind, d.name,
                   {**d.attributes, "environment": {**d.attributes["environment"], **environment}})


def marks(stack) -> dict[int, dict]:
    return {int(p.stem.split("-")[1]): json.loads(p.read_text())
            for p in stack["env"].stack_dir.glob("rank-*.json")}


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_two_processes_train_and_only_rank_0_publishes(stack, progress):
    handler = PipelineHandler(stack["env"])
    live = handler.create(contract.plan(handler, distributed(stack), None))
    output = path_of(live.attributes["model_uri"])
    ranks = marks(stack)
    assert sorted(ranks) == [0, 1], "both ranks ran"
    for rank, seen in ranks.items():
        assert seen["env"]["RANK"] == seen["env"]["LOCAL_RANK"] == str(rank)
        assert seen["env"]["WORLD_SIZE"] == seen["env"]["MLFORM_WORLD_SIZE"] == "2"
        assert seen["env"]["MLFORM_DIST_BACKEND"] == "gloo"
        assert seen["env"]["MLFORM_DEVICE"] == "cpu"
        assert seen["env"]["MASTER_ADDR"] in ("127.0.0.1", "localhost")
        assert seen["total_rows"] == 8.0 and seen["rows"] == 4   # all_reduce across the ranks
    # each rank saw other rows: only DDP's gradient all-reduce keeps the weights equal
    assert ranks[0]["weight"] == pytest.approx(ranks[1]["weight"])
    assert ranks[0]["bias"] == pytest.approx(ranks[1]["bias"])
    # rank 0 alone wrote the output, and the run's metrics are its own
    assert sorted(p.name for p in output.iterdir()) == ["metrics.json", "model.pt"]
    assert live.attributes["metrics"] == {"accuracy": 1.0, "rank": 0}
    model = torch.jit.load(str(output / "model.pt"))
    assert model(torch.tensor([[2.0]])).item() > 0 > model(torch.tensor([[-2.0]])).item()
    run = RunDir(output.parent)
    assert run.record()["processes"] == 2 and run.record()["status"] == "succeeded"
    assert len(list(run.ranks.glob("*/attempt_0/1/stdout.log"))) == 1, "rank 1's own log is kept"
    assert any("2 processes (gloo)" in e.message for e in progress)


def test_a_failure_in_one_rank_fails_the_run_with_its_message(stack):
    handler = PipelineHandler(stack["env"])
    d = distributed(stack, environment={"FAIL_RANK_1": "1"})
    with pytest.raises(ProviderError) as failure:
        handler.create(contract.plan(handler, d, None))
    message = failure.value.message
    assert "train.py exited with status 1 in rank 1 of 2" in message
    assert "last lines of rank 1:" in message
    assert "RuntimeError: rank 1 cannot read its shard" in message
    assert failure.value.address == "pipeline.train"
    assert handler.read(lost()) is None, "nothing is published"
    [record] = (stack["env"].root / "runs").rglob("run.json")
    run = RunDir(record.parent)
    assert run.record()["status"] == "failed" and "in rank 1 of 2" in run.record()["error"]
    assert torchrun._marked(run.marker) == [], "no rank is left running"


def test_a_timeout_stops_every_rank(stack):
    handler = PipelineHandler(stack["env"])
    d = distributed(stack, environment={"HANG": "1"}, timeout_seconds=20)
    with pytest.raises(ProviderError, match="took longer than timeout_seconds = 20"):
        handler.create(contract.plan(handler, d, None))
    ranks = marks(stack)
    assert sorted(ranks) == [0, 1], "both ranks had started"
    # the ranks lead sessions of their own: killing torchrun's group alone would miss them
    for seen in ranks.values():
        assert not Path(f"/proc/{seen['pid']}").exists() or \
            ") Z" in Path(f"/proc/{seen['pid']}/stat").read_text()
    [record] = (stack["env"].root / "runs").rglob("run.json")
    assert torchrun._marked(RunDir(record.parent).marker) == []


# -- at plan ---------------------------------------------------------------------------

CPU_CLUSTER = {"address": "training_cluster.cpu", "accelerator": "cpu", "gpus_per_node": 0,
               "nodes": 1, "instance_type": None}


def test_one_process_is_the_plain_run(stack):
    launch = torchrun.launch_of([], PipelineSettings.of({}).processes_per_node)
    assert (launch.processes, launch.backend, launch.distributed) == (1, "gloo", False)
    assert torchrun.launch_of([0, 1], None) == torchrun.Launch(2, "nccl")


def test_several_nodes_on_local_is_refused_at_plan(stack):
    handler = PipelineHandler(stack["env"])
    d = pipeline(stack, cluster={**CPU_CLUSTER, "nodes": 2})
    [problem] = contract.validate(handler, d)
    assert problem.severity == "error" and problem.address == "pipeline.train"
    assert "nodes = 2" in problem.summary and "this one machine" in problem.summary
    assert "nodes = 1" in problem.hint
    assert contract.validate(handler, pipeline(stack, cluster=CPU_CLUSTER)) == []


def test_processes_per_node_on_a_gpu_cluster_is_refused_at_plan(stack):
    handler = PipelineHandler(stack["env"])
    gpu = {**CPU_CLUSTER, "accelerator": "nvidia-h100", "gpus_per_node": 2}
    [problem] = contract.validate(handler, pipeline(stack, cluster=gpu,
                                                    settings={"processes_per_node": 4}))
    assert "processes_per_node = 4" in problem.summary and "one process per GPU" in problem.summary


def test_the_settings_model(stack):
    assert PipelineSettings.of({"settings": {"processes_per_node": 3}}).processes_per_node == 3
    for bad in ({"processes_per_node": 0}, {"processes_per_nodes": 2}):
        with pytest.raises(ValueError):
            PipelineSettings.model_validate(bad)


# -- the tabular-classifier module's DDP script -------------------------------------------

MODULE_DDP = Path(__file__).resolve().parents[2] / "modules" / "tabular-classifier" / "train_ddp.py"


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_the_modules_ddp_script_trains_on_two_processes(stack):
    from mlform.providers.local.datasets import DatasetHandler

    env = stack["env"]
    rows = ["a,b,label"] + [f"{i % 7 - 3},{(i * 5) % 11 - 5},{int(i % 7 - 3 > 0)}"
                            for i in range(300)]
    (env.stack_dir / "blobs.csv").write_text("\n".join(rows) + "\n")
    datasets = DatasetHandler(env)
    data = datasets.create(contract.plan(datasets, Desired(
        "dataset.blobs", "dataset", "blobs", {"source": "blobs.csv", "format": "csv"}), None))
    (env.stack_dir / "train.py").write_text(MODULE_DDP.read_text())
    d = pipeline(stack, {"epochs": 20, "lr": 0.05}, settings={"processes_per_node": 2})
    d = Desired(d.address, d.kind, d.name, {**d.attributes, "inputs": {"train": {
        "address": "dataset.blobs", "uri": data.attributes["uri"],
        "digest": data.attributes["digest"], "format": "csv"}}})
    handler = PipelineHandler(env)
    live = handler.create(contract.plan(handler, d, None))
    metrics = live.attributes["metrics"]
    assert metrics["processes"] == 2 and metrics["rows"] == 300
    assert metrics["accuracy"] >= 0.9
    output = path_of(live.attributes["model_uri"])
    assert json.loads((output / "signature.json").read_text())["inputs"] == ["a", "b"]
    model = torch.jit.load(str(output / "model.pt"))
    assert model(torch.tensor([[3.0, 0.0], [-3.0, 0.0]])).argmax(1).tolist() == [1, 0]


SPEC = '''provider "local" {}
provider "memory" {}

dataset "d" {
  source = "./d.csv"
  format = "csv"
}

training_cluster "wide" {
  provider      = memory   # a cluster the local provider does not serve: no check of its own
  accelerator   = "cpu"
  gpus_per_node = 0
  nodes         = 2
}

pipeline "train" {
  cluster    = training_cluster.wide
  inputs     = { train = dataset.d }
  entrypoint = "train.py"
}

pipeline "typo" {
  inputs     = { train = dataset.d }
  entrypoint = "train.py"
  settings {
    processes_per_nod = 2
  }
}
'''


def test_plan_locates_several_nodes_and_a_mistyped_setting(tmp_path):
    from ._cli import mlform

    (tmp_path / "main.hcl").write_text(SPEC)
    (tmp_path / "d.csv").write_text("amount,label\n1,1\n-1,0\n")
    (tmp_path / "train.py").write_text("print('never run')\n")
    result = mlform(tmp_path, "plan")
    text = result.stdout + result.stderr
    assert result.code == 1, text
    assert ("error: pipeline.train runs on training_cluster.wide with nodes = 2, but the local "
            "provider trains on this one machine\n  at main.hcl:16:1") in text
    assert 'unknown setting "processes_per_nod"\n  at main.hcl:25:3' in text
    assert 'Did you mean "processes_per_node"?' in text
    assert "Traceback" not in text


def test_processes_per_node_is_part_of_the_run_fingerprint():
    """More processes train a different model (batches per step, each rank's seed): a
    changed count re-runs the pipeline, with the reason; one process, or none given, keeps
    every fingerprint as it was before the setting existed."""
    from mlform.plan.fingerprints import fingerprint, rerun_reasons

    base = {"inputs": {}, "hyperparameters": {"lr": 0.1}, "cluster": None}
    plain = fingerprint(base, "sha256:e")
    assert fingerprint({**base, "settings": {"processes_per_node": 1}}, "sha256:e") == plain
    two = {**base, "settings": {"processes_per_node": 2}}
    assert fingerprint(two, "sha256:e") != plain
    assert fingerprint({**base, "settings": {"processes_per_node": 4}}, "sha256:e") \
        != fingerprint(two, "sha256:e")
    assert "processes_per_node 1 → 2" in rerun_reasons(base, two)
