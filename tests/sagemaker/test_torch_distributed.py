"""Distributed training on the sagemaker provider: a run of more than one process gets
the PyTorch estimator's torch_distributed setting and the run contract's world size, as
the CreateTrainingJob request the emulator (moto in server mode) received shows."""

from __future__ import annotations

import hashlib
import json

import pytest

from mlform.providers.base import Desired
from mlform.providers.kit import calls as contract
from mlform.providers.sagemaker.pipelines import TORCH_DISTRIBUTED

from ._provider import apply, build

ADDRESS = "pipeline.train"


@pytest.fixture
def provider(aws, tmp_path):
    (tmp_path / "train.py").write_text('import json\nprint(json.dumps({"accuracy": 0.93}))\n')
    aws.control(training_metrics={"accuracy": 0.93})
    return build(aws, tmp_path)


def _job(aws, provider, tmp_path, cluster: dict, fingerprint: str) -> dict:
    address = f"training_cluster.{cluster['name']}"
    shape = {k: v for k, v in cluster.items() if k != "name"}
    apply(provider, "training_cluster", address, shape)
    attrs = {"fingerprint": fingerprint, "entrypoint": "train.py",
             "entrypoint_sha256": hashlib.sha256((tmp_path / "train.py").read_bytes()).hexdigest(),
             "hyperparameters": {"epochs": 1}, "gate": {"metric": "accuracy", "min": 0.5},
             "cluster": {"address": address, "instance_type": None, **shape}}
    live = provider.create(contract.plan(provider, Desired(ADDRESS, "pipeline", "train", attrs),
                                         None))
    return aws.client("sagemaker").describe_training_job(TrainingJobName=live.id)


@pytest.mark.parametrize("cluster, instances, world, backend", [
    ({"name": "cpu2", "accelerator": "cpu", "gpus_per_node": 0, "nodes": 2}, 2, 2, "gloo"),
    ({"name": "gpu4", "accelerator": "nvidia-a10g", "gpus_per_node": 4, "nodes": 1}, 1, 4,
     "nccl"),
    ({"name": "gpu2x4", "accelerator": "nvidia-a10g", "gpus_per_node": 4, "nodes": 2}, 2, 8,
     "nccl"),
])
def test_several_processes_launch_through_torch_distributed(aws, provider, tmp_path, cluster,
                                                            instances, world, backend):
    job = _job(aws, provider, tmp_path, cluster, "sha256:" + "e5" * 32)
    assert job["ResourceConfig"]["InstanceCount"] == instances
    # as the SDK's PyTorch(distribution={"torch_distributed": {"enabled": True}}) sends it
    assert job["HyperParameters"][TORCH_DISTRIBUTED] == json.dumps(True)
    assert job["Environment"]["MLFORM_WORLD_SIZE"] == str(world)
    assert job["Environment"]["MLFORM_DIST_BACKEND"] == backend
    [record] = provider.run_records()
    assert record["processes"] == world and record["nodes"] == cluster["nodes"]


def test_one_process_is_a_plain_job(aws, provider, tmp_path):
    job = _job(aws, provider, tmp_path, {"name": "one", "accelerator": "nvidia-a10g",
                                         "gpus_per_node": 1, "nodes": 1}, "sha256:" + "f6" * 32)
    assert TORCH_DISTRIBUTED not in job["HyperParameters"]
    assert job["Environment"]["MLFORM_WORLD_SIZE"] == "1"
    assert job["Environment"]["MLFORM_DIST_BACKEND"] == "nccl"
