"""The s3 state backend through the CLI: an environment whose state lives in a bucket of
the S3 emulator (tests/emulator), applied, listed, locked by someone else, and unlocked."""

from __future__ import annotations

import json

import pytest
from fixture import AWS_ENV

from .harness import memory_provider, read_store, state_path

pytestmark = pytest.mark.timeout(300)

BUCKET = "mlform-state"

STACK = memory_provider() + """
dataset "d" {
  for_each = toset(["a", "b"])
  source   = "s3://bucket/${each.key}.csv"
}
"""


def environment(endpoint: str) -> str:
    return f"""default_provider = "memory"

backend "s3" {{
  bucket       = "{BUCKET}"
  region       = "us-east-1"
  endpoint_url = "{endpoint}"
}}
"""


def test_apply_list_lock_and_force_unlock_with_state_in_s3(aws, make_stack, mlform):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    stack = make_stack(STACK, files={"environments/ci.hcl": environment(aws.url)})
    key = "mlform/stack/ci.json"                        # the default: mlform/<stack>/<env>.json

    applied = mlform("apply", "--auto-approve", "--env", "ci", cwd=stack, env=AWS_ENV)
    assert applied.code == 0, applied
    assert not state_path(stack, "ci").exists(), "the state must not be written locally"
    stored = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    addresses = ['dataset.d["a"]', 'dataset.d["b"]']
    assert sorted(r["address"] for r in stored["resources"]) == addresses
    assert sorted(o["address"] for o in read_store(stack).values()) == addresses
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", ())
            if not o["Key"].startswith(key + ".audit")]     # the audit log: test_audit.py
    assert sorted(keys) == [key, key + ".backup"], "no lock or journal object may be left"

    listed = mlform("state", "list", "--env", "ci", cwd=stack, env=AWS_ENV)
    assert listed.code == 0, listed
    assert listed.stdout.split() == addresses

    # a holder that died leaves its lock object: plan is refused and told who holds it
    holder = {"id": "4d1c-held-by-ci", "pid": 4242, "host": "ci-runner-7", "operation": "apply",
              "who": "ci", "created": "2024-05-01T12:00:00+00:00", "path": f"s3://{BUCKET}/{key}"}
    s3.put_object(Bucket=BUCKET, Key=key + ".lock", Body=json.dumps(holder))
    refused = mlform("plan", "--env", "ci", cwd=stack, env=AWS_ENV)
    assert refused.code == 1, refused
    for part in ("4d1c-held-by-ci", "ci-runner-7", "4242", "apply", "2024-05-01T12:00:00",
                 "mlform force-unlock 4d1c-held-by-ci"):
        assert part in refused.stderr, refused
    assert "Traceback" not in refused.output

    wrong = mlform("force-unlock", "not-the-id", "--env", "ci", cwd=stack, env=AWS_ENV)
    assert wrong.code == 1 and "4d1c-held-by-ci" in wrong.stderr, wrong
    unlocked = mlform("force-unlock", "4d1c-held-by-ci", "--env", "ci", cwd=stack, env=AWS_ENV)
    assert unlocked.code == 0, unlocked
    assert "4d1c-held-by-ci" in unlocked.stdout

    clean = mlform("plan", "--detailed-exitcode", "--env", "ci", cwd=stack, env=AWS_ENV)
    assert clean.code == 0, clean
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", ())
            if not o["Key"].startswith(key + ".audit")]
    assert sorted(keys) == [key, key + ".backup"]


def test_a_missing_bucket_is_a_diagnostic(aws, make_stack, mlform):
    stack = make_stack(STACK, files={"environments/ci.hcl": environment(aws.url)})
    failed = mlform("plan", "--env", "ci", cwd=stack, env=AWS_ENV)
    assert failed.code == 1, failed
    assert f"the bucket '{BUCKET}' does not exist" in failed.stderr, failed
    assert "Traceback" not in failed.output and "internal error" not in failed.output
