"""Plan holds across pull requests, through the CLI, on the local and the s3 backend.

Two pull requests are two checkouts of one stack (`pr-a`, `pr-b`) whose environment
`ci` shares one state (a local file outside both checkouts, or one object in a bucket of
the S3 emulator) and one memory store.  PR A plans with `--hold`; PR B is refused naming
A until A merges (applies its saved plan), closes (`release`) or is force-unlocked.
"""

from __future__ import annotations

import json
import shlex
import threading

import pytest
from fixture import AWS_ENV

from mlform.state import S3Backend
from mlform.state.holds import StateHeld

from .harness import memory_provider, run_mlform, start_mlform

pytestmark = pytest.mark.timeout(300)

BUCKET = "mlform-state"
KEY = "mlform/shared/ci.json"
A = "github:acme/churn#41"
B = "github:acme/churn#42"
SUMMARY = "error: The state is held by another pull request"

SPEC = memory_provider(store="../memory.json", call_log="../calls.jsonl") + """
dataset "d" {
  for_each = toset(%s)
  source   = "s3://bucket/${each.key}.csv"
}
"""


class Shared:
    """The two checkouts and how to reach their shared state and hold."""

    def __init__(self, kind: str, root, aws=None) -> None:
        self.kind = kind
        self.root = root
        self.aws = aws
        self.env = dict(AWS_ENV) if aws else {}
        if aws:
            aws.client("s3").create_bucket(Bucket=BUCKET)
            backend = (f'backend "s3" {{\n  bucket = "{BUCKET}"\n  key = "{KEY}"\n'
                       f'  region = "us-east-1"\n  endpoint_url = "{aws.url}"\n}}\n')
            self.state = f"s3://{BUCKET}/{KEY}"
        else:
            self.state = str(root / "state" / "ci.json")
            backend = f'backend "local" {{\n  path = "{self.state}"\n}}\n'
        env_file = 'default_provider = "memory"\n' + backend
        self.dirs = {}
        for pr, keys in (("a", '["a"]'), ("b", '["a", "b"]')):
            d = root / f"pr-{pr}"
            (d / "environments").mkdir(parents=True)
            (d / "main.hcl").write_text(SPEC % keys)
            (d / "environments" / "ci.hcl").write_text(env_file)
            self.dirs[pr] = d

    def run(self, pr: str, *args, env: dict | None = None):
        return run_mlform(*args, "--env", "ci", cwd=self.dirs[pr], env={**self.env, **(env or {})})

    def hold(self) -> dict | None:
        """The stored hold document, or None."""
        if self.aws:
            s3 = self.aws.client("s3")
            try:
                return json.loads(s3.get_object(Bucket=BUCKET, Key=KEY + ".hold")["Body"].read())
            except s3.exceptions.NoSuchKey:
                return None
        path = self.root / "state" / "ci.json.hold"
        return json.loads(path.read_text()) if path.exists() else None


@pytest.fixture(params=["local", "s3"])
def prs(request, tmp_path):
    aws = request.getfixturevalue("aws") if request.param == "s3" else None
    return Shared(request.param, tmp_path, aws)


def refusal_lines(shared: Shared, holder: str, who: str) -> list[str]:
    """The parts of the refusal every refused run must show."""
    return [SUMMARY, f"is held by {holder} ({who}" + (")" if who else ""), f"Hold ID:   {holder}",
            f"Path:      {shared.state}",
            f"hint: Wait for {holder} to merge or close. If it is abandoned, run: "
            f"mlform force-unlock {shlex.quote(holder)} --env ci"]


def assert_refused(run, shared: Shared, holder: str = A, who: str = "") -> None:
    assert run.code == 1, run
    lines = run.stderr.splitlines()
    assert lines[0] == SUMMARY, run                  # no source location: nothing in a file
    for part in refusal_lines(shared, holder, who or ""):
        assert part in run.stderr, (part, str(run))
    assert "Traceback" not in run.output and "internal error" not in run.output


GITHUB = {"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "7001", "GITHUB_REPOSITORY": "acme/churn",
          "GITHUB_ACTOR": "alice", "GITHUB_TOKEN": "ghs_TOPSECRETTOKEN", "USER": "runner"}


