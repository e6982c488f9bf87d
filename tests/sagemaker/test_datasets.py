"""`dataset` on the sagemaker provider, against the emulator: uploads, digests, checks, read, delete."""

from __future__ import annotations

import pytest

from mlform.expr.values import UNKNOWN
from mlform.providers.base import Desired, LiveObject, ProviderError

from mlform.providers.sagemaker import bucket
from mlform.providers.kit import calls as contract

from ._provider import BUCKET, apply, build, count, keys, settings_summaries

ADDRESS = "dataset.tx"
CSV = "amount,label\n1.5,0\n2.0,1\n,1\n"


@pytest.fixture
def provider(aws, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tx.csv").write_text(CSV)
    return build(aws, tmp_path)


def _desired(attrs: dict, address: str = ADDRESS) -> Desired:
    return Desired(address, "dataset", address.split(".")[1], attrs)


def test_local_file_is_uploaded_once_per_digest_with_tags_and_metadata(aws, provider, tmp_path):
    attrs = {"source": "./data/tx.csv", "format": "csv", "tags": {"team": "risk"}}
    planned = contract.plan(provider, _desired(attrs), None)
    assert planned.attributes["rows"] == 3 and planned.attributes["bytes"] == len(CSV)
    digest = planned.attributes["digest"]
    assert planned.attributes["uri"].startswith(
        f"s3://{BUCKET}/mlform/shop/test/datasets/{provider.env.name(ADDRESS)}/")
    assert planned.attributes["uri"].endswith(f"/{digest}/tx.csv")
    aws.clear_calls()

    live = provider.create(planned)
    assert live.id == planned.attributes["uri"] and live.attributes == planned.attributes
    assert count(aws, "PutObject") == 2          # the data, and the dataset's record
    key = live.id.split(f"s3://{BUCKET}/", 1)[1]
    s3 = aws.client("s3")
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["Metadata"]["sha256"] == digest
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]}
    assert tags == {"mlform:stack": "shop", "mlform:env": "test", "mlform:address": ADDRESS,
                    "team": "risk"}
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode() == CSV

    # a retried create and an unchanged re-apply upload nothing
    aws.clear_calls()
    assert provider.create(planned).id == live.id
    assert provider.update(live, contract.plan(provider, _desired(attrs), live)).id == live.id
    assert count(aws, "PutObject") == 0

    # a changed file is a new digest: an update that uploads the new version beside the old
    (tmp_path / "data" / "tx.csv").write_text(CSV + "3.0,0\n")
    aws.clear_calls()
    changed = contract.plan(provider, _desired(attrs), live)
    assert changed.attributes["digest"] != digest and changed.attributes["rows"] == 4
    updated = provider.update(live, changed)
    assert updated.id != live.id and count(aws, "PutObject") == 2
    assert len([k for k in keys(aws, "mlform/shop/test/datasets/") if k.endswith("tx.csv")]) == 2


def test_directory_uploads_every_file_under_relative_keys(aws, provider, tmp_path):
    root = tmp_path / "images"
    (root / "cats").mkdir(parents=True)
    (root / "a.bin").write_bytes(b"a")
    (root / "cats" / "b.bin").write_bytes(b"bb")
    live = apply(provider, "dataset", ADDRESS, {"source": "./images", "format": "dir"})
    assert live.id.endswith(f"/{live.attributes['digest']}/")
    assert live.attributes["rows"] == 2 and live.attributes["bytes"] == 3
    prefix = live.id.split(f"s3://{BUCKET}/", 1)[1]
    assert keys(aws, prefix) == [prefix + "a.bin", prefix + "cats/b.bin"]
    aws.clear_calls()
    provider.create(contract.plan(provider, _desired({"source": "./images", "format": "dir"}), None))
    assert count(aws, "PutObject") == 0


def test_s3_source_is_read_not_copied(aws, provider):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="raw-data")
    s3.put_object(Bucket="raw-data", Key="exports/2024/part-1.csv", Body=CSV.encode())
    s3.put_object(Bucket="raw-data", Key="exports/2024/part-2.csv", Body=b"amount,label\n9,1\n")
    attrs = {"source": "s3://raw-data/exports/2024", "format": "csv",
             "checks": {"min_rows": 2}}
    assert contract.validate(provider, _desired(attrs)) == []
    planned = contract.plan(provider, _desired(attrs), None)
    assert planned.attributes["uri"] == "s3://raw-data/exports/2024/"
    assert planned.attributes["rows"] == 4            # small enough: fetched and counted
    aws.clear_calls()
    live = provider.create(planned)
    assert live.id == "s3://raw-data/exports/2024/"
    puts = [c for c in aws.calls() if c["action"] in ("PutObject", "CopyObject")]
    assert [c["name"] for c in puts] == [
        f"mlform/shop/test/datasets/{provider.env.name(ADDRESS)}/dataset.json"]

    # an object rewritten in place changes the digest (ETag) without any copy
    s3.put_object(Bucket="raw-data", Key="exports/2024/part-2.csv", Body=b"amount,label\n8,1\n")
    assert contract.plan(provider, _desired(attrs), live).attributes["digest"] != live.attributes["digest"]

    # delete leaves the source alone
    provider.delete(live)
    assert len(s3.list_objects_v2(Bucket="raw-data")["Contents"]) == 2
    assert keys(aws, "mlform/") == []


