"""Run records on the kubernetes provider: one object per run in storage, written before
the Job is made and closed when it ends, with the step metrics of the log the pod
uploads; listed with one listing.  Pods are run by the pod harness, storage is moto."""

from __future__ import annotations

import os

import pytest

from _kube import BUCKET, pipeline_desired
from _waiting import wait_until
from mlform.providers.base import LiveObject, ProviderError
from mlform.providers.kit import calls
from mlform.providers.kit.run_records import RunRecord

pytestmark = pytest.mark.timeout(300)

_STEPS = """\
import json, os, pathlib
out = pathlib.Path(os.environ["MLFORM_OUTPUT_DIR"])
for step, loss in enumerate([0.9, 0.5, 0.3], start=1):
    print(json.dumps({"step": step, "loss": loss}))
(out / "model.pt").write_bytes(b"model")
(out / "metrics.json").write_text(json.dumps({"accuracy": 0.9}))
"""

_FAILS = """\
import json
print(json.dumps({"step": 1, "loss": 2.5}))
raise SystemExit("the loss went to NaN at step 2")
"""

# blocks until the test opens the FIFO for writing and closes it (no sleep, no poll)
_WAITS = """\
import json, os, pathlib
pathlib.Path(os.environ["GO_FIFO"]).read_text()
out = pathlib.Path(os.environ["MLFORM_OUTPUT_DIR"])
(out / "model.pt").write_bytes(b"model")
(out / "metrics.json").write_text(json.dumps({"accuracy": 0.8}))
"""


def _record_keys(aws, k8s) -> list[str]:
    listed = aws.client("s3").list_objects_v2(Bucket=BUCKET,
                                              Prefix=k8s.env.store.key("records") + "/")
    return [item["Key"] for item in listed.get("Contents", [])]


def test_a_run_is_on_record_with_its_steps(k8s, pod_harness, tmp_path, aws):
    desired = pipeline_desired(k8s, tmp_path, _STEPS)
    planned = calls.plan(k8s, desired)
    live = k8s.create(planned)
    k8s.made.append(live)
    run = live.attributes["run_id"]

    aws.clear_calls()
    [record] = k8s.run_records()
    assert [c["action"] for c in aws.calls() if c["action"].startswith("List")] == \
        ["ListObjectsV2"]
    RunRecord.model_validate(record)
    assert (record["run_id"], record["status"], record["provider"]) == \
        (run, "succeeded", "kubernetes")
    assert record["pipeline"] == "pipeline.train" and record["failure"] is None
    assert record["parameters"] == {"epochs": 3}
    assert record["metrics"] == {"accuracy": 0.9}
    assert [(s["step"], s["metrics"]) for s in record["steps"]] == [
        (1, {"loss": 0.9}), (2, {"loss": 0.5}), (3, {"loss": 0.3})]
    assert record["inputs"] == {"train": "dataset.tx"}
    assert record["data_digests"]["train"] == desired.attributes["inputs"]["train"]["digest"]
    assert record["model_uri"] == live.attributes["model_uri"]
    assert record["artifacts"]["logs"].endswith(f"/{run}/logs.txt")
    assert record["started"] and record["finished"]
    assert k8s.run_records("pipeline.train") == [record]
    assert k8s.run_records("pipeline.other") == []


def test_a_failed_run_stays_on_record(k8s, pod_harness, tmp_path):
    desired = pipeline_desired(k8s, tmp_path, _FAILS)
    with pytest.raises(ProviderError, match="the loss went to NaN"):
        k8s.create(calls.plan(k8s, desired))
    k8s.made.append(LiveObject("pipeline.train", "pipeline", None, desired.attributes))
    [record] = k8s.run_records("pipeline.train")
    assert record["status"] == "failed" and record["model_uri"] is None
    assert "exited with code 1" in record["failure"]
    assert "the loss went to NaN at step 2" in record["failure"]
    assert [(s["step"], s["metrics"]) for s in record["steps"]] == [(1, {"loss": 2.5})]


def test_a_run_whose_apply_stopped_is_reported_as_its_job_is(k8s, pod_harness, tmp_path, aws,
                                                            control_plane):
    """The apply is cut off once the Job is made: its record says running while the pod
    runs; when the Job completes a listing reports it (writing nothing) and the next apply
    adopts the Job and closes the record."""
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    desired = pipeline_desired(k8s, tmp_path, _WAITS, environment={"GO_FIFO": str(fifo)})
    planned = calls.plan(k8s, desired)
    k8s.made.append(LiveObject("pipeline.train", "pipeline", None, desired.attributes))
    handler = k8s.handler("pipeline")
    from mlform.providers.kit.reruns import run_fingerprint
    job = handler._start("pipeline.train", dict(planned.attributes), "default",
                         run_fingerprint(planned), 1)
    run = job["metadata"]["name"]

    [record] = k8s.run_records()
    assert (record["run_id"], record["status"], record["finished"]) == (run, "running", None)

    with open(fifo, "w"):   # the script goes on
        pass

    def complete() -> bool:
        with control_plane.api() as api:
            found = api.get(f"/apis/batch/v1/namespaces/default/jobs/{run}").json()
        return any(c["type"] == "Complete" and c["status"] == "True"
                   for c in (found.get("status") or {}).get("conditions") or [])
    wait_until(complete, 120, f"Job {run} to complete", interval=0.2)

    [reported] = k8s.run_records()
    assert reported["status"] == "succeeded" and reported["metrics"] == {"accuracy": 0.8}
    [key] = _record_keys(aws, k8s)
    assert b'"status": "running"' in aws.client("s3").get_object(
        Bucket=BUCKET, Key=key)["Body"].read()   # a listing writes nothing

    live = k8s.create(calls.plan(k8s, desired))
    assert live.attributes["run_id"] == run   # adopted, not run again
    [closed] = k8s.run_records()
    assert closed["status"] == "succeeded" and closed["finished"]
    assert b'"status": "succeeded"' in aws.client("s3").get_object(
        Bucket=BUCKET, Key=key)["Body"].read()
