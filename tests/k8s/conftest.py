"""The Kubernetes test control plane, one per test session (`cluster/control_plane.py`).

`make test` builds its binaries first (tests/k8s/cluster/build.sh, once per machine);
run directly, pytest fails here with that command rather than skip the tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "cluster"))

from control_plane import BINARIES, ControlPlane, tools_dir  # noqa: E402


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    tools = tools_dir()
    missing = [b for b in BINARIES if not (tools / b).is_file()]
    if missing:
        pytest.fail(f"the Kubernetes test control plane is not built ({', '.join(missing)} "
                    f"missing in {tools}): run tests/k8s/cluster/build.sh (make test does)",
                    pytrace=False)
    plane = ControlPlane(tools, tmp_path_factory.mktemp("k8s")).start()
    try:
        plane.add_node("kwok-cpu-0")
        plane.add_node("kwok-gpu-0", gpus=8, gpu_product="NVIDIA-H100-80GB-HBM3")
        yield plane
    finally:
        plane.stop()
