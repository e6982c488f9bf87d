"""Serving side by side: mlform's `local` endpoint against KServe's Python model server
and MLServer, the same TorchScript model behind the same Open Inference Protocol v2.

The model is the MLP of `tests/bench/test_serving.py` (16 -> 64 -> 64 -> 2, softmax),
saved once as TorchScript and served by all three from that one file:

- **mlform**: the `local` endpoint started through the provider's handlers (a registry
  version, then its server process on 127.0.0.1), capture on for every request
  (``sample_percent = 100``), default settings otherwise (one torch thread).
- **KServe** 0.21 (`serving_peers/kserve_server.py`): a `kserve.Model` subclass under
  `kserve.ModelServer`, one uvicorn worker (its default), gRPC off, on 127.0.0.1.
- **MLServer** 1.7 (`serving_peers/mlserver/`): a custom `MLModel` runtime started with
  ``mlserver start``, REST on 127.0.0.1, its gRPC server (which cannot be turned off) on
  another free port, metrics server off (``metrics_endpoint: null``).  MLServer runs
  inference in worker processes by default (``parallel_workers: 1``: the REST process
  hands every request to one inference process); that default is measured as
  ``mlserver``, and the one-process setting (``parallel_workers: 0``, inference on the
  REST process's event loop as mlform and KServe do it) as ``mlserver-pw0``.

Every server runs one torch thread and writes no line per request (KServe's access and
latency logs and MLServer's ``debug`` access log are off; mlform writes none, but its
capture does write every request to disk).  All get the same request bodies (one row
and 32 rows, FP32, shape [n, 16], data flattened row-major as the protocol has it), and
their answers are checked against the direct forward pass before anything is timed.

Load comes from the one asyncio keep-alive client of `tests/bench/_load.py`, at
concurrency 1, 8 and 32.  The servers are started once and kept running for the whole
run (start-up is not what is measured; every load level begins with unmeasured warm-up
requests); each load level is one `_common.interleaved` case per server, so the order
of the servers rotates every repetition.  The client shares the machine's cores with the
server it drives, as in any loopback benchmark, and equally for every server.

Figures: per server pair, rows and concurrency, requests/s (higher is better) and
p50/p99 latency (lower is better) via `_common.compare`; at concurrency 8 one line per
body size with mlform's requests/s over the fastest peer's (target ≥ 2) and whether its
p99 is below every peer's; and the direct in-process forward pass (the ceiling) for
1 and 32 rows via `_common.report`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tests._waiting import wait_until

from .. import _load
from .._mlp import CLASSES, FEATURES, save_mlp
from .._mlp import rows as mlp_rows
from . import _common

KSERVE = "kserve==0.21.0"
MLSERVER = "mlserver==1.7.1"
# MLServer 1.7.1's inference workers call asyncio.get_event_loop() with no loop set, which
# uvloop >= 0.22 refuses: every worker dies at start and is restarted forever
# (SeldonIO/MLServer issue 2286, fix unreleased).  The last uvloop before that change:
MLSERVER_UVLOOP = "uvloop==0.21.0"
HERE = Path(__file__).resolve().parent / "serving_peers"
NAME = "mlp"
CONCURRENCY = (1, 8, 32)
ROWS = (1, 32)
REQUESTS = {1: 1000, 8: 2000, 32: 2000}     # per level and server: a few seconds each
QUICK_REQUESTS = 300
DIRECT_CALLS, QUICK_DIRECT_CALLS = 5000, 300
READY_SECONDS = 180                          # torch's import alone is seconds on 2 cores
TARGET_C8 = 2.0                              # mlform ≥ 2 × the fastest peer at concurrency 8


# ---------------------------------------------------------------- build

def _torch_share() -> Path:
    """A folder of links to the main venv's torch and every distribution it requires
    (extras followed), made once per torch version under .tools/peers.

    Why: PyPI's torch is a CUDA build of several GB; installing it again into each peer's
    venv would cost minutes and disk for nothing, since the peers only need to import
    it.  Appending the main venv's whole site-packages would also work, but would let a
    peer silently pick up mlform's own dependencies (fastapi, uvicorn, httptools...) for
    anything it lacks, and so measure a different install than its users get; this
    folder holds torch's closure only.  setuptools is left out: torch needs it only to
    build extensions, and each venv has its own."""
    from packaging.requirements import Requirement

    torch_dist = importlib.metadata.distribution("torch")
    share = _common.PEERS / f"torch-share-{torch_dist.version}"
    if share.exists():
        return share
    site = Path(torch_dist.locate_file(""))
    todo, seen, entries = [("torch", frozenset())], set(), set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen or name == "setuptools":
            continue
        seen.add((name, extras))
        dist = importlib.metadata.distribution(name)
        for file in dist.files or ():
            if file.parts[0] not in ("..", "__pycache__") and not file.name.endswith(".pth"):
                entries.add(file.parts[0])
        for text in dist.requires or ():
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": extra})
                                         for extra in (extras or {""})):
                todo.append((req.name, frozenset(req.extras)))
    tmp = share.with_name(share.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for entry in sorted(entries):
        (tmp / entry).symlink_to(site / entry)
    tmp.rename(share)
    return share


def _with_torch(bin_dir: Path, share: Path) -> None:
    """A .pth file in the peer venv naming the torch folder: site.py appends such a line
    to sys.path after the venv's own site-packages, so the peer's own packages win."""
    site = next((bin_dir.parent / "lib").glob("python*/site-packages"))
    (site / "mlform-bench-torch.pth").write_text(f"{share}\n")


def build() -> None:
    """Each peer in its own venv (pinned), torch shared from the main venv, and a check
    that both import with it."""
    share = _torch_share()
    for name, requirements in (("kserve", [KSERVE]), ("mlserver", [MLSERVER, MLSERVER_UVLOOP])):
        bin_dir = _common.peer_venv(name, requirements)
        _with_torch(bin_dir, share)
        subprocess.run([str(bin_dir / "python"), "-c",
                        f"import torch, {name}; torch.ones(1)"], check=True)


# ---------------------------------------------------------------- the model and bodies

def _body(n: int) -> bytes:
    """One OIP v2 request: input 0, FP32, shape [n, 16], data flattened row-major."""
    data = [v for row in mlp_rows(n) for v in row]
    return json.dumps({"inputs": [{"name": "input", "shape": [n, FEATURES],
                                   "datatype": "FP32", "data": data}]}).encode()


# ---------------------------------------------------------------- servers

@dataclass
class Server:
    name: str
    port: int
    path: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> int | None:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5, trust_env=False).status_code
    except httpx.HTTPError:
        return None


def _spawn(stack: ExitStack, name: str, argv: list[str], cwd: Path, port: int) -> Server:
    """Start a peer server in a session of its own, wait until its model is ready, and
    stop it (SIGTERM, then SIGKILL to its session) when the stack closes."""
    log = open(cwd / f"{name}.log", "w", encoding="utf-8")
    stack.callback(log.close)
    proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    stack.callback(stop)
    def failed() -> RuntimeError:
        log.flush()
        tail = (cwd / f"{name}.log").read_text(errors="replace")[-3000:]
        return RuntimeError(f"{name} did not become ready (exit {proc.poll()}):\n{tail}")

    def ready() -> bool:
        if proc.poll() is not None:
            raise failed()
        return _get(port, f"/v2/models/{NAME}/ready") == 200

    try:
        wait_until(ready, READY_SECONDS, f"{name} to become ready", interval=0.2)
    except AssertionError:
        raise failed() from None
    return Server(name, port, f"/v2/models/{NAME}/infer")


def _start_mlform(stack: ExitStack, root: Path, model_dir: Path) -> Server:
    """The `local` endpoint through the provider's handlers, as test_serving.py starts
    it, capture on for every request."""
    from mlform.providers.base import Desired, ProviderContext
    from mlform.providers.kit import calls as contract
    from mlform.providers.local.endpoints import EndpointHandler
    from mlform.providers.local.env import LocalEnv, default_python
    from mlform.providers.local.models import ModelHandler

    context = ProviderContext(name="local", alias=None, stack="bench", env="bench",
                              stack_dir=root, config={})
    env = LocalEnv(context=context, root=root / ".mlform" / "local", host="127.0.0.1",
                   python=default_python(), ready_timeout=READY_SECONDS)
    models, endpoints = ModelHandler(env), EndpointHandler(env)
    model = models.create(contract.plan(models, Desired(
        "model.mlp", "model", NAME, {"artifact": model_dir.as_uri(), "framework": "torch"}),
        None))
    ref = {"address": "model.mlp", "uri": model.attributes["uri"],
           "version": model.attributes["version"], "approval": "approved"}
    want = Desired("endpoint.mlp", "endpoint", NAME,
                   {"model": ref, "capture": {"sample_percent": 100}})
    live = endpoints.create(contract.plan(endpoints, want, None))
    stack.callback(endpoints.delete, live)
    url = live.attributes["url"]
    return Server("mlform", live.attributes["port"],
                  url[url.index("/v2/"):] + "/infer")


def _start_kserve(stack: ExitStack, root: Path, model: Path) -> Server:
    port = _free_port()
    python = _common.PEERS / "kserve" / "bin" / "python"
    return _spawn(stack, "kserve", [str(python), str(HERE / "kserve_server.py"),
                                    "--model-path", str(model), "--name", NAME,
                                    "--port", str(port)], root, port)


def _start_mlserver(stack: ExitStack, root: Path, model: Path, name: str,
                    parallel_workers: int | None) -> Server:
    """A copy of serving_peers/mlserver/ with the model file beside its model-settings
    and the free ports (and, when given, parallel_workers) written into settings.json."""
    repo = root / name
    shutil.copytree(HERE / "mlserver", repo)
    shutil.copy(model, repo / NAME / "model.pt")
    settings = json.loads((repo / "settings.json").read_text())
    port = _free_port()
    settings.update(http_port=port, grpc_port=_free_port())
    if parallel_workers is not None:
        settings["parallel_workers"] = parallel_workers
    (repo / "settings.json").write_text(json.dumps(settings, indent=2))
    mlserver = _common.PEERS / "mlserver" / "bin" / "mlserver"
    return _spawn(stack, name, [str(mlserver), "start", str(repo)], repo, port)


# ---------------------------------------------------------------- checks and figures

def _check_answers(servers: list[Server], module) -> None:
    """Every server's probabilities for both bodies equal the direct forward pass."""
    import httpx
    import torch

    for n in ROWS:
        with torch.inference_mode():
            want = module(torch.tensor(mlp_rows(n))).reshape(-1).tolist()
        for server in servers:
            response = httpx.post(f"http://127.0.0.1:{server.port}{server.path}",
                                  content=_body(n), timeout=30, trust_env=False,
                                  headers={"content-type": "application/json"})
            if response.status_code != 200:
                raise RuntimeError(f"{server.name}: {response.status_code} {response.text[:500]}")
            output = response.json()["outputs"][0]
            got = torch.tensor(output["data"], dtype=torch.float64).reshape(-1).tolist()
            if list(output["shape"]) != [n, CLASSES] or len(got) != len(want) or \
                    max(abs(a - b) for a, b in zip(got, want)) > 1e-6:
                raise RuntimeError(f"{server.name} answers {output} for {n} rows; "
                                   f"the model gives {want}")


