"""The `model` kind of the `sagemaker` provider: the Model Registry plus a deployable Model.

Objects made for one model address (names from `SageMakerEnv`):

* a **model package group** ``env.name(address)``, carrying the ownership tags and the
  user's `tags` (versioned packages cannot be tagged on their own: they share the group's);
* one **model package** per artifact: version = its ``ModelPackageVersion``, one container
  (the serving image, ``ModelDataUrl`` = the artifact), approval mapped from `approval`,
  and ``CustomerMetadataProperties`` ``mlform:stage`` / ``mlform:artifact`` /
  ``mlform:description``;
* one **SageMaker Model** per version, ``env.model_name(address, version)``, whose primary
  container is the package.  Models are immutable, so a new version gets a new Model; the
  Models of earlier versions are kept (an endpoint may still serve them) until delete.

A new artifact (or serving image) registers a new version; an artifact already registered
in the group is that version again (a retried create, or an artifact rolled back, never
duplicates).  `stage`, `approval` and `description` change in place (UpdateModelPackage):
SageMaker keeps ModelPackageDescription immutable, so the description that can change is
the ``mlform:description`` metadata property (256 characters at most).  `stage` is an
alias: it moves from the version the resource pointed at to the new one.

A version registered from a sagemaker pipeline's training job also records the job's
lineage (`kit.champions.run_lineage`, read from the run record ``runs/<pipeline>/<job>.json``
next to the artifact ``runs/<pipeline>/<job>/output/model.tar.gz``) as metadata:
``mlform:pipeline``, ``mlform:run``, ``mlform:code``, ``mlform:fingerprint``,
``mlform:data:<input>`` and ``mlform:metric:<name>`` (the value as text); and the
pipeline's run folder lists the models fed from it (``runs/<pipeline>/models.json``),
so a champion/challenger gate finds the stage's version and its recorded metrics
(`champions`) without listing every group.

The resource's id is the ARN of the model package it points at (`mlform import` also
takes the group's name or ARN: the newest version).  Computed: `version`, `uri` (that
ARN), `model_name`, `group_arn`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field

from mlform.providers.base import (
    UNKNOWN, Desired, Diagnostic, FactKey, Facts, KindSchema, LiveObject, Planned,
    ProviderError, Timeouts, contains_unknown, error,
)
from mlform.providers.kit.artifacts import artifact_uri
from mlform.providers.kit.champions import champion
from mlform.providers.kit.names import short_hash
from mlform.providers.kit.plans import plan_of

from . import bucket
from .bucket import delete_record, load_record, save_record
from .env import SageMakerEnv, SageMakerHandler, user_tags

__all__ = ["ModelHandler", "ModelSettings", "APPROVAL", "artifact_uri", "champions",
           "lineage_metadata", "metadata_lineage", "group_request", "model_request",
           "is_package_arn"]

COMPUTED = ("version", "uri", "model_name", "group_arn")
APPROVAL = {"approved": "Approved", "pending": "PendingManualApproval", "rejected": "Rejected"}
_APPROVAL_BACK = {v: k for k, v in APPROVAL.items()}
META_STAGE, META_ARTIFACT = "mlform:stage", "mlform:artifact"
META_DESCRIPTION = "mlform:description"
# SageMaker's limit on a CustomerMetadataProperties value.
META_LIMIT = 256
CONTENT_TYPES = ["application/json"]
# SageMaker's limit on the entries of CustomerMetadataProperties; what mlform's own
# entries (stage, artifact, description, pipeline, run, code, fingerprint) leave over
META_ENTRIES, META_OWN = 50, 7
_ARTIFACT_TAIL = "/output/model.tar.gz"


def lineage_metadata(lineage: Mapping[str, Any] | None) -> dict[str, str]:
    """A run's lineage as CustomerMetadataProperties (values over the limit left out)."""
    if not lineage:
        return {}
    meta = {"mlform:pipeline": lineage.get("pipeline"), "mlform:run": lineage.get("run_id"),
            "mlform:code": lineage.get("code_digest"),
            "mlform:fingerprint": lineage.get("fingerprint")}
    room = META_ENTRIES - META_OWN
    for name, digest in sorted((lineage.get("data_digests") or {}).items())[:room // 2]:
        meta[f"mlform:data:{name}"] = digest
    metrics = sorted((lineage.get("metrics") or {}).items())
    for name, value in metrics[:room - len(meta) + 4]:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            meta[f"mlform:metric:{name}"] = repr(float(value))
    return {k: str(v) for k, v in meta.items()
            if v is not None and len(k) <= 128 and len(str(v)) <= META_LIMIT}


def metadata_lineage(meta: Mapping[str, str]) -> dict[str, Any]:
    """The lineage back from a package's CustomerMetadataProperties."""
    def number(text: str) -> float | None:
        try:
            return float(text)
        except ValueError:
            return None
    return {"pipeline": meta.get("mlform:pipeline"), "run_id": meta.get("mlform:run"),
            "code_digest": meta.get("mlform:code"), "fingerprint": meta.get("mlform:fingerprint"),
            "data_digests": {k[len("mlform:data:"):]: v for k, v in meta.items()
                             if k.startswith("mlform:data:")},
            "metrics": {k[len("mlform:metric:"):]: n for k, v in meta.items()
                        if k.startswith("mlform:metric:") and (n := number(v)) is not None}}


def champions(handler: SageMakerHandler, pipeline: str, stage: str,
              model: str | None) -> list[dict]:
    """The versions in `stage` a run of `pipeline` must beat: of the model `model`, else of
    every model registered from `pipeline` (``runs/<pipeline>/models.json``)."""
    env = handler.env
    if model is not None:
        models = [model]
    else:
        found = env.store.get_json(_models_key(env, pipeline), address=pipeline)
        models = sorted(found) if isinstance(found, list) else []
    out = []
    for address in models:
        for summary in ModelHandler(env)._packages(address):
            desc = handler.aws.find("sagemaker", "describe_model_package", address=pipeline,
                                    ModelPackageName=summary.get("ModelPackageArn"))
            meta = (desc or {}).get("CustomerMetadataProperties") or {}
            if meta.get(META_STAGE) == stage:
                out.append(champion(address, desc["ModelPackageVersion"], metadata_lineage(meta)))
                break
    return out


def _models_key(env: Any, pipeline: str) -> str:
    return bucket.runs_prefix(env, pipeline) + "models.json"


def group_request(env: SageMakerEnv, address: str, user: Mapping[str, str]) -> dict:
    """CreateModelPackageGroup's request for the model `address` (create makes it, the
    Pulumi export declares it)."""
    return {"ModelPackageGroupName": env.name(address),
            "ModelPackageGroupDescription": f"mlform {address}",
            "Tags": env.tags(address, user)}


def model_request(env: SageMakerEnv, name: str, package_arn: Any, address: str,
                  user: Mapping[str, str]) -> dict:
    """CreateModel's request: the SageMaker Model `name` serving the model package
    `package_arn`, owned by `address` (a model's Model of one version, or an endpoint's
    own Model of a package ARN; the Pulumi export declares the same)."""
    return {"ModelName": name, "PrimaryContainer": {"ModelPackageName": package_arn},
            "ExecutionRoleArn": env.config.role_arn, "Tags": env.tags(address, user)}


def is_package_arn(text: Any) -> bool:
    """Is `text` a model package's ARN (rather than its group's name or ARN)?"""
    return isinstance(text, str) and ":model-package/" in text


class ModelSettings(BaseModel):
    """`settings { }` of a sagemaker model."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(
        None, min_length=1, description="Serving container image of this model's versions; "
                                        "default: the provider's serving_image.")


class ModelHandler(SageMakerHandler):
    """`model` resources: a model package group, a package per version, a Model per version."""

    schema = KindSchema(settings_model=ModelSettings, replace_paths=(), computed=COMPUTED,
                        service_managed=(),
                        timeouts=Timeouts(create=900.0, update=900.0, delete=900.0))

    # -- names and lookups (no side effects) --------------------------------------------

    def _group(self, address: str) -> str:
        return self.env.name(address)

    def _image(self, attrs: Mapping) -> Any:
        settings = attrs.get("settings") or {}
        if contains_unknown(settings):
            return UNKNOWN
        return settings.get("image") or self.env.config.image("serving")

    def _ident(self, address: str) -> str:
        # the hash `SageMakerEnv.name` puts into every name it makes for this address
        return short_hash(self.env.context.stack, self.env.context.env, address)

    def _describe(self, arn: str | None, address: str) -> dict | None:
        if not arn:
            return None
        return self.aws.find("sagemaker", "describe_model_package", address=address,
                             ModelPackageName=arn)

    def _packages(self, address: str) -> list[dict]:
        """Summaries of the group's packages, newest version first."""
        try:
            found = list(self.aws.pages("sagemaker", "list_model_packages",
                                        "ModelPackageSummaryList", address=address,
                                        ModelPackageGroupName=self._group(address)))
        except ProviderError:
            # a group that does not exist lists as an error on AWS, as nothing on moto
            if self.aws.find("sagemaker", "describe_model_package_group", address=address,
                             ModelPackageGroupName=self._group(address)) is None:
                return []
            raise
        return sorted(found, key=lambda p: p.get("ModelPackageVersion") or 0, reverse=True)

    @staticmethod
    def _registers(desc: dict | None, uri: str, image: str) -> bool:
        """Is `desc` a usable package of (artifact, image)?"""
        if not desc or desc.get("ModelPackageStatus") in ("Failed", "Deleting"):
            return False
        containers = (desc.get("InferenceSpecification") or {}).get("Containers") or [{}]
        return containers[0].get("ModelDataUrl") == uri and containers[0].get("Image") == image

    def _find_package(self, address: str, uri: str, image: str,
                      hint: str | None = None) -> dict | None:
        """The package of this group registered for (artifact, image), if any."""
        first = self._describe(hint, address)
        if self._registers(first, uri, image) and \
                first.get("ModelPackageGroupName") == self._group(address):
            return first
        for summary in self._packages(address):
            if summary.get("ModelPackageArn") == hint:
                continue
            desc = self._describe(summary.get("ModelPackageArn"), address)
            if self._registers(desc, uri, image):
                return desc
        return None

    # -- facts --------------------------------------------------------------------------

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> Sequence[FactKey]:
        before = dict(prior.attributes) if prior is not None else None
        attrs = desired.attributes
        uri, image = artifact_uri(attrs.get("artifact")), self._image(attrs)
        if (before is None or before.get("version") is None or contains_unknown(uri)
                or contains_unknown(image) or not isinstance(uri, str)
                or (artifact_uri(before.get("artifact")) == uri and self._image(before) == image)):
            return ()
        return (FactKey("model", "packages", (desired.address,)),)

    def read_facts(self, keys: Sequence[FactKey]) -> dict[FactKey, Any]:
        """The group's package descriptions, newest version first."""
        return {key: [desc for summary in self._packages(key.args[0])
                      if (desc := self._describe(summary.get("ModelPackageArn"), key.args[0]))]
                for key in keys}

    # -- pure half ----------------------------------------------------------------------

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        found: list[Diagnostic] = []
        attrs, address = desired.attributes, desired.address
        uri = artifact_uri(attrs.get("artifact"))
        if isinstance(uri, str) and not uri.startswith("s3://"):
            found.append(error(
                f"SageMaker cannot register the artifact of {address}",
                detail=f'"{uri}" is not an s3:// URI; SageMaker loads model data from S3.',
                address=address,
                hint="Point artifact at a sagemaker pipeline's model_uri or an s3:// object."))
        description = attrs.get("description")
        if isinstance(description, str) and len(description) > META_LIMIT:
            found.append(error(
                f"The description of {address} is too long for SageMaker",
                detail=f"It has {len(description)} characters; SageMaker keeps at most "
                       f"{META_LIMIT} in a model package's metadata.", address=address))
        return found

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        address = desired.address
        attrs = dict(desired.attributes)
        attrs.setdefault("approval", "approved")     # read always reports it
        computed: dict[str, Any] = {key: UNKNOWN for key in COMPUTED}
        reasons: tuple[str, ...] = ()
        before = dict(prior.attributes) if prior is not None else None
        uri, image = artifact_uri(attrs.get("artifact")), self._image(attrs)
        if before is not None and before.get("version") is not None \
                and not contains_unknown(uri) and not contains_unknown(image):
            computed["group_arn"] = before.get("group_arn", UNKNOWN)
            if artifact_uri(before.get("artifact")) == uri and self._image(before) == image:
                computed.update(version=before["version"], uri=before.get("uri"),
                                model_name=self.env.model_name(address, before["version"]))
            elif isinstance(uri, str):
                found = next((d for d in facts[FactKey("model", "packages", (address,))]
                              if self._registers(d, uri, image)), None)
                if found is not None:
                    version = found["ModelPackageVersion"]
                    computed.update(version=version, uri=found["ModelPackageArn"],
                                    model_name=self.env.model_name(address, version))
                    reasons = (f"artifact {uri} is already registered as version {version}",)
                else:
                    what = ("artifact" if artifact_uri(before.get("artifact")) != uri
                            else "serving image")
                    reasons = (f"new {what} registers a new model package version "
                               f"(after version {before['version']})",)
        return plan_of(Desired(address, desired.kind, desired.name, attrs), computed,
                       reasons=reasons)

    # -- apply --------------------------------------------------------------------------

    def create(self, planned: Planned) -> LiveObject:
        return self._apply(planned, None)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        return self._apply(planned, prior)

    def _apply(self, planned: Planned, prior: LiveObject | None) -> LiveObject:
        address, attrs = planned.address, dict(planned.attributes)
        uri, image = artifact_uri(attrs.get("artifact")), self._image(attrs)
        if not isinstance(uri, str) or not uri.startswith("s3://"):
            raise ProviderError(f"the artifact of {address} is not an s3:// URI: {uri!r}",
                                address=address)
        user = dict(attrs.get("tags") or {})
        group = self._ensure_group(address, user, attrs.get("description"))
        before = dict(prior.attributes) if prior is not None else {}
        hint = (prior.id if prior is not None else None) or before.get("uri")
        package = self._find_package(address, uri, image, hint=hint)
        if package is None:
            package = self._register(address, uri, image, attrs)
        else:
            self._update_package(address, package, attrs, uri)
        arn, version = package["ModelPackageArn"], package["ModelPackageVersion"]
        old_arn = before.get("uri") or hint
        if old_arn and old_arn != arn and before.get("stage"):
            self._drop_stage(address, old_arn, before["stage"])
        model_name = self._ensure_model(address, arn, version, user)
        final = {**attrs, "version": version, "uri": arn, "model_name": model_name,
                 "group_arn": group["ModelPackageGroupArn"]}
        save_record(self.env, "model", address, final)
        return LiveObject(address, planned.kind, arn, final)

    def _ensure_group(self, address: str, user: Mapping[str, str],
                      description: str | None) -> dict:
        name = self._group(address)
        group = self.aws.find("sagemaker", "describe_model_package_group", address=address,
                              ModelPackageGroupName=name)
        if group is None:
            self.aws.call("sagemaker", "create_model_package_group", address=address,
                          **group_request(self.env, address, user))
            group = self.aws.call("sagemaker", "describe_model_package_group", address=address,
                                  ModelPackageGroupName=name)
            return group
        tags = self.sagemaker_tags(group["ModelPackageGroupArn"], address)
        self.env.check_owner(tags, address, f"model package group {name}")
        self.heal_tags(group["ModelPackageGroupArn"], tags, self.env.tags(address, user),
                       address)
        return group

    @staticmethod
    def _metadata(attrs: Mapping, uri: str) -> dict[str, str]:
        meta: dict[str, str] = {}
        if len(uri) <= META_LIMIT:     # ModelDataUrl is the authority; this is for people
            meta[META_ARTIFACT] = uri
        if attrs.get("stage"):
            meta[META_STAGE] = str(attrs["stage"])
        if attrs.get("description"):
            meta[META_DESCRIPTION] = str(attrs["description"])
        return meta

    def _lineage(self, address: str, uri: str) -> dict | None:
        """The lineage of the training job whose output `uri` is (its run record), if any."""
        prefix = f"s3://{self.env.config.bucket}/"
        if not (uri.startswith(prefix) and uri.endswith(_ARTIFACT_TAIL)):
            return None
        record = self.env.store.get_json(uri[len(prefix):-len(_ARTIFACT_TAIL)] + ".json",
                                         address=address)
        lineage = record.get("lineage") if isinstance(record, dict) else None
        return lineage if isinstance(lineage, dict) else None

    def _fed_by(self, address: str, lineage: Mapping[str, Any] | None) -> None:
        """List this model in its pipeline's models.json (where the gate looks)."""
        pipeline = (lineage or {}).get("pipeline")
        if not isinstance(pipeline, str):
            return
        key = _models_key(self.env, pipeline)
        found = self.env.store.get_json(key, address=address)
        listed = sorted(found) if isinstance(found, list) else []
        if address not in listed:
            bucket.put_json(self.env, key, sorted([*listed, address]), address=address)

    def _register(self, address: str, uri: str, image: str, attrs: Mapping) -> dict:
        self.aws.progress(address, f"registering {uri} in {self._group(address)}")
        lineage = self._lineage(address, uri)
        self._fed_by(address, lineage)
        kwargs: dict[str, Any] = dict(
            ModelPackageGroupName=self._group(address),
            InferenceSpecification={
                "Containers": [{"Image": image, "ModelDataUrl": uri}],
                "SupportedContentTypes": CONTENT_TYPES,
                "SupportedResponseMIMETypes": CONTENT_TYPES},
            ModelApprovalStatus=APPROVAL[attrs.get("approval", "approved")],
            CustomerMetadataProperties={**lineage_metadata(lineage),
                                        **self._metadata(attrs, uri)})
        if attrs.get("description"):
            kwargs["ModelPackageDescription"] = str(attrs["description"])
        arn = self.aws.call("sagemaker", "create_model_package", address=address,
                            **kwargs)["ModelPackageArn"]
        return self.aws.wait(
            lambda: self._describe(arn, address), "ModelPackageStatus", address=address,
            what=f"model package {arn}", ready=("Completed",),
            failed=("Failed",), timeout=self.schema.timeouts.create)

    def _update_package(self, address: str, package: dict, attrs: Mapping, uri: str) -> None:
        """Approval and metadata in place (UpdateModelPackage), only when they differ."""
        want_meta = self._metadata(attrs, uri)
        live_meta = dict(package.get("CustomerMetadataProperties") or {})
        ours = (META_STAGE, META_ARTIFACT, META_DESCRIPTION)
        remove = [k for k in ours if k in live_meta and k not in want_meta]
        kwargs: dict[str, Any] = {}
        approval = APPROVAL[attrs.get("approval", "approved")]
        if package.get("ModelApprovalStatus") != approval:
            kwargs["ModelApprovalStatus"] = approval
        if any(live_meta.get(k) != v for k, v in want_meta.items()) or remove:
            # the full set: AWS merges it, some emulators replace with it
            kwargs["CustomerMetadataProperties"] = {
                **{k: v for k, v in live_meta.items() if k not in ours}, **want_meta}
            if remove:
                kwargs["CustomerMetadataPropertiesToRemove"] = remove
        if kwargs:
            # the approval always goes along: an update without it resets it on some
            # emulators, and on AWS re-stating the current status is a no-op
            kwargs["ModelApprovalStatus"] = approval
            self.aws.call("sagemaker", "update_model_package", address=address,
                          ModelPackageArn=package["ModelPackageArn"], **kwargs)

    def _drop_stage(self, address: str, arn: str, stage: str) -> None:
        """The stage alias moved to another version: take it off the one it was on."""
        old = self._describe(arn, address)
        meta = dict((old or {}).get("CustomerMetadataProperties") or {})
        if old is None or meta.get(META_STAGE) != stage:
            return
        meta.pop(META_STAGE)
        self.aws.call("sagemaker", "update_model_package", address=address, ModelPackageArn=arn,
                      ModelApprovalStatus=old.get("ModelApprovalStatus") or "Approved",
                      CustomerMetadataProperties=meta,
                      CustomerMetadataPropertiesToRemove=[META_STAGE])

    def _ensure_model(self, address: str, arn: str, version: int,
                      user: Mapping[str, str]) -> str:
        name = self.env.model_name(address, version)
        found = self.aws.find("sagemaker", "describe_model", address=address, ModelName=name)
        if found is None:
            self.aws.call("sagemaker", "create_model", address=address,
                          **model_request(self.env, name, arn, address, user))
            return name
        container = found.get("PrimaryContainer") or {}
        if container.get("ModelPackageName") not in (arn, None):
            raise ProviderError(
                f"SageMaker Model {name} exists but serves {container.get('ModelPackageName')}, "
                f"not {arn}; refusing to reuse it", address=address,
                service_message="Delete that Model (or the whole model resource) and apply again.")
        return name

    # -- read / delete --------------------------------------------------------------------

    def read(self, prior: LiveObject) -> LiveObject | None:
        address = prior.address
        name = self._group(address)
        group = self.aws.find("sagemaker", "describe_model_package_group", address=address,
                              ModelPackageGroupName=name)
        if group is None:
            return None
        tags = self.sagemaker_tags(group["ModelPackageGroupArn"], address)
        self.env.check_owner(tags, address, f"model package group {name}", untagged_ok=True)
        base = dict(prior.attributes) or dict(load_record(self.env, "model", address)
                                              .get("attributes") or {})
        arn = prior.id or base.get("uri")
        if arn and not is_package_arn(arn):
            # imported by its group (`mlform import model.x GROUP`): the newest version
            if arn not in (name, group["ModelPackageGroupArn"]):
                return None
            arn = None
        if arn:
            package = self._describe(arn, address)
        else:
            newest = self._packages(address)[:1]
            package = self._describe(newest[0]["ModelPackageArn"], address) if newest else None
        if package is None or package.get("ModelPackageGroupName") not in (None, name):
            return None
        container = ((package.get("InferenceSpecification") or {}).get("Containers") or [{}])[0]
        meta = package.get("CustomerMetadataProperties") or {}
        live = dict(base) if base else {"artifact": container.get("ModelDataUrl")}
        version = package["ModelPackageVersion"]
        model_name = self.env.model_name(address, version)
        if self.aws.find("sagemaker", "describe_model", address=address,
                         ModelName=model_name) is None:
            model_name = None        # deleted outside mlform: the plan re-creates it
        live.update(version=version, uri=package["ModelPackageArn"], model_name=model_name,
                    group_arn=group["ModelPackageGroupArn"],
                    approval=_APPROVAL_BACK.get(package.get("ModelApprovalStatus"),
                                                package.get("ModelApprovalStatus")))
        for key, meta_key in (("stage", META_STAGE), ("description", META_DESCRIPTION)):
            if meta.get(meta_key):
                live[key] = meta[meta_key]
            else:
                live.pop(key, None)
        theirs = user_tags(tags)
        if "tags" in base or theirs:
            live["tags"] = theirs
        return LiveObject(address, prior.kind, package["ModelPackageArn"], live)

    def delete(self, prior: LiveObject) -> None:
        address = prior.address
        # Models of every version (found by the address hash in their names, owned by tag)
        for model in list(self.aws.pages("sagemaker", "list_models", "Models", address=address,
                                         NameContains=f"{self._ident(address)}-v")):
            if self.env.owns(self.sagemaker_tags(model["ModelArn"], address), address):
                self.forget("delete_model", address, ModelName=model["ModelName"])
        for summary in self._packages(address):
            self.forget("delete_model_package", address,
                         ModelPackageName=summary["ModelPackageArn"])
        self.forget("delete_model_package_group", address,
                     ModelPackageGroupName=self._group(address))
        delete_record(self.env, "model", address)
