"""`training_cluster` on the `sagemaker` provider: a validated compute profile.

SageMaker training has no standing cluster: each training job brings up its own
instances and releases them when it ends.  So a cluster here is a *profile* kept as a
JSON object in the bucket (``clusters/<env.name(address)>.json``, see bucket.py) and read by every
pipeline that runs on it: instance type and count, spot, runtime limits, warm pool and
volume size.  Creating one costs nothing and starts nothing.

`validate` checks the spec against the table in instance_types.py: an unknown instance
type is an error with a did-you-mean, an instance type whose accelerators differ from
`accelerator` / `gpus_per_node` is an error that says what the instance has, and with
no `instance_type` the smallest fitting one is picked (ml.m5.xlarge for CPU).  Plan
computes `gpus_total` (nodes × accelerators per instance) and, when unset,
`instance_type`.  Every change, the accelerator included, is an in-place update: only
the profile is rewritten, and the next training job uses it.

Settings (``settings { }``, unknown keys are errors):

=====================  =====================================================
``warm_pool_seconds``  keep instances warm this long after a job (0..3600, SageMaker's
                       ``KeepAlivePeriodInSeconds``; not with spot)
``volume_gb``          EBS volume per instance, GiB (default 30)
``max_wait_seconds``   spot only: how long a job may wait for spot capacity plus run
                       (``MaxWaitTimeInSeconds``, at least the max runtime)
=====================  =====================================================
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field

from mlform.providers.base import (
    UNKNOWN, Desired, Diagnostic, Facts, KindSchema, LiveObject, Planned, ProviderError,
    Timeouts, contains_unknown, error,
)
from mlform.providers.kit.plans import plan_of
from mlform.specs import did_you_mean

from . import bucket
from . import instance_types as types
from .env import SageMakerEnv, SageMakerHandler, user_tags

__all__ = ["ClusterHandler", "ClusterSettings", "ComputeProfile", "read_profile", "DEFAULT_PROFILE",
           "MAX_RUNTIME_LIMIT", "DEFAULT_MAX_RUNTIME", "S3_TAG_LIMIT", "s3_tag_problem"]

#: SageMaker's ceiling on MaxRuntimeInSeconds (28 days) and its default (1 day)
MAX_RUNTIME_LIMIT = 28 * 24 * 3600
DEFAULT_MAX_RUNTIME = 24 * 3600
#: S3 objects take at most 10 tags; three are mlform's ownership tags
S3_TAG_LIMIT = 10
_SHAPE = ("accelerator", "gpus_per_node", "nodes", "instance_type")


class ClusterSettings(BaseModel):
    """`settings { }` of a sagemaker training cluster."""

    model_config = ConfigDict(extra="forbid")

    warm_pool_seconds: int = Field(0, ge=0, le=3600, description=(
        "Keep the instances warm this long after a job ends, so the next job starts fast "
        "(SageMaker warm pools; not with spot)."))
    volume_gb: int = Field(30, ge=1, le=16384, description="EBS volume per instance, in GiB.")
    max_wait_seconds: int | None = Field(None, ge=1, le=MAX_RUNTIME_LIMIT * 2, description=(
        "Spot only: the longest a job may wait for spot capacity and run, in seconds; "
        "at least the max runtime (default: the max runtime)."))


def s3_tag_problem(address: str, tags: Any) -> Diagnostic | None:
    """S3 object tagging takes 10 tags; mlform's ownership takes 3 of them."""
    if not isinstance(tags, Mapping) or contains_unknown(tags):
        return None
    room = S3_TAG_LIMIT - 3
    if len(tags) > room:
        return error(f"{address} has {len(tags)} tags, more than the {room} an S3 object can "
                     f"carry beside mlform's 3 ownership tags", address=address,
                     hint=f"Keep at most {room} tags on this resource.")
    return None


class ComputeProfile(dict):
    """The profile document as pipelines read it (a dict with a few typed accessors)."""

    @property
    def instance_type(self) -> str:
        return str(self.get("instance_type") or types.DEFAULT_CPU)

    @property
    def instance_count(self) -> int:
        return int(self.get("instance_count") or 1)

    @property
    def spot(self) -> bool:
        return bool(self.get("spot"))

    @property
    def gpus_per_instance(self) -> int:
        return int(self.get("gpus_per_instance") or 0)


