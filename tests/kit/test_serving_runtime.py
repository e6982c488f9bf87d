"""The model server's runtime (`kit.serving_runtime`): torch, scikit-learn and ONNX
versions answer as their frameworks do, the batcher merges concurrent requests and hands
every caller its own rows, errors reach every request of a batch, the process pool loads
versions on its own, and the user's hooks are checked when loaded.

A worker is held on a `threading.Event` where a test needs it busy: nothing here sleeps
to synchronise."""

from __future__ import annotations

import asyncio
import json
import threading
import warnings
from pathlib import Path

import numpy
import pytest

torch = pytest.importorskip("torch")

from mlform.providers.kit.serving_runtime import (  # noqa: E402
    Batcher, HookCallError, HookError, LoadError, PredictError, Predictor, WorkerPool,
    load_hooks, load_predictor,
)

FEATURES = ["a", "b", "c", "d"]


def _mlp() -> "torch.nn.Module":
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                               torch.nn.Linear(8, 3)).eval()


def _version(directory: Path, outputs: list[str] | None = None) -> Path:
    directory.mkdir(parents=True)
    (directory / "signature.json").write_text(
        json.dumps({"inputs": FEATURES, "outputs": outputs or []}))
    return directory


def _rows(n: int, seed: int = 1) -> numpy.ndarray:
    return numpy.random.default_rng(seed).normal(size=(n, 4)).astype(numpy.float32)


@pytest.fixture
def torch_version(tmp_path):
    directory = _version(tmp_path / "torch" / "1", ["p", "q", "r"])
    net = _mlp()
    torch.jit.save(torch.jit.script(net), str(directory / "model.pt"))
    return directory, net


def _classifier(seed: int = 0):
    from sklearn.linear_model import LogisticRegression
    rng = numpy.random.default_rng(seed)
    x = rng.normal(size=(60, 4))
    y = (x[:, 0] + (1 if seed else -1) * x[:, 1] > 0).astype(int)
    return LogisticRegression().fit(x, y)


def _joblib_version(directory: Path, model) -> Path:
    import joblib
    _version(directory)
    joblib.dump(model, directory / "model.joblib")
    return directory


# ----------------------------------------------------------------- frameworks

def test_torch_version_answers_as_torch(torch_version):
    directory, net = torch_version
    predictor = load_predictor(3, str(directory))
    x = _rows(5)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    y = predictor.predict(x)
    assert y.dtype == numpy.float32 and y.shape == (5, 3)
    numpy.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    assert (predictor.framework, predictor.platform) == ("torch", "pytorch_torchscript")
    assert (predictor.inputs, predictor.outputs) == (tuple(FEATURES), ("p", "q", "r"))
    assert (predictor.n_features, predictor.n_outputs) == (4, 3)
    meta = predictor.metadata("fraud", [3])
    assert meta["platform"] == "pytorch_torchscript" and meta["outputs"][0]["shape"] == [-1, 3]
    # a vector is one row; a tensor is taken as it is
    numpy.testing.assert_allclose(predictor.predict(torch.from_numpy(x[0])), expected[:1],
                                  rtol=1e-6, atol=1e-6)


class _DictOfScores(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"score": x.sum(dim=1), "twice": x * 2}


def test_torch_first_tensor_of_a_dict_is_served_as_one_column(tmp_path):
    directory = tmp_path / "dict"
    directory.mkdir()
    torch.jit.save(torch.jit.script(_DictOfScores()), str(directory / "model.pt"))
    predictor = load_predictor(1, str(directory))
    x = _rows(3)
    # no signature, no 2-D weight: the feature count is unknown and names are not made up
    assert predictor.n_features is None and predictor.inputs == ()
    numpy.testing.assert_allclose(predictor.predict(x), x.sum(axis=1, keepdims=True), rtol=1e-6)


class _Refusing(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x < 0).any()):
            raise ValueError("negative amounts are not served")
        return x * 2


def test_a_torchscript_raise_is_a_predict_error(tmp_path):
    # TorchScript turns the model's `raise` into torch.jit.Error, which is not a
    # RuntimeError: it is still the model refusing this input (400), not a crash (500)
    directory = tmp_path / "refusing"
    directory.mkdir()
    torch.jit.save(torch.jit.script(_Refusing()), str(directory / "model.pt"))
    predictor = load_predictor(1, str(directory))
    assert predictor.predict(numpy.ones((2, 4)))[0].tolist() == [2.0] * 4
    with pytest.raises(PredictError, match="rejected the input: ValueError: negative amounts "
                                           "are not served$"):
        predictor.predict(-numpy.ones((1, 4)))


