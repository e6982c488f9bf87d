"""`mlform export pulumi` and `mlform import-state pulumi` on the kubernetes provider,
against the test cluster.

A small stack (a GPU training cluster, a dataset, a model, an endpoint with autoscaling,
one with fixed replicas, a monitor) is applied through the CLI.  Then:

* the engine's export (`pulumi_export.export_program`: ExportObjects from the state and
  a plan) gives the provider's PulumiResources, checked against the live objects read
  back through lightkube: kinds, names, namespaces, labels and annotations, replicas,
  image and ports, the HPA's bounds, the CronJob's schedule, the import ids;
* the program `mlform export pulumi` writes runs under Pulumi's mocks with the real
  pulumi_kubernetes classes (a subprocess, `tests/_pulumi.py`): what each class sends on
  the wire, in the API's own field names, has no difference from the live object on
  any field (mlform's drift comparison), so the program declares what mlform applied;
* a stack export holding those objects (their wire inputs, the live objects as
  outputs), objects made outside mlform, another stack's object and kinds mlform has
  no equivalent for is claimed as it should be, and each import id is one ``mlform
  import`` takes (the provider imports it from the cluster).
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from e2e.harness import CLI, Run, cli_env
from fixture import AWS_ENV
from _pulumi import needs_pulumi, run_program
from mlform.providers.base import (
    ExportObject, ProviderContext, ProviderError, PulumiInput, PulumiRef,
)
from mlform.providers.kubernetes import KubernetesProvider
from mlform.providers.kubernetes.env import ATTRIBUTES, differences
from mlform.providers.kubernetes.pulumi_export import EXPORTED, NOT_EXPORTED, python_name

pytestmark = pytest.mark.timeout(600)

BUCKET = "mlform-k8s-pulumi"
STACK = "k8s-pulumi"
#: Pulumi type token -> (apiVersion, kind) of the objects the stack makes
API = {"kubernetes:core/v1:Namespace": ("v1", "Namespace"),
       "kubernetes:core/v1:ResourceQuota": ("v1", "ResourceQuota"),
       "kubernetes:core/v1:Service": ("v1", "Service"),
       "kubernetes:apps/v1:Deployment": ("apps/v1", "Deployment"),
       "kubernetes:autoscaling/v2:HorizontalPodAutoscaler":
           ("autoscaling/v2", "HorizontalPodAutoscaler"),
       "kubernetes:batch/v1:CronJob": ("batch/v1", "CronJob")}
MAIN_HCL = '''
    provider "kubernetes" {{
      kubeconfig   = "{kubeconfig}"
      storage      = "s3://{bucket}/{{stack}}"
      endpoint_url = "{endpoint_url}"
      poll_seconds = 0.1
      labels       = {{ team = "fraud" }}
    }}

    dataset "tx" {{
      source = "./tx.csv"
      format = "csv"
    }}

    training_cluster "gpu" {{
      accelerator   = "nvidia-h100"
      gpus_per_node = 2
      nodes         = 1
      settings      = {{ cpu = "8" }}
    }}

    model "fraud" {{
      artifact  = "s3://{bucket}/artifacts/fraud/"
      framework = "torch"
    }}

    endpoint "fraud" {{
      model       = model.fraud
      autoscaling = {{ min = 1, max = 3 }}
      capture     = {{ sample_percent = 100 }}
      tags        = {{ tier = "gold" }}
    }}

    endpoint "plain" {{
      model    = model.fraud
      replicas = 2
    }}

    monitor "drift" {{
      endpoint = endpoint.fraud
      baseline = dataset.tx
      checks   = [{{ metric = "psi", threshold = 0.2 }}]
      schedule = "*/10 * * * *"
    }}
'''


def mlform(stack: Path, *args, timeout: float = 300) -> Run:
    proc = subprocess.run([*CLI, "-C", str(stack), *map(str, args)], env=cli_env(AWS_ENV),
                          input="", capture_output=True, text=True, timeout=timeout)
    return Run(tuple(args), proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, control_plane, moto_server):
    """The applied stack's directory (destroyed afterwards)."""
    moto_server.reset()
    moto_server.client("s3").create_bucket(Bucket=BUCKET)
    directory = tmp_path_factory.mktemp("pulumi") / STACK
    directory.mkdir()
    (directory / "main.hcl").write_text(textwrap.dedent(MAIN_HCL.format(
        kubeconfig=control_plane.kubeconfig, bucket=BUCKET, endpoint_url=moto_server.url)))
    (directory / "tx.csv").write_text("amount,label\n1.5,0\n2.0,1\n")
    applied = mlform(directory, "apply", "--auto-approve")
    assert applied.code == 0, applied.output
    try:
        yield directory
    finally:
        destroyed = mlform(directory, "destroy", "--auto-approve")
        assert destroyed.code == 0, destroyed.output


