"""`Emulator`: the SageMaker emulator process as tests see it.

Started once per test session by the `moto_server` fixture (tests/conftest.py) and
stopped at its end; `reset()` between tests empties every moto backend, the call log
and the control file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from moto_plugin import edit_control  # same directory, on sys.path (tests/conftest.py)

HERE = Path(__file__).resolve().parent

# Actions that change something (counted by "a no-op plan makes zero mutating calls").
MUTATING_PREFIXES = ("Create", "Update", "Delete", "Put", "Add", "Start", "Stop", "Register",
                     "Deregister", "Tag", "Untag", "Remove", "Copy", "Upload", "Complete",
                     "Abort", "Enable", "Disable", "Set")

# Credentials and region for boto3 inside tests and the CLI processes they start.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/mlform-test"


class Emulator:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.calls_file = workdir / "calls.jsonl"
        self.control_file = workdir / "control.json"
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 60.0) -> "Emulator":
        self.calls_file.write_text("")
        self.control_file.write_text("{}")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "server.py"), "--calls", str(self.calls_file),
             "--control", str(self.control_file)],
            stdout=subprocess.PIPE, stderr=open(self.workdir / "server.log", "w"), text=True,
            env={**os.environ, **AWS_ENV})
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()
        if not line.startswith("READY") or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"emulator did not start: {line!r}; see "
                               f"{self.workdir / 'server.log'}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # --- between tests ------------------------------------------------------------

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(request, timeout=30).read()
        self.control_file.write_text("{}")
        self.calls_file.write_text("")

    def control(self, **settings) -> None:
        """Steer the emulator (merged into the current instructions; see moto_plugin)."""
        edit_control(self.control_file, lambda current: current.update(settings))

    def calls(self) -> list[dict]:
        text = self.calls_file.read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def clear_calls(self) -> None:
        self.calls_file.write_text("")

    def mutating_calls(self) -> list[dict]:
        return [c for c in self.calls() if c["action"].startswith(MUTATING_PREFIXES)]

    def client(self, service: str, **kwargs):
        """A boto3 client for this emulator; `kwargs` go to boto3 (e.g. `config=`)."""
        import boto3
        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            **kwargs)

    def provider_config(self, bucket: str = "mlform-test", **extra) -> dict:
        """A `provider "sagemaker"` configuration pointing at this emulator."""
        return {"region": REGION, "role_arn": ROLE_ARN, "bucket": bucket,
                "endpoint_url": self.url, "poll_seconds": 0.01, **extra}
