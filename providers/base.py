"""The provider contract (DESIGN.md section 5): everything a provider and the engine
exchange, and nothing of the engine itself.

This module imports nothing of mlform: the engine builds on it, and providers build
on it (and on the provider kit, `mlform.providers.kit`), so neither needs the other.
It holds three things:

* **values** - what crosses the contract is plain JSON-like data (None, bool, int,
  float, str, lists, dicts).  One marker rides along: `UNKNOWN`, a value known only
  after apply.  The engine's other marker, `Sensitive`, is defined here so that one
  `contains_unknown` serves both sides, but it never crosses the contract: the engine
  strips it before any provider call.
* **diagnostics** - `Diagnostic` (with an optional `SourceRange`), made with `error`
  and `warning`.  Providers return them from `validate`; the engine adds the file and
  line of the block.
* **the contract types** - `Desired`, `Planned`, `LiveObject`, `KindSchema`,
  `ProviderContext`, `ProgressEvent`, `ProviderError` and the `Provider` base class.

A provider is configured once per run (`Provider(context)`) and serves the
kinds it declares in `kinds`.  Every call gets and returns plain values:

* `Desired`   - what the spec asks for one resource instance (attributes may
  hold `UNKNOWN` where they depend on something not yet applied).
* `Planned`   - the provider's answer to `plan`: the attributes it will
  produce (computed ones known or `UNKNOWN`), plus any extra replace paths.
* `LiveObject` - what exists: provider-side id and live attributes.

Semantics each implementation must keep (the engine checks answers and names
the provider when they disagree with the plan):

| call | must |
| --- | --- |
| fact_keys(desired, prior) | pure: the facts validate and plan need |
| read_facts(keys) | reads, changes nothing; a value or a FactError per key |
| validate(desired, facts) | pure; return diagnostics |
| plan(desired, prior, facts) | pure; known values stay what apply produces |
| create(planned) | deterministic provider-side name from stack, env and address, so a retried or crashed create adopts rather than duplicates; if it raises, nothing it made may be left unrecorded (adopt or clean up) |
| read(prior) | no side effects; None when gone; `prior.id` may be None when the engine recovers an interrupted create (look it up by the deterministic name) |
| update(prior, planned) | in place, idempotent, waits until ready |
| delete(prior) | absent already = success |
| import_(kind, address, id) | no side effects; None when no such object |
| cost_basis(kind, attributes, prior) | optional, pure: the price basis (`CostBasis`) or None |
| pulumi_resources(obj) | optional, pure: the Pulumi resources declaring what `create` makes |
| pulumi_claims(resources) | optional, pure: which resources of a Pulumi stack export it manages |
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, NamedTuple, Sequence

from pydantic import BaseModel, ConfigDict

__all__ = [
    # values
    "UNKNOWN", "Sensitive", "is_unknown", "contains_unknown",
    # diagnostics
    "SourceRange", "Diagnostic", "error", "warning",
    # the contract
    "ProviderContext", "KindSchema", "Timeouts", "Desired", "Planned", "LiveObject",
    "ProgressEvent", "ProviderError", "Provider", "AnySettings", "KINDS",
    # facts
    "FactKey", "FactError", "Facts",
    # cost
    "CostBasis",
    # Pulumi interop
    "PulumiInput", "PulumiRef", "PulumiAsset", "PulumiResource", "ExportObject", "PulumiClaim",
]


# ---------------------------------------------------------------------------- values

class _Unknown:
    """Singleton for a value that is known only after apply."""

    _instance: "_Unknown | None" = None
    __slots__ = ()

    def __new__(cls) -> "_Unknown":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "(known after apply)"

    def __reduce__(self):  # keep the singleton across copy/pickle
        return (_Unknown, ())

    def __bool__(self) -> bool:
        raise TypeError("an unknown value has no truth value yet")


#: A value known only after apply.  Any operation touching it yields UNKNOWN;
#: it prints as ``(known after apply)``.
UNKNOWN = _Unknown()


def is_unknown(value: Any) -> bool:
    return value is UNKNOWN


class Sensitive:
    """Wraps a value that must not be shown or stored in clear (the engine's marker;
    it never reaches a provider)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        while isinstance(value, Sensitive):
            value = value.value
        self.value = value

    def __repr__(self) -> str:
        return "(sensitive value)"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sensitive):
            return self.value == other.value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("sensitive", repr(type(self.value))))


_LEAVES = frozenset({str, int, float, bool, type(None)})


def contains_unknown(value: Any) -> bool:
    """True when UNKNOWN appears anywhere inside `value`."""
    # Hot: the planner asks this of every attribute of every instance.  Plain loops
    # and a leaf-type shortcut instead of any(generator), several times faster.
    if value is UNKNOWN:
        return True
    if type(value) in _LEAVES:
        return False
    if isinstance(value, dict):
        value = value.values()
    elif isinstance(value, Sensitive):
        return contains_unknown(value.value)
    elif not isinstance(value, (list, tuple)):
        return False
    for item in value:
        if item is UNKNOWN or (type(item) not in _LEAVES and contains_unknown(item)):
            return True
    return False


