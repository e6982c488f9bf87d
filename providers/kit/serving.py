"""mlform's model server (Open Inference Protocol v2): the `local` provider starts one
detached process per endpoint, the `kubernetes` provider's endpoint pods run it.

Run as ``python -m mlform.providers.kit.serving SPEC_JSON`` (or by this file's
path, which is how the provider starts it: the module imports nothing of
mlform, so any interpreter with torch, fastapi and uvicorn can serve).
``SPEC_JSON`` is ``<root>/endpoints/<slug>/server.json``; its path on the
command line is also how the provider recognises the process as its own.

The spec (written by `endpoints.py`, mode 0600 because it holds the admin token)::

    {"address", "name", "host", "port", "token", "torch_threads", "generation",
     "models": [{"version": 3, "path": ".../versions/3", "weight": 90}, ...],
     "capture": {"path": ".../capture.jsonl", "sample_percent": 100} | null}

Routes (Open Inference Protocol v2, plus two admin routes):

* ``GET  /v2/health/live``, ``GET /v2/health/ready`` (200 once models are loaded)
* ``GET  /v2/models/{name}`` and ``/v2/models/{name}/versions/{v}`` (metadata)
* ``POST /v2/models/{name}/infer`` and ``/v2/models/{name}/versions/{v}/infer``
* ``GET  /v2/admin/status``  what is served (versions, weights, generation, pid)
* ``POST /v2/admin/reload``  re-read the spec, load new versions in a background
  thread and swap them in atomically once loaded (header ``x-mlform-token``).

Why a hot reload rather than a restart: every request reads the current
`Serving` snapshot once, so requests in flight finish on the old models and new
ones start on the new models; nothing is refused while a model is updated.

The listening socket is bound with SO_REUSEPORT so that a replacement process
(new torch settings, a hung server) can take over the same port before the old
one is stopped; the provider checks the port is free, or held by its own old
process, before it starts one.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import math
import os
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

# TorchScript is what the run contract saves; torch's notice that it is deprecated
# would only fill every server log.
warnings.filterwarnings("ignore", message=r"`torch\.jit", category=DeprecationWarning)

PLATFORM = "pytorch_torchscript"
TOKEN_HEADER = "x-mlform-token"

#: OIP datatypes accepted on input, and the torch dtype read before casting to float32.
DATATYPES: dict[str, torch.dtype] = {
    "FP32": torch.float32, "FP64": torch.float64, "FP16": torch.float16,
    "INT8": torch.int64, "INT16": torch.int64, "INT32": torch.int64, "INT64": torch.int64,
    "UINT8": torch.int64, "UINT16": torch.int64, "UINT32": torch.int64, "BOOL": torch.bool,
}


class BadRequest(Exception):
    """The request does not fit the model: answered 400 with an OIP error body."""


def _json(doc: Any, status: int = 200) -> Response:
    return Response(json.dumps(doc, separators=(",", ":")).encode(), status_code=status,
                    media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


# ----------------------------------------------------------------- models

@dataclass(frozen=True)
class LoadedVersion:
    """One model version in memory, with what its metadata route reports."""

    version: Any
    path: str
    module: Any                     # torch.jit.ScriptModule
    inputs: tuple[str, ...]         # feature names (signature.json, else x0..xF-1)
    outputs: tuple[str, ...]
    n_features: int | None
    n_outputs: int | None

    def metadata(self, name: str, versions: list) -> dict:
        return {"name": name, "versions": [str(v) for v in versions], "platform": PLATFORM,
                "inputs": [{"name": "input", "datatype": "FP32",
                            "shape": [-1, self.n_features if self.n_features else -1],
                            "features": list(self.inputs)}],
                "outputs": [{"name": "output", "datatype": "FP32",
                             "shape": [-1, self.n_outputs if self.n_outputs else -1],
                             "labels": list(self.outputs)}]}


def _first_linear_width(module: Any) -> int | None:
    """Input width of the first 2-D weight: a guess at the feature count without a signature."""
    for param in module.parameters():
        if param.dim() == 2:
            return int(param.shape[1])
    return None


def load_version(version: Any, path: str) -> LoadedVersion:
    """Load `model.pt` (TorchScript, CPU) and `signature.json`, and warm the module up."""
    directory = Path(path)
    module = torch.jit.load(str(directory / "model.pt"), map_location="cpu")
    module.eval()
    signature = {}
    sig_path = directory / "signature.json"
    if sig_path.exists():
        signature = json.loads(sig_path.read_text())
    inputs = tuple(str(x) for x in signature.get("inputs") or ())
    outputs = tuple(str(x) for x in signature.get("outputs") or ())
    n_features = len(inputs) or _first_linear_width(module)
    n_outputs = len(outputs) or None
    if n_features:
        # A few calls let the TorchScript profiling executor settle before traffic arrives,
        # and tell the output width when the signature does not.
        with torch.inference_mode():
            for rows in (1, 2, 8):
                out = _first_tensor(module(torch.zeros(rows, n_features)))
        n_outputs = n_outputs or (int(out.shape[-1]) if out.dim() > 1 else 1)
    if not inputs and n_features:
        inputs = tuple(f"x{i}" for i in range(n_features))
    if not outputs and n_outputs:
        outputs = tuple(f"y{i}" for i in range(n_outputs))
    return LoadedVersion(version, path, module, inputs, outputs, n_features, n_outputs)


def _first_tensor(value: Any) -> torch.Tensor:
    """Models may return a tensor, a tuple of tensors or a dict; serve the first tensor."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value:
        return _first_tensor(value[0])
    if isinstance(value, dict) and value:
        return _first_tensor(next(iter(value.values())))
    raise BadRequest(f"the model returned {type(value).__name__}, not a tensor")


