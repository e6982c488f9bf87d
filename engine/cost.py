"""Cost in the plan (Infracost-like, built in): a per-resource estimate, a plan total and
the delta against the current state; and the cost of the current state (`mlform cost`).

Prices are data, owned by providers: `Provider.cost_basis` (optional in the contract)
turns a resource's attributes into a `CostBasis` (USD per instance-hour × an instance
range, or per node-hour × nodes × an expected duration for a run).  This module only
does the arithmetic, after the pure planner has run (operations.plan calls
`attach_cost`), and keeps the numbers as plain frozen values the renderers and the
policies read (`Plan.cost`).

Always-on resources are priced per hour and per month (730 hours); runs (pipelines) per
run, with 0 per hour.  A range (autoscaling) is kept as min..max; the delta compares
like with like (after_min - before_min, after_max - before_max).  A cost that cannot be
known is None here, null in JSON and "unknown (why)" on screen: never zero.  A resource
no provider prices (datasets, models, monitors, an unpriced provider) is left out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlform.expr.values import strip_sensitive
from mlform.plan.model import Plan
from mlform.providers.base import CostBasis

__all__ = ["HOURS_PER_MONTH", "CURRENCY", "Side", "ResourceCost", "CostTotal", "PriceSource",
           "CostReport", "attach_cost", "plan_cost", "state_cost", "basis_cost"]

HOURS_PER_MONTH = 730
CURRENCY = "USD"

#: a (min, max) USD range of nothing
_ZERO = (0.0, 0.0)


def _round(value: float | None) -> float | None:
    # cents are all a plan promises; rounding keeps saved plans and goldens stable
    return None if value is None else round(value + 0.0, 4)


def _times(pair: tuple[float, float] | None, factor: float) -> tuple[float, float] | None:
    return None if pair is None else (pair[0] * factor, pair[1] * factor)


def _minus(a: tuple[float, float] | None, b: tuple[float, float] | None):
    return None if a is None or b is None else (a[0] - b[0], a[1] - b[1])


@dataclass(frozen=True)
class Side:
    """The cost of one side (before or after) of one resource."""

    hourly: tuple[float, float] | None = _ZERO   # USD per hour, min..max (runs: 0)
    per_run: float | None = None                 # runs: USD per run
    runs: bool = False                           # priced per run (a pipeline)
    instance_type: str | None = None
    instances: tuple[int, int] = (0, 0)
    unknown: str = ""
    run_seconds: float | None = None
    duration_source: str = ""

    @property
    def is_unknown(self) -> bool:
        return self.per_run is None if self.runs else self.hourly is None


def basis_cost(basis: CostBasis) -> Side:
    """A provider's basis as a cost: what this module multiplies."""
    count = (basis.instances_min, basis.instances_max)
    common = dict(instance_type=basis.instance_type, instances=count,
                  run_seconds=basis.run_seconds, duration_source=basis.duration_source)
    if basis.per_run:
        known = basis.hourly is not None and basis.run_seconds is not None
        per_run = (basis.hourly * count[1] * basis.run_seconds / 3600.0 if known else None)
        why = "" if known else (basis.unknown or "its provider cannot price a run of it")
        return Side(hourly=_ZERO, per_run=per_run, runs=True, unknown=why, **common)
    hourly = None if basis.hourly is None else (basis.hourly * count[0], basis.hourly * count[1])
    why = "" if hourly is not None else (basis.unknown or "its provider has no price for it")
    return Side(hourly=hourly, unknown=why, **common)


