"""Price bases every provider builds the same way (`Provider.cost_basis`).

Prices are data: a provider hands in a table (instance or node type -> USD per hour) it
read from its configuration (`prices = { ... }` in the provider block) or from a price
file it ships, and these helpers turn a resource's attributes into a `CostBasis`:

* an **endpoint** is always on: its instance type's hourly price times its replicas,
  or the `autoscaling` min..max range;
* a **pipeline** is paid per run: its cluster's node price times its nodes times the
  expected run duration: the last run's measured duration when the state recorded one
  (`measured_seconds`), else its limit (the smaller of the pipeline's `timeout_seconds`
  and the cluster's `max_runtime_seconds`), else unknown.  A pipeline with a `sweep`
  pays for each trial: the duration is one trial's times `trials` (its node-time; how
  many run at once does not change it).

A type missing from the table is an *unknown* cost with the reason, never zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from mlform.providers.base import UNKNOWN, CostBasis, contains_unknown

__all__ = ["PriceTable", "node_type", "instance_range", "measured_seconds", "run_limit",
           "endpoint_basis", "pipeline_basis", "RUN_SECONDS_KEYS", "check_prices",
           "config_table", "table_cost_basis", "sweep_trials"]

#: where a provider or a run's metrics record how long the run took, in seconds
#: (a provider attribute first, then a metric the training script reported)
RUN_SECONDS_KEYS = ("run_seconds", "duration_seconds", "train_runtime")


@dataclass(frozen=True)
class PriceTable:
    """USD per instance-hour by instance (or node) type, and where the figures come from."""

    prices: Mapping[str, float]
    source: str
    date: str = ""
    #: how the table is named in an "unknown" reason ("the memory provider's prices")
    label: str = "the price table"

    def basis(self, instance_type: str, **fields: Any) -> CostBasis:
        hourly = self.prices.get(instance_type)
        unknown = "" if hourly is not None else f"no price for {instance_type} in {self.label}"
        return CostBasis(hourly=None if hourly is None else float(hourly),
                         instance_type=instance_type, unknown=unknown, source=self.source,
                         date=self.date, **fields)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def node_type(attrs: Mapping[str, Any], default: str | None = "cpu") -> str | None:
    """The type a resource runs on: its `instance_type` (or ``settings.instance_type``),
    else a cluster's `accelerator`, else `default`."""
    settings = attrs.get("settings")
    settings = settings if isinstance(settings, Mapping) else {}
    return (_text(attrs.get("instance_type")) or _text(settings.get("instance_type"))
            or _text(attrs.get("accelerator")) or default)


def instance_range(attrs: Mapping[str, Any]) -> tuple[int, int]:
    """(min, max) serving instances: `autoscaling` min..max, else `replicas` (default 1)."""
    scaling = attrs.get("autoscaling")
    if isinstance(scaling, Mapping):
        low, high = _number(scaling.get("min")), _number(scaling.get("max"))
        if low is not None and high is not None:
            return int(low), int(high)
    replicas = _number(attrs.get("replicas"))
    count = 1 if replicas is None else int(replicas)
    return count, count


def measured_seconds(prior: Mapping[str, Any] | None) -> float | None:
    """How long the last recorded run took, when it was recorded (an attribute such as
    `run_seconds`, or a duration metric the script reported)."""
    if not prior:
        return None
    metrics = prior.get("metrics")
    metrics = metrics if isinstance(metrics, Mapping) else {}
    for source in (prior, metrics):
        for key in RUN_SECONDS_KEYS:
            seconds = _number(source.get(key))
            if seconds is not None and seconds >= 0:
                return seconds
    return None


def run_limit(attrs: Mapping[str, Any], cluster: Mapping[str, Any],
              default: float | None = None) -> float | None:
    """The longest a run may take: the smaller of the pipeline's `timeout_seconds` and the
    cluster's `max_runtime_seconds` (or the provider's `default` limit)."""
    limits = [s for s in (_number(attrs.get("timeout_seconds")),
                          _number(cluster.get("max_runtime_seconds"))) if s is not None]
    return min(limits) if limits else default


