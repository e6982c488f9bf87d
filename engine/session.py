"""A session: one command's view of one stack environment.

It loads the configuration, resolves variables, opens the state backend and
configures providers on first use.  Everything the planner and applier need
is reached through it, passed explicitly (no hidden "current stack" global).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from pydantic import ValidationError

from mlform import registry
from mlform.config.inputs import VariableValues, resolve_root_variables
from mlform.config.loader import load_stack
from mlform.config.decode import literal_tracking_diagnostics, tracking_of
from mlform.config.model import ProviderConfig, Resource, StackConfig, Tracking
from mlform.diagnostics import DiagnosticError, SourceRange, error
from mlform.expr import ExprError, Scope, strip_sensitive
from mlform.graph import Graph, build_graph
from mlform.plan.inputs import ProviderSet
from mlform.providers.base import ProgressEvent, Provider, ProviderContext
from mlform.providers.kit.digests import DigestCache
from mlform.state import LocalBackend, S3Backend, State, StateBackend

DEFAULT_PROVIDER = "local"
#: a provider block's argument the engine takes for itself (`mlform.tracking`)
TRACKING = "tracking"


@dataclass
class SessionOptions:
    env: str | None = None
    vars: list[str] = field(default_factory=list)
    var_files: list[Path] = field(default_factory=list)
    parallelism: int = 10
    progress: Callable[[ProgressEvent], None] = lambda event: None
    environ: dict[str, str] | None = None


class Session:
    def __init__(self, stack_dir: Path, options: SessionOptions | None = None) -> None:
        self.options = options or SessionOptions()
        self.config: StackConfig = load_stack(Path(stack_dir), self.options.env)
        self.graph: Graph = build_graph(self.config)
        self._variables: VariableValues | None = None
        self._providers: dict[str, Provider] = {}
        self._provider_lock = threading.Lock()
        self._backend: StateBackend | None = None

    # ------------------------------------------------------------ basics

    @property
    def stack_dir(self) -> Path:
        return self.config.stack_dir

    @property
    def env_name(self) -> str:
        return self.config.env.name

    @property
    def variables(self) -> VariableValues:
        if self._variables is None:
            self._variables = resolve_root_variables(
                self.config, self.options.vars, self.options.var_files, self.options.environ)
        return self._variables

    def use_variables(self, values: VariableValues) -> None:
        """Apply of a saved plan: the plan's variable values replace CLI resolution."""
        self._variables = values

    @property
    def backend(self) -> StateBackend:
        if self._backend is None:
            self._backend = make_backend(self.config)
        return self._backend

    # ------------------------------------------------------------ providers

    @property
    def default_provider_key(self) -> str:
        """The provider of blocks that name none: the environment's default, else the one
        provider type the stack declares, else `local`."""
        if self.config.env.default_provider:
            return self.config.env.default_provider
        types = {p.type for p in self.config.root.providers.values()}
        if len(types) == 1:
            return types.pop()
        return DEFAULT_PROVIDER

    def provider_key_for(self, resource: Resource) -> str:
        return resource.provider or self.default_provider_key

    @property
    def cache_dir(self) -> Path:
        """Caches shared by the engine and the providers (file digests, profiles)."""
        return self.stack_dir / ".mlform" / "cache"

    @property
    def digests(self) -> DigestCache:
        return DigestCache.shared(self.cache_dir)

    def provider_set(self, state: State | None = None, keys: Iterable[str] = ()) -> ProviderSet:
        """Every provider this run can use, configured now (before anything is planned):
        those of the spec's blocks and those recorded in the state.  A provider that fails
        to configure is reported where it is used."""
        keys = {*keys, *(self.provider_key_for(node.config) for node in self.graph.resources())}
        if state is not None:
            keys |= {rs.provider for rs in state.resources.values()}
        configured, failures = {}, {}
        for key in sorted(keys):
            try:
                configured[key] = self.provider(key)
            except DiagnosticError as exc:
                failures[key] = exc
        return ProviderSet(configured, failures, self.default_provider_key)

    def _provider_config(self, key: str) -> ProviderConfig | None:
        return self.config.env.providers.get(key) or self.config.root.providers.get(key)

    def provider(self, key: str) -> Provider:
        """The configured provider for `memory` or `memory.alias` (configured once per run)."""
        with self._provider_lock:
            if key in self._providers:
                return self._providers[key]
            type_, _, alias = key.partition(".")
            cls = registry.get(type_)
            config = self.provider_config(key)
            declared = self._provider_config(key)
            source = declared.source if declared else None
            context = ProviderContext(
                name=type_, alias=alias or None, stack=self.config.stack_name, env=self.env_name,
                stack_dir=self.stack_dir, config=config, progress=self.options.progress,
                cache_dir=self.cache_dir)
            try:
                provider = cls(context)
            except DiagnosticError:
                raise
            except Exception as exc:  # a provider that cannot start is a diagnostic, not a traceback
                raise DiagnosticError.single(f'Provider "{key}" could not be configured: {exc}',
                                             source=source)
            self._providers[key] = provider
            return provider

    def provider_config(self, key: str, *, static: bool = False) -> dict[str, Any]:
        """Provider `key`'s configuration (its block, then the environment's override),
        checked against the provider's config model.

        `static` (for validate) needs no variable values: arguments that refer to
        anything are checked by name only.
        """
        type_ = key.partition(".")[0]
        model = registry.get(type_).config_model
        values: dict[str, Any] = {}
        sources: dict[str, SourceRange] = {}
        skipped: set[str] = set()
        block = SourceRange(str(self.stack_dir))
        scope = None if static else self.config_scope()
        diags: list = []
        for cfg in (self.config.root.providers.get(key), self.config.env.providers.get(key)):
            if cfg is None:
                continue
            block = cfg.source or block
            for name, expr in cfg.attributes.items():
                if name == TRACKING:
                    # the engine's, not the provider's (`provider_tracking`): its model never
                    # sees it; a literal one is checked now, as the provider's arguments are
                    diags.extend(literal_tracking_diagnostics(
                        self._tracking_of(key, cfg), self.stack_dir))
                    continue
                sources[name] = cfg.attribute_sources.get(name) or block
                if static and expr.references:
                    skipped.add(name)
                    continue
                try:
                    values[name], _ = strip_sensitive(expr.evaluate(scope or Scope({})))
                except ExprError as exc:
                    raise DiagnosticError([exc.diagnostic()])
        fields = list(model.model_fields)
        diags += [_unsupported_argument(key, type_, name, fields, sources[name])
                  for name in sorted(skipped) if name not in fields
                  and model.model_config.get("extra") == "forbid"]
        try:
            config = model.model_validate(values).model_dump()
        except ValidationError as exc:
            for e in exc.errors():
                top = str(e["loc"][0]) if e["loc"] else ""
                if top in skipped:
                    continue
                if e["type"] == "extra_forbidden" and len(e["loc"]) == 1:
                    diags.append(_unsupported_argument(key, type_, top, fields, sources[top]))
                    continue
                diags.append(error(
                    f'Invalid configuration for provider "{key}": '
                    f'{".".join(map(str, e["loc"])) or "(block)"}: {e["msg"]}',
                    source=sources.get(top, block),
                    hint=f"See `mlform providers` for what {type_} accepts."))
            config = {}
        if diags:
            raise DiagnosticError(diags)
        return config

    def config_scope(self) -> Scope:
        """What a provider's arguments and the tracking settings may refer to."""
        return Scope({"var": self.variables.values,
                      "path": {"root": str(self.stack_dir), "module": str(self.stack_dir),
                               "cwd": str(Path.cwd())},
                      "env": {"name": self.env_name}}, self.stack_dir)

    # ------------------------------------------------------------ tracking

    @property
    def stack_tracking(self) -> Tracking | None:
        """The stack's `tracking` block (the root module's), if any."""
        return self.config.root.tracking

    def provider_tracking(self, key: str) -> Tracking | None:
        """Provider `key`'s own `tracking` argument (the environment's over its block's),
        which overrides the stack's for that provider's runs; None when it has none."""
        for cfg in (self.config.env.providers.get(key), self.config.root.providers.get(key)):
            if cfg is not None and TRACKING in cfg.attributes:
                return self._tracking_of(key, cfg)
        return None

    @staticmethod
    def _tracking_of(key: str, cfg: ProviderConfig) -> Tracking:
        return tracking_of(cfg.attributes[TRACKING],
                           cfg.attribute_sources.get(TRACKING) or cfg.source,
                           f'provider "{key}"')

    def close(self) -> None:
        for provider in self._providers.values():
            try:
                provider.close()
            except Exception:
                pass  # closing is best effort; the state is already durable
        self._providers.clear()