@pytest.fixture(scope="module")
def session(stack):
    """The stack in this process, as the CLI opens it (its kubernetes provider
    configured), with the storage's credentials in the environment."""
    from mlform.session import Session, SessionOptions
    with pytest.MonkeyPatch.context() as patch:
        for key, value in AWS_ENV.items():
            patch.setenv(key, value)
        opened = Session(stack, SessionOptions())
        try:
            yield opened
        finally:
            opened.close()


@pytest.fixture(scope="module")
def program(session):
    """`mlform export pulumi`'s program value (ExportObjects from the state and a plan)."""
    from mlform.pulumi_export import export_program
    return export_program(session)


@pytest.fixture(scope="module")
def state(session):
    from mlform import operations
    return operations.load_state(session, recover=False)


@pytest.fixture(scope="module")
def provider(session):
    return session.provider("kubernetes")


def live_of(provider, token: str, metadata) -> dict:
    api_version, kind = API[token]
    found = provider.env.kube.get(api_version, kind, metadata["name"],
                                  metadata.get("namespace"))
    assert found is not None, f"{kind} {metadata['name']} is not in the cluster"
    return found


def by_address(program) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for r in program.resources:
        out.setdefault(r.address, {})[r.cls] = r
    return out


def subset(declared: dict, live: dict) -> bool:
    return all(live.get(k) == v for k, v in declared.items())


# -- the exported resources are the live objects ----------------------------------------

def test_each_kind_exports_the_objects_its_create_made_with_their_import_ids(
        program, provider, state):
    found = by_address(program)
    assert {a: sorted(r) for a, r in found.items()} == {
        "training_cluster.gpu": ["Namespace", "ResourceQuota"],
        "endpoint.fraud": ["Deployment", "HorizontalPodAutoscaler", "Service"],
        "endpoint.plain": ["Deployment", "Service"],
        "monitor.drift": ["CronJob"]}
    # the data, the model registry: nothing Kubernetes declares; their notes say so
    assert any(n.startswith("dataset.tx:") for n in program.notes)
    assert any(n.startswith("model.fraud:") for n in program.notes)
    for r in program.resources:
        meta = dict(r.args["metadata"])
        if isinstance(meta.get("namespace"), PulumiRef):
            ref = meta["namespace"]
            namespace = next(x for x in program.resources if x.name == ref.name)
            assert (namespace.cls, ref.attr) == ("Namespace", "metadata.name")
            meta["namespace"] = namespace.args["metadata"]["name"]
        live = live_of(provider, r.token, meta)
        assert r.token.startswith("kubernetes:") and r.module.startswith("kubernetes.")
        assert subset(meta["labels"], live["metadata"]["labels"]), r.name
        assert subset(meta["annotations"], live["metadata"]["annotations"]), r.name
        assert meta["annotations"]["mlform.dev/address"] == r.address
        assert meta["labels"]["team"] == "fraud"             # the provider's labels
        want = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
        assert r.import_id == want
    # the main object carries mlform's record, which `mlform import` reads back
    for address in ("training_cluster.gpu", "monitor.drift"):
        main = program.resources[[r.address for r in program.resources].index(address)]
        assert json.loads(main.args["metadata"]["annotations"][ATTRIBUTES])
        assert f"{main.cls}/" in state.get(address).id


