"""`model` on the example provider: a version per artifact, counted in its record."""

from __future__ import annotations

from mlform.providers.base import UNKNOWN, Desired, Facts, KindSchema, LiveObject, Planned
from mlform.providers.kit.artifacts import artifact_uri
from mlform.providers.kit.plans import plan_of, unknowns

from .env import ExampleHandler, plain

COMPUTED = ("version", "uri")


class ModelHandler(ExampleHandler):
    schema = KindSchema(replace_paths=("framework",), computed=COMPUTED)

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        before = prior.attributes if prior is not None else None
        if before is not None and before.get("artifact") == desired.attributes.get("artifact"):
            return plan_of(desired, {k: before.get(k) for k in COMPUTED})
        return plan_of(desired, unknowns(COMPUTED))     # a new artifact: a new version

    def create(self, planned: Planned) -> LiveObject:
        attrs = dict(planned.attributes)
        record = self.load(planned.address) or {}
        known = record.get("attributes") or {}
        if attrs.get("version") is UNKNOWN:
            same = known.get("artifact") == attrs.get("artifact") and "version" in known
            attrs["version"] = known["version"] if same else int(known.get("version") or 0) + 1
        if attrs.get("uri") is UNKNOWN:
            attrs["uri"] = f"{artifact_uri(attrs.get('artifact'))}#v{attrs['version']}"
        return self.save(planned.address, planned.kind, plain(attrs))
