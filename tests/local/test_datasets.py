"""`dataset` on the local provider: content-addressed store, digests, http sources, checks."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from functools import partial
from pathlib import Path

import pytest

from mlform.expr.values import UNKNOWN
from mlform.providers.base import Desired, LiveObject, ProviderError
from mlform.providers.kit import checks, digests
from mlform.providers.kit.digests import DigestCache
from mlform.providers.local import datasets
from mlform.providers.kit.digests import tree_digest
from mlform.providers.local.datasets import DatasetHandler
from mlform.providers.kit import calls as contract

CSV = "amount,label\n1.5,0\n2.0,1\n3.5,1\n"


def desired(name: str = "tx", **attributes) -> Desired:
    return Desired(address=f"dataset.{name}", kind="dataset", name=name, attributes=attributes)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def stored_files(env) -> list[Path]:
    return sorted(p for p in (env.root / "cas" / "sha256").rglob("*") if p.is_file())


def apply(handler: DatasetHandler, d: Desired) -> LiveObject:
    assert contract.validate(handler, d) == []
    return handler.create(contract.plan(handler, d, None))


# -- plan and the store ---------------------------------------------------------

def test_plan_knows_uri_digest_rows_and_bytes(local_env):
    write(local_env.stack_dir / "data" / "tx.csv", CSV)
    planned = contract.plan(DatasetHandler(local_env), desired(source="./data/tx.csv", format="csv"), None)
    digest = sha256(CSV)
    where = local_env.root / "cas" / "sha256" / digest[:2] / digest / "tx.csv"
    assert planned.attributes["digest"] == digest
    assert planned.attributes["uri"] == where.as_uri()
    assert planned.attributes["rows"] == 3
    assert planned.attributes["bytes"] == len(CSV)
    assert planned.attributes["source"] == "./data/tx.csv"   # the spec's values stay as given
    assert not where.exists(), "plan copies nothing"


def test_create_copies_into_the_store_and_read_returns_the_record(local_env):
    write(local_env.stack_dir / "tx.csv", CSV)
    handler = DatasetHandler(local_env)
    live = apply(handler, desired(source="tx.csv"))
    stored = Path(live.attributes["uri"].removeprefix("file://"))
    assert stored.read_text() == CSV
    assert live.id == "stack/test/dataset.tx"
    slug = local_env.slug("dataset.tx")
    record = json.loads((local_env.root / "datasets" / f"{slug}.json").read_text())
    assert record["digest"] == sha256(CSV)
    found = handler.read(LiveObject("dataset.tx", "dataset", None, {}))
    assert found is not None and found.attributes == live.attributes


def test_same_content_is_stored_once(local_env, mocker):
    write(local_env.stack_dir / "a" / "tx.csv", CSV)
    write(local_env.stack_dir / "b" / "tx.csv", CSV)
    write(local_env.stack_dir / "c" / "other.csv", CSV)
    handler = DatasetHandler(local_env)
    copies = mocker.spy(datasets, "_copy")
    first = apply(handler, desired("a", source="a/tx.csv"))
    again = handler.create(contract.plan(handler, desired("a", source="a/tx.csv"), None))
    twin = apply(handler, desired("b", source="b/tx.csv"))
    renamed = apply(handler, desired("c", source="c/other.csv"))
    assert copies.call_count == 1, "content already in the store is never copied again"
    assert first.attributes["uri"] == again.attributes["uri"] == twin.attributes["uri"]
    assert len(stored_files(local_env)) == 2            # tx.csv and other.csv ...
    a, c = (Path(x.attributes["uri"].removeprefix("file://")) for x in (first, renamed))
    assert a.stat().st_ino == c.stat().st_ino          # ... one set of bytes (a hard link)


def test_a_directory_digest_covers_paths_and_contents(local_env):
    root = local_env.stack_dir / "images"
    write(root / "train" / "a.csv", "x\n1\n")
    write(root / "train" / "b.csv", "x\n2\n")
    write(root / "README", "notes")
    handler = DatasetHandler(local_env)
    planned = contract.plan(handler, desired(source="images", format="dir"), None)
    expected = tree_digest([("README", sha256("notes")), ("train/a.csv", sha256("x\n1\n")),
                            ("train/b.csv", sha256("x\n2\n"))])
    assert planned.attributes["digest"] == expected
    assert planned.attributes["rows"] == 3          # a directory of files: one row per file
    assert planned.attributes["bytes"] == 4 + 4 + 5
    live = handler.create(planned)
    stored = Path(live.attributes["uri"].removeprefix("file://"))
    assert stored.name == "images" and (stored / "train" / "b.csv").read_text() == "x\n2\n"
    (root / "train" / "b.csv").rename(root / "train" / "c.csv")   # same bytes, another path
    assert contract.plan(handler, desired(source="images", format="dir"), None).attributes["digest"] != expected


def test_a_directory_of_csv_files_is_one_table(local_env):
    write(local_env.stack_dir / "parts" / "1.csv", "amount\n1\n2\n")
    write(local_env.stack_dir / "parts" / "2.csv", "amount\n3\n")
    planned = contract.plan(DatasetHandler(local_env), desired(source="parts", format="csv"), None)
    assert planned.attributes["rows"] == 3


def test_an_edited_source_shows_a_new_digest_at_plan_while_read_keeps_the_stored_one(local_env):
    source = write(local_env.stack_dir / "tx.csv", CSV)
    handler = DatasetHandler(local_env)
    live = apply(handler, desired(source="tx.csv"))
    source.write_text(CSV + "4.0,1\n")
    planned = contract.plan(handler, desired(source="tx.csv"), handler.read(live))
    assert planned.attributes["digest"] == sha256(CSV + "4.0,1\n")
    assert handler.read(live).attributes["digest"] == sha256(CSV)
    updated = handler.update(live, planned)
    assert updated.attributes["rows"] == 4


def test_digests_are_cached_by_size_and_mtime_across_processes(local_env, mocker):
    write(local_env.stack_dir / "tx.csv", CSV)
    contract.plan(DatasetHandler(local_env), desired(source="tx.csv"), None)
    local_env.digests.save()            # the engine saves the cache after reading facts
    DigestCache.forget_shared()         # a new process: the cache comes from .mlform/cache
    hashing = mocker.spy(digests, "hash_file")
    reading = mocker.spy(checks, "profile")
    contract.plan(DatasetHandler(local_env), desired(source="tx.csv"), None)
    assert hashing.call_count == 0 and reading.call_count == 0
    assert (local_env.stack_dir / ".mlform" / "cache" / "digests.json").is_file()


def test_a_source_changed_between_plan_and_apply_is_refused(local_env):
    source = write(local_env.stack_dir / "tx.csv", CSV)
    handler = DatasetHandler(local_env)
    planned = contract.plan(handler, desired(source="tx.csv"), None)
    source.write_text("amount,label\n9,9\n")
    with pytest.raises(ProviderError, match="source changed since the plan"):
        handler.create(planned)
    assert stored_files(local_env) == []


def test_read_is_none_when_the_stored_content_is_gone(local_env):
    write(local_env.stack_dir / "tx.csv", CSV)
    handler = DatasetHandler(local_env)
    live = apply(handler, desired(source="tx.csv"))
    Path(live.attributes["uri"].removeprefix("file://")).unlink()
    assert handler.read(live) is None


def test_delete_keeps_content_another_dataset_refers_to(local_env):
    write(local_env.stack_dir / "tx.csv", CSV)
    handler = DatasetHandler(local_env)
    a = apply(handler, desired("a", source="tx.csv"))
    b = apply(handler, desired("b", source="tx.csv"))
    handler.delete(a)
    assert handler.read(a) is None and handler.read(b) is not None
    handler.delete(b)
    handler.delete(b)   # absent already: success
    assert stored_files(local_env) == []


def test_unknown_source_plans_unknown_computed_values(local_env):
    planned = contract.plan(DatasetHandler(local_env), desired(source=UNKNOWN), None)
    assert all(planned.attributes[k] is UNKNOWN for k in ("uri", "digest", "rows", "bytes"))


def test_missing_and_unsupported_sources_are_diagnostics(local_env):
    handler = DatasetHandler(local_env)
    [missing] = contract.validate(handler, desired(source="nope.csv"))
    assert missing.summary.startswith("dataset.tx: source nope.csv not found")
    [remote] = contract.validate(handler, desired(source="s3://bucket/tx.csv"))
    assert "not s3:// sources" in remote.summary
    with pytest.raises(ProviderError, match="not found"):
        contract.plan(handler, desired(source="nope.csv"), None)


# -- http(s) sources ----------------------------------------------------------------

class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:   # keep the test output clean
        pass

    def send_response(self, code, message=None):
        self.server.codes.append(code)
        super().send_response(code, message)


@pytest.fixture
def http_root(tmp_path):
    """A local http.server on 127.0.0.1 serving tmp/www; yields (base URL, folder, status codes)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    server.codes = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, server.codes
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_source_is_downloaded_once_and_stored(local_env, http_root):
    base, www, codes = http_root
    write(www / "tx.csv", CSV)
    d = desired(source=f"{base}/tx.csv", format="csv", checks={"min_rows": 3})
    handler = DatasetHandler(local_env)
    assert contract.validate(handler, d) == []
    planned = contract.plan(handler, d, None)
    assert planned.attributes["digest"] == sha256(CSV) and planned.attributes["rows"] == 3
    live = handler.create(planned)
    assert Path(live.attributes["uri"].removeprefix("file://")).read_text() == CSV
    assert codes == [200], "validate, plan and create share one download"
    contract.plan(DatasetHandler(local_env), d, None)      # a later run asks If-Modified-Since
    assert codes == [200, 304]


