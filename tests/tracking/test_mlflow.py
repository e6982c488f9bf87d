"""MLflow tracking against a real `mlflow server` (conftest.py): `mlform apply` on a
`local` stack logs its runs (parameters, final and step metrics, tags, the model
directory) and mirrors its model versions with the stage as an alias; a re-apply logs
nothing twice; a server that does not answer fails the tracking step with one
diagnostic, keeps the run on record, and the next apply logs it.

The CLI runs as a subprocess, as a user runs it; everything MLflow holds is read back
through `MlflowClient`.  The training script needs no torch: it reports three steps and
writes a small model file.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from e2e.harness import CLI, Run, cli_env

from .conftest import free_port

TRAIN = '''
import json, os
from pathlib import Path

hp = json.loads(os.environ["MLFORM_HYPERPARAMETERS"])
if "boom" in Path(os.environ["MLFORM_INPUT_TRAIN"]).read_text():
    raise SystemExit("cannot train on boom")
out = Path(os.environ["MLFORM_OUTPUT_DIR"])
for step in range(hp["epochs"]):
    print(json.dumps({"step": step, "loss": 1.0 / (step + 1)}), flush=True)
rows = Path(os.environ["MLFORM_INPUT_TRAIN"]).read_text().splitlines()
(out / "model.pt").write_bytes(f"a model of {len(rows)} rows".encode())   # new data, new version
(out / "metrics.json").write_text(json.dumps({"accuracy": 0.9, "loss": 0.25}))
'''

CHAIN = '''
variable "stage" {
  type    = string
  default = "staging"
}

dataset "d" {
  source = "./d.csv"
  format = "csv"
}

pipeline "train" {
  inputs          = { train = dataset.d }
  entrypoint      = "train.py"
  hyperparameters = { lr = 0.1, epochs = 3, opt = { momentum = 0.9 } }
}

model "m" {
  artifact = pipeline.train.model_uri
  stage    = var.stage
}
'''


def mlform(stack: Path, *args: Any) -> Run:
    proc = subprocess.run([*CLI, "-C", str(stack), *map(str, args)], env=cli_env(), input="",
                          capture_output=True, text=True, timeout=300)
    return Run(tuple(args), proc.returncode, proc.stdout, proc.stderr)


def make_stack(root: Path, head: str) -> Path:
    root.mkdir()
    (root / "main.hcl").write_text(head + CHAIN)
    (root / "train.py").write_text(TRAIN)
    (root / "d.csv").write_text("amount,label\n1,1\n-1,0\n")
    return root


def resource(stack: Path, address: str) -> dict:
    state = json.loads((stack / ".mlform" / "state" / "default.json").read_text())
    return next(rs["attributes"] for rs in state["resources"] if rs["address"] == address)


def runs_of(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else list(client.search_runs([found.experiment_id]))


def test_apply_logs_the_run_and_mirrors_the_model_version(mlflow_server, tmp_path):
    stack = make_stack(tmp_path / "fraud", f'''
tracking {{
  mlflow {{
    uri        = "{mlflow_server.uri}"
    experiment = "fraud"
  }}
}}
''')
    applied = mlform(stack, "apply", "--auto-approve")
    assert applied.code == 0, applied
    assert "MLflow: logged 1 run(s), 1 model version(s)" in applied.stdout, applied
    client = mlflow_server.client()
    [run] = runs_of(client, "fraud")
    train = resource(stack, "pipeline.train")
    assert run.info.run_name == train["run_id"]
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1", "epochs": "3", "opt.momentum": "0.9"}
    assert run.data.metrics == {"accuracy": 0.9, "loss": 0.25}   # the final value is the latest
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss"))
    assert history == [(0, 1.0), (1, 0.5), (2, 0.25), (2, 1 / 3)]
    tags = run.data.tags
    assert tags["mlform.run_id"] == train["run_id"]
    assert tags["mlform.fingerprint"] == train["fingerprint"]
    assert tags["mlform.pipeline"] == "pipeline.train"
    assert tags["mlform.stack"] == "fraud" and tags["mlform.environment"] == "default"
    assert tags["mlform.status"] == "succeeded" and "mlform.failure" not in tags
    assert tags["mlform.code_digest"] and tags["mlform.data_digest.train"]
    assert tags["mlform.data_digest.train"] in resource(stack, "dataset.d")["digest"]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} == \
        {"model/model.pt", "model/metrics.json"}

    model = resource(stack, "model.m")
    [version] = client.search_model_versions("name = 'fraud.model.m'")
    assert version.tags["mlform.version"] == str(model["version"]) == "1"
    assert version.tags["mlform.run_id"] == train["run_id"]
    assert version.run_id == run.info.run_id
    assert client.get_registered_model("fraud.model.m").aliases == {"staging": version.version}

    again = mlform(stack, "apply", "--auto-approve")
    assert again.code == 0, again
    assert "MLflow: logged" not in again.output
    assert len(runs_of(client, "fraud")) == 1
    assert len(client.search_model_versions("name = 'fraud.model.m'")) == 1

    # the stage moves: so does the alias, and the old one goes
    moved = mlform(stack, "apply", "--auto-approve", "--var", "stage=production")
    assert moved.code == 0, moved
    assert client.get_registered_model("fraud.model.m").aliases == {"production": "1"}

    # new data: a second run, a second version, the alias on it
    (stack / "d.csv").write_text("amount,label\n1,1\n-1,0\n2,1\n")
    rerun = mlform(stack, "apply", "--auto-approve", "--var", "stage=production")
    assert rerun.code == 0, rerun
    runs = runs_of(client, "fraud")
    assert sorted(r.info.run_name for r in runs) == sorted(
        [train["run_id"], resource(stack, "pipeline.train")["run_id"]])
    assert len({r.data.tags["mlform.data_digest.train"] for r in runs}) == 2
    versions = client.search_model_versions("name = 'fraud.model.m'")
    assert sorted(v.tags["mlform.version"] for v in versions) == ["1", "2"]
    assert client.get_registered_model("fraud.model.m").aliases == {"production": "2"}


def test_a_server_that_does_not_answer_keeps_the_run_for_the_next_apply(mlflow_server, tmp_path):
    """The provider's own tracking (a variable) overrides the stack's block, whose server
    is never asked."""
    stack = make_stack(tmp_path / "churn", '''
variable "mlflow_uri" {
  type = string
}

provider "local" {
  tracking = { mlflow = { uri = var.mlflow_uri, experiment = "provider-level" } }
}

tracking {
  mlflow {
    uri        = "http://127.0.0.1:9"
    experiment = "overridden"
  }
}
''')
    closed = f"http://127.0.0.1:{free_port()}"
    failed = mlform(stack, "apply", "--auto-approve", "--var", f"mlflow_uri={closed}")
    assert failed.code == 1, failed
    assert "Apply complete! Resources: 3 added" in failed.output
    assert (f"error: could not log runs to MLflow at {closed}: connection refused\n"
            "  at main.hcl:7:3") in failed.stderr, failed
    assert "the next apply logs them" in failed.stderr
    assert "Traceback" not in failed.output

    # the apply and its record are intact
    train = resource(stack, "pipeline.train")
    [run_json] = (stack / ".mlform" / "local").glob(f"default/runs/*/{train['run_id']}/run.json")
    record = json.loads(run_json.read_text())["record"]
    assert record["status"] == "succeeded" and record["metrics"] == {"accuracy": 0.9, "loss": 0.25}
    from mlform.session import Session, SessionOptions
    session = Session(stack, SessionOptions(vars=[f"mlflow_uri={closed}"]))
    try:
        records = session.provider("local").run_records()
    finally:
        session.close()
    assert [r["run_id"] for r in records] == [train["run_id"]]

    later = mlform(stack, "apply", "--auto-approve", "--var", f"mlflow_uri={mlflow_server.uri}")
    assert later.code == 0, later
    assert "No changes" in later.stdout
    assert "MLflow: logged 1 run(s), 1 model version(s)" in later.stdout, later
    client = mlflow_server.client()
    [run] = runs_of(client, "provider-level")
    assert run.info.run_name == train["run_id"]
    assert run.data.tags["mlform.stack"] == "churn"
    assert runs_of(client, "overridden") == []
    assert client.get_registered_model("churn.model.m").aliases == {"staging": "1"}

    # a failed run is logged too, FAILED, with mlform's reason
    (stack / "d.csv").write_text("amount,label\nboom,1\n")
    broken = mlform(stack, "apply", "--auto-approve", "--var", f"mlflow_uri={mlflow_server.uri}")
    assert broken.code == 1, broken
    assert "MLflow: logged 1 run(s)" in broken.stdout, broken
    [failed_run] = [r for r in runs_of(client, "provider-level") if r.info.status == "FAILED"]
    assert failed_run.data.tags["mlform.status"] == "failed"
    assert failed_run.data.tags["mlform.failure"].startswith(
        "pipeline.train: train.py exited with status 1 (run ")
    assert {a.path for a in client.list_artifacts(failed_run.info.run_id)} == {"logs"}