def test_sklearn_skops_and_joblib_answer_predict_proba(tmp_path):
    skops_io = pytest.importorskip("skops.io")
    model = _classifier()
    skops_dir = _version(tmp_path / "skops")
    skops_io.dump(model, skops_dir / "model.skops")
    joblib_dir = _joblib_version(tmp_path / "joblib", model)
    x = _rows(7)
    expected = model.predict_proba(x)
    for directory in (skops_dir, joblib_dir):
        predictor = load_predictor(1, str(directory), "sklearn")
        numpy.testing.assert_allclose(predictor.predict(x), expected, rtol=1e-5, atol=1e-6)
        assert predictor.platform == "sklearn"
        # the classes name the outputs when the signature does not
        assert (predictor.n_features, predictor.outputs) == (4, ("0", "1"))


def test_sklearn_regressor_answers_predict_as_a_column(tmp_path):
    from sklearn.linear_model import LinearRegression
    x = _rows(30)
    model = LinearRegression().fit(x, x @ numpy.array([1.0, -2.0, 0.5, 3.0]))
    predictor = load_predictor(1, str(_joblib_version(tmp_path / "reg", model)), "sklearn")
    y = predictor.predict(x[:4])
    assert y.shape == (4, 1) and predictor.n_outputs == 1
    numpy.testing.assert_allclose(y[:, 0], model.predict(x[:4]), rtol=1e-5)


def _double(x):
    return x * 2


def test_skops_refuses_types_outside_sklearn_numpy_scipy(tmp_path):
    skops_io = pytest.importorskip("skops.io")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    x = _rows(20)
    pipe = make_pipeline(FunctionTransformer(_double), LogisticRegression())
    pipe.fit(x, (x[:, 0] > 0).astype(int))
    directory = _version(tmp_path / "pipe")
    skops_io.dump(pipe, directory / "model.skops")
    with pytest.raises(LoadError) as caught:
        load_predictor(1, str(directory), "sklearn")
    assert str(directory / "model.skops") in str(caught.value)
    assert "_double" in str(caught.value) and "does not trust" in str(caught.value)


