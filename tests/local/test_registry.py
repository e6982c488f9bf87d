"""The local provider's model registry (`providers/local/registry.py`), on real files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlform.expr.values import UNKNOWN
from mlform.providers.base import Desired, LiveObject, ProviderError
from mlform.providers.local.env import LocalEnv
from mlform.plan.planner import settings_problems
from mlform.providers.kit import calls as contract
from mlform.providers.kit.artifacts import uri_to_path
from mlform.providers.kit.digests import DigestCache
from mlform.providers.local.models import (
    ModelHandler, aliases, artifact_digest, read_meta, registry_dir,
)

ADDRESS = "model.fraud"


@pytest.fixture
def env(local_env: LocalEnv) -> LocalEnv:      # conftest.py: root under tmp/stack
    return local_env


@pytest.fixture
def handler(env: LocalEnv) -> ModelHandler:
    return ModelHandler(env)


def artifact(tmp_path: Path, name: str, weights: bytes) -> str:
    """A run output dir as a training script leaves it; returns its file:// URI."""
    run = tmp_path / "runs" / name
    run.mkdir(parents=True, exist_ok=True)
    (run / "model.pt").write_bytes(weights)
    (run / "signature.json").write_text(json.dumps({"inputs": ["amount", "hour"],
                                                    "outputs": ["p0", "p1"]}))
    (run / "metrics.json").write_text('{"accuracy": 0.93}')
    return run.as_uri()


def desired(uri, **extra) -> Desired:
    return Desired(ADDRESS, "model", "fraud", {"artifact": uri, "framework": "torch", **extra})


def apply(handler: ModelHandler, want: Desired, prior: LiveObject | None = None) -> LiveObject:
    planned = contract.plan(handler, want, prior)
    live = handler.create(planned) if prior is None else handler.update(prior, planned)
    for key, value in planned.attributes.items():   # known planned values are kept
        if value is not UNKNOWN:
            assert live.attributes[key] == value, key
    return live


def test_first_artifact_becomes_version_1(handler, env, tmp_path):
    uri = artifact(tmp_path, "run-a", b"weights-a")
    live = apply(handler, desired(uri, stage="production"))
    attrs = live.attributes
    assert attrs["version"] == 1
    vdir = uri_to_path(attrs["uri"], tmp_path)
    assert vdir == registry_dir(env, ADDRESS) / "versions" / "1"
    assert (vdir / "model.pt").read_bytes() == b"weights-a"
    # hard links where possible: the registry costs no second copy of the weights
    assert (vdir / "model.pt").stat().st_ino == (Path(uri[7:]) / "model.pt").stat().st_ino
    meta = read_meta(vdir)
    assert meta["version"] == 1 and meta["digest"] == attrs["digest"] == artifact_digest(Path(uri[7:]), DigestCache())
    assert meta["source"] == uri and meta["approval"] == "approved" and meta["created"]
    assert aliases(env, ADDRESS) == {"production": 1}
    assert live.id == env.object_id(ADDRESS)


def test_copy_mode_copies(handler, tmp_path):
    uri = artifact(tmp_path, "run-a", b"weights-a")
    live = apply(handler, desired(uri, settings={"copy_mode": "copy"}))
    vdir = Path(live.attributes["uri"][7:])
    assert (vdir / "model.pt").stat().st_ino != (Path(uri[7:]) / "model.pt").stat().st_ino


def test_same_digest_same_version_new_digest_next_version(handler, env, tmp_path):
    uri_a = artifact(tmp_path, "run-a", b"weights-a")
    first = apply(handler, desired(uri_a, stage="production"))
    # a retried create adopts: same content, same version, nothing new on disk
    again = handler.create(contract.plan(handler, desired(uri_a, stage="production"), None))
    assert again.attributes["version"] == 1
    assert sorted(p.name for p in (registry_dir(env, ADDRESS) / "versions").iterdir()) == ["1"]

    # a new run with new weights: the plan already says which version it will be
    uri_b = artifact(tmp_path, "run-b", b"weights-b")
    planned = contract.plan(handler, desired(uri_b, stage="production"), first)
    assert planned.attributes["version"] == 2
    assert planned.attributes["digest"] == artifact_digest(Path(uri_b[7:]), DigestCache())
    assert any("becomes version 2" in r for r in planned.reasons)
    second = apply(handler, desired(uri_b, stage="production"), first)
    assert second.attributes["version"] == 2
    assert aliases(env, ADDRESS) == {"production": 2}

    # a third run that reproduces run-a's content is version 1 again, not 3
    uri_c = artifact(tmp_path, "run-c", b"weights-a")
    third = apply(handler, desired(uri_c, stage="production"), second)
    assert third.attributes["version"] == 1
    assert aliases(env, ADDRESS) == {"production": 1}