def _direct(module, n: int, calls: int, reps: int) -> None:
    """The ceiling: the same module called in this process, one torch thread, the answer
    turned into Python floats as a server must."""
    import torch

    x = torch.tensor(mlp_rows(n))
    rates, p50s, p99s = [], [], []
    with torch.inference_mode():
        for _ in range(_load.WARMUP):
            module(x)
        for _ in range(max(reps, 1)):
            times = []
            t0 = time.perf_counter()
            for _ in range(calls):
                t = time.perf_counter()
                module(x).tolist()
                times.append((time.perf_counter() - t) * 1000)
            rates.append(calls / (time.perf_counter() - t0))
            p50s.append(_load.percentile(times, 50))
            p99s.append(_load.percentile(times, 99))
    common = dict(rows=n, calls=calls, reps=max(reps, 1), torch_threads=1,
                  measured="in-process forward pass, no server: the ceiling")
    _common.report("serving_direct_calls_per_s", statistics.median(rates), "calls/s",
                   range=[round(min(rates), 1), round(max(rates), 1)], **common)
    _common.report("serving_direct_p50", statistics.median(p50s), "ms", **common)
    _common.report("serving_direct_p99", statistics.median(p99s), "ms", **common)


def _level(servers: list[Server], rows: int, concurrency: int, total: int,
           reps: int) -> None:
    """One body size at one concurrency: every server driven once per repetition, in
    rotated order; then each peer compared with mlform."""
    body = _body(rows)
    p50: dict[str, list[float]] = {s.name: [] for s in servers}
    p99: dict[str, list[float]] = {s.name: [] for s in servers}

    def case(server: Server) -> Callable[[int], float]:
        def one(rep: int) -> float:
            load = _load.run(server.port, server.path, body, concurrency, total)
            if load.errors:
                raise RuntimeError(f"{server.name}: {load.errors} failed requests, "
                                   f"first: {load.failures[:1]}")
            p50[server.name].append(load.p50_ms)
            p99[server.name].append(load.p99_ms)
            return load.requests_per_s
        return one

    rps = _common.interleaved(reps, {s.name: case(s) for s in servers})
    common = dict(rows=rows, concurrency=concurrency, requests=total, capture=True,
                  model="mlp-16-64-64-2", client="tests/bench/_load.py asyncio keep-alive",
                  measured="whole server process over loopback")
    rps_target = f">= {TARGET_C8} x the fastest peer" if concurrency == 8 else None
    p99_target = "below every peer" if concurrency == 8 else None
    peers = [s.name for s in servers if s.name != "mlform"]
    for peer in peers:
        _common.compare("serving_requests_per_s", peer, rps["mlform"], rps[peer], "req/s",
                        higher_is_better=True, target=rps_target, **common)
        _common.compare("serving_latency_p50", peer, p50["mlform"], p50[peer], "ms", **common)
        _common.compare("serving_latency_p99", peer, p99["mlform"], p99[peer], "ms",
                        target=p99_target, **common)
    if concurrency == 8:
        fastest = max(peers, key=lambda p: statistics.median(rps[p]))
        ratio = statistics.median(rps["mlform"]) / statistics.median(rps[fastest])
        p99_ours = statistics.median(p99["mlform"])
        _common.report("serving_c8_over_fastest_peer", ratio, "x", rows=rows,
                       fastest_peer=fastest, target=TARGET_C8, met=ratio >= TARGET_C8,
                       p99_below_every_peer=all(p99_ours < statistics.median(p99[p])
                                                for p in peers), reps=reps)


def run(reps: int, quick: bool) -> None:
    import torch

    if quick:
        reps = min(reps, 2)
    requests = {c: QUICK_REQUESTS for c in CONCURRENCY} if quick else REQUESTS
    with tempfile.TemporaryDirectory(prefix="mlform-serving-peers-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        model = save_mlp(root / "run")
        servers = [
            _start_mlform(stack, root, model.parent),
            _start_kserve(stack, root, model),
            _start_mlserver(stack, root, model, "mlserver", None),
            _start_mlserver(stack, root, model, "mlserver-pw0", 0),
        ]
        torch.set_num_threads(1)
        module = torch.jit.load(str(model))
        _check_answers(servers, module)
        for rows in ROWS:
            for concurrency in CONCURRENCY:
                _level(servers, rows, concurrency, requests[concurrency], reps)
        for rows in ROWS:
            _direct(module, rows, QUICK_DIRECT_CALLS if quick else DIRECT_CALLS, reps)
