"""Peak memory of the 10,000-instance no-op plan (refresh included).

Measured in fresh subprocesses, after mlform is imported, so nothing the
test process holds counts:

* `tracemalloc` peak of Python allocations during Session + lock + load + plan;
* the growth of the process's peak RSS over the same span, in a second
  subprocess without tracemalloc (whose bookkeeping would inflate it): the
  kernel's high-water mark `VmHWM` after the plan minus `VmRSS` before it.
  (`ru_maxrss` is no use here: Linux carries a parent's peak into a child
  across fork and exec, so the benchmark process's own peak would show.)
"""

from __future__ import annotations

import json
import subprocess
import sys

from ._support import REPO, apply_stack, chained_stack, record

N = 10_000

_SCRIPT = r"""
import json, sys, tracemalloc
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from tests.bench._support import timed_plan
import mlform.config.syntax  # noqa: F401  (imports out of the measured span)

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])   # kB

trace = sys.argv[2] == "trace"
before = status("VmRSS")
if trace:
    tracemalloc.start()
plan, t = timed_plan(Path(sys.argv[1]))
peak = tracemalloc.get_traced_memory()[1] if trace else None
after = status("VmHWM")
changes = sum(1 for c in plan.changes if c.action.value != "no-op")
print(json.dumps({"peak": peak, "rss_before_kib": before, "hwm_after_kib": after,
                  "n": len(plan.changes), "changes": changes, "errored": plan.errored}))
"""


def _measure(stack, mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(stack), mode, str(REPO)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not out["errored"] and out["n"] == N and out["changes"] == 0
    return out


def test_plan_10k_peak_memory(tmp_path):
    stack = chained_stack(tmp_path / "mem", keys=N // 4)
    assert apply_stack(stack)["result"].added == N
    traced = _measure(stack, "trace")
    plain = _measure(stack, "rss")
    record("plan_10k_peak_tracemalloc", round(traced["peak"] / 2**20, 1), "MiB", instances=N,
           method="tracemalloc peak over Session + lock + load + plan, fresh subprocess")
    delta = (plain["hwm_after_kib"] - plain["rss_before_kib"]) / 1024
    record("plan_10k_peak_rss_growth", round(delta, 1), "MiB", instances=N,
           rss_before_mib=round(plain["rss_before_kib"] / 1024, 1),
           peak_rss_mib=round(plain["hwm_after_kib"] / 1024, 1),
           method="VmHWM after the plan - VmRSS before it, fresh subprocess, no tracemalloc")
