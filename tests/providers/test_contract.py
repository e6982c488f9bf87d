"""The provider contract suite (DESIGN.md section 5), run against every provider.

One suite, parametrized over `PROVIDER_CASES` x the kinds each case serves.
To add a provider, append a `ProviderCase`: a factory that builds a
configured provider whose files live under the test's tmp directory, and one
sample of desired attributes per kind it serves (plus, optionally, an
in-place change of those attributes used to exercise `update`).

What every provider must do, per kind it serves:

* validate and plan are pure: with their facts read first (`fact_keys`, `read_facts`),
  they change no file under the stack (the provider root, the memory store) and make
  no call to the service (the emulator's call log); plan names every computed
  attribute (known or UNKNOWN);
* create makes what the plan said: known values as planned, unknowns filled;
* a retried create adopts the same object (same id, no duplicate);
* read finds it by id, and by address alone when the id is lost (id=None);
* update is idempotent; delete removes it, and deleting again succeeds;
* import_ returns the object; validate returns a list of diagnostics.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import pytest
from pydantic import BaseModel

from mlform.diagnostics import Diagnostic
from mlform.expr.values import UNKNOWN, contains_unknown
from mlform.providers.base import KINDS, Desired, KindSchema, LiveObject, Provider, ProviderContext
from mlform.providers.example import ExampleProvider
from mlform.providers.kubernetes import KubernetesProvider
from mlform.providers.local import LocalProvider
from mlform.providers.memory import MemoryProvider
from mlform.providers.sagemaker import SageMakerProvider
from mlform.providers.kit import calls as contract

Attributes = dict[str, Any]


@dataclass(frozen=True)
class ProviderCase:
    """How the suite builds one provider and what it asks that provider for."""

    id: str
    provider_class: type[Provider]
    #: tmp dir (the stack directory) -> a configured provider
    build: Callable[[Path], Provider]
    #: kind -> (tmp dir -> desired attributes); may write files (datasets, entrypoints);
    #: a sample taking a second argument gets the `needs` fixtures by name
    samples: Mapping[str, Callable[[Path], Attributes]]
    #: kind -> (attributes -> attributes changed in place, no replacement)
    updates: Mapping[str, Callable[[Attributes], Attributes]] = field(default_factory=dict)
    #: pytest fixtures the provider needs (an emulator...), passed to `build` by name
    needs: tuple[str, ...] = ()


# -- memory ----------------------------------------------------------------------

def _memory(stack_dir: Path) -> Provider:
    context = ProviderContext(name="memory", alias=None, stack="contract", env="test",
                              stack_dir=stack_dir, config={"store": "memory/{env}.json"})
    return MemoryProvider(context)


def _csv_dataset(stack_dir: Path) -> Attributes:
    (stack_dir / "data").mkdir(exist_ok=True)
    (stack_dir / "data" / "tx.csv").write_text("amount,label\n1.5,0\n2.0,1\n")
    return {"source": "./data/tx.csv", "format": "csv",
            "schema": {"amount": "float", "label": "int"}, "checks": {"min_rows": 1}}


MEMORY = ProviderCase(
    id="memory",
    provider_class=MemoryProvider,
    build=_memory,
    samples={
        "dataset": _csv_dataset,
        "training_cluster": lambda d: {"accelerator": "nvidia-h100", "gpus_per_node": 2, "nodes": 1},
        "pipeline": lambda d: {"fingerprint": "sha256:aaaa", "entrypoint": "train.py",
                               "hyperparameters": {"epochs": 5},
                               "gate": {"metric": "accuracy", "min": 0.5}},
        "model": lambda d: {"artifact": "memory://contract/test/artifacts/run-1",
                            "framework": "torch", "stage": "staging"},
        "endpoint": lambda d: {"model": {"name": "fraud", "version": 1}, "replicas": 1,
                               "settings": {"region": "eu-west-1"}},
        "monitor": lambda d: {"endpoint": "memory://contract/test/endpoint/endpoint.fraud",
                              "checks": [{"metric": "psi", "threshold": 0.2}],
                              "schedule": "*/10 * * * *", "on_breach": "retrain"},
    },
    updates={
        "dataset": lambda a: {**a, "checks": {"min_rows": 2}},
        "training_cluster": lambda a: {**a, "nodes": 2},
        "pipeline": lambda a: {**a, "fingerprint": "sha256:bbbb", "hyperparameters": {"epochs": 6}},
        "model": lambda a: {**a, "stage": "production"},
        "endpoint": lambda a: {**a, "replicas": 2},
        "monitor": lambda a: {**a, "schedule": "0 * * * *"},
    },
)

# -- local -----------------------------------------------------------------------

def _local(stack_dir: Path) -> Provider:
    context = ProviderContext(name="local", alias=None, stack="contract", env="test",
                              stack_dir=stack_dir, config={"root": "local/{env}"})
    return LocalProvider(context)


# A training script that keeps the run contract without loading torch: the suite is
# about the provider's calls, tests/local/test_runs.py about real training.
_TRAIN = """\
import json, os
out = os.environ["MLFORM_OUTPUT_DIR"]
open(os.path.join(out, "model.pt"), "wb").write(b"model")
json.dump({"accuracy": 0.9}, open(os.path.join(out, "metrics.json"), "w"))
"""


def _local_pipeline(stack_dir: Path) -> Attributes:
    (stack_dir / "train.py").write_text(_TRAIN)
    return {"fingerprint": "sha256:aaaa", "entrypoint": "train.py",
            "hyperparameters": {"epochs": 5}, "gate": {"metric": "accuracy", "min": 0.5}}


def _torchscript_run(stack_dir: Path) -> str:
    """A training run's output directory holding a real TorchScript module (what the
    model and endpoint samples refer to); its file:// URI."""
    output = stack_dir / "runs" / "contract" / "output"
    if not (output / "model.pt").exists():
        torch = pytest.importorskip("torch")
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2),
                                  torch.nn.Softmax(dim=1))
        output.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():         # torch 2.x marks torch.jit deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(torch.jit.script(net), str(output / "model.pt"))
        (output / "signature.json").write_text(json.dumps({"inputs": ["amount", "label"],
                                                           "outputs": ["p0", "p1"]}))
        (output / "metrics.json").write_text('{"accuracy": 0.9}')
    return output.as_uri()


