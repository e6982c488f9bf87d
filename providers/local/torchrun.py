"""Distributed runs on the `local` provider: the entrypoint launched through torchrun.

A run has more than one process when its cluster hands out more than one GPU (one
process per GPU, backend ``nccl``) or the pipeline sets ``settings { processes_per_node
= N }`` (N CPU processes, backend ``gloo``).  Such a run starts
``python -m torch.distributed.run`` on one node with a c10d rendezvous on a free local
port and no restarts: the command line and the failed-rank reading are the kit's
(`mlform.providers.kit.torchrun`, shared with the kubernetes provider's pods); this
module keeps what is the local provider's own, its run marker and stopping the ranks.

The ranks are started with ``--no-python`` as ``python -X mlform_run_dir=... -u
script``, so every rank carries the run's marker on its command line: torchrun puts each
rank in a session of its own, so killing torchrun's process group would leave them
behind; `stop_marked` finds them by the marker instead.

Logs: torchrun tees every rank's output into ``<run>/ranks/`` (one directory per local
rank) and shows rank 0's on its console, which is the run's ``logs.txt``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from mlform.providers.kit.torchrun import (
    CPU_BACKEND, GPU_BACKEND, Launch, RankFailure, failed_rank, launch_of,
)
from mlform.providers.kit.torchrun import torchrun_argv as _kit_argv

from . import processes

__all__ = ["Launch", "launch_of", "torchrun_argv", "RankFailure", "failed_rank", "stop_marked",
           "GPU_BACKEND", "CPU_BACKEND"]


def torchrun_argv(python: str, marker: str, script: str, launch: Launch, *, port: int,
                  log_dir: Path, run_id: str) -> list[str]:
    """The command line of a distributed run on this machine, torchrun and every rank
    carrying the run's `marker` (``mlform_run_dir=...``)."""
    return _kit_argv(python, script, launch, master_addr="127.0.0.1", master_port=port,
                     run_id=run_id, log_dir=log_dir, python_args=("-X", marker))


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
