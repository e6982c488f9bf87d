"""One resource at a time, the way the engine calls a provider.

The engine batches facts across a whole plan (`fact_keys` for every instance, one
`read_facts` per provider, then the pure `validate` and `plan` calls).  Scripts, the
provider tests and the contract suite often want that for a single resource; these
helpers do exactly those steps, in that order, so what they exercise is the contract
as the engine uses it.  Each works on a `Provider` or on a single `KindHandler`.
"""

from __future__ import annotations

from typing import Any

from mlform.providers.base import Desired, Diagnostic, Facts, LiveObject, Planned

__all__ = ["facts_for", "validate", "plan"]


def facts_for(provider: Any, desired: Desired, prior: LiveObject | None = None) -> Facts:
    """Read the facts `provider` names for this instance (the reading step of a plan)."""
    keys = list(provider.fact_keys(desired, prior))
    return provider.read_facts(keys) if keys else {}


def validate(provider: Any, desired: Desired) -> list[Diagnostic]:
    """`validate`, after reading its facts."""
    return provider.validate(desired, facts_for(provider, desired, None))


def plan(provider: Any, desired: Desired, prior: LiveObject | None = None) -> Planned:
    """`plan`, after reading its facts."""
    return provider.plan(desired, prior, facts_for(provider, desired, prior))
