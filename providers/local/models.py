"""The `model` kind of the `local` provider: a model registry on disk.

One registry per model address, under the provider root::

    registry/<slug of address>/
        versions/<n>/        a copy of the artifact dir (hard links where possible)
                  meta.json  version, digest, source, created, approval, framework, description,
                             model (the address), lineage (below)
        aliases.json         stage -> version
        resource.json        the attributes last applied (for read without a prior, import)

A version is identified by the digest of the artifact's content: a new digest
is registered as the next version, a digest already registered is that
version again (so a retried create adopts, and rolling an artifact back
re-selects the old version instead of minting a new one).

`stage` is an alias pointing at the resource's version and `approval` lives in
the version's meta; endpoints refuse to serve a "rejected" version.  What the
endpoint handler needs from here is exported: `registry_dir`, `version_dir`,
`read_meta`, `aliases`, `artifact_digest`.

A version registered from a local pipeline's run keeps the run's lineage
(`kit.champions.run_lineage`: pipeline, run id, metrics, data and code digests, taken
from the ``run.json`` next to the artifact's ``output/`` directory), so a
champion/challenger gate compares a new run with the metrics the stage's version
really had (`champions`).

Planning reads two facts first: the artifact's digest (`artifact`) and, for an
artifact that changed, the registry's versions (`registry`: digest -> version, and the
next free number), so plan says which version an apply will register or re-select.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from mlform.providers.base import (
    Desired, Diagnostic, FactKey, Facts, KindSchema, LiveObject, Planned, ProviderError,
    contains_unknown, error,
)
from mlform.providers.kit.artifacts import artifact_uri, uri_to_path
from mlform.providers.kit.champions import champion
from mlform.providers.kit.digests import DigestCache, tree_digest, tree_files
from mlform.providers.kit.plans import plan_of, unknowns

from .env import LocalEnv, LocalHandler, read_json, write_json_atomic

__all__ = ["ModelHandler", "ModelSettings", "registry_dir", "version_dir", "read_meta",
           "aliases", "artifact_digest", "champions", "run_lineage_of"]

COMPUTED = ("version", "uri", "digest")


class ModelSettings(BaseModel):
    """`settings { }` of a local model."""

    model_config = ConfigDict(extra="forbid")

    copy_mode: Literal["link", "copy"] = Field(
        "link", description="How artifact files enter the registry: hard links where the "
                            "file system allows (falling back to copies), or always copies.")


# ----------------------------------------------------------------- paths

def registry_dir(env: LocalEnv, address: str) -> Path:
    """Where the registry of the model at `address` lives (not created here)."""
    return env.root / "registry" / env.slug(address)


def version_dir(env: LocalEnv, address: str, version: Any) -> Path:
    return registry_dir(env, address) / "versions" / str(version)


def read_meta(path: Path) -> dict | None:
    """meta.json of a version dir, or None when the version is gone."""
    meta = read_json(path / "meta.json")
    return meta if isinstance(meta, dict) else None


def aliases(env: LocalEnv, address: str) -> dict[str, Any]:
    found = read_json(registry_dir(env, address) / "aliases.json", {})
    return found if isinstance(found, dict) else {}


# ----------------------------------------------------------------- content digests

#: Files the registry writes into a version dir: not part of the artifact's identity.
_REGISTRY_FILES = frozenset({"meta.json"})


def _artifact_files(root: Path) -> list[tuple[str, Path]]:
    """(relative path, path) of the artifact's files: a file, or a directory's files
    (the registry's own meta.json left out)."""
    if root.is_file():
        return [(root.name, root)]
    return tree_files(root, skip=lambda rel: rel in _REGISTRY_FILES)


def artifact_digest(root: Path, digests: DigestCache) -> str:
    """`sha256:` of the artifact: the kit's tree digest of its files (cached by mtime)."""
    return "sha256:" + tree_digest((rel, digests.file(p).digest)
                                   for rel, p in _artifact_files(root))


def _versions(reg: Path) -> dict[int, dict]:
    """version number -> meta of every complete version in a registry."""
    out: dict[int, dict] = {}
    vdir = reg / "versions"
    if not vdir.is_dir():
        return out
    for child in vdir.iterdir():
        if child.name.isdigit():
            meta = read_meta(child)
            if meta is not None:
                out[int(child.name)] = meta
    return out


def _find(reg: Path, digest: str) -> int | None:
    matches = [v for v, meta in _versions(reg).items() if meta.get("digest") == digest]
    return max(matches) if matches else None


def _next_version(reg: Path) -> int:
    """One past the highest version dir here (complete or not: numbers are never reused)."""
    vdir = reg / "versions"
    numbers = [int(p.name) for p in vdir.iterdir() if p.name.isdigit()] if vdir.is_dir() else []
    return max(numbers, default=0) + 1


def run_lineage_of(artifact: Path) -> dict | None:
    """The lineage a local pipeline's run recorded next to its ``output/`` directory (the
    artifact), or None for an artifact that is not a run's output."""
    if artifact.name != "output":
        return None
    record = read_json(artifact.parent / "run.json")
    lineage = record.get("lineage") if isinstance(record, dict) else None
    return lineage if isinstance(lineage, dict) else None


def champions(env: LocalEnv, pipeline: str, stage: str, model: str | None) -> list[dict]:
    """The versions in `stage` that a run of `pipeline` must beat, as `kit.champions.champion`
    dicts: of the registry `model`, else of every registry holding a version registered
    from `pipeline` (a registry without a version in the stage has no champion)."""
    if model is not None:
        found = [(model, registry_dir(env, model))]
    else:
        root = env.root / "registry"
        found = []
        for reg in sorted(root.iterdir()) if root.is_dir() else ():
            metas = _versions(reg)
            if any((m.get("lineage") or {}).get("pipeline") == pipeline for m in metas.values()):
                address = next((m["model"] for m in metas.values()
                                if isinstance(m.get("model"), str)), reg.name)
                found.append((address, reg))
    out = []
    for address, reg in found:
        table = read_json(reg / "aliases.json", {})
        version = table.get(stage) if isinstance(table, dict) else None
        meta = read_meta(reg / "versions" / str(version)) if version is not None else None
        if meta is not None:
            out.append(champion(address, version, meta.get("lineage")))
    return out


def _copy_tree(source: Path, target: Path, mode: str) -> None:
    """Hard-link (or copy) every file of the artifact into `target`."""
    for rel, path in _artifact_files(source):
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if mode == "link":
            try:
                os.link(path, dest)
                continue
            except OSError:
                pass    # another file system, or links not allowed: copy instead
        shutil.copy2(path, dest)


# ----------------------------------------------------------------- the handler

class ModelHandler(LocalHandler):
    """`model` resources: versions in a local registry, with stage aliases and approval."""

    schema = KindSchema(settings_model=ModelSettings, computed=COMPUTED)

    # -- facts ----------------------------------------------------------------

    def _artifact_path(self, attrs: Mapping[str, Any]) -> Path | None:
        uri = artifact_uri(attrs.get("artifact"))
        if not isinstance(uri, str):
            return None
        return uri_to_path(uri, self.env.stack_dir)

    @staticmethod
    def _kept(attrs: Mapping[str, Any], prior: Mapping[str, Any] | None) -> bool:
        """The prior version stands: same artifact, a version known."""
        return (prior is not None and prior.get("artifact") == attrs.get("artifact")
                and prior.get("version") is not None)

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> Sequence[FactKey]:
        attrs = desired.attributes
        path = self._artifact_path(attrs)
        if path is None or self._kept(attrs, prior.attributes if prior else None):
            return ()
        keys = [FactKey("model", "artifact", (str(path),))]
        if prior is not None:
            keys.append(FactKey("model", "registry", (desired.address,)))
        return keys

    def read_facts(self, keys: Sequence[FactKey]) -> dict[FactKey, Any]:
        found: dict[FactKey, Any] = {}
        for key in keys:
            if key.name == "artifact":
                path = Path(key.args[0])
                found[key] = artifact_digest(path, self.env.digests) if path.exists() else None
            else:
                reg = registry_dir(self.env, key.args[0])
                found[key] = {"versions": {meta.get("digest"): v for v, meta in
                                           sorted(_versions(reg).items())},
                              "next": _next_version(reg)}
        return found

    # -- pure half ----------------------------------------------------------

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        uri = artifact_uri(desired.attributes.get("artifact"))
        if isinstance(uri, str) and uri_to_path(uri, self.env.stack_dir) is None:
            return [error(
                f"The local registry cannot read the artifact of {desired.address}",
                detail=f'"{uri}" is not a file:// URI or a path on this machine.',
                address=desired.address,
                hint="Point artifact at a local pipeline's model_uri or a directory.")]
        return []

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        attrs = dict(desired.attributes)
        attrs.setdefault("approval", "approved")   # read always reports it
        computed, reasons = self._plan_version(desired.address, attrs,
                                               dict(prior.attributes) if prior else None, facts)
        return plan_of(Desired(desired.address, desired.kind, desired.name, attrs), computed,
                       reasons=reasons)

    def _plan_version(self, address: str, attrs: dict, prior: dict | None,
                      facts: Facts) -> tuple[dict, tuple]:
        uri = artifact_uri(attrs.get("artifact"))
        if uri is None or contains_unknown(uri):
            return unknowns(COMPUTED), ()
        if self._kept(attrs, prior):
            return {key: prior.get(key) for key in COMPUTED}, ()
        path = self._artifact_path(attrs)
        digest = facts.get(FactKey("model", "artifact", (str(path),))) if path else None
        if digest is None:                  # not on this machine (yet): apply will see
            return unknowns(COMPUTED), ()
        if prior is None:
            # A create may follow the delete of a replacement, which empties the
            # registry: only the content is certain.
            return {**unknowns(COMPUTED), "digest": digest}, ()
        registry = facts[FactKey("model", "registry", (address,))]
        version = registry["versions"].get(digest)
        reason = f"artifact content {digest[:19]}… is already version {version}"
        if version is None:
            version = registry["next"]
            reason = f"new artifact content {digest[:19]}… becomes version {version}"
        return ({"version": version, "uri": version_dir(self.env, address, version).as_uri(),
                 "digest": digest}, (reason,))

    # -- apply --------------------------------------------------------------

    def create(self, planned: Planned) -> LiveObject:
        return self._apply(planned, None)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        return self._apply(planned, dict(prior.attributes))

    def _apply(self, planned: Planned, prior: dict | None) -> LiveObject:
        address, attrs = planned.address, dict(planned.attributes)
        uri = artifact_uri(attrs.get("artifact"))
        path = uri_to_path(uri, self.env.stack_dir) if isinstance(uri, str) else None
        if path is None or not path.exists():
            raise ProviderError(f"{address}: the artifact {uri!r} does not exist on this machine",
                                address=address)
        settings = attrs.get("settings") if isinstance(attrs.get("settings"), Mapping) else {}
        mode = ModelSettings.model_validate(dict(settings)).copy_mode
        reg = self.env.area("registry", self.env.slug(address))
        digest = artifact_digest(path, self.env.digests)
        version = _find(reg, digest)
        if version is None:
            version = self._register(reg, path, digest, uri, mode, attrs, address)
        vdir = reg / "versions" / str(version)
        meta = read_meta(vdir) or {}
        meta.update(approval=attrs.get("approval", "approved"), framework=attrs.get("framework"),
                    description=attrs.get("description"))
        write_json_atomic(vdir / "meta.json", meta)
        self._point_alias(reg, attrs.get("stage"), (prior or {}).get("stage"), version)
        final = {**attrs, "version": version, "uri": vdir.as_uri(), "digest": digest}
        write_json_atomic(reg / "resource.json", {"attributes": final})
        return LiveObject(address, planned.kind, self.env.object_id(address), final)

    @staticmethod
    def _register(reg: Path, source: Path, digest: str, uri: str, mode: str, attrs: dict,
                  address: str) -> int:
        """Copy the artifact into the next version dir; a rename makes it appear whole."""
        version = _next_version(reg)
        final = reg / "versions" / str(version)
        staging = reg / "versions" / f".tmp-{version}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        _copy_tree(source, staging, mode)
        write_json_atomic(staging / "meta.json", {
            "version": version, "digest": digest, "source": uri,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "approval": attrs.get("approval", "approved"), "framework": attrs.get("framework"),
            "description": attrs.get("description"), "model": address,
            "lineage": run_lineage_of(source)})
        os.replace(staging, final)
        return version

    @staticmethod
    def _point_alias(reg: Path, stage: Any, old_stage: Any, version: int) -> None:
        table = read_json(reg / "aliases.json", {})
        table = table if isinstance(table, dict) else {}
        changed = dict(table)
        if old_stage and old_stage != stage and changed.get(old_stage) is not None:
            changed.pop(old_stage)        # the resource moved its alias elsewhere
        if stage:
            changed[stage] = version
        if changed != table or not (reg / "aliases.json").exists():
            write_json_atomic(reg / "aliases.json", changed)

    # -- read / delete ------------------------------------------------------

    def read(self, prior: LiveObject) -> LiveObject | None:
        reg = registry_dir(self.env, prior.address)
        base = dict(prior.attributes)
        if not base:     # lost id or import: the attributes last applied
            stored = read_json(reg / "resource.json", {})
            base = dict(stored.get("attributes") or {}) if isinstance(stored, dict) else {}
        version = base.get("version")
        if version is None:
            return None
        vdir = reg / "versions" / str(version)
        meta = read_meta(vdir)
        if meta is None:
            return None
        live = {**base, "version": version, "uri": vdir.as_uri(),
                "digest": meta.get("digest", base.get("digest")),
                "approval": meta.get("approval", "approved")}
        table = aliases(self.env, prior.address)
        stage = base.get("stage")
        if not (stage and table.get(stage) == version):
            stage = next((name for name, v in sorted(table.items()) if v == version), None)
        if stage:
            live["stage"] = stage
        else:
            live.pop("stage", None)
        return LiveObject(prior.address, prior.kind, self.env.object_id(prior.address), live)

    def delete(self, prior: LiveObject) -> None:
        shutil.rmtree(registry_dir(self.env, prior.address), ignore_errors=True)
