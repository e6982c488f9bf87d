"""The exported Pulumi program as the engine writes it (`pulumi_export.program_of`,
`views.pulumi_program`): run under Pulumi's mocks, importable, one fixed layout; the
values the engine takes out of the attributes (sensitive ones, unknown ones) read from
config; the bulk-import document; and import-state's reading of a stack export.

The providers' own mappings are tested against the emulator (tests/sagemaker) and the
test cluster (tests/k8s); here the resources are written by hand.
"""

from __future__ import annotations

import ast
import json
import py_compile
import subprocess
import sys

import pytest

from mlform.diagnostics import DiagnosticError
from mlform.providers.base import (
    UNKNOWN, ExportObject, PulumiAsset, PulumiClaim, PulumiInput, PulumiRef, PulumiResource,
)
from mlform.pulumi_export import _with_inputs, config_key, program_of
from mlform.pulumi_import import propose, read_export
from mlform.views import pulumi_program as view
from tests._pulumi import needs_pulumi, run_program

MODEL = PulumiResource(
    module="aws.sagemaker", cls="Model", token="aws:sagemaker/model:Model", name="fraud-model-3",
    address="model.fraud", import_id="qs-fraud-3",
    args={"name": "qs-fraud-3", "execution_role_arn": "arn:aws:iam::123456789012:role/r",
          "primary_container": {"image": "img:1", "model_data_url": "s3://b/model.tar.gz",
                                "environment": {"API_KEY": PulumiInput("model_fraud_key",
                                                                       secret=True)}},
          "tags": {"mlform:address": "model.fraud"}})
CONFIG = PulumiResource(
    module="aws.sagemaker", cls="EndpointConfiguration",
    token="aws:sagemaker/endpointConfiguration:EndpointConfiguration", name="fraud-config",
    address="endpoint.fraud", import_id=None,
    args={"name": "qs-fraud-1a2b", "production_variants": [
        {"variant_name": "primary", "model_name": PulumiRef("fraud-model-3", "name"),
         "initial_instance_count": 2, "instance_type": "ml.m5.large",
         "initial_variant_weight": 1.0}]},
    comment="Immutable: mlform names each configuration by a hash of its body.")
DATA = PulumiResource(
    module="aws.s3", cls="BucketObjectv2", token="aws:s3/bucketObjectv2:BucketObjectv2",
    name="transactions-csv", address="dataset.transactions", import_id="b/datasets/x.csv",
    args={"bucket": "b", "key": "datasets/x.csv", "source": PulumiAsset("data/x.csv")})
DEPLOY = PulumiResource(
    module="kubernetes.apps.v1", cls="Deployment", token="kubernetes:apps/v1:Deployment",
    name="fraud-deployment", address="endpoint.fraud", import_id="default/qs-fraud",
    depends_on=("transactions-csv",),
    args={"metadata": {"name": "qs-fraud", "namespace": "default",
                       "labels": {"mlform.dev/address": "endpoint.fraud"}},
          "spec": {"replicas": PulumiInput("endpoint_fraud_replicas"),
                   "selector": {"match_labels": {"app": "fraud"}},
                   "template": {"metadata": {"labels": {"app": "fraud"}},
                                "spec": {"containers": [{"name": "server", "image": "mlform",
                                                         "ports": [{"container_port": 8080}]}]}}}})


class Canned:
    """A provider answering with fixed resources (the engine's side is under test)."""

    name = "canned"

    def __init__(self, by_address):
        self.by_address = by_address
        self.seen: list[ExportObject] = []

    def pulumi_resources(self, obj):
        self.seen.append(obj)
        return self.by_address.get(obj.address, [])

    def pulumi_claims(self, resources):
        return [PulumiClaim(urn=r["urn"], address="endpoint.fraud", kind="endpoint",
                            import_id=r["id"] if r["type"].endswith(":Endpoint") else None,
                            note="tagged")
                for r in resources if r["type"].startswith("aws:sagemaker/")]


