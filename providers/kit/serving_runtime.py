"""What the model server runs models with: loading by framework, the worker pool,
the dynamic batcher and the user's request hooks.

Standalone, like `serving.py` (which runs by file path with providers/kit/ first on
sys.path and imports this module by name): stdlib and numpy here; torch, scikit-learn,
skops, joblib and onnxruntime are imported only when a model of that framework is
loaded, so a server needs only the frameworks it serves.

* `load_predictor(version, path, framework)` -> `Predictor`: one model version in
  memory, ``predict(x float32 [N, F]) -> float32 [N, O]`` whatever the framework.
  Artifacts: torch ``model.pt`` (TorchScript), sklearn ``model.skops`` (else
  ``model.joblib``/``model.pkl``), onnx ``model.onnx``; ``signature.json`` names
  the features and outputs for all.
* `WorkerPool`: runs forward passes off the event loop, in threads (torch and
  onnxruntime release the GIL) or in spawned processes that load models lazily.
* `Batcher`: concatenates concurrent requests for one model into one forward pass,
  waiting for company only while the server has requests on their way.
* `load_hooks(path)` -> `Hooks`: the user's ``preprocess(doc)`` and
  ``postprocess(doc, result)``.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import importlib.util
import inspect
import json
import multiprocessing
import sys
import traceback
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy

__all__ = [
    "FRAMEWORKS", "Batcher", "HookCallError", "HookError", "Hooks", "LoadError",
    "PredictError", "Predictor", "WorkerPool", "load_hooks", "load_predictor",
]

FRAMEWORKS = ("torch", "sklearn", "onnx")

#: skops refuses to load types it does not know unless told they are trusted; mlform
#: trusts what these packages define (estimators, arrays, sparse matrices) and no others.
SKOPS_TRUSTED_PACKAGES = ("sklearn", "numpy", "scipy")

#: warm-up batch sizes for TorchScript: its profiling executor specialises on the first calls
WARM_UP_ROWS = (1, 2, 8)


class LoadError(Exception):
    """A model version's artifact is missing or cannot be loaded (the message names the file)."""


class PredictError(Exception):
    """The model refused the input it was given (torch's shape errors, a TorchScript
    model's own ``raise``, scikit-learn's ValueError, any onnxruntime error), or answered
    with the wrong number of rows: the server answers 400.  Other exceptions from a
    forward pass (a dead worker process, a crash) are the server's failure: 500."""


class HookError(Exception):
    """The hooks module cannot be loaded; the message holds the traceback text."""


class HookCallError(Exception):
    """A hook raised, or returned something other than a dict, while serving a request."""

    def __init__(self, hook: str, path: str | None, message: str, trace: str = "") -> None:
        super().__init__(f"the {hook} hook ({path}) {message}")
        self.hook = hook
        self.path = path
        self.traceback = trace

    def body(self) -> dict:
        """The JSON error body the server answers (500) with."""
        return {"error": str(self), "hook": self.hook}


# ----------------------------------------------------------------- predictors

@dataclass(frozen=True)
class Predictor:
    """One model version in memory, with what its metadata route reports."""

    version: Any
    path: str
    framework: str
    platform: str                   # the OIP platform name the metadata route reports
    inputs: tuple[str, ...]         # feature names (signature.json, else the model's, else x0..)
    outputs: tuple[str, ...]
    n_features: int | None
    n_outputs: int | None
    batchable: bool = True          # False: the batch axis is fixed, never merge requests
    model: Any = field(default=None, compare=False, repr=False)
    call: Callable[[numpy.ndarray], Any] | None = field(default=None, compare=False, repr=False)

    def predict(self, x: Any) -> numpy.ndarray:
        """float32 [N, F] in (anything numpy takes: an array, a CPU tensor), float32 [N, O] out."""
        x = as_rows(x)
        return _as_2d(self.call(x))

    def metadata(self, name: str, versions: list) -> dict:
        return {"name": name, "versions": [str(v) for v in versions], "platform": self.platform,
                "inputs": [{"name": "input", "datatype": "FP32",
                            "shape": [-1, self.n_features if self.n_features else -1],
                            "features": list(self.inputs)}],
                "outputs": [{"name": "output", "datatype": "FP32",
                             "shape": [-1, self.n_outputs if self.n_outputs else -1],
                             "labels": list(self.outputs)}]}


