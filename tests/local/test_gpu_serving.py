"""Serving on a GPU (`settings { gpu = N }` of a local endpoint), with NVML mocked: this
machine has no GPU, so what is proven here is the plan's check against NVML's answer and
that the device reaches torch in the server process (which, without CUDA, refuses to load
the model there, and the apply says so).  The same path on a real GPU is the device proof
of issue 13 (README, "GPU")."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mlform.providers.base import ProviderError  # noqa: E402
from mlform.providers.kit import calls as contract  # noqa: E402
from mlform.providers.kit.serving_runtime import LoadError, load_predictor  # noqa: E402
from mlform.providers.local.endpoints import endpoint_dir  # noqa: E402

from .test_endpoints import ADDRESS, save_mlp, served  # noqa: E402,F401  (fixture)
from .test_gpus import fresh_discovery, no_driver, nvml  # noqa: E402,F401  (fixtures)

H200 = ("NVIDIA H200", 143771)
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_a_gpu_the_machine_has_passes_the_plan(served, nvml):
    nvml([H200, H200])
    served.register(seed=1)
    assert contract.validate(served.endpoints, served.desired(settings={"gpu": 1})) == []


def test_a_gpu_the_machine_lacks_is_a_diagnostic_naming_what_it_has(served, nvml):
    nvml([H200])
    served.register(seed=1)
    [problem] = contract.validate(served.endpoints, served.desired(settings={"gpu": 3}))
    assert problem.severity == "error"
    assert "served on GPU 3, but this machine has no GPU 3: its GPUs are 0" in problem.summary
    assert "NVIDIA H200" in problem.summary and "settings.gpu" in problem.hint


def test_no_driver_is_a_diagnostic_with_the_reason(served, mocker):
    no_driver(mocker)
    served.register(seed=1)
    [problem] = contract.validate(served.endpoints, served.desired(settings={"gpu": 0}))
    assert "it has none (NVML: driver not loaded)" in problem.summary


def test_a_cpu_endpoint_asks_nvml_nothing(served, mocker):
    init = mocker.patch("pynvml.nvmlInit")
    served.register(seed=1)
    assert contract.validate(served.endpoints, served.desired()) == []
    init.assert_not_called()


@no_cuda
def test_the_device_reaches_torch(tmp_path):
    path = save_mlp(tmp_path / "m", seed=1)
    with pytest.raises(LoadError, match="CUDA") as refused:
        load_predictor(1, path.removeprefix("file://"), "torch", device="cuda")
    assert "model.pt" in str(refused.value)
    assert load_predictor(1, path.removeprefix("file://"), "torch").predict(
        [[0.0] * 4]).shape[0] == 1


@no_cuda
def test_a_server_on_a_gpu_this_machine_cannot_use_fails_the_apply_with_its_reason(served, nvml):
    """NVML (mocked) says GPU 0 is there; the server process, told to serve on it
    (CUDA_VISIBLE_DEVICES=0, device cuda), finds no CUDA and the apply reports why."""
    nvml([H200])
    served.register(seed=1)
    want = served.desired(settings={"gpu": 0})
    planned = contract.plan(served.endpoints, want, None)
    with pytest.raises(ProviderError) as failed:
        served.endpoints.create(planned)
    assert "could not load the model" in failed.value.message
    assert "CUDA" in failed.value.service_message   # torch's own reason, from the server
    spec = (endpoint_dir(served.env, ADDRESS) / "server.json").read_text()
    assert '"device": "cuda"' in spec and '"gpu": 0' in spec
