"""The model server's graceful drain on SIGTERM (`kit.serving`, a real server process).

What a stopped endpoint (the `local` provider's `processes.stop`, a Kubernetes pod
being replaced) must not lose: requests already in the server finish with 200, the
process exits 0 within its grace period, and every request it accepted has its capture
record on disk, once, even when the capture writer is behind at the signal.

The server runs from a small launcher that holds the capture writer on its first record
(until the test writes a line to the process's stdin) and says on stdout when that
happened and when the server starts closing the capture; everything else is the server
as the providers start it.  Requests are "in flight" in the strict sense: each one
sends its headers with ``Expect: 100-continue`` and waits for the server's
``100 Continue``, which uvicorn sends only once the app is reading the body, so the
request is inside the app when the signal comes.  Nothing sleeps to synchronise: every
wait is for something the test can see (a line of output, an interim response, a
refused connection), with a deadline.
"""

from __future__ import annotations

import http.client
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _metrics import value
from _waiting import wait_until

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

FEATURES = ["amount", "hour", "age", "score"]
NAME = "fraud"
#: requests answered before the signal (their records wait behind the held writer)
ANSWERED = 8
#: requests inside the app, waiting for their bodies, when the signal comes
IN_FLIGHT = 3

#: The server's `main`, with the capture writer held on its first record until a line
#: arrives on stdin, and a line of output when the writer is held and when the capture
#: is being closed (the last step of the drain).
LAUNCHER = """
import sys
from mlform.providers.kit import serving

write, close = serving.CaptureLog._write, serving.CaptureLog.close
held = []

def held_write(self, record):
    if not held:
        held.append(record)
        print("writer held", flush=True)
        sys.stdin.readline()
    write(self, record)

def announced_close(self, timeout=10.0):
    print("capture closing", flush=True)
    close(self, timeout)

serving.CaptureLog._write = held_write
serving.CaptureLog.close = announced_close
sys.exit(serving.main(["serving", sys.argv[1]]))
"""


def save_mlp(directory: Path) -> str:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(len(FEATURES), 8), torch.nn.ReLU(),
                              torch.nn.Linear(8, 2), torch.nn.Softmax(dim=1))
    directory.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(net), str(directory / "model.pt"))
    (directory / "signature.json").write_text(json.dumps({"inputs": FEATURES,
                                                          "outputs": ["p0", "p1"]}))
    return str(directory)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def body(n: int) -> bytes:
    """Request n: its amount is n, which is how its capture record is recognised."""
    return json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                   "data": [float(n), 1.0, 2.0, 3.0]}]}).encode()


class Output:
    """The server's stdout, line by line, read by a thread so a wait can have a deadline."""

    def __init__(self, stream) -> None:
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)                     # end of output: the process is gone

    def expect(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {timeout:g} s; "
                                     f"output so far: {self.seen}") from None
            if line is None:
                raise AssertionError(f"the server's output ended without {text!r}: {self.seen}")
            self.seen.append(line)
            if text in line:
                return


def start_in_flight(port: int, payload: bytes) -> socket.socket:
    """Send a request's headers only and wait for ``100 Continue``: the app is then
    running for this request and waiting for its body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall((f"POST /v2/models/{NAME}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                  f"Expect: 100-continue\r\n\r\n").encode())
    interim = b""
    while b"\r\n\r\n" not in interim:           # nothing else comes before the body is sent
        chunk = sock.recv(64)
        assert chunk, f"the server closed the connection instead of 100 Continue: {interim!r}"
        interim += chunk
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
    return sock


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def server(tmp_path):
    port = free_port()
    capture = tmp_path / "capture.jsonl"
    spec = tmp_path / "server.json"
    spec.write_text(json.dumps({
        "address": "endpoint.fraud", "name": NAME, "host": "127.0.0.1", "port": port,
        "token": "t", "torch_threads": 1, "generation": 1,
        "models": [{"version": 1, "path": save_mlp(tmp_path / "model"), "weight": 100}],
        "capture": {"path": str(capture), "sample_percent": 100}}))
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(spec)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        yield proc, port, capture, Output(proc.stdout)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_sigterm_drains_requests_in_flight_and_the_capture_queue(server):
    proc, port, capture, output = server
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=30, trust_env=False) as client:
        def ready() -> bool:
            try:
                return client.get("/v2/health/ready").status_code == 200
            except httpx.TransportError:
                return False
        wait_until(ready, 60, "the server to load its model")

        for n in range(ANSWERED):
            answer = client.post(f"/v2/models/{NAME}/infer", content=body(n),
                                 headers={"content-type": "application/json"})
            assert answer.status_code == 200, answer.text
        output.expect("writer held", 30)
        # the writer holds the first record; the other answered ones wait in its queue
        metrics = client.get("/metrics").text
        assert value(metrics, "mlform_capture_queue_depth") == ANSWERED - 1, metrics
        assert value(metrics, "mlform_capture_written_total") == 0, metrics

    flying = {n: start_in_flight(port, body(n))
              for n in range(ANSWERED, ANSWERED + IN_FLIGHT)}
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    # the drain has begun once the server no longer accepts connections
    wait_until(lambda: refuses_connections(port), 15, "the server to stop listening")
    assert proc.poll() is None

    for n, sock in flying.items():
        with sock:
            sock.sendall(body(n))
            response = http.client.HTTPResponse(sock)
            response.begin()
            answer = json.loads(response.read())
            assert response.status == 200, answer
            assert len(answer["outputs"][0]["data"]) == 2

    # every request has its answer; the server now closes the capture and must wait for
    # the held writer: it is still running until the writer is let go
    output.expect("capture closing", 15)
    assert proc.poll() is None, "the server exited without writing its queued capture"
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.wait(timeout=20) == 0, output.seen
    # uvicorn's grace period (timeout_graceful_shutdown) plus the capture's close: 10 s each
    assert time.monotonic() - signalled < 20

    records = [json.loads(line) for line in capture.read_text().splitlines()]
    amounts = sorted(r["inputs"][0]["amount"] for r in records)
    assert amounts == [float(n) for n in range(ANSWERED + IN_FLIGHT)]   # none lost, none twice
    assert all(r["status"] == 200 for r in records)