@dataclass(frozen=True)
class ResourceCost:
    """One resource's cost before (the current state) and after the plan."""

    address: str
    kind: str
    provider: str
    before: Side
    after: Side
    per_run: bool = False      # a run (pipeline): priced per run, not per hour
    will_run: bool = False     # applying this plan starts a run of it

    @property
    def unknown(self) -> str | None:
        """Why the cost is unknown (after first, else before), None when it is known."""
        for side in (self.after, self.before):
            if side.is_unknown:
                return side.unknown
        return None

    @property
    def instance_type(self) -> str | None:
        return self.after.instance_type or self.before.instance_type

    @property
    def instances(self) -> tuple[int, int]:
        return self.after.instances

    @property
    def monthly_before(self):
        return _times(self.before.hourly, HOURS_PER_MONTH)

    @property
    def monthly_after(self):
        return _times(self.after.hourly, HOURS_PER_MONTH)

    @property
    def monthly_delta(self):
        return _minus(self.monthly_after, self.monthly_before)

    def to_json(self) -> dict:
        before, after, delta = self.monthly_before, self.monthly_after, self.monthly_delta
        doc = {
            "address": self.address, "kind": self.kind, "provider": self.provider,
            "instance_type": self.instance_type,
            "instances": {"min": self.instances[0], "max": self.instances[1]},
            "hourly": {
                "before": _round(None if self.before.hourly is None else self.before.hourly[1]),
                "before_min": _round(None if self.before.hourly is None else self.before.hourly[0]),
                "after": _round(None if self.after.hourly is None else self.after.hourly[1]),
                "after_min": _round(None if self.after.hourly is None else self.after.hourly[0]),
            },
            "monthly": {
                "before": _round(None if before is None else before[1]),
                "after_min": _round(None if after is None else after[0]),
                "after_max": _round(None if after is None else after[1]),
                "delta_min": _round(None if delta is None else delta[0]),
                "delta_max": _round(None if delta is None else delta[1]),
            },
            "per_run": None,
            "unknown": self.unknown,
        }
        if self.per_run:
            doc["per_run"] = {"before": _round(self.before.per_run),
                              "after": _round(self.after.per_run),
                              "run_seconds": self.after.run_seconds,
                              "duration_source": self.after.duration_source or None,
                              "will_run": self.will_run}
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "ResourceCost":
        hourly, run = doc.get("hourly") or {}, doc.get("per_run")
        count = doc.get("instances") or {}
        instances = (int(count.get("min", 0)), int(count.get("max", 0)))
        runs = run is not None
        unknown = doc.get("unknown") or ""

        def side(low: Any, high: Any, per_run: Any, **extra: Any) -> Side:
            pair = None if low is None or high is None else (float(low), float(high))
            made = Side(hourly=pair, per_run=per_run, runs=runs,
                        instance_type=doc.get("instance_type"), instances=instances, **extra)
            return dataclasses.replace(made, unknown=unknown if made.is_unknown else "")

        run = run or {}
        after = side(hourly.get("after_min"), hourly.get("after"), run.get("after"),
                     run_seconds=run.get("run_seconds"),
                     duration_source=run.get("duration_source") or "")
        before = side(hourly.get("before_min"), hourly.get("before"), run.get("before"))
        return cls(address=doc["address"], kind=doc.get("kind", ""),
                   provider=doc.get("provider", ""), before=before, after=after,
                   per_run=runs, will_run=bool(run.get("will_run")))


@dataclass(frozen=True)
class CostTotal:
    """The plan's totals: sums of the known costs, and the resources whose cost is not."""

    hourly_before: float = 0.0
    hourly_after_min: float = 0.0
    hourly_after: float = 0.0
    monthly_before: float = 0.0
    monthly_after_min: float = 0.0
    monthly_after_max: float = 0.0
    monthly_delta_min: float = 0.0
    monthly_delta_max: float = 0.0
    per_run_after: float = 0.0          # one run of every priced pipeline
    per_run_planned: float = 0.0        # the runs this plan starts
    unknown: tuple[str, ...] = ()

    @classmethod
    def of(cls, resources: Iterable[ResourceCost]) -> "CostTotal":
        sums = dict.fromkeys(("hb", "hamin", "hamax", "dmin", "dmax", "run", "planned"), 0.0)
        unknown: list[str] = []
        for r in resources:
            if r.unknown is not None and r.address not in unknown:
                unknown.append(r.address)
            if r.before.hourly is not None:
                sums["hb"] += r.before.hourly[1]
            if r.after.hourly is not None:
                sums["hamin"] += r.after.hourly[0]
                sums["hamax"] += r.after.hourly[1]
            delta = _minus(r.after.hourly, r.before.hourly)
            if delta is not None:
                sums["dmin"] += delta[0]
                sums["dmax"] += delta[1]
            if r.per_run and r.after.per_run is not None:
                sums["run"] += r.after.per_run
                if r.will_run:
                    sums["planned"] += r.after.per_run
        return cls(
            hourly_before=_round(sums["hb"]), hourly_after_min=_round(sums["hamin"]),
            hourly_after=_round(sums["hamax"]),
            monthly_before=_round(sums["hb"] * HOURS_PER_MONTH),
            monthly_after_min=_round(sums["hamin"] * HOURS_PER_MONTH),
            monthly_after_max=_round(sums["hamax"] * HOURS_PER_MONTH),
            monthly_delta_min=_round(sums["dmin"] * HOURS_PER_MONTH),
            monthly_delta_max=_round(sums["dmax"] * HOURS_PER_MONTH),
            per_run_after=_round(sums["run"]), per_run_planned=_round(sums["planned"]),
            unknown=tuple(unknown))

    def to_json(self) -> dict:
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        doc["unknown"] = list(self.unknown)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "CostTotal":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in doc.items() if k in names}
        values["unknown"] = tuple(doc.get("unknown") or ())
        return cls(**values)


