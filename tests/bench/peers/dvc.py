"""DVC beside mlform's `local` provider: the decision that training must re-run after one
file of its data changed, as the whole process a user waits for.

The work, the same for both tools and on the same bytes:

- ``dir``: a directory of 2,000 csv files of 10 rows each (``--quick``: 200), generated
  per run;
- ``bigcsv``: one csv of 1 GB (``--quick``: 30 MB), five typed columns (int, float,
  bool, datetime, str with blanks), generated once per machine by a seeded generator
  into ``.tools/peers/dvc-data/`` and copied into the run's work directory.

Each feeds a training step.  DVC: a git-less DVC repository (``dvc init --no-scm``;
analytics and the update check off, so no network call is timed) whose ``dvc.yaml`` has
a stage ``train`` with ``deps`` the data and ``train.py`` and an ``out``; ``dvc repro``
runs it once, untimed, so ``dvc.lock`` records the hashes; the timed command is
``dvc status --json``, whose answer must name the data dependency of ``train`` as
modified.  mlform: a stack with a ``dataset`` whose ``source`` is the same data
(``format = "csv"``, a ``schema`` and ``checks`` declared) and a ``pipeline`` consuming
it (a trivial ``train.py``); ``mlform apply --auto-approve`` once, untimed; the timed
command is ``mlform plan --format json``, whose answer must update ``pipeline.train``
because ``dataset.train``'s content changed.  So neither figure is of a no-op.  Both
tools' data is the DVC repository's ``data/`` (the stack points at it), so both read the
same files.

One measurement (one repetition of one figure) is, for one tool:

1. warm only: the timed command run once, untimed, so that the tool's caches hold every
   file as it is now;
2. the edit: one row appended to one csv file of the directory (a different file each
   time), or, in the big file, one digit of one id changed in place (same length, a
   different line each time, from the middle on);
3. cold only: the tool's own caches removed: DVC's site cache (its hash/state and link
   databases, kept in ``DVC_SITE_CACHE_DIR``, pointed into the work directory) and the
   repository's ``.dvc/tmp``; mlform's digest and profile cache, ``<stack>/.mlform/cache``.
   What is state, not cache, stays: ``dvc.lock`` and ``.dvc/cache`` (DVC's object
   store), mlform's state and its content store;
4. the command, timed from spawn to exit (with its peak RSS).

So *warm* is the tool knowing everything but the one file just edited, and *cold* is the
tool knowing nothing but its recorded state.  The operating system's page cache is warm
in both (the files were just written and read); neither tool is given a cold disk.
Dropping the page cache needs root (``/proc/sys/vm/drop_caches``), which a benchmark
run as a user does not have, so *cold* means the tools' caches, not the disk's.
In the big-file case the edited file is the whole dataset, so warm and cold differ only
by what else the tools cache.  The figures run interleaved (``_common.interleaved``);
each line carries the CPU seconds (user + sys) of both tools beside the wall times,
steadier than wall time on a loaded machine.

Besides the compared figures: the time to read the big file from a warm page cache
(16 MiB reads) and the in-process profile of it with the declared schema
(``checks.profile``), whose target is within 2 x that read.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from . import _common

DVC = "dvc==3.67.1"
DATA = _common.PEERS / "dvc-data"
WORK = _common.PEERS / "dvc-work"
MB = 1_000_000
TARGET = "ratio <= 0.5"
GENERATOR = "v2"        # in the big file's name: a changed generator makes a new file
HEADER = "id,amount,ok,at,note"
SCHEMA = {"id": "int", "amount": "float", "ok": "bool", "at": "datetime", "note": "str"}

DVC_TRAIN = """\
# The training step of the DVC stage: writes its one out.
import pathlib
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/model.txt").write_text("model")
"""

MLFORM_TRAIN = """\
# The training step of the mlform pipeline: the run contract's two required outputs.
import json, os, pathlib
out = pathlib.Path(os.environ["MLFORM_OUTPUT_DIR"])
(out / "model.pt").write_bytes(b"model")
(out / "metrics.json").write_text(json.dumps({"accuracy": 1.0}))
"""


def build() -> None:
    _common.peer_venv("dvc", [DVC])


def run(reps: int, quick: bool) -> None:
    files = 200 if quick else 2_000
    megabytes = 30 if quick else 1_000
    if quick:
        # A check of the harness: two repetitions run every path (the warm case's first
        # run before any edit, the rotated order); more would only repeat them.
        reps = min(reps, 2)
    big = _big_csv(megabytes)
    if WORK.exists():
        shutil.rmtree(WORK)
    try:
        workloads = {
            "dir": _Workload(WORK / "dir", "data/parts", _directory_of_csv(files)),
            "bigcsv": _Workload(WORK / "bigcsv", "data/big.csv", _copy_of(big)),
        }
        cases: dict[str, Callable[[int], float]] = {}
        runs: dict[str, list[_common.Run]] = {}
        for name, work in workloads.items():
            for temp in ("cold", "warm"):
                for tool in ("mlform", "dvc"):
                    key = f"{tool}.{name}.{temp}"
                    runs[key] = []
                    cases[key] = _case(work, tool, temp == "cold", runs[key])
        _common.interleaved(reps, cases)
        sizes = {"dir": {"files": files}, "bigcsv": {"mb": round(big.stat().st_size / MB)}}
        for name in workloads:
            for temp in ("cold", "warm"):
                ours, theirs = runs[f"mlform.{name}.{temp}"], runs[f"dvc.{name}.{temp}"]
                common = dict(**sizes[name], dvc=DVC.split("==")[1],
                              measured="whole process: mlform plan --format json vs dvc "
                                       "status --json after one edit", caches=temp)
                _common.compare(f"dvc.rerun_decision.{name}.{temp}", "dvc",
                                [r.seconds for r in ours], [r.seconds for r in theirs],
                                "s", target=TARGET, **common,
                                mlform_cpu_s=_median_cpu(ours), peer_cpu_s=_median_cpu(theirs))
                _common.compare(f"dvc.rerun_decision.{name}.{temp}.peak_rss", "dvc",
                                [r.peak_rss for r in ours], [r.peak_rss for r in theirs],
                                "bytes", **common)
        # In a child process too: the profile's memory would otherwise count in the peak
        # RSS of every process this one starts later (other peers of the same run).
        subprocess.run([sys.executable, "-c", f"from {__name__} import _read_and_profile; "
                        f"_read_and_profile({str(workloads['bigcsv'].data)!r}, {reps})"],
                       cwd=_common.REPO, check=True)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


def _median_cpu(runs: list[_common.Run]) -> float:
    return round(statistics.median(r.cpu_seconds for r in runs), 3)


class _Workload:
    """One piece of data inside a git-less DVC repository (``repo/``), the DVC stage and
    the mlform stack (``stack/``) over it, both recorded once (untimed), and the edits."""

    def __init__(self, root: Path, data: str, make: Callable[[Path], None]) -> None:
        self.root = root
        self.repo, self.stack = root / "repo", root / "stack"
        self.data = self.repo / data
        self.edits = 0
        self.data.parent.mkdir(parents=True)
        make(self.data)
        self.site_cache = root / "dvc-site-cache"
        bin_dir = _common.PEERS / "dvc" / "bin"
        # The site cache inside the work directory: its removal is exact, and nothing of
        # the run is left in /var/tmp/dvc.
        self.dvc_env = {"DVC_SITE_CACHE_DIR": str(self.site_cache), "DVC_NO_ANALYTICS": "1",
                        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.dvc = [str(bin_dir / "dvc")]
        self.mlform_env = {"NO_COLOR": "1"}
        self._init_dvc(data)
        self._init_mlform(data)

    def _init_dvc(self, data: str) -> None:
        (self.repo / "train.py").write_text(DVC_TRAIN)
        (self.repo / "dvc.yaml").write_text(
            "stages:\n  train:\n    cmd: python train.py\n"
            f"    deps: [{data}, train.py]\n    outs: [out]\n")
        for argv in (["init", "-q", "--no-scm"], ["config", "core.analytics", "false"],
                     ["config", "core.check_update", "false"], ["repro", "-q"]):
            _common.whole_process([*self.dvc, *argv], cwd=self.repo, env=self.dvc_env)

    def _init_mlform(self, data: str) -> None:
        self.stack.mkdir()
        (self.stack / "train.py").write_text(MLFORM_TRAIN)
        schema = ", ".join(f'{k} = "{v}"' for k, v in SCHEMA.items())
        (self.stack / "main.hcl").write_text(f"""\