def test_an_http_source_that_fails_is_a_diagnostic(local_env, http_root):
    base, _, _ = http_root
    [problem] = contract.validate(DatasetHandler(local_env), desired(source=f"{base}/missing.csv"))
    assert problem.summary == f"dataset.tx: cannot download {base}/missing.csv: HTTP 404 File not found"


# -- checks ---------------------------------------------------------------------------

def summaries(env, text: str, name: str = "tx.csv", **attributes) -> list[str]:
    write(env.stack_dir / name, text)
    return [d.summary for d in contract.validate(DatasetHandler(env), desired(source=name, **attributes))]


def test_min_rows(local_env):
    assert summaries(local_env, CSV, checks={"min_rows": 100}) == [
        "dataset.tx: 3 rows, fewer than min_rows = 100"]
    assert summaries(local_env, CSV, checks={"min_rows": 3}) == []


def test_max_null_fraction_counts_empty_and_missing_cells(local_env):
    text = "amount,label,note\n1.5,0,a\n,1,b\n3.5\n2.5,1,\n"
    assert summaries(local_env, text, checks={"max_null_fraction": 0.3}) == [
        "dataset.tx: column note is 50% null (2 of 4 rows), more than max_null_fraction = 0.3"]
    assert summaries(local_env, text, checks={"max_null_fraction": 0.2}) == [
        "dataset.tx: column amount is 25% null (1 of 4 rows), more than max_null_fraction = 0.2",
        "dataset.tx: column label is 25% null (1 of 4 rows), more than max_null_fraction = 0.2",
        "dataset.tx: column note is 50% null (2 of 4 rows), more than max_null_fraction = 0.2",
    ]


