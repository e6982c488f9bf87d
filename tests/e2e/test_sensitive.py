"""Sensitive values through the CLI: a secret given with `--var` or `MLFORM_VAR_token`
must never reach stdout, stderr, the state files (snapshot, journal, backup, audit log),
a plan file or the log file (`MLFORM_LOG`), in any output format.

The stack uses a sensitive variable in a resource attribute (`settings.api_token`),
in an output declared sensitive, and in an output that is NOT declared sensitive but
derives from it: mlform treats that one as sensitive too (Terraform refuses it with an
error; either way the value must not show).

The only place the secret may be is the memory provider's store: it plays the remote
service, which must receive the real token.  The tests check that it does, so the
"nowhere else" checks are not vacuous.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from _waiting import wait_until

from .harness import (
    load_state, make_stack, memory_provider, read_calls, read_store, run_mlform, start_mlform,
    state_path, store_path, write_store,
)

pytestmark = pytest.mark.timeout(300)

SECRET = "S3cr3t-VALUE-123"
OTHER = "S3cr3t-VALUE-456"

STACK = """
variable "token" {
  type      = string
  sensitive = true
}

dataset "d" {
  source = "s3://bucket/train.csv"
}

model "m" {
  artifact = dataset.d.uri
}

endpoint "e" {
  model    = model.m
  settings = { api_token = var.token, region = "eu-west-1" }
}

monitor "watch" {
  endpoint = endpoint.e
  baseline = dataset.d
  checks   = [{ metric = "psi", threshold = 0.2 }]
}

output "token" {
  value     = var.token
  sensitive = true
}

output "auth_header" {
  value = "Bearer ${var.token}"
}

