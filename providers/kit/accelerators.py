"""Accelerator names: what a cluster's `accelerator` asks for, matched against devices.

Accelerator names in specs are matched against device names by words:
``nvidia-h100`` wants a device whose name has the word ``H100``
(``NVIDIA H100 80GB HBM3``), ``nvidia-a100-80gb`` the words ``A100`` and
``80GB``; ``any-gpu`` takes any GPU and ``cpu`` none.  Matching by words keeps
``nvidia-l4`` off an ``NVIDIA L40S`` and ``nvidia-h200`` off a ``GH200``.  Every
provider that places work on accelerators (this machine's GPUs, an instance type's,
a node's) matches the same way.
"""

from __future__ import annotations

import re

__all__ = ["CPU", "ANY_GPU", "matches", "words"]

CPU = "cpu"
ANY_GPU = "any-gpu"


def words(text: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


def matches(accelerator: str, device_name: str) -> bool:
    """Does a device called `device_name` satisfy the spec's `accelerator`?"""
    accelerator = accelerator.strip().lower()
    if accelerator == CPU:
        return False
    if accelerator == ANY_GPU:
        return True
    wanted = words(accelerator)
    if wanted[:1] == ["nvidia"]:
        wanted = wanted[1:]
    have = set(words(device_name))
    return bool(wanted) and all(word in have for word in wanted)