def test_replicas_image_ports_autoscaling_schedule_and_quota_match_the_cluster(
        program, provider):
    found = by_address(program)
    quota = found["training_cluster.gpu"]["ResourceQuota"]
    assert quota.args["metadata"]["namespace"] == PulumiRef(
        found["training_cluster.gpu"]["Namespace"].name, "metadata.name")
    live_quota = provider.env.kube.get("v1", "ResourceQuota", "mlform-gpus",
                                       found["training_cluster.gpu"]["Namespace"]
                                       .args["metadata"]["name"])
    assert quota.args["spec"]["hard"] == live_quota["spec"]["hard"] == {
        "requests.nvidia.com/gpu": "2", "requests.cpu": "8"}

    plain = found["endpoint.plain"]["Deployment"]
    live_plain = live_of(provider, plain.token, plain.args["metadata"])
    assert plain.args["spec"]["replicas"] == live_plain["spec"]["replicas"] == 2

    fraud = found["endpoint.fraud"]["Deployment"]
    live_fraud = live_of(provider, fraud.token, fraud.args["metadata"])
    assert "replicas" not in fraud.args["spec"] and "HorizontalPodAutoscaler" in fraud.comment
    [container] = fraud.args["spec"]["template"]["spec"]["containers"]
    [live_container] = live_fraud["spec"]["template"]["spec"]["containers"]
    assert container["image"] == live_container["image"] == "mlform:latest"
    assert container["ports"] == [{"name": "http", "container_port": 8080}]
    assert [(p["name"], p["containerPort"]) for p in live_container["ports"]] == [("http", 8080)]
    assert container["readiness_probe"]["http_get"]["path"] == \
        live_container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert fraud.args["spec"]["selector"]["match_labels"] == \
        live_fraud["spec"]["selector"]["matchLabels"]

    hpa = found["endpoint.fraud"]["HorizontalPodAutoscaler"]
    live_hpa = live_of(provider, hpa.token, hpa.args["metadata"])
    assert (hpa.args["spec"]["min_replicas"], hpa.args["spec"]["max_replicas"]) == \
        (live_hpa["spec"]["minReplicas"], live_hpa["spec"]["maxReplicas"]) == (1, 3)
    assert hpa.args["spec"]["scale_target_ref"]["name"] == fraud.args["metadata"]["name"]

    service = found["endpoint.fraud"]["Service"]
    live_service = live_of(provider, service.token, service.args["metadata"])
    assert service.args["spec"]["ports"] == [{"name": "http", "port": 80, "target_port": 8080}]
    assert service.args["spec"]["selector"] == live_service["spec"]["selector"]

    cron = found["monitor.drift"]["CronJob"]
    live_cron = live_of(provider, cron.token, cron.args["metadata"])
    assert cron.args["spec"]["schedule"] == live_cron["spec"]["schedule"] == "*/10 * * * *"
    assert cron.args["spec"]["suspend"] is live_cron["spec"]["suspend"] is False
    assert cron.args["spec"]["concurrency_policy"] == live_cron["spec"]["concurrencyPolicy"]


def test_pipelines_datasets_and_models_declare_nothing(provider, state):
    assert EXPORTED | set(NOT_EXPORTED) == set(provider.kinds)     # every kind decided
    for address in ("dataset.tx", "model.fraud"):
        recorded = state.get(address)
        obj = ExportObject(address, recorded.kind, recorded.name, dict(recorded.attributes),
                           id=recorded.id, recorded=dict(recorded.attributes))
        assert provider.pulumi_resources(obj) == []
    run = ExportObject("pipeline.train", "pipeline", "train", {"entrypoint": "train.py"})
    assert provider.pulumi_resources(run) == []


def test_an_object_the_plan_adds_has_no_import_id(provider, state):
    recorded = state.get("endpoint.plain")
    attrs = {**recorded.attributes, "autoscaling": {"min": 2, "max": 5}}
    found = {r.cls: r for r in provider.pulumi_resources(ExportObject(
        "endpoint.plain", "endpoint", "plain", attrs, id=recorded.id,
        recorded=dict(recorded.attributes)))}
    assert found["HorizontalPodAutoscaler"].import_id is None      # made by `pulumi up`
    assert found["Deployment"].import_id and found["Service"].import_id


# -- the program, run with the real pulumi_kubernetes classes ----------------------------

@pytest.fixture(scope="module")
def exported(stack, tmp_path_factory):
    """`mlform export pulumi --out DIR --import-file FILE`: (DIR, the import document)."""
    out = tmp_path_factory.mktemp("exported")
    done = mlform(stack, "export", "pulumi", "--out", out / "program",
                  "--import-file", out / "import.json")
    assert done.code == 0, done.output
    return out / "program", json.loads((out / "import.json").read_text())


