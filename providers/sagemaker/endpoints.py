"""The `endpoint` kind of the `sagemaker` provider: hash-named EndpointConfigs + the Endpoint.

Objects made for one endpoint address:

* **EndpointConfigs**, immutable, named ``env.name(address, suffix=<hash of the config body>)``:
  one production variant per live variant (``primary`` for an endpoint with one `model`;
  with `variants`, the variant's name, its model's SageMaker Model, `replicas` instances
  of `instance_type`, default ``ml.m5.large``, InitialVariantWeight = weight / 100), a
  shadow variant in ShadowProductionVariants (InitialVariantWeight = shadow_percent / 100
  beside the one live variant's 1.0: SageMaker mirrors that share of the requests) and,
  with `capture`, a DataCaptureConfig writing requests and responses under
  ``env.s3_uri("capture", <name>)``.  Every change of what is served (model versions,
  replicas, instance type, capture, shadow share) is a new config; live weights are
  hashed as 1.0, so a change of weights alone keeps the config and the fleet and is
  made with UpdateEndpointWeightsAndCapacities; tags are not part of the hash (they are
  healed in place).
* with `rollout.analysis`: CloudWatch alarms, the deployment guardrails' rollback
  alarms (`canary_alarms`), deleted with the endpoint.
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
   WaitIntervalInSeconds) whose AutoRollbackConfiguration lists the canary alarms of
   `rollout.analysis` (put before, see `canary_alarms`) and the CloudWatch alarms of
   the monitors watching this endpoint (see `monitors.rollback_alarms`), then wait.
   Only once DescribeEndpoint answers InService *on the new config* is the old config
   deleted.  If the endpoint rolled back (InService, but still on the old config) the new
   config, never served, is deleted and the apply fails with the canary analysis'
   summary when one of its alarms fired (`canary_alarms.explain`), else SageMaker's
   FailureReason.
   The config name is the test, not FailureReason alone: that field may still describe
   an earlier failed update;
4. variant weights (unless a bandit owns them) and (without autoscaling) instance counts
   that differ from the plan are set with one UpdateEndpointWeightsAndCapacities; tags
   with AddTags/DeleteTags; the scalable target and policy are registered, changed or
   removed.

Experiments: SageMaker routes each request by the variants' weights; stickiness is the
application's (InvokeEndpoint's TargetVariant), so `sticky_key` is only a warning here.
A bandit's weights move by `mlform experiment step` (`experiments.step`: rewards under
the capture prefix's ``feedback/``, `kit.bandit.Policy`, UpdateEndpointWeightsAndCapacities);
they are `bandit_weights`, service-managed, while `traffic` stays the declared start, so
a step is never drift.  `experiments.records` answers `mlform experiment report`.

No attribute forces a new endpoint: UpdateEndpoint changes model, instance type, count
and capture in place (the variant name stays ``primary``, as blue/green requires), so
`replace_paths` is empty.  With `autoscaling`, instance counts belong to the scaler:
`read` reports `replicas` from the config, not the live count, so they are never drift.

Computed: `url` (the invocation URL), `model_version` (of the live variant with the
largest weight), `endpoint_config`, `traffic` (variant -> live DesiredWeight; for a
bandit, the declared one) and `arn`; with `variants`, `variant_versions`; with a bandit,
`bandit_weights`.  The id is the endpoint name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from mlform.providers.base import (
    UNKNOWN, Desired, Diagnostic, Facts, KindSchema, LiveObject, Planned, ProviderError,
    Timeouts, contains_unknown, error, warning,
)
from mlform.providers.kit.names import content_hash, short_hash
from mlform.providers.kit.plans import plan_of
from mlform.providers.kit.variants import endpoint_variants, experiment_of, variant_changes
from mlform.specs import looks_like_address

from .aws import Missing
from . import canary_alarms
from .bucket import capture_destination, delete_record, load_record, save_record
from .env import SageMakerEnv, SageMakerHandler, user_tags
from .models import model_request
from .monitors import rollback_alarms

__all__ = ["EndpointHandler", "EndpointSettings", "deployment_config", "invocation_url",
           "config_body", "config_name", "own_model_name", "scaling_requests",
           "scaling_resource", "policy_name", "declared_traffic", "VARIANT",
           "DEFAULT_INSTANCE_TYPE", "SCALABLE_DIMENSION"]

COMPUTED = ("url", "model_version", "endpoint_config", "traffic", "arn")
# Filled in only where they apply, so the states of single-model endpoints stay as they
# were (a key every plan added would be a change to each of them): `variant_versions`
# (variant -> model version) with `variants`, `bandit_weights` (variant -> live
# DesiredWeight) with a bandit.  Not in COMPUTED, which names what every plan holds.
#: A bandit's live weights move between applies (`mlform experiment step`): never drift.
SERVICE_MANAGED = ("bandit_weights",)
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


def _has_variants(attrs: Mapping) -> bool:
    return isinstance(attrs.get("variants"), Mapping) and bool(attrs.get("variants"))


def _is_bandit(attrs: Mapping) -> bool:
    return (experiment_of(attrs) or {}).get("type") == "bandit"


def _main(variants: list[dict]) -> dict:
    """The live variant with the largest weight, the first declared on a tie: the one
    whose version is the endpoint's `model_version` (as on `local`)."""
    live = [v for v in variants if v["role"] == "live"] or variants
    return max(reversed(live), key=lambda v: v["weight"])


