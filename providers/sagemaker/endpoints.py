"""The `endpoint` kind of the `sagemaker` provider: hash-named EndpointConfigs + the Endpoint.

Objects made for one endpoint address:

* **EndpointConfigs**, immutable, named ``env.name(address, suffix=<hash of the config body>)``:
  one production variant ``primary`` (the model's SageMaker Model, `replicas` instances of
  `instance_type`, default ``ml.m5.large``, weight 1.0) and, with `capture`, a
  DataCaptureConfig writing requests and responses under ``env.s3_uri("capture", <name>)``.
  Every change of what is served (model version, replicas, instance type, capture) is a
  new config; tags are not part of the hash (they are healed in place).
* the **Endpoint** ``env.name(address)``: its name never changes.  A model given as a
  model-package ARN (not a `model` resource) gets a Model of the endpoint's own,
  ``env.name(address, suffix="m-<hash of the ARN>")``, deleted with the endpoint.
* with `autoscaling`: an Application Auto Scaling scalable target on the variant's
  DesiredInstanceCount (min/max) and, with `target_rps`, a target-tracking policy on
  SageMakerVariantInvocationsPerInstance (a per-minute metric: target_rps x 60).

How apply converges (create and update share it, so a retried create adopts):

1. an endpoint of that name owned by another stack/env/address is refused;
2. the Model (own ones only) and the new EndpointConfig are made if absent;
3. no endpoint: CreateEndpoint and wait for InService (Failed raises with the
   FailureReason and reports the endpoint as a partial object, so it is replaced);
   on another config: UpdateEndpoint with a DeploymentConfig built from `rollout`
   (blue/green with ALL_AT_ONCE, CANARY or LINEAR traffic routing, bake time =
   WaitIntervalInSeconds) whose AutoRollbackConfiguration lists the CloudWatch alarms of
   the monitors watching this endpoint (see `monitors.rollback_alarms`), then wait.
   Only once DescribeEndpoint answers InService *on the new config* is the old config
   deleted.  If the endpoint rolled back (InService, but still on the old config) the new
   config, never served, is deleted and the apply fails with SageMaker's FailureReason.
   The config name is the test, not FailureReason alone: that field may still describe
   an earlier failed update;
4. variant weight and (without autoscaling) instance count changed out of band are put
   back with UpdateEndpointWeightsAndCapacities; tags with AddTags/DeleteTags; the
   scalable target and policy are registered, changed or removed.

No attribute forces a new endpoint: UpdateEndpoint changes model, instance type, count
and capture in place (the variant name stays ``primary``, as blue/green requires), so
`replace_paths` is empty.  With `autoscaling`, instance counts belong to the scaler:
`read` reports `replicas` from the config, not the live count, so they are never drift.

Computed: `url` (the invocation URL), `model_version`, `endpoint_config`, `traffic`
(variant -> live DesiredWeight) and `arn`.  The id is the endpoint name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mlform.providers.base import (
    UNKNOWN, Desired, Diagnostic, Facts, KindSchema, LiveObject, Planned, ProviderError,
    Timeouts, contains_unknown, error, warning,
)
from mlform.providers.kit.names import content_hash, short_hash
from mlform.providers.kit.plans import plan_of
from mlform.specs import looks_like_address

from .aws import Missing
from .bucket import delete_record, load_record, save_record
from .env import SageMakerHandler, user_tags
from .monitors import rollback_alarms

__all__ = ["EndpointHandler", "EndpointSettings", "deployment_config", "invocation_url",
           "VARIANT", "DEFAULT_INSTANCE_TYPE"]

COMPUTED = ("url", "model_version", "endpoint_config", "traffic", "arn")
VARIANT = "primary"
DEFAULT_INSTANCE_TYPE = "ml.m5.large"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
READY, FAILED = ("InService",), ("Failed", "UpdateRollbackFailed")
PACKAGE_ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:model-package/[^/]+(/\d+)?$")
# DeploymentConfig's WaitIntervalInSeconds / TerminationWaitInSeconds upper bound.
MAX_WAIT = 3600


class EndpointSettings(BaseModel):
    """`settings { }` of a sagemaker endpoint."""

    model_config = ConfigDict(extra="forbid")

    termination_wait_seconds: int | None = Field(
        None, ge=0, le=MAX_WAIT,
        description="How long the old fleet stays after traffic has moved (blue/green "
                    "TerminationWaitInSeconds); default 300 for strategy blue-green, else 0.")
    max_execution_seconds: int | None = Field(
        None, ge=600, le=14400, description="Upper bound of one deployment "
                                             "(MaximumExecutionTimeoutInSeconds).")
    scale_in_cooldown_seconds: int = Field(300, ge=0, description="Autoscaling scale-in cooldown.")
    scale_out_cooldown_seconds: int = Field(60, ge=0, description="Autoscaling scale-out cooldown.")


def invocation_url(region: str, name: str) -> str:
    return f"https://runtime.sagemaker.{region}.amazonaws.com/endpoints/{name}/invocations"


def _rollout(attrs: Mapping) -> dict:
    rollout = attrs.get("rollout") if isinstance(attrs.get("rollout"), Mapping) else {}
    return {"strategy": "all-at-once", "canary_percent": 10, "step_percent": 10,
            "bake_seconds": 0, **dict(rollout)}


def _settings(attrs: Mapping) -> EndpointSettings:
    return EndpointSettings.model_validate(dict(attrs.get("settings") or {}))


def deployment_config(attrs: Mapping, alarms: list[str]) -> dict:
    """UpdateEndpoint's DeploymentConfig for the endpoint's `rollout` (blue/green always)."""
    rollout, settings = _rollout(attrs), _settings(attrs)
    strategy = rollout["strategy"]
    routing: dict[str, Any] = {"Type": "ALL_AT_ONCE",
                               "WaitIntervalInSeconds": min(int(rollout["bake_seconds"]), MAX_WAIT)}
    if strategy == "canary":
        routing.update(Type="CANARY", CanarySize={"Type": "CAPACITY_PERCENT",
                                                  "Value": int(rollout["canary_percent"])})
    elif strategy == "linear":
        routing.update(Type="LINEAR", LinearStepSize={"Type": "CAPACITY_PERCENT",
                                                      "Value": int(rollout["step_percent"])})
    termination = settings.termination_wait_seconds
    if termination is None:
        termination = 300 if strategy == "blue-green" else 0
    policy: dict[str, Any] = {"TrafficRoutingConfiguration": routing,
                              "TerminationWaitInSeconds": termination}
    if settings.max_execution_seconds:
        policy["MaximumExecutionTimeoutInSeconds"] = settings.max_execution_seconds
    config: dict[str, Any] = {"BlueGreenUpdatePolicy": policy}
    if alarms:
        config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in alarms]}
    return config


def _describe_rollout(attrs: Mapping) -> str:
    rollout = _rollout(attrs)
    strategy, bake = rollout["strategy"], rollout["bake_seconds"]
    if strategy == "canary":
        return f"canary {rollout['canary_percent']}%, bake {bake} s, then all"
    if strategy == "linear":
        return f"linear steps of {rollout['step_percent']}%, bake {bake} s each"
    if strategy == "blue-green":
        return "blue/green, all at once"
    return "all at once"


def _effective(value: Any, default: Any) -> Any:
    return default if value is None else value


class EndpointHandler(SageMakerHandler):
    """`endpoint` resources: EndpointConfig + Endpoint, deployed blue/green."""

    schema = KindSchema(settings_model=EndpointSettings, replace_paths=(), computed=COMPUTED,
                        service_managed=(),
                        timeouts=Timeouts(create=3600.0, update=3600.0, delete=1800.0))

    # -- names ------------------------------------------------------------------------

    def _ident(self, address: str) -> str:
        # the hash `SageMakerEnv.name` puts into every name it makes for this address
        return short_hash(self.env.context.stack, self.env.context.env, address)

    def _own_model_name(self, address: str, arn: str) -> str:
        return self.env.name(address, suffix="m-" + short_hash(arn))

    def _target(self, address: str, model: Any) -> tuple[Any, Any, str | None]:
        """(SageMaker Model name, version, package ARN when the endpoint owns the Model)."""
        if isinstance(model, Mapping):
            version = model.get("version", UNKNOWN)
            if contains_unknown(version) or not isinstance(model.get("address"), str):
                return UNKNOWN, version, None
            return self.env.model_name(model["address"], version), version, None
        if isinstance(model, str) and PACKAGE_ARN.match(model):
            tail = model.rsplit("/", 1)[-1]
            version = int(tail) if tail.isdigit() else None
            return self._own_model_name(address, model), version, model
        return UNKNOWN, UNKNOWN, None

    def _body(self, address: str, attrs: Mapping) -> Any:
        """The EndpointConfig content (what its name hashes), or UNKNOWN."""
        model_name, _, _ = self._target(address, attrs.get("model"))
        replicas = _effective(attrs.get("replicas"), 1)
        instance_type = _effective(attrs.get("instance_type"), DEFAULT_INSTANCE_TYPE)
        capture = attrs.get("capture")
        if any(contains_unknown(v) for v in (model_name, replicas, instance_type, capture)):
            return UNKNOWN
        body: dict[str, Any] = {"ProductionVariants": [{
            "VariantName": VARIANT, "ModelName": model_name,
            "InitialInstanceCount": int(replicas), "InstanceType": instance_type,
            "InitialVariantWeight": 1.0}]}
        if isinstance(capture, Mapping):
            body["DataCaptureConfig"] = {
                "EnableCapture": True,
                "InitialSamplingPercentage": int(_effective(capture.get("sample_percent"), 100)),
                "DestinationS3Uri": self.env.s3_uri("capture", self.env.name(address)),
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]}}
        return body

    def _config_name(self, address: str, body: Any) -> Any:
        return UNKNOWN if body is UNKNOWN else self.env.name(address, suffix=content_hash(body))

    # -- pure half ----------------------------------------------------------------------

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        address, attrs = desired.address, desired.attributes
        found: list[Diagnostic] = []
        model = attrs.get("model")
        if isinstance(model, Mapping):
            if model.get("approval") == "rejected":
                found.append(error(
                    f"{address} would serve a rejected model version",
                    detail=f"{model.get('address', 'the model')} has approval = \"rejected\".",
                    address=address, hint="Approve the model, or point the endpoint at another."))
            elif model.get("approval") == "pending":
                found.append(warning(f"{address} serves a model version whose approval is "
                                     "pending", address=address))
        elif isinstance(model, str) and not PACKAGE_ARN.match(model):
            found.append(error(
                f"The sagemaker provider cannot serve the model of {address}",
                detail=f'"{model}" is neither a model resource nor a model package ARN.',
                address=address,
                hint=(f"Write model = {model} (no quotes)." if looks_like_address(model)
                      else "Use model = model.NAME, or a SageMaker model package ARN.")))
        replicas = attrs.get("replicas")
        if replicas == 0:
            found.append(error(f"{address}: a SageMaker real-time endpoint needs at least one "
                               "instance", address=address, hint="Destroy the endpoint instead."))
        scaling = attrs.get("autoscaling")
        if isinstance(scaling, Mapping) and not contains_unknown(scaling):
            low, high = scaling.get("min", 1), scaling.get("max")
            if low == 0:
                found.append(error(f"{address}: SageMaker cannot scale a real-time variant to 0 "
                                   "instances", address=address, hint="Use autoscaling.min >= 1."))
            if isinstance(replicas, int) and isinstance(high, int) and not low <= replicas <= high:
                found.append(warning(f"{address}: replicas = {replicas} is outside autoscaling "
                                     f"{low}..{high}; the scaler will move it", address=address))
        rollout = attrs.get("rollout")
        if isinstance(rollout, Mapping) and isinstance(rollout.get("bake_seconds"), int) \
                and rollout["bake_seconds"] > MAX_WAIT:
            found.append(error(f"{address}: rollout.bake_seconds is at most {MAX_WAIT} on "
                               "SageMaker (WaitIntervalInSeconds)", address=address))
        if attrs.get("port") is not None:
            found.append(warning(f"{address}: port is not used by the sagemaker provider",
                                 address=address))
        return found

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        address, attrs = desired.address, dict(desired.attributes)
        before = dict(prior.attributes) if prior is not None else None
        name = (prior.id if prior is not None and prior.id else None) or self.env.name(address)
        _, version, _ = self._target(address, attrs.get("model"))
        config = self._config_name(address, self._body(address, attrs))
        computed = {
            "url": invocation_url(self.env.config.region, name),
            "model_version": version,
            "endpoint_config": config,
            "traffic": {VARIANT: 1.0},
            "arn": before.get("arn", UNKNOWN) if before else UNKNOWN,
        }
        reasons: tuple[str, ...] = ()
        if before is not None and config != before.get("endpoint_config"):
            reasons = (self._reason(attrs, before, version, config),)
        return plan_of(desired, computed, reasons=reasons)

    @staticmethod
    def _reason(attrs: Mapping, before: Mapping, version: Any, config: Any) -> str:
        changes = []
        if version != before.get("model_version"):
            changes.append(f"model version {before.get('model_version')} → "
                           f"{'(known after apply)' if version is UNKNOWN else version}")
        pairs = (("replicas", 1), ("instance_type", DEFAULT_INSTANCE_TYPE))
        for key, default in pairs:
            old, new = _effective(before.get(key), default), _effective(attrs.get(key), default)
            if old != new:
                changes.append(f"{key.replace('_', ' ')} {old} → {new}")

        def capture(value: Any) -> str:
            return f"{_effective(value.get('sample_percent'), 100)}%" \
                if isinstance(value, Mapping) else "off"
        if capture(before.get("capture")) != capture(attrs.get("capture")):
            changes.append(f"capture {capture(before.get('capture'))} → "
                           f"{capture(attrs.get('capture'))}")
        if not changes:
            changes.append(f"the endpoint serves {before.get('endpoint_config')}, not the "
                           "planned configuration")
        return f"new EndpointConfig: {', '.join(changes)} ({_describe_rollout(attrs)})"

    # -- apply --------------------------------------------------------------------------

    def create(self, planned: Planned) -> LiveObject:
        return self._converge(planned, creating=True)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        return self._converge(planned, creating=False)

    def _describe(self, name: str, address: str) -> dict | None:
        return self.aws.find("sagemaker", "describe_endpoint", address=address, EndpointName=name)

    def _converge(self, planned: Planned, *, creating: bool) -> LiveObject:
        address, attrs = planned.address, dict(planned.attributes)
        name = self.env.name(address)
        user = dict(attrs.get("tags") or {})
        desc = self._describe(name, address)
        if desc is not None:
            tags = self.sagemaker_tags(desc["EndpointArn"], address)
            self.env.check_owner(tags, address, f"endpoint {name}")
            if desc.get("EndpointStatus") == "Failed":
                self.aws.progress(address, f"endpoint {name} is Failed "
                                  f"({desc.get('FailureReason') or 'no reason given'}); "
                                  "re-creating it")
                self._delete_endpoint(name, address)
                desc = None
        body = self._body(address, attrs)
        if body is UNKNOWN:
            raise ProviderError(f"the model {address} should serve is not known at apply time",
                                address=address)
        self._ensure_own_model(address, attrs.get("model"), user)
        config = self._config_name(address, body)
        self._ensure_config(address, config, body, user)
        if desc is None:
            created = self.aws.call("sagemaker", "create_endpoint", address=address,
                                    EndpointName=name, EndpointConfigName=config,
                                    Tags=self.env.tags(address, user))
            partial = {**attrs, "arn": created["EndpointArn"], "traffic": {}}
            desc = self._wait(name, address, self.schema.timeouts.create, partial=partial)
            tags = self.sagemaker_tags(desc["EndpointArn"], address)
        else:
            if desc.get("EndpointStatus") not in READY:
                desc = self._wait(name, address, self.schema.timeouts.update)
            if desc["EndpointConfigName"] != config:
                desc = self._deploy(address, name, desc, config, attrs)
        desc = self._heal_variant(address, name, desc, attrs)
        self.heal_tags(desc["EndpointArn"], tags, self.env.tags(address, user), address)
        self._ensure_autoscaling(address, name, attrs)
        live = self._live(address, attrs, desc, self._config(desc["EndpointConfigName"], address),
                          autoscaling=self._scaling(address, name))
        save_record(self.env, "endpoint", address, live)
        return LiveObject(address, planned.kind, name, live)

    def _wait(self, name: str, address: str, timeout: float,
              partial: Mapping | None = None) -> dict:
        try:
            return self.aws.wait(lambda: self._describe(name, address), "EndpointStatus",
                                 address=address, what=f"endpoint {name}", ready=READY,
                                 failed=FAILED, timeout=timeout)
        except ProviderError as exc:
            if partial is None:
                raise
            # the endpoint exists (Failed, or still creating): the engine records it
            # tainted, so the next apply replaces it instead of orphaning it
            raise ProviderError(exc.message, address=address, retryable=exc.retryable,
                                service_message=exc.service_message,
                                partial=LiveObject(address, "endpoint", name, dict(partial))
                                ) from exc

    def _ensure_own_model(self, address: str, model: Any, user: Mapping) -> None:
        name, _, arn = self._target(address, model)
        if arn is None:
            if self.aws.find("sagemaker", "describe_model", address=address,
                             ModelName=name) is None:
                raise ProviderError(
                    f"SageMaker Model {name} of {model.get('address')} version "
                    f"{model.get('version')} does not exist", address=address,
                    service_message="Apply the model resource first (it creates one Model per "
                                    "version).")
            return
        if self.aws.find("sagemaker", "describe_model", address=address, ModelName=name) is None:
            self.aws.call("sagemaker", "create_model", address=address, ModelName=name,
                          PrimaryContainer={"ModelPackageName": arn},
                          ExecutionRoleArn=self.env.config.role_arn,
                          Tags=self.env.tags(address, user))

    def _config(self, name: str, address: str) -> dict | None:
        return self.aws.find("sagemaker", "describe_endpoint_config", address=address,
                             EndpointConfigName=name)

    def _ensure_config(self, address: str, name: str, body: Mapping, user: Mapping) -> None:
        found = self._config(name, address)
        if found is not None:
            return
        self.aws.call("sagemaker", "create_endpoint_config", address=address,
                      EndpointConfigName=name, Tags=self.env.tags(address, user), **body)

    def _deploy(self, address: str, name: str, desc: dict, config: str, attrs: Mapping) -> dict:
        """UpdateEndpoint to `config`; the old config goes only once the new one serves."""
        old = desc["EndpointConfigName"]
        old_config = self._config(old, address) or {}
        new_config = self._config(config, address) or {}
        if self._instance_type(old_config) != self._instance_type(new_config):
            # Application Auto Scaling refuses an instance-type change of a scaled variant
            self._deregister(address, name)
        alarms = rollback_alarms(self.env, name)
        self.aws.progress(address, f"deploying {config} ({_describe_rollout(attrs)})",
                          waiting_on=f"endpoint {name}")
        self.aws.call("sagemaker", "update_endpoint", address=address, EndpointName=name,
                      EndpointConfigName=config,
                      DeploymentConfig=deployment_config(attrs, alarms))
        desc = self._wait(name, address, self.schema.timeouts.update)
        if desc["EndpointConfigName"] != config:
            reason = desc.get("FailureReason") or "no FailureReason given"
            self._delete_config(config, address, keep_model=None)
            raise ProviderError(
                f"endpoint {name} rolled back to {desc['EndpointConfigName']}: {reason}",
                address=address, service_message=str(reason))
        new_model = self._variant_model(new_config)
        self._delete_config(old, address, keep_model=new_model)
        return desc

    @staticmethod
    def _instance_type(config: Mapping) -> Any:
        variants = config.get("ProductionVariants") or [{}]
        return variants[0].get("InstanceType")

    @staticmethod
    def _variant_model(config: Mapping) -> Any:
        variants = config.get("ProductionVariants") or [{}]
        return variants[0].get("ModelName")

    def _delete_config(self, name: str, address: str, *, keep_model: Any) -> None:
        """Delete one of this endpoint's configs (ours by tag), and its own Model if unused."""
        config = self._config(name, address)
        if config is None:
            return
        tags = self.sagemaker_tags(config["EndpointConfigArn"], address)
        if not self.env.owns(tags, address):
            return      # not ours (made outside mlform): leave it
        self.forget("delete_endpoint_config", address, EndpointConfigName=name)
        model = self._variant_model(config)
        if model and model != keep_model and f"{self._ident(address)}-m-" in model:
            self.forget("delete_model", address, ModelName=model)

    def _heal_variant(self, address: str, name: str, desc: dict, attrs: Mapping) -> dict:
        """Weight (and count, unless autoscaled) back to the plan when changed out of band."""
        variant = self._variant(desc)
        if variant is None:
            return desc
        weight = variant.get("DesiredWeight", variant.get("CurrentWeight"))
        count = variant.get("DesiredInstanceCount", variant.get("CurrentInstanceCount"))
        want = int(_effective(attrs.get("replicas"), 1))
        scaled = attrs.get("autoscaling") is not None
        if weight in (None, 1.0) and (scaled or count in (None, want)):
            return desc
        change: dict[str, Any] = {"VariantName": VARIANT, "DesiredWeight": 1.0}
        if not scaled:
            change["DesiredInstanceCount"] = want
        elif count is not None:
            change["DesiredInstanceCount"] = count      # the scaler's choice stays
        self.aws.progress(address, "restoring weight 1.0"
                          + ("" if scaled else f" and {want} instance(s)") + f" of {name}")
        self.aws.call("sagemaker", "update_endpoint_weights_and_capacities", address=address,
                      EndpointName=name, DesiredWeightsAndCapacities=[change])
        return self._wait(name, address, self.schema.timeouts.update)

    @staticmethod
    def _variant(desc: Mapping) -> dict | None:
        return next((v for v in desc.get("ProductionVariants") or []
                     if v.get("VariantName") == VARIANT), None)

    # -- autoscaling ----------------------------------------------------------------------

    @staticmethod
    def _resource(name: str) -> str:
        return f"endpoint/{name}/variant/{VARIANT}"

    def _policy_name(self, name: str) -> str:
        return f"{name}-invocations"

    def _scaling(self, address: str, name: str) -> dict | None:
        """The live scalable target and our policy: {"min", "max", "target_rps"}, or None."""
        targets = self.aws.call("application-autoscaling", "describe_scalable_targets",
                                address=address, ServiceNamespace="sagemaker",
                                ResourceIds=[self._resource(name)],
                                ScalableDimension=SCALABLE_DIMENSION).get("ScalableTargets") or []
        if not targets:
            return None
        policies = self.aws.call("application-autoscaling", "describe_scaling_policies",
                                 address=address, ServiceNamespace="sagemaker",
                                 ResourceId=self._resource(name),
                                 ScalableDimension=SCALABLE_DIMENSION,
                                 PolicyNames=[self._policy_name(name)]).get("ScalingPolicies") or []
        target_rps = None
        if policies:
            value = (policies[0].get("TargetTrackingScalingPolicyConfiguration") or {}) \
                .get("TargetValue")
            target_rps = None if value is None else round(float(value) / 60.0, 6)
        return {"min": targets[0]["MinCapacity"], "max": targets[0]["MaxCapacity"],
                "target_rps": target_rps, "policy": policies[0] if policies else None}

    def _ensure_autoscaling(self, address: str, name: str, attrs: Mapping) -> None:
        want = attrs.get("autoscaling")
        live = self._scaling(address, name)
        if not isinstance(want, Mapping):
            if live is not None:
                self._deregister(address, name)
            return
        low, high = int(_effective(want.get("min"), 1)), int(want["max"])
        if live is None or (live["min"], live["max"]) != (low, high):
            self.aws.call("application-autoscaling", "register_scalable_target", address=address,
                          ServiceNamespace="sagemaker", ResourceId=self._resource(name),
                          ScalableDimension=SCALABLE_DIMENSION, MinCapacity=low, MaxCapacity=high)
        rps = want.get("target_rps")
        policy = (live or {}).get("policy")
        if rps is None:
            if policy is not None:
                self.aws.call("application-autoscaling", "delete_scaling_policy", address=address,
                              PolicyName=self._policy_name(name), ServiceNamespace="sagemaker",
                              ResourceId=self._resource(name),
                              ScalableDimension=SCALABLE_DIMENSION)
            return
        settings = _settings(attrs)
        tracking = {
            "TargetValue": float(rps) * 60.0,     # the metric counts invocations per minute
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": settings.scale_in_cooldown_seconds,
            "ScaleOutCooldown": settings.scale_out_cooldown_seconds}
        current = (policy or {}).get("TargetTrackingScalingPolicyConfiguration") or {}
        if any(current.get(k) != v for k, v in tracking.items()):
            self.aws.call("application-autoscaling", "put_scaling_policy", address=address,
                          PolicyName=self._policy_name(name), ServiceNamespace="sagemaker",
                          ResourceId=self._resource(name), ScalableDimension=SCALABLE_DIMENSION,
                          PolicyType="TargetTrackingScaling",
                          TargetTrackingScalingPolicyConfiguration=tracking)

    def _deregister(self, address: str, name: str) -> None:
        """Remove the scalable target (and with it its policies), when there is one."""
        targets = self.aws.call("application-autoscaling", "describe_scalable_targets",
                                address=address, ServiceNamespace="sagemaker",
                                ResourceIds=[self._resource(name)],
                                ScalableDimension=SCALABLE_DIMENSION).get("ScalableTargets")
        if not targets:
            return
        try:
            self.aws.call("application-autoscaling", "deregister_scalable_target",
                          address=address, ServiceNamespace="sagemaker",
                          ResourceId=self._resource(name), ScalableDimension=SCALABLE_DIMENSION)
        except Missing:
            pass

    # -- read / delete --------------------------------------------------------------------

    def _live(self, address: str, base: Mapping, desc: Mapping, config: Mapping | None,
              autoscaling: dict | None) -> dict:
        """Live attributes: `base` (the spec last applied) overlaid with what AWS reports."""
        name = desc["EndpointName"]
        live = dict(base)
        live.update(url=invocation_url(self.env.config.region, name), arn=desc["EndpointArn"],
                    endpoint_config=desc.get("EndpointConfigName"),
                    traffic={v["VariantName"]: v.get("DesiredWeight", v.get("CurrentWeight"))
                             for v in desc.get("ProductionVariants") or []})
        if desc.get("EndpointStatus") == "Failed":
            live["endpoint_config"] = None        # serves nothing: the plan heals it
        config = config or {}
        variant = (config.get("ProductionVariants") or [{}])[0]
        model_name = variant.get("ModelName")
        planned_name, version, _ = self._target(address, base.get("model"))
        if model_name != planned_name:
            match = re.search(r"-v(\d+)$", model_name or "")
            model = base.get("model")
            version = int(match.group(1)) if match and isinstance(model, Mapping) and \
                self.env.model_name(model.get("address", ""), match.group(1)) == model_name \
                else None
        live["model_version"] = version

        def overlay(key: str, value: Any, default: Any) -> None:
            if value is None:
                return
            if key in base and _effective(base.get(key), default) == value:
                return
            if key not in base and value == default:
                return
            live[key] = value

        overlay("instance_type", variant.get("InstanceType"), DEFAULT_INSTANCE_TYPE)
        scaled = isinstance(base.get("autoscaling"), Mapping)
        if scaled:
            count = variant.get("InitialInstanceCount")
        else:
            running = self._variant(desc) or {}
            count = running.get("DesiredInstanceCount", running.get(
                "CurrentInstanceCount", variant.get("InitialInstanceCount")))
        overlay("replicas", count, 1)
        capture = config.get("DataCaptureConfig") or {}
        if not capture.get("EnableCapture"):
            live.pop("capture", None)
        else:
            percent = capture.get("InitialSamplingPercentage")
            had = base.get("capture") if isinstance(base.get("capture"), Mapping) else None
            if had is None or _effective(had.get("sample_percent"), 100) != percent:
                live["capture"] = {**(had or {}), "sample_percent": percent}
        want_scaling = base.get("autoscaling") if scaled else None
        if autoscaling is None:
            live.pop("autoscaling", None)
        else:
            now = {"min": autoscaling["min"], "max": autoscaling["max"]}
            if autoscaling["target_rps"] is not None:
                now["target_rps"] = autoscaling["target_rps"]
            was = None if want_scaling is None else {
                "min": _effective(want_scaling.get("min"), 1), "max": want_scaling.get("max"),
                **({"target_rps": float(want_scaling["target_rps"])}
                   if want_scaling.get("target_rps") is not None else {})}
            if was != now:
                live["autoscaling"] = now
        return live

    def read(self, prior: LiveObject) -> LiveObject | None:
        address = prior.address
        name = prior.id or self.env.name(address)
        desc = self._describe(name, address)
        if desc is None:
            return None
        tags = self.sagemaker_tags(desc["EndpointArn"], address)
        self.env.check_owner(tags, address, f"endpoint {name}", untagged_ok=True)
        base = dict(prior.attributes) or dict(load_record(self.env, "endpoint", address)
                                              .get("attributes") or {})
        config = self._config(desc["EndpointConfigName"], address) \
            if desc.get("EndpointConfigName") else None
        live = self._live(address, base, desc, config, self._scaling(address, name))
        theirs = user_tags(tags)
        if "tags" in base or theirs:
            live["tags"] = theirs
        return LiveObject(address, prior.kind, name, live)

    def _delete_endpoint(self, name: str, address: str) -> None:
        try:
            self.aws.call("sagemaker", "delete_endpoint", address=address, EndpointName=name)
        except Missing:
            return
        self.aws.wait(lambda: self._describe(name, address), "EndpointStatus", address=address,
                      what=f"endpoint {name}", ready=(), failed=(),
                      timeout=self.schema.timeouts.delete, gone_ok=True)

    def delete(self, prior: LiveObject) -> None:
        address = prior.address
        name = prior.id or self.env.name(address)
        self._deregister(address, name)
        self._delete_endpoint(name, address)
        ident = self._ident(address)
        for config in list(self.aws.pages("sagemaker", "list_endpoint_configs", "EndpointConfigs",
                                          address=address, NameContains=ident)):
            self._delete_config(config["EndpointConfigName"], address, keep_model=None)
        for model in list(self.aws.pages("sagemaker", "list_models", "Models", address=address,
                                         NameContains=f"{ident}-m-")):
            if self.env.owns(self.sagemaker_tags(model["ModelArn"], address), address):
                self.forget("delete_model", address, ModelName=model["ModelName"])
        delete_record(self.env, "endpoint", address)

