"""The training script the sweep tests plant (tests/local/test_sweeps.py,
tests/k8s/test_sweeps.py): one learning rate of a pair is clearly better, and the test
steers each trial through its environment.

- ``RUN_COUNTER``: a file each trial appends its run id to (how many started, in order).
- ``MEET=N``: the first N trials wait until N trials started: proof they run at once.
- ``HOLD_TRIALS=a,b`` + ``HOLD_FILE``: those trials wait while the file exists (the test
  kills the apply meanwhile).
- ``BAD_FROM=N``: trials from N on report a bad objective at every step and then hang:
  the pruner must stop them.
- ``METRIC``: the name the final metric is written under (a missing objective).
"""

SCRIPT = '''
import json, os, time
from pathlib import Path

run_id = os.environ["MLFORM_RUN_ID"]
counter = os.environ["RUN_COUNTER"]
with open(counter, "a") as fh:
    fh.write(run_id + "\\n")
trial = int(run_id.rsplit("-t", 1)[1])
hp = json.loads(os.environ["MLFORM_HYPERPARAMETERS"])
meet = int(os.environ.get("MEET", "0"))
if trial < meet:   # the first MEET trials wait until MEET trials started: they run at once
    deadline = time.monotonic() + 120
    while len(open(counter).read().split()) < meet:
        if time.monotonic() > deadline:
            raise SystemExit(f"trial {trial} never ran beside {meet - 1} other(s)")
        time.sleep(0.02)
hold = os.environ.get("HOLD_FILE", "")
if str(trial) in os.environ.get("HOLD_TRIALS", "").split(","):
    while os.path.exists(hold):   # the test kills the apply while these trials run
        time.sleep(0.05)
accuracy = 0.9 if float(hp["lr"]) == 0.5 else 0.6
bad = trial >= int(os.environ.get("BAD_FROM", "1000"))
for step in range(3):
    print(json.dumps({"step": step, "accuracy": 0.05 if bad else accuracy}), flush=True)
    if bad:
        time.sleep(120)   # a trial this bad is pruned here, long before it would end
out = Path(os.environ["MLFORM_OUTPUT_DIR"])
(out / "model.pt").write_text(f"model of lr={hp['lr']} epochs={hp['epochs']}")
(out / "gpus.txt").write_text(os.environ["MLFORM_DEVICE"] + " " + os.environ.get("CUDA_VISIBLE_DEVICES", ""))
(out / "metrics.json").write_text(json.dumps({os.environ.get("METRIC", "accuracy"): accuracy}))
'''
