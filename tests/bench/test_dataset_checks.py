"""Dataset checks at disk speed: `mlform plan` of a stack whose dataset declares checks.

Whole processes (`python -m mlform.cli plan`), each timed from start to exit, with the
process's CPU time (user + sys) beside the wall time, `REPS` runs interleaved (median and
range: on a shared machine the range says how noisy it was):

- one generated csv (``MLFORM_BENCH_CSV_MB``, default 200; the issue's target is about
  1,000) with five typed columns, some blanks, a schema and checks: cold (no mlform cache:
  sha256 and the vectorized profile in one read) and warm (the cache answers); rows only
  (no schema, no checks); the same file as `format = "other"` (digest only) as the floor;
  and `cat file > /dev/null` from a warm page cache, the target's yardstick (checks within
  2 x that time).  In process, the parts: the read alone, sha256 alone, pyarrow's parse
  alone, the profile, the profile and the digest in one read;
- the same rows as jsonl and parquet (``MLFORM_BENCH_TABLE_MB``, default 100, of csv
  text): the profile in process and a cold whole-process plan with checks;
- a directory of 2,000 small csv files with checks: cold, then warm after one file
  changed (the per-file profile cache reads that file only), against the same
  directory as `format = "dir"`.

The page cache is warm in every run (the file was just written or read): dropping it needs
root and would disturb the other work on the machine.  Figures only: the asserts are
about correctness (the checks pass, the rows are right).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlform.providers.kit import arrow_tables, checks, digests

from ._support import record

pytest.importorskip("pyarrow")

CLI = [sys.executable, "-m", "mlform.cli"]
MB = 1_000_000
BIG_MB = int(os.environ.get("MLFORM_BENCH_CSV_MB", "200"))
TABLE_MB = int(os.environ.get("MLFORM_BENCH_TABLE_MB", "100"))
REPS = int(os.environ.get("MLFORM_BENCH_REPS", "3"))
TYPES = {"id": "int", "amount": "float", "ok": "bool", "at": "datetime", "note": "str"}
FILES = 2_000
SCHEMA = '{ id = "int", amount = "float", ok = "bool", at = "datetime", note = "str" }'
CHECKS = "{ min_rows = 1, max_null_fraction = 0.5 }"


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFORM_")}
    env.update({"NO_COLOR": "1"})
    return env


def _stack(directory: Path, source: str, fmt: str, checked: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    body = f'  schema = {SCHEMA}\n  checks = {CHECKS}\n' if checked else ""
    (directory / "main.hcl").write_text(
        f'provider "local" {{}}\n\ndataset "d" {{\n  source = "{source}"\n'
        f'  format = "{fmt}"\n{body}}}\n')
    return directory


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _timed(command: list[str], **kwargs) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds, result) of one whole process."""
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(command, **kwargs)
    return time.perf_counter() - start, _children_cpu() - cpu, done


def _plan(stack: Path, rows: int | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of one whole `mlform plan` process (no state: the dataset is to
    be created); `rows`: what the plan must say."""
    took, cpu, done = _timed([*CLI, "-C", str(stack), "plan", "--format", "json"],
                             capture_output=True, text=True, env=_env(), timeout=1800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    plan = json.loads(done.stdout)
    assert not [d for d in plan.get("diagnostics", []) if d.get("severity") == "error"]
    if rows is not None:
        [change] = plan["resource_changes"]
        assert change["change"]["after"]["rows"] == rows, change
    return took, cpu


def _cat(path: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of `cat path > /dev/null`."""
    with open(os.devnull, "wb") as sink:
        took, cpu, done = _timed(["cat", str(path)], stdout=sink)
    assert done.returncode == 0
    return took, cpu


def _in_process(run) -> tuple[float, float, object]:
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = used.ru_utime + used.ru_stime
    start = time.perf_counter()
    found = run()
    took = time.perf_counter() - start
    used = resource.getrusage(resource.RUSAGE_SELF)
    return took, used.ru_utime + used.ru_stime - cpu, found


def _record_runs(bench: str, runs: list[tuple[float, float]], **extra) -> None:
    walls = sorted(w for w, _ in runs)
    record(bench, round(statistics.median(walls), 3), "s",
           range=[round(walls[0], 3), round(walls[-1], 3)],
           cpu_s=round(statistics.median(c for _, c in runs), 3), reps=len(runs), **extra)


def _forget_cache(stack: Path) -> None:
    (stack / ".mlform" / "cache" / "digests.json").unlink(missing_ok=True)


def _big_csv(path: Path, megabytes: int) -> int:
    lines = []
    for i in range(20_000):
        note = "" if i % 7 == 0 else f"note {i}"
        lines.append(f"{i},{i * 0.25:.2f},{'true' if i % 2 else 'no'},"
                     f"2024-05-{1 + i % 28:02d}T{i % 24:02d}:00:00Z,{note}\n")
    block = "".join(lines).encode()
    rows = 0
    with open(path, "wb") as fh:
        fh.write(b"id,amount,ok,at,note\n")
        while fh.tell() < megabytes * MB:
            fh.write(block)
            rows += len(lines)
    return rows


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    rows = _big_csv(root / "big.csv", BIG_MB)
    return root, rows


def test_one_big_csv(big):
    root, rows = big
    path = root / "big.csv"
    size = path.stat().st_size
    extra = {"mb": round(size / MB), "rows": rows}
    checked = _stack(root / "checked", "../big.csv", "csv")
    counted = _stack(root / "rows", "../big.csv", "csv", checked=False)
    other = _stack(root / "other", "../big.csv", "other", checked=False)
    _cat(path)                                          # warm the page cache
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in (
        "cat", "cold", "warm", "rows_cold", "other_cold")}
    for _ in range(REPS):                               # interleaved
        runs["cat"].append(_cat(path))
        _forget_cache(checked)
        runs["cold"].append(_plan(checked, rows))
        runs["warm"].append(_plan(checked, rows))
        _forget_cache(counted)
        runs["rows_cold"].append(_plan(counted, rows))
        _forget_cache(other)
        runs["other_cold"].append(_plan(other))
    cat_s = statistics.median(w for w, _ in runs["cat"])
    _record_runs("dataset_csv_cat_warm_page_cache", runs["cat"], **extra)
    _record_runs("dataset_csv_plan_cold", runs["cold"], target=round(2 * cat_s, 3), **extra)
    _record_runs("dataset_csv_plan_warm", runs["warm"], **extra)
    _record_runs("dataset_csv_plan_rows_only_cold", runs["rows_cold"], **extra)
    _record_runs("dataset_csv_plan_format_other_cold", runs["other_cold"], **extra)

    # in process, the parts of a cold plan's read
    def read() -> None:
        with open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass
    def joint() -> checks.DataProfile:
        with open(path, "rb", buffering=0) as fh:
            reader = digests.HashingReader(fh)
            found = checks.profile(path, "csv", TYPES, stream=reader)
            reader.finish()
        return found
    parts = {
        "read": read,
        "sha256": lambda: digests.hash_file(path),
        "pyarrow_parse": lambda: arrow_tables._read_csv(path),
        "rows_only": lambda: checks.count_rows(path, "csv"),
        "profile": lambda: checks.profile(path, "csv", TYPES),
        "profile_and_digest_one_read": joint,
    }
    for name, run in parts.items():
        took, cpu, found = _in_process(run)
        if isinstance(found, checks.DataProfile):
            assert found.rows == rows and not found.bad, found
        record(f"dataset_csv_in_process_{name}", round(took, 3), "s", cpu_s=round(cpu, 3),
               **extra)


