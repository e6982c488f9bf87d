"""A serving pod's capture upload (`kubernetes.pod`) across the server's rotated files.

The model server rotates its capture (``capture.jsonl`` -> ``.1`` -> ``.2`` ..., at most
`max_files` on disk: `kit.serving_capture.CaptureLog`, re-exported by `kit.serving`); the
pod uploads, every round and when it stops, one object per pod holding the files on disk
oldest first.  What is checked, against moto's S3 in server mode (`aws`), with a real
`CaptureLog` writing the files:

* every round's object is every record on disk, in order, each once: the rotated files
  as well as the live one, however many rounds upload the same records again;
* the object keeps what the cap keeps: once the server has deleted its oldest file the
  next round's object starts at the oldest file still on disk (the cap is the capture's
  retention, on disk and in storage);
* a rotation while a round is reading the files (between listing them and opening them,
  or between copying one and the next) loses no record from that round's object and
  doubles none;
* the pod itself (``pod serve``, a real server process) uploads the last records after
  SIGTERM, once the server has drained, and exits 0.

No control plane is needed: the upload is the pod's own function, and the pod process
runs here as the pod harness would run it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _kube import pod_serve

pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from mlform.providers.kit import serving  # noqa: E402
from mlform.providers.kit.monitor_check import capture_files  # noqa: E402
from mlform.providers.kit.serving import CaptureLimits, CaptureLog  # noqa: E402
from mlform.providers.kubernetes import pod  # noqa: E402

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")]

BUCKET = "mlform-capture"
URI = f"s3://{BUCKET}/capture/endpoint-e/pod-a.jsonl"
PER_FILE = 4


def _request(n: int) -> dict:
    return {"time": float(n), "status": 200, "latency_ms": 1.0,
            "inputs": [{"a": float(n), "b": 1.0}], "outputs": [[0.5, 0.5]]}


def _limits(max_files: int) -> CaptureLimits:
    """Files of exactly `PER_FILE` records (every record is as long: n has three digits)."""
    return CaptureLimits(max_bytes=PER_FILE * (len(serving._dumps(_request(100))) + 1),
                         max_files=max_files)


def capture(path: Path, numbers, max_files: int) -> None:
    """The server capturing requests `numbers` (written, flushed and closed on return)."""
    log = CaptureLog(str(path), _limits(max_files))
    for n in numbers:
        assert log.submit(_request(n))
    log.close()


def on_disk(path: Path) -> list[float]:
    return [json.loads(line)["time"]
            for f in capture_files(path) for line in f.read_text().splitlines()]


@pytest.fixture
def s3(aws, monkeypatch):
    """moto's S3 with the bucket, reached the way the pod reaches storage (its env)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws.url)
    pod._bucket_store.cache_clear()
    client = aws.client("s3")
    client.create_bucket(Bucket=BUCKET)
    yield client
    pod._bucket_store.cache_clear()


def uploaded(s3) -> list[float]:
    key = URI.split("/", 3)[3]
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return [json.loads(line)["time"] for line in body.splitlines()]


def test_every_round_uploads_every_file_on_disk_once(s3, tmp_path):
    path = tmp_path / "capture.jsonl"
    capture(path, range(100, 103), max_files=6)
    pod._upload_capture(path, URI)
    assert uploaded(s3) == [100.0, 101.0, 102.0]

    capture(path, range(103, 111), max_files=6)         # two rotations
    assert [f.name for f in capture_files(path)] == [
        "capture.jsonl.2", "capture.jsonl.1", "capture.jsonl"]
    for _ in range(3):                                   # the same records, round after round
        pod._upload_capture(path, URI)
        assert uploaded(s3) == [float(n) for n in range(100, 111)]

    capture(path, range(111, 123), max_files=6)
    assert len(capture_files(path)) == 6
    pod._upload_capture(path, URI)
    assert uploaded(s3) == [float(n) for n in range(100, 123)]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == [
        URI.split("/", 3)[3]]                            # one object per pod, no leftovers


