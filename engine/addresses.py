"""Resource addresses: `KIND.NAME`, `KIND.NAME["key"]` / `[0]`, prefixed by `module.M.`.

One parser for every place that reads an address back (state recovery,
`--target`, `state mv`, orphans), so they all agree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_SEGMENT = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\.([A-Za-z_][A-Za-z0-9_-]*)(\[(?:"(?:[^"\\]|\\.)*"|\d+)\])?')


@dataclass(frozen=True)
class Address:
    module: str          # "" or "module.a.module.b"
    kind: str
    name: str
    index_key: Any = None
    has_index: bool = False

    @property
    def config_key(self) -> str:
        prefix = f"{self.module}." if self.module else ""
        return f"{prefix}{self.kind}.{self.name}"

    def __str__(self) -> str:
        if not self.has_index:
            return self.config_key
        key = json.dumps(self.index_key) if isinstance(self.index_key, str) else str(self.index_key)
        return f"{self.config_key}[{key}]"


class AddressError(ValueError):
    pass


def parse_address(text: str) -> Address:
    """Parse a resource instance address; raises AddressError with what was expected."""
    rest = text.strip()
    modules: list[str] = []
    while rest.startswith("module."):
        m = re.match(r"module\.([A-Za-z_][A-Za-z0-9_-]*)\.?", rest)
        if not m:
            break
        modules.append(f"module.{m.group(1)}")
        rest = rest[m.end():]
        if not rest:
            raise AddressError(f'"{text}" names a module, not a resource')
    m = _SEGMENT.fullmatch(rest)
    if not m:
        raise AddressError(f'"{text}" is not a resource address; expected KIND.NAME, '
                           f'KIND.NAME["key"] or KIND.NAME[0], optionally after module.M.')
    index = m.group(3)
    key: Any = None
    if index:
        inner = index[1:-1]
        try:
            key = json.loads(inner) if inner.startswith('"') else int(inner)
        except ValueError:  # a bad escape, or more digits than Python converts
            raise AddressError(f'"{text[:80]}" has an invalid index {index[:40]}') from None
    return Address(".".join(modules), m.group(1), m.group(2), key, bool(index))


def config_key(address: str) -> str:
    """`module.m.dataset.d["k"]` → `module.m.dataset.d` (the block the instance comes from)."""
    try:
        return parse_address(address).config_key
    except AddressError:
        return address


def matches(target: str, address: str) -> bool:
    """Does a --target (module, block or instance address) select this instance address?"""
    if address == target:
        return True
    return address.startswith(target + ".") or address.startswith(target + "[")


__all__ = ["Address", "AddressError", "parse_address", "config_key", "matches"]
