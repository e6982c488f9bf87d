"""The built-in memory provider: its store, computed values and injected behaviour.

The provider contract every provider keeps is tested in tests/providers;
this file covers what only the memory provider promises: the file store
(persistence, O(1) log, compaction, crash safety, hand edits), latency,
failure injection, the call log and the per-kind computed values.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from mlform.expr.values import UNKNOWN
from mlform.providers.base import Desired, LiveObject, ProviderContext, ProviderError
from mlform.providers.memory import MemoryProvider, read_calls
from mlform.providers.memory.store import MemoryStore
from mlform.providers.kit import calls as contract

STACK, ENV = "stk", "dev"


def make(tmp_path: Path, **config) -> MemoryProvider:
    context = ProviderContext(name="memory", alias=None, stack=STACK, env=ENV,
                              stack_dir=tmp_path, config=config)
    return MemoryProvider(context)


@pytest.fixture
def provider(tmp_path):
    p = make(tmp_path)
    yield p
    p.close()


def store_file(tmp_path: Path) -> Path:
    return tmp_path / ".mlform" / "memory" / f"{ENV}.json"


def log_file(tmp_path: Path) -> Path:
    return store_file(tmp_path).with_name(f"{ENV}.json.log")


def desired(kind: str, name: str, **attributes) -> Desired:
    return Desired(address=f"{kind}.{name}", kind=kind, name=name, attributes=attributes)


def create(p: MemoryProvider, kind: str, name: str, **attributes) -> LiveObject:
    return p.create(contract.plan(p, desired(kind, name, **attributes), None))


def ref(address: str, kind: str = "endpoint") -> LiveObject:
    return LiveObject(address=address, kind=kind, id=None, attributes={})


def stored_objects(tmp_path: Path) -> dict:
    return json.loads(store_file(tmp_path).read_text())["objects"]


# -- persistence ---------------------------------------------------------------

def test_objects_survive_a_new_instance(tmp_path):
    p = make(tmp_path)
    live = create(p, "endpoint", "api", replicas=2)
    p.close()
    q = make(tmp_path)
    found = q.read(ref("endpoint.api"))
    q.close()
    assert found is not None and found.id == f"{STACK}/{ENV}/endpoint.api"
    assert dict(found.attributes) == dict(live.attributes)
    assert stored_objects(tmp_path)[found.id]["kind"] == "endpoint"


def test_store_path_substitutes_env_and_resolves_against_the_stack(tmp_path):
    p = make(tmp_path, store="state/{env}-{stack}.json")
    create(p, "monitor", "m")
    p.close()
    assert (tmp_path / "state" / f"{ENV}-{STACK}.json").is_file()


def test_each_mutation_appends_one_log_line_and_leaves_the_store_file_alone(tmp_path, provider):
    sizes = []
    for i in range(20):
        create(provider, "endpoint", f"e{i}")
        sizes.append(len(log_file(tmp_path).read_bytes().splitlines()))
    assert sizes == list(range(1, 21))          # one line per create: O(1) per operation
    assert not store_file(tmp_path).exists()    # never rewritten while running
    provider.delete(ref("endpoint.e0"))
    assert len(log_file(tmp_path).read_bytes().splitlines()) == 21


def test_close_compacts_into_the_store_and_removes_the_log(tmp_path):
    p = make(tmp_path)
    for i in range(5):
        create(p, "endpoint", f"e{i}")
    p.delete(ref("endpoint.e4"))
    p.close()
    assert not log_file(tmp_path).exists()
    assert sorted(stored_objects(tmp_path)) == [f"{STACK}/{ENV}/endpoint.e{i}" for i in range(4)]
    assert not list(store_file(tmp_path).parent.glob("*.tmp"))


def test_a_leftover_log_is_replayed_and_compacted_on_load(tmp_path):
    p = make(tmp_path)
    create(p, "endpoint", "a")
    # Another process (a fresh MemoryStore, not the shared one) sees the log.
    other = MemoryStore(store_file(tmp_path))
    assert f"{STACK}/{ENV}/endpoint.a" in other.ids()
    assert not log_file(tmp_path).exists() and store_file(tmp_path).exists()
    p.close()


def test_a_torn_last_log_line_is_ignored(tmp_path):
    p = make(tmp_path)
    create(p, "endpoint", "a")
    with open(log_file(tmp_path), "ab") as f:   # a write killed half-way
        f.write(b'{"op":"put","id":"stk/dev/endpoint.b","object":{"kind":"end')
    store = MemoryStore(store_file(tmp_path))
    assert store.ids() == [f"{STACK}/{ENV}/endpoint.a"]
    assert not log_file(tmp_path).exists()
    p.close()


def test_a_corrupt_line_before_the_end_is_an_error(tmp_path):
    log_file(tmp_path).parent.mkdir(parents=True)
    log_file(tmp_path).write_bytes(b'{"op":"put"\n{"op":"delete","id":"x"}\n')
    with pytest.raises(ProviderError, match="corrupt at line 1"):
        MemoryStore(store_file(tmp_path))


def test_kill_between_replace_and_log_removal_replays_without_duplicates(tmp_path):
    p = make(tmp_path)
    for name in ("a", "b"):
        create(p, "model", name, artifact=f"s3://{name}")
    p.delete(ref("model.b", "model"))
    log = log_file(tmp_path).read_bytes()
    p.close()                                  # store now holds everything
    log_file(tmp_path).write_bytes(log)        # ... but the log was never removed
    store = MemoryStore(store_file(tmp_path))
    assert store.ids() == [f"{STACK}/{ENV}/model.a"]
    assert store.get(f"{STACK}/{ENV}/model.a")["attributes"]["version"] == 1
    assert store.next_counter(f"{STACK}/{ENV}/model.b#version") == 2   # counters kept too
    store.compact()


def test_kill_before_replace_leaves_old_store_plus_log(tmp_path):
    p = make(tmp_path)
    create(p, "endpoint", "a")
    p.close()
    q = make(tmp_path)
    create(q, "endpoint", "b")
    log = log_file(tmp_path).read_bytes()
    q.close()
    # Rebuild the instant before os.replace: old store, a half-written temp file, the log.
    old = {"objects": {k: v for k, v in stored_objects(tmp_path).items() if k.endswith(".a")}}
    store_file(tmp_path).write_text(json.dumps(old))
    store_file(tmp_path).with_name(".dev.json.123.tmp").write_text('{"objects": {')
    log_file(tmp_path).write_bytes(log)
    assert sorted(MemoryStore(store_file(tmp_path)).ids()) == [
        f"{STACK}/{ENV}/endpoint.a", f"{STACK}/{ENV}/endpoint.b"]


_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from mlform.providers.base import Desired, ProviderContext
    from mlform.providers.memory import MemoryProvider
    ctx = ProviderContext("memory", None, "stk", "dev", Path(sys.argv[1]), {})
    p = MemoryProvider(ctx)
    i = 0
    while True:
        d = Desired(f"model.m{i}", "model", f"m{i}", {"artifact": f"s3://a/{i}"})
        p.create(contract.plan(p, d, None))
        print(i, flush=True)
        i += 1
""")


