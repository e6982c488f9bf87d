"""SageMaker training instance types: what each has, and which one fits a cluster spec.

A table, not an API call: SageMaker has no "describe instance type" for training, and
`validate` must run without credentials.  Accelerator names follow the spec language
(``nvidia-h100``, ``nvidia-a100-80gb``, ``any-gpu``, ``cpu``) and are matched by words
against the device name (the kit's `accelerators.matches`), so ``nvidia-a100``
fits both A100 sizes and ``nvidia-l4`` never an L40S.  ``aws-trainium`` names the
Trainium chips of ml.trn1 (counted in `gpus_per_node` like GPUs); ``any-gpu`` means
any NVIDIA GPU.

When a cluster names no instance type, `pick` takes the smallest one (fewest vCPUs,
then least memory, then table order, which lists cheaper families first) whose
accelerator matches and whose accelerator count equals `gpus_per_node`; a CPU
cluster gets ml.m5.xlarge.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlform.providers.kit.accelerators import ANY_GPU, CPU, matches

__all__ = ["InstanceType", "INSTANCE_TYPES", "DEFAULT_CPU", "lookup", "pick", "mismatch",
           "candidates_text", "TRAINIUM"]

TRAINIUM = "aws-trainium"
DEFAULT_CPU = "ml.m5.xlarge"


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_gib: int
    accelerators: int = 0       # GPUs, or Trainium chips
    device: str = ""            # the accelerator's device name ("NVIDIA H100 80GB HBM3")

    @property
    def is_cpu(self) -> bool:
        return self.accelerators == 0

    @property
    def is_nvidia(self) -> bool:
        return self.device.startswith("NVIDIA")

    def has(self) -> str:
        """What it has, in words: ``8 × NVIDIA H100 80GB HBM3`` or ``no accelerator (CPU only)``."""
        if self.is_cpu:
            return f"no accelerator (CPU only: {self.vcpus} vCPUs, {self.memory_gib} GiB)"
        return f"{self.accelerators} × {self.device}"

    def fits(self, accelerator: str) -> bool:
        """Does this instance's accelerator satisfy the spec's `accelerator`?"""
        wanted = accelerator.strip().lower()
        if wanted == CPU:
            return self.is_cpu
        if self.is_cpu:
            return False
        if wanted == ANY_GPU:
            return self.is_nvidia
        return matches(wanted, self.device)


def _family(prefix: str, device: str, sizes: list[tuple[str, int, int, int]]) -> list[InstanceType]:
    return [InstanceType(f"{prefix}.{size}", vcpus, mem, count if device else 0, device)
            for size, vcpus, mem, count in sizes]


_T4, _A10G, _L4 = "NVIDIA T4", "NVIDIA A10G", "NVIDIA L4"
_V100, _A100_40, _A100_80 = "NVIDIA V100-SXM2-16GB", "NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-80GB"
_H100, _H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200 141GB HBM3e"

#: name -> InstanceType, in table order (cheaper families first within equal sizes)
INSTANCE_TYPES: dict[str, InstanceType] = {t.name: t for t in [
    *_family("ml.m5", "", [("large", 2, 8, 0), ("xlarge", 4, 16, 0), ("2xlarge", 8, 32, 0),
                           ("4xlarge", 16, 64, 0), ("12xlarge", 48, 192, 0),
                           ("24xlarge", 96, 384, 0)]),
    *_family("ml.c5", "", [("xlarge", 4, 8, 0), ("2xlarge", 8, 16, 0), ("4xlarge", 16, 32, 0),
                           ("9xlarge", 36, 72, 0), ("18xlarge", 72, 144, 0)]),
    *_family("ml.g4dn", _T4, [("xlarge", 4, 16, 1), ("2xlarge", 8, 32, 1), ("4xlarge", 16, 64, 1),
                              ("8xlarge", 32, 128, 1), ("12xlarge", 48, 192, 4),
                              ("16xlarge", 64, 256, 1)]),
    *_family("ml.g5", _A10G, [("xlarge", 4, 16, 1), ("2xlarge", 8, 32, 1), ("4xlarge", 16, 64, 1),
                              ("8xlarge", 32, 128, 1), ("12xlarge", 48, 192, 4),
                              ("16xlarge", 64, 256, 1), ("24xlarge", 96, 384, 4),
                              ("48xlarge", 192, 768, 8)]),
    *_family("ml.g6", _L4, [("xlarge", 4, 16, 1), ("2xlarge", 8, 32, 1), ("4xlarge", 16, 64, 1),
                            ("8xlarge", 32, 128, 1), ("12xlarge", 48, 192, 4),
                            ("16xlarge", 64, 256, 1), ("24xlarge", 96, 384, 4),
                            ("48xlarge", 192, 768, 8)]),
    *_family("ml.p3", _V100, [("2xlarge", 8, 61, 1), ("8xlarge", 32, 244, 4),
                              ("16xlarge", 64, 488, 8)]),
    InstanceType("ml.p4d.24xlarge", 96, 1152, 8, _A100_40),
    InstanceType("ml.p4de.24xlarge", 96, 1152, 8, _A100_80),
    InstanceType("ml.p5.48xlarge", 192, 2048, 8, _H100),
    InstanceType("ml.p5e.48xlarge", 192, 2048, 8, _H200),
    InstanceType("ml.p5en.48xlarge", 192, 2048, 8, _H200),
    *_family("ml.trn1", "AWS Trainium", [("2xlarge", 8, 32, 1), ("32xlarge", 128, 512, 16)]),
]}


def lookup(name: str) -> InstanceType | None:
    return INSTANCE_TYPES.get(name.strip().lower())


def mismatch(instance: InstanceType, accelerator: str, gpus_per_node: int) -> str | None:
    """Why `instance` does not fit the spec's accelerator and count, or None when it does."""
    if instance.fits(accelerator) and instance.accelerators == gpus_per_node:
        return None
    if accelerator.strip().lower() == CPU:
        asked = "accelerator = \"cpu\" (gpus_per_node = 0)"
    else:
        asked = f"{gpus_per_node} × {accelerator} per node"
    return f"{instance.name} has {instance.has()}, but the cluster asks for {asked}"


def pick(accelerator: str, gpus_per_node: int) -> InstanceType | None:
    """The smallest instance type with `gpus_per_node` accelerators matching `accelerator`."""
    if accelerator.strip().lower() == CPU:
        return INSTANCE_TYPES[DEFAULT_CPU] if gpus_per_node == 0 else None
    order = {name: i for i, name in enumerate(INSTANCE_TYPES)}
    found = [t for t in INSTANCE_TYPES.values()
             if t.fits(accelerator) and t.accelerators == gpus_per_node]
    found.sort(key=lambda t: (t.vcpus, t.memory_gib, order[t.name]))
    return found[0] if found else None


def candidates_text(accelerator: str) -> str:
    """The instance types with this accelerator and their counts, for a diagnostic."""
    found = [t for t in INSTANCE_TYPES.values() if t.fits(accelerator)]
    if not found:
        return f"no SageMaker training instance type in mlform's table has {accelerator}"
    counts = sorted({t.accelerators for t in found})
    listed = ", ".join(f"{t.name} ({t.accelerators})" for t in found)
    return (f"instance types with {accelerator}: {listed}; gpus_per_node can be "
            + ", ".join(map(str, counts)))
