"""The model server's request capture (`kit.serving_capture.CaptureLog`): off the request
path, bounded in memory (a full queue drops and counts, never blocks) and on disk
(rotation by size and age, a cap on files), and read back whole by the monitors across
rotated files.

The writer thread is held on an `Event` where a test needs it busy: nothing here sleeps
to synchronise."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from _metrics import kinds, value

pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from mlform.providers.kit import serving  # noqa: E402
from mlform.providers.kit.monitor_check import (  # noqa: E402
    _read_last, _read_since, capture_files,
)
from mlform.providers.kit.serving_capture import CaptureLimits, CaptureLog  # noqa: E402


def _request(n: int) -> dict:
    return {"time": float(n), "status": 200, "latency_ms": 1.0,
            "inputs": [{"a": float(n), "b": 1.0}], "outputs": [[0.5, 0.5]]}


def _held_writer(log: CaptureLog) -> threading.Event:
    """Hand the writer a record that waits for the returned Event: until it is set the
    writer is busy and the queue only fills."""
    started, release = threading.Event(), threading.Event()

    def slow() -> dict:
        started.set()
        release.wait(30)
        return _request(-1)

    assert log.submit(slow)
    assert started.wait(30), "the writer never took the first record"
    return release


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path):
    log = CaptureLog(str(tmp_path / "capture.jsonl"), CaptureLimits(queue=3))
    release = _held_writer(log)
    assert [log.submit(_request(n)) for n in range(3)] == [True, True, True]
    done = threading.Event()
    outcome = []

    def caller() -> None:          # a request handler: must return at once
        outcome.extend(log.submit(_request(n)) for n in range(3, 8))
        done.set()

    threading.Thread(target=caller, daemon=True).start()
    assert done.wait(10), "submit blocked on a full queue"
    assert outcome == [False] * 5 and log.dropped == 5 and log.pending == 3
    release.set()
    log.close()
    lines = [json.loads(x) for x in (tmp_path / "capture.jsonl").read_text().splitlines()]
    assert [line["time"] for line in lines] == [-1.0, 0.0, 1.0, 2.0]
    assert log.written == 4


def test_metrics_expose_the_drop_counter(tmp_path):
    server = serving.Server.__new__(serving.Server)     # only what metrics() reads
    server.telemetry = serving.Telemetry(server)
    for _ in range(7):
        server.telemetry.observe("m", 1, 200, 0.001, 1)
    server.capture = CaptureLog(str(tmp_path / "capture.jsonl"), CaptureLimits(queue=1))
    release = _held_writer(server.capture)
    server.capture.submit(_request(0))
    server.capture.submit(_request(1))                  # dropped
    text = server.metrics()
    assert kinds(text)["mlform_capture_dropped"] == "counter"
    assert kinds(text)["mlform_request_latency_seconds"] == "histogram"
    assert value(text, "mlform_capture_dropped_total") == 1
    assert value(text, "mlform_requests_total", model="m", version="1", variant="primary",
                 code="200") == 7
    assert value(text, "mlform_capture_queue_depth") == 1
    release.set()
    server.capture.close()


def _line_bytes() -> int:
    return len(serving._dumps(_request(100))) + 1


def test_rotation_keeps_at_most_n_files_and_the_monitor_reads_them_in_order(tmp_path):
    path = tmp_path / "capture.jsonl"
    # four lines per file: 10 files' worth of requests, 3 files kept
    log = CaptureLog(str(path), CaptureLimits(max_bytes=4 * _line_bytes(), max_files=3))
    for n in range(100, 140):
        assert log.submit(_request(n))
    log.close()
    files = capture_files(path)
    assert [f.name for f in files] == ["capture.jsonl.2", "capture.jsonl.1", "capture.jsonl"]
    assert not (tmp_path / "capture.jsonl.3").exists()
    assert all(f.stat().st_size <= 4 * _line_bytes() for f in files)
    assert log.rotations == 9
    kept = [json.loads(x)["time"] for f in files for x in f.read_text().splitlines()]
    assert kept == [float(n) for n in range(128, 140)]        # the newest 12, in order

    window = _read_since(path, None)
    assert [r["time"] for r in window.requests] == kept and window.skipped_lines == 0
    last = _read_last(path, 6)
    assert [r["time"] for r in last.requests] == kept[-6:]
    assert [r["time"] for r in _read_last(path, 100).requests] == kept


def test_the_next_run_reads_on_from_where_it_stopped_across_a_rotation(tmp_path):
    path = tmp_path / "capture.jsonl"
    limits = CaptureLimits(max_bytes=4 * _line_bytes(), max_files=4)
    log = CaptureLog(str(path), limits)
    for n in range(100, 102):
        log.submit(_request(n))
    log.close()
    first = _read_since(path, None)
    assert [r["time"] for r in first.requests] == [100.0, 101.0]
    log = CaptureLog(str(path), limits)     # a restarted server appends, then rotates
    for n in range(102, 110):
        log.submit(_request(n))
    log.close()
    assert len(capture_files(path)) == 3
    again = _read_since(path, first.describe())
    assert [r["time"] for r in again.requests] == [float(n) for n in range(102, 110)]
    assert _read_since(path, again.describe()).requests == []


def test_rotation_by_age(tmp_path):
    path = tmp_path / "capture.jsonl"
    path.write_bytes(serving._dumps(_request(100)) + b"\n")
    log = CaptureLog(str(path), CaptureLimits(max_age_s=3600, max_files=2))
    log._opened -= 7200          # the live file was started two hours ago
    log.submit(_request(101))
    log.submit(_request(102))    # the new file is young: no second rotation
    log.close()
    assert log.rotations == 1
    assert [r["time"] for r in _read_since(path, None).requests] == [100.0, 101.0, 102.0]
    assert [json.loads(x)["time"] for x in path.read_text().splitlines()] == [101.0, 102.0]


def test_a_crash_mid_write_leaves_readable_files(tmp_path):
    path = tmp_path / "capture.jsonl"
    good = serving._dumps(_request(100)) + b"\n"
    path.write_bytes(good + serving._dumps(_request(101))[:20])     # killed mid-line
    window = _read_since(path, None)
    assert [r["time"] for r in window.requests] == [100.0]           # the torn line waits
    # the restarted server ends the torn line, so the next record stays whole
    log = CaptureLog(str(path), CaptureLimits(max_bytes=10 * len(good), max_files=2))
    log.submit(_request(102))
    log.close()
    window = _read_since(path, None)
    assert [r["time"] for r in window.requests] == [100.0, 102.0]
    assert window.skipped_lines == 1
    # a rotated file that ends torn (a crash right at rotation) is read whole lines only
    rotated = Path(f"{path}.1")
    os.replace(path, rotated)
    with open(rotated, "ab") as fh:
        fh.write(serving._dumps(_request(103))[:15])
    path.write_bytes(serving._dumps(_request(104)) + b"\n")
    window = _read_since(path, None)
    assert [r["time"] for r in window.requests] == [100.0, 102.0, 104.0]
    assert window.skipped_lines == 2