@pytest.fixture(scope="module")
def registered(exported):
    return run_program(exported[0])


@needs_pulumi
def test_what_the_program_sends_is_every_live_object_field_for_field(
        registered, exported, provider, program):
    assert len(registered) == len(program.resources) == 8
    for r in registered:
        metadata = r.inputs["metadata"]
        live = live_of(provider, r.type, metadata)
        assert (r.inputs["apiVersion"], r.inputs["kind"]) == API[r.type]
        # mlform's own drift check: every field the program sets, as the live object has it
        assert differences(r.inputs, live) == [], r.name
        assert subset(metadata["annotations"], live["metadata"]["annotations"]), r.name
    # `pulumi import --file`: each object by the name the program gives it
    document = exported[1]
    assert sorted((e["type"], e["name"], e["id"]) for e in document["resources"]) == \
        sorted((r.token, r.name, r.import_id) for r in program.resources)


@needs_pulumi
def test_the_provider_labels_spelled_by_the_user_stay_as_written(registered):
    [deployment] = [r for r in registered if r.name == "endpoint.fraud-deployment"]
    labels = deployment.inputs["metadata"]["labels"]
    assert labels["tier"] == "gold" and labels["app.kubernetes.io/managed-by"] == "mlform"
    container = deployment.inputs["spec"]["template"]["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"      # snake_case went back


# -- values the program reads from config ---------------------------------------------

def _offline_provider(tmp_path) -> KubernetesProvider:
    """A provider no call of which reaches a cluster (export is pure)."""
    return KubernetesProvider(ProviderContext(
        name="kubernetes", alias=None, stack="s", env="e", stack_dir=tmp_path,
        config={"storage": "s3://b/{stack}", "namespace": "ml"}))


ENDPOINT = {"model": {"address": "model.m", "version": 3, "uri": "s3://b/m/"}, "replicas": 2}


@needs_pulumi
def test_a_sensitive_label_is_a_pulumi_secret_and_mlforms_record_is_left_out(tmp_path):
    from mlform.views import pulumi_program as view
    provider = _offline_provider(tmp_path)
    secret = PulumiInput("endpoint_x_tags_owner", secret=True, description="endpoint.x.tags.owner")
    found = provider.pulumi_resources(ExportObject(
        "endpoint.x", "endpoint", "x", {**ENDPOINT, "tags": {"owner": secret}}))
    deployment = found[0]
    assert deployment.args["metadata"]["labels"]["owner"] is secret
    assert ATTRIBUTES not in deployment.args["metadata"]["annotations"]
    assert "read from config" in deployment.comment
    (tmp_path / "__main__.py").write_text(view.main_py(header="t", resources=found, notes=[],
                                                      outputs={}, inputs=[secret]))
    (tmp_path / "Pulumi.yaml").write_text(view.pulumi_yaml(project="p", description="d",
                                                           inputs=[secret]))
    sent = run_program(tmp_path, secrets={secret.key: "alice"})
    # Pulumi marks the whole metadata secret: a secret inside makes its container one
    assert [r.inputs["metadata"]["secret"]["labels"]["owner"] for r in sent] == ["alice"] * 2


def test_a_value_inside_the_pods_json_or_a_number_cannot_come_from_config(tmp_path):
    provider = _offline_provider(tmp_path)
    unknown = PulumiInput("endpoint_x_model_uri", description="endpoint.x.model.uri: known "
                                                              "after `mlform apply`")
    attrs = {**ENDPOINT, "model": {**ENDPOINT["model"], "uri": unknown}}
    with pytest.raises(ProviderError) as caught:
        provider.pulumi_resources(ExportObject("endpoint.x", "endpoint", "x", attrs))
    assert "endpoint.x.model.uri" in caught.value.message
    assert "containers[0].env" in caught.value.message
    assert "mlform apply" in caught.value.hint
    # a new model version: a number in a label and in the pods' JSON
    version = PulumiInput("endpoint_x_model_version", description="endpoint.x.model.version")
    attrs = {**ENDPOINT, "model": {**ENDPOINT["model"], "version": version}}
    with pytest.raises(ProviderError, match="endpoint.x.model.version: its objects cannot be "
                                            "built without them"):
        provider.pulumi_resources(ExportObject("endpoint.x", "endpoint", "x", attrs))


# -- claims over a Pulumi stack export ---------------------------------------------------

def _entry(token: str, inputs: dict, outputs: dict | None = None) -> dict:
    name = inputs["metadata"]["name"]
    namespace = inputs["metadata"].get("namespace")
    return {"urn": f"urn:pulumi:dev::infra::{token}::{name}", "type": token,
            "id": f"{namespace}/{name}" if namespace else name, "custom": True,
            "inputs": inputs, "outputs": outputs or inputs}


def _foreign() -> list[dict]:
    """Objects mlform did not make, or has no equivalent for."""
    pods = {"app": "scoring"}
    return [
        _entry("kubernetes:apps/v1:Deployment", {
            "metadata": {"name": "scoring", "namespace": "default"},
            "spec": {"selector": {"matchLabels": pods},
                     "template": {"metadata": {"labels": pods}}}}),
        _entry("kubernetes:core/v1:Service", {
            "metadata": {"name": "scoring-svc", "namespace": "default"},
            "spec": {"selector": pods}}),
        _entry("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", {
            "metadata": {"name": "scoring-hpa", "namespace": "default"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "scoring"}}}),
        _entry("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole",
               {"metadata": {"name": "reader"}}),
        _entry("kubernetes:networking.k8s.io/v1:Ingress",
               {"metadata": {"name": "scoring", "namespace": "default"}}),
        _entry("kubernetes:core/v1:ConfigMap",
               {"metadata": {"name": "settings", "namespace": "default"}}),
        _entry("kubernetes:core/v1:Namespace", {"metadata": {"name": "apps"}}),
        _entry("kubernetes:core/v1:Namespace", {"metadata": {"name": "gpu-pool"}}),
        _entry("kubernetes:core/v1:ResourceQuota", {
            "metadata": {"name": "gpus", "namespace": "gpu-pool"},
            "spec": {"hard": {"requests.nvidia.com/gpu": "8"}}}),
    ]