def test_s3_object_rows_counted_unless_bigger_than_the_fetch_limit(aws, provider):
    aws.client("s3").create_bucket(Bucket="raw-data")
    aws.client("s3").put_object(Bucket="raw-data", Key="big.csv", Body=CSV.encode())
    small = contract.plan(provider, _desired({"source": "s3://raw-data/big.csv"}), None)
    assert small.attributes["rows"] == 3                  # under the default limit: counted
    attrs = {"source": "s3://raw-data/big.csv", "settings": {"fetch_limit_mb": 0}}
    planned = contract.plan(provider, _desired(attrs), None)
    assert planned.attributes["rows"] is None and planned.attributes["uri"] == "s3://raw-data/big.csv"
    found = contract.validate(provider, _desired({**attrs, "checks": {"min_rows": 1}}))
    assert [d.summary for d in found] == [
        f"{ADDRESS}: cannot run the dataset checks: s3://raw-data/big.csv is {len(CSV)} bytes, "
        f"more than settings.fetch_limit_mb = 0"]


def test_checks_fail_with_the_value_found_and_the_threshold(provider):
    attrs = {"source": "./data/tx.csv", "format": "csv",
             "schema": {"amount": "float", "label": "int", "region": "str"},
             "checks": {"min_rows": 100, "max_null_fraction": 0.1}}
    found = contract.validate(provider, _desired(attrs))
    assert [d.summary for d in found] == [
        "dataset.tx: schema column region (str) is missing; columns found: amount, label",
        "dataset.tx: column amount is 33.3% null (1 of 3 rows), more than max_null_fraction = 0.1",
        "dataset.tx: 3 rows, fewer than min_rows = 100",
    ]
    assert all(d.severity == "error" and d.detail.startswith("Checked ./data/tx.csv (sha256 ")
               for d in found)


def test_settings_source_and_tag_mistakes_are_diagnostics(provider):
    assert settings_summaries("dataset", "dataset.tx", {"fetch_limt_mb": 1}) == [
        'Invalid settings for dataset.tx: unknown setting "fetch_limt_mb"']
    assert [d.summary for d in contract.validate(provider, _desired({"source": "./data/nope.csv"}))][0] \
        .startswith("dataset.tx: source ./data/nope.csv not found")
    assert "not https:// ones" in contract.validate(provider, 
        _desired({"source": "https://example.com/x.csv"}))[0].summary
    many = {f"t{i}": "x" for i in range(8)}
    assert contract.validate(provider, _desired({"source": "./data/tx.csv", "tags": many}))[0].summary == (
        "dataset.tx has 8 tags, more than the 7 an S3 object can carry beside mlform's 3 "
        "ownership tags")
    with pytest.raises(ProviderError, match="not found"):
        contract.plan(provider, _desired({"source": "./data/nope.csv"}), None)


def test_plan_with_unknown_source_has_no_side_effects(aws, provider):
    aws.clear_calls()
    planned = contract.plan(provider, _desired({"source": UNKNOWN}), None)
    assert all(planned.attributes[k] is UNKNOWN for k in ("uri", "digest", "rows", "bytes"))
    assert aws.mutating_calls() == []


def test_read_finds_by_address_reports_tags_and_notices_deletion(aws, provider):
    attrs = {"source": "./data/tx.csv", "tags": {"team": "risk"}}
    live = apply(provider, "dataset", ADDRESS, attrs)
    again = provider.read(LiveObject(ADDRESS, "dataset", None, {}))   # a crashed create
    assert again.id == live.id and again.attributes == live.attributes
    assert provider.import_("dataset", ADDRESS, live.id).attributes == live.attributes

    s3 = aws.client("s3")
    record = [k for k in keys(aws) if k.endswith("dataset.json")][0]
    s3.put_object_tagging(Bucket=BUCKET, Key=record, Tagging={"TagSet": [
        {"Key": "mlform:stack", "Value": "shop"}, {"Key": "mlform:env", "Value": "test"},
        {"Key": "mlform:address", "Value": ADDRESS}, {"Key": "team", "Value": "fraud"}]})
    assert provider.read(live).attributes["tags"] == {"team": "fraud"}

    data_key = live.id.split(f"s3://{BUCKET}/", 1)[1]
    s3.delete_object(Bucket=BUCKET, Key=data_key)
    assert provider.read(live) is None


def test_delete_removes_every_version_and_is_idempotent(aws, provider, tmp_path):
    live = apply(provider, "dataset", ADDRESS, {"source": "./data/tx.csv"})
    (tmp_path / "data" / "tx.csv").write_text(CSV + "4,1\n")
    live = apply(provider, "dataset", ADDRESS, {"source": "./data/tx.csv"}, prior=live)
    other = apply(provider, "dataset", "dataset.other", {"source": "./data/tx.csv"})
    provider.delete(live)
    assert provider.read(live) is None
    assert all(f"/{provider.env.name('dataset.other')}/" in k for k in keys(aws, "mlform/"))
    provider.delete(live)                     # absent already: success
    assert provider.read(other) is not None


def test_foreign_record_is_refused(aws, provider):
    # another stack's record under this dataset's key (a copied prefix, a shared bucket)
    key = bucket.dataset_record(provider.env, ADDRESS)
    aws.client("s3").put_object(Bucket=BUCKET, Key=key, Body=b'{"attributes": {}}',
                                Tagging="mlform:stack=other&mlform:env=test&"
                                        f"mlform:address={ADDRESS}")
    with pytest.raises(ProviderError, match="belongs to stack 'other', environment 'test'"):
        provider.read(LiveObject(ADDRESS, "dataset", None, {}))
    with pytest.raises(ProviderError, match="refusing to adopt it"):
        apply(provider, "dataset", ADDRESS, {"source": "./data/tx.csv"})
    aws.client("s3").delete_object_tagging(Bucket=BUCKET, Key=key)
    with pytest.raises(ProviderError, match="carries no mlform ownership tags"):
        provider.read(LiveObject(ADDRESS, "dataset", None, {}))
