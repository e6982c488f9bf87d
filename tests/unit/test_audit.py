"""The audit log's storage and chain check (mlform.state.audit) and what a record holds
(mlform.audit): appends on the local and the s3 backend, concurrent writers, and every
kind of damage `verify` must name."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlform import audit
from mlform.state import LocalBackend, S3Backend
from mlform.state.audit import GENESIS, Head, LocalAuditLog, record_hash, verify

pytestmark = pytest.mark.timeout(300)


def body(n: int = 0) -> dict:
    return {"command": "apply", "outcome": "success", "detail": f"run {n}", "changes": []}


def local(tmp_path: Path) -> LocalAuditLog:
    return LocalBackend(tmp_path / "state" / "default.json").audit_log()


def lines(log: LocalAuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def check(log) -> audit.Verdict:
    return verify(log.read())


# --- local ---------------------------------------------------------------------------


def test_records_are_numbered_and_chained(tmp_path):
    log = local(tmp_path)
    assert check(log).ok and check(log).count == 0          # no log yet: nothing wrong
    written = [log.append(body(n)) for n in range(3)]
    assert [r["seq"] for r in written] == [1, 2, 3]
    assert written[0]["prev"] == GENESIS
    assert written[1]["prev"] == written[0]["hash"] and written[2]["prev"] == written[1]["hash"]
    for r in written:
        assert r["hash"] == record_hash(r)
    assert [json.loads(x) for x in lines(log)] == written
    assert json.loads(log.head_path.read_text()) == {"seq": 3, "hash": written[2]["hash"]}
    verdict = check(log)
    assert verdict.ok and verdict.count == 3 and not verdict.notes


@pytest.mark.parametrize("damage, expected", [
    (lambda ls: ls[:1] + [ls[1].replace(b"run 1", b"run 9")] + ls[2:],
     "line 2 of default.json.audit.jsonl: record 2 was modified"),
    (lambda ls: ls[:3], "the log is truncated: the head marker names record 4, but the log "
                        "ends at record 3 (1 record(s) cut off the end)"),
    (lambda ls: [], "the log is truncated: the head marker names record 4, but the log ends "
                    "at record 0 (every record is gone)"),
    (lambda ls: [ls[1], ls[0]] + ls[2:], "line 1 of default.json.audit.jsonl: record 2 is "
                                         "where record 1 should be"),
    (lambda ls: ls[:1] + ls[2:], "line 2 of default.json.audit.jsonl: record 2 is missing: "
                                 "record 3 follows record 1"),
    (lambda ls: ls[:1] + ls[3:], "records 2 to 3 are missing: record 4 follows record 1"),
    (lambda ls: ls[:2] + [b"\x00garbage\n"] + ls[3:],
     "line 3 of default.json.audit.jsonl is not a valid record (corrupted"),
    (lambda ls: ls[:2] + [b"\n"] + ls[2:], "line 3 of default.json.audit.jsonl is not a valid"),
    (lambda ls: ls + [ls[3]], "line 5 of default.json.audit.jsonl: record 4 is where record 5 "
                              "should be"),
])
def test_verify_names_the_first_damage(tmp_path, damage, expected):
    log = local(tmp_path)
    for n in range(4):
        log.append(body(n))
    log.path.write_bytes(b"".join(damage(lines(log))))
    verdict = check(log)
    assert not verdict.ok
    assert expected in verdict.problem, verdict.problem


def test_a_record_rewritten_with_a_fresh_hash_is_caught_by_the_head(tmp_path):
    log = local(tmp_path)
    for n in range(3):
        log.append(body(n))
    ls = lines(log)
    forged = json.loads(ls[2])
    forged["outcome"] = "error"
    forged["hash"] = record_hash(forged)                   # a consistent chain again...
    log.path.write_bytes(b"".join(ls[:2]) + json.dumps(forged).encode() + b"\n")
    assert "record 3 is not the one the head marker names" in check(log).problem
    # ...and an append after it links to what the head named, so the forgery stays visible
    log.append(body(3))
    assert "record 4 does not link to record 3" in check(log).problem


def test_the_head_marker_missing_or_unreadable_is_reported(tmp_path):
    log = local(tmp_path)
    log.append(body(0))
    log.head_path.unlink()
    assert check(log).ok, "one record and no head: a kill between the two writes"
    log.append(body(1))
    log.head_path.unlink()
    assert "the head marker of" in check(log).problem and "is missing" in check(log).problem
    log.head_path.write_text("{nope")
    assert "is unreadable" in check(log).problem


def test_a_torn_last_line_is_ignored_then_removed_by_the_next_append(tmp_path):
    log = local(tmp_path)
    log.append(body(0))
    log.append(body(1))
    with open(log.path, "ab") as fh:                        # a kill in mid-write
        fh.write(b'{"command": "apply", "se')
    verdict = check(log)
    assert verdict.ok and verdict.count == 2
    assert "incomplete record" in verdict.notes[0]
    third = log.append(body(2))
    assert third["seq"] == 3
    assert check(log).ok and len(lines(log)) == 3 and b'"se' not in log.path.read_bytes()[-5:]


def test_a_record_written_without_its_head_is_adopted(tmp_path):
    """A kill between the record and the head: the record is kept, the next append
    follows it and moves the head on."""
    log = local(tmp_path)
    log.append(body(0))
    head_before = log.head_path.read_bytes()
    log.append(body(1))
    log.head_path.write_bytes(head_before)                  # the head never moved
    verdict = check(log)
    assert verdict.ok and "after the head marker" in verdict.notes[0]
    assert log.append(body(2))["seq"] == 3
    assert check(log).ok and check(log).count == 3


def test_concurrent_appenders_in_threads_and_processes_keep_the_chain(tmp_path):
    state = tmp_path / "state" / "default.json"
    threads = [threading.Thread(target=lambda n=n: [LocalBackend(state).audit_log()
                                                    .append(body(n * 100 + i))
                                                    for i in range(15)])
               for n in range(6)]
    script = ("import sys\nfrom pathlib import Path\nfrom mlform.state import LocalBackend\n"
              "log = LocalBackend(Path(sys.argv[1])).audit_log()\n"
              "for i in range(15):\n"
              "    log.append({'command': 'apply', 'outcome': 'success', 'detail': 'p'})\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(state)]) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(p.wait(timeout=120) == 0 for p in procs)
    log = LocalBackend(state).audit_log()
    verdict = check(log)
    assert verdict.ok, verdict.problem
    assert verdict.count == 6 * 15 + 3 * 15
    assert [json.loads(x)["seq"] for x in lines(log)] == list(range(1, 136))


# --- s3 ------------------------------------------------------------------------------

BUCKET = "audit-unit"


def s3_log(aws, key: str = "mlform/s/prod.json"):
    return S3Backend(BUCKET, key, region="us-east-1", endpoint_url=aws.url).audit_log()


def test_s3_records_are_objects_taken_by_conditional_put(aws):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    log = s3_log(aws)
    assert check(log).ok and check(log).count == 0
    written = [log.append(body(n)) for n in range(3)]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
    prefix = "mlform/s/prod.json.audit"
    assert keys == [f"{prefix}.head", f"{prefix}/0000000001", f"{prefix}/0000000002",
                    f"{prefix}/0000000003"]
    assert [r["prev"] for r in written] == [GENESIS, written[0]["hash"], written[1]["hash"]]
    assert check(log).ok and check(log).count == 3

    # a writer that lost the race for a number (its head is stale) takes the next one
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}.head",
                  Body=Head(2, written[1]["hash"]).dumps())
    assert log.append(body(3))["seq"] == 4
    assert check(log).ok and check(log).count == 4


def test_s3_concurrent_writers_never_share_a_number(aws):
    aws.client("s3").create_bucket(Bucket=BUCKET)
    errors = []

    def writer(n: int) -> None:
        log = s3_log(aws)                       # one backend (one client) per writer
        try:
            for i in range(6):
                log.append(body(n * 10 + i))
        except Exception as exc:               # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    verdict = check(s3_log(aws))
    assert verdict.ok, verdict.problem
    assert verdict.count == 30
    head = json.loads(aws.client("s3").get_object(
        Bucket=BUCKET, Key="mlform/s/prod.json.audit.head")["Body"].read())
    assert head["seq"] == 30, "the head only moves forward"


def test_s3_damage_is_named(aws):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    log = s3_log(aws)
    for n in range(4):
        log.append(body(n))
    prefix = "mlform/s/prod.json.audit/"

    def get(n: int) -> bytes:
        return s3.get_object(Bucket=BUCKET, Key=f"{prefix}{n:010d}")["Body"].read()

    def put(n: int, data: bytes) -> None:
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}{n:010d}", Body=data)

    two, three = get(2), get(3)
    put(2, three)
    put(3, two)
    assert f"{prefix}0000000002 holds record 3: records were moved or reordered" \
        in check(log).problem
    put(2, b"not json at all")
    assert f"{prefix}0000000002 is not a valid record (corrupted" in check(log).problem
    put(2, two)
    put(3, three)
    assert check(log).ok
    s3.delete_object(Bucket=BUCKET, Key=f"{prefix}{3:010d}")
    assert "record 3 is missing: record 4 follows record 2" in check(log).problem
    put(3, three)
    s3.delete_object(Bucket=BUCKET, Key=f"{prefix}{4:010d}")
    assert "the log is truncated: the head marker names record 4" in check(log).problem


# --- what a record holds ---------------------------------------------------------------


def test_identity_from_github_gitlab_and_generic_ci():
    github = audit.identity({"GITHUB_ACTIONS": "true", "GITHUB_ACTOR": "octocat",
                             "GITHUB_REPOSITORY": "acme/infra", "GITHUB_RUN_ID": "77",
                             "GITHUB_SHA": "abc123", "GITHUB_TOKEN": "secret-token",
                             "GITHUB_SERVER_URL": "https://ghe.acme.dev"})
    assert github["user"] and github["host"]
    assert github["ci"] == {"system": "github", "actor": "octocat", "repository": "acme/infra",
                            "run_id": "77", "sha": "abc123",
                            "run_url": "https://ghe.acme.dev/acme/infra/actions/runs/77"}
    gitlab = audit.identity({"GITLAB_CI": "true", "CI": "true", "GITLAB_USER_LOGIN": "dev1",
                             "CI_PROJECT_PATH": "group/ml", "CI_PIPELINE_ID": "901",
                             "CI_COMMIT_SHA": "def456", "CI_JOB_TOKEN": "secret-token"})
    assert gitlab["ci"] == {"system": "gitlab", "actor": "dev1", "project": "group/ml",
                            "pipeline_id": "901", "sha": "def456"}
    assert audit.identity({"CI": "true"})["ci"] == {"system": "ci"}
    assert "ci" not in audit.identity({})
    assert "secret-token" not in json.dumps([github, gitlab])


class _Session:
    """What `mlform.audit.record` reads of a session: the backend and two names."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.config = SimpleNamespace(stack_name="churn")
        self.env_name = "prod"