def _stack_export(registered, provider) -> dict:
    """This stack's objects as Pulumi would hold them after `pulumi import`: the
    program's inputs, the live objects as outputs; plus another stack's copy of the
    CronJob and the foreign objects."""
    ours = [_entry(r.type, r.inputs, live_of(provider, r.type, r.inputs["metadata"]))
            for r in registered]
    cron = next(e for e in ours if e["type"] == "kubernetes:batch/v1:CronJob")
    theirs = json.loads(json.dumps(cron))
    theirs["urn"] += "-other"
    for side in ("inputs", "outputs"):
        theirs[side]["metadata"]["annotations"]["mlform.dev/stack"] = "someone-else"
    resources = [{"urn": "urn:pulumi:dev::infra::pulumi:pulumi:Stack::infra-dev",
                  "type": "pulumi:pulumi:Stack", "custom": False},
                 *ours, theirs, *_foreign()]
    return {"version": 3, "deployment": {"manifest": {}, "resources": resources}}


@needs_pulumi
def test_the_stacks_objects_are_claimed_with_the_ids_mlform_import_takes(
        registered, provider, state):
    document = _stack_export(registered, provider)
    claims = {c.urn: c for c in provider.pulumi_claims(
        [r for r in document["deployment"]["resources"] if r.get("custom")])}
    urn = {r["urn"]: r for r in document["deployment"]["resources"]}
    ours = {c.urn: c for c in claims.values() if not c.urn.endswith("-other")
            and urn[c.urn]["inputs"]["metadata"].get("annotations")}
    assert len(ours) == 8
    imports = {c.address: c.import_id for c in ours.values() if c.import_id}
    assert imports == {a: state.get(a).id for a in
                       ("training_cluster.gpu", "endpoint.fraud", "endpoint.plain",
                        "monitor.drift")}
    assert {c.kind for c in ours.values()} == {"training_cluster", "endpoint", "monitor"}
    assert all(c.address == urn[c.urn]["inputs"]["metadata"]["annotations"]
               ["mlform.dev/address"] for c in ours.values())
    # `mlform import ADDRESS ID` finds each one in the cluster
    for address, import_id in imports.items():
        live = provider.import_(address.split(".")[0], address, import_id)
        assert live is not None and live.id == import_id, address
    # another stack's object is not this stack's to take
    assert not any(c.urn.endswith("-other") for c in claims.values())


