"""The model server's routing rules and their bookkeeping, in process (`kit.serving`,
`kit.serving_experiments`): sticky keys mapped onto weights, the spec's experiment
checked, the ids of answers read back from the capture after a restart, and a bad spec
or hooks module reported by the loader without stopping what serves.  The HTTP side is
tests/kit/test_serving_experiments.py.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from mlform.providers.kit import serving  # noqa: E402
from mlform.providers.kit.serving_capture import (  # noqa: E402
    CaptureLimits, CaptureLog, capture_record, rotated_name,
)
from mlform.providers.kit.serving_experiments import (  # noqa: E402
    Experiment, IssuedIds, Route, by_point, sticky_point,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def test_sticky_points_split_keys_by_the_weights_and_skip_zero_weights():
    picks = Counter(by_point(sticky_point(f"user-{n}"), [0, 20, 0, 80]) for n in range(10_000))
    assert set(picks) == {1, 3}
    assert abs(picks[1] / 10_000 - 0.20) < 0.02
    # the same key, the same point: in this process and (blake2b, not hash()) any other
    assert sticky_point("user-7") == sticky_point("user-7")
    assert by_point(0.0, [0, 5]) == 1 and by_point(0.999999, [5, 0]) == 0


@pytest.mark.parametrize("doc, words", [
    ({"type": "canary"}, "experiment type 'canary'"),
    ({"type": "ab", "sticky_key": "cookie:uid"}, "'header:NAME' or 'input:NAME'"),
    ({"type": "shadow", "shadow_percent": 120}, "shadow_percent 120"),
    ({"type": "bandit", "reward": "ordinal"}, "reward 'ordinal'"),
])
def test_a_bad_experiment_is_refused_with_what_is_wrong(doc, words):
    with pytest.raises(ValueError) as caught:
        Experiment.of(doc)
    assert words in str(caught.value)


def test_experiment_defaults():
    assert Experiment.of(None) is None
    bandit = Experiment.of({"type": "bandit"})
    assert (bandit.reward, bandit.floor_percent, bandit.sticky) == ("binary", 5.0, None)
    ab = Experiment.of({"type": "ab", "sticky_key": "header:X-User-Id"})
    assert ab.reward == "continuous" and ab.sticky == ("header", "x-user-id")


def _answers(log: CaptureLog, first: int, count: int, variant: str) -> None:
    model = serving.runtime.Predictor(1, "/v/1", "torch", "pytorch_torchscript", ("a",), ("y",),
                                      1, 1)
    for n in range(first, first + count):
        log.submit(capture_record(float(n), "m", f"id-{n}", Route(variant, "live", 100, model),
                                  1.0, 200, None, None, None))
        log.submit(capture_record(float(n), "m", f"id-{n}", Route("s", "shadow", 0, model),
                                  1.0, 200, None, None, None))


def test_issued_ids_are_read_back_from_the_capture_newest_first(tmp_path):
    path = tmp_path / "capture.jsonl"
    # small files: the capture rotates while the answers are written
    log = CaptureLog(str(path), CaptureLimits(max_bytes=2_000, max_files=3))
    _answers(log, 0, 40, "a")
    _answers(log, 40, 10, "b")
    log.close()
    with open(path, "ab") as fh:        # a crash mid-line: the torn record is skipped
        fh.write(b'{"time":1.0,"request_id":"torn')
    assert Path(rotated_name(str(path), 2)).exists()
    kept = [json.loads(line)["request_id"] for n in (2, 1) for line in
            Path(rotated_name(str(path), n)).read_text().splitlines()] + \
           [json.loads(line)["request_id"] for line in path.read_text().splitlines()[:-1]]
    ids = IssuedIds(limit=15)
    assert ids.recover(str(path), max_files=3) == 15
    newest = [f"id-{n}" for n in range(35, 50)]
    assert [ids.get(i) for i in newest] == ["a"] * 5 + ["b"] * 10
    assert ids.get("id-34") is None and len(ids) == 15
    assert set(newest) <= set(kept)           # what was on disk, and only the live lines
    # the bound holds as answers keep coming
    for n in range(50, 60):
        ids.add(f"id-{n}", "a")
    assert len(ids) == 15 and ids.get("id-44") is None and ids.get("id-59") == "a"


def _model(directory: Path) -> str:
    directory.mkdir(parents=True)
    net = torch.nn.Sequential(torch.nn.Linear(2, 1))
    torch.jit.save(torch.jit.script(net), str(directory / "model.pt"))
    return str(directory)


def test_a_broken_hooks_module_fails_the_load_with_its_traceback(tmp_path, capsys):
    hooks = tmp_path / "hooks.py"
    hooks.write_text("import json\n\n\ndef preprocess(doc):\n    return doc\n\n"
                     "undefined_name_here\n")
    spec = {"name": "m", "host": "127.0.0.1", "port": 1, "generation": 3,
            "models": [{"version": 1, "path": _model(tmp_path / "v1"), "weight": 100}],
            "hooks": str(hooks), "auth_token": "never-shown"}
    spec_path = tmp_path / "server.json"
    spec_path.write_text(json.dumps(spec))
    server = serving.Server(spec_path)
    server._load(spec)
    assert server.serving is None
    message = server.error["message"]
    assert server.error["generation"] == 3
    assert 'hooks.py", line 7' in message and "NameError" in message
    assert "undefined_name_here" in capsys.readouterr().out
    assert "never-shown" not in json.dumps(server.status())

    # a spec the server cannot serve is reported the same way, and what serves stays
    good = {**spec, "hooks": None, "generation": 4}
    server._load(good)
    assert server.error is None and server.serving.generation == 4
    bad = {**good, "generation": 5,
           "experiment": {"type": "shadow", "shadow_percent": 10}}
    server._load(bad)
    assert "a shadow experiment needs a model with role 'shadow'" in server.error["message"]
    assert server.serving.generation == 4
    server.close()