def who_of(hold: dict) -> str:
    return f"{hold['who']}@{hold['host']}"


def test_a_second_pull_request_is_refused_until_the_first_merges(prs):
    a_plan = prs.root / "a.plan"
    first = prs.run("a", "plan", "--hold", A, "--out", a_plan, env=GITHUB)
    assert first.code == 0, first
    hold = prs.hold()
    assert hold["id"] == A and hold["created"] == hold["updated"]
    assert hold["ci"] == {"system": "github", "actor": "alice", "repository": "acme/churn",
                          "run_id": "7001",
                          "run_url": "https://github.com/acme/churn/actions/runs/7001"}
    assert "TOPSECRET" not in json.dumps(hold), "a CI token must never be stored"
    assert json.loads(a_plan.read_text())["plan_file"]["hold"] == A

    # PR B plans under its own id: refused before anything is planned, naming A
    refused = prs.run("b", "plan", "--hold", B, "--out", prs.root / "b.plan")
    assert_refused(refused, prs, A, who_of(hold))
    assert "CI:        GitHub Actions run 7001 of acme/churn by alice" in refused.stderr
    assert f"Plan:      config digest {hold['config_digest'][:16]}" in refused.stderr
    assert "Created:   " + hold["created"] in refused.stderr
    assert not (prs.root / "b.plan").exists()
    assert prs.hold()["id"] == A

    # a plain plan (someone looking) runs and warns, naming the holder
    looking = prs.run("b", "plan", "--out", prs.root / "b.plan")
    assert looking.code == 0, looking
    assert looking.stderr.startswith("warning: The state is held by another pull request\n")
    assert f"{A} ({who_of(hold)}) holds {prs.state} since {hold['created']}" in looking.stderr
    assert "Plan: 2 to add" in looking.stdout

    # ... but neither its plan file nor a plan-and-apply of a directory may change the state
    for args in (("apply", prs.root / "b.plan"), ("apply", "--auto-approve", ".")):
        blocked = prs.run("b", *args)
        assert_refused(blocked, prs, A, who_of(hold))
        assert "Creating..." not in blocked.stdout
    assert ("only a plan saved with `plan --hold github:acme/churn#41 --out FILE` may be "
            "applied while it is held") in blocked.stderr
    assert not (prs.root / "calls.jsonl").exists(), "nothing may have been created"

    # A pushes again: its hold is renewed (same creation time, new plan)
    renewed = prs.run("a", "plan", "--hold", A, "--out", a_plan)
    assert renewed.code == 0, renewed
    again = prs.hold()
    assert again["id"] == A and again["created"] == hold["created"] and again["ci"] == {}

    # A merges: its reviewed plan applies and the hold goes with it
    merged = prs.run("a", "apply", a_plan)
    assert merged.code == 0, merged
    assert "Apply complete! Resources: 1 added" in merged.stdout
    assert f"Released the hold of {A} on {prs.state}." in merged.stdout
    assert prs.hold() is None

    # now B may take the state
    allowed = prs.run("b", "plan", "--hold", B, "--out", prs.root / "b.plan")
    assert allowed.code == 0, allowed
    assert "warning" not in allowed.stderr
    assert prs.hold()["id"] == B
    applied = prs.run("b", "apply", prs.root / "b.plan")
    assert applied.code == 0 and "Resources: 1 added" in applied.stdout, applied
    assert prs.hold() is None


def test_closing_the_first_pull_request_releases_its_hold(prs):
    assert prs.run("a", "plan", "--hold", A).code == 0
    other = prs.run("b", "release", B)
    assert other.code == 0, other
    assert other.stdout == f"Nothing to release: {prs.state} is held by {A}, not {B}.\n"
    assert prs.hold()["id"] == A
    assert_refused(prs.run("b", "plan", "--hold", B), prs, A)

    closed = prs.run("a", "release", A)
    assert closed.code == 0, closed
    assert closed.stdout == f"Released the hold of {A} on {prs.state}.\n"
    assert prs.hold() is None
    twice = prs.run("a", "release", A)
    assert twice.code == 0 and twice.stdout == f"Nothing to release: {prs.state} is not held.\n"

    allowed = prs.run("b", "plan", "--hold", B)
    assert allowed.code == 0, allowed
    assert prs.hold()["id"] == B


