"""Plan holds in the state backends (mlform.state.holds): the holder's identity, ids, the
local hold's reliance on the state lock, and the s3 hold's conditional writes when the
object changes between a read and a write (the races the CLI tests cannot aim at)."""

from __future__ import annotations

import json

import pytest

from mlform.state import LocalBackend, S3Backend, StateError
from mlform.state.holds import HoldInfo, StateHeld, check_hold_id
from mlform.state.identity import ci_identity

BUCKET = "mlform-state"
KEY = "mlform/stack/default.json"


def test_ci_identity_takes_only_the_allow_listed_variables():
    github = {"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "12", "GITHUB_ACTOR": "alice",
              "GITHUB_REPOSITORY": "acme/churn", "GITHUB_TOKEN": "ghs_secret",
              "ACTIONS_RUNTIME_TOKEN": "secret", "GITHUB_SHA": "abc"}
    assert ci_identity(github) == {"system": "github", "run_id": "12", "actor": "alice",
                                   "repository": "acme/churn", "sha": "abc",
                                   "run_url": "https://github.com/acme/churn/actions/runs/12"}
    gitlab = {"GITLAB_CI": "true", "GITLAB_USER_LOGIN": "bob", "CI_PIPELINE_ID": "99",
              "CI_PROJECT_PATH": "acme/churn", "CI_JOB_TOKEN": "secret"}
    assert ci_identity(gitlab) == {"system": "gitlab", "actor": "bob", "pipeline_id": "99",
                                   "project": "acme/churn"}
    assert ci_identity({"HOME": "/root"}) == {}
    info = HoldInfo.mine("pr#1", "d" * 64, "/s.json", environ=gitlab)
    assert info.ci_text() == "GitLab pipeline 99 of acme/churn by bob"
    assert "CI:        GitLab pipeline 99 of acme/churn by bob" in info.describe()


@pytest.mark.parametrize("bad, why", [
    ("", "a hold id must not be empty"), ("   ", "a hold id must not be empty"),
    ("pr\n1", "a hold id must not contain control characters (newlines, tabs)"),
    ("x" * 201, "a hold id has at most 200 characters")])
def test_invalid_hold_ids(bad, why):
    assert check_hold_id(bad) == why
    assert check_hold_id("github:acme/churn#42") is None


def test_a_hold_that_is_not_mlforms_json_still_holds(tmp_path):
    found = HoldInfo.parse(b"garbage", "/s.json")
    assert found.id == "(unknown)" and found.path == "/s.json"
    refusal = StateHeld(found)
    assert refusal.hint.endswith("mlform force-unlock '(unknown)'")


def test_the_local_hold_changes_only_under_the_state_lock(tmp_path):
    backend = LocalBackend(tmp_path / "default.json")
    holds = backend.holds()
    with pytest.raises(StateError, match="Cannot change the hold"):
        holds.take("pr#1", "digest")
    info = backend.lock("plan")
    try:
        taken = holds.take("pr#1", "digest")
        assert json.loads((tmp_path / "default.json.hold").read_text())["id"] == "pr#1"
        with pytest.raises(StateHeld) as refused:
            holds.take("pr#2", "digest")
        assert refused.value.holder.id == "pr#1"
        renewed = holds.take("pr#1", "digest2")
        assert renewed.created == taken.created and renewed.config_digest == "digest2"
        assert holds.release("pr#2") == (False, holds.read())
        dropped, found = holds.release("pr#1")
        assert dropped and found.id == "pr#1"
        assert not (tmp_path / "default.json.hold").exists()
        assert not (tmp_path / "default.json.hold.tmp").exists()
    finally:
        backend.unlock(info)
    with pytest.raises(StateError, match="Cannot change the hold"):
        holds.release("pr#1")


@pytest.fixture
def s3_holds(aws):
    aws.client("s3").create_bucket(Bucket=BUCKET)
    return S3Backend(BUCKET, KEY, region="us-east-1", endpoint_url=aws.url).holds()


def stored(aws) -> dict:
    return json.loads(aws.client("s3").get_object(Bucket=BUCKET, Key=KEY + ".hold")["Body"].read())


def test_s3_renewal_does_not_overwrite_a_hold_taken_since_it_was_read(aws, s3_holds):
    s3_holds.take("pr#1", "digest")
    read = s3_holds._read

    def read_then_someone_else_takes_it():
        found = read()
        # between our read and our write: PR 1 is released and PR 2 takes the state
        other = S3Backend(BUCKET, KEY, region="us-east-1", endpoint_url=aws.url).holds()
        other.release("pr#1")
        other.take("pr#2", "other")
        s3_holds._read = read
        return found

    s3_holds._read = read_then_someone_else_takes_it
    with pytest.raises(StateHeld) as refused:
        s3_holds.take("pr#1", "digest2")
    assert refused.value.holder.id == "pr#2"
    assert stored(aws)["id"] == "pr#2" and stored(aws)["config_digest"] == "other"


def test_s3_release_does_not_drop_a_hold_renewed_or_retaken_since_it_was_read(aws, s3_holds):
    s3_holds.take("pr#1", "digest")
    read = s3_holds._read
    other = S3Backend(BUCKET, KEY, region="us-east-1", endpoint_url=aws.url).holds()

    def read_then_retaken():
        found = read()
        other.release("pr#1")
        other.take("pr#2", "other")
        s3_holds._read = read
        return found

    s3_holds._read = read_then_retaken
    assert s3_holds.release("pr#1") == (False, other.read())
    assert stored(aws)["id"] == "pr#2"

    def read_then_renewed():
        found = read()
        other.take("pr#2", "renewed")
        s3_holds._read = read
        return found

    s3_holds._read = read_then_renewed
    dropped, found = s3_holds.release("pr#2")
    assert dropped and found.config_digest == "renewed"
    assert other.read() is None
