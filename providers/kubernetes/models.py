"""`model` on Kubernetes: a registry of immutable ConfigMaps, one per version.

Version *n* of a model is the ConfigMap ``env.name(address, "v<n>")`` in the
provider's namespace, ``immutable: true``, whose data holds the artifact's storage URI
and the framework; its labels carry the version, the `stage` and the approval
(``mlform.dev/stage``, ``mlform.dev/approval``: ``approved`` in production, else
``pending``), which may change on an immutable ConfigMap.  A new artifact registers
version n+1; an artifact some version already holds is that version again (a retried
create, an artifact rolled back).  The artifact itself stays where the pipeline put
it, in `storage` (`uri` is that URI); an artifact given as a local path is uploaded
to ``models/<name>/v<n>/`` first.  Delete removes every version's ConfigMap.

A version registered from a kubernetes pipeline's run (an artifact ``…/<job>/output/``
in storage) also holds, in its immutable data, ``lineage``: the JSON the run left at
``…/<job>/lineage.json`` (`kit.champions.run_lineage`: metrics, data and code digests),
and the pipeline's run folder lists the models fed from it (``runs/<name>/models.json``),
so a champion/challenger gate compares with what the stage's version really had
(`champions`).  Earlier versions keep their stage label (the ConfigMap is immutable but
for labels, and only the new version is written): the stage's version is the newest one
labelled with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict

from mlform.providers.base import (
    UNKNOWN, Desired, Facts, KindSchema, LiveObject, Planned, ProviderError, contains_unknown,
)
from mlform.providers.kit.artifacts import artifact_uri, uri_to_path
from mlform.providers.kit.champions import champion
from mlform.providers.kit.plans import plan_of

from .env import KubeHandler

__all__ = ["ModelHandler", "champions", "models_key"]

VERSION, STAGE, APPROVAL = "mlform.dev/model-version", "mlform.dev/stage", "mlform.dev/approval"
_OUTPUT = "/output/"


def models_key(env: Any, pipeline: str) -> str:
    """The list of models registered from `pipeline`'s runs, in its run folder."""
    return env.store.key("runs", env.name(pipeline), "models.json")


def _lineage(item: Mapping[str, Any]) -> dict | None:
    try:
        found = json.loads((item.get("data") or {}).get("lineage") or "null")
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def champions(handler: KubeHandler, pipeline: str, stage: str, model: str | None) -> list[dict]:
    """The versions in `stage` a run of `pipeline` must beat: of `model`, else of every
    model registered from `pipeline`."""
    env = handler.env
    if model is not None:
        models = [model]
    else:
        found = env.store.get_json(models_key(env, pipeline), address=pipeline)
        models = sorted(found) if isinstance(found, list) else []
    out = []
    for address in models:
        staged = [c for c in ModelHandler(env).versions(address)
                  if (c["metadata"].get("labels") or {}).get(STAGE) == stage]
        if staged:
            newest = staged[-1]
            out.append(champion(address, int(newest["metadata"]["labels"][VERSION]),
                                _lineage(newest)))
    return out


class ModelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelHandler(KubeHandler):
    schema = KindSchema(settings_model=ModelSettings, replace_paths=("framework",),
                        computed=("version", "uri"))

    def record(self, address: str, attrs: Mapping[str, Any], version: int, uri: str,
               lineage: Mapping[str, Any] | None = None) -> dict:
        stage = str(attrs.get("stage") or "none")
        labels = {**dict(attrs.get("tags") or {}), VERSION: str(version), STAGE: stage,
                  APPROVAL: "approved" if stage == "production" else "pending"}
        return {"apiVersion": "v1", "kind": "ConfigMap", "immutable": True,
                "metadata": self.env.metadata(self.env.name(address, f"v{version}"), address,
                                              self.env.config.namespace, labels=labels),
                "data": {"artifact": str(artifact_uri(attrs.get("artifact")) or ""),
                         "uri": uri, "framework": str(attrs.get("framework") or ""),
                         "version": str(version),
                         **({"lineage": json.dumps(lineage, sort_keys=True)} if lineage else {})}}

    def versions(self, address: str) -> list[dict]:
        found = self.kube.list("v1", "ConfigMap", self.env.config.namespace,
                               labels=self.env.selector(address), address=address)
        for item in found:
            self.env.check_owner(item, address)
        return sorted(found, key=lambda c: int(c["metadata"]["labels"].get(VERSION, "0")))

    # -- plan ------------------------------------------------------------------------

    def fact_keys(self, desired, prior):
        return ()

    def validate(self, desired, facts):
        return []

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        attrs = desired.attributes
        before = prior.attributes if prior is not None else None
        if (before is None or contains_unknown(attrs.get("artifact"))
                or before.get("artifact") != attrs.get("artifact") or before.get("version") is None):
            return plan_of(desired, {"version": UNKNOWN, "uri": UNKNOWN},
                           reasons=() if before is None else ("a new artifact registers a new "
                                                              "model version",))
        return plan_of(desired, {"version": before["version"], "uri": before.get("uri")})

    # -- apply -----------------------------------------------------------------------

    def create(self, planned: Planned) -> LiveObject:
        return self._register(planned)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        return self._register(planned)

    def _register(self, planned: Planned) -> LiveObject:
        address, attrs = planned.address, dict(planned.attributes)
        artifact = str(artifact_uri(attrs.get("artifact")) or "")
        existing = self.versions(address)
        same = [c for c in existing if (c.get("data") or {}).get("artifact") == artifact]
        if same:
            version = int(same[-1]["metadata"]["labels"][VERSION])
            uri = same[-1]["data"]["uri"]
            lineage = _lineage(same[-1])    # immutable: the record stays what it was
        else:
            version = 1 + max((int(c["metadata"]["labels"].get(VERSION, "0")) for c in existing),
                              default=0)
            uri = self._stored(address, artifact, version)
            lineage = self._run_lineage(address, artifact)
        attrs.update(version=version, uri=uri)
        self.env.apply(self.record(address, attrs, version, uri, lineage), address)
        return LiveObject(address, planned.kind, f"{self.env.config.namespace}/"
                                                 f"{self.env.name(address, f'v{version}')}",
                          attrs)

    def _run_lineage(self, address: str, artifact: str) -> dict | None:
        """The lineage a pipeline's run left next to its output (``…/<job>/lineage.json``),
        and this model listed as fed by that pipeline; None for another artifact."""
        prefix = f"s3://{self.env.store.bucket}/"
        if not (artifact.startswith(prefix) and artifact.endswith(_OUTPUT)):
            return None
        found = self.env.store.get_json(
            artifact[len(prefix):-len(_OUTPUT)] + "/lineage.json", address=address)
        if not isinstance(found, dict) or not isinstance(found.get("pipeline"), str):
            return None
        key = models_key(self.env, found["pipeline"])
        listed = self.env.store.get_json(key, address=address)
        listed = sorted(listed) if isinstance(listed, list) else []
        if address not in listed:
            self.env.store.put_json(key, sorted([*listed, address]), address=address)
        return found

    def _stored(self, address: str, artifact: str, version: int) -> str:
        """The artifact's storage URI (uploading a local one)."""
        if artifact.startswith("s3://"):
            return artifact
        path = uri_to_path(artifact, Path(self.env.context.stack_dir))
        if path is None or not path.exists():
            raise ProviderError(f"{address}: artifact {artifact!r} is neither in storage "
                                "(s3://) nor a local file or directory", address=address)
        prefix = self.env.store.key("models", self.env.name(address), f"v{version}")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            rel = file.name if path.is_file() else file.relative_to(path).as_posix()
            self.env.store.upload(file, f"{prefix}/{rel}", address=address)
        return f"s3://{self.env.store.bucket}/{prefix}/"

    # -- read / delete -----------------------------------------------------------------

    def read(self, prior: LiveObject) -> LiveObject | None:
        version = prior.attributes.get("version")
        if version is not None:        # one GET by name, not a listing of every ConfigMap
            one = self.kube.get("v1", "ConfigMap", self.env.name(prior.address, f"v{version}"),
                                self.env.config.namespace, address=prior.address)
            if one is not None:
                self.env.check_owner(one, prior.address)
            found = [one] if one is not None else []
        else:
            found = self.versions(prior.address)
        if not found:
            return None
        current = found[-1]
        attrs = dict(prior.attributes)
        if not attrs.get("artifact"):      # a lost create: what the record says
            attrs.update(artifact=current["data"].get("artifact"),
                         framework=current["data"].get("framework") or None)
        attrs.update(version=int(current["metadata"]["labels"][VERSION]),
                     uri=current["data"].get("uri"))
        labels = current["metadata"].get("labels") or {}
        if "stage" in attrs or not prior.attributes:
            stage = labels.get(STAGE)
            attrs["stage"] = None if stage in (None, "none") and not prior.attributes.get(
                "stage") else stage
        return LiveObject(prior.address, prior.kind,
                          f"{current['metadata']['namespace']}/{current['metadata']['name']}",
                          attrs)

    def delete(self, prior: LiveObject) -> None:
        self._delete_objects(self.versions(prior.address), prior.address)