def test_plan_unknown_artifact_and_unchanged_artifact(handler, tmp_path):
    planned = contract.plan(handler, desired(UNKNOWN), None)
    assert all(planned.attributes[k] is UNKNOWN for k in ("version", "uri", "digest"))
    # a pipeline reference whose run is about to happen
    ref = {"address": "pipeline.train", "model_uri": UNKNOWN, "fingerprint": UNKNOWN}
    assert contract.plan(handler, desired(ref), None).attributes["version"] is UNKNOWN

    uri = artifact(tmp_path, "run-a", b"weights-a")
    planned = contract.plan(handler, desired(uri), None)
    assert planned.attributes["version"] is UNKNOWN          # a create: version after apply
    assert planned.attributes["digest"].startswith("sha256:")
    live = apply(handler, desired(uri))
    # unchanged artifact: everything copied from the prior, no work, no diff
    again = contract.plan(handler, desired(uri), live)
    assert dict(again.attributes) == dict(live.attributes)
    assert handler.read(live).attributes == live.attributes


def test_pipeline_reference_artifact(handler, tmp_path):
    uri = artifact(tmp_path, "run-a", b"weights-a")
    ref = {"address": "pipeline.train", "model_uri": uri, "fingerprint": "sha256:x"}
    live = apply(handler, desired(ref))
    assert live.attributes["version"] == 1


def test_stage_and_approval_are_attributes(handler, env, tmp_path):
    uri = artifact(tmp_path, "run-a", b"weights-a")
    live = apply(handler, desired(uri, stage="staging", approval="pending"))
    vdir = Path(live.attributes["uri"][7:])
    assert read_meta(vdir)["approval"] == "pending"
    moved = apply(handler, desired(uri, stage="production", approval="approved"), live)
    assert aliases(env, ADDRESS) == {"production": 1}       # the old alias went with it
    assert read_meta(vdir)["approval"] == "approved"
    assert moved.attributes["version"] == 1


def test_read_sees_out_of_band_changes(handler, env, tmp_path):
    uri = artifact(tmp_path, "run-a", b"weights-a")
    live = apply(handler, desired(uri, stage="production"))
    reg = registry_dir(env, ADDRESS)
    meta = read_meta(reg / "versions" / "1")
    (reg / "versions" / "1" / "meta.json").write_text(json.dumps({**meta, "approval": "rejected"}))
    (reg / "aliases.json").write_text(json.dumps({"production": 7}))
    seen = handler.read(live).attributes
    assert seen["approval"] == "rejected" and "stage" not in seen
    # the next plan puts both back
    healed = apply(handler, desired(uri, stage="production"), handler.read(live))
    assert healed.attributes["approval"] == "approved"
    assert aliases(env, ADDRESS) == {"production": 1}


def test_read_none_when_version_dir_vanished_and_delete(handler, env, tmp_path):
    uri = artifact(tmp_path, "run-a", b"weights-a")
    live = apply(handler, desired(uri))
    # lost id / import: found from the registry alone
    found = handler.read(LiveObject(ADDRESS, "model", None, {}))
    assert found is not None and found.attributes["version"] == 1
    shutil.rmtree(registry_dir(env, ADDRESS) / "versions" / "1")
    assert handler.read(live) is None
    handler.delete(live)
    assert not registry_dir(env, ADDRESS).exists()
    handler.delete(live)     # absent already = success


def test_plan_has_no_side_effects(handler, env, tmp_path):
    uri = artifact(tmp_path, "run-a", b"weights-a")
    contract.plan(handler, desired(uri, stage="production"), None)
    assert not env.root.exists()


def test_validate_rejects_remote_artifacts(handler, tmp_path):
    problems = contract.validate(handler, desired("s3://bucket/model"))
    assert problems and problems[0].severity == "error"
    assert contract.validate(handler, desired(artifact(tmp_path, "a", b"x"))) == []
    # settings are the engine's to check, against the kind's settings model
    bad = settings_problems(ModelHandler.schema.settings_model, {"copy_mode": "teleport"},
                            "model.fraud", None, "local", "model")
    assert bad and "copy_mode" in bad[0].summary


def test_missing_artifact_fails_apply(handler, tmp_path):
    planned = contract.plan(handler, desired((tmp_path / "nope").as_uri()), None)
    with pytest.raises(ProviderError, match="does not exist"):
        handler.create(planned)