def write(tmp_path, program):
    out = tmp_path / "prog"
    out.mkdir()
    (out / "__main__.py").write_text(view.main_py(
        header="test", resources=program.resources, notes=program.notes,
        outputs=program.outputs, inputs=program.inputs))
    (out / "Pulumi.yaml").write_text(view.pulumi_yaml(project=program.project,
                                                      description="t", inputs=program.inputs))
    (out / "requirements.txt").write_text(view.requirements_txt(program.packages))
    return out


def objects(provider):
    return [(provider, ExportObject(address=a, kind=a.split(".")[0], name=a.split(".")[1],
                                    attributes=attrs))
            for a, attrs in [("dataset.transactions", {}), ("pipeline.train",
                             {"run_id": "train-1", "model_uri": "s3://b/model.tar.gz"}),
                             ("model.fraud", {}), ("endpoint.fraud", {}), ("monitor.drift", {})]]


def the_program(tmp_path):
    provider = Canned({"dataset.transactions": [DATA], "model.fraud": [MODEL],
                       "endpoint.fraud": [CONFIG, DEPLOY]})
    program = program_of(project="qs-sagemaker", stack="qs", env="sagemaker",
                         objects=objects(provider))
    return program, write(tmp_path, program)


def test_the_program_is_python_in_one_layout_with_notes_and_config(tmp_path):
    program, out = the_program(tmp_path)
    py_compile.compile(str(out / "__main__.py"), doraise=True)
    text = (out / "__main__.py").read_text()
    ast.parse(text)
    assert max(len(line) for line in text.splitlines()) <= view.WIDTH
    # the referring resource after the one it refers to, by a Python reference
    assert text.index("fraud_model_3 = aws.sagemaker.Model(") < \
        text.index("fraud_config = aws.sagemaker.EndpointConfiguration(")
    assert '"model_name": fraud_model_3.name' in text
    assert 'config.require_secret("model_fraud_key")' in text
    assert 'config.require("endpoint_fraud_replicas")' in text
    assert 'pulumi.FileAsset("data/x.csv")' in text
    assert "    opts=pulumi.ResourceOptions(depends_on=[transactions_csv]),\n)" in text
    assert "#   pulumi config set --secret model_fraud_key ..." in text
    assert "# Immutable: mlform names each configuration by a hash of its body." in text
    # pipelines are comments and an output; kinds with nothing to declare are comments
    comments = " ".join(line[2:] for line in text.splitlines() if line.startswith("# "))
    assert "pipeline.train: a pipeline run (a fact, not infrastructure): run train-1 " \
           "produced s3://b/model.tar.gz." in comments
    assert 'pulumi.export("pipeline_train_model_uri", "s3://b/model.tar.gz")' in text
    assert "monitor.drift: the canned provider makes nothing Pulumi declares for a " \
           "monitor; it stays with mlform." in comments
    assert (out / "requirements.txt").read_text() == \
        "pulumi==3.272.0\npulumi-aws==7.51.1\npulumi-kubernetes==4.34.2\n"
    yaml_text = (out / "Pulumi.yaml").read_text()
    assert "  model_fraud_key:\n    type: string\n" in yaml_text and "    secret: true" in yaml_text
    # the same export twice is the same file
    again = view.main_py(header="test", resources=program.resources, notes=program.notes,
                         outputs=program.outputs, inputs=program.inputs)
    assert again == text


