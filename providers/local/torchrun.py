"""Distributed runs on the `local` provider: the entrypoint launched through torchrun.

A run has more than one process when its cluster hands out more than one GPU (one
process per GPU, backend ``nccl``) or the pipeline sets ``settings { processes_per_node
= N }`` (N CPU processes, backend ``gloo``).  Such a run starts
``python -m torch.distributed.run`` on one node with a c10d rendezvous on a free local
port and no restarts; torchrun sets the standard variables (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) in each rank.

The ranks are started with ``--no-python`` as ``python -X mlform_run_dir=... -u
script``, so every rank carries the run's marker on its command line: torchrun puts each
rank in a session of its own, so killing torchrun's process group would leave them
behind; `stop_marked` finds them by the marker instead.

Logs: torchrun tees every rank's output into ``<run>/ranks/`` (one directory per local
rank) and shows rank 0's on its console, which is the run's ``logs.txt``.  When a rank
fails, torchrun names the first failure (rank and exit code) in its summary;
`failed_rank` reads it and the failing rank's own last lines.
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from . import processes

__all__ = ["Launch", "launch_of", "torchrun_argv", "RankFailure", "failed_rank", "stop_marked"]

GPU_BACKEND, CPU_BACKEND = "nccl", "gloo"


@dataclass(frozen=True)
class Launch:
    """How many processes a run has, and the backend they should use."""

    processes: int
    backend: str

    @property
    def distributed(self) -> bool:
        return self.processes > 1


def launch_of(devices: list[int], processes_per_node: int | None) -> Launch:
    """One process per GPU on a GPU run; `processes_per_node` CPU processes otherwise."""
    if devices:
        return Launch(len(devices), GPU_BACKEND)
    return Launch(processes_per_node or 1, CPU_BACKEND)


def torchrun_argv(python: str, marker: str, script: str, launch: Launch, *, port: int,
                  log_dir: Path, run_id: str) -> list[str]:
    """The command line of a distributed run (see the module docstring)."""
    return [python, "-X", marker, "-m", "torch.distributed.run",
            "--nnodes", "1", "--nproc-per-node", str(launch.processes),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
            "--rdzv-id", run_id, "--max-restarts", "0",
            # every rank's output kept in its own files; rank 0's also on the console
            "--log-dir", str(log_dir), "--tee", "3", "--local-ranks-filter", "0",
            "--no-python", python, "-X", marker, "-u", script]


@dataclass(frozen=True)
class RankFailure:
    """The first rank torchrun saw fail, its exit code and its own last log lines."""

    rank: int
    exit_code: int
    tail: str


# torchrun's summary: "rank      : 1 (local_rank: 1)" then "exitcode  : 1 (pid: 123)"
_ROOT_CAUSE = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*(\d+)\)\s*\n\s*"
                         r"exitcode\s*:\s*(-?\d+)")


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def failed_rank(console: str, log_dir: Path, lines: int = 20) -> RankFailure | None:
    """The failing rank of a run whose torchrun console output is `console`, or None when
    torchrun named none (it failed before starting the ranks)."""
    start = console.rfind("Root Cause")
    found = _ROOT_CAUSE.search(console, max(start, 0)) or _ROOT_CAUSE.search(console)
    if found is None:
        return None
    rank, local_rank, code = (int(g) for g in found.groups())
    tail = ""
    # <log_dir>/<rdzv id>_<random>/attempt_<n>/<local rank>/{stderr,stdout}.log
    for attempt in sorted(log_dir.glob(f"*/attempt_*/{local_rank}"), reverse=True):
        tail = _tail(attempt / "stderr.log", lines) or _tail(attempt / "stdout.log", lines)
        if tail:
            break
    return RankFailure(rank, code, tail)


def _marked(marker: str) -> list[int]:
    """Our processes with `marker` on their command line (torchrun and its ranks)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and processes.is_ours(int(entry.name), marker):
            found.append(int(entry.name))
    return found


def stop_marked(marker: str) -> None:
    """SIGKILL the process group of every process carrying `marker` (each rank leads its
    own session, with whatever it started, such as data loader workers)."""
    own = os.getpgrp()
    for pid in _marked(marker):
        try:
            group = os.getpgid(pid)
            if group != own:
                os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
