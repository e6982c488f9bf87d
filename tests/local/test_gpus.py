"""GPU discovery (NVML mocked with pytest-mock) and the capacity check of `training_cluster`."""

from __future__ import annotations

from types import SimpleNamespace

import pynvml
import pytest

from mlform.providers.base import Desired, LiveObject, ProviderError
from mlform.providers.local import gpus
from mlform.providers.local.clusters import ClusterHandler, devices_for
from mlform.providers.local.gpus import Gpu, Machine
from mlform.providers.kit import calls as contract

H100 = ("NVIDIA H100 80GB HBM3", 81559)
A100 = ("NVIDIA A100-SXM4-40GB", 40960)
L40S = ("NVIDIA L40S", 46068)


@pytest.fixture(autouse=True)
def fresh_discovery():
    """Discovery is cached per process: each test asks NVML again."""
    gpus.forget()
    yield
    gpus.forget()


@pytest.fixture
def nvml(mocker):
    """fake(devices, driver=...): pynvml answers as a driver with these (name, MiB) devices."""
    def fake(devices, driver="550.54.15"):
        mocker.patch("pynvml.nvmlInit")
        mocker.patch("pynvml.nvmlShutdown")
        mocker.patch("pynvml.nvmlSystemGetDriverVersion", return_value=driver)
        mocker.patch("pynvml.nvmlDeviceGetCount", return_value=len(devices))
        mocker.patch("pynvml.nvmlDeviceGetHandleByIndex", side_effect=lambda i: i)
        mocker.patch("pynvml.nvmlDeviceGetName", side_effect=lambda h: devices[h][0])
        mocker.patch("pynvml.nvmlDeviceGetMemoryInfo",
                     side_effect=lambda h: SimpleNamespace(total=devices[h][1] * 1024 * 1024,
                                                           used=0, free=devices[h][1] * 1024 * 1024))
        mocker.patch("pynvml.nvmlDeviceGetUUID", side_effect=lambda h: f"GPU-{h:04d}")
        return pynvml
    return fake


def no_driver(mocker, code=pynvml.NVML_ERROR_DRIVER_NOT_LOADED):
    mocker.patch("pynvml.nvmlInit", side_effect=pynvml.NVMLError(code))


# -- discovery ---------------------------------------------------------------------

def test_no_gpu(nvml):
    nvml([])
    assert gpus.discover() == Machine((), "550.54.15", "the NVIDIA driver 550.54.15 reports no GPU")


def test_one_gpu(nvml):
    nvml([A100])
    assert gpus.discover() == Machine((Gpu(0, "NVIDIA A100-SXM4-40GB", 40960, "GPU-0000"),),
                                      "550.54.15", "")


def test_eight_gpus(nvml):
    nvml([H100] * 8)
    machine = gpus.discover()
    assert [g.index for g in machine.gpus] == list(range(8))
    assert {(g.name, g.memory_mib) for g in machine.gpus} == {H100}
    assert len(machine.matching("nvidia-h100")) == 8


def test_names_as_bytes_from_older_bindings(nvml, mocker):
    nvml([A100])
    mocker.patch("pynvml.nvmlDeviceGetName", return_value=b"NVIDIA A100-SXM4-40GB")
    assert gpus.discover().gpus[0].name == "NVIDIA A100-SXM4-40GB"


def test_driver_not_loaded(mocker):
    no_driver(mocker)
    assert gpus.discover() == Machine((), None, "NVML: driver not loaded")