provider "local" {{}}

dataset "train" {{
  source = "../repo/{data}"
  format = "csv"
  schema = {{ {schema} }}
  checks = {{ min_rows = 1, max_null_fraction = 0.5 }}
}}

pipeline "train" {{
  inputs     = {{ train = dataset.train }}
  entrypoint = "train.py"
}}
""")
        _common.whole_process([str(_common.MLFORM), "apply", "--auto-approve"],
                              cwd=self.stack, env=self.mlform_env)

    def edit(self) -> None:
        """Change one file of the data, never back to an earlier content."""
        k, self.edits = self.edits, self.edits + 1
        if self.data.is_dir():
            files = sorted(self.data.iterdir())
            with open(files[k % len(files)], "a", encoding="utf-8") as fh:
                fh.write(f"{10**9 + k},{k}.25,true,2024-06-01T00:00:00,edit {k}\n")
            return
        size = self.data.stat().st_size
        with open(self.data, "r+b") as fh:
            # From the middle on, a new line each time (lines are far shorter than 4099).
            fh.seek(size // 2 + k * 4099)
            window = fh.read(4096)
            start = window.index(b"\n") + 1
            digit = window.index(b",", start) - 1    # the last digit of the line's id
            old = window[digit:digit + 1]
            if not old.isdigit():
                raise RuntimeError(f"{self.data}: no id at byte {fh.tell()}")
            fh.seek(size // 2 + k * 4099 + digit)
            fh.write(str((int(old) + 1) % 10).encode())

    def forget(self, tool: str) -> None:
        """Remove the tool's own caches (its state stays)."""
        if tool == "dvc":
            shutil.rmtree(self.site_cache, ignore_errors=True)
            shutil.rmtree(self.repo / ".dvc" / "tmp", ignore_errors=True)
        else:
            shutil.rmtree(self.stack / ".mlform" / "cache", ignore_errors=True)

    def decide(self, tool: str, changed: bool = True) -> _common.Run:
        """The timed command; when the data changed, checks from the tool's own JSON
        answer that it decided the training must re-run, and why."""
        if tool == "dvc":
            run = _common.whole_process([*self.dvc, "status", "--json"], cwd=self.repo,
                                        env=self.dvc_env)
            if changed:
                _dvc_says_modified(run.output, str(self.data.relative_to(self.repo)))
        else:
            run = _common.whole_process([str(_common.MLFORM), "plan", "--format", "json"],
                                        cwd=self.stack, env=self.mlform_env)
            if changed:
                _mlform_says_rerun(run.output)
        return run


