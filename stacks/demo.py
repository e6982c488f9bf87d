"""`make demo`: run the quickstart stack end to end on the local provider.

Makes the dataset, plans, applies (a real torch training run, a model
version in the local registry, an HTTP endpoint, a drift monitor), sends a
few real prediction requests to the endpoint and prints the answers, shows
that a second plan has no changes, and leaves the endpoint running with
instructions to destroy it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

STACK = Path(__file__).resolve().parent / "quickstart"
MLFORM = [sys.executable, "-m", "mlform.cli"]
EXAMPLES = [  # amount, hour, merchant_risk, distance_km
    ("a coffee at lunchtime", [4.5, 13, 0.1, 0.8]),
    ("groceries in the evening", [62.0, 19, 0.2, 3.0]),
    ("a large purchase at 3 am, risky merchant, far away", [480.0, 3, 0.95, 140.0]),
]


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def mlform(*args: str, ok=(0,), quiet: bool = False) -> subprocess.CompletedProcess:
    print(f"$ mlform {' '.join(args)}", flush=True)
    proc = subprocess.run([*MLFORM, "-C", str(STACK), *args], text=True, capture_output=True)
    if not quiet:
        sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode not in ok:
        sys.exit(f"demo failed: mlform {' '.join(args)} exited {proc.returncode}")
    return proc


def predict(url: str) -> None:
    rows = [features for _, features in EXAMPLES]
    body = {"inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32",
                        "data": [x for row in rows for x in row]}]}
    request = urllib.request.Request(f"{url}/infer", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    print(f"POST {url}/infer", flush=True)
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    probs = answer["outputs"][0]["data"]
    for i, (label, features) in enumerate(EXAMPLES):
        print(f"  {label:<52} p(fraud) = {probs[2 * i + 1]:.3f}   (model version {answer['model_version']})")


def main() -> None:
    started = time.monotonic()
    step("Make the dataset (3,000 transactions, generated, no download)")
    subprocess.run([sys.executable, str(STACK / "make_data.py")], check=True)
    step("Validate the quickstart stack")
    mlform("validate")
    step("Plan: the whole ML chain (dataset -> pipeline -> model -> endpoint -> monitor)")
    mlform("plan", "--detailed-exitcode", ok=(0, 2))
    step("Apply: train with torch, register the model, start the endpoint and the monitor")
    mlform("apply", "--auto-approve")
    url = mlform("output", "endpoint_url", quiet=True).stdout.strip()
    step("Real predictions over HTTP (Open Inference Protocol v2)")
    predict(url)
    step("Plan again: nothing to do (exit code 0 with --detailed-exitcode)")
    mlform("plan", "--detailed-exitcode")
    rel = STACK.relative_to(Path.cwd()) if STACK.is_relative_to(Path.cwd()) else STACK
    print(f"\nDemo finished in {time.monotonic() - started:.1f}s. The endpoint keeps serving at\n"
          f"  {url}\n"
          f"Try: .venv/bin/mlform -C {rel} drift      (exit 2 if something changed)\n"
          f"     .venv/bin/mlform -C {rel} monitor run monitor.drift\n"
          f"When done, stop everything with:\n"
          f"     .venv/bin/mlform -C {rel} destroy --auto-approve")


if __name__ == "__main__":
    main()