@needs_pulumi
def test_the_program_runs_under_pulumis_mocks_with_secrets_marked(tmp_path):
    _, out = the_program(tmp_path)
    found = run_program(out, config={"endpoint_fraud_replicas": "2"},
                        secrets={"model_fraud_key": "s3cr3t"})
    by_name = {r.name: r for r in found}
    # (Pulumi registers concurrently: the order is not the program's)
    assert sorted((r.type, r.name) for r in found) == [
        ("aws:s3/bucketObjectv2:BucketObjectv2", "transactions-csv"),
        ("aws:sagemaker/endpointConfiguration:EndpointConfiguration", "fraud-config"),
        ("aws:sagemaker/model:Model", "fraud-model-3"),
        ("kubernetes:apps/v1:Deployment", "fraud-deployment")]
    container = by_name["fraud-model-3"].inputs["primaryContainer"]
    # a secret input makes the whole container secret, the value inside as set
    assert container == {"secret": {"image": "img:1", "modelDataUrl": "s3://b/model.tar.gz",
                                     "environment": {"API_KEY": "s3cr3t"}}}
    variant = by_name["fraud-config"].inputs["productionVariants"][0]
    assert variant["modelName"] == "qs-fraud-3" and variant["initialInstanceCount"] == 2
    spec = by_name["fraud-deployment"].inputs["spec"]
    assert spec["replicas"] == "2" and spec["selector"] == {"matchLabels": {"app": "fraud"}}
    # the secret is nowhere in the program
    assert "s3cr3t" not in (out / "__main__.py").read_text()


def test_the_bulk_import_document_names_existing_objects_by_logical_name(tmp_path):
    program, _ = the_program(tmp_path)
    doc = view.import_document(program.resources)
    assert doc == {"resources": [
        {"type": "aws:s3/bucketObjectv2:BucketObjectv2", "name": "transactions-csv",
         "id": "b/datasets/x.csv"},
        {"type": "aws:sagemaker/model:Model", "name": "fraud-model-3", "id": "qs-fraud-3"},
        {"type": "kubernetes:apps/v1:Deployment", "name": "fraud-deployment",
         "id": "default/qs-fraud"}]}
    for entry in doc["resources"]:   # Pulumi's documented shape: type, name, id (strings)
        assert set(entry) == {"type", "name", "id"} and all(isinstance(v, str)
                                                            for v in entry.values())


def test_sensitive_and_unknown_values_become_config_inputs():
    attrs = {"environment": {"API_KEY": "hunter2", "MODE": "fast"}, "url": UNKNOWN,
             "replicas": 2}
    got = _with_inputs("endpoint.fraud", attrs, {("environment", "API_KEY")})
    assert got["environment"]["API_KEY"] == PulumiInput(
        "endpoint_fraud_environment_API_KEY", secret=True,
        description="endpoint.fraud.environment.API_KEY (sensitive in the mlform spec)")
    assert got["environment"]["MODE"] == "fast" and got["replicas"] == 2
    assert got["url"] == PulumiInput("endpoint_fraud_url",
                                     description="endpoint.fraud.url: known after `mlform apply`")
    assert config_key('module.a.endpoint.e["x y"]', ["variants", 0]) == \
        "module_a_endpoint_e_x_y_variants_0"


def test_a_provider_naming_two_resources_alike_or_referring_outside_is_refused():
    twice = Canned({"model.fraud": [MODEL], "endpoint.fraud": [MODEL]})
    with pytest.raises(DiagnosticError, match="Two Pulumi resources are both named"):
        program_of(project="p", stack="s", env="e", objects=objects(twice))
    dangling = Canned({"endpoint.fraud": [CONFIG]})
    with pytest.raises(DiagnosticError, match="refers to 'fraud-model-3', which the export"):
        program_of(project="p", stack="s", env="e", objects=objects(dangling))


STACK_EXPORT = {
    "version": 3,
    "deployment": {"manifest": {}, "resources": [
        {"urn": "urn:pulumi:dev::p::pulumi:pulumi:Stack::p-dev", "type": "pulumi:pulumi:Stack",
         "custom": False},
        {"urn": "urn:pulumi:dev::p::pulumi:providers:aws::default", "custom": True,
         "type": "pulumi:providers:aws", "id": "x"},
        {"urn": "urn:pulumi:dev::p::aws:sagemaker/endpoint:Endpoint::fraud", "custom": True,
         "type": "aws:sagemaker/endpoint:Endpoint", "id": "qs-sagemaker-fraud"},
        {"urn": "urn:pulumi:dev::p::aws:sagemaker/endpointConfiguration:"
                "EndpointConfiguration::cfg", "custom": True,
         "type": "aws:sagemaker/endpointConfiguration:EndpointConfiguration", "id": "c"},
        {"urn": "urn:pulumi:dev::p::aws:iam/role:Role::exec", "custom": True,
         "type": "aws:iam/role:Role", "id": "exec"}]}}


