"""What every peer benchmark shares: where peers are installed, whole-process runs with
their peak memory, interleaved repetitions, and the one JSON line per compared figure.

A figure line (also appended to ``bench-results/peers.jsonl``) holds both medians, the
spread of each, and two readings of the same comparison: ``ratio`` is mlform / peer and
``advantage`` is how many times better mlform is (peer / mlform for times and memory,
mlform / peer for rates), so > 1 always means mlform is ahead.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

REPO = Path(__file__).resolve().parents[3]
PEERS = REPO / ".tools" / "peers"
RESULTS = REPO / "bench-results" / "peers.jsonl"
MLFORM = REPO / ".venv" / "bin" / "mlform"
MIN_REPS = 5


@dataclass(frozen=True)
class Run:
    """One whole-process run: wall seconds, peak resident memory (bytes), exit code, and
    the CPU seconds (user + sys, every thread) it used: on a shared machine the wall time
    carries the neighbours' load, the CPU time much less of it."""

    seconds: float
    peak_rss: int
    returncode: int
    output: str = ""
    cpu_seconds: float = 0.0


def whole_process(argv: Sequence[str], cwd: Path | None = None,
                env: Mapping[str, str] | None = None, check: bool = True) -> Run:
    """Run a command as a user would wait for it: wall time from spawn to exit, and the
    peak RSS of that process (reaped with ``os.wait4``, whose rusage is the child's own,
    not the max over every child this process had).  Output goes to a file, read after,
    so a pipe that fills never stalls the child."""
    full_env = {**os.environ, **(env or {})}
    # One log per harness process: two harnesses running at once (two peers' benchmarks
    # started side by side) would otherwise truncate each other's output mid-run.
    log = PEERS / f"last-run.{os.getpid()}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w+", encoding="utf-8") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(argv), cwd=cwd, env=full_env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        # wait4 rather than Popen.wait: it returns the child's own rusage.
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    run = Run(seconds, usage.ru_maxrss * 1024, proc.returncode, text,
              cpu_seconds=usage.ru_utime + usage.ru_stime)
    if check and run.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {run.returncode}:\n{text[-4000:]}")
    return run


def interleaved(reps: int, cases: Mapping[str, Callable[[int], float]]) -> dict[str, list[float]]:
    """Run each case once per repetition, in an order rotated every repetition, so that
    drift in the machine's load touches every case alike.  A case gets the repetition
    number and returns its figure; returns every case's figures."""
    names = list(cases)
    figures: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(max(reps, 1)):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            figures[name].append(cases[name](rep))
    return figures


def compare(figure: str, peer: str, mlform: Sequence[float], theirs: Sequence[float],
            unit: str, higher_is_better: bool = False, target: Any = None,
            **extra: Any) -> dict:
    """Print and keep one compared figure: both medians, their ranges and the ratio."""
    ours, other = statistics.median(mlform), statistics.median(theirs)
    ratio = ours / other if other else None
    if higher_is_better:
        advantage = ours / other if other else None
    else:
        advantage = other / ours if ours else None
    line = {
        "figure": figure, "peer": peer, "unit": unit,
        "mlform": _round(ours), "peer_value": _round(other),
        "ratio": _round(ratio), "advantage": _round(advantage),
        "mlform_range": [_round(min(mlform)), _round(max(mlform))],
        "peer_range": [_round(min(theirs)), _round(max(theirs))],
        "reps": min(len(mlform), len(theirs)), "target": target, **extra,
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return _emit(line)


def _emit(line: dict) -> dict:
    """Print one figure line and append it to bench-results/peers.jsonl."""
    text = json.dumps(line)
    print(text, flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(text + "\n")
    return line


def report(figure: str, value: float, unit: str, **extra: Any) -> dict:
    """A figure with no peer beside it (a ceiling, a setup time): the same line format."""
    line = {"figure": figure, "unit": unit, "mlform": _round(value), **extra,
            "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return _emit(line)


def peer_venv(name: str, requirements: Sequence[str], stamp_text: str | None = None,
              system_site: bool = False) -> Path:
    """A virtual environment of its own for a Python peer, under .tools/peers/NAME,
    installed once per machine (a stamp file holds the requirements it was made with).
    Returns its ``bin`` directory."""
    root = PEERS / name
    stamp = root / ".installed"
    want = stamp_text or "\n".join(requirements)
    if stamp.exists() and stamp.read_text() == want:
        return root / "bin"
    if root.exists():
        shutil.rmtree(root)
    cmd = [sys.executable, "-m", "venv", str(root)]
    if system_site:
        cmd.insert(3, "--system-site-packages")
    subprocess.run(cmd, check=True)
    subprocess.run([str(root / "bin" / "pip"), "install", "--quiet", "--upgrade", "pip"],
                   check=True)
    subprocess.run([str(root / "bin" / "pip"), "install", "--quiet", *requirements],
                   check=True)
    stamp.write_text(want)
    return root / "bin"


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4 if abs(value) < 10 else 2)
    return value