@needs_pulumi
def test_objects_made_outside_mlform_are_named_endpoints_and_the_rest_is_left(
        registered, provider):
    document = _stack_export(registered, provider)
    claims = provider.pulumi_claims([r for r in document["deployment"]["resources"]
                                     if r.get("custom")])
    foreign = {c.urn.rsplit("::", 1)[-1]: c for c in claims
               if "::kubernetes:" in c.urn and c.address == "endpoint.scoring"}
    assert sorted(foreign) == ["scoring", "scoring-hpa", "scoring-svc"]
    assert all(c.import_id is None for c in foreign.values())
    assert "write the endpoint block for endpoint.scoring" in foreign["scoring"].note
    assert "imports only objects it made" in foreign["scoring"].note
    # a namespace holding a GPU quota is a training cluster; one without is nothing
    pool = {c.urn.rsplit("::", 1)[-1]: c for c in claims
            if c.address == "training_cluster.gpu_pool"}
    assert sorted(pool) == ["gpu-pool", "gpus"]
    assert all(c.import_id is None and c.kind == "training_cluster" for c in pool.values())
    claimed = {c.urn for c in claims}
    for left in ("ClusterRole::reader", "Ingress::scoring", "ConfigMap::settings",
                 "Namespace::apps"):
        assert not any(u.endswith(left) for u in claimed), left


@needs_pulumi
def test_import_state_pulumi_proposes_the_imports(registered, provider, stack, tmp_path):
    path = tmp_path / "stack.json"
    path.write_text(json.dumps(_stack_export(registered, provider)))
    done = mlform(stack, "import-state", "pulumi", path, "--dir", stack, "--format", "json")
    assert done.code == 0, done.output
    proposal = json.loads(done.stdout)
    assert sorted(i["address"] for i in proposal["imports"]) == [
        "endpoint.fraud", "endpoint.plain", "monitor.drift", "training_cluster.gpu"]
    assert all(i["in_spec"] and i["managed"] for i in proposal["imports"])
    unmatched = {u["urn"].rsplit("::", 1)[-1] for u in proposal["unmatched"]}
    assert {"reader", "settings", "apps"} <= unmatched


def test_a_models_newest_version_is_the_one_imported(tmp_path):
    provider = _offline_provider(tmp_path)
    marks = {"mlform.dev/stack": "s", "mlform.dev/env": "e", "mlform.dev/address": "model.m"}

    def version(n: int, namespace: str = "ml") -> dict:
        return _entry("kubernetes:core/v1:ConfigMap", {"metadata": {
            "name": f"s-e-model-m-v{n}", "namespace": namespace, "annotations": marks,
            "labels": {"mlform.dev/model-version": str(n)}}})

    found = {c.urn.rsplit("::", 1)[-1]: c for c in provider.pulumi_claims(
        [version(1), version(3), version(2)])}
    assert {n: c.import_id for n, c in found.items()} == {
        "s-e-model-m-v1": None, "s-e-model-m-v3": "ml/s-e-model-m-v3", "s-e-model-m-v2": None}
    assert {c.kind for c in found.values()} == {"model"}
    [elsewhere] = provider.pulumi_claims([version(1, namespace="other")])
    assert elsewhere.import_id is None and 'namespace = "other"' in elsewhere.note


def test_field_names_are_spelled_as_pulumi_kubernetes_spells_them():
    """Every property of pulumi_kubernetes' classes: the API name -> the Python one."""
    sdk = pytest.importorskip("pulumi_kubernetes")
    getter = re.compile(r'@pulumi\.getter\(name="([^"]+)"\)\s*\n\s*def (\w+)\(')
    plain = re.compile(r'@pulumi\.getter\s*\n\s*def (\w+)\(')
    named, same = set(), set()
    for source in Path(sdk.__file__).parent.rglob("*.py"):
        text = source.read_text()
        named.update(getter.findall(text))
        same.update(plain.findall(text))
    assert len(named) > 500
    assert [(api, py) for api, py in named if python_name(api) != py] == []
    assert [name for name in same if python_name(name) != name] == []