def test_driver_library_missing(mocker):
    no_driver(mocker, pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    assert gpus.discover().reason == "NVML: NVIDIA driver library libnvidia-ml.so not found"


def test_bindings_not_installed(mocker):
    mocker.patch.dict("sys.modules", {"pynvml": None})
    assert gpus.discover() == Machine((), None, "nvidia-ml-py (pynvml) is not installed")


def test_discovery_is_asked_once_per_process(nvml):
    fake = nvml([A100])
    gpus.discover()
    gpus.discover()
    assert fake.nvmlInit.call_count == 1
    assert fake.nvmlShutdown.call_count == 1


@pytest.mark.parametrize("accelerator, name, ok", [
    ("nvidia-h100", "NVIDIA H100 80GB HBM3", True),
    ("nvidia-h100", "NVIDIA A100-SXM4-40GB", False),
    ("NVIDIA-A100", "NVIDIA A100-SXM4-40GB", True),
    ("nvidia-a100-40gb", "NVIDIA A100-SXM4-40GB", True),
    ("nvidia-a100-80gb", "NVIDIA A100-SXM4-40GB", False),
    ("nvidia-l4", "NVIDIA L4", True),
    ("nvidia-l4", "NVIDIA L40S", False),
    ("nvidia-h200", "NVIDIA GH200 480GB", False),
    ("any-gpu", "Tesla T4", True),
    ("cpu", "NVIDIA H100 80GB HBM3", False),
])
def test_accelerator_matching(accelerator, name, ok):
    assert gpus.matches(accelerator, name) is ok


# -- the capacity check --------------------------------------------------------------

def cluster(name="gpu", **attributes) -> Desired:
    return Desired(f"training_cluster.{name}", "training_cluster", name, attributes)


def problems(env, **attributes) -> list[str]:
    return [d.summary for d in contract.validate(ClusterHandler(env), cluster(**attributes))]


def test_too_few_gpus(local_env, nvml):
    nvml([A100])
    assert problems(local_env, accelerator="nvidia-h100", gpus_per_node=2, nodes=1) == [
        "training_cluster.gpu asks for 2 × nvidia-h100 but this machine has 1 GPU: "
        "NVIDIA A100-SXM4-40GB (40960 MiB)"]


def test_no_gpu_because_no_driver(local_env, mocker):
    no_driver(mocker)
    assert problems(local_env, accelerator="nvidia-h100", gpus_per_node=1) == [
        "training_cluster.gpu asks for 1 × nvidia-h100 but this machine has no NVIDIA GPU "
        "(NVML: driver not loaded)"]


def test_more_than_eight(local_env, nvml):
    nvml([H100] * 8)
    assert problems(local_env, accelerator="nvidia-h100", gpus_per_node=8) == []
    assert problems(local_env, accelerator="nvidia-h100", gpus_per_node=16) == [
        "training_cluster.gpu asks for 16 × nvidia-h100 but this machine has 8 GPUs: "
        "8 × NVIDIA H100 80GB HBM3 (81559 MiB)"]


def test_some_gpus_of_another_kind(local_env, nvml):
    nvml([H100, L40S, L40S])
    assert problems(local_env, accelerator="nvidia-l40s", gpus_per_node=3) == [
        "training_cluster.gpu asks for 3 × nvidia-l40s but this machine has 3 GPUs: "
        "NVIDIA H100 80GB HBM3 (81559 MiB), 2 × NVIDIA L40S (46068 MiB), of which 2 match nvidia-l40s"]


def test_nodes_must_be_one(local_env, nvml):
    nvml([H100] * 8)
    assert problems(local_env, accelerator="nvidia-h100", gpus_per_node=1, nodes=2) == [
        "training_cluster.gpu asks for 2 nodes, but the local provider runs on this one machine: "
        "nodes must be 1"]


def test_a_cpu_cluster_works_without_a_driver(local_env, mocker):
    no_driver(mocker)
    handler = ClusterHandler(local_env)
    d = cluster("cpu", accelerator="cpu", gpus_per_node=0, nodes=1)
    assert contract.validate(handler, d) == []
    live = handler.create(contract.plan(handler, d, None))
    assert live.attributes["gpus_total"] == 0 and live.attributes["devices"] == []
    assert handler.read(LiveObject(d.address, d.kind, None, {})).attributes == live.attributes
    handler.delete(live)
    assert handler.read(live) is None


def test_the_cluster_hands_out_gpu_indices(local_env, nvml):
    nvml([L40S, H100, H100, H100])
    handler = ClusterHandler(local_env)
    d = cluster(accelerator="nvidia-h100", gpus_per_node=2, nodes=1)
    planned = contract.plan(handler, d, None)
    assert planned.attributes["gpus_total"] == 2
    assert planned.attributes["devices"] == [1, 2]
    assert planned.attributes["device_names"] == ["NVIDIA H100 80GB HBM3"] * 2
    handler.create(planned)
    assert devices_for(local_env, {"address": d.address, "accelerator": "nvidia-h100",
                                   "gpus_per_node": 2}) == [1, 2]
    assert devices_for(local_env, None) == []


def test_create_checks_capacity_again(local_env, nvml):
    nvml([H100])
    handler = ClusterHandler(local_env)
    planned = contract.plan(handler, cluster(accelerator="nvidia-h100", gpus_per_node=1), None)
    gpus.forget()
    nvml([])   # the plan was made where there was a GPU; this machine has none
    with pytest.raises(ProviderError, match="this machine has no NVIDIA GPU"):
        handler.create(planned)
