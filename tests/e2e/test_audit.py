"""The audit trail through the CLI: every mutating command appends a hash-chained record
(who, when, command, plan digest, changes, outcome) to a log kept with the state, on the
local and the s3 backend; `mlform history` lists it and `mlform history verify` checks it.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
from pathlib import Path

import pytest
from fixture import AWS_ENV

from mlform import planfile
from mlform.audit import plan_digest

from .harness import CLI, cli_env, memory_provider, run_mlform, start_mlform, state_path

pytestmark = pytest.mark.timeout(300)

RESOURCES = """
dataset "d" {
  for_each = toset(["a", "b"])
  source   = "s3://bucket/${each.key}.csv"
}

model "m" {
  artifact = dataset.d["a"].uri
}
"""
STACK = memory_provider() + RESOURCES
GITHUB = {"GITHUB_ACTIONS": "true", "GITHUB_ACTOR": "octocat",
          "GITHUB_REPOSITORY": "acme/ml-infra", "GITHUB_RUN_ID": "4242",
          "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
          "GITHUB_TOKEN": "ghs_do-not-record-me"}


def audit_log(stack: Path, env: str = "default") -> Path:
    return state_path(stack, env).with_name(f"{env}.json.audit.jsonl")


def records(stack: Path, *args, env: dict | None = None) -> list[dict]:
    shown = run_mlform("history", "--json", *args, cwd=stack, env=env)
    assert shown.code == 0, shown
    doc = shown.json()
    assert doc["chain"] == {"intact": True, "problem": None}, doc["chain"]
    return doc["records"]


def ok(*args, cwd: Path, env: dict | None = None, input: str | None = None):
    result = run_mlform(*args, cwd=cwd, env=env, input=input)
    assert result.code == 0, result
    assert "Traceback" not in result.output
    return result


def summary(record: dict) -> tuple:
    return (record["command"], record["outcome"],
            sorted((c["address"], tuple(c["actions"])) for c in record["changes"]))


def test_every_mutating_command_appends_a_record(make_stack, tmp_path):
    stack = make_stack(STACK)
    saved = tmp_path / "reviewed.tfplan"
    ok("plan", "--out", saved, cwd=stack)
    ok("apply", saved, cwd=stack, env=GITHUB)
    ok("plan", cwd=stack)                                     # read-only: no record
    ok("refresh", cwd=stack)
    ok("state", "mv", "model.m", "model.n", cwd=stack)
    ok("state", "rm", 'dataset.d["b"]', cwd=stack)
    pulled = ok("state", "pull", cwd=stack).json()
    (tmp_path / "state.json").write_text(json.dumps(pulled))
    ok("state", "push", tmp_path / "state.json", cwd=stack)
    # a lock another run left behind (its holder is gone), removed by id
    lock = state_path(stack).with_name("default.json.lock")
    lock.write_text(json.dumps({"id": "left-by-a-killed-run", "pid": 1, "host": "h",
                                "operation": "apply", "who": "w", "created": "2026-01-01",
                                "path": "p"}))
    ok("force-unlock", "left-by-a-killed-run", cwd=stack)
    failed_unlock = run_mlform("force-unlock", "no-such-lock", cwd=stack)
    assert failed_unlock.code == 1, failed_unlock
    ok("destroy", "--auto-approve", cwd=stack)

    log = records(stack)
    assert [summary(r) for r in log] == [
        ("apply", "success", [('dataset.d["a"]', ("create",)), ('dataset.d["b"]', ("create",)),
                              ("model.m", ("create",))]),
        ("refresh", "success", []),
        ("state mv", "success", [("model.n", ("move",))]),
        ("state rm", "success", [('dataset.d["b"]', ("forget",))]),
        ("state push", "success", []),
        ("force-unlock", "success", []),
        ("force-unlock", "error", []),
        ("destroy", "success", [('dataset.d["a"]', ("delete",)), ("model.n", ("delete",))]),
    ]
    assert [r["seq"] for r in log] == list(range(1, 9))
    assert log[0]["prev"] == "0" * 64
    assert all(b["prev"] == a["hash"] for a, b in zip(log, log[1:]))
    assert log[2]["changes"][0]["from"] == "model.m"
    assert "left-by-a-killed-run" in log[5]["detail"]
    assert log[0]["detail"].startswith(f"plan file {saved}")

    # the reviewed plan's digest is recorded: the same plan file, read back, gives it
    plan, _ = planfile.load(saved)
    assert log[0]["plan"] == plan_digest(plan) and log[0]["plan"].startswith("sha256:")
    assert log[1]["plan"].startswith("sha256:") and log[1]["plan"] != log[0]["plan"]

    # who: the GitHub identity for the run that had it, the user and host otherwise
    ci = log[0]["who"]["ci"]
    assert ci == {"system": "github", "actor": "octocat", "repository": "acme/ml-infra",
                  "run_id": "4242", "sha": GITHUB["GITHUB_SHA"],
                  "run_url": "https://github.com/acme/ml-infra/actions/runs/4242"}
    assert log[0]["who"]["user"] and log[0]["who"]["host"]
    assert "ghs_do-not-record-me" not in audit_log(stack).read_text()
    assert all(r["env"] == "default" and r["stack"] == "stack" for r in log)
    for r in log:
        assert r["time"].endswith("Z") and "T" in r["time"]

    table = ok("history", cwd=stack).stdout.splitlines()
    assert table[0].split() == ["SEQ", "TIME", "WHO", "COMMAND", "OUTCOME", "CHANGES"]
    assert table[1].split()[2:] == ["octocat", "(github)", "apply", "success", "3"]
    assert table[-1].split()[0] == "8" and table[-1].split()[-3:] == ["destroy", "success",
                                                                        "2"]
    verified = ok("history", "verify", cwd=stack)
    assert verified.stdout.strip().startswith("8 records, chain intact (head: record 8,")
    assert ok("history", "verify", stack, cwd=tmp_path).stdout == verified.stdout


def test_import_records_success_and_failure(make_stack):
    stack = make_stack(STACK)
    ok("apply", "--auto-approve", cwd=stack)
    object_id = next(r["id"] for r in ok("state", "pull", cwd=stack).json()["resources"]
                     if r["address"] == 'dataset.d["b"]')
    ok("state", "rm", 'dataset.d["b"]', cwd=stack)
    missing = run_mlform("import", 'dataset.d["b"]', "no-such-object", cwd=stack)
    assert missing.code == 1, missing
    ok("import", 'dataset.d["b"]', object_id, cwd=stack)
    log = records(stack)
    assert [summary(r) for r in log[2:]] == [
        ("import", "error", [('dataset.d["b"]', ("import",))]),
        ("import", "success", [('dataset.d["b"]', ("import",))]),
    ]
    assert "found no object" in log[2]["detail"]
    assert log[3]["detail"] == f"id {object_id}"


def test_a_failed_apply_is_recorded_as_an_error_naming_what_failed(make_stack):
    stack = make_stack(memory_provider(fail={"create:model.m": "quota exceeded"}) + RESOURCES)
    failed = run_mlform("apply", "--auto-approve", cwd=stack)
    assert failed.code == 1, failed
    [record] = records(stack)
    assert record["outcome"] == "error"
    assert record["detail"] == "2 added, 0 changed, 0 destroyed, 1 failed: model.m"
    failed_changes = {c["address"]: c.get("failed", False) for c in record["changes"]}
    assert failed_changes == {'dataset.d["a"]': False, 'dataset.d["b"]': False,
                              "model.m": True}
    # the provider's message is not the engine's: it stays out of the record
    assert "quota exceeded" not in audit_log(stack).read_text()


def test_an_apply_with_nothing_to_do_and_a_spec_mistake_record_nothing(make_stack):
    stack = make_stack(STACK)
    ok("apply", "--auto-approve", cwd=stack)
    ok("apply", "--auto-approve", cwd=stack)                  # no changes
    (stack / "main.hcl").write_text(STACK + '\nmodel "x" {\n  artifact = nope.nothing\n}\n')
    assert run_mlform("apply", "--auto-approve", cwd=stack).code == 1
    (stack / "main.hcl").write_text(STACK)      # history reads the backend from the spec
    assert len(records(stack)) == 1


def test_a_stale_plan_file_is_recorded_as_refused(make_stack, tmp_path):
    stack = make_stack(STACK)
    saved = tmp_path / "old.tfplan"
    ok("plan", "--out", saved, cwd=stack)
    ok("apply", "--auto-approve", cwd=stack)
    stale = run_mlform("apply", saved, cwd=stack)
    assert stale.code == 1 and "stale" in stale.stderr, stale
    log = records(stack)
    assert [(r["command"], r["outcome"]) for r in log] == [("apply", "success"),
                                                            ("apply", "refused")]
    assert log[1]["plan"] == plan_digest(planfile.load(saved)[0])
    assert "stale" in log[1]["detail"]


def test_an_interrupted_apply_is_recorded_as_cancelled(make_stack):
    stack = make_stack(memory_provider(latency_ms=1500) + """
