"""The reconcile loop's cycles, driven one at a time in-process against a memory stack
in a git repository made in the test (no sleeping: each `cycle()` returns when done).

What a cycle pulled, planned and applied is checked where it happened: the memory
store (the "service"), the state, the audit trail and the loop's own metrics.
"""

from __future__ import annotations

import pytest

from mlform.reconcile import heals_drift, parse_duration
from mlform.diagnostics import DiagnosticError

from .helpers import (STACK_DIR, audit_records, commit, edit_live, git, make_repo, objects,
                      reconciler, stack_hcl)

pytestmark = pytest.mark.timeout(300)

MAIN = str(STACK_DIR / "main.hcl")
POLICY = str(STACK_DIR / "policy.hcl")


@pytest.fixture
def repo(tmp_path):
    """(remote repository, checkout directory, the stack inside the checkout)."""
    remote = make_repo(tmp_path / "remote", {MAIN: stack_hcl(replicas=1)})
    checkout = tmp_path / "checkout"
    return remote, checkout, checkout / STACK_DIR


def cycles(rec, outcome: str) -> float:
    return rec.metrics.value("mlform_reconcile_cycles_total", {"outcome": outcome})


def test_a_new_commit_is_applied_in_the_next_cycle(repo):
    remote, checkout, stack = repo
    rec = reconciler(remote, checkout, "all")

    first = rec.cycle()
    assert first.outcome == "applied", first
    assert (first.added, first.changed, first.destroyed) == (3, 0, 0)
    assert first.revision == git(remote, "rev-parse", "HEAD")
    assert objects(stack)["endpoint.clf"]["attributes"]["replicas"] == 1

    idle = rec.cycle()
    assert idle.outcome == "unchanged", idle

    head = commit(remote, {MAIN: stack_hcl(replicas=2)}, "two replicas")
    scaled = rec.cycle()
    assert scaled.outcome == "applied", scaled
    assert scaled.revision == head
    assert (scaled.added, scaled.changed, scaled.destroyed) == (0, 1, 0)
    assert objects(stack)["endpoint.clf"]["attributes"]["replicas"] == 2

    assert cycles(rec, "applied") == 2 and cycles(rec, "unchanged") == 1
    assert cycles(rec, "failed") == 0
    assert rec.metrics.value("mlform_reconcile_last_success_timestamp_seconds") > 0
    assert rec.metrics.value("mlform_reconcile_plan_duration_seconds_count") == 3
    assert rec.metrics.value("mlform_reconcile_apply_duration_seconds_count") == 2

    # every cycle that applied is in the audit trail, with its commit; the idle one is not
    records = [r for r in audit_records(stack) if r["command"] == "reconcile"]
    assert [r["outcome"] for r in records] == ["success", "success"], records
    assert head in records[-1]["detail"]
    assert records[-1]["changes"] == [{"actions": ["update"], "address": "endpoint.clf"}]


def test_a_file_deleted_upstream_is_gone_from_the_checkout(repo):
    remote, checkout, stack = repo
    rec = reconciler(remote, checkout, "all")
    commit(remote, {str(STACK_DIR / "extra.hcl"): 'dataset "extra" {\n  source = "s3://b/x.csv"\n'
                    '  format = "csv"\n}\n'}, "extra")
    assert rec.cycle().outcome == "applied"
    assert "dataset.extra" in objects(stack)
    (stack / "extra.hcl").write_text("# a local edit the next pull must discard\n")
    commit(remote, {str(STACK_DIR / "extra.hcl"): None}, "drop extra")
    dropped = rec.cycle()
    assert dropped.outcome == "applied" and dropped.destroyed == 1, dropped
    assert not (stack / "extra.hcl").exists()
    assert "dataset.extra" not in objects(stack)


