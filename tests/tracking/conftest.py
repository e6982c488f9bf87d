"""A real MLflow tracking server for the tracking tests, one per test module.

`mlflow server` runs as a subprocess of this interpreter (sqlite backend, artifacts
served by the server from a directory under tmp, one worker) on a free port of
127.0.0.1; the fixture waits for its ``/health`` (it migrates its database first, which
takes a while) and stops its process group at the end.  `MlflowServer.client` is the
`MlflowClient` the tests assert through.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from _waiting import wait_until

pytest.importorskip("mlflow")

#: proxies must not see loopback requests
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
STARTUP_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MlflowServer:
    uri: str
    process: subprocess.Popen
    log: Path

    def client(self):
        from mlflow import MlflowClient
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"mlflow server exited ({self.process.returncode}):\n"
                                 + self.log.read_text(errors="replace")[-3000:])
        try:
            with _OPENER.open(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)   # the server and its worker
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> MlflowServer:
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = root / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server",
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=root,
            env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"})
    server = MlflowServer(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until(server.healthy, STARTUP_TIMEOUT_S, "the mlflow server's /health", interval=0.25)
        yield server
    finally:
        server.stop()