def test_sigkill_at_any_instant_loses_no_completed_create(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    done = []
    try:
        for line in child.stdout:
            done.append(int(line))
            if len(done) >= 300:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    done.extend(int(line) for line in child.stdout.read().split())  # printed before the kill
    store = MemoryStore(store_file(tmp_path))
    ids = set(store.ids())
    assert {f"{STACK}/{ENV}/model.m{i}" for i in done} <= ids
    assert len(ids) <= len(done) + 1           # at most the create in flight
    for id in ids:                             # each object complete and versioned once
        assert store.get(id)["attributes"]["version"] == 1


def test_two_instances_on_one_store_share_it(tmp_path):
    p, q = make(tmp_path), make(tmp_path)
    create(p, "endpoint", "a")
    create(q, "endpoint", "b")
    p.close()
    q.close()
    assert len(stored_objects(tmp_path)) == 2


# -- out-of-band edits (drift) ---------------------------------------------------

def test_hand_edits_to_the_store_file_are_seen_by_read(tmp_path):
    p = make(tmp_path)
    create(p, "endpoint", "a", replicas=1)
    create(p, "endpoint", "b", replicas=1)
    p.close()
    document = json.loads(store_file(tmp_path).read_text())
    document["objects"][f"{STACK}/{ENV}/endpoint.a"]["attributes"]["replicas"] = 10
    del document["objects"][f"{STACK}/{ENV}/endpoint.b"]
    store_file(tmp_path).write_text(json.dumps(document))

    q = make(tmp_path)
    assert q.read(ref("endpoint.a")).attributes["replicas"] == 10
    assert q.read(ref("endpoint.b")) is None
    q.close()


def test_a_live_instance_notices_a_changed_store_file(tmp_path, provider):
    create(provider, "endpoint", "a", replicas=1)
    provider.close()                           # compact; the next call reopens
    assert provider.read(ref("endpoint.a")).attributes["replicas"] == 1
    document = json.loads(store_file(tmp_path).read_text())
    document["objects"][f"{STACK}/{ENV}/endpoint.a"]["attributes"]["replicas"] = 300
    store_file(tmp_path).write_text(json.dumps(document))
    assert provider.read(ref("endpoint.a")).attributes["replicas"] == 300


# -- latency ---------------------------------------------------------------------
# Latency is checked through the sleep it causes, not with a clock: tests make no
# timed assertions (figures belong to tests/bench).

def test_latency_applies_to_service_calls_only(tmp_path, mocker):
    p = make(tmp_path, latency_ms=60)
    sleep = mocker.patch("mlform.providers.memory.env.time.sleep")
    d = desired("endpoint", "a", replicas=1)
    contract.validate(p, d)
    planned = contract.plan(p, d, None)
    assert sleep.call_count == 0               # validate and plan are local computation
    live = p.create(planned)
    p.read(live)
    p.update(live, planned)
    p.import_("endpoint", "endpoint.a", live.id)
    p.delete(live)
    assert [c.args for c in sleep.call_args_list] == [(0.06,)] * 5
    p.close()


def test_latency_is_not_serialised_by_the_store_lock(tmp_path, mocker):
    """Ten creates must be able to sleep at the same time: a barrier of ten only
    opens if no lock is held across the latency."""
    p = make(tmp_path, latency_ms=200)
    barrier = threading.Barrier(10, timeout=10)
    mocker.patch("mlform.providers.memory.env.time.sleep", lambda s: barrier.wait())
    errors = []

    def worker(i):
        try:
            create(p, "endpoint", f"e{i}")
        except Exception as exc:  # a broken barrier means the sleeps were serialised
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    p.close()


# -- failure injection -------------------------------------------------------------

@pytest.mark.parametrize("op", ["plan", "create", "read", "update", "delete", "import"])
def test_injected_failures_raise_naming_the_address(tmp_path, op):
    p = make(tmp_path, fail={f"{op}:endpoint.x": "service on fire"})
    other = create(p, "endpoint", "other")     # other addresses are unaffected
    d = desired("endpoint", "x")
    planned = contract.plan(p, d, None) if op != "plan" else None
    live = p.create(planned) if op not in ("plan", "create") else None
    calls = {
        "plan": lambda: contract.plan(p, d, None),
        "create": lambda: p.create(planned),
        "read": lambda: p.read(live),
        "update": lambda: p.update(live, planned),
        "delete": lambda: p.delete(live),
        "import": lambda: p.import_("endpoint", "endpoint.x", live.id),
    }
    with pytest.raises(ProviderError) as caught:
        calls[op]()
    assert caught.value.address == "endpoint.x"
    assert "endpoint.x" in str(caught.value) and "service on fire" in str(caught.value)
    assert caught.value.partial is None
    assert p.read(other) is not None
    if op == "create":                          # a failed create makes nothing
        assert make(tmp_path).read(ref("endpoint.x")) is None
    p.close()


def test_injected_validate_failure_is_a_diagnostic(tmp_path):
    p = make(tmp_path, fail={"validate:dataset.d": "bucket quota"})
    [diag] = contract.validate(p, desired("dataset", "d", source="x"))
    assert diag.severity == "error" and diag.summary == "bucket quota"
    assert diag.address == "dataset.d"
    assert contract.validate(p, desired("dataset", "other", source="x")) == []
    p.close()


def test_create_partial_makes_the_object_then_fails(tmp_path):
    p = make(tmp_path, fail={"create-partial:endpoint.x": "health check timed out"})
    with pytest.raises(ProviderError) as caught:
        create(p, "endpoint", "x", replicas=3)
    partial = caught.value.partial
    assert caught.value.address == "endpoint.x"
    assert partial is not None and partial.id == f"{STACK}/{ENV}/endpoint.x"
    assert partial.attributes["replicas"] == 3
    assert p.read(ref("endpoint.x")).attributes == partial.attributes
    p.close()


@pytest.mark.parametrize("config, message", [
    ({"stor": "x.json"}, "stor"),
    ({"fail": {"explode:endpoint.x": "m"}}, "explode"),
    ({"fail": {"create": "m"}}, "OP:ADDRESS"),
    ({"latency_ms": -1}, "latency_ms"),
])
def test_bad_config_is_an_error(tmp_path, config, message):
    with pytest.raises(ProviderError, match=message):
        make(tmp_path, **config)


# -- call log ----------------------------------------------------------------------

def test_call_log_records_mutating_calls_only(tmp_path):
    p = make(tmp_path, call_log="calls.jsonl")
    d = desired("endpoint", "a", replicas=1)
    contract.validate(p, d)
    planned = contract.plan(p, d, None)
    live = p.create(planned)
    p.read(live)
    p.import_("endpoint", "endpoint.a", live.id)
    p.update(live, planned)
    p.delete(live)
    p.close()
    calls = read_calls(tmp_path / "calls.jsonl")
    assert [c["op"] for c in calls] == ["create", "update", "delete"]
    assert all(c["address"] == "endpoint.a" and c["id"] == live.id for c in calls)
    assert all(isinstance(c["time"], float) for c in calls)


# -- threads and scale --------------------------------------------------------------

def test_thirty_two_threads_at_once(tmp_path):
    p = make(tmp_path, call_log="calls.jsonl")
    errors = []

    def work(t: int) -> None:
        try:
            for i in range(40):
                live = create(p, "model", f"t{t}_{i}", artifact=f"s3://{t}/{i}")
                assert p.read(live).attributes["version"] == 1
                if i % 4 == 0:
                    p.delete(live)
        except Exception as exc:  # surfaced below: a thread's assert does not fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p.close()
    assert errors == []
    assert len(stored_objects(tmp_path)) == 32 * 30
    calls = read_calls(tmp_path / "calls.jsonl")   # every line whole, none interleaved
    assert len(calls) == 32 * 40 + 32 * 10


def test_ten_thousand_creates(tmp_path):
    p = make(tmp_path)
    plans = [contract.plan(p, desired("endpoint", f"e{i}", replicas=1, settings={"region": "eu"}), None)
             for i in range(10_000)]
    start = time.perf_counter()
    for planned in plans:
        p.create(planned)
    created = time.perf_counter() - start
    start = time.perf_counter()
    p.close()
    compacted = time.perf_counter() - start
    print(json.dumps({"figure": "memory_provider_10k_creates_s", "value": round(created, 3),
                      "compact_s": round(compacted, 3)}))
    assert len(stored_objects(tmp_path)) == 10_000


# -- computed values ------------------------------------------------------------------

def test_dataset_digest_of_a_csv_file(tmp_path, provider):
    data = b"amount,label\n1.0,0\n2.5,1\n3.0,0\n"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tx.csv").write_bytes(data)
    planned = contract.plan(provider, desired("dataset", "tx", source="./data/tx.csv", format="csv"), None)
    import hashlib
    assert planned.attributes["digest"] == hashlib.sha256(data).hexdigest()
    assert planned.attributes["bytes"] == len(data)
    assert planned.attributes["rows"] == 3
    assert planned.attributes["uri"] == f"memory://{STACK}/{ENV}/dataset/dataset.tx"


def test_dataset_digest_of_a_uri_source(provider):
    import hashlib
    planned = contract.plan(provider, desired("dataset", "d", source="s3://bucket/key"), None)
    assert planned.attributes["digest"] == hashlib.sha256(b"s3://bucket/key").hexdigest()
    assert (planned.attributes["bytes"], planned.attributes["rows"]) == (len("s3://bucket/key"), 0)


def test_unknown_inputs_pass_through_plan(provider):
    planned = contract.plan(provider, desired("dataset", "d", source=UNKNOWN, format="csv"), None)
    assert planned.attributes["source"] is UNKNOWN
    assert planned.attributes["digest"] is UNKNOWN and planned.attributes["rows"] is UNKNOWN
    planned = contract.plan(provider, desired("training_cluster", "c", gpus_per_node=UNKNOWN), None)
    assert planned.attributes["gpus_total"] is UNKNOWN
    planned = contract.plan(provider, desired("endpoint", "e", model={"version": UNKNOWN},
                                    tags={"x": UNKNOWN}), None)
    assert planned.attributes["model_version"] is UNKNOWN
    assert planned.attributes["tags"] == {"x": UNKNOWN}


def test_create_fills_every_unknown_and_keeps_known_values(provider):
    planned = contract.plan(provider, desired("endpoint", "e", model={"version": UNKNOWN}, replicas=2), None)
    live = provider.create(planned)
    assert live.attributes["replicas"] == 2
    assert isinstance(live.attributes["model"]["version"], str)
    assert live.attributes["url"] == f"memory://{STACK}/{ENV}/endpoint/endpoint.e"


def test_training_cluster_gpus_total(provider):
    assert contract.plan(provider, desired("training_cluster", "c", gpus_per_node=8, nodes=4),
                         None).attributes["gpus_total"] == 32
    assert contract.plan(provider, desired("training_cluster", "c"), None).attributes["gpus_total"] == 0


def test_pipeline_runs_are_deterministic_and_rerun_on_change(provider):
    import hashlib
    live = create(provider, "pipeline", "train", fingerprint="fp1")
    expected = "run-" + hashlib.sha256(b"pipeline.trainfp1").hexdigest()[:12]
    assert live.attributes["run_id"] == expected
    assert live.attributes["model_uri"] == \
        f"memory://{STACK}/{ENV}/artifacts/pipeline.train/{expected}"
    assert live.attributes["metrics"] == {"accuracy": 1.0}

    same = contract.plan(provider, desired("pipeline", "train", fingerprint="fp1"), live)
    assert same.attributes["run_id"] == expected and same.reasons == ()
    changed = contract.plan(provider, desired("pipeline", "train", fingerprint="fp2"), live)
    assert changed.attributes["run_id"] is UNKNOWN
    rerun = provider.update(live, changed)
    assert rerun.attributes["run_id"] not in (UNKNOWN, expected)
    assert contract.plan(provider, desired("pipeline", "train", fingerprint=UNKNOWN),
                         rerun).attributes["metrics"] is UNKNOWN


def test_stale_pipeline_reruns_with_a_reason_and_a_new_run_id(tmp_path, provider):
    live = create(provider, "pipeline", "train", fingerprint="fp")
    stale = LiveObject(live.address, live.kind, live.id,
                       {**live.attributes, "stale": "monitor.drift breached"})
    planned = contract.plan(provider, desired("pipeline", "train", fingerprint="fp"), stale)
    assert planned.reasons == ("monitor.drift breached",)   # the marker's reason, as is
    assert planned.attributes["run_id"] is UNKNOWN and planned.attributes["stale"] is None
    provider.close()
    # mark it stale in the store, as a breach (or a person) would
    document = json.loads(store_file(tmp_path).read_text())
    document["objects"][live.id]["attributes"]["stale"] = "monitor.drift breached"
    store_file(tmp_path).write_text(json.dumps(document))
    rerun = provider.update(stale, planned)
    assert rerun.attributes["run_id"] != live.attributes["run_id"]
    assert rerun.attributes["model_uri"] != live.attributes["model_uri"]
    assert provider.update(stale, planned).attributes == rerun.attributes   # idempotent


def test_pipeline_gate(provider):
    ok = create(provider, "pipeline", "ok", fingerprint="f", gate={"metric": "accuracy", "min": 0.9})
    assert ok.attributes["metrics"] == {"accuracy": 1.0}
    with pytest.raises(ProviderError, match=r"gate failed: accuracy 0\.80 < min 0\.90") as caught:
        create(provider, "pipeline", "bad", fingerprint="f",
               settings={"metrics": {"accuracy": 0.8}}, gate={"metric": "accuracy", "min": 0.9})
    assert caught.value.address == "pipeline.bad"
    assert provider.read(ref("pipeline.bad", "pipeline")) is None   # made nothing
    with pytest.raises(ProviderError, match=r"loss 0\.50 > max 0\.40"):
        create(provider, "pipeline", "loss", fingerprint="f",
               settings={"metrics": {"loss": 0.5}}, gate={"metric": "loss", "max": 0.4})


def test_model_versions_grow_and_are_never_reused(provider):
    v1 = create(provider, "model", "m", artifact="s3://a")
    assert (v1.attributes["version"], v1.attributes["uri"]) == \
        (1, f"memory://{STACK}/{ENV}/model/model.m/v1")
    kept = contract.plan(provider, desired("model", "m", artifact="s3://a", stage="prod"), v1)
    assert kept.attributes["version"] == 1
    moved = contract.plan(provider, desired("model", "m", artifact="s3://b"), v1)
    assert moved.attributes["version"] is UNKNOWN
    v2 = provider.update(v1, moved)
    assert v2.attributes["version"] == 2
    assert provider.update(v1, moved).attributes["version"] == 2      # idempotent
    provider.delete(v2)
    assert create(provider, "model", "m", artifact="s3://c").attributes["version"] == 3


def test_endpoint_and_monitor_values(provider):
    planned = contract.plan(provider, desired("endpoint", "e", model={"name": "m", "version": 4}), None)
    assert planned.attributes["model_version"] == 4
    assert contract.plan(provider, desired("endpoint", "e", model="m"), None).attributes["model_version"] is None
    monitor = create(provider, "monitor", "drift")
    assert (monitor.attributes["breached"], monitor.attributes["last_report"]) == (False, None)
    breached = LiveObject(monitor.address, "monitor", monitor.id,
                          {**monitor.attributes, "breached": True, "last_report": "psi 0.4"})
    again = contract.plan(provider, desired("monitor", "drift"), breached)
    assert (again.attributes["breached"], again.attributes["last_report"]) == (True, "psi 0.4")


def test_kinds_declare_replace_paths_and_computed_attributes():
    kinds = MemoryProvider.kinds
    assert set(kinds) == {"dataset", "training_cluster", "pipeline", "model", "endpoint", "monitor"}
    assert kinds["endpoint"].replace_paths == ("settings.region",)
    assert kinds["dataset"].computed == ("uri", "digest", "rows", "bytes")


def test_reading_an_object_of_another_kind_is_an_error(provider):
    live = create(provider, "endpoint", "x")
    with pytest.raises(ProviderError, match="has kind 'endpoint', not 'model'"):
        provider.import_("model", "model.x", live.id)


def test_public_names_and_entry_point():
    import importlib.metadata

    import mlform.providers.memory as memory

    assert sorted(memory.__all__) == ["MemoryConfig", "MemoryProvider", "read_calls"]
    assert all(hasattr(memory, name) for name in memory.__all__)
    [point] = [e for e in importlib.metadata.entry_points(group="mlform.providers")
               if e.name == "memory"]
    assert point.load() is MemoryProvider
    from mlform import registry  # the engine's plugin checks accept it
    assert registry.check_provider_class("memory", MemoryProvider) == []