def test_schema_columns_must_exist_and_parse(local_env):
    text = "amount,label,when\n1.5,0,2024-01-02\nabc,1,2024-01-03T10:00:00Z\n2.0,yes,never\n"
    schema = {"amount": "float", "label": "int", "when": "datetime", "ok": "bool", "note": "str"}
    assert summaries(local_env, text, schema=schema) == [
        "dataset.tx: column amount: 1 value is not float (first: 'abc' in row 2)",
        "dataset.tx: column label: 1 value is not int (first: 'yes' in row 3)",
        "dataset.tx: column when: 1 value is not datetime (first: 'never' in row 3)",
        "dataset.tx: schema column ok (bool) is missing; columns found: amount, label, when",
        "dataset.tx: schema column note (str) is missing; columns found: amount, label, when",
    ]


def test_a_failing_check_is_an_error_with_where_it_looked(local_env):
    write(local_env.stack_dir / "tx.csv", CSV)
    [problem] = contract.validate(DatasetHandler(local_env), desired(source="tx.csv", checks={"min_rows": 5}))
    assert problem.severity == "error" and problem.address == "dataset.tx"
    assert problem.detail == f"Checked tx.csv (sha256 {sha256(CSV)[:12]}…)."


def test_jsonl_checks(local_env):
    text = '{"amount": 1.5, "label": 0}\n{"amount": null, "label": 1}\n{"label": true}\n'
    assert summaries(local_env, text, name="tx.jsonl", format="jsonl",
                     schema={"amount": "float", "label": "int"},
                     checks={"min_rows": 4, "max_null_fraction": 0.5}) == [
        "dataset.tx: column label: 1 value is not int (first: True in row 3)",
        "dataset.tx: column amount is 66.7% null (2 of 3 rows), more than max_null_fraction = 0.5",
        "dataset.tx: 3 rows, fewer than min_rows = 4",
    ]