def as_rows(x: Any) -> numpy.ndarray:
    """A contiguous float32 [N, F] array (one row when given a vector)."""
    x = numpy.ascontiguousarray(x, dtype=numpy.float32)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise PredictError(f"input shape must be [N, F], got {list(x.shape)}")
    return x


def _as_2d(y: Any) -> numpy.ndarray:
    try:
        y = numpy.asarray(y, dtype=numpy.float32)
    except (TypeError, ValueError) as exc:
        raise PredictError(f"the model's output is not numbers ({_first_line(exc)}); "
                           "a classifier that predicts string labels needs predict_proba "
                           "or numeric labels") from None
    if y.ndim == 0:
        return y.reshape(1, 1)
    if y.ndim == 1:
        return y.reshape(-1, 1)
    return y if y.ndim == 2 else y.reshape(y.shape[0], -1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_predictor(version: Any, path: str, framework: str = "torch",
                   threads: int = 1, device: str = "cpu") -> Predictor:
    """Load one version's artifact from `path` (its directory) and `signature.json`.

    `threads` is onnxruntime's intra-op thread count (torch's is process-wide: the
    server sets it).  `device` is where a torch model runs (``cpu`` or ``cuda``: the
    server's one visible GPU); sklearn and onnx models run on the CPU.  Raises
    `LoadError` naming the file when anything is wrong.
    """
    loader = _LOADERS.get(framework)
    if loader is None:
        raise LoadError(f"cannot load {path}: unknown framework {framework!r} "
                        f"(one of {', '.join(FRAMEWORKS)})")
    directory = Path(path)
    if not directory.is_dir():
        raise LoadError(f"cannot load {path}: the version's directory does not exist")
    signature = _signature(directory)
    inputs = tuple(str(x) for x in signature.get("inputs") or ())
    outputs = tuple(str(x) for x in signature.get("outputs") or ())
    if framework == "torch":
        return _load_torch(version, directory, inputs, outputs, threads, device)
    return loader(version, directory, inputs, outputs, threads)


def _signature(directory: Path) -> dict:
    file = directory / "signature.json"
    if not file.exists():
        return {}
    try:
        doc = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise LoadError(f"cannot load {file}: {exc}") from None
    if not isinstance(doc, dict):
        raise LoadError(f"cannot load {file}: expected an object with inputs and outputs")
    return doc


def _finish(version: Any, directory: Path, framework: str, platform: str, model: Any,
            call: Callable, inputs: tuple, outputs: tuple, n_features: int | None,
            n_outputs: int | None, batchable: bool = True) -> Predictor:
    """Name features and outputs x0.., y0.. when neither the signature nor the model does."""
    if not inputs and n_features:
        inputs = tuple(f"x{i}" for i in range(n_features))
    if not outputs and n_outputs:
        outputs = tuple(f"y{i}" for i in range(n_outputs))
    return Predictor(version, str(directory), framework, platform, inputs, outputs,
                     n_features, n_outputs, batchable, model, call)


def _artifact(directory: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise LoadError(f"cannot load {directory / names[0]}: the file does not exist "
                    f"({what} is saved as {' or '.join(names)})")


# -- torch ----------------------------------------------------------------------

def _load_torch(version: Any, directory: Path, inputs: tuple, outputs: tuple,
                threads: int, device: str = "cpu") -> Predictor:
    file = _artifact(directory, ("model.pt",), "a torch model (TorchScript)")
    import warnings

    import torch
    # TorchScript is what the run contract saves; torch's notice that it is deprecated
    # would only fill every server log.
    warnings.filterwarnings("ignore", message=r"`torch\.jit", category=DeprecationWarning)
    try:
        module = torch.jit.load(str(file), map_location=device)
    except Exception as exc:     # torch raises RuntimeError, ValueError, pickle errors...
        raise LoadError(f"cannot load {file}: {_first_line(exc)}") from None
    module.eval()

    def call(x: numpy.ndarray) -> Any:
        with torch.inference_mode():
            try:
                # rows go to the model's device and the answer comes back to the CPU
                # (both no-ops on the CPU)
                out = _first_tensor(module(torch.from_numpy(x).to(device))).cpu()
            except (RuntimeError, torch.jit.Error) as exc:
                # RuntimeError: torch refused the input (a shape mismatch); torch.jit.Error
                # (not a RuntimeError): the model's own `raise`, its author's check on the
                # input.  Both say "this input", so both are PredictError: 400, counted as
                # an error of the version like a 500 is.
                raise PredictError(f"the model rejected the input: {_torch_message(exc)}") \
                    from None
            return (out if out.dtype == torch.float32 else out.to(torch.float32)).numpy()

    n_features = len(inputs) or _first_linear_width(module)
    n_outputs = len(outputs) or None
    if n_features:
        # A few calls let the TorchScript profiling executor settle before traffic
        # arrives, and tell the output width when the signature does not.
        try:
            for rows in WARM_UP_ROWS:
                out = _as_2d(call(numpy.zeros((rows, n_features), numpy.float32)))
        except PredictError as exc:
            raise LoadError(f"cannot load {file}: the warm-up call with {n_features} "
                            f"features failed: {exc}") from None
        n_outputs = n_outputs or int(out.shape[1])
    return _finish(version, directory, "torch", "pytorch_torchscript", module, call,
                   inputs, outputs, n_features, n_outputs)


def _torch_message(exc: BaseException) -> str:
    """What went wrong, from a TorchScript interpreter error: its last line (the first is
    "The following operation failed in the TorchScript interpreter.", the middle the
    TorchScript traceback), "builtins." dropped from a scripted `raise`."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("The following operation failed"):
        last = lines[-1]
        return last[len("builtins."):] if last.startswith("builtins.") else last
    return _first_line(exc)


def _first_linear_width(module: Any) -> int | None:
    """Input width of the first 2-D weight: a guess at the feature count without a signature."""
    for param in module.parameters():
        if param.dim() == 2:
            return int(param.shape[1])
    return None


def _first_tensor(value: Any) -> Any:
    """Models may return a tensor, a tuple of tensors or a dict; serve the first tensor."""
    import torch
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value:
        return _first_tensor(value[0])
    if isinstance(value, dict) and value:
        return _first_tensor(next(iter(value.values())))
    raise PredictError(f"the model returned {type(value).__name__}, not a tensor")


# -- scikit-learn ---------------------------------------------------------------

def _load_sklearn(version: Any, directory: Path, inputs: tuple, outputs: tuple,
                  threads: int) -> Predictor:
    file = _artifact(directory, ("model.skops", "model.joblib", "model.pkl"),
                     "a scikit-learn model")
    try:
        model = _read_skops(file) if file.suffix == ".skops" else _read_joblib(file)
    except LoadError:
        raise
    except Exception as exc:
        raise LoadError(f"cannot load {file}: {type(exc).__name__}: {_first_line(exc)}") from None
    # Probabilities when the model has them (a classifier's scores), else its predictions.
    proba = hasattr(model, "predict_proba")    # False when the estimator hides it
    method = getattr(model, "predict_proba" if proba else "predict", None)
    if not callable(method):
        raise LoadError(f"cannot load {file}: {type(model).__name__} has neither "
                        "predict_proba nor predict")

    def call(x: numpy.ndarray) -> Any:
        try:
            return method(x)
        except (ValueError, TypeError, IndexError) as exc:
            raise PredictError(f"the model rejected the input: {_first_line(exc)}") from None

    names = getattr(model, "feature_names_in_", None)
    if not inputs and names is not None:
        inputs = tuple(str(n) for n in names)
    n_features = len(inputs) or _int_or_none(getattr(model, "n_features_in_", None))
    n_outputs = len(outputs) or None
    if not outputs and proba:
        classes = getattr(model, "classes_", None)
        if classes is not None and numpy.ndim(classes) == 1:
            outputs = tuple(str(c) for c in classes)
            n_outputs = len(outputs)
    if n_outputs is None and n_features:
        try:        # the width of the answer, when neither signature nor model says it
            n_outputs = int(_as_2d(call(numpy.zeros((2, n_features), numpy.float32))).shape[1])
        except PredictError:
            n_outputs = None
    return _finish(version, directory, "sklearn", "sklearn", model, call,
                   inputs, outputs, n_features, n_outputs)


def _read_skops(file: Path) -> Any:
    import skops.io
    untrusted = skops.io.get_untrusted_types(file=file)
    refused = sorted(t for t in untrusted if t.split(".")[0] not in SKOPS_TRUSTED_PACKAGES)
    if refused:
        raise LoadError(f"cannot load {file}: it holds types from outside "
                        f"{', '.join(SKOPS_TRUSTED_PACKAGES)} that mlform does not trust: "
                        f"{', '.join(refused)} (save the model with scikit-learn types only, "
                        "or as model.joblib if you trust whoever wrote it)")
    return skops.io.load(file, trusted=untrusted)


def _read_joblib(file: Path) -> Any:
    import joblib
    return joblib.load(file)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, numpy.integer)) else None


# -- onnx -----------------------------------------------------------------------

_ONNX_INPUT_DTYPES = {"tensor(float)": numpy.float32, "tensor(double)": numpy.float64,
                      "tensor(float16)": numpy.float16}


def _load_onnx(version: Any, directory: Path, inputs: tuple, outputs: tuple,
               threads: int) -> Predictor:
    file = _artifact(directory, ("model.onnx",), "an ONNX model")
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3          # errors only: warnings would fill the server log
    try:
        session = onnxruntime.InferenceSession(str(file), sess_options=options,
                                               providers=["CPUExecutionProvider"])
    except Exception as exc:     # onnxruntime's own exception classes (Fail, InvalidGraph...)
        raise LoadError(f"cannot load {file}: {_first_line(exc)}") from None
    feeds = session.get_inputs()
    if len(feeds) != 1:
        raise LoadError(f"cannot load {file}: the model takes {len(feeds)} inputs "
                        f"({', '.join(f.name for f in feeds)}); mlform feeds one [N, F] tensor")
    feed = feeds[0]
    dtype = _ONNX_INPUT_DTYPES.get(feed.type)
    if dtype is None:
        raise LoadError(f"cannot load {file}: its input {feed.name!r} is {feed.type}; "
                        "mlform feeds a float tensor")
    # The first float output (skl2onnx classifiers put the label first, the
    # probabilities second), else the first output.
    answers = session.get_outputs()
    answer = next((o for o in answers if o.type.startswith(("tensor(float", "tensor(double"))),
                  answers[0])

    def call(x: numpy.ndarray) -> Any:
        try:
            return session.run([answer.name], {feed.name: x.astype(dtype, copy=False)})[0]
        except Exception as exc:     # InvalidArgument, RuntimeException, Fail: not builtins
            raise PredictError(f"the model rejected the input: {_first_line(exc)}") from None

    shape = list(feed.shape)
    n_features = len(inputs) or (shape[1] if len(shape) == 2 and isinstance(shape[1], int)
                                 else None)
    fixed_rows = shape[0] if shape and isinstance(shape[0], int) else None
    n_outputs = len(outputs) or None
    if n_outputs is None:
        width = list(answer.shape)[-1] if len(answer.shape) >= 2 else None
        n_outputs = width if isinstance(width, int) else None
    if n_outputs is None and n_features:
        try:
            zeros = numpy.zeros((fixed_rows or 2, n_features), numpy.float32)
            n_outputs = int(_as_2d(call(zeros)).shape[1])
        except PredictError:
            n_outputs = None
    return _finish(version, directory, "onnx", "onnxruntime_onnx", session, call, inputs,
                   outputs, n_features, n_outputs, batchable=fixed_rows is None)


_LOADERS: dict[str, Callable[..., Predictor]] = {
    "torch": _load_torch, "sklearn": _load_sklearn, "onnx": _load_onnx,
}


# ----------------------------------------------------------------- worker pool

class WorkerPool:
    """Runs forward passes off the event loop.

    ``processes == 0``: a thread pool of `workers` threads in this process, calling
    the `Predictor` the server loaded.  ``processes > 0``: a pool of that many
    spawned processes (``workers`` is then unused); each loads a predictor the first
    time it is asked for one, by (path, framework, version), and keeps the last
    `PROCESS_CACHE` of them, so a hot reload needs nothing from the pool.  `threads`
    is each child's intra-op thread count (torch, BLAS, onnxruntime).
    """

    def __init__(self, workers: int = 1, processes: int = 0, threads: int = 1,
                 device: str = "cpu") -> None:
        self.processes = max(0, int(processes))
        self.threads = max(1, int(threads))
        self.device = device
        self.concurrency = self.processes or max(1, int(workers))
        self._executor = self._make()

    def _make(self) -> Executor:
        if self.processes:
            # spawn, not fork: the server has threads (uvicorn, the capture writer, torch's
            # pools) whose locks a forked child would inherit held
            spawn = multiprocessing.get_context("spawn")
            return ProcessPoolExecutor(self.processes, mp_context=spawn,
                                       initializer=_init_worker,
                                       initargs=(self.threads, self.device))
        return ThreadPoolExecutor(self.concurrency, thread_name_prefix="inference")

    async def run(self, predictor: Predictor, x: Any) -> numpy.ndarray:
        """`predictor.predict(x)` in a worker."""
        loop = asyncio.get_running_loop()
        if not self.processes:
            return await loop.run_in_executor(self._executor, predictor.predict, x)
        executor = self._executor
        try:
            return await loop.run_in_executor(executor, _remote_predict, predictor.path,
                                              predictor.framework, predictor.version, as_rows(x))
        except BrokenProcessPool:
            # A child died (killed, out of memory, a crash in native code): the pool is
            # unusable from now on, so the next request gets a fresh one.
            if self._executor is executor:
                self._executor = self._make()
                executor.shutdown(wait=False, cancel_futures=True)
            raise

    def call(self, predictor: Predictor, x: Any) -> numpy.ndarray:
        """`predictor.predict(x)` in a worker, waited for by the calling thread (not the
        event loop's: the shadow's mirror thread uses it)."""
        executor = self._executor
        if not self.processes:
            return executor.submit(predictor.predict, x).result()
        try:
            return executor.submit(_remote_predict, predictor.path, predictor.framework,
                                   predictor.version, as_rows(x)).result()
        except BrokenProcessPool:
            if self._executor is executor:
                self._executor = self._make()
                executor.shutdown(wait=False, cancel_futures=True)
            raise

    def close(self, wait: bool = True) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=not wait)


#: predictors each pool process keeps (the versions served, plus a few just replaced)
PROCESS_CACHE = 8
_cache: collections.OrderedDict = collections.OrderedDict()
_threads = 1
_device = "cpu"


def _init_worker(threads: int, device: str = "cpu") -> None:
    global _threads, _device
    _threads, _device = threads, device
    try:     # BLAS pools (numpy, scikit-learn) are sized at import: limit them now
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:
        pass


def _remote_predict(path: str, framework: str, version: Any, x: numpy.ndarray) -> numpy.ndarray:
    key = (path, framework, str(version))
    predictor = _cache.get(key)
    if predictor is None:
        if framework == "torch":
            import torch
            torch.set_num_threads(_threads)
        predictor = _cache[key] = load_predictor(version, path, framework, _threads, _device)
        while len(_cache) > PROCESS_CACHE:
            _cache.popitem(last=False)
    else:
        _cache.move_to_end(key)
    return predictor.predict(x)


# ----------------------------------------------------------------- dynamic batching

class _Waiting:
    __slots__ = ("x", "future", "since")

    def __init__(self, x: numpy.ndarray, future: asyncio.Future, since: float) -> None:
        self.x, self.future, self.since = x, future, since


class _Queue:
    """Requests waiting for one predictor's next batch."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.items: collections.deque[_Waiting] = collections.deque()
        self.rows = 0
        self.wake = asyncio.Event()     # set: the batch may be ready (full, or nobody coming)

    def take(self, limit: int) -> list[_Waiting]:
        """The oldest requests up to `limit` rows (at least one), skipping abandoned ones."""
        batch, rows = [], 0
        while self.items and (not batch or rows + self.items[0].x.shape[0] <= limit):
            waiting = self.items.popleft()
            self.rows -= waiting.x.shape[0]
            if not waiting.future.done():       # done: its caller was cancelled
                batch.append(waiting)
                rows += waiting.x.shape[0]
        return batch


#: why a batch closed (the keys of `Batcher.closes`)
CLOSE_REASONS = ("full", "complete", "delay")


class Batcher:
    """Concurrent requests for one model, run as one forward pass.

    A request of fewer than `max_batch_size` rows joins its predictor's queue.  A batch
    closes when it holds `max_batch_size` rows ("full"), when no other request is on its
    way ("complete": every request the server has taken in is queued, see `arriving`), or
    when `max_delay_ms` have passed since its oldest request ("delay"); it then starts
    once a worker is free: at most `pool.concurrency` forward passes run at once, and
    requests that arrive while every worker is busy join the batch about to start, up to
    `max_batch_size` rows.  So a lone request never waits for company, and under load
    batches form from what queues while the workers are busy; the delay is only spent
    waiting for requests known to be coming.  ``max_delay_ms = 0`` never waits.
    ``max_batch_size <= 1``, a request as large as a batch, or a predictor whose batch
    axis is fixed go to the pool alone (still one worker each).

    `arriving` is the server's count of inference requests it has taken in and not yet
    handed to `infer()` (the server adds 1 before it awaits the request body and takes
    it away once it has it: nothing awaits between that and `infer()`).  It counts
    requests for every model: one on its way to another model makes a queue wait, at
    most the delay, as one that ends in a 400 before reaching `infer()` may.

    A forward pass that fails with `PredictError` (the model refused the input) for a
    batch of several requests is run again one request at a time, so only the requests
    the model refuses fail; any other failure fails every request of its batch with the
    same exception.  A model that answers with the wrong number of rows is a
    `PredictError`.  `on_batch(predictor, rows)` is called once per successful forward
    pass, on the event loop; `closes` counts the batches closed for each reason.
    """

    def __init__(self, pool: WorkerPool, max_batch_size: int = 1, max_delay_ms: float = 5.0,
                 on_batch: Callable[[Predictor, int], Any] | None = None) -> None:
        self.pool = pool
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_delay = max(0.0, float(max_delay_ms)) / 1000
        self.on_batch = on_batch
        self.arriving = 0
        self.closes = dict.fromkeys(CLOSE_REASONS, 0)
        self._queues: dict[int, _Queue] = {}
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task] = set()

    async def infer(self, predictor: Predictor, x: Any) -> tuple[numpy.ndarray, int]:
        """The model's answer to `x` (float32 [N, O]) and the rows of the forward pass it
        was part of."""
        x = as_rows(x)
        n = int(x.shape[0])
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.pool.concurrency)
        if self.max_batch_size <= 1 or n >= self.max_batch_size or n == 0 \
                or not predictor.batchable:
            async with self._slots:
                return await self._run(predictor, x, n), n
        loop = asyncio.get_running_loop()
        queue = self._queues.get(id(predictor))
        if queue is None:
            queue = self._queues[id(predictor)] = _Queue(predictor)
            self._spawn(self._drain(queue))
        waiting = _Waiting(x, loop.create_future(), loop.time())
        queue.items.append(waiting)
        queue.rows += n
        if queue.rows >= self.max_batch_size:
            queue.wake.set()
        elif not self.arriving:
            # nobody else on the way: this queue, and any waiting on a request that went
            # to another model, can close now
            for other in self._queues.values():
                other.wake.set()
        return await waiting.future

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)           # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    def _closes(self, queue: _Queue, now: float) -> str | None:
        """Why the queue's batch closes now, or None while it waits for company."""
        if queue.rows >= self.max_batch_size:
            return "full"
        if not self.arriving:
            return "complete"
        if now >= queue.items[0].since + self.max_delay:
            return "delay"
        return None

    async def _drain(self, queue: _Queue) -> None:
        """Form batches while the queue has requests; the queue is dropped once empty
        (one event loop thread: nothing can be added between the check and the drop)."""
        loop = asyncio.get_running_loop()
        try:
            while queue.items:
                now = loop.time()
                reason = self._closes(queue, now)
                if reason is None:
                    queue.wake.clear()
                    try:
                        await asyncio.wait_for(queue.wake.wait(),
                                               queue.items[0].since + self.max_delay - now)
                    except asyncio.TimeoutError:
                        pass
                    continue
                await self._slots.acquire()
                batch = queue.take(self.max_batch_size)
                if not batch:
                    self._slots.release()
                    continue
                self.closes[reason] += 1
                self._spawn(self._forward(queue.predictor, batch))
        finally:
            if self._queues.get(id(queue.predictor)) is queue:
                del self._queues[id(queue.predictor)]

    async def _forward(self, predictor: Predictor, batch: list[_Waiting]) -> None:
        """One forward pass for `batch` (a worker slot is held), its rows handed back."""
        rows = sum(w.x.shape[0] for w in batch)
        try:
            try:
                x = batch[0].x if len(batch) == 1 else numpy.concatenate([w.x for w in batch])
                try:
                    y = await self._run(predictor, x, rows)
                except PredictError:
                    if len(batch) == 1:
                        raise
                    # one request's rows may be what the model refuses: the others
                    # deserve their answers, so each runs alone (in this slot)
                    for waiting in batch:
                        await self._answer_alone(predictor, waiting)
                    return
            finally:
                self._slots.release()
        except asyncio.CancelledError:
            for waiting in batch:
                waiting.future.cancel()
            raise
        except Exception as exc:
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            return
        start = 0
        for waiting in batch:
            end = start + waiting.x.shape[0]
            if not waiting.future.done():
                waiting.future.set_result((y[start:end], rows))
            start = end

    async def _answer_alone(self, predictor: Predictor, waiting: _Waiting) -> None:
        if waiting.future.done():
            return
        rows = waiting.x.shape[0]
        try:
            y = await self._run(predictor, waiting.x, rows)
        except PredictError as exc:
            if not waiting.future.done():
                waiting.future.set_exception(exc)
            return
        if not waiting.future.done():
            waiting.future.set_result((y, rows))

    async def _run(self, predictor: Predictor, x: numpy.ndarray, rows: int) -> numpy.ndarray:
        """One forward pass of `rows` rows (a slot held), checked and counted."""
        y = await self.pool.run(predictor, x)
        if y.shape[0] != rows:
            raise PredictError(f"the model answered {rows} input rows with {y.shape[0]} "
                               "output rows (it must answer one row per input row)")
        if self.on_batch is not None:
            self.on_batch(predictor, rows)
        return y