def _dvc_says_modified(output: str, dep: str) -> None:
    """``dvc status --json``: ``{"train": [{"changed deps": {"<dep>": "modified"}}]}``."""
    try:
        status = _json_in(output)
        changed = {k: v for entry in status.get("train", []) if isinstance(entry, dict)
                   for k, v in entry.get("changed deps", {}).items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise RuntimeError(f"dvc status --json: not the expected JSON ({exc}):\n{output}")
    if changed.get(dep) != "modified":
        raise RuntimeError(f"dvc status did not report {dep} modified:\n{output}")


def _json_in(output: str) -> object:
    """The JSON document in a command's output (stderr is in it too: a warning line may
    come before or after the document)."""
    decoder = json.JSONDecoder()
    at = 0
    while (at := output.find("{", at)) >= 0:
        if at == 0 or output[at - 1] == "\n":
            try:
                return decoder.raw_decode(output, at)[0]
            except ValueError:
                pass
        at += 1
    raise ValueError("no JSON object at the start of a line")


def _mlform_says_rerun(output: str) -> None:
    """``mlform plan --format json``: ``pipeline.train`` updated, with the dataset's
    changed content as its reason (and ``dataset.train`` updated for its content)."""
    try:
        plan = _json_in(output)
        changes = {c["address"]: c for c in plan["resource_changes"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"mlform plan --format json: not the expected JSON ({exc}):\n"
                           f"{output[-4000:]}")
    errors = [d for d in plan.get("diagnostics", []) if d.get("severity") == "error"]
    pipeline, dataset = changes.get("pipeline.train", {}), changes.get("dataset.train", {})
    reasons = " ".join(pipeline.get("reasons", []))
    if errors or pipeline.get("change", {}).get("actions") != ["update"] \
            or not str(pipeline.get("action_reason", "")).startswith("rerun") \
            or "dataset.train content changed" not in reasons \
            or dataset.get("action_reason") != "update_because_content":
        raise RuntimeError("mlform plan did not re-run pipeline.train for dataset.train's "
                           f"content:\n{output[-4000:]}")


def _case(work: _Workload, tool: str, cold: bool,
          runs: list[_common.Run]) -> Callable[[int], float]:
    def one(rep: int) -> float:
        if not cold:
            # The caches now hold every file as it is (the data may not differ yet from
            # what the tool recorded: before the first edit).
            work.decide(tool, changed=False)
        work.edit()
        if cold:
            work.forget(tool)
        run = work.decide(tool)
        runs.append(run)
        return run.seconds
    return one


def _directory_of_csv(files: int) -> Callable[[Path], None]:
    def make(parts: Path) -> None:
        parts.mkdir()
        for i in range(files):
            rows = "".join(
                f"{i * 10 + j},{(i * 10 + j) * 0.25:.2f},{'true' if j % 2 else 'false'},"
                f"2024-05-{1 + j % 28:02d}T{j:02d}:00:00,{'' if j == 3 else f'n{j}'}\n"
                for j in range(10))
            (parts / f"{i:05d}.csv").write_text(f"{HEADER}\n{rows}")
    return make


def _copy_of(source: Path) -> Callable[[Path], None]:
    def make(target: Path) -> None:
        # A copy, not a link: the edits write into it.
        shutil.copyfile(source, target)
    return make


def _big_csv(megabytes: int) -> Path:
    """The big file, made once per machine: seeded, so every machine has the same bytes.
    Written by a child process: a peak RSS read with wait4 counts the memory the parent
    ever held (Linux carries it across the child's vfork + exec), so this process stays
    as small as it was."""
    path = DATA / f"big-{megabytes}mb-{GENERATOR}.csv"
    if not path.exists():
        subprocess.run([sys.executable, "-c", f"from {__name__} import _write_big_csv; "
                        f"_write_big_csv({str(path)!r}, {megabytes})"],
                       cwd=_common.REPO, check=True)
    return path


def _write_big_csv(target: str, megabytes: int) -> None:
    path = Path(target)
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    DATA.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    rng = np.random.default_rng(11)
    notes = np.array(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"])
    first, row_bytes = 0, 64.0      # a guess until the first chunk is written
    start = np.datetime64("2024-01-01T00:00:00", "s")
    options = pcsv.WriteOptions(include_header=False, quoting_style="none")
    with open(tmp, "wb") as fh:
        fh.write(f"{HEADER}\n".encode())
        while (left := megabytes * MB - fh.tell()) > 0:
            # Chunks of up to 500,000 rows; the last one sized to end near the target.
            chunk = max(1, min(500_000, int(left / row_bytes) + 1))
            at_start = fh.tell()
            ids = np.arange(first, first + chunk, dtype=np.int64)
            note = pa.array(notes[rng.integers(0, len(notes), chunk)],
                            mask=rng.random(chunk) < 0.05)
            at = pa.array(start + rng.integers(0, 365 * 86_400, chunk).astype("timedelta64[s]"))
            table = pa.table({
                "id": ids,
                "amount": np.round(rng.normal(100.0, 40.0, chunk), 2),
                "ok": rng.random(chunk) < 0.5,
                "at": pc.strftime(at, format="%Y-%m-%dT%H:%M:%S"),
                "note": note,
            })
            pcsv.write_csv(table, fh, options)
            first += chunk
            row_bytes = (fh.tell() - at_start) / chunk
    tmp.rename(path)


def _read_and_profile(target: str, reps: int) -> None:
    """The issue's ceiling for the checks: reading the file from a warm page cache; and
    the profile the checks need, in process."""
    path = Path(target)
    def read() -> float:
        t0 = time.perf_counter()
        with open(path, "rb", buffering=0) as fh:
            while fh.read(1 << 24):
                pass
        return time.perf_counter() - t0

    read()                                  # warm the page cache
    reads = [read() for _ in range(max(reps, 1))]
    mb = round(path.stat().st_size / MB)
    read_s = statistics.median(reads)
    _common.report("dvc.bigcsv.read_warm_page_cache", read_s, "s", mb=mb, reps=len(reads),
                   how="16 MiB reads, in process")
    from mlform.providers.kit import checks

    profiles = []
    for _ in range(max(reps, 1)):
        t0 = time.perf_counter()
        prof = checks.profile(path, "csv", SCHEMA)
        profiles.append(time.perf_counter() - t0)
        if prof.bad:
            raise RuntimeError(f"{path}: the profile found bad values: {prof.bad}")
    _common.report("dvc.bigcsv.profile_in_process", statistics.median(profiles), "s", mb=mb,
                   reps=len(profiles), target=round(2 * read_s, 4),
                   how="mlform.providers.kit.checks.profile with the schema, in process",
                   python=sys.version.split()[0])