def test_record_keeps_addresses_and_actions_only(tmp_path):
    session = _Session(LocalBackend(tmp_path / "prod.json"))
    changes = [{"address": "endpoint.e", "actions": ["update"],
                "after": {"token": "hunter2"}, "before": "hunter2"},
               {"address": "model.n", "actions": ["move"], "from": "model.m"}]
    assert audit.record(session, "apply", outcome="success", changes=changes,
                        detail="1 changed") is None
    [rec] = [json.loads(x) for x in session.backend.audit_log().path.read_text().splitlines()]
    assert rec["changes"] == [{"address": "endpoint.e", "actions": ["update"]},
                              {"address": "model.n", "actions": ["move"], "from": "model.m"}]
    assert (rec["stack"], rec["env"], rec["command"], rec["plan"]) == ("churn", "prod", "apply",
                                                                       None)
    assert "hunter2" not in json.dumps(rec)
    with pytest.raises(ValueError):
        audit.record(session, "apply", outcome="maybe")


def test_a_record_that_cannot_be_written_is_a_warning(tmp_path):
    session = _Session(LocalBackend(tmp_path / "prod.json"))
    session.backend.audit_log().path.mkdir(parents=True)
    problem = audit.record(session, "state rm", outcome="success")
    assert problem is not None and problem.severity == "warning"
    assert problem.summary == "The state rm was not recorded in the audit log"
    assert "mlform history verify" in problem.hint


