"""The quickstart stack on SageMaker, end to end through the CLI, against the emulator.

The same `stacks/quickstart` that runs on the local provider is applied with an
environment whose default provider is `sagemaker` (a copy of
environments/sagemaker.hcl that polls fast).  Every AWS call goes over HTTP to moto in
server mode (tests/emulator); out-of-band changes are made with boto3, as an operator
would make them.  Training jobs do not run code in the emulator: they complete with the
metrics the test asks for (`training_metrics`).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _waiting import wait_until
from e2e.harness import CLI, Run, cli_env
from fixture import AWS_ENV, REGION, ROLE_ARN
from local._cli import REPO, copy_stack

BUCKET = "mlform-quickstart"
ENV = "emu"


def _env_file(url: str) -> str:
    text = (REPO / "stacks" / "quickstart" / "environments" / "sagemaker.hcl").read_text()
    # the shipped environment, told to poll the emulator every 10 ms instead of 15 s
    return text.replace("  endpoint_url = var.aws_endpoint_url\n",
                        "  endpoint_url = var.aws_endpoint_url\n  poll_seconds = 0.01\n")


@pytest.fixture
def stack(tmp_path, aws):
    directory = copy_stack(REPO / "stacks" / "quickstart", tmp_path / "quickstart")
    subprocess.run([sys.executable, str(directory / "make_data.py")], check=True,
                   cwd=directory, capture_output=True)
    (directory / "environments" / f"{ENV}.hcl").write_text(_env_file(aws.url))
    aws.client("s3").create_bucket(Bucket=BUCKET)
    aws.control(training_metrics={"accuracy": 0.93})
    return directory


def _vars(aws) -> dict:
    return {**AWS_ENV, "MLFORM_VAR_aws_region": REGION, "MLFORM_VAR_sagemaker_role_arn": ROLE_ARN,
            "MLFORM_VAR_sagemaker_bucket": BUCKET, "MLFORM_VAR_aws_endpoint_url": aws.url}


def mlform(stack: Path, aws, *args, timeout: float = 300) -> Run:
    proc = subprocess.run([*CLI, "-C", str(stack), *map(str, args), "--env", ENV],
                          env=cli_env(_vars(aws)), input="", capture_output=True, text=True,
                          timeout=timeout)
    return Run(tuple(args), proc.returncode, proc.stdout, proc.stderr)


def _endpoint_name(aws) -> str:
    names = [e["EndpointName"] for e in aws.client("sagemaker").list_endpoints()["Endpoints"]]
    assert len(names) == 1, names
    return names[0]


def _actions(calls, *wanted):
    return [c for c in calls if c["action"] in wanted]


def test_apply_then_plan_is_a_no_op_with_zero_mutating_calls(stack, aws):
    applied = mlform(stack, aws, "apply", "--auto-approve")
    assert applied.code == 0, applied
    assert "Apply complete!" in applied.output
    sm = aws.client("sagemaker")
    endpoint = sm.describe_endpoint(EndpointName=_endpoint_name(aws))
    assert endpoint["EndpointStatus"] == "InService"
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    assert config["DataCaptureConfig"]["EnableCapture"] is True
    outputs = mlform(stack, aws, "output", "--json").json()
    assert outputs["endpoint_url"]["value"].endswith(f"/endpoints/{endpoint['EndpointName']}/invocations")
    assert outputs["accuracy"]["value"] == pytest.approx(0.93)

    aws.clear_calls()
    plan = mlform(stack, aws, "plan", "--detailed-exitcode")
    assert plan.code == 0, plan
    assert "No changes." in plan.output
    assert aws.mutating_calls() == []
    assert aws.calls(), "the plan must have read the live objects"


def test_out_of_band_changes_are_drift_and_apply_heals_them(stack, aws):
    assert mlform(stack, aws, "apply", "--auto-approve").code == 0
    sm = aws.client("sagemaker")
    name = _endpoint_name(aws)
    arn = sm.describe_endpoint(EndpointName=name)["EndpointArn"]

    # a tag changed and the variant weights shifted, by hand
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "name", "Value": "hand-edited"}])
    variant = sm.describe_endpoint(EndpointName=name)["ProductionVariants"][0]["VariantName"]
    sm.update_endpoint_weights_and_capacities(
        EndpointName=name, DesiredWeightsAndCapacities=[{"VariantName": variant,
                                                          "DesiredWeight": 0.25}])
    drift = mlform(stack, aws, "drift")
    assert drift.code == 2, drift
    assert "endpoint.fraud" in drift.output
    assert "tags" in drift.output and "traffic" in drift.output

    healed = mlform(stack, aws, "apply", "--auto-approve")
    assert healed.code == 0, healed
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}
    assert tags["name"] == "fraud-emu-endpoint"
    weights = [v.get("DesiredWeight", v.get("CurrentWeight"))
               for v in sm.describe_endpoint(EndpointName=name)["ProductionVariants"]]
    assert weights == [1.0]
    assert mlform(stack, aws, "drift").code == 0

    # the endpoint deleted outside mlform
    sm.delete_endpoint(EndpointName=name)
    drift = mlform(stack, aws, "drift")
    assert drift.code == 2, drift
    assert "endpoint.fraud" in drift.output and "deleted" in drift.output
    assert mlform(stack, aws, "apply", "--auto-approve").code == 0
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
    assert mlform(stack, aws, "drift").code == 0


def test_model_update_rolls_out_through_update_endpoint_with_a_canary(stack, aws):
    assert mlform(stack, aws, "apply", "--auto-approve").code == 0
    sm = aws.client("sagemaker")
    name = _endpoint_name(aws)
    old_config = sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    aws.control(steps={"endpoint": 3, "training_job": 2})
    aws.clear_calls()

    plan = mlform(stack, aws, "plan", "--var", "epochs=7")
    assert plan.code == 0, plan
    assert "pipeline.train" in plan.output and "endpoint.fraud" in plan.output

    applied = mlform(stack, aws, "apply", "--auto-approve", "--var", "epochs=7")
    assert applied.code == 0, applied
    calls = aws.calls()
    assert len(_actions(calls, "CreateTrainingJob")) == 1
    assert len(_actions(calls, "CreateEndpoint")) == 0
    updates = [i for i, c in enumerate(calls) if c["action"] == "UpdateEndpoint"]
    assert len(updates) == 1
    deletes = [i for i, c in enumerate(calls)
               if c["action"] == "DeleteEndpointConfig" and c.get("name") == old_config]
    assert len(deletes) == 1
    between = calls[updates[0]:deletes[0]]
    statuses = [c.get("status") for c in between if c["action"] == "DescribeEndpoint"]
    assert "Updating" in statuses and statuses[-1] == "InService", statuses

    endpoint = sm.describe_endpoint(EndpointName=name)
    assert endpoint["EndpointConfigName"] != old_config
    routing = endpoint["LastDeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing["Type"] == "CANARY"
    assert routing["CanarySize"] == {"Type": "CAPACITY_PERCENT", "Value": 10}
    outputs = mlform(stack, aws, "output", "--json").json()
    assert outputs["model_version"]["value"] == 2


def test_a_failed_training_job_fails_the_apply_with_its_failure_reason(stack, aws):
    aws.control(fail_training={"train": "AlgorithmError: loss is NaN at epoch 3"})
    applied = mlform(stack, aws, "apply", "--auto-approve")
    assert applied.code == 1, applied
    assert "pipeline.train" in applied.output
    assert "AlgorithmError: loss is NaN at epoch 3" in applied.output
    assert "Traceback" not in applied.output
    sm = aws.client("sagemaker")
    assert sm.list_endpoints()["Endpoints"] == []      # nothing downstream was attempted


def test_a_crash_after_create_training_job_adopts_the_job(stack, aws):
    # the job stays InProgress for 100 describes (a script fixed when it is created), so
    # the kill lands while it runs and the next apply finds it still running
    aws.control(steps={"training_job": 100})
    proc = subprocess.Popen([*CLI, "-C", str(stack), "apply", "--auto-approve", "--env", ENV],
                            env=cli_env(_vars(aws)), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def training_job_created() -> bool:
            assert proc.poll() is None, proc.communicate()
            return bool(_actions(aws.calls(), "CreateTrainingJob"))

        wait_until(training_job_created, 120, "the apply to call CreateTrainingJob")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    again = mlform(stack, aws, "apply", "--auto-approve")
    assert again.code == 0, again
    jobs = aws.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    assert len(jobs) == 1, jobs
    assert len(_actions(aws.calls(), "CreateTrainingJob")) == 1