def test_drift_is_healed_only_when_allowed(repo):
    remote, checkout, stack = repo
    assert reconciler(remote, checkout, "all").cycle().outcome == "applied"
    edit_live(stack, "endpoint.clf", replicas=3)

    watcher = reconciler(remote, checkout, "none")
    seen = watcher.cycle()
    assert seen.outcome == "pending", seen
    assert seen.drifted == 1 and seen.pending == 1
    assert "--auto-apply none" in seen.message
    assert objects(stack)["endpoint.clf"]["attributes"]["replicas"] == 3, "none must not heal"
    assert watcher.metrics.value("mlform_reconcile_drifted_resources") == 1
    assert watcher.metrics.value("mlform_reconcile_pending_changes") == 1

    healer = reconciler(remote, checkout, "drift")
    healed = healer.cycle()
    assert healed.outcome == "applied", healed
    assert (healed.added, healed.changed, healed.destroyed) == (0, 1, 0)
    assert objects(stack)["endpoint.clf"]["attributes"]["replicas"] == 1
    clean = healer.cycle()
    assert clean.outcome == "unchanged" and clean.drifted == 0, clean
    assert healer.metrics.value("mlform_reconcile_drifted_resources") == 0

    # an object deleted out of band is re-created, and what follows from it (the
    # endpoint pointing at the new model version) is part of the healing
    edit_live(stack, "model.clf", deleted=True)
    recreated = healer.cycle()
    assert recreated.outcome == "applied", recreated
    assert recreated.added == 1 and "model.clf" in objects(stack)
    assert healer.cycle().outcome == "unchanged"


def test_a_new_commit_is_not_drift_healing(repo):
    remote, checkout, stack = repo
    assert reconciler(remote, checkout, "all").cycle().outcome == "applied"
    healer = reconciler(remote, checkout, "drift")

    commit(remote, {MAIN: stack_hcl(replicas=2)}, "two replicas")
    held = healer.cycle()
    assert held.outcome == "pending", held
    assert "no drift" in held.message
    assert objects(stack)["endpoint.clf"]["attributes"]["replicas"] == 1

    # drift on the same resource as the new commit: restoring the live object would also
    # roll out the commit, so it waits as well
    edit_live(stack, "endpoint.clf", replicas=3)
    mixed = healer.cycle()
    assert mixed.outcome == "pending", mixed
    assert "spec changed since the last apply" in mixed.message
    assert objects(stack)["endpoint.clf"]["attributes"]["replicas"] == 3

    # a person (here: --auto-apply all) rolls the commit out; then drift is healed again
    assert reconciler(remote, checkout, "all").cycle().outcome == "applied"
    edit_live(stack, "endpoint.clf", replicas=5)
    assert healer.cycle().outcome == "applied"
    assert objects(stack)["endpoint.clf"]["attributes"]["replicas"] == 2


FAILING_POLICY = """
policy "max_replicas" {
  level     = "mandatory"
  kinds     = ["endpoint"]
  condition = change.after.replicas <= 2
  message   = "at most 2 replicas, got ${change.after.replicas}"
}
"""


def test_a_mandatory_policy_failure_stops_the_cycle(repo):
    remote, checkout, stack = repo
    rec = reconciler(remote, checkout, "all")
    assert rec.cycle().outcome == "applied"
    commit(remote, {MAIN: stack_hcl(replicas=5), POLICY: FAILING_POLICY}, "five replicas")

    refused = rec.cycle()
    assert refused.outcome == "refused", refused
    assert "policy.max_replicas" in refused.message
    assert any("max_replicas" in d.summary and d.severity == "error"
               for d in refused.diagnostics), refused.diagnostics
    assert objects(stack)["endpoint.clf"]["attributes"]["replicas"] == 1, "nothing applied"
    assert cycles(rec, "refused") == 1
    assert rec.metrics.value("mlform_reconcile_policy_failures_total",
                             {"policy": "policy.max_replicas", "level": "mandatory"}) == 1
    assert rec.metrics.value("mlform_reconcile_apply_duration_seconds_count") == 1
    assert [r["outcome"] for r in audit_records(stack)
            if r["command"] == "reconcile"][-1] == "refused"

    # the policy keeps refusing until the spec complies
    assert rec.cycle().outcome == "refused"
    commit(remote, {MAIN: stack_hcl(replicas=2)}, "comply")
    assert rec.cycle().outcome == "applied"
    assert objects(stack)["endpoint.clf"]["attributes"]["replicas"] == 2