def test_a_sensitive_variable_quoted_in_a_detail_is_masked(tmp_path):
    from mlform.config.model import VariableValues
    from mlform.expr import Sensitive
    session = _Session(LocalBackend(tmp_path / "prod.json"))
    session.variables = VariableValues(values={"token": Sensitive("hunter2-secret"),
                                               "region": "eu-west-1"}, sensitive={"token"})
    audit.record(session, "import", outcome="error",
                 detail='Cannot import: the service said "hunter2-secret" is wrong (eu-west-1)')
    text = session.backend.audit_log().path.read_text()
    assert "hunter2-secret" not in text
    assert '"(sensitive value)" is wrong (eu-west-1)' in json.loads(text)["detail"]


def test_verify_while_records_are_appended_never_sees_a_false_cut(tmp_path):
    log = local(tmp_path)
    log.append(body(0))
    done = threading.Event()

    def appender() -> None:
        for n in range(60):
            log.append(body(n))
        done.set()

    thread = threading.Thread(target=appender)
    thread.start()
    verdicts = []
    while not done.is_set():
        verdicts.append(check(log))
    thread.join()
    verdicts.append(check(log))
    bad = [v.problem for v in verdicts if not v.ok]
    assert not bad, bad[:3]
    assert verdicts[-1].count == 61


def test_a_plan_and_the_same_plan_saved_and_loaded_have_one_digest(tmp_path):
    from mlform import operations, planfile
    from mlform.plan.inputs import PlanOptions
    from mlform.session import Session, SessionOptions
    (tmp_path / "main.hcl").write_text("""
provider "memory" {
  store = ".mlform/memory.json"
}
variable "token" {
  type      = string
  sensitive = true
  default   = "abcdefgh"
}
dataset "d" {
  source = "s3://bucket/a.csv"
}
model "m" {
  artifact = dataset.d.uri
}
endpoint "e" {
  model    = model.m
  settings = { api_token = var.token }
}
""")
    session = Session(tmp_path, SessionOptions())
    try:
        with operations.locked(session, "plan"):
            plan = operations.plan(session, operations.load_state(session), PlanOptions())
    finally:
        session.close()
    planfile.save(plan, tmp_path / "p.tfplan", session.stack_dir)
    loaded, _ = planfile.load(tmp_path / "p.tfplan")
    digest = audit.plan_digest(plan)
    assert digest.startswith("sha256:") and len(digest) == 7 + 64
    assert audit.plan_digest(loaded) == digest
    assert audit.plan_digest(None) is None
    assert sorted((c["address"], tuple(c["actions"])) for c in audit.changes_of(plan)) == [
        ("dataset.d", ("create",)), ("endpoint.e", ("create",)), ("model.m", ("create",))]