# ---------------------------------------------------------------------- diagnostics

class SourceRange(NamedTuple):
    """Where in the spec a diagnostic points (1-based line and column).

    A named tuple, not a dataclass: a stack's loader makes one per key it reads (over
    100,000 for a 10,000-resource file), and a tuple is made several times faster."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column or 1}"
        return self.file


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in the spec, the state or a provider answer."""

    severity: str  # "error" | "warning"
    summary: str
    detail: str = ""
    source: SourceRange | None = None
    address: str | None = None
    hint: str = ""
    #: machine-readable kind of problem, for code that must tell diagnostics apart
    #: (never parse the words); empty for most
    code: str = field(default="", compare=False)

    def to_json(self) -> dict:
        out: dict = {"severity": self.severity, "summary": self.summary, "detail": self.detail}
        if self.address:
            out["address"] = self.address
        if self.source:
            out["range"] = {
                "filename": self.source.file,
                "start": {"line": self.source.line, "column": self.source.column},
            }
        if self.hint:
            out["hint"] = self.hint
        return out


def error(summary: str, detail: str = "", *, source: SourceRange | None = None,
          address: str | None = None, hint: str = "", code: str = "") -> Diagnostic:
    return Diagnostic("error", summary, detail, source, address, hint, code)


def warning(summary: str, detail: str = "", *, source: SourceRange | None = None,
            address: str | None = None, hint: str = "", code: str = "") -> Diagnostic:
    return Diagnostic("warning", summary, detail, source, address, hint, code)


# ---------------------------------------------------------------------- the contract

KINDS = ("dataset", "training_cluster", "pipeline", "model", "endpoint", "monitor")


@dataclass(frozen=True)
class ProgressEvent:
    """A status line for a long operation (rendered by the CLI, never printed here)."""

    address: str
    message: str
    waiting_on: str = ""


@dataclass(frozen=True)
class ProviderContext:
    """Everything a provider learns at configure time; passed explicitly, no globals."""

    name: str                      # provider type, e.g. "memory"
    alias: str | None
    stack: str                     # stack name (its directory name)
    env: str                       # environment name or "default"
    stack_dir: Path
    config: Mapping[str, Any]      # the `provider "x" { ... }` block, checked by config_model
    progress: Callable[[ProgressEvent], None] = lambda event: None
    #: where a provider may keep caches (file digests, row profiles) shared with the
    #: engine: ``<stack>/.mlform/cache``; None keeps them in memory only
    cache_dir: Path | None = None


@dataclass(frozen=True)
class Timeouts:
    create: float = 1800.0
    update: float = 1800.0
    delete: float = 900.0


class AnySettings(BaseModel):
    """Settings model for providers that accept any `settings { }`."""

    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True)
class KindSchema:
    """What a provider declares for one kind it serves.

    Paths are dotted attribute paths (``"settings.instance_type"``).  The engine checks
    each resource's evaluated `settings { }` against `settings_model` (pydantic) once,
    before `validate`, and reports problems at the block's file and line: providers
    read settings with it but do not check them again.
    """

    settings_model: type[BaseModel] = AnySettings
    replace_paths: tuple[str, ...] = ()     # changes here force replacement
    computed: tuple[str, ...] = ()          # attributes the provider fills in
    service_managed: tuple[str, ...] = ()   # live fields ignored for drift
    timeouts: Timeouts = field(default_factory=Timeouts)


@dataclass(frozen=True)
class Desired:
    """One resource instance as the spec asks for it."""

    address: str
    kind: str
    name: str
    attributes: Mapping[str, Any]


@dataclass(frozen=True)
class LiveObject:
    """An object that exists (or existed) on the provider side."""

    address: str
    kind: str
    id: str | None
    attributes: Mapping[str, Any]


@dataclass(frozen=True)
class Planned:
    """The provider's plan for one instance.

    `attributes` is the full attribute set after apply, with `UNKNOWN` where
    the value is only known then.  `replace_paths` adds provider-decided
    reasons for replacement to the declared `KindSchema.replace_paths`.
    `replaces` is set by the engine, not the provider: the id of the object a
    create_before_destroy replacement will delete once this one exists, so a
    provider whose names come from the address can pick another name for the new
    object (the old one still holds the first).
    """

    address: str
    kind: str
    name: str
    attributes: Mapping[str, Any]
    replace_paths: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    replaces: str | None = None


# ---------------------------------------------------------------------------- facts

