"""The `sagemaker` provider's half of `mlform import-state pulumi`: which resources of a
``pulumi stack export`` are objects it manages (`Provider.pulumi_claims`).

The kit (`kit.pulumi_claims`) does the claiming; this module says, per pulumi_aws
type, the mlform kind, which type an ``mlform import`` takes (with the id `read`
accepts) and how an unmarked part finds the object it belongs to:

| Pulumi type | kind | import id | unmarked |
| --- | --- | --- | --- |
| `aws:sagemaker/endpoint:Endpoint` | endpoint | its name (read takes any endpoint by name) | offered as ``endpoint.<name>`` |
| `aws:sagemaker/endpointConfiguration:EndpointConfiguration` | endpoint | part | of the endpoint serving it |
| `aws:sagemaker/model:Model` | model (endpoint: its own Model) | part | of the config's endpoint |
| `aws:sagemaker/modelPackageGroup:ModelPackageGroup` | model | the newest package ARN a Model of the document serves, else the group's name | to re-create: mlform finds a model by its own group name |
| `aws:appautoscaling/target:Target`, `.../policy:Policy` | endpoint | part | of the endpoint in the resource id |
| `aws:cloudwatch/metricAlarm:MetricAlarm` | monitor, or endpoint (canary alarms) | part | not claimed |
| `aws:scheduler/schedule:Schedule` | monitor | part (owner named in the description: schedules take no tags) | not claimed |
| `aws:sagemaker/pipeline:Pipeline` | monitor | the drift check's name (a pipeline's own: part) | not claimed |
| `aws:s3/bucketObjectv2:BucketObjectv2` | dataset, training_cluster | the first object's ``s3://`` URI (read finds the rest by address) | a monitor's scripts: of its check pipeline |

Objects marked for another stack or environment are left alone, as are IAM roles,
VPCs and everything else with no mlform equivalent.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from mlform.providers.base import PulumiClaim
from mlform.providers.kit.names import Owner
from mlform.providers.kit.pulumi_claims import (
    ClaimRule, address_kind, claim_resources, field, logical_name, tag_owner,
)

from .env import SageMakerEnv
from .models import is_package_arn

__all__ = ["pulumi_claims"]

Resource = Mapping[str, Any]

ENDPOINT = "aws:sagemaker/endpoint:Endpoint"
CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
MODEL = "aws:sagemaker/model:Model"
GROUP = "aws:sagemaker/modelPackageGroup:ModelPackageGroup"
PIPELINE = "aws:sagemaker/pipeline:Pipeline"
OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
SCHEDULE = "aws:scheduler/schedule:Schedule"

#: what `monitors.MonitorHandler._owner_text` writes into a schedule's description
_SCHEDULE_OWNER = re.compile(r"^mlform stack=(\S+) env=(\S+) address=(.+)$")
_MONITOR_CODE = re.compile(r"/monitors/[^/]*-([0-9a-f]{8})/code/[^/]+$")


def _owner(resource: Resource) -> Owner | None:
    """The owner a resource's tags name; a schedule's, its description."""
    found = tag_owner(resource)
    if found is None and resource.get("type") == SCHEDULE:
        match = _SCHEDULE_OWNER.match(str(field(resource, "description") or ""))
        if match:
            found = Owner(*match.groups())
    return found


def _name(resource: Resource) -> str:
    """The AWS name of a resource (what an address made from its name is made of)."""
    for key in ("name", "modelPackageGroupName", "pipelineName"):
        if isinstance(found := field(resource, key), str) and found:
            return found
    return logical_name(str(resource["urn"]))


def _of_type(resources: Sequence[Resource], token: str) -> list[Resource]:
    return [r for r in resources if r.get("type") == token]


def _serving(resource: Resource, resources: Sequence[Resource]) -> Resource | None:
    """The endpoint using a config, or the config serving a Model."""
    name = field(resource, "name")
    if resource.get("type") == CONFIG:
        return next((e for e in _of_type(resources, ENDPOINT)
                     if field(e, "endpointConfigName") == name), None)
    return next((c for c in _of_type(resources, CONFIG)
                 for key in ("productionVariants", "shadowProductionVariants")
                 for v in field(c, key) or [] if isinstance(v, Mapping)
                 and v.get("modelName") == name), None)


def _scaled(resource: Resource, resources: Sequence[Resource]) -> Resource | None:
    """The endpoint an autoscaling target or policy scales (its resource id)."""
    match = re.match(r"^endpoint/([^/]+)/variant/", str(field(resource, "resourceId") or ""))
    return next((e for e in _of_type(resources, ENDPOINT)
                 if match and field(e, "name") == match.group(1)), None)


def _checked(resource: Resource, resources: Sequence[Resource]) -> Resource | None:
    """The check pipeline a monitor's script belongs to (the address hash both carry)."""
    match = _MONITOR_CODE.search(str(field(resource, "key") or ""))
    return next((p for p in _of_type(resources, PIPELINE)
                 if match and str(field(p, "pipelineName") or "").endswith(
                     f"-{match.group(1)}-check")), None)