def test_an_advisory_policy_failure_warns_and_applies(repo):
    remote, checkout, stack = repo
    rec = reconciler(remote, checkout, "all")
    commit(remote, {MAIN: stack_hcl(replicas=5),
                    POLICY: FAILING_POLICY.replace('"mandatory"', '"advisory"')}, "advisory")
    applied = rec.cycle()
    assert applied.outcome == "applied", applied
    assert any(d.severity == "warning" and "max_replicas" in d.summary
               for d in applied.diagnostics), applied.diagnostics
    assert rec.metrics.value("mlform_reconcile_policy_failures_total",
                             {"policy": "policy.max_replicas", "level": "advisory"}) == 1


def test_an_unreachable_remote_fails_the_cycle_and_the_next_one_retries(repo, tmp_path):
    remote, checkout, stack = repo
    rec = reconciler(remote, checkout, "all")
    assert rec.cycle().outcome == "applied"
    success = rec.metrics.value("mlform_reconcile_last_success_timestamp_seconds")

    hidden = remote.rename(tmp_path / "elsewhere")
    failed = rec.cycle()
    assert failed.outcome == "failed", failed
    assert failed.message.startswith(f"Cannot fetch {remote}: fatal:"), failed.message
    assert "does not appear to be a git repository" in failed.message
    assert rec.metrics.value("mlform_reconcile_git_pull_failures_total") == 1
    assert cycles(rec, "failed") == 1
    assert rec.metrics.value("mlform_reconcile_last_success_timestamp_seconds") == success
    assert rec.health.check()[0], "one failed cycle is within the grace period"

    hidden.rename(remote)
    commit(remote, {MAIN: stack_hcl(replicas=2)}, "two replicas")
    back = rec.cycle()
    assert back.outcome == "applied", back
    assert objects(stack)["endpoint.clf"]["attributes"]["replicas"] == 2
    assert rec.metrics.value("mlform_reconcile_git_pull_failures_total") == 1


def test_a_first_clone_that_fails_is_retried(tmp_path):
    remote, checkout = tmp_path / "remote", tmp_path / "checkout"
    rec = reconciler(remote, checkout, "all")
    failed = rec.cycle()
    assert failed.outcome == "failed" and failed.message.startswith(f"Cannot clone {remote}")
    assert rec.metrics.value("mlform_reconcile_git_pull_failures_total") == 1
    make_repo(remote, {MAIN: stack_hcl()})
    assert rec.cycle().outcome == "applied"


def test_a_broken_spec_fails_the_cycle_with_its_location(repo):
    remote, checkout, stack = repo
    rec = reconciler(remote, checkout, "all")
    commit(remote, {MAIN: stack_hcl() + 'endpoint "bad" {\n  model = model.missing\n}\n'}, "bad")
    failed = rec.cycle()
    assert failed.outcome == "failed", failed
    assert any(d.source is not None and "main.hcl" in str(d.source.file)
               for d in failed.diagnostics), failed.diagnostics
    assert rec.metrics.value("mlform_reconcile_git_pull_failures_total") == 0
    commit(remote, {MAIN: stack_hcl()}, "fix")
    assert rec.cycle().outcome == "applied"


def test_the_checkout_must_be_of_the_same_remote(repo, tmp_path):
    remote, checkout, stack = repo
    assert reconciler(remote, checkout, "none").cycle().outcome == "pending"
    other = make_repo(tmp_path / "other", {MAIN: stack_hcl()})
    failed = reconciler(other, checkout, "none").cycle()
    assert failed.outcome == "failed" and f"is a checkout of {remote}" in failed.message