def test_a_jsonl_key_first_seen_late_was_null_before(local_env):
    text = '{"a": 1}\n{"a": 2}\n{"a": 3, "b": 4}\n'
    assert summaries(local_env, text, name="x.jsonl", checks={"max_null_fraction": 0.5}) == [
        "dataset.tx: column b is 66.7% null (2 of 3 rows), more than max_null_fraction = 0.5"]


def test_parquet_without_pyarrow_is_a_clear_diagnostic(local_env, mocker):
    mocker.patch.dict("sys.modules", {"pyarrow": None, "pyarrow.parquet": None})
    write(local_env.stack_dir / "tx.parquet", "PAR1")
    [problem] = contract.validate(DatasetHandler(local_env), 
        desired(source="tx.parquet", format="parquet", checks={"min_rows": 1}))
    assert problem.summary.startswith(
        "dataset.tx: cannot run the dataset checks: reading parquet needs pyarrow, "
        "which is not installed")


def test_checks_that_need_columns_say_so_for_other_formats(local_env):
    assert summaries(local_env, "blob", name="x.bin", format="other",
                     checks={"min_rows": 1}, schema={"a": "int"}) == [
        "dataset.tx: schema needs columns, but format other has none (use csv, jsonl or parquet)",
        "dataset.tx: min_rows needs rows, but format other has none "
        "(use csv, jsonl, parquet, json or a directory)",
    ]


@pytest.mark.parametrize("value, type_name, ok", [
    ("12", "int", True), ("-3", "int", True), ("1.5", "int", False), (2.0, "int", True),
    (True, "int", False), ("1e3", "float", True), ("x", "float", False), (3, "float", True),
    ("Yes", "bool", True), ("maybe", "bool", False), (1, "bool", True),
    ("2024-05-01", "datetime", True), ("2024-05-01T12:00:00Z", "datetime", True),
    ("May 1", "datetime", False), (5, "str", True),
])
def test_parses_as(value, type_name, ok):
    assert checks.parses_as(value, type_name) is ok


# -- what is read, and how often -------------------------------------------------------

def test_a_dataset_without_schema_or_checks_is_never_profiled(local_env, mocker):
    profiled = mocker.spy(checks, "profile")
    # not jsonl at all: a profile would fail; the rows of such a file are unknown (null)
    write(local_env.stack_dir / "broken.jsonl", '{"a": 1}\nnot json\n')
    write(local_env.stack_dir / "tx.csv", CSV)
    handler = DatasetHandler(local_env)
    assert contract.validate(handler, desired(source="broken.jsonl")) == []
    broken = contract.plan(handler, desired(source="broken.jsonl"), None)
    assert broken.attributes["digest"] == sha256('{"a": 1}\nnot json\n')
    assert broken.attributes["rows"] is None
    assert contract.plan(handler, desired(source="tx.csv"), None).attributes["rows"] == 3
    assert profiled.call_count == 0
    contract.plan(handler, desired(source="tx.csv", checks={"min_rows": 1}), None)
    contract.plan(handler, desired(source="tx.csv", checks={"min_rows": 2}), None)
    assert profiled.call_count == 1, "declared checks profile the content once"


def test_parquet_checks_are_real_with_pyarrow(local_env):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    path = local_env.stack_dir / "tx.parquet"
    pq.write_table(pa.table({"amount": [1.5, None, 3.0], "label": ["0", "1", "yes"]}), path)
    found = [d.summary for d in contract.validate(DatasetHandler(local_env), desired(
        source="tx.parquet", format="parquet", schema={"amount": "float", "label": "int"},
        checks={"min_rows": 4, "max_null_fraction": 0.2}))]
    assert found == [
        "dataset.tx: column label: 1 value is not int (first: 'yes' in row 3)",
        "dataset.tx: column amount is 33.3% null (1 of 3 rows), more than max_null_fraction = 0.2",
        "dataset.tx: 3 rows, fewer than min_rows = 4",
    ]
    assert contract.plan(DatasetHandler(local_env), desired(source="tx.parquet"),
                         None).attributes["rows"] == 3