#: The compute of a pipeline without a cluster: one ml.m5.xlarge, on demand.
DEFAULT_PROFILE = ComputeProfile(instance_type=types.DEFAULT_CPU, instance_count=1, spot=False,
                          max_runtime_seconds=None, max_wait_seconds=None,
                          warm_pool_seconds=0, volume_gb=30, gpus_per_instance=0)


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _settings(attrs: Mapping[str, Any]) -> ClusterSettings:
    return ClusterSettings.model_validate(dict(attrs.get("settings") or {}))


def resolve(address: str, attrs: Mapping[str, Any]) -> tuple[types.InstanceType | None, Diagnostic | None]:
    """The instance type a cluster runs on (given or picked), or the diagnostic why none."""
    accelerator = str(attrs.get("accelerator") or types.CPU)
    gpus = _int(attrs.get("gpus_per_node"), 0)
    given = attrs.get("instance_type")
    if given:
        found = types.lookup(str(given))
        if found is None:
            suggestion = did_you_mean(str(given), types.INSTANCE_TYPES)
            return None, error(
                f"{address}: {given} is not a SageMaker training instance type mlform knows",
                detail=suggestion, address=address,
                hint="Known families: ml.m5, ml.c5, ml.g4dn, ml.g5, ml.g6, ml.p3, ml.p4d, "
                     "ml.p4de, ml.p5, ml.p5e, ml.p5en, ml.trn1; or leave instance_type unset "
                     "to have one picked.")
        problem = types.mismatch(found, accelerator, gpus)
        if problem is not None:
            fix = ('accelerator = "cpu" with gpus_per_node = 0' if found.is_cpu else
                   f"gpus_per_node = {found.accelerators} with an accelerator that matches "
                   f"{found.device}")
            return None, error(f"{address}: {problem}", address=address,
                               hint=f"Set {fix}, or pick another instance type.")
        return found, None
    picked = types.pick(accelerator, gpus)
    if picked is None:
        return None, error(
            f"{address}: no SageMaker training instance type has {gpus} × {accelerator} "
            f"per node", detail=types.candidates_text(accelerator) + ".", address=address,
            hint="Change gpus_per_node (and nodes) to a count an instance type has.")
    return picked, None


def profile_of(address: str, attrs: Mapping[str, Any], instance: types.InstanceType) -> ComputeProfile:
    settings = _settings(attrs)
    return ComputeProfile(
        address=address, instance_type=instance.name,
        instance_count=_int(attrs.get("nodes"), 1), spot=bool(attrs.get("spot")),
        max_runtime_seconds=attrs.get("max_runtime_seconds"),
        max_wait_seconds=settings.max_wait_seconds,
        warm_pool_seconds=settings.warm_pool_seconds, volume_gb=settings.volume_gb,
        accelerator=str(attrs.get("accelerator") or types.CPU),
        gpus_per_instance=instance.accelerators, attributes=dict(attrs))


def read_profile(env: SageMakerEnv, cluster: Any, *, address: str = "") -> ComputeProfile:
    """The profile a pipeline's `cluster` (a reference, an address, or None) names.

    None is the default compute (one ml.m5.xlarge).  A cluster whose profile is not
    in the bucket (not applied yet, or deleted) is an error naming it.
    """
    cluster_address = cluster.get("address") if isinstance(cluster, Mapping) else cluster
    if not cluster_address:
        return ComputeProfile(DEFAULT_PROFILE)
    key = bucket.cluster_profile(env, str(cluster_address))
    found = env.store.get_json(key, address=address)
    if not isinstance(found, dict):
        raise ProviderError(f"{address}: the profile of {cluster_address} is not in "
                            f"s3://{env.config.bucket}/{key}; apply {cluster_address} first",
                            address=address)
    return ComputeProfile(found)