def _onnx_export(net, path: Path, dynamic: bool = True) -> None:
    pytest.importorskip("onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # the legacy exporter's deprecation notice
        torch.onnx.export(net, (torch.zeros(2 if dynamic else 1, 4),), str(path), dynamo=False,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes=({"input": {0: "batch"}, "output": {0: "batch"}}
                                        if dynamic else None))


def test_onnx_version_answers_as_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    net = _mlp()
    directory = tmp_path / "onnx"
    directory.mkdir()
    _onnx_export(net, directory / "model.onnx")
    predictor = load_predictor(2, str(directory), "onnx", threads=1)
    x = _rows(9)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    numpy.testing.assert_allclose(predictor.predict(x), expected, rtol=1e-5, atol=1e-5)
    assert (predictor.platform, predictor.n_features, predictor.n_outputs) == \
        ("onnxruntime_onnx", 4, 3)
    assert predictor.batchable and predictor.inputs == ("x0", "x1", "x2", "x3")
    with pytest.raises(PredictError, match="rejected the input"):
        predictor.predict(_rows(2)[:, :3])


def test_onnx_with_a_fixed_batch_axis_is_never_batched(tmp_path):
    pytest.importorskip("onnxruntime")
    directory = tmp_path / "fixed"
    directory.mkdir()
    _onnx_export(_mlp(), directory / "model.onnx", dynamic=False)
    predictor = load_predictor(1, str(directory), "onnx")
    assert not predictor.batchable
    calls = []
    batcher = Batcher(WorkerPool(1), max_batch_size=8, max_delay_ms=1000,
                      on_batch=lambda p, rows: calls.append(rows))

    async def go():
        return await asyncio.gather(*(batcher.infer(predictor, _rows(1, s)) for s in range(4)))

    answers = asyncio.run(go())
    assert calls == [1, 1, 1, 1] and [rows for _, rows in answers] == [1, 1, 1, 1]


def test_missing_or_broken_artifacts_are_load_errors_naming_the_file(tmp_path):
    empty = _version(tmp_path / "empty")
    for framework, name in (("torch", "model.pt"), ("sklearn", "model.skops"),
                            ("onnx", "model.onnx")):
        with pytest.raises(LoadError, match=str(empty / name)):
            load_predictor(1, str(empty), framework)
    (empty / "model.pt").write_bytes(b"not a zip archive")
    with pytest.raises(LoadError, match=str(empty / "model.pt")):
        load_predictor(1, str(empty))
    (empty / "signature.json").write_text("{broken")
    with pytest.raises(LoadError, match=str(empty / "signature.json")):
        load_predictor(1, str(empty))
    with pytest.raises(LoadError, match="unknown framework 'xgboost'"):
        load_predictor(1, str(empty), "xgboost")


# ----------------------------------------------------------------- batching

def test_concurrent_requests_share_forward_passes_and_get_their_own_rows(torch_version):
    directory, net = torch_version
    predictor = load_predictor(1, str(directory))
    passes = []
    batcher = Batcher(WorkerPool(1), max_batch_size=16, max_delay_ms=1000,
                      on_batch=lambda p, rows: passes.append(rows))
    inputs = [_rows(1, seed) for seed in range(32)]

    async def go():
        return await asyncio.gather(*(batcher.infer(predictor, x) for x in inputs))

    answers = asyncio.run(go())
    # all 32 queue before the batcher first runs: two full batches, none waits the delay
    assert passes == [16, 16]
    for x, (y, rows) in zip(inputs, answers):
        assert rows == 16 and y.shape == (1, 3)
        with torch.no_grad():
            numpy.testing.assert_allclose(y, net(torch.from_numpy(x)).numpy(),
                                          rtol=1e-5, atol=1e-6)


def _held(function):
    """A predictor call whose first call waits for `release`: the worker stays busy."""
    started, release = threading.Event(), threading.Event()

    def call(x):
        if not started.is_set():
            started.set()
            release.wait(30)
        return function(x)
    return call, started, release


def _predictor(call) -> Predictor:
    return Predictor("1", "/nowhere", "test", "test", ("a",), ("y",), 1, 1, call=call)


def test_requests_arriving_while_the_worker_is_busy_form_the_next_batch():
    call, started, release = _held(lambda x: x * 10)
    predictor = _predictor(call)
    passes = []
    batcher = Batcher(WorkerPool(1), max_batch_size=16, max_delay_ms=0,
                      on_batch=lambda p, rows: passes.append(rows))

    async def go():
        loop = asyncio.get_running_loop()
        first = loop.create_task(batcher.infer(predictor, [[1.0]]))
        assert await loop.run_in_executor(None, started.wait, 30), "the first pass never began"
        rest = [loop.create_task(batcher.infer(predictor, [[float(v)]])) for v in range(2, 7)]
        # runs after the five tasks above have queued their requests
        loop.call_soon(release.set)
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(go())
    assert passes == [1, 5]
    assert [float(y[0, 0]) for y, _ in answers] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]


def test_requests_within_the_delay_are_batched_below_the_size_limit():
    predictor = _predictor(lambda x: x + 1)
    passes = []
    batcher = Batcher(WorkerPool(2), max_batch_size=64, max_delay_ms=20,
                      on_batch=lambda p, rows: passes.append(rows))

    async def go():
        return await asyncio.gather(batcher.infer(predictor, [[1.0], [2.0]]),
                                    batcher.infer(predictor, [[3.0]]),
                                    batcher.infer(predictor, numpy.ones((64, 1))))

    (y1, r1), (y2, r2), (y3, r3) = asyncio.run(go())
    # the 64-row request is a batch by itself, straight away; the two small ones share one
    assert sorted(passes) == [3, 64] and (r1, r2, r3) == (3, 3, 64)
    assert y1[:, 0].tolist() == [2.0, 3.0] and y2[:, 0].tolist() == [4.0]


def test_a_refused_batch_runs_again_one_request_at_a_time():
    def call(x):
        if (x < 0).any():
            raise PredictError("the model rejected the input: a negative value")
        return x
    predictor = _predictor(call)
    passes = []
    batcher = Batcher(WorkerPool(1), max_batch_size=8, max_delay_ms=1000,
                      on_batch=lambda p, rows: passes.append(rows))

    async def go():
        return await asyncio.gather(
            *(batcher.infer(predictor, [[-1.0 if i == 3 else float(i)]]) for i in range(8)),
            return_exceptions=True)

    answers = asyncio.run(go())
    # only the request the model refuses fails; the seven others get their own rows
    assert isinstance(answers[3], PredictError) and "negative value" in str(answers[3])
    assert [float(y[0, 0]) for y, _ in answers[:3] + answers[4:]] == \
        [0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 7.0]
    assert passes == [1] * 7        # the failed pass of 8 is not counted as a batch