def test_a_directory_with_one_changed_file_profiles_that_file_only(local_env, mocker):
    parts = local_env.stack_dir / "parts"
    for i in range(20):
        write(parts / f"{i:02}.csv", f"amount,label\n{i}.5,{i % 2}\n{i},\n")
    write(parts / "20.csv", "amount,other\nx,1\n")              # columns differ per file
    d = desired(source="parts", format="csv", schema={"amount": "float"},
                checks={"max_null_fraction": 0.99})
    handler = DatasetHandler(local_env)
    first = contract.plan(handler, d, None)
    [bad] = [x.summary for x in contract.validate(handler, d)]
    assert bad == "dataset.tx: column amount: 1 value is not float (first: 'x' in row 41)"
    assert first.attributes["rows"] == 41
    direct = checks.profile(parts, "csv", {"amount": "float"})
    profiled = mocker.spy(checks, "profile")
    counted = mocker.spy(checks, "count_rows")
    write(parts / "07.csv", "amount,label\n7.5,1\n8,1\n9,1\n")
    local_env.digests.save()
    DigestCache.forget_shared()                                   # and a new process
    handler = DatasetHandler(local_env)
    assert contract.plan(handler, d, None).attributes["rows"] == 42
    assert [call.args[0].name for call in profiled.call_args_list] == ["07.csv"]
    # rows only: the profiles cached by content answer, so no file is read again
    assert contract.plan(handler, desired(source="parts", format="csv"),
                         None).attributes["rows"] == 42
    assert counted.call_count == 0 and profiled.call_count == 1
    write(parts / "08.csv", "amount,label\n1,1\n")
    assert contract.plan(handler, desired(source="parts", format="csv"),
                         None).attributes["rows"] == 41
    assert [call.args[0].name for call in counted.call_args_list] == ["08.csv"]
    # the merged per-file profiles are the directory's profile read in one go
    write(parts / "07.csv", "amount,label\n7.5,1\n7,\n")
    write(parts / "08.csv", "amount,label\n8.5,0\n8,\n")
    again = datasets_facts(local_env, d)
    assert again == direct


def datasets_facts(env, d):
    from mlform.providers.kit.datasets import read_local_dataset
    return read_local_dataset(d.attributes["source"], env.stack_dir / d.attributes["source"],
                              {"format": "csv", "schema": d.attributes["schema"]},
                              env.digests).profile


# -- pyarrow's readers: checks that fail, one read, each content profiled once ---------

def _big_jsonl(rows: int = 4000) -> str:
    """A jsonl file big enough for pyarrow's reader (`checks.ARROW_FROM_BYTES`), with 40
    null amounts, one label that is no bool and one id that is no int."""
    lines = []
    for i in range(rows):
        row = {"id": 2.5 if i == 3000 else i, "amount": None if i % 100 == 7 else i / 4,
               "label": "maybe" if i == 1234 else ("yes" if i % 2 else "no"),
               "note": "x" * 40}
        lines.append(json.dumps(row))
    return "\n".join(lines) + "\n"


JSONL_CHECKS = {"schema": {"id": "int", "amount": "float", "label": "bool", "gone": "str"},
                "checks": {"min_rows": 5000, "max_null_fraction": 0}}
JSONL_FINDINGS = [
    "dataset.tx: column id: 1 value is not int (first: 2.5 in row 3001)",
    "dataset.tx: column label: 1 value is not bool (first: 'maybe' in row 1235)",
    "dataset.tx: schema column gone (str) is missing; columns found: id, amount, label, note",
    "dataset.tx: column amount is 1% null (40 of 4000 rows), more than max_null_fraction = 0",
    "dataset.tx: 4000 rows, fewer than min_rows = 5000",
]


def test_jsonl_checks_by_pyarrow_fail_with_the_value_and_row(local_env, mocker):
    pytest.importorskip("pyarrow")
    from mlform.providers.kit import arrow_tables
    text = _big_jsonl()
    assert len(text) >= checks.ARROW_FROM_BYTES
    fast = mocker.spy(arrow_tables, "jsonl_profile")
    assert summaries(local_env, text, name="tx.jsonl", **JSONL_CHECKS) == JSONL_FINDINGS
    assert fast.call_count == 1 and fast.spy_return is not None, "pyarrow's reader answered"


