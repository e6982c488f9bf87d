"""`endpoint` on Kubernetes: a Deployment and a Service (and an HPA) serving a model.

=====================  ============================================================
Deployment ``<name>``  pods running ``pod serve`` (`pod.py`): the model version fetched
                       from storage, served by mlform's OIP v2 server (`kit.serving`)
                       on port 8080, readiness ``/v2/health/ready``, liveness
                       ``/v2/health/live``; `replicas` unless `autoscaling` is set
Service ``<name>``     port 80 to the pods of both tracks (stable and canary);
                       ``settings.cluster_ip`` pins its address
HPA ``<name>``         from `autoscaling` (min, max; CPU utilisation target)
=====================  ============================================================

A new model version is a rolling update: the Deployment's template changes and the
apply waits until the rollout is complete (observedGeneration, updated and available
replicas).  With ``rollout.strategy = "canary"`` a second Deployment
``<name>-canary`` runs the new version behind the same Service (about
`canary_percent` of the replicas, at least one) for `bake_seconds`; if its pods stay
ready the stable Deployment is rolled to the new version and the canary removed
(promote), otherwise the canary is removed and the apply fails (roll back).
`url` is the Service's in-cluster URL of the model.  With `capture`, each serving pod
uploads the requests it captured to ``capture/<name>/<pod>.jsonl`` in storage, where the
endpoint's monitors read them.

Variants and experiments: every serving pod runs the same server as `local` and serves
every variant (its work lists one model entry per variant, with its weight and role, and
the `experiment`), so the server routes: weights, sticky A/B by a hash that is the same in
every pod, shadow mirroring, bandit.  A change of variants, weights or experiment changes
the pod template: a rolling update (the plan says why, `kit.variants.variant_changes`);
variants roll all at once (the canary Deployment is for single-model endpoints).  With an
experiment each pod uploads its rewards to ``feedback/<name>/<pod>.jsonl`` beside the
capture; `experiments.py` reads both for `mlform experiment report`.  A bandit needs
``replicas = 1`` (and no autoscaling): a reward must reach the pod that answered the
request (the ids it issued are its own), which a Service spreading requests over several
pods does not do.  `model_version` is the version of the heaviest live variant;
`variant_versions` (variant -> version) is added with `variants`.

KServe: with ``settings { serving = "kserve" }`` the endpoint is one KServe
``InferenceService`` ``<name>`` (``serving.kserve.io/v1beta1``) instead of the Deployment,
Service and HPA; KServe must be installed (without its CRD the plan's dry run is an error
saying so).  Its predictor runs the same serving container as a custom container (named
``kserve-container``, port name ``http1`` and ``PROTOCOL=v2``, as KServe and Knative want
them, so their defaulting is not drift); ``minReplicas`` / ``maxReplicas`` are
`autoscaling`'s min and max, or `replicas` for both (``cpu_target_percent`` and
``cluster_ip`` do not apply).  With ``rollout.strategy = "canary"`` KServe does the
canary itself (no canary Deployment, no bake): ``canaryTrafficPercent`` is
`canary_percent`, so a new model version takes that share of the traffic beside the
previous revision until the strategy is changed, which promotes it (KServe does this in
its Serverless mode only).  mlform does not wait for the InferenceService's ``Ready``
condition: the apply ends once the API server has stored it, and readiness is KServe's
to report (``kubectl get inferenceservice``).  `url` is
``http://<name>.<namespace>.svc.cluster.local/v2/models/<model>``, the Service KServe
makes in Serverless mode (in RawDeployment mode it is ``<name>-predictor``).  Drift is
read on the InferenceService's fields as on any object, and `replicas` from its
``minReplicas``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from mlform.providers.base import (
    Desired, Diagnostic, Facts, KindSchema, LiveObject, Planned, ProviderError, Timeouts,
    contains_unknown, error, warning,
)
from mlform.providers.kit.variants import (
    endpoint_variants, experiment_of, variant_changes,
)

from .env import KubeHandler
from .pods import pod_failure, pod_spec

__all__ = ["EndpointHandler", "EndpointSettings", "PORT", "capture_prefix", "feedback_prefix",
           "served_name", "served_models", "variant_versions"]

PORT = 8080
TRACK = "mlform.dev/track"
VERSION = "mlform.dev/model-version"
ROLE = "mlform.dev/role"
#: (apiVersion, kind) of KServe's InferenceService
KSERVE = ("serving.kserve.io/v1beta1", "InferenceService")


class EndpointSettings(BaseModel):
    """`settings { }` of an endpoint on Kubernetes."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(None, min_length=1, description="Serving image; default: the "
                                                             "provider's.")
    cpu: str = Field("500m", description="CPU each serving pod requests.")
    memory: str = Field("1Gi", description="Memory each serving pod requests.")
    cluster_ip: str | None = Field(None, description="Pin the Service's cluster IP (it "
                                                     "cannot change once set).")
    cpu_target_percent: int = Field(70, ge=1, le=100, description="HPA CPU utilisation "
                                                                 "target.")
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads per pod.")
    schedule_timeout_seconds: float = Field(
        300.0, gt=0, description="How long a serving pod may stay unschedulable before the "
                                 "rollout fails (a canary is then rolled back).")
    capture_upload_seconds: float = Field(30.0, gt=0, description="How often a serving pod "
                                                                  "uploads its captured "
                                                                  "requests to storage.")
    serving: Literal["deployment", "kserve"] = Field(
        "deployment", description="What serves the model: a Deployment, Service and HPA of "
                                  "mlform's, or a KServe InferenceService (KServe must be "
                                  "installed).")