def _local_model(stack_dir: Path) -> Attributes:
    return {"artifact": _torchscript_run(stack_dir), "framework": "torch", "stage": "staging"}


def _local_endpoint(stack_dir: Path) -> Attributes:
    # a model given by URI: the endpoint serves the directory itself, no registry needed
    return {"model": _torchscript_run(stack_dir), "replicas": 1,
            "rollout": {"strategy": "canary", "canary_percent": 10, "bake_seconds": 0},
            "settings": {"torch_threads": 1}}


def _local_monitor(stack_dir: Path) -> Attributes:
    data = _csv_dataset(stack_dir)
    baseline = stack_dir / data["source"]
    return {"endpoint": {"address": "endpoint.fraud", "url": "http://127.0.0.1:1/v2/models/fraud",
                         "model_version": 1},
            "baseline": {"address": "dataset.tx", "uri": baseline.as_uri(), "format": "csv",
                         "digest": hashlib.sha256(baseline.read_bytes()).hexdigest()},
            "checks": [{"metric": "psi", "threshold": 0.2}],
            # a schedule: create starts a scheduler process, delete must stop it
            "schedule": "*/10 * * * *", "on_breach": "alert"}


LOCAL = ProviderCase(
    id="local",
    provider_class=LocalProvider,
    build=_local,
    samples={
        "dataset": _csv_dataset,
        # CPU: the suite must pass on machines without a GPU
        "training_cluster": lambda d: {"accelerator": "cpu", "gpus_per_node": 0, "nodes": 1},
        "pipeline": _local_pipeline,
        "model": _local_model,
        "endpoint": _local_endpoint,
        "monitor": _local_monitor,
    },
    updates={
        "dataset": lambda a: {**a, "checks": {"min_rows": 2}},
        "training_cluster": lambda a: {**a, "max_runtime_seconds": 600},
        "pipeline": lambda a: {**a, "fingerprint": "sha256:bbbb", "hyperparameters": {"epochs": 6}},
        "model": lambda a: {**a, "stage": "production"},
        # turning capture on reloads the running server in place
        "endpoint": lambda a: {**a, "capture": {"sample_percent": 50}},
        # a new schedule restarts the scheduler
        "monitor": lambda a: {**a, "schedule": "0 * * * *"},
    },
)

# -- sagemaker (against the emulator: moto in server mode, tests/emulator) -------------

_SM_BUCKET = "mlform-contract"


