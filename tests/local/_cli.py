"""Helpers for the tests that drive real `local` stacks through the CLI, as a user does.

The CLI runs as a subprocess (`python -m mlform.cli -C STACK ...`, a fresh process each
time, real exit codes); endpoints are called over HTTP with the standard library; the
state is read from its JSON file.  `teardown` destroys a stack and makes sure nothing it
started is left running (a test that starts servers must stop them all).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterable

# The CLI runner and its result type are shared with the end-to-end suite.
from e2e.harness import CLI, Run, cli_env  # noqa: E402  (tests/ is on sys.path)

REPO = Path(__file__).resolve().parents[2]

#: proxies must not see loopback requests
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def mlform(stack: Path, *args: Any, timeout: float = 300) -> Run:
    """`mlform -C STACK ARGS...`, stdin not a terminal."""
    proc = subprocess.run([*CLI, "-C", str(stack), *map(str, args)], env=cli_env(), input="",
                          capture_output=True, text=True, timeout=timeout)
    return Run(tuple(args), proc.returncode, proc.stdout, proc.stderr)


def copy_stack(source: Path, target: Path) -> Path:
    """A copy of a stack directory without its state, provider files and generated data."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(
        ".mlform", "data", "__pycache__", "*.pyc"))
    return target


def state(stack: Path, env: str = "default") -> dict:
    return json.loads((stack / ".mlform" / "state" / f"{env}.json").read_text())


def resource(stack: Path, address: str, env: str = "default") -> dict:
    """The attributes of one resource in the state."""
    for rs in state(stack, env)["resources"]:
        if rs["address"] == address:
            return rs["attributes"]
    raise KeyError(f"{address} is not in the state of {stack}")


def infer(url: str, rows: list[list[float]], timeout: float = 30) -> dict:
    """POST an Open Inference Protocol v2 request (one FP32 tensor) to `URL/infer`."""
    body = {"inputs": [{"name": "input", "shape": [len(rows), len(rows[0])], "datatype": "FP32",
                        "data": [float(v) for row in rows for v in row]}]}
    request = urllib.request.Request(f"{url}/infer", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with _OPENER.open(request, timeout=timeout) as response:
        assert response.status == 200
        return json.loads(response.read())


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on the port and a new server could bind it (SO_REUSEADDR, as servers
    do: connections of the old one may linger in TIME_WAIT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        if s.connect_ex((host, port)) == 0:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# -- processes -----------------------------------------------------------------

def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def stack_processes(stack: Path) -> dict[int, str]:
    """Endpoint servers and monitor schedulers of this stack still running: pid -> cmdline.

    They carry a path under the stack's provider root on their command line."""
    marker = str(stack.resolve()) + "/"
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            cmd = _cmdline(int(entry.name))
            ours = "kit/serving.py" in cmd or "scheduler" in cmd
            if marker in cmd and ours and alive(int(entry.name)):
                found[int(entry.name)] = cmd
    return found


def recorded_pids(stack: Path) -> set[int]:
    """Every pid the provider recorded for the stack: endpoint servers and schedulers."""
    pids = set()
    for path in (stack / ".mlform").glob("local/*/*/*/*.json"):
        if path.name in ("process.json", "scheduler.json", "server.json"):
            try:
                pid = json.loads(path.read_text()).get("pid")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(pid, int):
                pids.add(pid)
    return pids


def wait_gone(pids: Iterable[int], timeout: float = 10) -> set[int]:
    """Wait until none of `pids` runs; returns those still running."""
    deadline = time.monotonic() + timeout
    left = {p for p in pids if alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {p for p in left if alive(p)}
    return left


def teardown(stack: Path, envs: Iterable[str] = ("default",)) -> dict[int, str]:
    """Destroy the stack (every env given) and kill whatever of it still runs.

    Returns what had to be killed (empty when destroy stopped everything)."""
    for env in envs:
        args = ["destroy", "--auto-approve"] + ([] if env == "default" else ["--env", env])
        if (stack / ".mlform" / "state" / f"{env}.json").exists():
            mlform(stack, *args)
    left = stack_processes(stack)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_gone(left)
    return left


__all__ = ["REPO", "CLI", "Run", "mlform", "copy_stack", "state", "resource", "infer",
           "port_free", "alive", "stack_processes", "recorded_pids", "wait_gone", "teardown"]