@dataclass(frozen=True)
class FactKey:
    """One fact a provider reads before it validates or plans an instance.

    Planning is pure: whatever `validate` and `plan` need to know about the world
    (a source file's digest, the GPUs of this machine, the training jobs a pipeline
    already ran) is read before, in `read_facts`, and handed to them as values.  A key
    is plain hashable data: `kind` is the resource kind whose handler reads it (it
    routes the read), `name` what the fact is, `args` what identifies it (a path, an
    address, ...).  The engine reads every key once per run, in parallel, and never
    looks inside.
    """

    kind: str
    name: str
    args: tuple = ()


@dataclass(frozen=True)
class FactError:
    """A fact that could not be read, as a value (`read_facts` returns it in place of the
    fact; `validate` turns it into a diagnostic, `plan` into unknowns)."""

    message: str
    retryable: bool = False


#: The facts a call may look at: every key its `fact_keys` named, read.
Facts = Mapping[FactKey, Any]


# -------------------------------------------------------------------- Pulumi interop

@dataclass(frozen=True)
class PulumiInput:
    """A value the exported Pulumi program reads from its stack config
    (``config.require(key)``, or ``config.require_secret(key)`` when `secret`): a
    sensitive value, which is never written into the program, or one known only after
    an apply.  The engine puts these in `ExportObject.attributes` in place of such
    values; a provider passes them on, untouched, wherever the value goes."""

    key: str
    secret: bool = False
    description: str = ""


@dataclass(frozen=True)
class PulumiRef:
    """An output of another resource of the same program, as ``<its variable>.<attr>``:
    how the program states that one object needs another (Pulumi orders them by it)."""

    name: str                   # the logical name of the resource referred to
    attr: str                   # its output as the Python SDK spells it ("name", "arn")


@dataclass(frozen=True)
class PulumiAsset:
    """A local file the program uploads (``pulumi.FileAsset(path)``)."""

    path: str


@dataclass(frozen=True)
class ExportObject:
    """One resource instance of a stack environment, as `mlform export pulumi` hands it
    to its provider: the attributes it has after apply (the plan's; sensitive values and
    values known only after an apply replaced by `PulumiInput`s) and, when the state
    has it, its id and the attributes recorded there."""

    address: str
    kind: str
    name: str
    attributes: Mapping[str, Any]
    id: str | None = None
    recorded: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class PulumiResource:
    """One resource of an exported Pulumi program: ``<module>.<cls>(name, **args)``.

    `args` are the keyword arguments (snake_case, as the Python SDK takes them): plain
    JSON-like values, with `PulumiInput`, `PulumiRef` and `PulumiAsset` anywhere inside.
    `token` is the Pulumi type token (``aws:sagemaker/endpoint:Endpoint``), `import_id`
    the id ``pulumi import`` adopts the live object by (None: it does not exist yet),
    `address` the mlform resource it declares or is part of.
    """

    module: str                 # "aws.sagemaker", "kubernetes.apps.v1"
    cls: str                    # "Endpoint", "Deployment"
    token: str
    name: str
    args: Mapping[str, Any]
    address: str
    import_id: str | None = None
    comment: str = ""
    #: logical names of resources this one needs but does not refer to by an output
    #: (``opts=pulumi.ResourceOptions(depends_on=[...])``)
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class PulumiClaim:
    """A provider's answer about one resource of a ``pulumi stack export`` document:
    the mlform resource it is (`import_id` set: ``mlform import address import_id``)
    or is part of (`import_id` None: it comes along when that resource is imported).
    Resources no provider claims have no mlform equivalent."""

    urn: str
    address: str
    kind: str
    import_id: str | None = None
    note: str = ""


# ----------------------------------------------------------------------------- cost

@dataclass(frozen=True)
class CostBasis:
    """What one resource instance costs to run, as its provider prices it
    (`Provider.cost_basis`); the engine turns it into the plan's cost section.

    Always-on resources (endpoints) are priced per hour: `hourly` USD per instance-hour
    times `instances_min`..`instances_max` instances (a range under autoscaling).  Runs
    (pipelines) set `per_run`: `hourly` per node-hour times `instances_*` nodes times
    `run_seconds`, the expected duration (`duration_source` says where it came from:
    ``"measured"`` for the last run's, ``"max_runtime"`` for the limit).  `hourly` (or
    `run_seconds` of a run) is None when the cost cannot be known, and `unknown` says
    why: such a cost is never shown as zero.  `source` and `date` name the price table.
    """

    hourly: float | None
    instance_type: str | None = None
    instances_min: int = 1
    instances_max: int = 1
    per_run: bool = False
    run_seconds: float | None = None
    duration_source: str = ""
    unknown: str = ""
    source: str = ""
    date: str = ""


