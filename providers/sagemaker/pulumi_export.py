"""The `sagemaker` provider's half of `mlform export pulumi`: what `create` makes, as
pulumi_aws resources (`Provider.pulumi_resources`).

| mlform kind | pulumi_aws resources | import id |
| --- | --- | --- |
| dataset, local source | `aws.s3.BucketObjectv2` per uploaded file: bucket, key, `source` (the local file), sha256 metadata, tags | ``BUCKET/KEY`` |
| dataset, ``s3://`` source | none: the data is read where it is, never copied | |
| training_cluster | none: its compute profile is mlform's own record, read only by mlform's pipelines | |
| pipeline | none: runs are facts (the engine writes them as comments) | |
| model | `aws.sagemaker.ModelPackageGroup`; `aws.sagemaker.Model` of the version (primary container = the model package, by ARN) | group name; Model name |
| endpoint | `aws.sagemaker.EndpointConfiguration` (the hash name, variants, shadow variants, data capture), `aws.sagemaker.Endpoint` (blue/green deployment config), the endpoint's own `aws.sagemaker.Model` for a model given as a package ARN, `aws.appautoscaling.Target` + `Policy` with `autoscaling`, one `aws.cloudwatch.MetricAlarm` per canary threshold and live variant with `rollout.analysis` | config, endpoint, Model and alarm names; ``sagemaker/RESOURCE_ID/DIMENSION[/POLICY]`` |
| monitor | `aws.sagemaker.Pipeline` (the drift check's definition), `aws.scheduler.Schedule`, `aws.cloudwatch.MetricAlarm`, `aws.s3.BucketObjectv2` per check script | pipeline name, ``default/SCHEDULE``, alarm name, ``BUCKET/KEY`` |

Model packages (the versions of a group) have no pulumi_aws resource: mlform registers
them and the Model names its package by ARN (a comment says so).  IAM roles are not
exported: the provider's `role_arn` is configuration, written as a literal ARN.

Every name, tag set and request body comes from the function `create` calls
(`config_body`, `scaling_requests`, `deployment_config`, `canary_alarms.wanted_alarms`,
`model_request`, `group_request`, `dataset_objects`, the monitor handler's pure half),
turned into the SDK's snake_case arguments here.  Values the engine handed over as
`PulumiInput` markers go through those functions as stand-in strings and come back as
the same markers; a string built *around* one (a pipeline definition embedding a
config value) becomes a marker of its own whose description names what it embeds.

An import id is set on a resource only when the state says the object exists: the
same resources are built from the recorded attributes, and a planned resource keeps
its id when the recorded build has it too (a new config, version or alarm has none).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from mlform.providers.base import (
    UNKNOWN, ExportObject, ProviderError, PulumiAsset, PulumiInput, PulumiRef,
    PulumiResource,
)
from mlform.providers.kit.names import pulumi_config_key, pulumi_name, short_hash
from mlform.providers.kit.sources import scheme
from mlform.providers.kit.variants import endpoint_variants

from . import canary_alarms
from .bucket import capture_destination, capture_prefix
from .datasets import dataset_objects
from .endpoints import (
    PACKAGE_ARN, config_body, declared_traffic, deployment_config, own_model_name,
    scaling_requests,
)
from .env import SageMakerEnv, SageMakerHandler
from .models import group_request, model_request
from .monitors import CODE_TYPE, MonitorSettings, code_files, code_uri

__all__ = ["pulumi_resources", "TOKENS", "logical_name"]

#: `module.Class` -> the Pulumi type token of every class the export writes
TOKENS = {
    "aws.s3.BucketObjectv2": "aws:s3/bucketObjectv2:BucketObjectv2",
    "aws.sagemaker.ModelPackageGroup": "aws:sagemaker/modelPackageGroup:ModelPackageGroup",
    "aws.sagemaker.Model": "aws:sagemaker/model:Model",
    "aws.sagemaker.EndpointConfiguration":
        "aws:sagemaker/endpointConfiguration:EndpointConfiguration",
    "aws.sagemaker.Endpoint": "aws:sagemaker/endpoint:Endpoint",
    "aws.sagemaker.Pipeline": "aws:sagemaker/pipeline:Pipeline",
    "aws.appautoscaling.Target": "aws:appautoscaling/target:Target",
    "aws.appautoscaling.Policy": "aws:appautoscaling/policy:Policy",
    "aws.cloudwatch.MetricAlarm": "aws:cloudwatch/metricAlarm:MetricAlarm",
    "aws.scheduler.Schedule": "aws:scheduler/schedule:Schedule",
}

_PACKAGE_COMMENT = ("The model package it serves is registered by mlform: pulumi_aws has no "
                    "resource for model packages (the versions of a group), so the Model names "
                    "it by ARN.")


#: the logical name of one object of an address (`kit.names.pulumi_name`)
logical_name = pulumi_name


def _snake(value: Any) -> Any:
    """A boto3 request body (PascalCase keys) as the SDK's nested arguments."""
    if isinstance(value, Mapping):
        return {re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(k)).lower(): _snake(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_snake(v) for v in value]
    return value