def _tables(root: Path) -> tuple[Path, Path, int]:
    """The rows of a `TABLE_MB` csv as jsonl and as parquet."""
    import pyarrow.csv as pacsv
    import pyarrow.json  # noqa: F401
    import pyarrow.parquet as pq
    rows = _big_csv(root / "t.csv", TABLE_MB)
    table = pacsv.read_csv(root / "t.csv", convert_options=pacsv.ConvertOptions(
        column_types={name: "string" for name in ("at", "note")},
        strings_can_be_null=True))
    pq.write_table(table, root / "t.parquet")
    with open(root / "t.jsonl", "w", encoding="utf-8") as fh:
        for batch in table.to_batches(100_000):
            for row in batch.to_pylist():
                fh.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
    return root / "t.jsonl", root / "t.parquet", rows


def test_big_jsonl_and_parquet(tmp_path):
    jsonl, parquet, rows = _tables(tmp_path)
    for fmt, path in (("jsonl", jsonl), ("parquet", parquet)):
        extra = {"mb": round(path.stat().st_size / MB), "rows": rows}
        took, cpu, found = _in_process(lambda: checks.profile(path, fmt, TYPES))
        assert found.rows == rows and not found.bad, found
        record(f"dataset_{fmt}_in_process_profile", round(took, 3), "s", cpu_s=round(cpu, 3),
               **extra)
        stack = _stack(tmp_path / fmt, f"../{path.name}", fmt)
        runs = []
        for _ in range(max(1, REPS - 1)):
            _forget_cache(stack)
            runs.append(_plan(stack, rows))
        _record_runs(f"dataset_{fmt}_plan_cold", runs, **extra)


def test_directory_of_small_csv_files_one_changed(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    for i in range(FILES):
        (parts / f"{i:05d}.csv").write_text(
            "id,amount,ok,at,note\n" + "".join(
                f"{i * 10 + j},{j}.5,yes,2024-05-01,n{j}\n" for j in range(10)))
    checked = _stack(tmp_path / "checked", "../parts", "csv")
    as_dir = _stack(tmp_path / "dir", "../parts", "dir", checked=False)
    cold, _ = _plan(checked)
    (parts / "00042.csv").write_text("id,amount,ok,at,note\n1,2.5,no,2024-05-02,x\n")
    one_changed, _ = _plan(checked)
    dir_cold, _ = _plan(as_dir)
    (parts / "00043.csv").write_text("id,amount,ok,at,note\n1,2.5,no,2024-05-03,y\n")
    dir_changed, _ = _plan(as_dir)
    record("dataset_dir_plan_cold", round(cold, 3), "s", files=FILES)
    record("dataset_dir_plan_one_changed", round(one_changed, 3), "s", files=FILES)
    record("dataset_dir_format_dir_plan_cold", round(dir_cold, 3), "s", files=FILES)
    record("dataset_dir_format_dir_plan_one_changed", round(dir_changed, 3), "s", files=FILES)