@dataclass(frozen=True)
class PriceSource:
    provider: str
    source: str
    date: str = ""

    def to_json(self) -> dict:
        return {"provider": self.provider, "source": self.source, "date": self.date or None}


@dataclass(frozen=True)
class CostReport:
    """The plan's `cost` section (also what `mlform cost` shows of the current state)."""

    resources: tuple[ResourceCost, ...] = ()
    total: CostTotal = field(default_factory=CostTotal)
    prices: tuple[PriceSource, ...] = ()
    currency: str = CURRENCY

    @classmethod
    def of(cls, resources: Iterable[ResourceCost], prices: Iterable[PriceSource]) -> "CostReport":
        resources = tuple(resources)
        unique = tuple(dict.fromkeys(prices))
        return cls(resources=resources, total=CostTotal.of(resources), prices=unique)

    def get(self, address: str) -> ResourceCost | None:
        return next((r for r in self.resources if r.address == address), None)

    def to_json(self) -> dict:
        return {"currency": self.currency,
                "resources": [r.to_json() for r in self.resources],
                "total": self.total.to_json(),
                "prices": [p.to_json() for p in self.prices]}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "CostReport":
        return cls(
            resources=tuple(ResourceCost.from_json(r) for r in doc.get("resources") or ()),
            total=CostTotal.from_json(doc.get("total") or {}),
            prices=tuple(PriceSource(p.get("provider", ""), p.get("source", ""),
                                     p.get("date") or "") for p in doc.get("prices") or ()),
            currency=doc.get("currency", CURRENCY))


# --------------------------------------------------------------------------- pricing


class _Pricer:
    """Asks each resource's provider for its basis; failures become unknown costs."""

    def __init__(self, providers: Any) -> None:
        self.providers = providers
        self.sources: list[PriceSource] = []

    def side(self, provider_key: str, kind: str, attrs: Mapping[str, Any] | None,
             prior: Mapping[str, Any] | None, sensitive: bool = False) -> Side | None:
        """None: not priced (the resource costs nothing this provider knows of).
        `sensitive`: the attributes may hold `Sensitive` values (stripped before the
        provider sees them; walking every plan's attributes for none would cost more than
        the pricing)."""
        if attrs is None:
            return None
        try:
            provider = self.providers.get(provider_key)
        except Exception as exc:  # a provider block that failed to configure
            return Side(hourly=None, unknown=f'provider "{provider_key}" is not configured '
                                            f"({_first_line(exc)})")
        hook = getattr(provider, "cost_basis", None)
        if hook is None:   # a plugin written before the hook existed
            return None
        if sensitive:
            attrs = strip_sensitive(dict(attrs))[0]
            prior = strip_sensitive(dict(prior))[0] if prior else None
        try:
            basis = hook(kind, attrs, prior)
        except Exception as exc:  # the engine does not trust the plugin: say which failed
            return Side(hourly=None, unknown=f'provider "{provider_key}" could not price it: '
                                            f"{_first_line(exc)}")
        if basis is None:
            return None
        if not isinstance(basis, CostBasis):
            return Side(hourly=None, unknown=f'provider "{provider_key}" answered cost_basis '
                                            f"with {type(basis).__name__}, not a CostBasis")
        if basis.source:
            self.sources.append(PriceSource(provider_key, basis.source, basis.date))
        return basis_cost(basis)