def weighted_schedule(weights: list[int]) -> tuple[int, ...]:
    """Smooth weighted round-robin (as nginx does) over gcd-reduced weights.

    90/10 gives a cycle of ten picks with the minority spread out, so any 200
    consecutive requests split exactly 180/20.
    """
    positive = [w for w in weights if w > 0]
    if not positive:
        return ()
    g = reduce(math.gcd, positive)
    reduced = [max(w, 0) // g for w in weights]
    total = sum(reduced)
    current = [0] * len(reduced)
    out = []
    for _ in range(total):
        for i, w in enumerate(reduced):
            current[i] += w
        best = max(range(len(reduced)), key=lambda i: current[i])
        current[best] -= total
        out.append(best)
    return tuple(out)


# ----------------------------------------------------------------- capture

class CaptureLog:
    """Appends one JSON line per sampled request; sampling is exact, not random:
    with p percent, request n is kept when floor(n*p/100) steps up."""

    def __init__(self, path: str) -> None:
        self.path = path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")
        self._seen = 0
        self._lock = threading.Lock()

    def sampled(self, percent: int) -> bool:
        with self._lock:
            self._seen += 1
            n = self._seen
        return (n * percent) // 100 > ((n - 1) * percent) // 100

    def write(self, line: dict) -> None:
        text = json.dumps(line, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            self._file.write(text)
            self._file.flush()      # monitors read the file while the server runs

    def close(self) -> None:
        with self._lock:
            self._file.close()


# ----------------------------------------------------------------- serving state

@dataclass(frozen=True)
class Serving:
    """An immutable snapshot: what one request sees from start to end."""

    generation: int
    versions: tuple[LoadedVersion, ...]
    weights: tuple[int, ...]
    schedule: tuple[int, ...]
    capture_percent: int | None     # None: capture off

    def by_version(self, wanted: str) -> LoadedVersion | None:
        return next((lv for lv in self.versions if str(lv.version) == wanted), None)


class Server:
    """The process's state: the spec, the current `Serving` snapshot, the loader."""

    def __init__(self, spec_path: Path) -> None:
        self.spec_path = spec_path
        self.spec = read_spec(spec_path)
        self.name = self.spec["name"]
        self.started = time.time()
        self.serving: Serving | None = None
        self.loading_generation: int | None = None
        self.error: dict | None = None       # {"generation", "message"} of the last failed load
        self.requests = itertools.count()
        self.served = 0
        self._cache: dict[tuple, LoadedVersion] = {}
        self._load_lock = threading.Lock()
        self.capture: CaptureLog | None = None

    # -- loading ------------------------------------------------------------

    def load_async(self, spec: dict) -> None:
        self.loading_generation = spec.get("generation", 0)
        threading.Thread(target=self._load, args=(spec,), name="model-loader", daemon=True).start()

    def _load(self, spec: dict) -> None:
        """Load every version the spec names (reusing ones already in memory), then swap."""
        generation = spec.get("generation", 0)
        with self._load_lock:
            try:
                versions, weights = [], []
                for entry in spec["models"]:
                    key = (str(entry["version"]), entry["path"])
                    loaded = self._cache.get(key)
                    if loaded is None:
                        loaded = load_version(entry["version"], entry["path"])
                    versions.append(loaded)
                    weights.append(int(entry.get("weight", 100)))
                schedule = weighted_schedule(weights)
                if not schedule:
                    raise ValueError("no model version has a positive weight")
                capture = spec.get("capture")
                if capture and (self.capture is None or self.capture.path != capture["path"]):
                    old, self.capture = self.capture, CaptureLog(capture["path"])
                    if old is not None:
                        old.close()
                serving = Serving(generation, tuple(versions), tuple(weights), schedule,
                                  int(capture.get("sample_percent", 100)) if capture else None)
                # Keep only what the new snapshot serves; the old one stays referenced
                # by requests still in flight until they finish.
                self._cache = {(str(v.version), v.path): v for v in versions}
                self.spec = spec
                self.serving = serving          # the atomic switch
                self.error = None
                print(f"serving generation {generation}: "
                      + ", ".join(f"v{v.version}={w}" for v, w in zip(versions, weights)), flush=True)
            except Exception as exc:  # reported through /v2/admin/status, old models keep serving
                self.error = {"generation": generation, "message": f"{type(exc).__name__}: {exc}"}
                print(f"loading generation {generation} failed: {self.error['message']}", flush=True)
            finally:
                if self.loading_generation == generation:
                    self.loading_generation = None

    # -- admin --------------------------------------------------------------

    def status(self) -> dict:
        serving = self.serving
        return {
            "name": self.name, "pid": os.getpid(), "started": self.started,
            "host": self.spec["host"], "port": self.spec["port"],
            "torch_threads": torch.get_num_threads(),
            "ready": serving is not None,
            "generation": serving.generation if serving else None,
            "loading": self.loading_generation, "error": self.error,
            "versions": ([{"version": v.version, "weight": w, "path": v.path}
                          for v, w in zip(serving.versions, serving.weights)] if serving else []),
            "capture": ({"path": self.capture.path, "sample_percent": serving.capture_percent}
                        if serving and serving.capture_percent is not None and self.capture else None),
            "requests": self.served,
        }

    def reload(self) -> tuple[int, dict]:
        try:
            spec = read_spec(self.spec_path)
        except (OSError, ValueError, KeyError) as exc:
            return 400, {"error": f"cannot read {self.spec_path}: {exc}"}
        if (spec["host"], spec["port"]) != (self.spec["host"], self.spec["port"]):
            return 409, {"error": "host or port changed: that needs a new process"}
        self.load_async(spec)
        return 202, {"generation": spec.get("generation", 0)}

    # -- inference ----------------------------------------------------------

    def pick(self, serving: Serving) -> LoadedVersion:
        n = next(self.requests)     # itertools.count: atomic under the GIL
        return serving.versions[serving.schedule[n % len(serving.schedule)]]


def read_spec(path: Path) -> dict:
    spec = json.loads(path.read_text())
    for key in ("name", "host", "port", "models"):
        if key not in spec:
            raise KeyError(f"the spec has no {key!r}")
    return spec


def parse_inputs(doc: Any, model: LoadedVersion) -> tuple[torch.Tensor, int]:
    """An OIP v2 request body -> a float32 [N, F] tensor (and N).

    Accepts one tensor ``[N, F]`` (any name), or one ``[N]``/``[N, 1]`` tensor per
    feature named as in the signature, stacked in signature order.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise BadRequest('the request needs "inputs": a non-empty list of tensors')
    tensors = [_tensor(item) for item in doc["inputs"]]
    if len(tensors) == 1:
        x = tensors[0][1]
        if x.dim() == 1:
            x = x.reshape(1, -1)
        if x.dim() != 2:
            raise BadRequest(f"input shape must be [N, F], got {list(x.shape)}")
    else:
        by_name = {name: t for name, t in tensors}
        missing = [f for f in model.inputs if f not in by_name]
        if missing:
            raise BadRequest(f"inputs given per feature must name every feature; missing {missing}")
        columns = [by_name[f].reshape(-1) for f in model.inputs]
        if len({c.shape[0] for c in columns}) != 1:
            raise BadRequest("per-feature inputs must all have the same length")
        x = torch.stack(columns, dim=1)
    if model.n_features and x.shape[1] != model.n_features:
        raise BadRequest(f"the model takes {model.n_features} features "
                         f"({', '.join(model.inputs)}), got {x.shape[1]}")
    return x.to(torch.float32), int(x.shape[0])


def _tensor(item: Any) -> tuple[str, torch.Tensor]:
    if not isinstance(item, dict):
        raise BadRequest("each input must be an object with name, shape, datatype and data")
    name, shape, datatype, data = (item.get(k) for k in ("name", "shape", "datatype", "data"))
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers")
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise BadRequest(f"input {name!r}: datatype {datatype!r} is not supported "
                         f"(use one of {', '.join(DATATYPES)})")
    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: data must be a list")
    try:
        t = torch.tensor(data, dtype=dtype)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise BadRequest(f"input {name!r}: data is not a list of numbers ({exc})") from None
    expected = math.prod(shape)
    if t.numel() != expected:
        raise BadRequest(f"input {name!r}: shape {shape} needs {expected} values, got {t.numel()}")
    return str(name), t.reshape(shape)


# ----------------------------------------------------------------- the app

def build_app(server: Server) -> FastAPI:
    app = FastAPI(title=f"mlform endpoint {server.name}", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.get("/v2/health/live")
    async def live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        ok = server.serving is not None
        return _json({"ready": ok}, 200 if ok else 503)

    @app.get("/v2")
    async def server_metadata() -> Response:
        return _json({"name": "mlform-local", "version": "1", "extensions": []})

    def _versions_of(name: str, version: str | None):
        serving = server.serving
        if name != server.name:
            return None, _error(f"unknown model {name!r}; this endpoint serves {server.name!r}", 404)
        if serving is None:
            return None, _error("the model is still loading", 503)
        if version is not None and serving.by_version(version) is None:
            return None, _error(f"model {name!r} has no version {version!r} being served", 404)
        return serving, None

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str) -> Response:
        serving, problem = _versions_of(name, None)
        if problem:
            return problem
        main = max(zip(serving.weights, range(len(serving.versions))))[1]
        return _json(serving.versions[main].metadata(name, [v.version for v in serving.versions]))

    @app.get("/v2/models/{name}/versions/{version}")
    async def version_metadata(name: str, version: str) -> Response:
        serving, problem = _versions_of(name, version)
        if problem:
            return problem
        return _json(serving.by_version(version).metadata(name, [version]))

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Response:
        serving, problem = _versions_of(name, None)
        return problem or _json({"name": name, "ready": True})

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        return await _infer(name, None, request)

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer_version(name: str, version: str, request: Request) -> Response:
        return await _infer(name, version, request)

    async def _infer(name: str, version: str | None, request: Request) -> Response:
        t0 = time.perf_counter()
        serving, problem = _versions_of(name, version)
        if problem:
            return problem
        model = serving.by_version(version) if version is not None else server.pick(serving)
        body = await request.body()
        rows = outputs = None
        problem_text = None
        try:
            try:
                doc = json.loads(body)
            except ValueError as exc:
                raise BadRequest(f"the body is not JSON: {exc}") from None
            x, n = parse_inputs(doc, model)
            with torch.inference_mode():
                try:
                    y = _first_tensor(model.module(x)).to(torch.float32)
                except RuntimeError as exc:
                    raise BadRequest(f"the model rejected the input: {str(exc).splitlines()[0]}") from None
            outputs = y.tolist()
            result = {"model_name": name, "model_version": str(model.version),
                      "outputs": [{"name": "output", "shape": list(y.shape), "datatype": "FP32",
                                   "data": y.reshape(-1).tolist()}]}
            if isinstance(doc.get("id"), str):
                result["id"] = doc["id"]
            status, response = 200, _json(result)
            rows = x.tolist()
        except BadRequest as exc:
            problem_text = str(exc)
            status, response = 400, _error(problem_text, 400)
        server.served += 1
        if serving.capture_percent is not None and server.capture is not None \
                and server.capture.sampled(serving.capture_percent):
            server.capture.write({
                "time": time.time(), "endpoint": name, "version": model.version,
                "latency_ms": round((time.perf_counter() - t0) * 1000, 3), "status": status,
                "inputs": ([dict(zip(model.inputs, row)) for row in rows] if rows is not None else None),
                "outputs": outputs,
                **({"error": problem_text} if problem_text else {}),
            })
        return response

    def _authorized(request: Request) -> bool:
        given = request.headers.get(TOKEN_HEADER, "")
        return hmac.compare_digest(given.encode(), str(server.spec.get("token", "")).encode())

    @app.get("/v2/admin/status")
    async def admin_status() -> Response:
        return _json(server.status())

    @app.post("/v2/admin/reload")
    async def admin_reload(request: Request) -> Response:
        if not _authorized(request):
            return _error("a valid x-mlform-token header is required", 403)
        status, doc = server.reload()
        return _json(doc, status)

    return app


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only when it does,
    # and without it every response waits ~40 ms on Nagle and the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m mlform.providers.kit.serving SPEC_JSON", file=sys.stderr)
        return 2
    server = Server(Path(argv[1]).resolve())
    # One intra-op thread per process: a small model gains nothing from more, and
    # several endpoints on one machine should not fight over cores.
    torch.set_num_threads(int(server.spec.get("torch_threads", 1)))
    try:
        sock = bind(server.spec["host"], int(server.spec["port"]))
    except OSError as exc:
        print(f"cannot listen on {server.spec['host']}:{server.spec['port']}: {exc}", flush=True)
        return 3
    server.load_async(server.spec)
    config = uvicorn.Config(build_app(server), log_level="warning", access_log=False,
                            lifespan="off", timeout_graceful_shutdown=10)
    print(f"pid {os.getpid()} listening on {server.spec['host']}:{server.spec['port']}", flush=True)
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    if server.capture is not None:
        server.capture.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