# ----------------------------------------------------------------- hooks

@dataclass(frozen=True)
class Hooks:
    """The user's request hooks (either may be None).

    ``preprocess(doc) -> doc`` gets the request body (parsed JSON) before the server
    reads its inputs; ``postprocess(doc, result) -> result`` gets that (preprocessed)
    body and the response body the server built, and returns the body to send.
    """

    path: str | None = None
    preprocess: Callable[[dict], dict] | None = None
    postprocess: Callable[[dict, dict], dict] | None = None

    def pre(self, doc: Any) -> Any:
        if self.preprocess is None:
            return doc
        return self._call("preprocess", self.preprocess, doc)

    def post(self, doc: Any, result: dict) -> dict:
        if self.postprocess is None:
            return result
        return self._call("postprocess", self.postprocess, doc, result)

    def _call(self, hook: str, function: Callable, *args: Any) -> dict:
        try:
            out = function(*args)
        except Exception as exc:
            raise HookCallError(hook, self.path, f"raised {type(exc).__name__}: {exc}",
                                _user_traceback(exc, self.path)) from exc
        if not isinstance(out, dict):
            raise HookCallError(hook, self.path, f"returned {type(out).__name__}, not a dict "
                                "(a JSON object)")
        return out


#: (function name, the arguments it is called with) of each hook
HOOKS = (("preprocess", ("doc",)), ("postprocess", ("doc", "result")))


