"""The GPU proof (issue 13, item 5): the local provider's GPU paths on a machine with NVIDIA
GPUs, through the CLI as a user runs them, in one go.

1. NVML discovery: what `training_cluster` sees (count, names, memory, driver).
2. A CUDA training run: the quickstart's `train.py` on a one-GPU cluster (the run's record
   says where it ran and for how long).
3. torchrun on every GPU: the tabular-classifier module's `train_ddp.py` on a cluster
   with `gpus_per_node` = all of them (nccl), when there are two or more.
4. GPU serving: the trained model behind `settings { gpu = 0 }` and the same model on the
   CPU, side by side: p50/p99 of 200 one-row requests each over HTTP.

Skipped where NVML finds no GPU or torch has no CUDA (every figure here needs one); the
same paths are tested without a GPU, NVML mocked, in tests/local (test_gpus.py,
test_gpu_serving.py, test_distributed_training.py).  Figures go to bench-results like
every bench's (`record`); the README's "GPU" section quotes them.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ._support import REPO, record

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")

from mlform.providers.local import gpus  # noqa: E402

CLI = [sys.executable, "-m", "mlform.cli"]
FEATURES = [[4.5, 13, 0.1, 0.8]]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _machine():
    machine = gpus.discover()
    if not machine.gpus or not torch.cuda.is_available():
        pytest.skip(f"no usable GPU here: {machine.reason or 'torch has no CUDA'}")
    return machine


def _stack(directory: Path, count: int) -> Path:
    shutil.copytree(REPO / "stacks" / "quickstart", directory,
                    ignore=shutil.ignore_patterns(".mlform", "data", "__pycache__", "*.hcl"))
    shutil.copy(REPO / "modules" / "tabular-classifier" / "train_ddp.py", directory)
    ddp = f'''
training_cluster "all" {{
  accelerator   = "any-gpu"
  gpus_per_node = {count}
}}
pipeline "ddp" {{
  cluster         = training_cluster.all
  inputs          = {{ train = dataset.tx }}
  entrypoint      = "train_ddp.py"
  hyperparameters = {{ epochs = 5, lr = 0.01, hidden = 32 }}
}}
''' if count > 1 else ""
    (directory / "main.hcl").write_text(f'''
provider "local" {{}}
dataset "tx" {{
  source = "./data/transactions.csv"
  format = "csv"
}}
training_cluster "gpu" {{
  accelerator   = "any-gpu"
  gpus_per_node = 1
}}
pipeline "train" {{
  cluster         = training_cluster.gpu
  inputs          = {{ train = dataset.tx }}
  entrypoint      = "train.py"
  hyperparameters = {{ epochs = 5, lr = 0.01, hidden = 32 }}
}}
model "fraud" {{
  artifact = pipeline.train.model_uri
}}
endpoint "gpu" {{
  model    = model.fraud
  settings {{
    gpu = 0
  }}
}}
endpoint "cpu" {{
  model = model.fraud
}}
{ddp}
output "gpu_url" {{
  value = endpoint.gpu.url
}}
output "cpu_url" {{
  value = endpoint.cpu.url
}}
''')
    subprocess.run([sys.executable, str(directory / "make_data.py")], check=True,
                   capture_output=True, cwd=directory)
    return directory


def _mlform(stack: Path, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFORM_")}
    return subprocess.run([*CLI, "-C", str(stack), *args], env={**env, "NO_COLOR": "1"},
                          input="", capture_output=True, text=True, timeout=timeout)


def _latencies(url: str, n: int = 200) -> list[float]:
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                   "data": FEATURES[0]}]}).encode()
    times = []
    for i in range(n + 20):   # the first 20 warm the path up and are not counted
        request = urllib.request.Request(f"{url}/infer", body,
                                         {"Content-Type": "application/json"})
        start = time.perf_counter()
        with _OPENER.open(request, timeout=30) as answer:
            assert answer.status == 200
        if i >= 20:
            times.append((time.perf_counter() - start) * 1000)
    return times


def test_gpu_proof(tmp_path):
    machine = _machine()
    record("gpu_proof.nvml", len(machine.gpus), "GPUs", driver=machine.driver,
           names=[g.name for g in machine.gpus], memory_mib=[g.memory_mib for g in machine.gpus])
    stack = _stack(tmp_path / "stack", len(machine.gpus))
    try:
        applied = _mlform(stack, "apply", "--auto-approve")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        runs = json.loads(_mlform(stack, "runs", "list", "--json").stdout)["runs"]
        by_pipeline = {r["pipeline"]: r for r in runs if r["status"] == "succeeded"}
        train = by_pipeline["pipeline.train"]
        assert train["accelerator"] == "any-gpu" and train["gpus_per_node"] == 1
        record("gpu_proof.cuda_training", train["duration_seconds"], "s",
               metrics=train["metrics"], steps=len(train["steps"]))
        if len(machine.gpus) > 1:
            ddp = by_pipeline["pipeline.ddp"]
            assert ddp["processes"] == len(machine.gpus)
            record("gpu_proof.torchrun_all_gpus", ddp["duration_seconds"], "s",
                   processes=ddp["processes"], metrics=ddp["metrics"])
        state = json.loads((stack / ".mlform" / "state" / "default.json").read_text())
        urls = {k: v["value"] for k, v in state["outputs"].items()}
        for where in ("gpu", "cpu"):
            times = _latencies(urls[f"{where}_url"])
            cuts = statistics.quantiles(times, n=100)
            record(f"gpu_proof.serving_{where}", round(statistics.median(times), 3), "ms p50",
                   p99_ms=round(cuts[98], 3), requests=len(times))
    finally:
        _mlform(stack, "destroy", "--auto-approve")
