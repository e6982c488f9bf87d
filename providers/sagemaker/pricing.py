"""What SageMaker resources cost, from the dated price table shipped next to this module.

``prices.json`` holds public on-demand prices by region: ``inference`` for endpoints
(real-time instances, priced per instance-hour × instance count, an autoscaling range
when the endpoint scales) and ``training`` for pipelines (per instance-hour × the
cluster's instances × the run's expected duration: the last run's measured one when
the state recorded it, else the smaller of `timeout_seconds` and the cluster's
`max_runtime_seconds`, else SageMaker's default limit of 24 hours).  The file names its
source and date; a region or instance type missing from it makes the cost unknown,
with the reason, never zero.  Spot runs are priced on demand (an upper bound).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from mlform.providers.base import CostBasis
from mlform.providers.kit.pricing import PriceTable, endpoint_basis, pipeline_basis

from . import clusters
from .endpoints import DEFAULT_INSTANCE_TYPE

__all__ = ["PRICE_FILE", "price_document", "price_table", "cost_basis"]

PRICE_FILE = Path(__file__).with_name("prices.json")


@lru_cache(maxsize=4)
def price_document(path: Path = PRICE_FILE) -> dict:
    """The price file, read once (package data: it ships with mlform)."""
    return json.loads(path.read_text(encoding="utf-8"))


def price_table(region: str, use: str, doc: Mapping[str, Any] | None = None) -> PriceTable:
    """The `use` ("inference" or "training") prices of `region` (empty when the file has
    none for it: every type is then unknown, and the reason says so)."""
    doc = price_document() if doc is None else doc
    prices = ((doc.get("regions") or {}).get(region) or {}).get(use) or {}
    where = f"the SageMaker {use} price table for {region} ({doc.get('date', 'undated')})"
    if not prices:
        where = f"the SageMaker price table (it has no {use} prices for {region})"
    return PriceTable(prices=prices, source=str(doc.get("source", PRICE_FILE.name)),
                      date=str(doc.get("date", "")), label=where)


def _with_instance_type(attrs: Mapping[str, Any]) -> Mapping[str, Any]:
    """A pipeline's attributes with its cluster's instance type filled in the way the
    cluster picks it when the spec names none (no cluster: the default compute)."""
    cluster = attrs.get("cluster")
    if not isinstance(cluster, Mapping):
        profile = clusters.DEFAULT_PROFILE
        return {**attrs, "cluster": {"instance_type": profile.instance_type,
                                     "nodes": profile.instance_count}}
    if cluster.get("instance_type"):
        return attrs
    instance, _ = clusters.resolve(str(cluster.get("address", "")), cluster)
    if instance is None:
        return attrs
    return {**attrs, "cluster": {**cluster, "instance_type": instance.name}}


def cost_basis(region: str, kind: str, attrs: Mapping[str, Any],
               prior: Mapping[str, Any] | None) -> CostBasis | None:
    if kind == "endpoint":
        return endpoint_basis(attrs, price_table(region, "inference"),
                              default_type=DEFAULT_INSTANCE_TYPE)
    if kind == "pipeline":
        return pipeline_basis(_with_instance_type(attrs), prior, price_table(region, "training"),
                              default_type=None, default_limit=clusters.DEFAULT_MAX_RUNTIME)
    return None