def load_hooks(path: str | None) -> Hooks:
    """Import the user's hooks module at `path` (None: no hooks).  Raises `HookError`
    (its message holds the traceback) when the module fails to import or its hooks
    cannot be called as the server calls them."""
    if not path:
        return Hooks()
    file = Path(path)
    if not file.is_file():
        raise HookError(f"hooks file {path} does not exist")
    name = "mlform_hooks_" + hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # dataclasses and pickle look modules up by name
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise HookError(f"cannot load hooks {path}:\n{_user_traceback(exc, str(file))}") from None
    found = {}
    for hook, params in HOOKS:
        function = getattr(module, hook, None)
        if function is None:
            continue
        where = _where(function, path)
        if not callable(function):
            raise HookError(f"{where}: {hook} is a {type(function).__name__}, not a function "
                            f"(define def {hook}({', '.join(params)}): ...)")
        try:
            inspect.signature(function).bind(*params)
        except TypeError:
            raise HookError(f"{where}: {hook}{inspect.signature(function)} cannot be called "
                            f"as {hook}({', '.join(params)})") from None
        except ValueError:      # builtins without a signature: trust them
            pass
        found[hook] = function
    if not found:
        raise HookError(f"{path}: defines neither preprocess(doc) nor postprocess(doc, result)")
    return Hooks(str(path), found.get("preprocess"), found.get("postprocess"))


def _where(function: Any, path: str) -> str:
    code = getattr(function, "__code__", None)
    return f"{path}:{code.co_firstlineno}" if code is not None else str(path)


def _user_traceback(exc: BaseException, path: str | None) -> str:
    """The traceback from the first frame in the user's file on (importlib's and this
    module's frames say nothing to the user); just the exception when none is (a
    SyntaxError, whose text shows the file, line and caret)."""
    tb = exc.__traceback__
    if path is not None:
        target = str(Path(path).resolve())
        while tb is not None and str(Path(tb.tb_frame.f_code.co_filename).resolve()) != target:
            tb = tb.tb_next
    if tb is None:
        return "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()