def test_import_state_proposes_imports_parts_and_what_has_no_equivalent(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(STACK_EXPORT))
    found = propose(str(path), read_export(path), [Canned({})], blocks={"endpoint.fraud"},
                    managed=set())
    [item] = found.imports
    assert (item.address, item.id, item.command, item.in_spec, item.managed) == (
        "endpoint.fraud", "qs-sagemaker-fraud", "mlform import endpoint.fraud qs-sagemaker-fraud",
        True, False)
    assert [(p.type, p.address) for p in found.parts] == [
        ("aws:sagemaker/endpointConfiguration:EndpointConfiguration", "endpoint.fraud")]
    assert [u.type for u in found.unmatched] == ["aws:iam/role:Role"]
    assert found.pulumi_internal == 2


@pytest.mark.parametrize("text,message", [
    ("{\n  \"version\": 3,\n  oops\n}", r"is not JSON: Expecting property name"),
    ('{"version": 3}', r"is not a Pulumi stack export: deployment: Field required"),
    ('{"version": 3, "deployment": {"resources": [{"type": "x"}]}}',
     r"deployment\.resources\.0\.urn: Field required"),
])
def test_a_file_that_is_not_a_stack_export_is_a_diagnostic(tmp_path, text, message):
    path = tmp_path / "export.json"
    path.write_text(text)
    with pytest.raises(DiagnosticError, match=message) as caught:
        read_export(path)
    assert caught.value.diagnostics[0].hint.startswith("Give the output of `pulumi stack export")
    if "oops" in text:
        assert f"at {path}:3:3" in caught.value.diagnostics[0].detail


@needs_pulumi
def test_the_requirements_install_in_a_fresh_venv_and_run_the_program(tmp_path):
    """The exported requirements.txt alone is enough: a new venv (no mlform, no pytest)
    installs it from the package index and runs the program under the mocks (about 30 s
    with pip's cache warm, which `make test`'s install of the `pulumi` extra makes it)."""
    _, out = the_program(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    done = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "-r", str(out / "requirements.txt")],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    found = run_program(out, config={"endpoint_fraud_replicas": "2"},
                        secrets={"model_fraud_key": "s3cr3t"}, python=python)
    assert len(found) == 4 and {r.type.split(":")[0] for r in found} == {"aws", "kubernetes"}


def test_a_recognised_object_without_an_import_id_is_to_recreate(tmp_path):
    class Unmarked:
        def pulumi_claims(self, resources):
            return [PulumiClaim(urn=r["urn"], address="endpoint.scoring", kind="endpoint",
                                note="made outside mlform") for r in resources
                    if r["type"] == "aws:sagemaker/endpoint:Endpoint"]

    path = tmp_path / "export.json"
    path.write_text(json.dumps(STACK_EXPORT))
    found = propose(str(path), read_export(path), [Unmarked()], blocks=set(), managed=set())
    assert found.imports == [] and found.parts == []
    [again] = found.recreate
    assert (again.address, again.kind, again.note) == ("endpoint.scoring", "endpoint",
                                                       "made outside mlform")
    from mlform.views.pulumi_import import render_proposal
    text = render_proposal(found)
    assert "fraud (aws:sagemaker/endpoint:Endpoint) -> endpoint.scoring: made outside mlform" \
        in text
    assert text.endswith("0 to import, 0 coming along, 1 to re-create, 2 without an "
                         "equivalent, 2 of Pulumi's own skipped.")