def capture_prefix(env: Any, endpoint_address: str) -> str:
    """Storage key prefix of an endpoint's captured requests (ends in /): each serving pod
    uploads its capture there, monitors read it."""
    return env.store.key("capture", env.name(endpoint_address)) + "/"


def served_name(address: str) -> str:
    """The model name the server answers to: the endpoint's own name (``endpoint.fraud``
    serves ``fraud``, as on `local`), spelled for a URL path."""
    name = address.rsplit("endpoint.", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "model"


def feedback_prefix(env: Any, endpoint_address: str) -> str:
    """Storage key prefix of an experiment's rewards (ends in /): each serving pod uploads
    its feedback log there.  Beside the capture prefix, not under it: a monitor reads
    every object under the capture prefix as captured requests."""
    return env.store.key("feedback", env.name(endpoint_address)) + "/"


def model_of(attrs: Mapping[str, Any]) -> tuple[int, str]:
    """(version, storage URI) of the model an endpoint serves."""
    model = attrs.get("model")
    if isinstance(model, Mapping):
        uri = model.get("uri") or model.get("artifact") or ""
        return int(model.get("version") or 1), str(uri)
    return 1, str(model or "")


def _has_variants(attrs: Mapping[str, Any]) -> bool:
    return isinstance(attrs.get("variants"), Mapping) and bool(attrs["variants"])


def served_models(attrs: Mapping[str, Any]) -> list[dict]:
    """The serving pod's model entries: ``{"version", "uri", "weight"}`` of the one model
    of a single-model endpoint (as before variants existed, so its pod template stays),
    else one per variant with ``"variant"``, ``"role"`` and ``"framework"`` too.  A model
    that says its framework and is not torch (the server's default) names it."""
    if not _has_variants(attrs):
        version, uri = model_of(attrs)
        framework = _framework(attrs.get("model"))
        return [{"version": version, "uri": uri, "weight": 100,
                 **({"framework": framework} if framework != "torch" else {})}]
    entries = []
    for variant in endpoint_variants(attrs):
        version, uri = model_of({"model": variant["model"]})
        entries.append({"variant": variant["name"], "role": variant["role"],
                        "weight": 0 if variant["role"] == "shadow" else variant["weight"],
                        "version": version, "uri": uri,
                        "framework": _framework(variant["model"])})
    return entries


def _framework(model: Any) -> str:
    return str(model.get("framework") or "torch") if isinstance(model, Mapping) else "torch"


def variant_versions(attrs: Mapping[str, Any]) -> dict[str, int]:
    """Variant -> the model version it serves (``primary`` for a single-model endpoint)."""
    return {v["name"]: model_of({"model": v["model"]})[0] for v in endpoint_variants(attrs)}


def main_version(attrs: Mapping[str, Any]) -> int:
    """`model_version`: the version of the live variant with the largest weight (the first
    declared on a tie), as the local, memory and sagemaker providers say it."""
    variants = endpoint_variants(attrs)
    live = [v for v in variants if v["role"] == "live"] or variants
    heaviest = max(reversed(live), key=lambda v: v["weight"])
    return model_of({"model": heaviest["model"]})[0]


class EndpointHandler(KubeHandler):
    schema = KindSchema(settings_model=EndpointSettings,
                        computed=("url", "model_version", "objects"),
                        service_managed=(),
                        timeouts=Timeouts(create=1800, update=3600, delete=900))

    def names(self, address: str) -> tuple[str, str]:
        return self.env.name(address), self.env.config.namespace

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        """The dry run's refusals (`KubeHandler.validate`), and what this provider does not
        do: a bandit on several pods (a reward must reach the pod that answered), canary
        analysis (a rollout here promotes after its bake without judging the canary)."""
        attrs, address = desired.attributes, desired.address
        found = super().validate(desired, facts)
        experiment = experiment_of(attrs) or {}
        replicas = attrs.get("replicas", 1)
        if experiment.get("type") == "bandit" and (attrs.get("autoscaling") is not None
                                                   or replicas != 1):
            scaled = "autoscaling" if attrs.get("autoscaling") is not None \
                else f"replicas = {replicas}"
            found.append(error(
                f"{address}: a bandit on the kubernetes provider runs in one serving pod "
                f"({scaled} asks for several)", address=address,
                detail="Each pod keeps its own policy and remembers only the request ids it "
                       "answered; the Service spreads the rewards over the pods, so most "
                       "would reach a pod that did not answer the request (404).",
                hint="Set replicas = 1 (and no autoscaling) for a bandit endpoint, or run an "
                     "ab experiment (sticky keys hash the same in every pod)."))
        rollout = attrs.get("rollout")
        if isinstance(rollout, Mapping) and rollout.get("analysis") is not None:
            found.append(error(
                f"{address}: the kubernetes provider cannot judge a canary yet "
                "(rollout.analysis): it does not read the canary pods' metrics", address=address,
                hint="Remove analysis (the canary is promoted after bake_seconds if its pods "
                     "stay ready), or use the local or sagemaker provider."))
        if (_has_variants(attrs) and isinstance(rollout, Mapping)
                and rollout.get("strategy") == "canary"):
            found.append(warning(
                f"{address}: rollout.strategy = \"canary\" applies to a single-model endpoint; "
                "variants change all at once on the kubernetes provider (a rolling update "
                "of the serving pods)", address=address,
                hint="Shift traffic with the variants' weights instead."))
        return found

    def main_ref(self, address: str) -> tuple[str, str, str, str | None]:
        name, namespace = self.names(address)
        if self.kube.get("apps/v1", "Deployment", name, namespace, address=address) is None:
            try:
                if self.kube.get(*KSERVE, name, namespace, address=address) is not None:
                    return (*KSERVE, name, namespace)
            except ProviderError:
                pass        # KServe is not installed
        return "apps/v1", "Deployment", name, namespace

    def serving_pod(self, address: str, attrs: Mapping[str, Any], *, version: int | None = None,
                    uri: str | None = None, container: str = "server", port: str = "http",
                    extra_env: Mapping[str, str] | None = None) -> dict:
        """The pod spec of a serving pod: ``pod serve`` on port 8080 with its probes."""
        settings = EndpointSettings.model_validate(dict(attrs.get("settings") or {}))
        models = served_models(attrs)
        if version is not None or uri is not None:      # a canary's one version
            models = [{**models[0], "version": version or models[0]["version"],
                       "uri": uri or models[0]["uri"]}]
        work: dict[str, Any] = {
            "address": address, "name": served_name(address),
            "torch_threads": settings.torch_threads, "models": models}
        variables = dict(extra_env or {})
        capture = attrs.get("capture")
        bucket = f"s3://{self.env.store.bucket}/"
        if isinstance(capture, Mapping):
            work["capture"] = {"uri": bucket + capture_prefix(self.env, address),
                               "sample_percent": int(capture.get("sample_percent", 100))}
        experiment = experiment_of(attrs)
        if experiment is not None:
            # the server routes; the pod adds where its state and rewards live on its disk
            work["experiment"] = experiment
            work["feedback"] = {"uri": bucket + feedback_prefix(self.env, address)}
        if capture is not None or experiment is not None:
            variables["MLFORM_CAPTURE_SECONDS"] = str(settings.capture_upload_seconds)
        probes = {
            "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": PORT},
                               "periodSeconds": 5},
            "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": PORT},
                              "periodSeconds": 10, "initialDelaySeconds": 30},
        }
        return pod_spec(self.env, container, image=settings.image, command="serve", work=work,
                        cpu=settings.cpu, memory=settings.memory, extra_env=variables or None,
                        ports=[{"name": port, "containerPort": PORT}], probes=probes)

    def deployment(self, address: str, attrs: Mapping[str, Any], *, track: str = "stable",
                   version: int | None = None, uri: str | None = None,
                   replicas: int | None = None) -> dict:
        name, namespace = self.names(address)
        label_version = version or main_version(attrs)
        deploy_name = name if track == "stable" else self.env.name(address, track)
        labels = {**self.env.selector(address), TRACK: track}
        pod_labels = {**labels, ROLE: "serve", VERSION: str(label_version)}
        spec: dict[str, Any] = {
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": pod_labels},
                         "spec": self.serving_pod(address, attrs, version=version, uri=uri)},
        }
        if replicas is not None:
            spec["replicas"] = replicas
        elif not attrs.get("autoscaling"):
            spec["replicas"] = int(attrs.get("replicas", 1))
        meta = self.env.metadata(deploy_name, address, namespace,
                                 labels={**dict(attrs.get("tags") or {}), TRACK: track})
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}

    def inference_service(self, address: str, attrs: Mapping[str, Any]) -> dict:
        """The KServe InferenceService serving the model (``settings.serving = "kserve"``):
        the serving pod as its predictor's custom container."""
        name, namespace = self.names(address)
        # KServe's webhook names a custom predictor's only container kserve-container, and
        # Knative accepts only http1 / h2c as a port name: chosen here, so neither is drift
        pod = self.serving_pod(address, attrs, container="kserve-container", port="http1",
                               extra_env={"PROTOCOL": "v2"})
        scaling = attrs.get("autoscaling")
        if isinstance(scaling, Mapping):
            low, high = int(scaling.get("min", 1)), int(scaling["max"])
        else:
            low = int(attrs.get("replicas", 1))
            high = max(1, low)     # KServe reads a maxReplicas of 0 as "no limit"
        predictor: dict[str, Any] = {**pod, "minReplicas": low, "maxReplicas": high}
        rollout = attrs.get("rollout")
        if isinstance(rollout, Mapping) and rollout.get("strategy") == "canary":
            predictor["canaryTrafficPercent"] = int(rollout.get("canary_percent", 10))
        return {"apiVersion": KSERVE[0], "kind": KSERVE[1],
                "metadata": self.env.metadata(name, address, namespace,
                                              labels=dict(attrs.get("tags") or {})),
                "spec": {"predictor": predictor}}

    def manifests(self, address: str, attrs: Mapping[str, Any]) -> list[dict]:
        name, namespace = self.names(address)
        settings = EndpointSettings.model_validate(dict(attrs.get("settings") or {}))
        if settings.serving == "kserve":
            return [self.inference_service(address, attrs)]
        tags = dict(attrs.get("tags") or {})
        service_spec: dict[str, Any] = {
            "selector": self.env.selector(address),
            "ports": [{"name": "http", "port": 80, "targetPort": PORT}],
        }
        if settings.cluster_ip:
            service_spec["clusterIP"] = settings.cluster_ip
        docs = [self.deployment(address, attrs),
                {"apiVersion": "v1", "kind": "Service",
                 "metadata": self.env.metadata(name, address, namespace, labels=tags),
                 "spec": service_spec}]
        scaling = attrs.get("autoscaling")
        if isinstance(scaling, Mapping):
            docs.append({
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": self.env.metadata(name, address, namespace, labels=tags),
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                            "name": name},
                         "minReplicas": max(1, int(scaling.get("min", 1))),
                         "maxReplicas": int(scaling["max"]),
                         "metrics": [{"type": "Resource", "resource": {
                             "name": "cpu", "target": {
                                 "type": "Utilization",
                                 "averageUtilization": settings.cpu_target_percent}}}]}})
        return docs

    def computed(self, address: str, attrs: Mapping[str, Any],
                 manifests: Sequence[dict]) -> dict[str, Any]:
        name, namespace = self.names(address)
        computed = {"url": f"http://{name}.{namespace}.svc.cluster.local/v2/models/"
                           f"{served_name(address)}",
                    "model_version": main_version(attrs)}
        if _has_variants(attrs):     # only then: the states of single-model endpoints stay
            computed["variant_versions"] = variant_versions(attrs)
        return computed

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        """The objects' plan, with the variants that change as its reasons."""
        planned = super().plan(desired, prior, facts)
        attrs = desired.attributes
        if prior is None or not prior.attributes or contains_unknown(attrs):
            return planned
        before = prior.attributes
        old_versions = before.get("variant_versions") or \
            {v["name"]: before.get("model_version") for v in endpoint_variants(before)}
        moved = variant_changes(before, attrs, variant_versions(attrs), old_versions)
        if not moved:
            return planned
        reason = ("variants: " + "; ".join(moved)
                  + " (a rolling update of the serving pods, each serves every variant)")
        return dataclasses.replace(planned, reasons=(*planned.reasons, reason))

    # -- experiments ----------------------------------------------------------------------

    def action(self, live: LiveObject, name: str, args: dict) -> dict:
        """`mlform experiment report|step`: the captured requests and rewards the serving
        pods uploaded (`experiments.action`)."""
        if name not in ("experiment_records", "experiment_step"):
            raise NotImplementedError(name)
        from .experiments import action
        return action(self, live, name, args)

    def live_attributes(self, prior: LiveObject, live: Mapping[str, dict]) -> dict[str, Any]:
        name, namespace = self.names(prior.address)
        if prior.attributes.get("autoscaling"):
            return {}
        if _kserve(prior.attributes):
            found = live.get(f"{KSERVE[1]}/{namespace}/{name}") or {}
            spec = ((found.get("spec") or {}).get("predictor") or {})
            return {"replicas": spec.get("minReplicas", prior.attributes.get("replicas"))}
        deployment = live.get(f"Deployment/{namespace}/{name}")
        if deployment is None:
            return {}
        return {"replicas": (deployment.get("spec") or {}).get("replicas",
                                                               prior.attributes.get("replicas"))}

    # -- rollouts ----------------------------------------------------------------------

    def wait_ready(self, address: str, attrs: Mapping[str, Any], applied: list[dict]) -> None:
        if _kserve(attrs):
            return      # readiness is KServe's to report (the module docstring)
        self.wait_rollout(address, applied[0]["metadata"]["name"], attrs)

    def wait_rollout(self, address: str, deploy_name: str, attrs: Mapping[str, Any]) -> None:
        settings = EndpointSettings.model_validate(dict(attrs.get("settings") or {}))
        namespace = self.env.config.namespace

        def check() -> tuple[bool, str]:
            found = self.kube.get("apps/v1", "Deployment", deploy_name, namespace,
                                  address=address)
            if found is None:
                raise ProviderError(f"{address}: Deployment {namespace}/{deploy_name} "
                                    "disappeared during its rollout", address=address)
            spec, status = found.get("spec") or {}, found.get("status") or {}
            want = int(spec.get("replicas", 1))
            updated = int(status.get("updatedReplicas") or 0)
            available = int(status.get("availableReplicas") or 0)
            total = int(status.get("replicas") or 0)
            observed = int(status.get("observedGeneration") or 0) >= \
                int(found["metadata"].get("generation") or 0)
            if observed and updated >= want and available >= want and total <= want:
                return True, f"{available}/{want} available"
            pods = self.kube.list("v1", "Pod", namespace,
                                  labels={**self.env.selector(address),
                                          TRACK: found["spec"]["selector"]["matchLabels"]
                                          .get(TRACK, "stable")}, address=address)
            problem = pod_failure(pods, schedule_timeout=settings.schedule_timeout_seconds)
            if problem:
                raise ProviderError(f"{address}: rollout of Deployment {namespace}/"
                                    f"{deploy_name} failed: {problem}", address=address)
            return False, f"{updated} updated, {available}/{want} available"

        self.kube.wait(check, address=address,
                       what=f"rollout of Deployment {namespace}/{deploy_name}")

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        attrs = planned.attributes
        rollout = attrs.get("rollout") if isinstance(attrs.get("rollout"), Mapping) else {}
        old_version = prior.attributes.get("model_version")
        new_version, uri = model_of(attrs)
        canary = None
        if (rollout.get("strategy") == "canary" and old_version is not None
                and old_version != new_version and not _kserve(attrs)
                and not _has_variants(attrs) and not _has_variants(prior.attributes)):
            canary = self.canary(planned.address, attrs, rollout, new_version, uri)
        live = super().update(prior, planned)     # promote: roll the stable pods
        if canary is not None:
            self._delete_object(canary, planned.address)
        return live

    def canary(self, address: str, attrs: Mapping[str, Any], rollout: Mapping[str, Any],
               version: int, uri: str) -> dict:
        """Run `version` beside the stable pods for the bake period: return its manifest
        to promote (removed once the stable pods run it), raise after removing it to roll
        back."""
        replicas = max(1, math.ceil(int(attrs.get("replicas", 1))
                                    * int(rollout.get("canary_percent", 10)) / 100))
        doc = self.deployment(address, attrs, track="canary", version=version, uri=uri,
                              replicas=replicas)
        name = doc["metadata"]["name"]
        self.kube.progress(address, f"canary: version {version} on {replicas} pod(s)")
        try:
            self.env.apply(doc, address)
            self.wait_rollout(address, name, attrs)
            deadline = time.monotonic() + float(rollout.get("bake_seconds", 0))
            while True:     # the bake: the canary must stay available the whole time
                found = self.kube.get("apps/v1", "Deployment", name, doc["metadata"]["namespace"],
                                      address=address) or {}
                available = int((found.get("status") or {}).get("availableReplicas") or 0)
                if available < replicas:
                    raise ProviderError(f"{address}: canary of model version {version} lost "
                                        f"its pods during the bake ({available}/{replicas} "
                                        "available); rolled back", address=address)
                if time.monotonic() >= deadline:
                    break
                time.sleep(min(self.env.config.poll_seconds,
                               max(0.0, deadline - time.monotonic())))
        except ProviderError as exc:
            self._delete_object(doc, address)
            if "rolled back" in exc.message:
                raise
            raise ProviderError(f"{exc.message}; the canary was rolled back",
                                address=address, service_message=exc.service_message) from None
        self.kube.progress(address, f"canary: promoting version {version}")
        return doc

    def delete(self, prior: LiveObject) -> None:
        name, namespace = self.names(prior.address)
        canary = self.kube.get("apps/v1", "Deployment", self.env.name(prior.address, "canary"),
                               namespace, address=prior.address)
        if canary is not None:
            self._delete_object(canary, prior.address)
        super().delete(prior)


def _kserve(attrs: Mapping[str, Any]) -> bool:
    """Whether the endpoint is served by KServe (``settings.serving = "kserve"``)."""
    settings = attrs.get("settings")
    return isinstance(settings, Mapping) and settings.get("serving") == "kserve"
