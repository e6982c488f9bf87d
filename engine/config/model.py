"""The typed configuration of a stack: what the spec files declare, not yet evaluated.

Expressions stay compiled but unevaluated (`mlform.expr.Expr`); evaluation
happens in the planning walk, in dependency order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlform.diagnostics import SourceRange

RESOURCE_KINDS = ("dataset", "training_cluster", "pipeline", "model", "endpoint", "monitor")
META_ARGUMENTS = ("provider", "depends_on", "for_each", "count", "lifecycle")
#: what a policy's `actions` filter names: "replace" is either order of delete and create
POLICY_ACTIONS = ("create", "update", "replace", "delete", "no-op", "read")
POLICY_LEVELS = ("advisory", "mandatory")
#: what a `tracking` setting may name (`mlform.tracking`), and an MLflow target's arguments
TRACKING_SYSTEMS = ("mlflow",)
MLFLOW_ARGUMENTS = ("uri", "experiment")


@dataclass
class VariableValues:
    """The root variables' resolved values (`mlform.config.inputs` resolves them)."""

    values: dict[str, Any] = field(default_factory=dict)   # name -> value (Sensitive if sensitive)
    sensitive: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Traversal:
    """A static reference written in a meta-argument (`depends_on = [dataset.x]`)."""

    parts: tuple
    source: SourceRange

    def __str__(self) -> str:
        out = str(self.parts[0]) if self.parts else ""
        for p in self.parts[1:]:
            out += f"[{p!r}]" if isinstance(p, int) else f".{p}"
        return out


@dataclass
class Validation:
    condition: Any  # Expr
    error_message: str
    source: SourceRange


@dataclass
class Variable:
    name: str
    source: SourceRange
    type: Any = None                 # mlform.expr.types.TypeConstraint or None (any)
    default: Any = None              # Expr or None when required
    has_default: bool = False
    sensitive: bool = False
    nullable: bool = True
    description: str = ""
    validations: list[Validation] = field(default_factory=list)


@dataclass
class Output:
    name: str
    value: Any  # Expr
    source: SourceRange
    sensitive: bool = False
    description: str = ""
    depends_on: list[Traversal] = field(default_factory=list)


@dataclass
class ProviderConfig:
    type: str
    alias: str | None
    attributes: dict[str, Any]       # name -> Expr
    source: SourceRange
    attribute_sources: dict[str, SourceRange] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.type}.{self.alias}" if self.alias else self.type


@dataclass
class Lifecycle:
    prevent_destroy: bool = False
    create_before_destroy: bool = False
    ignore_changes: list[tuple] | str = field(default_factory=list)   # paths, or "all"
    replace_triggered_by: list[Traversal] = field(default_factory=list)

    @property
    def ignored(self) -> tuple[tuple, ...] | str:
        """`ignore_changes` in the form the diff takes: a tuple of paths, or "all"."""
        if self.ignore_changes == "all":
            return "all"
        return tuple(tuple(p) for p in self.ignore_changes)


@dataclass
class Resource:
    kind: str
    name: str
    source: SourceRange
    attributes: dict[str, Any]       # spec attributes (incl. settings, tags): name -> Expr
    attribute_sources: dict[str, SourceRange] = field(default_factory=dict)
    provider: str | None = None      # "memory" or "memory.alias" from the meta-argument
    provider_source: SourceRange | None = None
    depends_on: list[Traversal] = field(default_factory=list)
    for_each: Any = None             # Expr
    count: Any = None                # Expr
    lifecycle: Lifecycle = field(default_factory=Lifecycle)

    @property
    def key(self) -> str:
        return f"{self.kind}.{self.name}"


@dataclass
class Policy:
    """A `policy` block: a condition checked against the plan once it is computed
    (`mlform.policy`).  Expressions stay unevaluated here; `kinds` and `actions` are
    literal filters, checked when the block is decoded."""

    name: str
    source: SourceRange
    condition: Any                   # Expr
    level: Any = None                # Expr ("advisory" | "mandatory") or None: mandatory
    description: str = ""
    message: Any = None              # Expr or None
    enabled: Any = None              # Expr or None: enabled
    kinds: tuple[str, ...] = ()      # () = every kind
    actions: tuple[str, ...] = ()    # () = every change but no-op and read
    attribute_sources: dict[str, SourceRange] = field(default_factory=dict)


@dataclass
class Tracking:
    """Where runs are logged: a stack's `tracking` block, or a provider's `tracking`
    argument (which overrides the stack's for that provider's runs).

    `value` stays unevaluated (it may refer to variables): it evaluates to
    ``{"mlflow": {"uri": ..., "experiment": ...}}``, which `decode.tracking_target` checks.
    `sources` locates the parts written as blocks ("mlflow", "mlflow.uri", ...)."""

    value: Any                       # Expr (a block's body as an object)
    source: SourceRange
    where: str                       # "tracking", 'provider "local"': for messages
    sources: dict[str, SourceRange] = field(default_factory=dict)


@dataclass(frozen=True)
class MlflowTarget:
    """A checked MLflow tracking target."""

    uri: str
    experiment: str | None           # None: named after the stack
    source: SourceRange | None = None


@dataclass
class ModuleCall:
    name: str
    source_path: str
    inputs: dict[str, Any]           # name -> Expr
    source: SourceRange
    depends_on: list[Traversal] = field(default_factory=list)
    input_sources: dict[str, SourceRange] = field(default_factory=dict)  # where each is set


@dataclass
class Module:
    """One module's configuration (the stack itself is the root module)."""

    dir: Path
    files: list[Path] = field(default_factory=list)
    variables: dict[str, Variable] = field(default_factory=dict)
    locals: dict[str, tuple[Any, SourceRange]] = field(default_factory=dict)
    outputs: dict[str, Output] = field(default_factory=dict)
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    module_calls: dict[str, ModuleCall] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)   # "kind.name" -> Resource
    policies: dict[str, Policy] = field(default_factory=dict)      # name -> Policy
    tracking: Tracking | None = None                                # a `tracking` block
    children: dict[str, "Module"] = field(default_factory=dict)    # call name -> loaded module


@dataclass
class Environment:
    name: str
    file: Path | None = None
    default_provider: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)         # name -> Expr
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    backend: dict[str, Any] = field(default_factory=dict)           # name -> Expr, plus "type"
    backend_type: str = "local"


@dataclass
class StackConfig:
    root: Module
    env: Environment
    stack_dir: Path
    digest: str                      # sha256 over every file read: a saved plan goes stale when it moves
    # Problems that do not stop loading (a spec file named without the .mlform. suffix).
    warnings: list = field(default_factory=list)

    @property
    def stack_name(self) -> str:
        return self.stack_dir.resolve().name
