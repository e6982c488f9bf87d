"""The `provider "memory" { }` block: its pydantic model and the failure plan.

```hcl
provider "memory" {
  store      = ".mlform/memory/{env}.json"   # relative to the stack directory
  latency_ms = 0                             # slept on read/create/update/delete/import
  fail       = { "create:endpoint.x" = "quota exceeded" }
  call_log   = ".mlform/memory/calls.jsonl"  # one JSON line per mutating call
  prices     = { "ml.m5.large" = 0.115 }      # USD per hour by instance type (cost in plans)
}
```

`fail` keys are ``"OP:ADDRESS"``; ``create-partial`` makes the object and
then fails, handing it back as `ProviderError.partial` so tests can exercise
tainting.  Keys are checked when the block is validated, so a typo in an
operation name is a config error rather than a failure that never fires.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlform.providers.base import ProviderError
from mlform.providers.kit.pricing import Prices

__all__ = ["FAIL_OPS", "MemoryConfig", "FailurePlan", "injected_error", "resolve_path"]

#: operations a `fail` key may name
FAIL_OPS = ("validate", "plan", "create", "create-partial", "read", "update", "delete", "import")


class MemoryConfig(BaseModel):
    """Settings of the built-in memory provider; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str = ".mlform/memory/{env}.json"
    latency_ms: float = Field(default=0, ge=0)
    fail: dict[str, str] = Field(default_factory=dict)
    call_log: str | None = None
    prices: Prices = None

    @field_validator("fail")
    @classmethod
    def _check_fail_keys(cls, fail: dict[str, str]) -> dict[str, str]:
        for key in fail:
            op, sep, address = key.partition(":")
            if not sep or not address:
                raise ValueError(f"fail key {key!r} must look like 'OP:ADDRESS'")
            if op not in FAIL_OPS:
                raise ValueError(f"fail key {key!r}: operation {op!r} is not one of "
                                 f"{', '.join(FAIL_OPS)}")
        return fail



class FailurePlan:
    """Injected failures, looked up by operation and address."""

    def __init__(self, fail: Mapping[str, str]) -> None:
        # (op, address) -> message; split once here so each call is one dict lookup
        self._messages = {tuple(key.split(":", 1)): message for key, message in fail.items()}

    def message(self, op: str, address: str) -> str | None:
        return self._messages.get((op, address))

    def raise_for(self, op: str, address: str) -> None:
        """Raise the injected `ProviderError` for (op, address), if there is one."""
        message = self.message(op, address)
        if message is not None:
            raise injected_error(op, address, message)


def injected_error(op: str, address: str, message: str, partial=None) -> ProviderError:
    return ProviderError(f"{address}: {op} failed: {message}", address=address,
                         service_message=message, partial=partial)


def resolve_path(template: str, *, stack_dir: Path, stack: str, env: str) -> Path:
    """Substitute ``{env}`` / ``{stack}`` and resolve relative paths against the stack.

    Plain `str.replace`, not `str.format`, so other braces in a path stay literal.
    """
    path = Path(template.replace("{env}", env).replace("{stack}", stack)).expanduser()
    if not path.is_absolute():
        path = Path(stack_dir) / path
    return path.resolve()