class ClusterHandler(SageMakerHandler):
    """`training_cluster`: a compute profile in S3, checked against the instance table."""

    schema = KindSchema(settings_model=ClusterSettings, computed=("gpus_total", "instance_type"),
                        timeouts=Timeouts(create=120.0, update=120.0, delete=120.0))

    def key(self, address: str) -> str:
        return bucket.cluster_profile(self.env, address)

    def uri(self, address: str) -> str:
        return f"s3://{self.env.config.bucket}/{self.key(address)}"

    # -- plan ------------------------------------------------------------------

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        address, attrs = desired.address, desired.attributes
        found: list[Diagnostic] = []
        tag_problem = s3_tag_problem(address, attrs.get("tags"))
        found += [tag_problem] if tag_problem else []
        if not contains_unknown({k: attrs.get(k) for k in _SHAPE}):
            problem = resolve(address, attrs)[1]
            found += [problem] if problem else []
        if not found and not contains_unknown(attrs):
            found += self._limits(address, attrs)
        return found

    @staticmethod
    def _limits(address: str, attrs: Mapping[str, Any]) -> list[Diagnostic]:
        settings = _settings(attrs)
        runtime = _int(attrs.get("max_runtime_seconds"), DEFAULT_MAX_RUNTIME)
        found = []
        if runtime > MAX_RUNTIME_LIMIT:
            found.append(error(f"{address}: max_runtime_seconds = {runtime} is more than "
                               f"SageMaker's limit of {MAX_RUNTIME_LIMIT} (28 days)",
                               address=address))
        if attrs.get("spot"):
            if settings.warm_pool_seconds:
                found.append(error(f"{address}: warm pools do not work with spot training "
                                   f"(settings.warm_pool_seconds = {settings.warm_pool_seconds}"
                                   f" with spot = true)", address=address,
                                   hint="Set warm_pool_seconds = 0, or spot = false."))
            wait = settings.max_wait_seconds
            if wait is not None and wait < runtime:
                found.append(error(f"{address}: settings.max_wait_seconds = {wait} is less than "
                                   f"the max runtime {runtime}; SageMaker requires the wait to "
                                   f"cover the runtime", address=address))
        elif settings.max_wait_seconds is not None:
            found.append(error(f"{address}: settings.max_wait_seconds applies only to spot "
                               f"training (spot = true)", address=address))
        return found

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        attrs = desired.attributes
        if contains_unknown({k: attrs.get(k) for k in _SHAPE}):
            return plan_of(desired, {"gpus_total": UNKNOWN,
                                     "instance_type": attrs.get("instance_type", UNKNOWN)})
        return plan_of(desired, self._computed(desired.address, attrs))

    def _computed(self, address: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
        instance, problem = resolve(address, attrs)
        if instance is None:
            raise ProviderError(problem.summary, address=address,
                                service_message=problem.detail)
        return {"instance_type": instance.name,
                "gpus_total": instance.accelerators * _int(attrs.get("nodes"), 1)}

    # -- apply -----------------------------------------------------------------

    def create(self, planned: Planned) -> LiveObject:
        address, attrs = planned.address, dict(planned.attributes)
        attrs.update({k: v for k, v in self._computed(address, attrs).items()
                      if attrs.get(k) is UNKNOWN or k not in attrs})
        key = self.key(address)
        tags = self.env.store.tags(key, address=address)
        if tags is not None:   # there already: ours (a retried create), or refused
            self.env.check_owner(tags, address, f"cluster profile {self.uri(address)}")
        instance = types.lookup(attrs["instance_type"])
        bucket.put_json(self.env, key, profile_of(address, attrs, instance), address=address,
                        user_tags=attrs.get("tags"))
        self.aws.progress(address, f"profile {instance.name} × {_int(attrs.get('nodes'), 1)} "
                                   f"written")
        return LiveObject(address, planned.kind, self.uri(address), attrs)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        return self.create(planned)

    def read(self, prior: LiveObject) -> LiveObject | None:
        address = prior.address
        found = self.env.store.get_json(self.key(address), address=address)
        if not isinstance(found, dict):
            return None
        tags = self.env.store.tags(self.key(address), address=address) or {}
        self.env.check_owner(tags, address, f"cluster profile {self.uri(address)}")
        attrs = dict(found.get("attributes") or {})
        live_tags = user_tags(tags)
        if live_tags != (attrs.get("tags") or {}):
            attrs["tags"] = live_tags
        return LiveObject(address, prior.kind, self.uri(address), attrs)

    def delete(self, prior: LiveObject) -> None:
        address = prior.address
        tags = self.env.store.tags(self.key(address), address=address)
        if tags is None:
            return   # gone already
        self.env.check_owner(tags, address, f"cluster profile {self.uri(address)}")
        self.env.store.delete([self.key(address)], address=address)