class ProviderError(Exception):
    """A provider call failed: which resource, what the service said, retry or not."""

    def __init__(self, message: str, *, address: str = "", retryable: bool = False,
                 service_message: str = "", partial: "LiveObject | None" = None,
                 hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.address = address
        self.retryable = retryable
        self.service_message = service_message
        # What the user can do about it (shown under the diagnostic, as for plan errors).
        self.hint = hint
        # An object the failed call did make (half-created): the engine records it as
        # tainted so the next apply replaces it instead of orphaning it.
        self.partial = partial


class Provider(abc.ABC):
    """Base class of every provider plugin (found through entry points).

    Per resource the engine calls, in this order:

    1. ``fact_keys(desired, prior)`` - pure: the facts `validate` and `plan` need;
    2. ``read_facts(keys)`` - the one reading step before planning (I/O allowed, no
       changes to anything); the engine batches keys across resources;
    3. ``validate(desired, facts)`` and ``plan(desired, prior, facts)`` - pure: they
       look only at their arguments;
    4. at apply: ``create`` / ``update`` / ``delete``, each waiting until done;
       ``read`` at refresh.
    """

    #: provider type name, as used in `provider "NAME" { }`
    name: ClassVar[str]
    #: kinds served and what the provider declares about each
    kinds: ClassVar[Mapping[str, KindSchema]]
    #: pydantic model of the `provider "NAME" { }` block (the engine checks the block
    #: against it and hands the provider the checked values in `context.config`)
    config_model: ClassVar[type[BaseModel]] = AnySettings
    #: the interface version this provider implements
    contract_version: ClassVar[int] = 2

    def __init__(self, context: ProviderContext) -> None:
        self.context = context

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> Sequence[FactKey]:
        """The facts `validate` and `plan` need for this instance (pure)."""
        return ()

    def read_facts(self, keys: Sequence[FactKey]) -> dict[FactKey, Any]:
        """Read facts: a value (or a `FactError`) per key.  No changes to anything."""
        return {}

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        """Provider-specific checks (capacity, instance types, quotas); pure."""
        return []

    @abc.abstractmethod
    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned: ...

    @abc.abstractmethod
    def create(self, planned: Planned) -> LiveObject: ...

    @abc.abstractmethod
    def read(self, prior: LiveObject) -> LiveObject | None: ...

    @abc.abstractmethod
    def update(self, prior: LiveObject, planned: Planned) -> LiveObject: ...

    @abc.abstractmethod
    def delete(self, prior: LiveObject) -> None: ...

    def action(self, live: LiveObject, name: str, args: dict | None = None) -> dict:
        """Kind-specific operations outside plan/apply (`mlform monitor run ADDR`).

        Returns a JSON-able report.  Providers without such operations keep this default.
        """
        raise ProviderError(f'provider "{self.name}" has no action {name!r} for {live.kind}',
                            address=live.address)

    def run_records(self, pipeline: str | None = None) -> list[dict]:
        """The records of the pipeline runs this provider made for this stack environment
        (`pipeline`: that address only), oldest first: `kit.run_records.RunRecord` as JSON,
        failed and running runs included.  `mlform runs`, `mlform lineage` and tracking
        read them.  Optional: providers that run nothing keep this default.  No side effects.
        """
        return []

    def import_(self, kind: str, address: str, id: str) -> LiveObject | None:
        return self.read(LiveObject(address=address, kind=kind, id=id, attributes={}))

    def cost_basis(self, kind: str, attributes: Mapping[str, Any],
                   prior: Mapping[str, Any] | None = None) -> CostBasis | None:
        """What a resource with these attributes costs to run, or None when it costs
        nothing this provider prices (datasets, models, monitors; or no prices known).

        Optional and pure (prices are data read at configure time or from package data).
        For a pipeline, ``attributes["cluster"]`` holds the whole cluster's attributes
        (the engine resolves the reference), and `prior` the attributes of the last run
        recorded in the state, if any (its measured duration).  A resource that does cost
        but whose instance type has no price returns a basis with ``hourly=None`` and the
        reason in `unknown`, never zero.
        """
        return None

    def pulumi_resources(self, obj: ExportObject) -> list[PulumiResource]:
        """The Pulumi resources that declare what this provider makes for `obj`
        (`mlform export pulumi`): names, tags or labels and configuration as `create`
        makes them.  Optional and pure; a kind with no long-lived objects answers [].
        """
        return []

    def pulumi_claims(self, resources: Sequence[Mapping[str, Any]]) -> list[PulumiClaim]:
        """Which resources of a ``pulumi stack export`` document (its
        ``deployment.resources`` entries: ``urn``, ``type``, ``id``, ``inputs``,
        ``outputs``) are objects this provider manages (`mlform import-state pulumi`).
        Optional and pure; unclaimed resources are reported as having no equivalent."""
        return []

    def close(self) -> None:
        """Release whatever the provider holds (files, clients, threads)."""