def test_any_other_failure_fails_every_request_of_its_batch():
    def call(x):
        raise OSError("the worker lost its device")
    predictor = _predictor(call)
    batcher = Batcher(WorkerPool(1), max_batch_size=8, max_delay_ms=1000)

    async def go():
        return await asyncio.gather(*(batcher.infer(predictor, [[float(i)]]) for i in range(8)),
                                    return_exceptions=True)

    errors = asyncio.run(go())
    assert all(isinstance(e, OSError) for e in errors)
    assert len({id(e) for e in errors}) == 1      # the same exception, not eight made up


def test_a_wrong_row_count_from_the_model_is_an_error_not_a_hang():
    predictor = _predictor(lambda x: numpy.concatenate([x, x[:1]]))    # one row too many
    batcher = Batcher(WorkerPool(1), max_batch_size=4, max_delay_ms=1000)

    async def go():
        return await asyncio.wait_for(asyncio.gather(
            *(batcher.infer(predictor, [[float(i)]]) for i in range(4)),
            return_exceptions=True), 60)

    errors = asyncio.run(go())
    # the batch of 4 failed, then each request alone
    assert all(isinstance(e, PredictError) and "1 input rows with 2 output rows" in str(e)
               for e in errors)
    # unbatched too: the same rule for every forward pass
    with pytest.raises(PredictError, match="2 input rows with 3 output rows"):
        asyncio.run(Batcher(WorkerPool(1)).infer(predictor, [[1.0], [2.0]]))


async def _let_ready_callbacks_run(times: int = 10) -> None:
    """Yield to the event loop: ready tasks (the batcher's drain) take their turn; no
    time is waited for."""
    for _ in range(times):
        await asyncio.sleep(0)


def test_a_lone_request_does_not_wait_for_company():
    predictor = _predictor(lambda x: x * 2)
    passes = []
    batcher = Batcher(WorkerPool(1), max_batch_size=32, max_delay_ms=10_000,
                      on_batch=lambda p, rows: passes.append(rows))
    y, rows = asyncio.run(batcher.infer(predictor, [[4.0]]))
    # nobody else on the way: closed as complete, not after the 10 s delay
    assert (float(y[0, 0]), rows, passes) == (8.0, 1, [1])
    assert batcher.closes == {"full": 0, "complete": 1, "delay": 0}


def test_a_queue_waits_only_while_a_request_is_on_its_way():
    predictor, other = _predictor(lambda x: x + 1), _predictor(lambda x: x - 1)
    passes = []
    batcher = Batcher(WorkerPool(1), max_batch_size=32, max_delay_ms=10_000,
                      on_batch=lambda p, rows: passes.append((p is other, rows)))

    async def go():
        loop = asyncio.get_running_loop()
        batcher.arriving += 2           # the server took in two more: this queue waits
        first = loop.create_task(batcher.infer(predictor, [[1.0]]))
        await _let_ready_callbacks_run()
        assert passes == [] and sum(batcher.closes.values()) == 0
        batcher.arriving -= 1           # one reaches the batcher: it joins the batch
        second = loop.create_task(batcher.infer(predictor, [[2.0]]))
        await _let_ready_callbacks_run()
        assert passes == []
        batcher.arriving -= 1           # the last goes to another model: nobody is coming
        third = await batcher.infer(other, [[3.0]])
        return await first, await second, third

    (y1, r1), (y2, r2), (y3, r3) = asyncio.run(go())
    assert sorted(passes) == [(False, 2), (True, 1)] and (r1, r2, r3) == (2, 2, 1)
    assert (float(y1[0, 0]), float(y2[0, 0]), float(y3[0, 0])) == (2.0, 3.0, 2.0)
    assert batcher.closes == {"full": 0, "complete": 2, "delay": 0}


def test_the_delay_still_bounds_the_wait_for_a_request_on_its_way():
    passes = []
    batcher = Batcher(WorkerPool(1), max_batch_size=32, max_delay_ms=0,
                      on_batch=lambda p, rows: passes.append(rows))
    batcher.arriving = 1                # never comes (a 400 before it reached the batcher)
    asyncio.run(batcher.infer(_predictor(lambda x: x), [[1.0]]))
    assert passes == [1] and batcher.closes == {"full": 0, "complete": 0, "delay": 1}