def _unsupported_argument(key: str, type_: str, name: str, fields: list[str],
                          source: SourceRange):
    from mlform.specs import did_you_mean
    listing = f"{type_} takes: {', '.join(fields)}." if fields else f"{type_} takes no arguments."
    return error(f'Unsupported argument "{name}" in provider "{key}"', source=source,
                 hint=did_you_mean(name, fields) or listing)


S3_ARGUMENTS = ("bucket", "key", "region", "endpoint_url", "profile")


def make_backend(config: StackConfig) -> StateBackend:
    env = config.env
    source = SourceRange(str(env.file)) if env.file else None
    if env.backend_type == "local":
        path = env.backend.get("path")
        if path is not None and (not isinstance(path, str) or not path or "\0" in path):
            raise DiagnosticError.single(
                "The local backend's path must be a file path", detail=f"Got {path!r}.",
                source=source, hint='Write path = "state/NAME.json" (relative to the stack).')
        target = (config.stack_dir / path) if path else (
            config.stack_dir / ".mlform" / "state" / f"{env.name}.json")
        return LocalBackend(Path(target))
    if env.backend_type == "s3":
        return _s3_backend(config, source)
    raise DiagnosticError.single(
        f'Unknown state backend "{env.backend_type}"', source=source,
        hint='Available: "local", "s3".')


