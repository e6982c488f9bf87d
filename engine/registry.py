"""Provider discovery: the ``mlform.providers`` entry-point group.

Plugins are validated when loaded, with errors that name the plugin, the hook
and what is missing (as pluggy does), so a broken plugin fails at `mlform
providers` rather than in the middle of an apply.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib.metadata import entry_points

from pydantic import BaseModel

from mlform.diagnostics import DiagnosticError
from mlform.providers.base import KINDS, KindSchema, Provider

GROUP = "mlform.providers"
_REQUIRED_CALLS = ("validate", "plan", "create", "read", "update", "delete", "import_",
                   "fact_keys", "read_facts")
#: the contract version this engine speaks (`Provider.contract_version`)
CONTRACT_VERSION = 2
#: hooks whose arguments changed between versions: name -> parameters after self
_PARAMETERS = {"validate": 2, "plan": 3, "fact_keys": 2, "read_facts": 1}


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    cls: type[Provider] | None
    origin: str            # "module:attr" of the entry point
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def check_provider_class(name: str, cls: object) -> list[str]:
    """Everything wrong with a provider class, as sentences naming the hook."""
    problems: list[str] = []
    if not (inspect.isclass(cls) and issubclass(cls, Provider)):
        return [f"{cls!r} is not a subclass of mlform.providers.base.Provider"]
    if getattr(cls, "name", None) != name:
        problems.append(f"class attribute name is {getattr(cls, 'name', None)!r}, "
                        f"but the entry point is {name!r}")
    kinds = getattr(cls, "kinds", None)
    if not isinstance(kinds, dict) or not kinds:
        problems.append("kinds must be a non-empty dict of kind -> KindSchema")
    else:
        for kind, schema in kinds.items():
            if kind not in KINDS:
                problems.append(f"kinds declares unknown kind {kind!r} (known: {', '.join(KINDS)})")
            if not isinstance(schema, KindSchema):
                problems.append(f"kinds[{kind!r}] is not a KindSchema")
            elif not (inspect.isclass(schema.settings_model) and issubclass(schema.settings_model, BaseModel)):
                problems.append(f"kinds[{kind!r}].settings_model is not a pydantic model")
    if not (inspect.isclass(getattr(cls, "config_model", None))
            and issubclass(cls.config_model, BaseModel)):
        problems.append("config_model is not a pydantic model")
    version = getattr(cls, "contract_version", None)
    if version != CONTRACT_VERSION:
        problems.append(f"implements contract version {version!r}, but this mlform speaks "
                        f"version {CONTRACT_VERSION} (see docs/providers.md)")
    abstract = getattr(cls, "__abstractmethods__", frozenset())
    for call in _REQUIRED_CALLS:
        if call in abstract or not callable(getattr(cls, call, None)):
            problems.append(f"hook {call}() is not implemented")
            continue
        wanted = _PARAMETERS.get(call)
        if wanted is not None and _arity(getattr(cls, call)) != wanted:
            problems.append(f"hook {call}() takes {_arity(getattr(cls, call))} argument(s), "
                            f"the contract passes {wanted}")
    return problems


def _arity(fn) -> int | None:
    """Positional parameters after `self` (None when it takes *args)."""
    try:
        params = list(inspect.signature(fn).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _load(ep) -> ProviderInfo:
    try:
        cls = ep.load()
    except Exception as exc:  # a broken plugin must not take the CLI down
        return ProviderInfo(ep.name, None, ep.value, (f"import failed: {exc}",))
    return ProviderInfo(ep.name, cls, ep.value, tuple(check_provider_class(ep.name, cls)))


def discover() -> dict[str, ProviderInfo]:
    """Every installed provider, each loaded and checked (`mlform providers`)."""
    found = {ep.name: _load(ep) for ep in entry_points(group=GROUP)}
    _cache.update(found)
    return found


#: providers loaded so far, by name: a run loads only the providers its stack uses
#: (importing all of them cost a plan on the memory provider 0.1 s of imports)
_cache: dict[str, ProviderInfo] = {}


def get(name: str) -> type[Provider]:
    info = _cache.get(name)
    if info is None:
        named = entry_points(group=GROUP, name=name)
        if not named:
            known = ", ".join(sorted(ep.name for ep in entry_points(group=GROUP))) or "none"
            raise DiagnosticError.single(
                f'Provider "{name}" is not installed',
                detail=f"Installed providers: {known}.",
                hint="Install the package that provides it, or pick one with provider = NAME.")
        info = _cache[name] = _load(next(iter(named)))
    if not info.ok:
        raise DiagnosticError.single(
            f'Provider "{name}" ({info.origin}) failed validation',
            detail="\n".join(info.problems))
    return info.cls  # type: ignore[return-value]


__all__ = ["discover", "get", "check_provider_class", "ProviderInfo", "GROUP", "CONTRACT_VERSION"]