def endpoint_basis(attrs: Mapping[str, Any], table: PriceTable,
                   default_type: str | None = "cpu") -> CostBasis:
    """An always-on endpoint: its instance type's price × its instance range."""
    low, high = instance_range(attrs)
    kind_of = node_type(attrs, default_type)
    later = [name for name in ("instance_type", "replicas", "autoscaling")
             if contains_unknown(attrs.get(name))]
    if later or kind_of is None:
        what = " and ".join(later) or "instance_type"   # e.g. "replicas known only after apply"
        return CostBasis(hourly=None, instance_type=kind_of, instances_min=low,
                         instances_max=high, unknown=f"{what} known only after apply",
                         source=table.source, date=table.date)
    return table.basis(kind_of, instances_min=low, instances_max=high)


def sweep_trials(attrs: Mapping[str, Any]) -> int | None:
    """How many runs one apply of the pipeline makes when it has a `sweep` (its
    `trials`), else None (one run)."""
    sweep = attrs.get("sweep")
    trials = _number(sweep.get("trials")) if isinstance(sweep, Mapping) else None
    return int(trials) if trials is not None and trials >= 1 else None


def pipeline_basis(attrs: Mapping[str, Any], prior: Mapping[str, Any] | None,
                   table: PriceTable, *, default_type: str | None = "cpu",
                   default_limit: float | None = None) -> CostBasis:
    """A run: the cluster's node price × nodes × the expected duration (× the trials of
    a sweep)."""
    cluster = attrs.get("cluster")
    cluster = cluster if isinstance(cluster, Mapping) else {}
    nodes = _number(cluster.get("nodes"))
    nodes_n = 1 if nodes is None else int(nodes)
    kind_of = node_type(cluster, default_type)
    seconds, how = measured_seconds(prior), "measured"
    if seconds is None:
        seconds, how = run_limit(attrs, cluster, default_limit), "max_runtime"
    trials = sweep_trials(attrs)
    if trials is not None and seconds is not None:
        # a measured duration is one trial's (the best one's metrics): the sweep's is not
        # "the last run took", so it is shown as a plain duration; a limit stays a limit
        seconds, how = seconds * trials, ("max_runtime" if how == "max_runtime" else "")
    fields = dict(instances_min=nodes_n, instances_max=nodes_n, per_run=True,
                  run_seconds=seconds, duration_source=how if seconds is not None else "")
    if kind_of is None or cluster.get("instance_type") is UNKNOWN:
        return CostBasis(hourly=None, unknown="its cluster's instance type is known only "
                         "after apply", source=table.source, date=table.date, **fields)
    basis = table.basis(kind_of, **fields)
    if basis.hourly is not None and seconds is None:
        return CostBasis(**{**basis.__dict__, "unknown":
                            "no recorded run duration, and neither timeout_seconds nor the "
                            "cluster's max_runtime_seconds bounds it"})
    return basis


def check_prices(prices: Mapping[str, float] | None) -> Mapping[str, float] | None:
    """A provider block's `prices`: each a non-negative USD per hour (a config validator)."""
    for key, value in (prices or {}).items():
        if value < 0:
            raise ValueError(f"prices[{key!r}] = {value:g} is negative; prices are USD per hour")
    return prices


#: A provider config's `prices` argument: `prices: Prices = None` in its config model.
Prices = Annotated[
    dict[str, float] | None, AfterValidator(check_prices),
    Field(description="USD per hour by instance or node type (an endpoint's or a cluster's "
                      "instance_type, else a cluster's accelerator, else \"cpu\"), for the "
                      "cost in plans; unset: not priced.")]


def config_table(provider: str, prices: Mapping[str, float] | None) -> PriceTable | None:
    """The table of a provider block's `prices = { TYPE = USD_PER_HOUR }`, or None when the
    block sets none (that provider's resources are then not priced)."""
    if prices is None:
        return None
    return PriceTable(prices=dict(prices), source=f'provider "{provider}" prices',
                      label=f"the {provider} provider's prices")


def table_cost_basis(table: PriceTable | None, kind: str, attrs: Mapping[str, Any],
                     prior: Mapping[str, Any] | None, *, default_type: str | None = "cpu",
                     default_limit: float | None = None) -> CostBasis | None:
    """`Provider.cost_basis` for a provider that prices endpoints and pipelines from one
    table (None: no table, or a kind that costs nothing by itself)."""
    if table is None:
        return None
    if kind == "endpoint":
        return endpoint_basis(attrs, table, default_type)
    if kind == "pipeline":
        return pipeline_basis(attrs, prior, table, default_type=default_type,
                              default_limit=default_limit)
    return None