def test_force_unlock_removes_an_abandoned_hold(prs):
    assert prs.run("a", "plan", "--hold", A).code == 0
    wrong = prs.run("b", "force-unlock", "github:acme/churn#99")
    assert wrong.code == 1, wrong
    assert wrong.stderr.startswith("error: No lock with id github:acme/churn#99 on ")
    assert f"the state is not locked; the hold there is {A}" in wrong.stderr
    assert prs.hold()["id"] == A

    removed = prs.run("b", "force-unlock", A)
    assert removed.code == 0, removed
    assert removed.stdout == f"The hold of {A} has been removed from {prs.state}.\n"
    assert prs.hold() is None
    assert prs.run("b", "plan", "--hold", B).code == 0
    assert prs.hold()["id"] == B


def test_a_plan_file_made_under_another_id_is_refused_while_held(prs):
    b_plan = prs.root / "b.plan"
    assert prs.run("b", "plan", "--hold", B, "--out", b_plan).code == 0
    assert prs.run("b", "release", B).code == 0
    assert prs.run("a", "plan", "--hold", A).code == 0
    refused = prs.run("b", "apply", b_plan)
    assert_refused(refused, prs, A)
    assert f"this plan was made under {B}" in refused.stderr
    # the holder's own plan file made while A held nothing is not A's either
    plain = prs.root / "plain.plan"
    assert prs.run("a", "plan", "--out", plain).code == 0
    assert_refused(prs.run("a", "apply", plain), prs, A)
    assert prs.hold()["id"] == A


def test_an_invalid_hold_id_is_a_diagnostic(prs):
    bad = prs.run("a", "plan", "--hold", "pr\n42")
    assert bad.code == 1, bad
    assert bad.stderr.startswith("error: Invalid hold id 'pr\\n42'\n")
    assert "a hold id must not contain control characters (newlines, tabs)." in bad.stderr
    assert prs.hold() is None


def test_two_pull_requests_planning_at_once_one_wins(aws, tmp_path):
    prs = Shared("s3", tmp_path, aws)
    procs = {pr: start_mlform("plan", "--hold", hold, "--env", "ci", cwd=prs.dirs[pr],
                              env=prs.env)
             for pr, hold in (("a", A), ("b", B))}
    results = {pr: (p.wait(timeout=120), *p.communicate()) for pr, p in procs.items()}
    winners = [pr for pr, (code, _, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    loser = "b" if winners == ["a"] else "a"
    code, _, err = results[loser]
    assert code == 1
    # the loser lost either the state lock (both at once) or the hold (one after the other)
    assert (err.startswith(SUMMARY) or err.startswith("error: Error acquiring the state lock")), err
    assert prs.hold()["id"] == {"a": A, "b": B}[winners[0]]


def test_racing_holders_on_s3_exactly_one_takes_the_hold(aws):
    """The conditional create decides, with no state lock around it."""
    aws.client("s3").create_bucket(Bucket=BUCKET)
    start = threading.Barrier(6)
    outcomes: dict[str, object] = {}

    def take(n: int) -> None:
        holds = S3Backend(BUCKET, KEY, region="us-east-1", endpoint_url=aws.url).holds()
        holds.read()                     # connect first, so the takes start together
        start.wait()
        try:
            outcomes[f"pr#{n}"] = holds.take(f"pr#{n}", "digest")
        except StateHeld as exc:
            outcomes[f"pr#{n}"] = exc

    threads = [threading.Thread(target=take, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [k for k, v in outcomes.items() if not isinstance(v, StateHeld)]
    assert len(won) == 1, outcomes
    assert all(v.holder.id == won[0] for v in outcomes.values() if isinstance(v, StateHeld))
    stored = S3Backend(BUCKET, KEY, region="us-east-1", endpoint_url=aws.url).holds().read()
    assert stored.id == won[0]
