"""Prometheus text read the way Prometheus reads it: prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["samples", "value", "kinds"]


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition: (sample name, its labels) -> value."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value; KeyError naming what is there when it is missing."""
    found = samples(text)
    key = (name, frozenset(labels.items()))
    if key not in found:
        raise KeyError(f"no sample {name}{labels}; have {sorted(k[0] for k in found)}")
    return found[key]


def kinds(text: str) -> dict[str, str]:
    """Each metric family's type ("counter", "gauge", "histogram", ...) by its name."""
    return {family.name: family.type for family in text_string_to_metric_families(text)}