dataset "d" {
  for_each = toset(["a", "b", "c", "d"])
  source   = "s3://bucket/${each.key}.csv"
}
""")
    proc = start_mlform("apply", "--auto-approve", "--parallelism", 1, cwd=stack)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "Creating..." in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, "".join(seen) + out + err
    [record] = records(stack)
    assert record["command"] == "apply" and record["outcome"] == "cancelled", record
    assert record["detail"].startswith("interrupted: ") and "not started" in record["detail"]


def test_a_lost_audit_record_is_a_warning_and_the_work_stands(make_stack):
    stack = make_stack(STACK)
    audit_log(stack).mkdir(parents=True)                      # cannot be written as a file
    applied = run_mlform("apply", "--auto-approve", cwd=stack)
    assert applied.code == 0, applied
    assert "Apply complete! Resources: 3 added" in applied.stdout
    assert "warning: The apply was not recorded in the audit log" in applied.stderr, applied
    assert "mlform history verify" in applied.stderr
    assert "Traceback" not in applied.output and "error:" not in applied.stderr
    assert ok("plan", "--detailed-exitcode", cwd=stack)       # nothing left to do: applied


def test_verify_names_the_first_bad_record(make_stack):
    stack = make_stack(STACK)
    ok("apply", "--auto-approve", cwd=stack)
    for address in ('dataset.d["a"]', 'dataset.d["b"]', "model.m"):
        ok("state", "rm", address, cwd=stack)
    path = audit_log(stack)
    good = path.read_text().splitlines(keepends=True)
    assert len(good) == 4

    def refused(lines: list[str], *expected: str) -> None:
        path.write_text("".join(lines))
        result = run_mlform("history", "verify", cwd=stack)
        assert result.code == 1, result
        assert "Traceback" not in result.output
        assert f"error: The audit log {path.resolve()} fails verification" in result.stderr \
            or "fails verification" in result.stderr, result
        for text in expected:
            assert text in result.stderr, result
        as_json = run_mlform("history", "verify", "--json", cwd=stack)
        assert as_json.code == 1 and as_json.json()["intact"] is False, as_json

    edited = good[:1] + [good[1].replace('"success"', '"error"')] + good[2:]
    refused(edited, "line 2 of default.json.audit.jsonl: record 2 was modified")
    refused(good[:2], "the log is truncated: the head marker names record 4, but the log "
                      "ends at record 2")
    refused([], "the head marker names record 4, but the log ends at record 0")
    refused([good[0], good[2], good[1], good[3]], "line 2 of default.json.audit.jsonl: "
                                                  "record 3 is where record 2 should be")
    refused([good[0], good[2], good[3]], "record 2 is missing: record 3 follows record 1")
    refused(good[:2] + ["{not json\n"] + good[3:], "line 3 of default.json.audit.jsonl is "
                                                    "not a valid record (corrupted")
    # the listing still works on a damaged log, and says it is damaged
    listed = run_mlform("history", cwd=stack)
    assert listed.code == 0 and "(corrupted record)" in listed.stdout, listed
    assert "warning: the audit log fails verification" in listed.stderr

    path.write_text("".join(good))
    assert ok("history", "verify", cwd=stack).stdout.startswith("4 records, chain intact")


def test_a_truncated_log_stays_detected_after_more_records(make_stack):
    """Appending after a cut must not paper over it: the new record links to the record
    the head named, so the gap shows."""
    stack = make_stack(STACK)
    ok("apply", "--auto-approve", cwd=stack)
    ok("state", "rm", "model.m", cwd=stack)
    ok("state", "rm", 'dataset.d["a"]', cwd=stack)
    path = audit_log(stack)
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:1]))
    ok("state", "rm", 'dataset.d["b"]', cwd=stack)
    result = run_mlform("history", "verify", cwd=stack)
    assert result.code == 1, result
    assert "records 2 to 3 are missing: record 4 follows record 1" in result.stderr, result


S3_BUCKET = "mlform-audit"


def test_the_audit_log_on_the_s3_backend(aws, make_stack, tmp_path):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=S3_BUCKET)
    stack = make_stack(STACK, files={"environments/ci.hcl": f"""default_provider = "memory"

