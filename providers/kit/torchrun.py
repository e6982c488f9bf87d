"""A run's entrypoint launched through torchrun: the command line and its failed rank.

Shared by the providers that start torchrun themselves (the `local` provider on this
machine, the `kubernetes` provider's training pods); what a provider does to stop its
processes stays in that provider.

A run has more than one process per node when its node has more than one GPU (one
process per GPU, backend ``nccl``) or, on CPU, when it asks for N processes (backend
``gloo``): `launch_of`.  `torchrun_argv` starts ``python -m torch.distributed.run``
with no restarts, and torchrun sets the standard variables (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) in each rank:

* one node: a c10d rendezvous at ``master_addr:master_port`` (a free local port);
* several nodes: the static rendezvous, each node naming its ``--node-rank`` and node 0
  hosting the store at ``master_addr:master_port`` (a Kubernetes Indexed Job's pod 0,
  by the headless Service's DNS name), so no node has to guess whether it is the host.

Logs: with a `log_dir`, torchrun tees every local rank's output into it (one directory
per local rank) and shows local rank 0's on its console.  When a rank fails, torchrun
names the first failure (rank and exit code) in its summary; `failed_rank` reads it and
the failing rank's own last lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["Launch", "launch_of", "torchrun_argv", "RankFailure", "failed_rank",
           "GPU_BACKEND", "CPU_BACKEND"]

GPU_BACKEND, CPU_BACKEND = "nccl", "gloo"


@dataclass(frozen=True)
class Launch:
    """How many processes a run has on each node, and the backend they should use."""

    processes: int
    backend: str

    @property
    def distributed(self) -> bool:
        return self.processes > 1


def launch_of(devices: Sequence[int], processes_per_node: int | None) -> Launch:
    """One process per GPU on a GPU run; `processes_per_node` CPU processes otherwise."""
    if devices:
        return Launch(len(devices), GPU_BACKEND)
    return Launch(processes_per_node or 1, CPU_BACKEND)


def torchrun_argv(python: str, script: str, launch: Launch, *, master_addr: str,
                  master_port: int, run_id: str, nodes: int = 1, node_rank: int = 0,
                  log_dir: Path | None = None, python_args: Sequence[str] = ()) -> list[str]:
    """The command line of a distributed run (see the module docstring); `python_args`
    go to torchrun's interpreter and each rank's (``-X`` markers, say)."""
    argv = [python, *python_args, "-m", "torch.distributed.run",
            "--nnodes", str(nodes), "--nproc-per-node", str(launch.processes)]
    if nodes > 1:
        argv += ["--node-rank", str(node_rank), "--master-addr", master_addr,
                 "--master-port", str(master_port)]
    else:
        argv += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"{master_addr}:{master_port}",
                 "--rdzv-id", run_id]
    argv += ["--max-restarts", "0"]
    if log_dir is not None:
        # every rank's output kept in its own files; local rank 0's also on the console
        argv += ["--log-dir", str(log_dir), "--tee", "3", "--local-ranks-filter", "0"]
    return argv + ["--no-python", python, *python_args, "-u", script]


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