def _first_line(exc: Exception) -> str:
    diagnostics = getattr(exc, "diagnostics", None)
    if diagnostics:
        return str(getattr(diagnostics[0], "summary", diagnostics[0]))
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _with_cluster(attrs: Mapping[str, Any] | None, clusters: Mapping[str, Mapping]) -> Any:
    """A pipeline's attributes with its cluster reference expanded to the whole cluster
    (the reference carries only the fields that change results)."""
    if attrs is None:
        return None
    ref = attrs.get("cluster")
    if isinstance(ref, Mapping) and isinstance(ref.get("address"), str):
        full = clusters.get(ref["address"])
        if full is not None:
            return {**attrs, "cluster": {**full, "address": ref["address"]}}
    return attrs


def _cluster_address(attrs: Mapping[str, Any] | None) -> str | None:
    ref = attrs.get("cluster") if attrs is not None else None
    return ref.get("address") if isinstance(ref, Mapping) else None


def _entry(address: str, kind: str, provider: str, before: Side | None, after: Side | None,
           will_run: bool = False) -> ResourceCost | None:
    if before is None and after is None:
        return None
    runs = any(side is not None and side.runs for side in (before, after))
    nothing = Side(hourly=_ZERO, per_run=0.0 if runs else None, runs=runs)
    return ResourceCost(address=address, kind=kind, provider=provider,
                        before=before or nothing, after=after or nothing,
                        per_run=runs, will_run=will_run)


def _state_attrs(state: Any) -> dict[str, Mapping]:
    resources = getattr(state, "resources", None) or {}
    return {address: rs.attributes for address, rs in resources.items()}


def _will_run(change: Any) -> bool:
    """Does applying this change start a run?  A new pipeline does; an existing one when
    its run id moves (unknown until the run exists, or a new job name known already)."""
    after, before = change.after, change.before
    if change.kind != "pipeline" or after is None or change.action.value in ("no-op", "read"):
        return False
    if before is None or change.action.is_replace:
        return True
    run_id = after.get("run_id")
    return not isinstance(run_id, str) or run_id != before.get("run_id")


def plan_cost(plan: Plan, providers: Any, state: Any) -> CostReport:
    """The cost of each change of `plan`: before = the current state's, after = planned."""
    prior = _state_attrs(state)
    planned = {c.address: c.after for c in plan.changes if c.after is not None and not c.deposed}
    after_clusters = {**prior, **planned}
    secret = {c.address for c in plan.changes if c.before_sensitive or c.after_sensitive}
    pricer = _Pricer(providers)
    entries = []
    for c in plan.changes:
        last_run = c.before if c.before is not None else prior.get(c.address)
        cluster = _cluster_address(c.after)
        sensitive = c.address in secret or cluster in secret
        before = pricer.side(c.provider, c.kind, _with_cluster(c.before, prior), c.before,
                             sensitive)
        if c.after is c.before and c.after is not None and (
                cluster is None or after_clusters.get(cluster) is prior.get(cluster)):
            after = before        # a no-op the memo answered: the very same attributes
        else:
            after = pricer.side(c.provider, c.kind, _with_cluster(c.after, after_clusters),
                                last_run, sensitive)
        # a deposed object is its own entry (the same address as its replacement's)
        address = f"{c.address} (deposed object {c.deposed})" if c.deposed else c.address
        entry = _entry(address, c.kind, c.provider, before, after, _will_run(c))
        if entry is not None:
            entries.append(entry)
    return CostReport.of(entries, pricer.sources)


def state_cost(state: Any, providers: Any) -> CostReport:
    """What the current state costs (`mlform cost`): each recorded resource, as it is."""
    prior = _state_attrs(state)
    pricer = _Pricer(providers)
    entries = []
    for address, rs in (getattr(state, "resources", None) or {}).items():
        side = pricer.side(rs.provider, rs.kind, _with_cluster(rs.attributes, prior),
                           rs.attributes, bool(rs.sensitive_paths))
        entry = _entry(address, rs.kind, rs.provider, side, side)
        if entry is not None:
            entries.append(entry)
    return CostReport.of(entries, pricer.sources)


def attach_cost(plan: Plan, providers: Any, state: Any) -> Plan:
    """`plan` with its `cost` section (called by operations.plan after the planner)."""
    return dataclasses.replace(plan, cost=plan_cost(plan, providers, state))