# -- PulumiInput markers through mlform's own functions ----------------------------------

@dataclass
class _Inputs:
    """The markers of one build, each replaced by a stand-in string while mlform's
    functions run (they name, hash and format strings), and put back after."""

    address: str
    markers: dict[str, PulumiInput] = field(default_factory=dict)

    def stand_in(self, marker: PulumiInput) -> str:
        token = f"Zq{len(self.markers)}PulumiInput{short_hash(marker.key, length=6)}qZ"
        self.markers.setdefault(token, marker)
        return token

    def hide(self, value: Any) -> Any:
        if isinstance(value, PulumiInput):
            return self.stand_in(value)
        if isinstance(value, Mapping):
            return {k: self.hide(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.hide(v) for v in value]
        return value

    def inside(self, text: Any) -> list[PulumiInput]:
        """The markers whose stand-ins `text` holds."""
        if not isinstance(text, str) or "PulumiInput" not in text:
            return []
        return [m for token, m in self.markers.items() if token in text]

    def show(self, value: Any, where: str) -> Any:
        """`value` with each stand-in back as its marker; a string holding stand-ins
        among other text becomes a marker of its own (`where` names it)."""
        if isinstance(value, str):
            if value in self.markers:
                return self.markers[value]
            held = self.inside(value)
            if held:
                keys = ", ".join(m.key for m in held)
                return PulumiInput(
                    pulumi_config_key(self.address, where), secret=any(m.secret for m in held),
                    description=f"{self.address}: {where}, which mlform computes from "
                                f"{keys}; the value `mlform apply` would use")
            return value
        if isinstance(value, Mapping):
            return {k: self.show(v, f"{where}_{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.show(v, f"{where}_{i}") for i, v in enumerate(value)]
        return value


@dataclass
class _Build:
    """The resources of one object, as they are added."""

    handler: SageMakerHandler
    address: str
    attrs: Mapping[str, Any]            # with stand-ins for markers
    inputs: _Inputs
    out: list[PulumiResource] = field(default_factory=list)

    @property
    def env(self) -> SageMakerEnv:
        return self.handler.env

    def tags(self, *, user: bool = True) -> dict[str, str]:
        """The tags `create` puts: the user's and the ownership tags (`SageMakerEnv.tag_map`)."""
        return self.env.tag_map(self.address, self.attrs.get("tags") if user else None)

    def add(self, cls: str, part: str, args: Mapping[str, Any], ident: Any = None,
            comment: str = "", depends_on: tuple[str, ...] = ()) -> str:
        """Add ``cls(logical_name(address, part), **args)``; its logical name."""
        name = logical_name(self.address, part)
        module, _, short = cls.rpartition(".")
        shown = self.inputs.show(dict(args), part or "args")
        ident = ident if isinstance(ident, str) and not self.inputs.inside(ident) else None
        self.out.append(PulumiResource(module=module, cls=short, token=TOKENS[cls], name=name,
                                       args=shown, address=self.address, import_id=ident,
                                       comment=comment, depends_on=depends_on))
        return name


# -- the kinds ---------------------------------------------------------------------------

def _nothing(build: _Build) -> None:
    """training_cluster: the profile is mlform's record, read only by mlform's pipelines
    (which stay with mlform); pipeline: runs are facts.  Nothing for Pulumi to declare."""


def _dataset(build: _Build) -> None:
    source, digest = build.attrs.get("source"), build.attrs.get("digest")
    if not isinstance(source, str) or scheme(source) == "s3":
        return                          # an s3:// source is read, never copied
    if not isinstance(digest, str) or build.inputs.inside(digest) or build.inputs.inside(source):
        raise ProviderError(f"{build.address}: cannot export a dataset whose source or digest "
                            "is known only after apply", address=build.address)
    found = build.handler.source(source)
    bucket = build.env.config.bucket
    objects = dataset_objects(build.env, build.address, digest, found.files)
    for key, path, _, sha in objects:
        part = "object" if len(objects) == 1 else f"object-{key.rsplit(digest + '/', 1)[-1]}"
        build.add("aws.s3.BucketObjectv2", part, {
            "bucket": bucket, "key": key, "source": PulumiAsset(str(path)),
            "metadata": {"sha256": sha, "dataset-digest": digest}, "tags": build.tags()},
            ident=f"{bucket}/{key}")


def _model(build: _Build) -> None:
    env, address, attrs = build.env, build.address, build.attrs
    user = attrs.get("tags") or {}
    group = group_request(env, address, user)
    build.add("aws.sagemaker.ModelPackageGroup", "group", {
        "model_package_group_name": group["ModelPackageGroupName"],
        "model_package_group_description": group["ModelPackageGroupDescription"],
        "tags": build.tags()}, ident=group["ModelPackageGroupName"])
    request = model_request(env, attrs.get("model_name"), attrs.get("uri"), address, user)
    build.add("aws.sagemaker.Model", "model", _model_args(build, request),
              ident=request["ModelName"],
              comment=f"Version {attrs.get('version')} of {address}. {_PACKAGE_COMMENT}")


def _model_args(build: _Build, request: Mapping[str, Any]) -> dict:
    return {"name": request["ModelName"], "execution_role_arn": request["ExecutionRoleArn"],
            "primary_container": _snake(request["PrimaryContainer"]), "tags": build.tags()}


def _endpoint(build: _Build) -> None:
    env, address, attrs = build.env, build.address, build.attrs
    name = env.name(address)
    own: dict[str, str] = {}            # package ARN -> the logical name of its own Model
    for variant in endpoint_variants(attrs):
        arn = variant["model"]
        if isinstance(arn, str) and PACKAGE_ARN.match(arn) and arn not in own:
            request = model_request(env, own_model_name(env, address, arn), arn, address,
                                    attrs.get("tags") or {})
            own[arn] = build.add("aws.sagemaker.Model", f"model-{short_hash(arn)}",
                                 _model_args(build, request), ident=request["ModelName"],
                                 comment=_PACKAGE_COMMENT)

    def model_ref(model: Any) -> Any:
        if isinstance(model, Mapping) and isinstance(model.get("address"), str):
            return PulumiRef(logical_name(model["address"], "model"), "name")
        return PulumiRef(own[model], "name") if isinstance(model, str) and model in own \
            else UNKNOWN

    body = config_body(env, address, attrs, model_ref)
    if body is UNKNOWN:
        raise ProviderError(f"{address}: cannot export an endpoint whose model is not a model "
                            "resource or a model package ARN", address=address)
    config = attrs.get("endpoint_config")
    config_ref = build.add("aws.sagemaker.EndpointConfiguration", "config",
                           {"name": config, **_snake(body), "tags": build.tags()}, ident=config)
    alarms = [build.add("aws.cloudwatch.MetricAlarm",
                        "canary-" + alarm["AlarmName"].rsplit("-canary-", 1)[-1],
                        {**_alarm_args(alarm), "tags": build.tags(user=False)},
                        ident=alarm["AlarmName"])
              for alarm in canary_alarms.wanted_alarms(env, address, name, attrs,
                                                       list(declared_traffic(attrs)))]
    endpoint = build.add("aws.sagemaker.Endpoint", "", {
        "name": name, "endpoint_config_name": PulumiRef(config_ref, "name"),
        "deployment_config": _snake(deployment_config(
            attrs, [PulumiRef(alarm, "name") for alarm in alarms])),
        "tags": build.tags()}, ident=name,
        comment="mlform deploys every change of the config blue/green with this deployment "
                "config, and adds the alarms of the monitors watching the endpoint to its "
                "rollback alarms at each deployment.")
    _autoscaling(build, name, endpoint)


def _autoscaling(build: _Build, endpoint: str, resource: str) -> None:
    target, policy = scaling_requests(endpoint, build.attrs)
    if target is None:
        return
    where = f"sagemaker/{target['ResourceId']}/{target['ScalableDimension']}"
    # its resource_id is a string naming the endpoint's variant: depends_on orders it
    scaler = build.add("aws.appautoscaling.Target", "scaling", _snake(target), ident=where,
                       depends_on=(resource,))
    if policy is not None:
        args = _snake({k: v for k, v in policy.items() if k != "PolicyName"})
        build.add("aws.appautoscaling.Policy", "scaling-policy", {
            "name": policy["PolicyName"], **args,
            "resource_id": PulumiRef(scaler, "resource_id")},
            ident=f"{where}/{policy['PolicyName']}")


def _alarm_args(request: Mapping[str, Any]) -> dict:
    """A PutMetricAlarm request as `aws.cloudwatch.MetricAlarm` arguments (dimensions as
    a map, metric math as `metric_queries`; tags are the caller's)."""
    args: dict[str, Any] = {}
    for key, value in request.items():
        if key == "AlarmName":
            args["name"] = value
        elif key == "Dimensions":
            args["dimensions"] = {d["Name"]: d["Value"] for d in value}
        elif key == "Metrics":
            args["metric_queries"] = [_query(q) for q in value]
        elif key != "Tags":
            args.update(_snake({key: value}))
    return args


def _query(query: Mapping[str, Any]) -> dict:
    out = _snake({k: v for k, v in query.items() if k != "MetricStat"})
    stat = query.get("MetricStat")
    if stat is not None:
        metric = stat["Metric"]
        out["metric"] = {"namespace": metric["Namespace"], "metric_name": metric["MetricName"],
                         "dimensions": {d["Name"]: d["Value"] for d in metric["Dimensions"]},
                         "period": stat["Period"], "stat": stat["Stat"]}
    return out


def _monitor(build: _Build) -> None:
    handler, env, address, attrs = build.handler, build.env, build.address, build.attrs
    settings = MonitorSettings.model_validate(dict(attrs.get("settings") or {}))
    names = handler._names(address)
    endpoint = handler._endpoint_name(attrs, address)
    params = handler._parameters(address, attrs, settings, endpoint,
                                 _capture(build, attrs.get("endpoint"), endpoint))
    definition = handler._definition(settings, params, code_uri(env, address))
    description = handler._description(address, definition)
    if build.inputs.inside(definition):     # its hash would be of the stand-ins
        description = build.inputs.stand_in(PulumiInput(
            pulumi_config_key(address, "check_pipeline_description"),
            description=f"{address}: the check pipeline's description, which holds a hash of "
                        "its definition; the value `mlform apply` would use"))
    exists = {k: v if attrs.get(k) == v else None for k, v in names.items()}
    for key, path in code_files(env, address):
        build.add("aws.s3.BucketObjectv2", f"code-{path.name}", {
            "bucket": env.config.bucket, "key": key, "source": PulumiAsset(str(path)),
            "content_type": CODE_TYPE,
            "metadata": {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}},
            ident=f"{env.config.bucket}/{key}" if exists["check_pipeline"] else None,
            comment="A drift check script, from the installed mlform package (untagged, as "
                    "mlform uploads it).")
    pipeline = build.add("aws.sagemaker.Pipeline", "check", {
        "pipeline_name": names["check_pipeline"], "pipeline_display_name": names["check_pipeline"],
        "pipeline_definition": definition, "pipeline_description": description,
        "role_arn": env.config.role_arn, "tags": build.tags()}, ident=exists["check_pipeline"])
    spec = handler._schedule_spec(address, PulumiRef(pipeline, "arn"), attrs.get("schedule"),
                                  params)
    target = spec["Target"]
    build.add("aws.scheduler.Schedule", "schedule", {
        "name": names["schedule_name"],
        **_snake({k: v for k, v in spec.items() if k != "Target"}),
        "target": {"arn": target["Arn"], "role_arn": target["RoleArn"],
                   "sagemaker_pipeline_parameters": {"pipeline_parameters": _snake(
                       target["SageMakerPipelineParameters"]["PipelineParameterList"])}}},
        ident=f"default/{exists['schedule_name']}" if exists["schedule_name"] else None,
        comment="Schedules carry no tags: the description names the owner.")
    alarm = handler._alarm_spec(address, names["alarm_name"], endpoint, settings)
    build.add("aws.cloudwatch.MetricAlarm", "alarm", {**_alarm_args(alarm),
                                                      "tags": build.tags()},
              ident=exists["alarm_name"])


def _capture(build: _Build, endpoint: Any, name: str) -> str:
    """Where the watched endpoint's captured requests land.  `create` reads it from the
    live config; an endpoint of this stack writes under `capture_destination`, and for
    one outside it the program asks for the location (a config value)."""
    where = endpoint.get("address") if isinstance(endpoint, Mapping) else None
    if isinstance(where, str):
        return capture_prefix(capture_destination(build.env, where), name)
    return build.inputs.stand_in(PulumiInput(
        pulumi_config_key(build.address, "capture_uri"),
        description=f"{build.address}: the S3 folder endpoint {name} captures requests to "
                    "(its DataCaptureConfig DestinationS3Uri, then the endpoint name and /)"))


EXPORTERS: dict[str, Callable[[_Build], None]] = {
    "dataset": _dataset, "training_cluster": _nothing, "pipeline": _nothing,
    "model": _model, "endpoint": _endpoint, "monitor": _monitor,
}


# -- the entry point ---------------------------------------------------------------------

def _build(handler: SageMakerHandler, kind: str, address: str,
           attributes: Mapping[str, Any]) -> list[PulumiResource]:
    inputs = _Inputs(address)
    build = _Build(handler, address, inputs.hide(dict(attributes)), inputs)
    EXPORTERS[kind](build)
    return build.out


def pulumi_resources(handler: SageMakerHandler, obj: ExportObject) -> list[PulumiResource]:
    """The pulumi_aws resources declaring what `handler` makes for `obj`; see the module
    docstring.  Raises ProviderError (a diagnostic) for what cannot be exported."""
    planned = _build(handler, obj.kind, obj.address, obj.attributes)
    existing: set[tuple[str, str]] = set()
    note = ""
    if obj.id is not None and obj.recorded is not None:
        try:
            existing = {(r.token, r.import_id) for r in
                        _build(handler, obj.kind, obj.address, obj.recorded) if r.import_id}
        except (ProviderError, LookupError, TypeError, ValueError) as exc:
            # the state's attributes (an older shape) do not say which objects exist:
            # declare them all without an import id rather than fail the export
            note = f"Which objects exist could not be told from the state ({exc}): no import id."
    return [replace(r, import_id=r.import_id if (r.token, r.import_id) in existing else None,
                    comment=" ".join(filter(None, (r.comment, note))))
            for r in planned]