def _s3_backend(config: StackConfig, source: SourceRange | None) -> S3Backend:
    from mlform.specs import did_you_mean
    env = config.env
    diags = []
    for name in sorted(set(env.backend) - set(S3_ARGUMENTS)):
        diags.append(error(f'Unsupported argument "{name}" in backend "s3"', source=source,
                           hint=did_you_mean(name, S3_ARGUMENTS)
                           or f"s3 takes: {', '.join(S3_ARGUMENTS)}."))
    values = {}
    for name in S3_ARGUMENTS:
        value = env.backend.get(name)
        if value is not None and (not isinstance(value, str) or not value or "\0" in value):
            diags.append(error(f'The s3 backend\'s {name} must be a non-empty string',
                               detail=f"Got {value!r}.", source=source))
            continue
        values[name] = value
    if env.backend.get("bucket") is None:
        diags.append(error('The s3 backend needs a bucket', source=source,
                           hint='Write backend "s3" { bucket = "my-state-bucket" } (key, '
                                'region, endpoint_url and profile are optional).'))
    key = values.get("key") or f"mlform/{config.stack_name}/{env.name}.json"
    if key.startswith("/") or key.endswith("/"):
        diags.append(error("The s3 backend's key must name an object", detail=f"Got {key!r}.",
                           source=source,
                           hint='Write key = "mlform/STACK/ENV.json" (no leading or trailing /).'))
    if diags:
        raise DiagnosticError(diags)
    return S3Backend(values["bucket"], key, region=values.get("region"),
                     endpoint_url=values.get("endpoint_url"), profile=values.get("profile"))


__all__ = ["Session", "SessionOptions", "make_backend", "DEFAULT_PROVIDER"]