def test_the_object_keeps_what_the_cap_keeps(s3, tmp_path):
    path = tmp_path / "capture.jsonl"
    capture(path, range(100, 112), max_files=3)
    pod._upload_capture(path, URI)
    assert uploaded(s3) == [float(n) for n in range(100, 112)]
    capture(path, range(112, 120), max_files=3)          # the two oldest files deleted
    pod._upload_capture(path, URI)
    assert uploaded(s3) == on_disk(path) == [float(n) for n in range(108, 120)]


def test_a_rotation_between_listing_and_opening_loses_nothing(s3, tmp_path, monkeypatch):
    path = tmp_path / "capture.jsonl"
    capture(path, range(100, 106), max_files=6)          # .1 = 100..103, live = 104, 105
    listed = pod.capture_files

    def rotating_listing(where: Path) -> list[Path]:
        found = listed(where)
        if not rotated:
            rotated.append(True)
            capture(path, range(106, 110), max_files=6)  # live -> .1, .1 -> .2
        return found

    rotated: list[bool] = []
    monkeypatch.setattr(pod, "capture_files", rotating_listing)
    pod._upload_capture(path, URI)
    assert rotated
    got = uploaded(s3)
    assert got[:6] == [float(n) for n in range(100, 106)]    # all that was there, in order
    assert got == [float(n) for n in range(100, 100 + len(got))]  # no gap, nothing twice
    pod._upload_capture(path, URI)
    assert uploaded(s3) == [float(n) for n in range(100, 110)]


def test_a_rotation_while_copying_loses_nothing(s3, tmp_path, monkeypatch):
    path = tmp_path / "capture.jsonl"
    capture(path, range(100, 110), max_files=6)          # .2, .1 full, live = 108, 109
    copy = pod.shutil.copyfileobj
    copied: list[int] = []

    def rotating_copy(source, target, *args, **kwargs):
        copy(source, target, *args, **kwargs)
        copied.append(1)
        if len(copied) == 1:                              # after the oldest file
            capture(path, range(110, 114), max_files=6)
    monkeypatch.setattr(pod.shutil, "copyfileobj", rotating_copy)
    pod._upload_capture(path, URI)
    assert len(copied) >= 3
    got = uploaded(s3)
    assert got[:10] == [float(n) for n in range(100, 110)]
    assert got == [float(n) for n in range(100, 100 + len(got))]
    monkeypatch.setattr(pod.shutil, "copyfileobj", copy)
    pod._upload_capture(path, URI)
    assert uploaded(s3) == [float(n) for n in range(100, 114)]


# -- the pod process ---------------------------------------------------------------------

def test_a_stopped_serving_pod_uploads_its_last_records_and_exits_0(s3, aws, tmp_path):
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Softmax(dim=1))
    model = tmp_path / "model"
    model.mkdir()
    torch.jit.save(torch.jit.script(net), str(model / "model.pt"))
    s3.upload_file(str(model / "model.pt"), BUCKET, "models/m/1/model.pt")
    work = {"name": "e", "address": "endpoint.e",
            "models": [{"version": 1, "uri": f"s3://{BUCKET}/models/m/1/", "weight": 100}],
            "capture": {"uri": f"s3://{BUCKET}/capture/endpoint-e/", "sample_percent": 100}}
    # no upload round before the stop: the records reach storage only by the last one
    with pod_serve(work, tmp_path / "work", "the pod's server to load its model") as client:
        for n in range(20):
            client.post("/v2/models/e/infer", json={"inputs": [
                {"name": "input", "shape": [1, 2], "datatype": "FP32",
                 "data": [float(n), 1.0]}]}).raise_for_status()
    body = s3.get_object(Bucket=BUCKET, Key="capture/endpoint-e/pod-a.jsonl")["Body"].read()
    records = [json.loads(line) for line in body.splitlines()]
    assert [r["inputs"][0]["x0"] for r in records] == [float(n) for n in range(20)]
