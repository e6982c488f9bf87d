"""`make demo`'s wall time on a warm machine.

The venv exists and torch, fastapi and mlform have been imported once (so their files
are in the page cache); then `stacks/demo.py` runs as a subprocess, exactly as `make
demo` starts it, timed from start to exit: data generation, validate, plan, apply (a
real torch training run, a registry version, an endpoint server, a monitor scheduler),
three predictions over HTTP and a no-op plan.

It runs on a copy of `stacks/demo.py` and `stacks/quickstart` in tmp, so a demo a
person left running in the repository is neither measured nor touched; the copy is
destroyed afterwards and no server or scheduler of it may be left.  Figures: the wall
time, and from the apply's progress lines the training run and the endpoint start.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ._support import REPO, record

pytest.importorskip("torch")
pytest.importorskip("fastapi")

CLI = [sys.executable, "-m", "mlform.cli"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFORM_")}
    env.update({"NO_COLOR": "1", "PYTHONUNBUFFERED": "1"})
    return env


def _stack_processes(stack: Path) -> list[int]:
    marker = str(stack.resolve()) + "/"
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if marker in cmd and stat[stat.rindex(")") + 2] not in "ZX":
            found.append(int(entry.name))
    return found


def _seconds(output: str, address: str) -> float | None:
    found = re.search(rf"^{re.escape(address)}: Creation complete after ([0-9.]+)s", output, re.M)
    return float(found.group(1)) if found else None


def test_make_demo_wall_time(tmp_path):
    stacks = tmp_path / "stacks"
    shutil.copytree(REPO / "stacks" / "quickstart", stacks / "quickstart",
                    ignore=shutil.ignore_patterns(".mlform", "data", "__pycache__"))
    shutil.copy2(REPO / "stacks" / "demo.py", stacks / "demo.py")
    stack = stacks / "quickstart"
    # warm: the interpreter, torch and the server's imports have been read once
    subprocess.run([sys.executable, "-c", "import torch, fastapi, uvicorn, mlform.cli"],
                   check=True, env=_env())
    try:
        t0 = time.perf_counter()
        demo = subprocess.run([sys.executable, str(stacks / "demo.py")], cwd=REPO, env=_env(),
                              capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t0
        assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]
        assert "p(fraud)" in demo.stdout and "No changes" in demo.stdout
    finally:
        destroyed = subprocess.run([*CLI, "-C", str(stack), "destroy", "--auto-approve"],
                                   env=_env(), capture_output=True, text=True, timeout=120)
        left = _stack_processes(stack)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert not left, f"processes of the demo left after destroy: {left}"
    record("make_demo_wall", round(wall, 2), "s", target=None,
           training_s=_seconds(demo.stdout, "pipeline.train"),
           endpoint_start_s=_seconds(demo.stdout, "endpoint.fraud"),
           steps="make_data, validate, plan, apply, 3 predictions, no-op plan")