def declared_traffic(attrs: Mapping) -> dict[str, float]:
    """Live variant -> the DesiredWeight the spec asks for (its weight / 100: the
    single-model endpoint's ``primary`` is 1.0, as it always was).  A shadow endpoint's
    one live variant is 1.0: the shadow's share is its own weight relative to it."""
    variants = endpoint_variants(attrs)
    shadow = any(v["role"] == "shadow" for v in variants)
    return {v["name"]: 1.0 if shadow else round(v["weight"] / 100.0, 4)
            for v in sorted(variants, key=lambda v: v["name"]) if v["role"] == "live"}


def own_model_name(env: SageMakerEnv, address: str, arn: str) -> str:
    """The Model an endpoint makes of its own for a model given as a package ARN."""
    return env.name(address, suffix="m-" + short_hash(arn))


def config_body(env: SageMakerEnv, address: str, attrs: Mapping,
                model_name: Callable[[Any], Any]) -> Any:
    """The EndpointConfig content, or UNKNOWN: one production variant per live variant
    (``primary`` for a single model), the shadow in ShadowProductionVariants with
    InitialVariantWeight = shadow_percent / 100 against the live one's 1.0 (a shadow
    variant's share of the requests is its weight relative to the production
    variant's), and DataCaptureConfig with `capture`.  `model_name` names a variant's
    SageMaker Model from its `model` (create: the Model's name; the Pulumi export: a
    reference to the Model it declares).  Pure: create and the export share it."""
    replicas = _effective(attrs.get("replicas"), 1)
    instance_type = _effective(attrs.get("instance_type"), DEFAULT_INSTANCE_TYPE)
    capture = attrs.get("capture")
    variants = sorted(endpoint_variants(attrs), key=lambda v: v["name"])
    names = [model_name(v["model"]) for v in variants]
    if any(contains_unknown(v) for v in (*names, replicas, instance_type, capture)):
        return UNKNOWN
    weights = declared_traffic(attrs)
    experiment = experiment_of(attrs) or {}
    shadow_share = round(int(experiment.get("shadow_percent", 100)) / 100.0, 4)
    entries: dict[str, list] = {"ProductionVariants": [], "ShadowProductionVariants": []}
    for variant, name in zip(variants, names):
        shadow = variant["role"] == "shadow"
        entries["ShadowProductionVariants" if shadow else "ProductionVariants"].append({
            "VariantName": variant["name"], "ModelName": name,
            "InitialInstanceCount": int(replicas), "InstanceType": instance_type,
            "InitialVariantWeight": shadow_share if shadow else weights[variant["name"]]})
    body: dict[str, Any] = {k: v for k, v in entries.items() if v}
    if isinstance(capture, Mapping):
        body["DataCaptureConfig"] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": int(_effective(capture.get("sample_percent"), 100)),
            "DestinationS3Uri": capture_destination(env, address),
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]}}
    return body


def config_name(env: SageMakerEnv, address: str, body: Any) -> Any:
    """The config's name: a hash of its body with every live weight as 1.0, so a
    change of weights alone keeps the config (and the fleet) and is made with
    UpdateEndpointWeightsAndCapacities (a single-model body is unchanged by this,
    so its name is what it always was)."""
    if body is UNKNOWN:
        return UNKNOWN
    hashed = {**body, "ProductionVariants": [{**v, "InitialVariantWeight": 1.0}
                                             for v in body["ProductionVariants"]]}
    return env.name(address, suffix=content_hash(hashed))


