"""An endpoint's variants, one shape for every provider.

An endpoint declares either one `model` or `variants` (name -> {model, weight}) and
maybe an `experiment` (ab, shadow or bandit).  `endpoint_variants` turns both forms
into one list, so a provider has a single path: an endpoint with only `model` is the
one live variant ``primary`` with weight 100; the experiment's shadow variant has the
role ``shadow`` (it gets no live traffic, only mirrored requests).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["PRIMARY", "endpoint_variants", "experiment_of", "variant_changes"]

#: The variant name of an endpoint that declares one `model`.
PRIMARY = "primary"


def experiment_of(attrs: Mapping[str, Any]) -> dict | None:
    """The endpoint's `experiment` block with its defaults, or None."""
    experiment = attrs.get("experiment")
    if not isinstance(experiment, Mapping) or not isinstance(experiment.get("type"), str):
        return None
    return {"type": experiment["type"], "sticky_key": experiment.get("sticky_key"),
            "shadow": experiment.get("shadow"),
            "shadow_percent": int(experiment.get("shadow_percent", 100)),
            "reward": experiment.get("reward", "binary"),
            "floor_percent": float(experiment.get("floor_percent", 5))}


def endpoint_variants(attrs: Mapping[str, Any]) -> list[dict]:
    """``[{"name", "model", "weight", "role"}]`` in declaration order (live ones first
    is not promised: the shadow keeps its place)."""
    variants = attrs.get("variants")
    if not isinstance(variants, Mapping) or not variants:
        return [{"name": PRIMARY, "model": attrs.get("model"), "weight": 100, "role": "live"}]
    experiment = experiment_of(attrs) or {}
    shadow = experiment.get("shadow") if experiment.get("type") == "shadow" else None
    return [{"name": str(name), "model": spec.get("model") if isinstance(spec, Mapping) else None,
             "weight": int(spec.get("weight", 0) or 0) if isinstance(spec, Mapping) else 0,
             "role": "shadow" if name == shadow else "live"}
            for name, spec in variants.items()]


def variant_changes(before: Mapping[str, Any] | None, after: Mapping[str, Any],
                    versions: Mapping[str, Any] | None = None,
                    old_versions: Mapping[str, Any] | None = None) -> list[str]:
    """Plan reasons for the variants that differ: added, removed, re-weighted, a new
    model version (when `versions`/`old_versions` say name -> version), a new role."""
    if before is None:
        return []
    old = {v["name"]: v for v in endpoint_variants(before)}
    new = {v["name"]: v for v in endpoint_variants(after)}
    if set(old) == set(new) == {PRIMARY}:
        return []       # a single-model endpoint: its own reasons say what changes
    reasons = []
    for name, variant in new.items():
        was = old.get(name)
        if was is None:
            reasons.append(f"adds variant {name} ({_share(variant)})")
            continue
        if (was["weight"], was["role"]) != (variant["weight"], variant["role"]):
            reasons.append(f"variant {name}: {_share(was)} -> {_share(variant)}")
        version, old_version = (versions or {}).get(name), (old_versions or {}).get(name)
        if version is not None and old_version is not None and version != old_version:
            reasons.append(f"variant {name} serves model version {version} instead of {old_version}")
    reasons += [f"removes variant {name}" for name in old if name not in new]
    experiment, old_experiment = experiment_of(after), experiment_of(before)
    if experiment != old_experiment:
        reasons.append(f"experiment {_experiment(old_experiment)} -> {_experiment(experiment)}")
    return reasons


def _share(variant: Mapping) -> str:
    return "shadow" if variant["role"] == "shadow" else f"weight {variant['weight']}%"


def _experiment(experiment: Mapping | None) -> str:
    if experiment is None:
        return "none"
    extra = {"ab": ("sticky_key",), "shadow": ("shadow", "shadow_percent"),
             "bandit": ("reward", "floor_percent", "sticky_key")}.get(experiment["type"], ())
    shown = ", ".join(f"{k} {experiment[k]}" for k in extra if experiment.get(k) is not None)
    return f"{experiment['type']}" + (f" ({shown})" if shown else "")