def _newest_package(resources: Sequence[Resource]) -> dict[str, str]:
    """Group name -> the newest model package ARN a Model of the document serves."""
    best: dict[str, tuple[int, str]] = {}
    for model in _of_type(resources, MODEL):
        arn = field(model, "primaryContainer", "modelPackageName")
        match = re.search(r":model-package/([^/]+)/(\d+)$", str(arn or ""))
        if is_package_arn(arn) and match:
            version = int(match.group(2))
            if version > best.get(match.group(1), (0, ""))[0]:
                best[match.group(1)] = (version, str(arn))
    return {group: arn for group, (_, arn) in best.items()}


def _first_objects(resources: Sequence[Resource]) -> set[int]:
    """id() of the first S3 object of each address its tags name (the dataset's import)."""
    seen: set[str] = set()
    first: set[int] = set()
    for r in _of_type(resources, OBJECT):
        owner = tag_owner(r)
        if owner is not None and owner.address not in seen:
            seen.add(owner.address)
            first.add(id(r))
    return first


def _monitor_pipeline(resource: Resource) -> str | None:
    """A drift check's name; None for another SageMaker Pipeline (a pipeline's own: its
    runs are the facts; an untagged one: nothing says it is a monitor's)."""
    owner = tag_owner(resource)
    if owner is None or address_kind(owner.address) != "monitor":
        return None
    return field(resource, "pipelineName")


def _rules(resources: Sequence[Resource]) -> dict[str, ClaimRule]:
    newest = _newest_package(resources)
    first = _first_objects(resources)

    def group_id(r: Resource) -> str | None:
        name = field(r, "modelPackageGroupName")
        return newest.get(str(name), name)

    def object_id(r: Resource) -> str | None:
        if id(r) not in first:
            return None
        return f"s3://{field(r, 'bucket')}/{field(r, 'key')}"

    return {
        ENDPOINT: ClaimRule("endpoint", import_id=lambda r: field(r, "name") or r.get("id")),
        CONFIG: ClaimRule("endpoint", parent=_serving),
        MODEL: ClaimRule("model", parent=_serving),
        GROUP: ClaimRule("model", import_id=group_id, adopt_unmarked=False),
        "aws:appautoscaling/target:Target": ClaimRule("endpoint", parent=_scaled),
        "aws:appautoscaling/policy:Policy": ClaimRule("endpoint", parent=_scaled),
        "aws:cloudwatch/metricAlarm:MetricAlarm": ClaimRule("monitor"),
        SCHEDULE: ClaimRule("monitor"),
        PIPELINE: ClaimRule("monitor", import_id=_monitor_pipeline, adopt_unmarked=False),
        OBJECT: ClaimRule("dataset", import_id=object_id, parent=_checked,
                          adopt_unmarked=False),
    }


def pulumi_claims(env: SageMakerEnv, resources: Sequence[Resource]) -> list[PulumiClaim]:
    """The claims of the provider of `env`'s stack and environment over `resources`
    (a stack export's ``deployment.resources``)."""
    return claim_resources(resources, _rules(resources), stack=env.context.stack,
                           env=env.context.env, owner_of=_owner, name_of=_name)
