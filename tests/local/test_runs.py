"""`pipeline` on the local provider: real training scripts run as subprocesses.

The training script is written by the test: it trains a one-feature logistic
regression with torch on CPU and writes a TorchScript `model.pt` and
`metrics.json`.  Every start is appended to a counter file, so the tests can
see whether a run happened.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mlform.expr.values import UNKNOWN
from mlform.plan.fingerprints import fingerprint
from mlform.providers.kit.digests import hash_file
from mlform.providers.base import Desired, LiveObject, ProviderError
from mlform.providers.local import gpus, processes
from mlform.providers.local.clusters import ClusterHandler
from mlform.providers.local.datasets import DatasetHandler
from mlform.providers.local.gpus import Gpu, Machine
from mlform.providers.local.pipelines import PipelineHandler, RunDir, mark_stale
from mlform.providers.kit import calls as contract

torch = pytest.importorskip("torch")

TRAIN = '''
import csv, json, os, sys, time
from pathlib import Path

with open(os.environ["RUN_COUNTER"], "a") as fh:
    fh.write(os.environ["MLFORM_RUN_ID"] + "\\n")
print("starting", os.environ["MLFORM_RUN_ID"], flush=True)
hold = os.environ.get("HOLD_FILE")
while hold and os.path.exists(hold):   # the test holds the run here to kill it
    time.sleep(0.05)

import torch

hp = json.loads(os.environ["MLFORM_HYPERPARAMETERS"])
out = Path(os.environ["MLFORM_OUTPUT_DIR"])
with open(os.environ["MLFORM_INPUT_TRAIN"]) as fh:
    rows = list(csv.DictReader(fh))
x = torch.tensor([[float(r["amount"])] for r in rows])
y = torch.tensor([[float(r["label"])] for r in rows])
torch.manual_seed(0)
model = torch.nn.Linear(1, 1)
opt = torch.optim.SGD(model.parameters(), lr=hp.get("lr", 0.5))
for epoch in range(hp.get("epochs", 30)):
    opt.zero_grad()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
    loss.backward()
    opt.step()
    print(f"epoch {epoch} loss {loss.item():.4f}")
accuracy = ((model(x) > 0).float() == y).float().mean().item()
torch.jit.save(torch.jit.script(model), str(out / "model.pt"))
(out / "signature.json").write_text(json.dumps({"inputs": ["amount"], "outputs": ["score"]}))
(out / "metrics.json").write_text(json.dumps({"accuracy": hp.get("force_accuracy", accuracy)}))
(out / "seen.json").write_text(json.dumps({
    "cwd": os.getcwd(), "argv": sys.argv, "device": os.environ["MLFORM_DEVICE"],
    "cuda": os.environ["CUDA_VISIBLE_DEVICES"], "inputs": json.loads(os.environ["MLFORM_INPUTS"]),
    "train": os.environ["MLFORM_INPUT_TRAIN"], "run_id": os.environ["MLFORM_RUN_ID"],
    "extra": os.environ.get("EXTRA")}))
'''

# The same contract without torch (a fake model file): for tests about the process, not the model.
LIGHT = TRAIN.split("import torch")[0] + '''
hp = json.loads(os.environ["MLFORM_HYPERPARAMETERS"])
out = Path(os.environ["MLFORM_OUTPUT_DIR"])
print("epoch 0 loss 0.5")
(out / "model.pt").write_bytes(b"a model")
(out / "metrics.json").write_text(json.dumps({"accuracy": hp.get("force_accuracy", 1.0)}))
'''

DATA = "amount,label\n-2,0\n-1.5,0\n-1,0\n-0.5,0\n0.5,1\n1,1\n1.5,1\n2,1\n"


#: for tests about the model itself: ``@with_torch`` gives them the torch script
with_torch = pytest.mark.parametrize("stack", [TRAIN], indirect=True, ids=["torch"])


@pytest.fixture
def stack(request, local_env):
    """The stack: train.py (LIGHT unless a test asks for TRAIN), a stored dataset, a run counter."""
    (local_env.stack_dir / "train.py").write_text(getattr(request, "param", LIGHT))
    (local_env.stack_dir / "tx.csv").write_text(DATA)
    datasets = DatasetHandler(local_env)
    d = Desired("dataset.tx", "dataset", "tx", {"source": "tx.csv", "format": "csv"})
    live = datasets.create(contract.plan(datasets, d, None))
    return {"env": local_env, "dataset": live, "counter": local_env.stack_dir / "runs.txt",
            "hold": local_env.stack_dir / "hold"}


def pipeline(stack, hyperparameters=None, gate=None, **extra) -> Desired:
    """Desired attributes as the engine gives them: references projected, fingerprint computed."""
    env = stack["env"]
    data = stack["dataset"].attributes
    attributes = {
        "inputs": {"train": {"address": "dataset.tx", "uri": data["uri"],
                             "digest": data["digest"], "format": "csv"}},
        "entrypoint": "train.py",
        "hyperparameters": hyperparameters or {"epochs": 30},
        "environment": {"RUN_COUNTER": str(stack["counter"]), "HOLD_FILE": str(stack["hold"]),
                        "EXTRA": "yes"},
        **({"gate": gate} if gate else {}),
        **extra,
    }
    digest = hash_file(env.stack_dir / attributes["entrypoint"]).digest
    attributes["entrypoint_sha256"] = digest
    attributes["fingerprint"] = fingerprint(attributes, digest)
    return Desired("pipeline.train", "pipeline", "train", attributes)


def starts(stack) -> list[str]:
    counter = stack["counter"]
    return counter.read_text().split() if counter.exists() else []


def path_of(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def lost() -> LiveObject:
    return LiveObject("pipeline.train", "pipeline", None, {})


# -- a run happens once per fingerprint ------------------------------------------------

@with_torch
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_a_run_happens_once_per_fingerprint(stack, progress):
    handler = PipelineHandler(stack["env"])
    d = pipeline(stack)
    planned = contract.plan(handler, d, None)
    assert all(planned.attributes[k] is UNKNOWN for k in ("run_id", "model_uri", "metrics"))
    live = handler.create(planned)
    assert starts(stack) == [live.attributes["run_id"]]
    assert live.attributes["metrics"] == {"accuracy": 1.0}
    assert live.attributes["stale"] is None
    output = path_of(live.attributes["model_uri"])
    model = torch.jit.load(str(output / "model.pt"))
    assert model(torch.tensor([[2.0]])).item() > 0 > model(torch.tensor([[-2.0]])).item()
    assert any(e.message.startswith("epoch") for e in progress), "log lines stream as progress"
    assert "epoch 29" in (output.parent / "logs.txt").read_text()

    # unchanged fingerprint: the plan keeps the run, and neither update nor a retried create re-runs
    found = handler.read(live)
    assert found.attributes == live.attributes
    kept = contract.plan(handler, d, found)
    assert kept.attributes["run_id"] == live.attributes["run_id"] and kept.reasons == ()
    handler.update(found, kept)
    again = handler.create(contract.plan(handler, d, None))
    assert again.attributes == live.attributes
    assert starts(stack) == [live.attributes["run_id"]]

    # a changed fingerprint runs again
    changed = pipeline(stack, {"epochs": 31})
    replanned = contract.plan(handler, changed, found)
    assert replanned.attributes["run_id"] is UNKNOWN
    updated = handler.update(found, replanned)
    assert updated.attributes["run_id"] != live.attributes["run_id"]
    assert starts(stack) == [live.attributes["run_id"], updated.attributes["run_id"]]
    assert handler.read(lost()).attributes["run_id"] == updated.attributes["run_id"]


@with_torch
def test_the_run_contract(stack):
    env = stack["env"]
    live = PipelineHandler(env).create(contract.plan(PipelineHandler(env), pipeline(stack), None))
    output = path_of(live.attributes["model_uri"])
    seen = json.loads((output / "seen.json").read_text())
    data = path_of(stack["dataset"].attributes["uri"])
    assert seen == {"cwd": str(env.stack_dir), "argv": ["train.py"], "device": "cpu", "cuda": "",
                    "inputs": {"train": str(data)}, "train": str(data),
                    "run_id": live.attributes["run_id"], "extra": "yes"}
    assert json.loads((output / "signature.json").read_text())["inputs"] == ["amount"]
    record = json.loads((output.parent / "run.json").read_text())
    assert record["status"] == "succeeded" and record["fingerprint"] == live.attributes["fingerprint"]
    assert record["started"] and record["finished"] and record["pid"]


def test_the_cluster_hands_its_gpus_to_the_run(stack, local_env, mocker):
    machine = Machine(tuple(Gpu(i, name, 81559, "") for i, name in
                            enumerate(["NVIDIA L40S"] + ["NVIDIA H100 80GB HBM3"] * 3)), "550", "")
    mocker.patch.object(gpus, "discover", return_value=machine)
    clusters = ClusterHandler(local_env)
    spec = {"accelerator": "nvidia-h100", "gpus_per_node": 2, "nodes": 1}
    cluster = clusters.create(contract.plan(clusters, 
        Desired("training_cluster.gpu", "training_cluster", "gpu", spec), None))
    assert cluster.attributes["devices"] == [1, 2]
    (local_env.stack_dir / "env.py").write_text(
        "import json, os\n"
        "out = os.environ['MLFORM_OUTPUT_DIR']\n"
        "open(os.path.join(out, 'model.pt'), 'wb').write(b'not really')\n"
        "json.dump({'accuracy': 1}, open(os.path.join(out, 'metrics.json'), 'w'))\n"
        "json.dump([os.environ['MLFORM_DEVICE'], os.environ['CUDA_VISIBLE_DEVICES']],\n"
        "          open(os.path.join(out, 'seen.json'), 'w'))\n")
    d = pipeline(stack, entrypoint="env.py",
                 cluster={"address": "training_cluster.gpu", **spec, "instance_type": None})
    live = PipelineHandler(local_env).create(contract.plan(PipelineHandler(local_env), d, None))
    seen = path_of(live.attributes["model_uri"]) / "seen.json"
    assert json.loads(seen.read_text()) == ["cuda", "1,2"]


# -- failures ----------------------------------------------------------------------------

@with_torch
def test_a_gate_miss_fails_and_publishes_nothing(stack):
    handler = PipelineHandler(stack["env"])
    good = handler.create(contract.plan(handler, pipeline(stack), None))
    bad = pipeline(stack, {"epochs": 30, "force_accuracy": 0.71},
                   gate={"metric": "accuracy", "min": 0.9})
    with pytest.raises(ProviderError) as failure:
        handler.update(good, contract.plan(handler, bad, good))
    assert failure.value.message == "gate failed: accuracy 0.71 < min 0.90"
    assert failure.value.address == "pipeline.train"
    records = {p.parent: json.loads(p.read_text())
               for p in (stack["env"].root / "runs").rglob("run.json")}
    [run_dir] = [path for path, record in records.items() if record["status"] == "failed"]
    assert records[run_dir]["error"] == "gate failed: accuracy 0.71 < min 0.90"
    assert records[run_dir]["metrics"] == {"accuracy": 0.71}
    assert not (run_dir / "output").exists() and (run_dir / "rejected" / "model.pt").exists()
    # nothing downstream changes: the pipeline still publishes the earlier run
    assert handler.read(lost()).attributes == handler.read(good).attributes
    assert handler.read(lost()).attributes["run_id"] == good.attributes["run_id"]


def test_a_stricter_gate_judges_the_run_it_keeps(stack):
    handler = PipelineHandler(stack["env"])
    hp = {"force_accuracy": 0.8}
    live = handler.create(contract.plan(handler, pipeline(stack, hp, gate={"metric": "accuracy", "min": 0.5}), None))
    stricter = contract.plan(handler, pipeline(stack, hp, gate={"metric": "accuracy", "min": 0.9}), live)
    assert stricter.attributes["run_id"] == live.attributes["run_id"]   # same fingerprint
    with pytest.raises(ProviderError, match=r"gate failed: accuracy 0.80 < min 0.90 \(run run-"):
        handler.update(live, stricter)
    assert handler.read(live).attributes == live.attributes
    assert len(starts(stack)) == 1


def test_a_failing_script_reports_its_last_log_lines(stack):
    (stack["env"].stack_dir / "train.py").write_text("print('about to fail')\nraise SystemExit(3)\n")
    handler = PipelineHandler(stack["env"])
    with pytest.raises(ProviderError) as failure:
        handler.create(contract.plan(handler, pipeline(stack), None))
    assert "train.py exited with status 3" in failure.value.message
    assert "about to fail" in failure.value.message
    assert handler.read(lost()) is None


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_a_killed_run_is_detected_and_rerun_cleanly(stack):
    handler = PipelineHandler(stack["env"])
    d = pipeline(stack)
    stack["hold"].touch()

    def kill_when_started():
        wait_for(lambda: len(starts(stack)) == 1)
        [record] = (stack["env"].root / "runs").rglob("run.json")
        os.kill(json.loads(record.read_text())["pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_when_started)
    killer.start()
    with pytest.raises(ProviderError, match="train.py was killed by SIGKILL"):
        handler.create(contract.plan(handler, d, None))
    killer.join()
    stack["hold"].unlink()
    live = handler.create(contract.plan(handler, d, None))
    run = RunDir(path_of(live.attributes["model_uri"]).parent)
    first = handler.base_run_id("pipeline.train", d.attributes["fingerprint"])
    # the killed run stays on record, failed; the next number runs from a clean directory
    assert starts(stack) == [first, first + "-2"] and live.attributes["run_id"] == first + "-2"
    assert run.logs.read_text().count("starting") == 1
    assert run.record()["status"] == "succeeded"
    records = {r["run_id"]: r for r in handler.run_records("pipeline.train")}
    assert records[first]["status"] == "failed"
    assert "killed by SIGKILL" in records[first]["failure"]
    assert records[first + "-2"]["status"] == "succeeded"


def test_a_run_left_running_by_a_killed_apply_is_stopped_and_rerun(stack):
    """An apply killed mid-run leaves run.json saying running, and maybe the script still going."""
    handler = PipelineHandler(stack["env"])
    d = pipeline(stack)
    run_id = handler.base_run_id("pipeline.train", d.attributes["fingerprint"])
    run = handler.run_dir("pipeline.train", run_id)
    run.output.mkdir(parents=True)
    (run.output / "half-written").write_text("x")
    orphan = subprocess.Popen([sys.executable, "-X", run.marker, "-c", "import time; time.sleep(120)"],
                              start_new_session=True)
    run.write(run_id=run_id, status="running", pid=orphan.pid, fingerprint=d.attributes["fingerprint"])
    try:
        live = handler.create(contract.plan(handler, d, None))
        orphan.wait(timeout=10)   # stopped (and reaped) long before its 120 s sleep ends
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
    # the interrupted run is recorded failed; the next number runs from nothing
    assert live.attributes["run_id"] == run_id + "-2" and starts(stack) == [run_id + "-2"]
    assert run.record()["status"] == "failed"
    assert "stopped before the run finished" in run.record()["error"]


def test_a_live_process_that_is_not_ours_is_never_signalled(stack):
    handler = PipelineHandler(stack["env"])
    d = pipeline(stack)
    run_id = handler.base_run_id("pipeline.train", d.attributes["fingerprint"])
    run = handler.run_dir("pipeline.train", run_id)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        run.path.mkdir(parents=True)
        run.write(status="running", pid=stranger.pid)   # a recycled pid, say
        live = handler.create(contract.plan(handler, d, None))
        assert stranger.poll() is None, "a process without our marker must not be touched"
        assert live.attributes["run_id"] == run.run_id + "-2"
        handler.delete(live)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


# -- staleness and delete ---------------------------------------------------------------

def test_a_stale_marker_is_reported_and_rerun_once(stack):
    env = stack["env"]
    handler = PipelineHandler(env)
    d = pipeline(stack)
    live = handler.create(contract.plan(handler, d, None))
    mark_stale(env, "pipeline.train", live.attributes["run_id"], "monitor.drift: psi 0.31 > 0.2")
    found = handler.read(live)
    assert found.attributes["stale"] == "monitor.drift: psi 0.31 > 0.2"
    planned = contract.plan(handler, d, found)
    assert planned.attributes["run_id"] is UNKNOWN and planned.attributes["stale"] is None
    assert planned.reasons == ("monitor.drift: psi 0.31 > 0.2",)
    rerun = handler.update(found, planned)
    assert rerun.attributes["run_id"] == live.attributes["run_id"] + "-2"
    assert handler.read(rerun).attributes["stale"] is None   # the marker names the old run
    assert contract.plan(handler, d, handler.read(rerun)).attributes["run_id"] == rerun.attributes["run_id"]
    # a retried create does not fall back to the stale run, even once the marker is gone
    (env.root / "stale").joinpath(f"{env.slug('pipeline.train')}.json").unlink()
    assert handler.create(contract.plan(handler, d, None)).attributes["run_id"] == rerun.attributes["run_id"]
    assert len(starts(stack)) == 2


def test_delete_removes_the_runs(stack):
    handler = PipelineHandler(stack["env"])
    live = handler.create(contract.plan(handler, pipeline(stack), None))
    handler.delete(live)
    assert handler.read(live) is None and handler.read(lost()) is None
    assert not path_of(live.attributes["model_uri"]).exists()
    handler.delete(live)   # absent already: success


def test_a_removed_run_output_reads_as_gone(stack):
    handler = PipelineHandler(stack["env"])
    live = handler.create(contract.plan(handler, pipeline(stack), None))
    shutil.rmtree(path_of(live.attributes["model_uri"]))
    assert handler.read(live) is None


def test_processes_marker_is_on_the_command_line(stack):
    """The run's own process carries its run directory, so is_ours can tell it apart."""
    handler = PipelineHandler(stack["env"])
    stack["hold"].touch()
    result = {}

    def run():
        result["live"] = handler.create(contract.plan(handler, pipeline(stack), None))

    worker = threading.Thread(target=run)
    worker.start()
    try:
        wait_for(lambda: len(starts(stack)) == 1)
        [path] = (stack["env"].root / "runs").rglob("run.json")
        record = json.loads(path.read_text())
        assert processes.is_ours(record["pid"], RunDir(path.parent).marker)
        assert not processes.is_ours(record["pid"], RunDir(path.parent.with_name("other")).marker)
    finally:
        stack["hold"].unlink()
        worker.join()
    assert result["live"].attributes["metrics"] == {"accuracy": 1.0}


