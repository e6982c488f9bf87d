"""Durable state cost: an apply of 10,000 zero-latency resources with the journal.

Figures:

* wall time of the apply in this process: `Session` + lock + load + plan +
  apply (every result journaled, then one snapshot) + close; target < 10 s.
  The same apply through the CLI (`mlform apply --auto-approve`, output to
  /dev/null, so plan rendering and per-resource progress lines included) is
  reported next to it.
* bytes written to the state files, counted by wrapping the one function
  the local backend writes file contents through (`mlform.state.local._write_all`:
  journal lines, the snapshot's temp file, re-stamped intents) and sorting
  them by the file each descriptor points at.  The `.backup` is a hard link
  (no bytes written); should the filesystem refuse links, the fallback copy
  is counted too.  Target: total <= 2 x the final state file.
* the local backend alone, without the engine: 10,000 intent + record pairs
  through one `StateWriter` (each resource the size of a real dataset entry),
  the writer's close (the snapshot) and a load of the result, timed apart.

Issue 11's targets: the CLI apply <= 3 s as a whole process, and bytes written <= 2 x the
final state (the snapshot is written once, so the journal must stay under the snapshot's
size: a writer stamps only its first line, and records leave out what replay restores).
The CLI figure also reports the child's CPU time (user + system), steadier than wall
time on a shared machine.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import mlform.state.local as local_backend
from mlform.state import LocalBackend

from _states import dataset_entry

from ._support import apply_stack, chained_stack, record

N = 10_000


def _category(path: str) -> str:
    name = os.path.basename(path)
    if name.endswith(".journal") or name.endswith(".journal.tmp"):
        return "journal"
    if name.endswith(".backup") or name.endswith(".backup.tmp"):
        return "backup"
    return "snapshot"


def test_durable_apply_10k(tmp_path, monkeypatch):
    stack = chained_stack(tmp_path / "durable", keys=N // 4)
    written: Counter = Counter()
    real_write_all = local_backend._write_all
    real_copyfile = shutil.copyfile

    def counting_write_all(fd: int, data: bytes) -> None:
        written[_category(os.readlink(f"/proc/self/fd/{fd}"))] += len(data)
        real_write_all(fd, data)

    def counting_copyfile(src, dst, *args, **kwargs):
        written[_category(str(dst))] += os.path.getsize(src)
        return real_copyfile(src, dst, *args, **kwargs)

    monkeypatch.setattr(local_backend, "_write_all", counting_write_all)
    monkeypatch.setattr(local_backend.shutil, "copyfile", counting_copyfile)
    run = apply_stack(stack)
    result = run["result"]
    assert result.added == N and result.ok
    state_file = stack / ".mlform" / "state" / "default.json"
    final_size = state_file.stat().st_size
    assert len(result.state.resources) == N
    assert not state_file.with_name("default.json.journal").exists()
    total = sum(written.values())
    record("apply_10k_durable_wall", round(run["total_s"], 3), "s", target="< 10 s",
           resources=N, plan_s=round(run["plan_s"], 3), apply_s=round(run["apply_s"], 3),
           method="in-process: Session + lock + load + plan + apply + close")
    record("apply_10k_state_bytes_written", total, "bytes", target=f"<= {2 * final_size}",
           final_state_bytes=final_size, ratio=round(total / final_size, 3),
           by_file=dict(written),
           method="wrapped mlform.state.local._write_all (+ shutil.copyfile fallback); "
                  ".backup is a hard link")


def test_durable_apply_10k_cli(tmp_path):
    stack = chained_stack(tmp_path / "cli", keys=N // 4)
    mlform = Path(sys.executable).with_name("mlform")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(os.devnull, "w") as devnull:
        proc = subprocess.run([str(mlform), "apply", "--auto-approve"], cwd=stack,
                              stdout=devnull, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    record("apply_10k_cli_wall", round(wall, 3), "s", target="<= 3 s", resources=N,
           cpu_s=round(cpu, 3), load_avg_1m=round(os.getloadavg()[0], 2),
           method="mlform apply --auto-approve in a subprocess, stdout to /dev/null; "
                  "cpu_s: the child's user + system time")


def test_backend_10k_intent_record_pairs(tmp_path):
    backend = LocalBackend(tmp_path / ".mlform" / "state" / "default.json")
    writer = backend.open_writer(backend.load().state)
    resources = [dataset_entry(i) for i in range(N)]
    t0 = time.perf_counter()
    for r in resources:
        writer.intent(r.address, r.kind, r.provider, "create")
        writer.record(r)
    t1 = time.perf_counter()
    final = writer.close()
    t2 = time.perf_counter()
    loaded = backend.load()
    t3 = time.perf_counter()
    assert len(final.resources) == N and not loaded.pending
    assert loaded.state.content_digest() == final.content_digest()
    method = "one LocalBackend StateWriter in this process, no engine"
    record("state_10k_intent_record_pairs", round(t1 - t0, 3), "s", resources=N, method=method)
    record("state_10k_writer_close", round(t2 - t1, 3), "s", resources=N, method=method)
    record("state_10k_load", round(t3 - t2, 3), "s", resources=N, method=method)
