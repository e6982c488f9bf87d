"""`make demo`: run the quickstart stack end to end and explain each step.

Plans, applies, shows that a second plan has no changes, shows drift
detection healing an out-of-band change, and leaves the stack applied with
instructions to destroy it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

STACK = Path(__file__).resolve().parent / "quickstart"
MLFORM = [sys.executable, "-m", "mlform.cli"]


def step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


def mlform(*args: str, ok=(0,)) -> subprocess.CompletedProcess:
    print(f"$ mlform {' '.join(args)}", flush=True)
    proc = subprocess.run([*MLFORM, "-C", str(STACK), *args], text=True, capture_output=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode not in ok:
        sys.exit(f"demo failed: mlform {' '.join(args)} exited {proc.returncode}")
    return proc


def main() -> None:
    started = time.monotonic()
    step("Validate the quickstart stack")
    mlform("validate")
    step("Plan: the whole ML chain (dataset -> pipeline -> model -> endpoint -> monitor)")
    mlform("plan", "--detailed-exitcode", ok=(0, 2))
    step("Apply")
    mlform("apply", "--auto-approve")
    step("Plan again: nothing to do (exit code 0 with --detailed-exitcode)")
    mlform("plan", "--detailed-exitcode")
    step("Someone scales the endpoint by hand: drift detection (exit code 2)")
    store = STACK / ".mlform" / "memory-default.json"
    doc = json.loads(store.read_text())
    for obj in doc["objects"].values():
        if obj["address"] == "endpoint.fraud":
            obj["attributes"]["replicas"] = 4
    store.write_text(json.dumps(doc, indent=1))
    mlform("drift", ok=(2,))
    step("Apply heals the drift")
    mlform("apply", "--auto-approve")
    mlform("drift")
    step("Outputs")
    mlform("output")
    print(f"\nDemo finished in {time.monotonic() - started:.1f}s. The stack stays applied; "
          f"to tear it down:\n  .venv/bin/mlform -C {STACK.relative_to(Path.cwd()) if STACK.is_relative_to(Path.cwd()) else STACK} destroy --auto-approve")


if __name__ == "__main__":
    main()
