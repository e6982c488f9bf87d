"""Dataset checks at disk speed: `mlform plan` of a stack whose dataset declares checks.

Whole processes (`python -m mlform.cli plan`), each timed from start to exit:

- one generated csv (~200 MB, five typed columns, some blanks) with a schema and checks:
  cold (no digest cache: sha256 + the vectorized profile) and warm (the cache answers);
  the same file as `format = "other"` (digest only) is the floor; and, in process, the
  profile alone next to the time to read the file from a warm page cache;
- a directory of 2,000 small csv files with checks: cold, then warm after one file
  changed (the per-file profile cache reads that file only), against the same
  directory as `format = "dir"`.

Figures only: the asserts are about correctness (the checks pass, the rows are right).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlform.providers.kit import checks

from ._support import record

pytest.importorskip("pyarrow")

CLI = [sys.executable, "-m", "mlform.cli"]
MB = 1_000_000
BIG_MB = int(os.environ.get("MLFORM_BENCH_CSV_MB", "200"))
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


def _plan(stack: Path) -> float:
    """Seconds of one whole `mlform plan` process (no state: the dataset is to be created)."""
    start = time.perf_counter()
    done = subprocess.run([*CLI, "-C", str(stack), "plan", "--format", "json"],
                          capture_output=True, text=True, env=_env(), timeout=1800)
    took = time.perf_counter() - start
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    plan = json.loads(done.stdout)
    assert not [d for d in plan.get("diagnostics", []) if d.get("severity") == "error"]
    return took


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
    size = (root / "big.csv").stat().st_size
    checked = _stack(root / "checked", "../big.csv", "csv")
    other = _stack(root / "other", "../big.csv", "other", checked=False)
    (root / "big.csv").read_bytes()                     # warm the page cache
    start = time.perf_counter()
    with open(root / "big.csv", "rb") as fh:
        while fh.read(1 << 24):
            pass
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    prof = checks.profile(root / "big.csv", "csv", {"id": "int", "amount": "float", "ok": "bool",
                                                     "at": "datetime", "note": "str"})
    profile_s = time.perf_counter() - start
    assert prof.rows == rows and not prof.bad
    cold = _plan(checked)
    warm = _plan(checked)
    _forget_cache(other)
    floor = _plan(other)
    extra = {"mb": round(size / MB), "rows": rows}
    record("dataset_csv_read_warm_page_cache", round(read_s, 3), "s", **extra)
    record("dataset_csv_profile_in_process", round(profile_s, 3), "s",
           target=round(2 * read_s, 3), **extra)
    record("dataset_csv_plan_cold", round(cold, 3), "s", **extra)
    record("dataset_csv_plan_warm", round(warm, 3), "s", **extra)
    record("dataset_csv_plan_format_other_cold", round(floor, 3), "s", **extra)


def test_directory_of_small_csv_files_one_changed(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    for i in range(FILES):
        (parts / f"{i:05d}.csv").write_text(
            "id,amount,ok,at,note\n" + "".join(
                f"{i * 10 + j},{j}.5,yes,2024-05-01,n{j}\n" for j in range(10)))
    checked = _stack(tmp_path / "checked", "../parts", "csv")
    as_dir = _stack(tmp_path / "dir", "../parts", "dir", checked=False)
    cold = _plan(checked)
    (parts / "00042.csv").write_text("id,amount,ok,at,note\n1,2.5,no,2024-05-02,x\n")
    one_changed = _plan(checked)
    dir_cold = _plan(as_dir)
    (parts / "00043.csv").write_text("id,amount,ok,at,note\n1,2.5,no,2024-05-03,y\n")
    dir_changed = _plan(as_dir)
    record("dataset_dir_plan_cold", round(cold, 3), "s", files=FILES)
    record("dataset_dir_plan_one_changed", round(one_changed, 3), "s", files=FILES)
    record("dataset_dir_format_dir_plan_cold", round(dir_cold, 3), "s", files=FILES)
    record("dataset_dir_format_dir_plan_one_changed", round(dir_changed, 3), "s", files=FILES)
