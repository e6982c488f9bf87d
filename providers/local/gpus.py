"""GPUs of this machine, found with NVML (the `nvidia-ml-py` package, imported as `pynvml`).

`discover()` asks the driver once per process and returns a `Machine`: its
GPUs (index, name, memory, uuid), the driver version, and, when there is no
usable NVIDIA driver, the reason in words (``NVML: driver not loaded``).
No driver is not an error: the machine is CPU-only and says so, and
``accelerator = "cpu"`` clusters still work.

Accelerator names are matched against device names by the kit's rule
(`kit.accelerators.matches`, by words).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from mlform.providers.kit.accelerators import ANY_GPU, CPU, matches

__all__ = ["Gpu", "Machine", "discover", "forget", "matches", "describe", "CPU", "ANY_GPU"]



@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mib: int
    uuid: str


@dataclass(frozen=True)
class Machine:
    """What NVML reported; `reason` says why there are no GPUs when there are none."""

    gpus: tuple[Gpu, ...]
    driver: str | None
    reason: str = ""

    def matching(self, accelerator: str) -> list[Gpu]:
        return [gpu for gpu in self.gpus if matches(accelerator, gpu.name)]


def describe(gpus: list[Gpu] | tuple[Gpu, ...]) -> str:
    """`NVIDIA A100-SXM4-40GB (40960 MiB)`; identical GPUs grouped as `8 × NAME (MEM MiB)`."""
    groups: dict[tuple[str, int], int] = {}
    for gpu in gpus:
        key = (gpu.name, gpu.memory_mib)
        groups[key] = groups.get(key, 0) + 1
    parts = [f"{count} × {name} ({memory} MiB)" if count > 1 else f"{name} ({memory} MiB)"
             for (name, memory), count in groups.items()]
    return ", ".join(parts)


# -- discovery ---------------------------------------------------------------

def _text(value: Any) -> str:
    # older nvidia-ml-py releases return bytes
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _nvml_reason(nvml: Any, exc: Exception) -> str:
    """NVML's error, in the words a person expects (`NVML: driver not loaded`)."""
    known = {
        getattr(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", -1):
            "NVIDIA driver library libnvidia-ml.so not found",
        getattr(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", -1): "driver not loaded",
        getattr(nvml, "NVML_ERROR_NO_PERMISSION", -1): "no permission to query the driver",
    }
    text = known.get(getattr(exc, "value", None)) or str(exc) or type(exc).__name__
    return f"NVML: {text}"


def _uuid(nvml: Any, handle: Any) -> str:
    try:
        return _text(nvml.nvmlDeviceGetUUID(handle))
    except Exception:  # some virtual GPUs do not report one; it is informational only
        return ""


def _probe(nvml: Any) -> Machine:
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return Machine((), None, _nvml_reason(nvml, exc))
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024)
            gpus.append(Gpu(index, _text(nvml.nvmlDeviceGetName(handle)), int(memory),
                            _uuid(nvml, handle)))
        reason = "" if gpus else f"the NVIDIA driver {driver} reports no GPU"
        return Machine(tuple(gpus), driver, reason)
    except nvml.NVMLError as exc:
        return Machine((), None, _nvml_reason(nvml, exc))
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass


def _import_nvml() -> Any:
    import pynvml  # the nvidia-ml-py package; optional on CPU-only machines
    return pynvml


_lock = threading.Lock()
_cached: Machine | None = None


def discover(importer: Callable[[], Any] = _import_nvml) -> Machine:
    """The GPUs of this machine, asked once per process (NVML init costs ~100 ms)."""
    global _cached
    with _lock:
        if _cached is None:
            try:
                nvml = importer()
            except ImportError:
                _cached = Machine((), None, "nvidia-ml-py (pynvml) is not installed")
            else:
                _cached = _probe(nvml)
        return _cached


def forget() -> None:
    """Drop the cached answer (tests; a driver installed while mlform runs)."""
    global _cached
    with _lock:
        _cached = None