def test_credentials_in_the_url_are_never_shown(tmp_path):
    from mlform.reconcile_git import redact_url
    assert redact_url("https://user:s3cret@example.com/x.git") == "https://***@example.com/x.git"
    # port 9 (discard) on 127.0.0.1: nothing listens, the connection is refused at once
    rec = reconciler("https://user:s3cret@127.0.0.1:9/x.git", tmp_path / "c", "none")
    failed = rec.cycle()
    assert failed.outcome == "failed"
    text = failed.message + "".join(d.summary + d.detail + d.hint for d in failed.diagnostics)
    assert "s3cret" not in text and "***@127.0.0.1" in text, text


def test_heals_drift_needs_drift_and_an_unchanged_spec():
    from mlform.plan.model import Action, Change, Plan

    def change(action):
        return Change("endpoint.x", "endpoint", "x", "memory", action, {}, {})

    drifted = Plan(changes=(change(Action.UPDATE),), drift=(change(Action.UPDATE),))
    assert heals_drift(drifted, Plan(changes=()))[0]
    assert not heals_drift(Plan(changes=(change(Action.UPDATE),)), Plan(changes=()))[0]
    assert not heals_drift(drifted, Plan(changes=(change(Action.UPDATE),)))[0]
    replace = Plan(changes=(change(Action.DELETE_CREATE),), drift=(change(Action.UPDATE),))
    ok, why = heals_drift(replace, Plan(changes=()))
    assert not ok and "delete-create" in why


@pytest.mark.parametrize("text, seconds", [("60s", 60), ("5m", 300), ("1h30m", 5400),
                                           ("250ms", 0.25), ("90", 90), ("0", 0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5x", "-1", "1h 30m"])
def test_bad_durations_are_diagnostics(text):
    with pytest.raises(DiagnosticError) as found:
        parse_duration(text)
    assert "Invalid duration" in found.value.diagnostics[0].summary


def test_nothing_is_applied_while_a_pull_request_holds_the_state(repo):
    from e2e.harness import run_mlform
    remote, checkout, stack = repo
    assert reconciler(remote, checkout, "all").cycle().outcome == "applied"
    edit_live(stack, "endpoint.clf", replicas=3)
    held = run_mlform("plan", "--hold", "github:acme/infra#7", cwd=stack)
    assert held.code == 0, held

    healer = reconciler(remote, checkout, "drift")
    waiting = healer.cycle()
    assert waiting.outcome == "pending", waiting
    assert "held by another pull request" in waiting.message
    assert "github:acme/infra#7" in waiting.message
    assert objects(stack)["endpoint.clf"]["attributes"]["replicas"] == 3

    released = run_mlform("release", "github:acme/infra#7", cwd=stack)
    assert released.code == 0, released
    assert healer.cycle().outcome == "applied"
    assert objects(stack)["endpoint.clf"]["attributes"]["replicas"] == 1


def test_a_state_locked_by_someone_else_fails_the_cycle_and_the_next_retries(repo):
    from mlform.session import Session
    remote, checkout, stack = repo
    rec = reconciler(remote, checkout, "all")
    assert rec.cycle().outcome == "applied"
    commit(remote, {MAIN: stack_hcl(replicas=2)}, "two replicas")

    other = Session(stack)                      # someone running apply meanwhile
    held = other.backend.lock("apply")
    try:
        busy = rec.cycle()
    finally:
        other.backend.unlock(held)
        other.close()
    assert busy.outcome == "failed", busy
    assert "lock" in busy.message.lower(), busy.message
    assert objects(stack)["endpoint.clf"]["attributes"]["replicas"] == 1
    assert rec.cycle().outcome == "applied"
    assert objects(stack)["endpoint.clf"]["attributes"]["replicas"] == 2


def test_no_apply_starts_after_a_stop(repo):
    remote, checkout, stack = repo
    rec = reconciler(remote, checkout, "all")
    rec.stop()                       # a signal that came while this cycle was planning
    stopped = rec.cycle()
    assert stopped.outcome == "pending" and "stopping" in stopped.message, stopped
    assert not (stack / ".mlform" / "memory.json").exists() or objects(stack) == {}
    assert rec.run(lambda result: None) is None, "run() starts no cycle once stopped"
