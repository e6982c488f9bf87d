"""The built-in `memory` provider: live objects in a local JSON file.

The in-product fake that tests and benchmarks drive the engine with (as
httpx's MockTransport is for httpx): it serves every kind, computes what real
providers compute, can be made slow or failing per call, and its store file
can be edited by hand to simulate drift.

```hcl
provider "memory" {
  store      = ".mlform/memory/{env}.json"
  latency_ms = 0
  fail       = { "create:endpoint.x" = "quota exceeded" }   # also create-partial:ADDR
  call_log   = ".mlform/memory/calls.jsonl"
}
```

Modules: `provider` (set-up, on the provider kit), `env` (what every kind shares:
how objects are stored, adopted and read), one module per kind (`datasets`,
`clusters`, `pipelines`, `models`, `endpoints`, `monitors`: what each computes),
`store` (file store + append-only log), `config`, `calllog`, `trees`.
"""

from .calllog import read_calls
from .config import MemoryConfig
from .provider import MemoryProvider

__all__ = ["MemoryProvider", "MemoryConfig", "read_calls"]
