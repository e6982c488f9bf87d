"""Helpers for the end-to-end tests: stacks on disk and the CLI run as a subprocess.

The CLI is started as ``python -m mlform.cli`` with this interpreter, exactly as a user
would run it (a fresh process each time, real exit codes, real signals), never in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from mlform.state import LocalBackend, State

CLI = [sys.executable, "-m", "mlform.cli"]


@dataclass
class Run:
    """A finished CLI run."""

    args: tuple
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self):
        return json.loads(self.stdout)

    def __str__(self) -> str:  # shown by failing asserts
        return (f"mlform {' '.join(map(str, self.args))} -> exit {self.code}\n"
                f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}")


#: what says "this is a CI run" (mlform.state.identity): the runs under test must not take
#: the CI identity of the machine running the tests; tests that want one pass it
_CI_PREFIXES = ("GITHUB_", "GITLAB_", "CI_")


def cli_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFORM_", *_CI_PREFIXES)) and k != "CI"}
    env.update({"NO_COLOR": "1", "COLUMNS": "200", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def run_mlform(*args, cwd: Path, env: dict | None = None, timeout: float = 120,
               input: str | None = None) -> Run:
    """Run `mlform ARGS...` in `cwd` and wait for it (stdin is not a terminal)."""
    proc = subprocess.run([*CLI, *map(str, args)], cwd=cwd, env=cli_env(env), timeout=timeout,
                          input=input if input is not None else "", capture_output=True,
                          text=True)
    return Run(tuple(args), proc.returncode, proc.stdout, proc.stderr)


def start_mlform(*args, cwd: Path, env: dict | None = None, **popen) -> subprocess.Popen:
    """Start `mlform ARGS...` without waiting (for kills, signals and races)."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([*CLI, *map(str, args)], cwd=cwd, env=cli_env(env),
                            stdin=subprocess.DEVNULL, text=True, **popen)


def make_stack(root: Path, hcl: str, *, name: str = "stack", files: dict | None = None) -> Path:
    """A stack directory under `root` holding main.hcl (dedented) and any extra files."""
    stack = Path(root) / name
    stack.mkdir(parents=True, exist_ok=True)
    (stack / "main.hcl").write_text(textwrap.dedent(hcl).lstrip())
    for rel, text in (files or {}).items():
        path = stack / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return stack


STORE = ".mlform/memory.json"       # where memory_provider() keeps the store...
CALLS = ".mlform/calls.jsonl"       # ...and the log of mutating calls


def memory_provider(store: str = STORE, *, latency_ms: float = 0, fail: dict | None = None,
                    call_log: str = CALLS) -> str:
    """A `provider "memory"` block."""
    lines = [f'  store      = "{store}"', f"  latency_ms = {latency_ms}",
             f'  call_log   = "{call_log}"']
    if fail:
        entries = ", ".join(f'"{k}" = "{v}"' for k, v in fail.items())
        lines.append(f"  fail       = {{ {entries} }}")
    return 'provider "memory" {\n' + "\n".join(lines) + "\n}\n"


# --- files the engine and the memory provider leave ------------------------------------

def state_path(stack: Path, env: str = "default") -> Path:
    return Path(stack) / ".mlform" / "state" / f"{env}.json"


def load_state(stack: Path, env: str = "default") -> State:
    """The state as the engine reads it: the snapshot parsed strictly, journal replayed."""
    path = state_path(stack, env)
    State.from_json(json.loads(path.read_text()), source=str(path))
    return LocalBackend(path).load().state


def store_path(stack: Path, store: str = STORE) -> Path:
    return Path(stack) / store


def read_store(stack: Path, store: str = STORE) -> dict:
    """The memory store's objects by id; it must be compacted (no log left)."""
    path = store_path(stack, store)
    log = path.with_name(path.name + ".log")
    assert not log.exists(), f"the memory store was not compacted: {log} remains"
    if not path.exists():
        return {}
    return json.loads(path.read_text())["objects"]


def write_store(stack: Path, objects: dict) -> None:
    path = store_path(stack)
    doc = json.loads(path.read_text())
    doc["objects"] = objects
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def calls_path(stack: Path, calls: str = CALLS) -> Path:
    return Path(stack) / calls


def read_calls(stack: Path, calls: str = CALLS) -> list[dict]:
    path = calls_path(stack, calls)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class CallLog:
    """Mark the call log, then see what was called since the mark."""

    def __init__(self, stack: Path) -> None:
        self.stack = stack
        self.mark()

    def mark(self) -> None:
        self._seen = len(read_calls(self.stack))

    def since(self) -> list[dict]:
        return read_calls(self.stack)[self._seen:]


def assert_store_matches_state(stack: Path, env: str = "default", store: str = STORE) -> None:
    """One live object per state resource, and no object the state does not know."""
    state = load_state(stack, env)
    objects = read_store(stack, store)
    by_id = {rs.id: rs for rs in state.resources.values()}
    assert len(by_id) == len(state.resources), "two state resources share one object id"
    orphans = sorted(set(objects) - set(by_id))
    missing = sorted(set(by_id) - set(objects))
    assert not orphans, f"objects the state does not know (orphans): {orphans[:10]}"
    assert not missing, f"state resources with no live object: {missing[:10]}"
    addresses = [obj.get("address") for obj in objects.values()]
    dupes = sorted({a for a in addresses if addresses.count(a) > 1})
    assert not dupes, f"several live objects for one address: {dupes[:10]}"
    for id, obj in objects.items():
        assert obj.get("address") == by_id[id].address, (id, obj.get("address"), by_id[id].address)