backend "s3" {{
  bucket       = "{S3_BUCKET}"
  region       = "us-east-1"
  endpoint_url = "{aws.url}"
}}
"""})
    env = {**AWS_ENV, **GITHUB}
    key = "mlform/stack/ci.json"
    ok("apply", "--auto-approve", "--env", "ci", cwd=stack, env=env)
    ok("state", "rm", "model.m", "--env", "ci", cwd=stack, env=AWS_ENV)
    s3.put_object(Bucket=S3_BUCKET, Key=key + ".lock", Body=json.dumps(
        {"id": "stale-ci-lock", "pid": 7, "host": "runner", "operation": "apply", "who": "ci",
         "created": "2026-01-01T00:00:00+00:00", "path": key}))
    ok("force-unlock", "stale-ci-lock", "--env", "ci", cwd=stack, env=AWS_ENV)
    ok("destroy", "--auto-approve", "--env", "ci", cwd=stack, env=AWS_ENV)
    assert not audit_log(stack, "ci").exists(), "the log must live with the state, in S3"

    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=S3_BUCKET)["Contents"])
    assert [k for k in keys if ".audit" in k] == [
        key + ".audit.head", *(f"{key}.audit/{n:010d}" for n in range(1, 5))]
    log = records(stack, "--env", "ci", env=AWS_ENV)
    assert [(r["command"], r["outcome"]) for r in log] == [
        ("apply", "success"), ("state rm", "success"), ("force-unlock", "success"),
        ("destroy", "success")]
    assert log[0]["who"]["ci"]["actor"] == "octocat"
    verified = ok("history", "verify", "--env", "ci", cwd=stack, env=AWS_ENV)
    assert verified.stdout.startswith("4 records, chain intact")

    # tampering with the objects is caught: an edit, then a deleted last record
    second = f"{key}.audit/{2:010d}"
    original = s3.get_object(Bucket=S3_BUCKET, Key=second)["Body"].read()
    s3.put_object(Bucket=S3_BUCKET, Key=second, Body=original.replace(b"success", b"error"))
    edited = run_mlform("history", "verify", "--env", "ci", cwd=stack, env=AWS_ENV)
    assert edited.code == 1 and f"object s3://{S3_BUCKET}/{second}: record 2 was modified" \
        in edited.stderr, edited
    s3.put_object(Bucket=S3_BUCKET, Key=second, Body=original)
    s3.delete_object(Bucket=S3_BUCKET, Key=f"{key}.audit/{4:010d}")
    cut = run_mlform("history", "verify", "--env", "ci", cwd=stack, env=AWS_ENV)
    assert cut.code == 1 and "the log is truncated: the head marker names record 4, but the " \
        "log ends at record 3" in cut.stderr, cut


def test_an_apply_refused_by_a_mandatory_policy_is_recorded(make_stack):
    stack = make_stack(STACK + """