def scaling_requests(name: str, attrs: Mapping) -> tuple[dict | None, dict | None]:
    """(RegisterScalableTarget's request, PutScalingPolicy's request) of the endpoint
    named `name`: (None, None) without `autoscaling`, no policy without `target_rps`.
    Pure: apply and the Pulumi export share it."""
    want = attrs.get("autoscaling")
    if not isinstance(want, Mapping):
        return None, None
    where = {"ServiceNamespace": "sagemaker", "ResourceId": scaling_resource(name),
             "ScalableDimension": SCALABLE_DIMENSION}
    target = {**where, "MinCapacity": int(_effective(want.get("min"), 1)),
              "MaxCapacity": int(want["max"])}
    rps = want.get("target_rps")
    if rps is None:
        return target, None
    settings = _settings(attrs)
    policy = {"PolicyName": policy_name(name), **where, "PolicyType": "TargetTrackingScaling",
              "TargetTrackingScalingPolicyConfiguration": {
                  "TargetValue": float(rps) * 60.0,  # the metric counts invocations per minute
                  "PredefinedMetricSpecification": {
                      "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                  "ScaleInCooldown": settings.scale_in_cooldown_seconds,
                  "ScaleOutCooldown": settings.scale_out_cooldown_seconds}}
    return target, policy


def scaling_resource(name: str) -> str:
    """The scalable target's ResourceId: the endpoint's one scaled variant."""
    return f"endpoint/{name}/variant/{VARIANT}"


def policy_name(name: str) -> str:
    return f"{name}-invocations"


class EndpointHandler(SageMakerHandler):
    """`endpoint` resources: EndpointConfig + Endpoint, deployed blue/green."""

    schema = KindSchema(settings_model=EndpointSettings, replace_paths=(), computed=COMPUTED,
                        service_managed=SERVICE_MANAGED,
                        timeouts=Timeouts(create=3600.0, update=3600.0, delete=1800.0))

    # -- names ------------------------------------------------------------------------

    def _ident(self, address: str) -> str:
        # the hash `SageMakerEnv.name` puts into every name it makes for this address
        return short_hash(self.env.context.stack, self.env.context.env, address)

    def _own_model_name(self, address: str, arn: str) -> str:
        return own_model_name(self.env, address, arn)

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
        """The EndpointConfig content (`config_body`), or UNKNOWN."""
        return config_body(self.env, address, attrs,
                           lambda model: self._target(address, model)[0])

    def _config_name(self, address: str, body: Any) -> Any:
        return config_name(self.env, address, body)

    # -- pure half ----------------------------------------------------------------------

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        address, attrs = desired.address, desired.attributes
        found: list[Diagnostic] = []
        variants = endpoint_variants(attrs)
        for variant in variants:
            what = address if not _has_variants(attrs) else \
                f"{address} (variant {variant['name']})"
            found += self._model_problems(address, what, variant["model"])
        found += self._variant_problems(address, attrs, variants)
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

    @staticmethod
    def _model_problems(address: str, what: str, model: Any) -> list[Diagnostic]:
        if isinstance(model, Mapping):
            if model.get("approval") == "rejected":
                return [error(
                    f"{what} would serve a rejected model version",
                    detail=f"{model.get('address', 'the model')} has approval = \"rejected\".",
                    address=address, hint="Approve the model, or point the endpoint at another.")]
            if model.get("approval") == "pending":
                return [warning(f"{what} serves a model version whose approval is pending",
                                address=address)]
        elif isinstance(model, str) and not PACKAGE_ARN.match(model):
            return [error(
                f"The sagemaker provider cannot serve the model of {what}",
                detail=f'"{model}" is neither a model resource nor a model package ARN.',
                address=address,
                hint=(f"Write model = {model} (no quotes)." if looks_like_address(model)
                      else "Use model = model.NAME, or a SageMaker model package ARN."))]
        return []

    @staticmethod
    def _variant_problems(address: str, attrs: Mapping, variants: list[dict]) -> list[Diagnostic]:
        """What SageMaker cannot do with the endpoint's variants and experiment (the spec
        itself, weights summing to 100 and the like, is checked by the engine)."""
        found: list[Diagnostic] = []
        experiment = experiment_of(attrs) or {}
        live = [v for v in variants if v["role"] == "live"]
        if experiment.get("type") == "shadow" and len(live) != 1:
            found.append(error(
                f"{address}: a SageMaker shadow test has exactly one live variant, not "
                f"{len(live)} ({', '.join(v['name'] for v in live)})",
                detail="CreateEndpointConfig takes one ProductionVariant beside the "
                       "ShadowProductionVariants.", address=address,
                hint="Give the live traffic to one variant, or use experiment type \"ab\"."))
        if _has_variants(attrs) and attrs.get("autoscaling") is not None:
            found.append(error(
                f"{address}: the sagemaker provider autoscales single-model endpoints only",
                detail="With variants, each would need its own scalable target; that is not "
                       "supported yet.", address=address,
                hint="Remove autoscaling, or set replicas for the variants."))
        if experiment.get("sticky_key"):
            found.append(warning(
                f"{address}: SageMaker routes each request by weight; sticky_key "
                f"{experiment['sticky_key']} is not enforced by SageMaker",
                detail="To keep a user on one variant, the application chooses it: "
                       "InvokeEndpoint's TargetVariant parameter names the variant.",
                address=address,
                hint="Send TargetVariant from the application, derived from the sticky key."))
        rollout = attrs.get("rollout") if isinstance(attrs.get("rollout"), Mapping) else {}
        analysis = rollout.get("analysis")
        if isinstance(analysis, Mapping) and not contains_unknown(analysis):
            for key in (analysis.get("metrics") or {}):
                if not re.fullmatch(r"[A-Za-z0-9_.:/-]+", str(key)):
                    found.append(error(
                        f'{address}: rollout.analysis.metrics "{key}" is not a CloudWatch '
                        "metric name", address=address,
                        hint="On SageMaker, metrics names a metric of the AWS/SageMaker "
                             "namespace, e.g. OverheadLatency (no label matchers)."))
            bounds = sum(1 for b in (analysis.get("metrics") or {}).values()
                         if isinstance(b, Mapping) for k in ("min", "max")
                         if b.get(k) is not None)
            checks = bounds + sum(1 for k in ("max_error_rate", "max_p99_ms")
                                  if analysis.get(k) is not None)
            if checks * len(live) > canary_alarms.MAX_ROLLBACK_ALARMS:
                found.append(error(
                    f"{address}: rollout.analysis needs {checks * len(live)} CloudWatch alarms "
                    f"({checks} thresholds x {len(live)} live variants); SageMaker's "
                    f"rollback watches at most {canary_alarms.MAX_ROLLBACK_ALARMS}",
                    address=address, hint="Judge fewer thresholds."))
        return found

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        address, attrs = desired.address, dict(desired.attributes)
        before = dict(prior.attributes) if prior is not None else None
        name = (prior.id if prior is not None and prior.id else None) or self.env.name(address)
        variants = endpoint_variants(attrs)
        versions = {v["name"]: self._target(address, v["model"])[1] for v in variants}
        version = versions[_main(variants)["name"]]
        config = self._config_name(address, self._body(address, attrs))
        traffic = declared_traffic(attrs)
        computed = {
            "url": invocation_url(self.env.config.region, name),
            "model_version": version,
            "endpoint_config": config,
            "traffic": traffic,
            "arn": before.get("arn", UNKNOWN) if before else UNKNOWN,
        }
        if _has_variants(attrs):     # only then: the states of single-model endpoints stay
            computed["variant_versions"] = versions
        if _is_bandit(attrs):
            # the bandit's weights are its own between applies; a new config or new
            # declared weights start it again from the declared ones
            same = before is not None and config == before.get("endpoint_config") \
                and before.get("traffic") == traffic and before.get("bandit_weights")
            computed["bandit_weights"] = before["bandit_weights"] if same else traffic
        reasons: tuple[str, ...] = ()
        if before is not None:
            old_versions = before.get("variant_versions") or \
                {v["name"]: before.get("model_version") for v in endpoint_variants(before)}
            shown = {k: "(known after apply)" if v is UNKNOWN else v for k, v in versions.items()}
            moved = variant_changes(before, attrs, shown, old_versions)
            if config != before.get("endpoint_config"):
                reasons = (self._reason(attrs, before, version, config, moved),)
            elif moved:
                how = ("the bandit starts again from them" if _is_bandit(attrs)
                       else "UpdateEndpointWeightsAndCapacities, same fleet")
                reasons = ("variant weights: " + "; ".join(moved) + f" ({how})",)
        return plan_of(desired, computed, reasons=reasons)

    @staticmethod
    def _reason(attrs: Mapping, before: Mapping, version: Any, config: Any,
                moved: list[str]) -> str:
        changes = list(moved)
        if not _has_variants(attrs) and not _has_variants(before) \
                and version != before.get("model_version"):
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
        # a bandit keeps its weights unless the plan starts it again (see `plan`)
        restart = planned.attributes.get("bandit_weights") != prior.attributes.get("bandit_weights")
        return self._converge(planned, creating=False, restart_bandit=restart)

    def _describe(self, name: str, address: str) -> dict | None:
        return self.aws.find("sagemaker", "describe_endpoint", address=address, EndpointName=name)

    def _converge(self, planned: Planned, *, creating: bool,
                  restart_bandit: bool = True) -> LiveObject:
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
        for variant in endpoint_variants(attrs):
            self._ensure_own_model(address, variant["model"], user)
        config = self._config_name(address, body)
        self._ensure_config(address, config, body, user)
        # the guardrail alarms exist before any deployment names them
        alarms = canary_alarms.ensure_alarms(self.env, address, canary_alarms.wanted_alarms(
            self.env, address, name, attrs, list(declared_traffic(attrs))))
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
                desc = self._deploy(address, name, desc, config, attrs, alarms)
        desc = self._heal_variant(address, name, desc, attrs,
                                  weights=not _is_bandit(attrs) or restart_bandit)
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
            self.aws.call("sagemaker", "create_model", address=address,
                          **model_request(self.env, name, arn, address, user))

    def _config(self, name: str, address: str) -> dict | None:
        return self.aws.find("sagemaker", "describe_endpoint_config", address=address,
                             EndpointConfigName=name)

    def _ensure_config(self, address: str, name: str, body: Mapping, user: Mapping) -> None:
        found = self._config(name, address)
        if found is not None:
            return
        self.aws.call("sagemaker", "create_endpoint_config", address=address,
                      EndpointConfigName=name, Tags=self.env.tags(address, user), **body)

    def _deploy(self, address: str, name: str, desc: dict, config: str, attrs: Mapping,
                canary: list[str]) -> dict:
        """UpdateEndpoint to `config`; the old config goes only once the new one serves."""
        old = desc["EndpointConfigName"]
        old_config = self._config(old, address) or {}
        new_config = self._config(config, address) or {}
        if self._instance_type(old_config) != self._instance_type(new_config):
            # Application Auto Scaling refuses an instance-type change of a scaled variant
            self._deregister(address, name)
        alarms = canary + rollback_alarms(self.env, name,
                                          canary_alarms.MAX_ROLLBACK_ALARMS - len(canary))
        self.aws.progress(address, f"deploying {config} ({_describe_rollout(attrs)})",
                          waiting_on=f"endpoint {name}")
        self.aws.call("sagemaker", "update_endpoint", address=address, EndpointName=name,
                      EndpointConfigName=config,
                      DeploymentConfig=deployment_config(attrs, alarms))
        desc = self._wait(name, address, self.schema.timeouts.update)
        if desc["EndpointConfigName"] != config:
            reason = desc.get("FailureReason") or "no FailureReason given"
            self._delete_config(config, address, keep_model=())
            variants = endpoint_variants(attrs)
            version = self._target(address, _main(variants)["model"])[1]
            analysis = canary_alarms.explain(self.env, address, attrs, version)
            raise ProviderError(
                f"endpoint {name} rolled back to {desc['EndpointConfigName']}: "
                + (analysis or str(reason)), address=address, service_message=str(reason))
        self._delete_config(old, address, keep_model=self._variant_models(new_config))
        return desc

    @staticmethod
    def _instance_type(config: Mapping) -> Any:
        variants = config.get("ProductionVariants") or [{}]
        return variants[0].get("InstanceType")

    @staticmethod
    def _variant_models(config: Mapping) -> set:
        return {v.get("ModelName") for key in ("ProductionVariants", "ShadowProductionVariants")
                for v in config.get(key) or []}

    def _delete_config(self, name: str, address: str, *, keep_model: Any) -> None:
        """Delete one of this endpoint's configs (ours by tag), and its own Model if unused."""
        config = self._config(name, address)
        if config is None:
            return
        tags = self.sagemaker_tags(config["EndpointConfigArn"], address)
        if not self.env.owns(tags, address):
            return      # not ours (made outside mlform): leave it
        self.forget("delete_endpoint_config", address, EndpointConfigName=name)
        for model in sorted(m for m in self._variant_models(config) if m):
            if model not in keep_model and f"{self._ident(address)}-m-" in model:
                self.forget("delete_model", address, ModelName=model)

    def _heal_variant(self, address: str, name: str, desc: dict, attrs: Mapping, *,
                      weights: bool = True) -> dict:
        """Weights (unless a bandit owns them: `weights` False) and counts (unless
        autoscaled) back to the plan, for a change of weights alone or one made out of
        band: one UpdateEndpointWeightsAndCapacities for every variant that differs."""
        want = int(_effective(attrs.get("replicas"), 1))
        scaled = attrs.get("autoscaling") is not None
        changes, said = [], []
        for variant_name, wanted_weight in declared_traffic(attrs).items():
            variant = self._variant(desc, variant_name)
            if variant is None:
                continue
            weight = variant.get("DesiredWeight", variant.get("CurrentWeight"))
            count = variant.get("DesiredInstanceCount", variant.get("CurrentInstanceCount"))
            weight_off = weights and weight is not None and \
                abs(float(weight) - wanted_weight) > 1e-9
            if not weight_off and (scaled or count in (None, want)):
                continue
            change: dict[str, Any] = {"VariantName": variant_name,
                                      "DesiredWeight": wanted_weight if weights else weight}
            if not scaled:
                change["DesiredInstanceCount"] = want
            elif count is not None:
                change["DesiredInstanceCount"] = count      # the scaler's choice stays
            changes.append(change)
            said.append(f"{variant_name}: weight {change['DesiredWeight']:g}"
                        + ("" if scaled else f", {want} instance(s)"))
        if not changes:
            return desc
        self.aws.progress(address, f"setting {'; '.join(said)} of {name}")
        self.aws.call("sagemaker", "update_endpoint_weights_and_capacities", address=address,
                      EndpointName=name, DesiredWeightsAndCapacities=changes)
        return self._wait(name, address, self.schema.timeouts.update)

    @staticmethod
    def _variant(desc: Mapping, name: str = VARIANT) -> dict | None:
        return next((v for v in desc.get("ProductionVariants") or []
                     if v.get("VariantName") == name), None)

    # -- autoscaling ----------------------------------------------------------------------

    def _scaling(self, address: str, name: str) -> dict | None:
        """The live scalable target and our policy: {"min", "max", "target_rps"}, or None."""
        targets = self.aws.call("application-autoscaling", "describe_scalable_targets",
                                address=address, ServiceNamespace="sagemaker",
                                ResourceIds=[scaling_resource(name)],
                                ScalableDimension=SCALABLE_DIMENSION).get("ScalableTargets") or []
        if not targets:
            return None
        policies = self.aws.call("application-autoscaling", "describe_scaling_policies",
                                 address=address, ServiceNamespace="sagemaker",
                                 ResourceId=scaling_resource(name),
                                 ScalableDimension=SCALABLE_DIMENSION,
                                 PolicyNames=[policy_name(name)]).get("ScalingPolicies") or []
        target_rps = None
        if policies:
            value = (policies[0].get("TargetTrackingScalingPolicyConfiguration") or {}) \
                .get("TargetValue")
            target_rps = None if value is None else round(float(value) / 60.0, 6)
        return {"min": targets[0]["MinCapacity"], "max": targets[0]["MaxCapacity"],
                "target_rps": target_rps, "policy": policies[0] if policies else None}

    def _ensure_autoscaling(self, address: str, name: str, attrs: Mapping) -> None:
        target, policy = scaling_requests(name, attrs)
        live = self._scaling(address, name)
        if target is None:
            if live is not None:
                self._deregister(address, name)
            return
        if live is None or (live["min"], live["max"]) != (target["MinCapacity"],
                                                          target["MaxCapacity"]):
            self.aws.call("application-autoscaling", "register_scalable_target", address=address,
                          **target)
        current = (live or {}).get("policy")
        if policy is None:
            if current is not None:
                self.aws.call("application-autoscaling", "delete_scaling_policy", address=address,
                              PolicyName=policy_name(name), ServiceNamespace="sagemaker",
                              ResourceId=scaling_resource(name),
                              ScalableDimension=SCALABLE_DIMENSION)
            return
        tracking = policy["TargetTrackingScalingPolicyConfiguration"]
        found = (current or {}).get("TargetTrackingScalingPolicyConfiguration") or {}
        if any(found.get(k) != v for k, v in tracking.items()):
            self.aws.call("application-autoscaling", "put_scaling_policy", address=address,
                          **policy)

    def _deregister(self, address: str, name: str) -> None:
        """Remove the scalable target (and with it its policies), when there is one."""
        targets = self.aws.call("application-autoscaling", "describe_scalable_targets",
                                address=address, ServiceNamespace="sagemaker",
                                ResourceIds=[scaling_resource(name)],
                                ScalableDimension=SCALABLE_DIMENSION).get("ScalableTargets")
        if not targets:
            return
        try:
            self.aws.call("application-autoscaling", "deregister_scalable_target",
                          address=address, ServiceNamespace="sagemaker",
                          ResourceId=scaling_resource(name), ScalableDimension=SCALABLE_DIMENSION)
        except Missing:
            pass

    # -- read / delete --------------------------------------------------------------------

    def _live(self, address: str, base: Mapping, desc: Mapping, config: Mapping | None,
              autoscaling: dict | None) -> dict:
        """Live attributes: `base` (the spec last applied) overlaid with what AWS reports."""
        name = desc["EndpointName"]
        live = dict(base)
        traffic = {v["VariantName"]: v.get("DesiredWeight", v.get("CurrentWeight"))
                   for v in desc.get("ProductionVariants") or []}
        live.update(url=invocation_url(self.env.config.region, name), arn=desc["EndpointArn"],
                    endpoint_config=desc.get("EndpointConfigName"), traffic=traffic)
        if _is_bandit(base) and set(traffic) == set(declared_traffic(base)):
            # the bandit moves the weights: they are `bandit_weights` (service-managed),
            # and `traffic` stays the declared start
            live["traffic"] = declared_traffic(base)
            live["bandit_weights"] = traffic
        if desc.get("EndpointStatus") == "Failed":
            live["endpoint_config"] = None        # serves nothing: the plan heals it
        config = config or {}
        variant = (config.get("ProductionVariants") or [{}])[0]
        entries = {v.get("VariantName"): v for key in ("ProductionVariants",
                                                       "ShadowProductionVariants")
                   for v in config.get(key) or []}
        variants = endpoint_variants(base)
        versions = {v["name"]: self._served_version(address, v["model"],
                                                    (entries.get(v["name"]) or {}).get("ModelName"))
                    for v in variants}
        live["model_version"] = versions[_main(variants)["name"]]
        if _has_variants(base):
            live["variant_versions"] = versions

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
            running = self._variant(desc, str(variant.get("VariantName") or VARIANT)) or {}
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

    def _served_version(self, address: str, model: Any, model_name: Any) -> Any:
        """The version a variant's Model serves: the planned one when it is the planned
        Model, else read from the name (``...-vN``), else None."""
        planned_name, version, _ = self._target(address, model)
        if model_name == planned_name:
            return version
        match = re.search(r"-v(\d+)$", model_name or "")
        if match and isinstance(model, Mapping) and \
                self.env.model_name(model.get("address", ""), match.group(1)) == model_name:
            return int(match.group(1))
        return None

    # -- experiments ----------------------------------------------------------------------

    def action(self, live: LiveObject, name: str, args: dict) -> dict:
        if name not in ("experiment_records", "experiment_step"):
            raise NotImplementedError(name)
        from . import experiments
        return experiments.action(self, live, name, args)

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
        canary_alarms.delete_alarms(self.env, address)
        ident = self._ident(address)
        for config in list(self.aws.pages("sagemaker", "list_endpoint_configs", "EndpointConfigs",
                                          address=address, NameContains=ident)):
            self._delete_config(config["EndpointConfigName"], address, keep_model=())
        for model in list(self.aws.pages("sagemaker", "list_models", "Models", address=address,
                                         NameContains=f"{ident}-m-")):
            if self.env.owns(self.sagemaker_tags(model["ModelArn"], address), address):
                self.forget("delete_model", address, ModelName=model["ModelName"])
        delete_record(self.env, "endpoint", address)