def test_parquet_checks_by_pyarrow_fail_with_the_value_and_row(local_env, mocker):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    from mlform.providers.kit import arrow_tables
    rows = 3000
    path = local_env.stack_dir / "tx.parquet"
    pq.write_table(pa.table({
        "id": pa.array([i + 0.5 if i == 2000 else float(i) for i in range(rows)]),
        "amount": pa.array([None if i % 100 == 7 else i / 4 for i in range(rows)]),
        "label": pa.array(["maybe" if i == 1234 else "yes" for i in range(rows)]),
        "flag": pa.array([i % 2 for i in range(rows)], pa.int8()),
    }), path)
    fast = mocker.spy(arrow_tables, "parquet_profile")
    found = [d.summary for d in contract.validate(DatasetHandler(local_env), desired(
        source="tx.parquet", schema={"id": "int", "amount": "float", "label": "bool",
                                     "flag": "bool"},
        checks={"min_rows": 3001, "max_null_fraction": 0.005}))]
    assert found == [
        "dataset.tx: column id: 1 value is not int (first: 2000.5 in row 2001)",
        "dataset.tx: column label: 1 value is not bool (first: 'maybe' in row 1235)",
        "dataset.tx: column amount is 1% null (30 of 3000 rows), more than "
        "max_null_fraction = 0.005",
        "dataset.tx: 3000 rows, fewer than min_rows = 3001",
    ]
    assert fast.call_count == 1 and fast.spy_return is not None, "pyarrow's reader answered"


def test_a_parquet_value_json_cannot_hold_is_shown_the_same_from_the_cache(local_env):
    pa = pytest.importorskip("pyarrow")
    import datetime as dt
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"day": pa.array([dt.date(2024, 5, 1)])}),
                   local_env.stack_dir / "tx.parquet")
    d = desired(source="tx.parquet", schema={"day": "datetime"})
    expected = ["dataset.tx: column day: 1 value is not datetime "
                "(first: datetime.date(2024, 5, 1) in row 1)"]
    assert [x.summary for x in contract.validate(DatasetHandler(local_env), d)] == expected
    local_env.digests.save()                  # the profile cache is JSON
    DigestCache.forget_shared()
    assert [x.summary for x in contract.validate(DatasetHandler(local_env), d)] == expected


def test_a_file_is_hashed_and_profiled_in_one_read_and_each_content_profiled_once(
        local_env, mocker):
    pytest.importorskip("pyarrow")
    from mlform.providers.kit import arrow_tables
    text = _big_jsonl()
    write(local_env.stack_dir / "tx.jsonl", text)
    hashed = mocker.spy(digests, "hash_file")
    profiled = mocker.spy(arrow_tables, "jsonl_profile")
    d = desired(source="tx.jsonl", **JSONL_CHECKS)
    assert [x.summary for x in contract.validate(DatasetHandler(local_env), d)] == JSONL_FINDINGS
    planned = contract.plan(DatasetHandler(local_env), d, None).attributes
    assert (planned["digest"], planned["rows"]) == (sha256(text), 4000)
    assert hashed.call_count == 0, "the read that profiled the file made its digest"
    assert profiled.call_count == 1
    local_env.digests.save()
    DigestCache.forget_shared()                                   # and a new process
    again = DatasetHandler(local_env)
    assert [x.summary for x in contract.validate(again, d)] == JSONL_FINDINGS
    assert contract.plan(again, desired(source="tx.jsonl"), None).attributes["rows"] == 4000
    assert profiled.call_count == 1 and hashed.call_count == 0    # the cache answered
    # the same content under another name: hashed (a file of that size was read
    # before), then found by its digest, never profiled again
    write(local_env.stack_dir / "copy.jsonl", text)
    copy = desired(source="copy.jsonl", **JSONL_CHECKS)
    assert [x.summary for x in contract.validate(DatasetHandler(local_env), copy)] \
        == JSONL_FINDINGS
    assert profiled.call_count == 1 and hashed.call_count == 1
    # a schema that asks a new question of a column reads the content again, once
    d2 = desired(source="tx.jsonl", schema={"note": "int"})
    for _ in range(2):
        assert [x.summary for x in contract.validate(DatasetHandler(local_env), d2)] == [
            "dataset.tx: column note: 4000 values are not int (first: '" + "x" * 40
            + "' in row 1)"]
    assert profiled.call_count == 2


def test_without_pyarrow_the_row_reader_gives_the_same_findings(local_env, mocker):
    mocker.patch.dict("sys.modules", {"pyarrow": None})
    assert summaries(local_env, _big_jsonl(), name="tx.jsonl", **JSONL_CHECKS) == JSONL_FINDINGS
