"""Fixtures shared by every test directory.

`moto_server`: the SageMaker emulator (moto in server mode on 127.0.0.1, extended by
tests/emulator/moto_plugin.py), started at most once per session, on first use.
`aws`: the emulator reset to empty for one test, with AWS credentials for boto3 set.
`control_plane`: the Kubernetes test control plane (tests/k8s/cluster), one per session;
`make test` builds its binaries first (once per machine); run directly, pytest fails
with that command rather than skip the tests.
`pod_harness`: plays the containers of training and monitoring pods in that cluster
(tests/k8s/harness.py).

`tests/` itself is on `sys.path`, so every test directory can import the shared helper
modules here (`from _waiting import wait_until`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "emulator"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "k8s" / "cluster"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "k8s"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from control_plane import BINARIES, NODES, ControlPlane, tools_dir  # noqa: E402
from fixture import AWS_ENV, Emulator  # noqa: E402
from harness import PodHarness, default_env  # noqa: E402


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    emulator = Emulator(tmp_path_factory.mktemp("moto")).start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def aws(moto_server, monkeypatch):
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    moto_server.reset()
    yield moto_server


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
        for name, resources in NODES.items():
            plane.add_node(name, **resources)
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def pod_harness(control_plane, tmp_path_factory):
    harness = PodHarness(control_plane, base_env=default_env(),
                         workdir=tmp_path_factory.mktemp("pods")).start()
    try:
        yield harness
    finally:
        harness.stop()
