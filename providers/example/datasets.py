"""`dataset` on the example provider: a local source, its digest and the kit's checks.

The source's content and row profile are a *fact*: named by `fact_keys`, read by
`read_facts` before anything is planned, then only looked at by `validate` and `plan`.
"""

from __future__ import annotations

from typing import Any, Sequence

from mlform.providers.base import (
    Desired, Diagnostic, FactKey, Facts, KindSchema, LiveObject, Planned,
    contains_unknown,
)
from mlform.providers.kit.datasets import (
    SOURCE_INPUTS, dataset_diagnostics, fact_attrs, read_local_dataset, readable, source_fact,
)
from mlform.providers.kit.plans import computed_or_unknown, plan_of
from mlform.providers.kit.sources import local_path

from .env import ExampleHandler, plain

COMPUTED = ("digest", "rows", "bytes")


class DatasetHandler(ExampleHandler):
    schema = KindSchema(replace_paths=("format",), computed=COMPUTED)

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> Sequence[FactKey]:
        # the kit's key for a dataset's facts; None while the source is not known yet
        key = source_fact(desired.attributes)
        return (key,) if key is not None else ()

    def read_facts(self, keys: Sequence[FactKey]) -> dict[FactKey, Any]:
        # fact_attrs: the source, format and schema, and whether the checks need a profile
        return {key: read_local_dataset(key.args[0],
                                        local_path(key.args[0], self.env.context.stack_dir),
                                        fact_attrs(key), self.env.digests)
                for key in keys}

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        key = source_fact(desired.attributes)
        return dataset_diagnostics(desired.address, desired.attributes, facts[key]) \
            if key is not None else []

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        attrs = desired.attributes       # computed values known now, or UNKNOWN until apply
        return plan_of(desired, computed_or_unknown(
            attrs, SOURCE_INPUTS, COMPUTED,
            lambda: self._computed(desired.address, facts[source_fact(attrs)])))

    @staticmethod
    def _computed(address: str, found: Any) -> dict:
        found = readable(address, found)     # a ProviderError when the data cannot be read
        return {"digest": found.digest, "bytes": found.size,
                "rows": found.profile.rows if found.profile is not None else None}

    def create(self, planned: Planned) -> LiveObject:
        attrs = dict(planned.attributes)
        if contains_unknown(attrs):      # a source only known now: read it now (I/O is fine here)
            key = source_fact(attrs)
            attrs.update(self._computed(planned.address, self.read_facts([key])[key]))
        return self.save(planned.address, planned.kind, plain(attrs))