output "url" {
  value = endpoint.e.url
}
"""


class Secrets:
    """Runs the CLI with MLFORM_LOG set and remembers every byte it printed."""

    def __init__(self, tmp_path: Path, latency_ms: float = 0) -> None:
        self.stack = make_stack(tmp_path, memory_provider(latency_ms=latency_ms) + STACK)
        self.out = tmp_path / "artifacts"          # plan files and the log: outside the stack
        self.out.mkdir()
        self.log = self.out / "mlform.log"
        self.runs = []

    def env(self, token: str | None = None) -> dict:
        env = {"MLFORM_LOG": str(self.log)}
        if token is not None:
            env["MLFORM_VAR_token"] = token
        return env

    def run(self, *args, token_env: str | None = None, expect: int | None = 0):
        result = run_mlform(*args, cwd=self.stack, env=self.env(token_env))
        self.runs.append(result)
        if expect is not None:
            assert result.code == expect, result
        return result

    def assert_nowhere(self, secret: str = SECRET) -> None:
        for r in self.runs:
            assert secret not in r.stdout, f"secret on stdout of {r.args}:\n{r}"
            assert secret not in r.stderr, f"secret on stderr of {r.args}:\n{r}"
        state_dir = state_path(self.stack).parent
        files = [p for p in state_dir.iterdir() if p.is_file()]
        files += [p for p in self.out.iterdir() if p.is_file()]
        assert any(p.name.endswith(".backup") for p in files), "expected a .backup to check"
        assert self.log.exists() and self.log.stat().st_size > 0, "MLFORM_LOG wrote nothing"
        for path in files:
            assert secret.encode() not in path.read_bytes(), f"secret found in {path}"
        # The audit log is one of those files; make sure it was there to be read, and
        # that what `history` prints of it holds no secret either.
        audit_log = state_dir / "default.json.audit.jsonl"
        assert audit_log in files and audit_log.stat().st_size > 0, "expected an audit log"
        for args in (("history",), ("history", "--json"), ("history", "verify")):
            shown = run_mlform(*args, cwd=self.stack, env=self.env())
            assert shown.code == 0, shown
            assert secret not in shown.output, f"secret in the output of {args}"

    def assert_service_has(self, secret: str = SECRET) -> None:
        """The live object (the 'service') got the clear token: the value really flowed."""
        objects = read_store(self.stack)
        endpoint = next(o for o in objects.values() if o["address"] == "endpoint.e")
        assert endpoint["attributes"]["settings"]["api_token"] == secret


def _state_hash(stack: Path) -> str:
    rs = load_state(stack).get("endpoint.e")
    assert ["settings", "api_token"] in [list(p) for p in rs.sensitive_paths]
    value = rs.attributes["settings"]["api_token"]
    assert value.startswith("(sensitive:hmac-sha256:"), value
    return value


def _plan_hash(plan_file: Path) -> str:
    doc = json.loads(plan_file.read_text())
    [(path, value)] = doc["sensitive_hashes"]["endpoint.e"]
    assert path == ["settings", "api_token"]
    return value


def test_secret_reaches_no_output_file_or_log(tmp_path):
    s = Secrets(tmp_path)
    plan_file = s.out / "first.tfplan"

    # plan in every format, with the secret on the command line
    human = s.run("plan", "--var", f"token={SECRET}")
    assert "api_token = (sensitive value)" in human.stdout
    assert "auth_header = (sensitive value)" in human.stdout    # derived: still sensitive
    as_json = json.loads(s.run("plan", "--var", f"token={SECRET}", "--format", "json").stdout)
    endpoint = next(c for c in as_json["resource_changes"] if c["address"] == "endpoint.e")
    assert endpoint["change"]["after_sensitive"] == {"settings": {"api_token": True}}
    assert endpoint["change"]["after"]["settings"]["api_token"] is None
    assert as_json["output_changes"]["auth_header"]["after_sensitive"] is True
    assert as_json["output_changes"]["token"]["after_sensitive"] is True
    s.run("plan", "--var", f"token={SECRET}", "--format", "markdown")

    # a saved plan, shown, then applied (the secret given again)
    s.run("plan", "--var", f"token={SECRET}", "--out", plan_file)
    s.run("show", plan_file)
    s.run("show", "--json", plan_file)
    applied = s.run("apply", plan_file, "--var", f"token={SECRET}")
    assert "Apply complete! Resources: 4 added" in applied.stdout
    s.assert_service_has(SECRET)

    # outputs: the declared and the derived sensitive one print as (sensitive)
    listed = s.run("output")
    assert "token = (sensitive)" in listed.stdout
    assert "auth_header = (sensitive)" in listed.stdout
    outputs = json.loads(s.run("output", "--json").stdout)
    assert outputs["token"] == {"value": None, "sensitive": True}
    assert outputs["auth_header"] == {"value": None, "sensitive": True}
    assert outputs["url"]["sensitive"] is False
    assert s.run("output", "auth_header").stdout.strip() == "(sensitive)"
    assert s.run("output", "token", "--json").stdout.strip() == "(sensitive)"

    # the state, as people read it
    s.run("show")
    shown = json.loads(s.run("show", "--json").stdout)
    pulled = json.loads(s.run("state", "pull").stdout)
    for doc in (shown, pulled):
        assert doc["outputs"]["token"]["sensitive"] is True
        assert doc["outputs"]["auth_header"]["sensitive"] is True
    s.run("state", "show", "endpoint.e")
    _state_hash(s.stack)

    # no drift, in every format; the secret now from the environment
    for fmt in ("human", "json", "markdown", "junit"):
        s.run("drift", "--format", fmt, token_env=SECRET)

    # drift: the service's copy of the token changed, and a setting was added, out of
    # band (settings.region would force a replacement: left alone)
    objects = read_store(s.stack)
    live = next(o for o in objects.values() if o["address"] == "endpoint.e")
    live["attributes"]["settings"].update(api_token="rotated-by-someone-else", owner="ops-team")
    write_store(s.stack, objects)
    for fmt in ("human", "json", "markdown", "junit"):
        drift = s.run("drift", "--format", fmt, token_env=SECRET, expect=2)
        assert "rotated-by-someone-else" not in drift.output
    human_drift = s.run("drift", token_env=SECRET, expect=2).stdout
    assert "ops-team" in human_drift
    assert "api_token = (sensitive value) -> (sensitive value)" in human_drift

    # apply puts the token back (an update), through MLFORM_VAR_token alone
    fixed = s.run("apply", "--auto-approve", token_env=SECRET)
    assert "1 changed" in fixed.stdout
    s.assert_service_has(SECRET)
    s.run("plan", "--detailed-exitcode", token_env=SECRET)   # exit 0: nothing left to do

    s.assert_nowhere(SECRET)
    assert "rotated-by-someone-else".encode() not in state_path(s.stack).read_bytes()


def test_changed_secret_is_an_update_and_same_secret_no_change(tmp_path):
    s = Secrets(tmp_path)
    s.run("apply", "--auto-approve", "--var", f"token={SECRET}")
    applied_hash = _state_hash(s.stack)

    # the same secret, either way it is given: nothing to do
    same = s.run("plan", "--detailed-exitcode", "--var", f"token={SECRET}")
    assert "No changes" in same.stdout
    s.run("plan", "--detailed-exitcode", token_env=SECRET)
    s.run("plan", "--var", f"token={SECRET}", "--out", s.out / "same.tfplan")
    assert _plan_hash(s.out / "same.tfplan") == applied_hash

    # another secret: an in-place update of the endpoint, and both outputs change
    changed = s.run("plan", "--detailed-exitcode", "--var", f"token={OTHER}", expect=2)
    assert "endpoint.e will be updated in-place" in changed.stdout
    assert "api_token = (sensitive value) -> (sensitive value)" in changed.stdout
    assert "Plan: 0 to add, 1 to change, 0 to destroy." in changed.stdout
    doc = json.loads(s.run("plan", "--format", "json", token_env=OTHER).stdout)
    actions = {c["address"]: c["change"]["actions"] for c in doc["resource_changes"]}
    assert actions["endpoint.e"] == ["update"]
    assert actions["dataset.d"] == actions["model.m"] == ["no-op"]
    assert doc["output_changes"]["token"]["actions"] == ["update"]
    assert doc["output_changes"]["auth_header"]["actions"] == ["update"]
    s.run("plan", "--var", f"token={OTHER}", "--out", s.out / "other.tfplan")
    assert _plan_hash(s.out / "other.tfplan") != applied_hash

    s.run("apply", s.out / "other.tfplan", token_env=OTHER)
    assert _state_hash(s.stack) == _plan_hash(s.out / "other.tfplan") != applied_hash
    s.assert_service_has(OTHER)
    s.run("plan", "--detailed-exitcode", token_env=OTHER)

    s.assert_nowhere(SECRET)
    s.assert_nowhere(OTHER)


def test_applying_a_plan_file_needs_the_same_secret_again(tmp_path):
    s = Secrets(tmp_path)
    plan_file = s.out / "saved.tfplan"
    s.run("plan", "--var", f"token={SECRET}", "--out", plan_file)
    assert SECRET.encode() not in plan_file.read_bytes()

    missing = s.run("apply", plan_file, expect=1)
    assert 'variable "token"' in missing.stderr
    wrong = s.run("apply", plan_file, "--var", f"token={OTHER}", expect=1)
    assert 'Sensitive variable "token" must be given again' in wrong.stderr
    wrong_env = s.run("apply", plan_file, token_env=OTHER, expect=1)
    assert 'Sensitive variable "token" must be given again' in wrong_env.stderr
    assert not read_store(s.stack), "a refused plan must apply nothing"
    assert not state_path(s.stack).exists() or not load_state(s.stack).resources

    ok = s.run("apply", plan_file, token_env=SECRET)
    assert "Apply complete! Resources: 4 added" in ok.stdout
    s.assert_service_has(SECRET)
    again = s.run("apply", plan_file, token_env=SECRET, expect=1)   # used: now stale
    assert "Saved plan is stale" in again.stderr

    s.assert_nowhere(SECRET)
    s.assert_nowhere(OTHER)


def test_journal_of_an_interrupted_apply_holds_no_secret(tmp_path):
    """SIGKILL the apply after the endpoint was recorded: the journal left behind holds
    the keyed hash, never the token; the next run settles it without printing it."""
    s = Secrets(tmp_path, latency_ms=400)
    proc = start_mlform("apply", "--auto-approve", "--var", f"token={SECRET}", cwd=s.stack,
                        env=s.env())
    journal = state_path(s.stack).with_name("default.json.journal")
    def monitor_create_started() -> bool:
        assert proc.poll() is None, "the apply ended before it could be interrupted"
        return any(c["address"] == "monitor.watch" for c in read_calls(s.stack))

    try:
        wait_until(monitor_create_started, 60, "the monitor's create to start")
    finally:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    assert SECRET not in out and SECRET not in err
    data = journal.read_bytes()
    assert b'"endpoint.e"' in data and b"sensitive:hmac-sha256:" in data
    assert SECRET.encode() not in data
    assert SECRET.encode() in store_path(s.stack).with_name("memory.json.log").read_bytes() or \
        SECRET.encode() in store_path(s.stack).read_bytes()

    s.run("apply", "--auto-approve", token_env=SECRET)      # recovers, then finishes
    assert not journal.exists()
    assert sorted(load_state(s.stack).resources) == [
        "dataset.d", "endpoint.e", "model.m", "monitor.watch"]
    s.assert_nowhere(SECRET)