def _sagemaker(stack_dir: Path, aws) -> Provider:
    aws.client("s3").create_bucket(Bucket=_SM_BUCKET)
    # training jobs complete in the emulator with these metrics (the gate reads them)
    aws.control(training_metrics={"accuracy": 0.9}, steps={"endpoint": 1, "training_job": 1})
    context = ProviderContext(name="sagemaker", alias=None, stack="contract", env="test",
                              stack_dir=stack_dir, config=aws.provider_config(_SM_BUCKET))
    return SageMakerProvider(context)


def _sm_pipeline(stack_dir: Path) -> Attributes:
    (stack_dir / "train.py").write_text(_TRAIN)
    return {"fingerprint": "sha256:aaaa", "entrypoint": "train.py",
            "hyperparameters": {"epochs": 5}, "gate": {"metric": "accuracy", "min": 0.5}}


_SM_PACKAGE = "arn:aws:sagemaker:us-east-1:123456789012:model-package/contract-fraud/1"


def _sm_monitor(stack_dir: Path, fixtures: dict) -> Attributes:
    """A monitor watches an endpoint that captures requests: make one (model, config with
    capture, endpoint) with boto3 in the emulator, as another stack or a person would."""
    sm = fixtures["aws"].client("sagemaker")
    sm.create_model(ModelName="watched", ExecutionRoleArn="arn:aws:iam::123456789012:role/x",
                    PrimaryContainer={"Image": "img", "ModelDataUrl": "s3://b/m.tar.gz"})
    sm.create_endpoint_config(
        EndpointConfigName="watched-1",
        ProductionVariants=[{"VariantName": "primary", "ModelName": "watched",
                             "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}],
        DataCaptureConfig={"EnableCapture": True, "InitialSamplingPercentage": 100,
                           "DestinationS3Uri": f"s3://{_SM_BUCKET}/capture/watched",
                           "CaptureOptions": [{"CaptureMode": "Input"},
                                              {"CaptureMode": "Output"}]})
    sm.create_endpoint(EndpointName="watched", EndpointConfigName="watched-1")
    data = _csv_dataset(stack_dir)
    return {"endpoint": {"address": "endpoint.watched", "model_version": 1,
                         "url": "https://runtime.sagemaker.us-east-1.amazonaws.com/endpoints/"
                                "watched/invocations"},
            "baseline": {"address": "dataset.tx", "uri": f"s3://{_SM_BUCKET}/data/tx.csv",
                         "format": data["format"], "digest": "0" * 64},
            "checks": [{"metric": "psi", "threshold": 0.2}],
            "schedule": "*/10 * * * *", "on_breach": "alert"}


SAGEMAKER = ProviderCase(
    id="sagemaker",
    provider_class=SageMakerProvider,
    build=_sagemaker,
    needs=("aws",),
    samples={
        "dataset": _csv_dataset,
        "training_cluster": lambda d: {"accelerator": "cpu", "gpus_per_node": 0, "nodes": 1},
        "pipeline": _sm_pipeline,
        "model": lambda d: {"artifact": f"s3://{_SM_BUCKET}/runs/contract/model.tar.gz",
                            "framework": "torch", "stage": "staging"},
        # a model given by package ARN: the endpoint makes its own SageMaker Model for it
        "endpoint": lambda d: {"model": _SM_PACKAGE, "replicas": 1,
                               "rollout": {"strategy": "canary", "canary_percent": 10,
                                           "bake_seconds": 0},
                               "capture": {"sample_percent": 100}},
        "monitor": _sm_monitor,
    },
    updates={
        "dataset": lambda a: {**a, "checks": {"min_rows": 2}},
        "training_cluster": lambda a: {**a, "max_runtime_seconds": 600},
        "pipeline": lambda a: {**a, "fingerprint": "sha256:bbbb", "hyperparameters": {"epochs": 6}},
        "model": lambda a: {**a, "stage": "production"},
        # a new EndpointConfig rolled out with UpdateEndpoint
        "endpoint": lambda a: {**a, "replicas": 2},
        "monitor": lambda a: {**a, "schedule": "0 * * * *"},
    },
)

# -- example (docs/providers.md, "Writing a provider") ---------------------------------

def _example(stack_dir: Path) -> Provider:
    context = ProviderContext(name="example", alias=None, stack="contract", env="test",
                              stack_dir=stack_dir, config={"root": "records/{env}"})
    return ExampleProvider(context)


EXAMPLE = ProviderCase(
    id="example",
    provider_class=ExampleProvider,
    build=_example,
    samples={
        "dataset": _csv_dataset,
        "pipeline": lambda d: {"fingerprint": "sha256:aaaa", "entrypoint": "train.py",
                               "gate": {"metric": "accuracy", "min": 0.5},
                               "settings": {"metrics": {"accuracy": 0.9}}},
        "model": lambda d: {"artifact": "example://contract/run-1", "framework": "torch"},
    },
    updates={
        "dataset": lambda a: {**a, "checks": {"min_rows": 2}},
        "pipeline": lambda a: {**a, "fingerprint": "sha256:bbbb"},
        "model": lambda a: {**a, "stage": "production"},
    },
)

# -- kubernetes (the test control plane, tests/k8s; moto's S3 as storage) -----------------

_K8S_BUCKET = "mlform-contract-k8s"


def _kubernetes(stack_dir: Path, aws, control_plane, pod_harness) -> Provider:
    aws.client("s3").create_bucket(Bucket=_K8S_BUCKET)
    context = ProviderContext(
        name="kubernetes", alias=None, stack="contract", env="test", stack_dir=stack_dir,
        config={"kubeconfig": str(control_plane.kubeconfig), "poll_seconds": 0.1,
                "storage": f"s3://{_K8S_BUCKET}/{{stack}}", "endpoint_url": aws.url})
    return KubernetesProvider(context)


KUBERNETES = ProviderCase(
    id="kubernetes",
    provider_class=KubernetesProvider,
    build=_kubernetes,
    # the pod harness plays the training pods' containers (tests/k8s/harness.py)
    needs=("aws", "control_plane", "pod_harness"),
    samples={
        "dataset": _csv_dataset,
        "training_cluster": lambda d: {"accelerator": "cpu", "gpus_per_node": 0, "nodes": 1},
        "pipeline": _local_pipeline,
        "model": lambda d: {"artifact": f"s3://{_K8S_BUCKET}/runs/contract/output/",
                            "framework": "torch", "stage": "staging"},
        "endpoint": lambda d: {"model": {"address": "model.fraud", "version": 1,
                                         "uri": f"s3://{_K8S_BUCKET}/runs/contract/output/"},
                               "replicas": 1,
                               "rollout": {"strategy": "canary", "canary_percent": 10,
                                           "bake_seconds": 0}},
        # a CronJob (the check itself runs in tests/k8s/test_provider.py)
        "monitor": lambda d: {"endpoint": {"address": "endpoint.fraud", "model_version": 1},
                              "baseline": {"address": "dataset.tx", "format": "csv",
                                           "uri": f"s3://{_K8S_BUCKET}/data/tx.csv"},
                              "checks": [{"metric": "psi", "threshold": 0.2}],
                              "schedule": "*/10 * * * *", "on_breach": "alert"},
    },
    updates={
        "dataset": lambda a: {**a, "checks": {"min_rows": 2}},
        # a new quota on the cluster's namespace
        "training_cluster": lambda a: {**a, "settings": {"cpu": "8"}},
        # a new fingerprint: a new Job
        "pipeline": lambda a: {**a, "fingerprint": "sha256:bbbb", "hyperparameters": {"epochs": 6}},
        "model": lambda a: {**a, "stage": "production"},
        "endpoint": lambda a: {**a, "replicas": 2},
        "monitor": lambda a: {**a, "schedule": "0 * * * *"},
    },
)

#: every provider the suite runs against; providers append their case here
PROVIDER_CASES: list[ProviderCase] = [MEMORY, LOCAL, SAGEMAKER, EXAMPLE, KUBERNETES]


# -- harness -------------------------------------------------------------------------

@dataclass
class Subject:
    """One provider and one resource of one kind, for one test."""

    provider: Provider
    desired: Desired
    changed: Desired
    root: Path
    fixtures: dict = field(default_factory=dict)

    def world(self) -> tuple:
        """What a pure call must leave as it was: every file under the stack directory
        (bytes and mtime), and the calls the emulator has answered (when there is one)."""
        files = {str(p.relative_to(self.root)):
                 (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
                 if p.is_file() else "directory"
                 for p in sorted(self.root.rglob("*"))}
        aws = self.fixtures.get("aws")
        plane = self.fixtures.get("control_plane")
        return (files, (len(aws.calls()) if aws is not None else 0),
                (len(plane.mutating_requests()) if plane is not None else 0))

    def plan(self, desired: Desired | None = None, prior: LiveObject | None = None):
        return contract.plan(self.provider, desired or self.desired, prior)

    def create(self) -> LiveObject:
        return self.provider.create(self.plan())

    def lost(self) -> LiveObject:
        """The reference the engine has after an interrupted create: address, no id."""
        d = self.desired
        return LiveObject(address=d.address, kind=d.kind, id=None, attributes={})


CASES_BY_KIND = [pytest.param(case, kind, id=f"{case.id}-{kind}")
                 for case in PROVIDER_CASES for kind in case.samples]


@pytest.fixture
def subject(case: ProviderCase, kind: str, tmp_path: Path, request):
    fixtures = {name: request.getfixturevalue(name) for name in case.needs}
    provider = case.build(tmp_path, *fixtures.values())
    sample = case.samples[kind]
    # a sample may need the provider's world too (the emulator it talks to)
    attributes = (sample(tmp_path, fixtures) if sample.__code__.co_argcount == 2
                  else sample(tmp_path))
    name = "contract"
    desired = Desired(address=f"{kind}.{name}", kind=kind, name=name, attributes=attributes)
    change = case.updates.get(kind, dict)
    changed = Desired(address=desired.address, kind=kind, name=name,
                      attributes=change(dict(attributes)))
    s = Subject(provider, desired, changed, tmp_path, fixtures)
    try:
        yield s
    finally:
        try:  # leave nothing running behind (real providers start real things)
            provider.delete(s.lost())
        finally:
            provider.close()
    left = _processes_under(tmp_path)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"delete left processes running: {left}"


def _processes_under(directory: Path) -> dict[int, str]:
    """Live processes whose command line names a file under `directory` (servers,
    schedulers: the local provider puts its spec file's path there)."""
    marker = str(directory) + "/"
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if marker in cmd and stat[stat.rindex(")") + 2] not in "ZX":
            found[int(entry.name)] = cmd
    return found


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def assert_realizes(planned: Any, live: Any, path: str = "attributes") -> None:
    """Live holds every planned known value, and a concrete value for each unknown.

    Extra live keys are allowed: a real service may report more than was planned.
    """
    assert not contains_unknown(live), f"{path} still unknown after apply"
    if planned is UNKNOWN:
        return
    if isinstance(planned, Mapping):
        assert isinstance(live, Mapping), f"{path}: planned a mapping, live {live!r}"
        for key, want in planned.items():
            assert key in live, f"{path}.{key} planned but missing from the live object"
            assert_realizes(want, live[key], f"{path}.{key}")
    elif isinstance(planned, (list, tuple)):
        assert isinstance(live, (list, tuple)) and len(live) == len(planned), \
            f"{path}: planned {planned!r}, live {live!r}"
        for i, (want, got) in enumerate(zip(planned, live)):
            assert_realizes(want, got, f"{path}[{i}]")
    else:
        assert _plain(live) == _plain(planned), f"{path}: planned {planned!r}, live {live!r}"


# -- the contract --------------------------------------------------------------------

@pytest.mark.parametrize("case", PROVIDER_CASES, ids=lambda c: c.id)
def test_provider_declares_name_kinds_and_config_model(case):
    cls = case.provider_class
    assert isinstance(cls.name, str) and cls.name
    assert cls.kinds and set(cls.kinds) <= set(KINDS)
    assert all(isinstance(schema, KindSchema) for schema in cls.kinds.values())
    assert isinstance(cls.config_model, type) and issubclass(cls.config_model, BaseModel)
    assert set(case.samples) <= set(cls.kinds), "samples given for kinds the provider does not serve"


@pytest.mark.parametrize("case, kind", CASES_BY_KIND)
def test_validate_returns_a_list_of_diagnostics(subject):
    found = contract.validate(subject.provider, subject.desired)
    assert isinstance(found, list) and all(isinstance(d, Diagnostic) for d in found)
    assert not [d for d in found if d.severity == "error"], "the sample itself must be valid"


def _validate_and_plan_twice(subject, desired, prior) -> None:
    """Facts read first (that may look), then validate and plan twice (that may not)."""
    provider = subject.provider
    facts = contract.facts_for(provider, desired, prior)
    before = subject.world()
    for _ in range(2):
        provider.validate(desired, facts)
        provider.plan(desired, prior, facts)
    what = "a create" if prior is None else "an update"
    assert subject.world() == before, f"validate or plan of {what} changed something"


@pytest.mark.parametrize("case, kind", CASES_BY_KIND)
def test_validate_and_plan_are_pure(subject):
    _validate_and_plan_twice(subject, subject.desired, None)
    assert subject.provider.read(subject.lost()) is None, "planning made the object"
    # and planning an update of an existing object
    _validate_and_plan_twice(subject, subject.changed, subject.create())


@pytest.mark.parametrize("case, kind", CASES_BY_KIND)
def test_plan_of_create_names_every_computed_attribute(subject, kind):
    planned = subject.plan()
    schema = subject.provider.kinds[kind]
    for name in schema.computed:
        assert name in planned.attributes, f"computed {name!r} missing from the plan"
    for key, value in subject.desired.attributes.items():
        if key not in schema.computed:
            assert _plain(planned.attributes[key]) == _plain(value), f"plan changed {key!r}"


@pytest.mark.parametrize("case, kind", CASES_BY_KIND)
def test_create_makes_what_was_planned_and_read_returns_it(subject):
    planned = subject.plan()
    live = subject.provider.create(planned)
    assert live.id, "create must return the provider-side id"
    assert_realizes(planned.attributes, live.attributes)
    found = subject.provider.read(live)
    assert found is not None and found.id == live.id
    assert_realizes(planned.attributes, found.attributes)


@pytest.mark.parametrize("case, kind", CASES_BY_KIND)
def test_retried_create_adopts_the_same_object(subject):
    planned = subject.plan()
    first = subject.provider.create(planned)
    second = subject.provider.create(planned)
    assert second.id == first.id
    assert _plain(second.attributes) == _plain(first.attributes)
    subject.provider.delete(second)
    # a duplicate would still be found after deleting the one we know
    assert subject.provider.read(first) is None
    assert subject.provider.read(subject.lost()) is None


@pytest.mark.parametrize("case, kind", CASES_BY_KIND)
def test_read_without_an_id_finds_the_object_by_address(subject):
    live = subject.create()
    found = subject.provider.read(subject.lost())
    assert found is not None and found.id == live.id
    assert _plain(found.attributes) == _plain(live.attributes)


@pytest.mark.parametrize("case, kind", CASES_BY_KIND)
def test_update_is_idempotent(subject):
    live = subject.create()
    planned = subject.plan(subject.changed, live)
    first = subject.provider.update(live, planned)
    second = subject.provider.update(live, planned)
    assert_realizes(planned.attributes, first.attributes)
    assert second.id == first.id
    assert _plain(second.attributes) == _plain(first.attributes)
    found = subject.provider.read(first)
    assert found is not None and _plain(found.attributes) == _plain(first.attributes)


@pytest.mark.parametrize("case, kind", CASES_BY_KIND)
def test_delete_removes_and_deleting_again_succeeds(subject):
    live = subject.create()
    subject.provider.delete(live)
    assert subject.provider.read(live) is None
    subject.provider.delete(live)
    subject.provider.delete(subject.lost())


@pytest.mark.parametrize("case, kind", CASES_BY_KIND)
def test_import_returns_the_object(subject, kind):
    live = subject.create()
    imported = subject.provider.import_(kind, subject.desired.address, live.id)
    assert imported is not None and imported.id == live.id and imported.kind == kind
    assert _plain(imported.attributes) == _plain(subject.provider.read(live).attributes)
    subject.provider.delete(live)
    assert subject.provider.import_(kind, subject.desired.address, live.id) is None


DATASET_CASES = [pytest.param(case, "dataset", id=f"{case.id}-dataset")
                 for case in PROVIDER_CASES if "dataset" in case.samples]


@pytest.mark.parametrize("case, kind", DATASET_CASES)
def test_a_dataset_is_profiled_only_for_its_checks_and_once_per_content(subject, mocker):
    from mlform.providers.kit import checks
    profiled = mocker.patch.object(checks, "profile", wraps=checks.profile)
    plain = {k: v for k, v in subject.desired.attributes.items() if k not in ("schema", "checks")}
    bare = Desired(subject.desired.address, "dataset", subject.desired.name, plain)
    planned = subject.plan(bare)
    assert profiled.call_count == 0, "no schema and no checks: nothing but digest and rows"
    assert planned.attributes["digest"] is not UNKNOWN
    subject.plan()
    subject.plan()
    # at most once: the memory provider counts lines and profiles nothing, and a cache
    # without a directory is one per process, so an earlier test may have profiled it
    assert profiled.call_count <= 1, "the same content is never profiled twice"
