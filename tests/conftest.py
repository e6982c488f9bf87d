"""Fixtures shared by every test directory.

`moto_server`: the SageMaker emulator (moto in server mode on 127.0.0.1, extended by
tests/emulator/moto_plugin.py), started at most once per session, on first use.
`aws`: the emulator reset to empty for one test, with AWS credentials for boto3 set.

`tests/` itself is on `sys.path`, so every test directory can import the shared helper
modules here (`from _waiting import wait_until`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "emulator"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixture import AWS_ENV, Emulator  # noqa: E402


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
