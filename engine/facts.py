"""Reading facts: the I/O half of planning (the planner itself reads nothing).

The planner (and validate, and apply's final plans) ask for facts as
``(provider key, FactKey)`` requests (`mlform.plan.inputs`).  `read_facts` reads a
batch: the engine's own (a pipeline entrypoint's sha256, from the shared
`DigestCache`) and each provider's, through `Provider.read_facts`, the providers side
by side on threads.  A fact that cannot be read becomes a `FactError` value, which the
pure calls turn into a diagnostic; a provider that crashes while reading is a
diagnostic naming it.  The digest cache file is saved once per batch.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from mlform.diagnostics import DiagnosticError, error
from mlform.plan.inputs import ENGINE, FactRequest, ProviderSet
from mlform.providers.base import FactError, FactKey, ProviderError
from mlform.providers.kit.digests import DigestCache

__all__ = ["read_facts", "read_engine_facts"]


def read_engine_facts(keys: Iterable[FactKey], digests: DigestCache) -> dict[FactKey, Any]:
    """The engine's facts: entrypoint digests (a FactError when there is no such file)."""
    out: dict[FactKey, Any] = {}
    for key in keys:
        path = Path(key.args[0])
        try:
            if not path.is_file():
                out[key] = FactError(f"there is no file {path}")
                continue
            out[key] = digests.file(path).digest
        except (OSError, ValueError) as exc:      # unreadable, or a name with a NUL byte
            out[key] = FactError(f"cannot read {path}: {exc}")
    return out


def _provider_facts(providers: ProviderSet, key: str, keys: list[FactKey]) -> dict[FactKey, Any]:
    try:
        provider = providers.get(key)
    except DiagnosticError as exc:           # configuration failed: said where it is used
        message = exc.diagnostics[0].summary if exc.diagnostics else "not configured"
        return {k: FactError(message) for k in keys}
    try:
        found = provider.read_facts(keys)
    except ProviderError as exc:
        # the whole batch failed (a service out of reach): each fact says so
        return {k: FactError(exc.message, exc.retryable) for k in keys}
    except Exception as exc:  # a provider bug must not crash the engine
        raise DiagnosticError([error(
            f'Provider "{key}" crashed reading facts: {type(exc).__name__}: {exc}',
            hint="This is a bug in the provider.")]) from exc
    missing = [k for k in keys if k not in found]
    if missing:
        raise DiagnosticError([error(
            f'Provider "{key}" did not read {len(missing)} fact(s) it asked for '
            f"(e.g. {missing[0]})", hint="This is a bug in the provider.")])
    return found


def read_facts(requests: Iterable[FactRequest], providers: ProviderSet,
               digests: DigestCache) -> dict[FactRequest, Any]:
    """Read a batch of fact requests; the providers' reads run side by side."""
    by_provider: dict[str | None, list[FactKey]] = defaultdict(list)
    for provider, key in requests:
        by_provider[provider].append(key)
    out: dict[FactRequest, Any] = {}
    engine_keys = by_provider.pop(ENGINE, [])
    if engine_keys:
        out.update({(ENGINE, k): v for k, v in read_engine_facts(engine_keys, digests).items()})
    if len(by_provider) == 1:
        [(key, keys)] = by_provider.items()
        out.update({(key, k): v for k, v in _provider_facts(providers, key, keys).items()})
    elif by_provider:
        with cf.ThreadPoolExecutor(max_workers=len(by_provider),
                                   thread_name_prefix="mlform-facts") as pool:
            futures = {key: pool.submit(_provider_facts, providers, key, keys)
                       for key, keys in by_provider.items()}
            for key, future in futures.items():
                out.update({(key, k): v for k, v in future.result().items()})
    digests.save()
    return out
