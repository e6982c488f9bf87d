"""Run an exported Pulumi program under Pulumi's unit-test mocks (no Pulumi CLI, no cloud).

`run_program(dir, config=..., secrets=...)` runs ``dir/__main__.py`` in a subprocess (Pulumi's
runtime is process-global: a second program in the same process would see the first's
resources) with `pulumi.runtime.set_mocks`, and returns what the program registered:
one `Registered` per resource, its inputs as Pulumi sends them to the engine (camelCase
keys, as on the wire) with every secret value wrapped as ``{"secret": value}``, so a test
sees both the value and that it is marked secret.

Run as a script it is that subprocess: ``python tests/_pulumi.py DIR CONFIG_JSON``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import pytest
except ImportError:   # run as the subprocess, in an exported program's own venv
    pytest = None

__all__ = ["Registered", "run_program", "needs_pulumi"]

#: Pulumi's marker of a secret value in serialized inputs (its "special sig" key and value)
SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")


def _have_pulumi() -> bool:
    import importlib.util
    return all(importlib.util.find_spec(m) for m in ("pulumi", "pulumi_aws", "pulumi_kubernetes"))


needs_pulumi = pytest.mark.skipif(not _have_pulumi(),
                                  reason="the `pulumi` extra is not installed") if pytest else None


@dataclass(frozen=True)
class Registered:
    type: str
    name: str
    inputs: dict[str, Any]


def run_program(program_dir: Path, *, config: dict[str, str] | None = None,
                secrets: dict[str, str] | None = None, timeout: float = 300,
                python: str = sys.executable) -> list[Registered]:
    """The resources `program_dir`'s program registers under mocks, in registration order.
    `config` and `secrets` are the stack config (secrets set as Pulumi secrets); `python`
    the interpreter (with pulumi and the SDKs) to run it with."""
    import yaml
    project = yaml.safe_load((program_dir / "Pulumi.yaml").read_text())["name"]
    spec = {"project": project, "config": dict(config or {}), "secrets": dict(secrets or {})}
    done = subprocess.run([python, __file__, str(program_dir), json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"the program failed under mocks:\n{done.stderr[-4000:]}"
    last = done.stdout.strip().splitlines()[-1]
    return [Registered(**r) for r in json.loads(last)]


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get(SECRET_SIG[0]) == SECRET_SIG[1]:
            return {"secret": _unwrap(value.get("value"))}
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def _main(program_dir: str, raw: str) -> None:
    import runpy

    import pulumi
    spec = json.loads(raw)
    seen: list[dict] = []

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs):
            seen.append({"type": args.typ, "name": args.name, "inputs": _unwrap(args.inputs)})
            return [f"{args.name}-id", dict(args.inputs)]

        def call(self, args: pulumi.runtime.MockCallArgs):
            return {}

    project = spec["project"]
    pulumi.runtime.set_mocks(Mocks(), project=project, stack="test", preview=False)
    values = {f"{project}:{k}": v for k, v in {**spec["config"], **spec["secrets"]}.items()}
    pulumi.runtime.set_all_config(values, secret_keys=[f"{project}:{k}" for k in spec["secrets"]])
    sys.path.insert(0, program_dir)
    scope = runpy.run_path(str(Path(program_dir) / "__main__.py"), run_name="__main__")
    resources = [v for v in scope.values() if isinstance(v, pulumi.Resource)]

    @pulumi.runtime.test
    def registered():
        # every resource's urn resolves once the mocks answered its registration
        return pulumi.Output.all(*[r.urn for r in resources])

    registered()
    print(json.dumps(seen, default=str))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