# -- run records (kit.run_records) --------------------------------------------------------

STEPS = LIGHT.replace('print("epoch 0 loss 0.5")', '''for step in range(1, 4):
    print(json.dumps({"step": step, "loss": 1.0 / step, "note": "text is not a metric"}))
print("[default1]:" + json.dumps({"step": 9, "loss": 9.0}))   # another rank's: not the run's
print(json.dumps({"accuracy": 1.0}))                            # a final line: not a step''')


@pytest.mark.parametrize("stack", [STEPS], indirect=True, ids=["steps"])
def test_a_run_leaves_a_record_with_its_lineage_and_step_metrics(stack):
    handler = PipelineHandler(stack["env"])
    d = pipeline(stack, hyperparameters={"epochs": 3, "lr": 0.5})
    live = handler.create(contract.plan(handler, d, None))
    [record] = handler.run_records("pipeline.train")
    assert record == handler.run_records(None)[0]
    assert record["run_id"] == live.attributes["run_id"] and record["status"] == "succeeded"
    assert record["provider"] == "local" and record["pipeline"] == "pipeline.train"
    assert record["parameters"] == {"epochs": 3, "lr": 0.5}
    assert record["metrics"] == {"accuracy": 1.0}
    assert record["inputs"] == {"train": "dataset.tx"}
    assert record["data_digests"] == {"train": stack["dataset"].attributes["digest"]}
    assert record["code_digest"] == d.attributes["entrypoint_sha256"]
    assert record["fingerprint"] == d.attributes["fingerprint"]
    assert [(s["step"], s["metrics"]) for s in record["steps"]] == [
        (1, {"loss": 1.0}), (2, {"loss": 0.5}), (3, {"loss": 1.0 / 3})]
    assert record["duration_seconds"] is not None and record["duration_seconds"] >= 0
    assert record["model_uri"] == live.attributes["model_uri"]
    assert path_of(record["artifacts"]["logs"]).is_file()


def test_a_failed_run_keeps_its_record_with_the_reason(stack):
    (stack["env"].stack_dir / "train.py").write_text("raise SystemExit('no data today')\n")
    handler = PipelineHandler(stack["env"])
    with pytest.raises(ProviderError):
        handler.create(contract.plan(handler, pipeline(stack), None))
    [record] = handler.run_records("pipeline.train")
    assert record["status"] == "failed" and "exited with status 1" in record["failure"]
    assert record["finished"] is not None and record["metrics"] == {}
    assert handler.run_records("pipeline.other") == []


def test_a_run_missing_its_gate_is_recorded_failed_with_its_metrics(stack):
    handler = PipelineHandler(stack["env"])
    d = pipeline(stack, hyperparameters={"force_accuracy": 0.5},
                 gate={"metric": "accuracy", "min": 0.9})
    with pytest.raises(ProviderError):
        handler.create(contract.plan(handler, d, None))
    [record] = handler.run_records(None)
    assert record["status"] == "failed" and "accuracy" in record["failure"]
    assert record["metrics"] == {"accuracy": 0.5} and record["model_uri"] is None
    assert record["artifacts"]["output"].endswith("/rejected")
