"""Peak memory of the 10,000-instance no-op plan (refresh included).

Measured in fresh subprocesses, after mlform is imported, so nothing the
test process holds counts:

* `tracemalloc` peak of Python allocations during Session + lock + load + plan;
* the growth of the process's max RSS (`ru_maxrss`) over the same span, in a
  second subprocess without tracemalloc (whose bookkeeping would inflate it).
"""

from __future__ import annotations

import json
import subprocess
import sys

from ._support import REPO, apply_stack, chained_stack, record

N = 10_000

_SCRIPT = r"""
import json, resource, sys, tracemalloc
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from tests.bench._support import timed_plan
import mlform.config.syntax  # noqa: F401  (imports out of the measured span)
trace = sys.argv[2] == "trace"
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if trace:
    tracemalloc.start()
plan, t = timed_plan(Path(sys.argv[1]))
peak = tracemalloc.get_traced_memory()[1] if trace else None
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
changes = sum(1 for c in plan.changes if c.action.value != "no-op")
print(json.dumps({"peak": peak, "rss_before_kib": before, "rss_after_kib": after,
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
    delta = (plain["rss_after_kib"] - plain["rss_before_kib"]) / 1024
    record("plan_10k_maxrss_delta", round(delta, 1), "MiB", instances=N,
           rss_after_mib=round(plain["rss_after_kib"] / 1024, 1),
           method="ru_maxrss growth over the same span, fresh subprocess, no tracemalloc")