policy "few_datasets" {
  level     = "mandatory"
  condition = plan.totals.gpus > 100
  message   = "refused for the test"
}
""")
    refused = run_mlform("apply", "--auto-approve", cwd=stack)
    assert refused.code == 1, refused
    [record] = records(stack)
    assert (record["command"], record["outcome"]) == ("apply", "refused")
    assert record["detail"] == "mandatory policy failed: policy.few_datasets"
    assert record["plan"].startswith("sha256:") and len(record["changes"]) == 3


def test_a_corrupted_log_keeps_taking_records_and_stays_reported(make_stack):
    stack = make_stack(STACK)
    ok("apply", "--auto-approve", cwd=stack)
    path = audit_log(stack)
    path.write_text(path.read_text() + "this line is not JSON\n")
    removed = ok("state", "rm", "model.m", cwd=stack)
    assert "warning" not in removed.stderr, removed
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["command"] == "state rm"
    assert json.loads(lines[2])["seq"] == 2                 # follows the head, record 1
    result = run_mlform("history", "verify", cwd=stack)
    assert result.code == 1, result
    assert "line 2 of default.json.audit.jsonl is not a valid record" in result.stderr


def test_verify_against_a_head_kept_elsewhere_catches_a_consistent_rewrite(make_stack):
    """Whoever rewrites the log and its head together leaves a valid chain; the head an
    earlier verify printed (kept in a CI log) still tells."""
    stack = make_stack(STACK)
    ok("apply", "--auto-approve", cwd=stack)
    ok("state", "rm", "model.m", cwd=stack)
    printed = ok("history", "verify", cwd=stack).stdout
    kept = printed.split("sha256 ")[1].rstrip(")\n")
    assert ok("history", "verify", "--expect", f"2:{kept}", cwd=stack)

    # roll the log and its head back to record 1, as restoring an old copy would
    path = audit_log(stack)
    first = path.read_text().splitlines(keepends=True)[0]
    path.write_text(first)
    head = path.with_name("default.json.audit.head")
    head.write_text(json.dumps({"seq": 1, "hash": json.loads(first)["hash"]}))
    assert ok("history", "verify", cwd=stack).stdout.startswith("1 record, chain intact")
    rolled = run_mlform("history", "verify", "--expect", f"2:{kept}", cwd=stack)
    assert rolled.code == 1, rolled
    assert f"record 2 is not the one expected (hash {kept[:12]}…; the log ends at record 1)" \
        in rolled.stderr, rolled
    bad = run_mlform("history", "verify", "--expect", "two:abc", cwd=stack)
    assert bad.code == 1 and "is not SEQ:HASH" in bad.stderr, bad


def test_an_apply_not_confirmed_at_the_terminal_is_recorded_as_cancelled(make_stack):
    stack = make_stack(STACK)
    primary, terminal = pty.openpty()               # stdin a terminal, so apply asks
    try:
        proc = subprocess.Popen([*CLI, "apply"], cwd=stack, env=cli_env(), stdin=terminal,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.write(primary, b"no\n")
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(primary)
        os.close(terminal)
    assert proc.returncode == 1, out + err
    assert "Apply cancelled." in out
    [record] = records(stack)
    assert (record["command"], record["outcome"], record["detail"]) == (
        "apply", "cancelled", "not confirmed")
    assert len(record["changes"]) == 3