def test_batches_form_while_the_worker_is_busy_without_waiting_for_the_delay():
    call, started, release = _held(lambda x: x * 10)
    predictor = _predictor(call)
    passes = []
    batcher = Batcher(WorkerPool(1), max_batch_size=4, max_delay_ms=10_000,
                      on_batch=lambda p, rows: passes.append(rows))

    async def go():
        loop = asyncio.get_running_loop()
        first = loop.create_task(batcher.infer(predictor, [[1.0]]))
        assert await loop.run_in_executor(None, started.wait, 30), "the first pass never began"
        rest = [loop.create_task(batcher.infer(predictor, [[float(v)]])) for v in range(2, 8)]
        await _let_ready_callbacks_run()
        release.set()
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(go())
    # 1 alone (nobody else was coming), then the six that queued meanwhile: 4 (full) + 2
    assert passes == [1, 4, 2]
    assert [float(y[0, 0]) for y, _ in answers] == [10.0 * v for v in range(1, 8)]
    assert batcher.closes["delay"] == 0 and batcher.closes["full"] >= 1


def test_process_pool_loads_each_version_itself(tmp_path):
    pytest.importorskip("sklearn")
    models = {1: _classifier(0), 2: _classifier(1)}
    predictors = {v: load_predictor(v, str(_joblib_version(tmp_path / str(v), m)), "sklearn")
                  for v, m in models.items()}
    pool = WorkerPool(processes=1)
    passes = []
    batcher = Batcher(pool, max_batch_size=8, max_delay_ms=1000,
                      on_batch=lambda p, rows: passes.append((p.version, rows)))
    x = _rows(8)

    async def go():
        return await asyncio.gather(*(batcher.infer(predictors[1 + i % 2], x[i:i + 1])
                                      for i in range(8)))

    try:
        answers = asyncio.run(go())
    finally:
        pool.close()
    assert sorted(passes) == [(1, 4), (2, 4)]
    for i, (y, _) in enumerate(answers):
        numpy.testing.assert_allclose(y, models[1 + i % 2].predict_proba(x[i:i + 1]),
                                      rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- hooks

def test_hooks_are_called_and_checked(tmp_path):
    hooks_file = tmp_path / "hooks.py"
    hooks_file.write_text(
        "def preprocess(doc):\n"
        "    doc['inputs'][0]['data'] = [v * 2 for v in doc['inputs'][0]['data']]\n"
        "    return doc\n"
        "\n"
        "def postprocess(doc, result):\n"
        "    if doc.get('fail'):\n"
        "        raise ValueError('told to fail')\n"
        "    return {**result, 'decision': 'ok'} if not doc.get('list') else [result]\n")
    hooks = load_hooks(str(hooks_file))
    doc = hooks.pre({"inputs": [{"data": [1, 2]}]})
    assert doc["inputs"][0]["data"] == [2, 4]
    assert hooks.post(doc, {"outputs": []}) == {"outputs": [], "decision": "ok"}
    with pytest.raises(HookCallError) as caught:
        hooks.post({"fail": True}, {})
    assert caught.value.hook == "postprocess"
    assert caught.value.body() == {
        "error": f"the postprocess hook ({hooks_file}) raised ValueError: told to fail",
        "hook": "postprocess"}
    assert f'File "{hooks_file}", line 7, in postprocess' in caught.value.traceback
    with pytest.raises(HookCallError, match="returned list, not a dict"):
        hooks.post({"list": True}, {})
    assert load_hooks(None).pre({"x": 1}) == {"x": 1}


@pytest.mark.parametrize("source, expected", [
    ("import json\n\nimport no_such_module_for_hooks\n",
     ["line 3, in <module>", "ModuleNotFoundError", "no_such_module_for_hooks"]),
    ("def preprocess(doc)\n    return doc\n", ["line 1", "SyntaxError"]),
    ("def preprocess(doc, extra):\n    return doc\n",
     ["hooks.py:1: preprocess(doc, extra) cannot be called as preprocess(doc)"]),
    ("postprocess = 3\n", ["postprocess is a int, not a function"]),
    ("def helper(doc):\n    return doc\n", ["defines neither preprocess"]),
])
def test_a_hooks_module_that_cannot_serve_is_a_hook_error(tmp_path, source, expected):
    hooks_file = tmp_path / "hooks.py"
    hooks_file.write_text(source)
    with pytest.raises(HookError) as caught:
        load_hooks(str(hooks_file))
    for text in expected:
        assert text in str(caught.value)
    assert str(hooks_file) in str(caught.value)
    assert "importlib" not in str(caught.value)     # the user's frames only
