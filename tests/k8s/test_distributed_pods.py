"""A node with several GPUs runs one process per GPU: the training pod launches the
entrypoint through torchrun (kit.torchrun).  The pod harness runs the pod's program
here, on CPU: the ranks join a gloo process group themselves (the run contract says
nccl, which needs CUDA), so two real processes must meet for the run to succeed."""

from __future__ import annotations

from pathlib import Path

import pytest

from _kube import pipeline_desired
from mlform.providers.base import LiveObject, ProviderError
from mlform.providers.kit import calls
from mlform.providers.kubernetes.pod import train_command

pytestmark = pytest.mark.timeout(300)

GPU2 = {"address": "training_cluster.g", "namespace": "default", "accelerator": "nvidia-h100",
        "gpus_per_node": 2, "nodes": 1}

_DDP = """\
import json, os, pathlib
import torch, torch.distributed as dist
dist.init_process_group("gloo")
total = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(total)
if dist.get_rank() == 0:
    print(json.dumps({"step": 1, "sum": total.item()}))
    out = pathlib.Path(os.environ["MLFORM_OUTPUT_DIR"])
    (out / "model.pt").write_bytes(b"model")
    (out / "metrics.json").write_text(json.dumps({
        "accuracy": 0.9, "sum": total.item(), "world_size": int(os.environ["WORLD_SIZE"]),
        "contract": [os.environ["MLFORM_WORLD_SIZE"], os.environ["MLFORM_DIST_BACKEND"]]}))
dist.destroy_process_group()
"""

_RANK_FAILS = """\
import os, sys
if os.environ["RANK"] == "1":
    sys.exit("rank one ran out of memory")
"""


def test_two_gpus_run_two_processes_through_torchrun(k8s, pod_harness, tmp_path):
    desired = pipeline_desired(k8s, tmp_path, _DDP, cluster=GPU2)
    live = k8s.create(calls.plan(k8s, desired))
    k8s.made.append(live)
    metrics = live.attributes["metrics"]
    assert metrics["sum"] == 3.0 and metrics["world_size"] == 2   # ranks 0 and 1 met
    assert metrics["contract"] == ["2", "nccl"]
    [record] = k8s.run_records("pipeline.train")
    assert record["processes"] == 2 and record["gpus_per_node"] == 2
    assert [s["metrics"] for s in record["steps"]] == [{"sum": 3.0}]   # rank 0's log line


def test_a_failing_rank_fails_the_run_with_its_message(k8s, pod_harness, tmp_path):
    desired = pipeline_desired(k8s, tmp_path, _RANK_FAILS, cluster=GPU2)
    with pytest.raises(ProviderError) as failed:
        k8s.create(calls.plan(k8s, desired))
    k8s.made.append(LiveObject("pipeline.train", "pipeline", None, desired.attributes))
    assert "rank 1 of 2 exited with code 1" in failed.value.message
    assert "rank one ran out of memory" in failed.value.message


def test_several_nodes_use_the_static_rendezvous_at_pod_0(tmp_path):
    work = {"nodes": 2, "processes_per_node": 4, "device": "cuda", "run_id": "r"}
    environ = {"JOB_COMPLETION_INDEX": "1", "MASTER_ADDR": "r-0.r.ns.svc",
               "MASTER_PORT": "29500", "WORLD_SIZE": "2"}
    argv, added, world = train_command(work, Path("/code/train.py"), tmp_path, environ)
    assert world == 8 and added == {"NODE_RANK": "1"}
    assert argv[1:3] == ["-m", "torch.distributed.run"]
    flags = dict(zip(argv[3:argv.index("--no-python"):2], argv[4:argv.index("--no-python"):2]))
    assert flags == {"--nnodes": "2", "--nproc-per-node": "4", "--node-rank": "1",
                     "--master-addr": "r-0.r.ns.svc", "--master-port": "29500",
                     "--max-restarts": "0", "--log-dir": str(tmp_path / "ranks"), "--tee": "3",
                     "--local-ranks-filter": "0"}
    assert argv[-2:] == ["-u", "/code/train.py"]


def test_one_process_per_node_runs_the_script_itself(tmp_path):
    work = {"nodes": 2, "processes_per_node": 1, "device": "cpu", "run_id": "r"}
    argv, added, world = train_command(work, Path("/code/train.py"), tmp_path,
                                       {"JOB_COMPLETION_INDEX": "1", "WORLD_SIZE": "2"})
    assert argv[1:] == ["/code/train.py"] and world == 2
    assert added == {"NODE_RANK": "1", "RANK": "1", "LOCAL_RANK": "0"}
