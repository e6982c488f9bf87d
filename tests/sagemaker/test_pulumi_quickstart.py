"""The quickstart on SageMaker exported as a Pulumi program, through the CLI: the program
`mlform export pulumi` writes runs under Pulumi's unit-test mocks, and what it registers
agrees with the mlform plan of the same stack and with the objects in the emulator; the
bulk-import file names those objects by the program's logical names; `import-state` of an
export made of them proposes the quickstart's own addresses.
"""

from __future__ import annotations

import json

from tests._pulumi import needs_pulumi, run_program
from .test_quickstart_e2e import _endpoint_name, mlform, stack  # noqa: F401  (stack: the fixture)

pytestmark = needs_pulumi


def _plan(stack, aws) -> dict:
    done = mlform(stack, aws, "plan", "--format", "json")
    assert done.code == 0, done
    return {c["address"]: c["change"]["after"] for c in done.json()["resource_changes"]}


def test_the_quickstart_exports_a_program_that_agrees_with_the_plan(stack, aws, tmp_path):
    assert mlform(stack, aws, "apply", "--auto-approve").code == 0
    out, import_file = tmp_path / "program", tmp_path / "import.json"
    done = mlform(stack, aws, "export", "pulumi", "--out", out, "--import-file", import_file)
    assert done.code == 0, done
    assert "Wrote a Pulumi program of" in done.output
    plan = _plan(stack, aws)
    found = run_program(out)
    by_type: dict[str, list] = {}
    for r in found:
        by_type.setdefault(r.type, []).append(r)

    sm = aws.client("sagemaker")
    name = _endpoint_name(aws)
    live = sm.describe_endpoint(EndpointName=name)
    live_config = sm.describe_endpoint_config(EndpointConfigName=live["EndpointConfigName"])
    [endpoint] = by_type["aws:sagemaker/endpoint:Endpoint"]
    [config] = by_type["aws:sagemaker/endpointConfiguration:EndpointConfiguration"]
    assert endpoint.inputs["name"] == name
    assert endpoint.inputs["endpointConfigName"] == config.inputs["name"] == \
        live["EndpointConfigName"]
    # tags: the spec's and the ownership marks, as on the live endpoint
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=live["EndpointArn"])["Tags"]}
    assert endpoint.inputs["tags"] == tags
    assert tags["name"] == plan["endpoint.fraud"]["tags"]["name"]
    assert tags["mlform:address"] == "endpoint.fraud"
    # the production variant: instance type and count as the plan and the emulator say
    [variant] = config.inputs["productionVariants"]
    [live_variant] = live_config["ProductionVariants"]
    assert variant["initialInstanceCount"] == plan["endpoint.fraud"]["replicas"] == \
        live_variant["InitialInstanceCount"]
    assert variant["instanceType"] == live_variant["InstanceType"]
    assert variant["variantName"] == live_variant["VariantName"]
    assert variant["initialVariantWeight"] == live_variant["InitialVariantWeight"]
    assert config.inputs["dataCaptureConfig"]["initialSamplingPercentage"] == \
        plan["endpoint.fraud"]["capture"]["sample_percent"]
    # the model the variant serves is the exported Model, named as in the emulator
    [model] = by_type["aws:sagemaker/model:Model"]
    assert variant["modelName"] == model.inputs["name"] == live_variant["ModelName"]
    [group] = by_type["aws:sagemaker/modelPackageGroup:ModelPackageGroup"]
    assert group.inputs["tags"]["mlform:address"] == "model.fraud"
    # the pipeline is a comment and an output; the model URI is the state's
    program = (out / "__main__.py").read_text()
    assert f'pulumi.export("pipeline_train_model_uri", "{plan["pipeline.train"]["model_uri"]}")' \
        in program
    assert "aws:sagemaker/trainingJob" not in {r.type for r in found}
    # the bulk-import file: every entry a resource of the program, by its logical name
    doc = json.loads(import_file.read_text())
    names = {(r.type, r.name) for r in found}
    assert doc["resources"] and all((e["type"], e["name"]) in names for e in doc["resources"])
    ids = {e["type"]: e["id"] for e in doc["resources"]}
    assert ids["aws:sagemaker/endpoint:Endpoint"] == name
    assert ids["aws:sagemaker/endpointConfiguration:EndpointConfiguration"] == \
        live["EndpointConfigName"]
    assert (out / "requirements.txt").read_text().splitlines() == [
        "pulumi==3.272.0", "pulumi-aws==7.51.1"]

    # the same objects as a Pulumi stack export: import-state finds the quickstart's
    # addresses, all already managed by this state
    export = {"version": 3, "deployment": {"resources": [
        {"urn": f"urn:pulumi:prod::p::{r.type}::{r.name}", "type": r.type, "custom": True,
         "id": ids.get(r.type, r.name), "inputs": r.inputs, "outputs": r.inputs}
        for r in found]}}
    (tmp_path / "stack.json").write_text(json.dumps(export))
    proposed = mlform(stack, aws, "import-state", "pulumi", tmp_path / "stack.json",
                      "--dir", stack, "--format", "json")
    assert proposed.code == 0, proposed
    imports = {i["address"]: i for i in proposed.json()["imports"]}
    assert imports["endpoint.fraud"]["id"] == name
    assert all(i["managed"] and i["in_spec"] for i in imports.values())
