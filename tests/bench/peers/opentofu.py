"""mlform beside OpenTofu on the same generated graph: "for_each chains, depth 5".

Both tools get five blocks, each ``for_each`` over the one before, N/5 keys per level and
N instances in all.  mlform's is the benchmarks' own depth-5 stack
(``tests/bench/_support.layered_stack``: dataset -> pipeline -> model -> endpoint ->
monitor on the memory provider, zero latency); OpenTofu's is the same graph of
``terraform_data`` resources (built into tofu, so ``tofu init`` downloads nothing: it
runs without any network), each instance's ``input`` taken from the upstream instance's
``output`` and the fifth level's also from the first, as mlform's monitor takes its
endpoint and its baseline dataset.  Both keep local state.

Figures, each a whole process with its peak RSS, the two tools interleaved:

- first apply into a fresh directory (tofu's one-off ``init`` is not timed; its time is
  reported on its own line);
- no-op plan, refresh included (mlform's default; tofu is given ``-refresh=true``, its
  default too), checked to report no changes;
- plan after one key's input is edited in the spec, checked to show exactly the one
  chain of five changes, the spec restored after;
- optionally (``MLFORM_PEERS_100K=1``) mlform's no-op plan at 100,000 instances, with no
  peer beside it: creating those instances first takes minutes.

Every figure comes as wall seconds, peak RSS and CPU seconds (user + sys).  Sizes are
1,000 and 10,000 unless ``MLFORM_PEERS_TOFU_SIZES`` lists others.  One tofu command may
run ``MLFORM_PEERS_TOFU_LIMIT_S`` (default 300 s): tofu's time grows faster than
quadratically with the instances of a ``for_each`` over another resource
(opentofu/opentofu#3628), and at 10,000 its first apply had not finished planning after
36 minutes on 2 cores; past the limit the line carries the limit as tofu's lower bound
and that size's plans are mlform's alone.

OpenTofu is built once per machine from the Go module proxy (``build()``); its
``go.mod`` holds a ``replace`` directive, which ``go install pkg@version`` refuses, so the
module is downloaded with ``go mod download`` and built from the module cache instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Callable

from .._support import layered_stack
from ._common import MLFORM, PEERS, Run, compare, interleaved, report, whole_process

TOFU_MODULE = "github.com/opentofu/opentofu"
TOFU_VERSION = "v1.12.6"      # the newest the Go module proxy served; go.mod says go 1.26.6
ROOT = PEERS / "opentofu"
TOFU = ROOT / "bin" / "tofu"
STAMP = ROOT / ".built"
WORK = ROOT / "work"
PARALLELISM = 10              # tofu's default; mlform's default is the same, both passed
DEPTH = 5
EDITED_KEY_INDEX = 7          # the key whose input the "one change" plan edits

TOFURC = ROOT / "tofurc"
# tofu reads an empty CLI configuration of its own (a user's may name a plugin cache or
# mirrors; this machine's TF_CLI_CONFIG_FILE names a file that is not there, and tofu
# warns on every command), takes no extra arguments from the caller's TF_CLI_ARGS*
# (an empty value adds none), and knows it runs unattended.
TOFU_ENV = {"TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1",
            "TF_CLI_CONFIG_FILE": str(TOFURC), "TF_CLI_ARGS": "", "TF_CLI_ARGS_init": "",
            "TF_CLI_ARGS_plan": "", "TF_CLI_ARGS_apply": ""}
# The longest one tofu command may run (MLFORM_PEERS_TOFU_LIMIT_S); past it the figure is
# a lower bound and that size's plans are measured for mlform alone.
TOFU_LIMIT_S = float(os.environ.get("MLFORM_PEERS_TOFU_LIMIT_S", "300"))
MLFORM_FLAGS = ["--parallelism", str(PARALLELISM)]
TOFU_FLAGS = ["-input=false", "-no-color", f"-parallelism={PARALLELISM}"]


# --------------------------------------------------------------------------- build

def build() -> Path:
    """Build the tofu CLI once per machine into .tools/peers/opentofu/bin/tofu."""
    want = f"{TOFU_MODULE}@{TOFU_VERSION}"
    TOFURC.parent.mkdir(parents=True, exist_ok=True)
    TOFURC.write_text("# empty: the benchmark uses no plugin cache, mirror or credentials\n")
    if TOFU.exists() and STAMP.exists() and STAMP.read_text() == want:
        return TOFU
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("the OpenTofu peer needs the go command (Go >= 1.26.6)")
    env = {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false"}
    out = subprocess.run([go, "mod", "download", "-json", want], env=env, check=True,
                         capture_output=True, text=True)
    source = Path(json.loads(out.stdout)["Dir"])
    TOFU.parent.mkdir(parents=True, exist_ok=True)
    # The release flags: no symbol table, and dev=no so the binary calls itself a
    # release rather than "-dev".
    ldflags = f"-s -w -X {TOFU_MODULE}/version.dev=no"
    print(f"# opentofu: go build {want} (several minutes on 2 cores, once)",
          file=sys.stderr, flush=True)
    subprocess.run([go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(TOFU),
                    "./cmd/tofu"], cwd=source, env=env, check=True)
    STAMP.write_text(want)
    return TOFU


# --------------------------------------------------------------------------- specs

# layered_stack's key format and its first level's input line, which the edited spec
# rewrites for one key (the same edit in both tools' specs).
KEY_FORMAT = "k%04d"
SOURCE_LINE = 'source   = "s3://bench/${each.key}.csv"'


def _edited_key() -> str:
    return KEY_FORMAT % EDITED_KEY_INDEX


def _source_expr(edited: bool) -> str:
    """The first level's input; the edited spec gives one key a different value."""
    plain = '"s3://bench/${each.key}.csv"'
    if not edited:
        return plain
    key = _edited_key()
    return f'each.key == "{key}" ? "s3://bench/{key}-v2.csv" : {plain}'


def _tofu_keys(width: int) -> str:
    """The keys layered_stack gives every level, as tofu reads them: its range() stops at
    1,024 elements, so wider levels are built in chunks of 1,000 and flattened."""
    if width <= 1000:
        return f'[for i in range({width}) : format("{KEY_FORMAT}", i)]'
    if width % 1000:
        raise ValueError(f"width {width} above 1,000 must be a multiple of 1,000")
    return (f'flatten([for hi in range({width // 1000}) : '
            f'[for lo in range(1000) : format("{KEY_FORMAT}", hi * 1000 + lo)]])')


def tofu_spec(width: int, edited: bool = False) -> str:
    """layered_stack's graph as terraform_data resources: each instance's input is built
    from the upstream instance's output, and the fifth level's also from the first, as
    mlform's monitor takes its endpoint and its baseline dataset."""
    return f'''resource "terraform_data" "l1" {{
  for_each = toset({_tofu_keys(width)})
  input    = {_source_expr(edited)}
}}

resource "terraform_data" "l2" {{
  for_each = terraform_data.l1
  input    = {{ train = each.value.output, entrypoint = "train.py", key = each.key }}
}}

resource "terraform_data" "l3" {{
  for_each = terraform_data.l2
  input    = {{ artifact = each.value.output }}
}}

resource "terraform_data" "l4" {{
  for_each = terraform_data.l3
  input    = {{ model = each.value.output }}
}}

resource "terraform_data" "l5" {{
  for_each = terraform_data.l4
  input = {{
    endpoint = each.value.output
    baseline = terraform_data.l1[each.key].output
    checks   = [{{ metric = "psi", threshold = 0.2 }}]
  }}
}}
'''


def _write_mlform(directory: Path, width: int, edited: bool = False) -> None:
    """The benchmarks' own depth-5 stack (tests/bench/_support.layered_stack), zero
    latency; the edited spec rewrites its first level's input for one key."""
    layered_stack(directory, width, latency_ms=0)
    if edited:
        spec = directory / "main.hcl"
        text = spec.read_text()
        if text.count(SOURCE_LINE) != 1:
            raise AssertionError(f"layered_stack no longer has the line {SOURCE_LINE!r}")
        spec.write_text(text.replace(SOURCE_LINE, f"source   = {_source_expr(True)}"))


def _write_tofu(directory: Path, width: int, edited: bool = False) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.tf").write_text(tofu_spec(width, edited))


def _fresh(directory: Path) -> Path:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


# --------------------------------------------------------------------------- runs

def _mlform(args: list[str], cwd: Path) -> Run:
    return whole_process([str(MLFORM), "--no-color", *args], cwd=cwd)


class TofuTooSlow(Exception):
    """A tofu command ran past TOFU_LIMIT_S and was killed."""


def _tofu(args: list[str], cwd: Path) -> Run:
    """tofu under coreutils ``timeout``, so that a size it cannot finish ends as a lower
    bound rather than hours: its evaluation of a ``for_each`` over another resource's
    instances grows faster than quadratically with their number (opentofu/opentofu#3628;
    here 16 CPU-s to plan 1,000 new instances, 88 to plan 2,000).  ``wait4`` on
    ``timeout`` still reads tofu's CPU time and peak RSS: a reaped child's count in its
    parent's."""
    argv = ["timeout", "--signal=KILL", f"{TOFU_LIMIT_S:g}", str(TOFU), *args]
    run = whole_process(argv, cwd=cwd, env=TOFU_ENV, check=False)
    # timeout exits 124, or with KILL sends it to its own process group too and so dies
    # of it (-9 here, 137 from a shell).
    if run.returncode in (124, 137, -9):
        raise TofuTooSlow(f"tofu {args[0]} ran past {TOFU_LIMIT_S:g} s")
    if run.returncode != 0:
        raise RuntimeError(f"tofu {' '.join(args)} exited {run.returncode}:\n"
                           f"{run.output[-4000:]}")
    return run


# Both tools print the same summary lines and the same "# ADDRESS will be ..." headers.
_PLAN = re.compile(r"Plan: (\d+) to add, (\d+) to change, (\d+) to destroy")
_APPLY = re.compile(r"Apply complete! Resources: (\d+) added, (\d+) changed, (\d+) destroyed")
_HEADER = re.compile(r"^\s*# (\S+) will be ", re.MULTILINE)


def _counts(tool: str, run: Run, pattern: re.Pattern[str]) -> tuple[int, ...]:
    match = pattern.search(run.output)
    if match is None:
        raise AssertionError(f"{tool} printed no summary line:\n{run.output[-2000:]}")
    return tuple(int(g) for g in match.groups())


def _check_apply(tool: str, run: Run, total: int) -> None:
    if _counts(tool, run, _APPLY) != (total, 0, 0):
        raise AssertionError(f"{tool} apply did not add {total}:\n{run.output[-2000:]}")


def _check_noop(tool: str, run: Run) -> None:
    if "No changes." not in run.output or _HEADER.search(run.output):
        raise AssertionError(f"{tool} no-op plan shows changes:\n{run.output[-2000:]}")


def _check_one_chain(tool: str, run: Run) -> None:
    """Exactly the edited key's instance on each of the five levels is updated."""
    key = f'["{_edited_key()}"]'
    changed = _HEADER.findall(run.output)
    if (_counts(tool, run, _PLAN) != (0, DEPTH, 0) or len(changed) != DEPTH
            or not all(address.endswith(key) for address in changed)):
        raise AssertionError(f"{tool} plan after one edit is not one chain of {DEPTH}: "
                             f"{changed}\n{run.output[-2000:]}")


# --------------------------------------------------------------------------- figures

def _first_apply(total: int, reps: int, **tags) -> bool:
    """Each repetition applies into a fresh directory; tofu's init runs first, untimed.
    The directories of the last repetition stay for the plan figures.  Returns whether
    tofu finished (once it runs past the limit it is not started again at this size)."""
    width = total // DEPTH
    runs: dict[str, list[Run]] = {"mlform": [], "tofu": []}
    inits: list[float] = []
    too_slow: list[str] = []

    def ours(rep: int) -> float:
        directory = _fresh(WORK / f"mlform-{total}")
        _write_mlform(directory, width)
        run = _mlform(["apply", "--auto-approve", *MLFORM_FLAGS], directory)
        _check_apply("mlform", run, total)
        runs["mlform"].append(run)
        return run.seconds

    def theirs(rep: int) -> float:
        if too_slow:
            return TOFU_LIMIT_S
        directory = _fresh(WORK / f"tofu-{total}")
        _write_tofu(directory, width)
        try:
            inits.append(_tofu(["init", "-input=false", "-no-color"], directory).seconds)
            run = _tofu(["apply", "-auto-approve", *TOFU_FLAGS], directory)
        except TofuTooSlow as exc:
            too_slow.append(str(exc))
            return TOFU_LIMIT_S
        _check_apply("tofu", run, total)
        runs["tofu"].append(run)
        return run.seconds

    interleaved(reps, {"mlform": ours, "opentofu": theirs})
    _compare_runs("first_apply", total, runs, **tags)
    if inits:
        report(f"opentofu.tofu_init.{total}", statistics.median(inits), "s",
               peer="opentofu", reps=len(inits),
               range=[round(min(inits), 4), round(max(inits), 4)],
               note="tofu init before each first apply, not in the apply figure", **tags)
    return not too_slow


def _plans(total: int, reps: int, tofu: bool = True, **tags) -> None:
    """No-op plan and plan after one edit, on the directories the last apply left
    (mlform's alone when ``tofu`` is false: its apply did not finish)."""
    width = total // DEPTH
    ours_dir, theirs_dir = WORK / f"mlform-{total}", WORK / f"tofu-{total}"
    noop: dict[str, list[Run]] = {"mlform": [], "tofu": []}
    edit: dict[str, list[Run]] = {"mlform": [], "tofu": []}

    def case(tool: str, write: Callable[..., None], directory: Path,
             plan: Callable[[Path], Run], edited: bool) -> Callable[[int], float]:
        def measure(rep: int) -> float:
            if edited:
                write(directory, width, edited=True)
            try:
                run = plan(directory)
            finally:
                if edited:
                    write(directory, width)
            if edited:
                _check_one_chain(tool, run)
            else:
                _check_noop(tool, run)
            (edit if edited else noop)[tool].append(run)
            return run.seconds
        return measure

    def ours(directory: Path) -> Run:
        return _mlform(["plan", *MLFORM_FLAGS], directory)

    def theirs(directory: Path) -> Run:
        return _tofu(["plan", "-refresh=true", *TOFU_FLAGS], directory)

    cases = {
        "mlform.noop": case("mlform", _write_mlform, ours_dir, ours, False),
        "opentofu.noop": case("tofu", _write_tofu, theirs_dir, theirs, False),
        "mlform.edit": case("mlform", _write_mlform, ours_dir, ours, True),
        "opentofu.edit": case("tofu", _write_tofu, theirs_dir, theirs, True),
    }
    interleaved(reps, {name: measure for name, measure in cases.items()
                       if tofu or name.startswith("mlform.")})
    _compare_runs("noop_plan", total, noop, refresh=True, **tags)
    _compare_runs("one_change_plan", total, edit, refresh=True, changes=DEPTH, **tags)


def _compare_runs(name: str, total: int, runs: dict[str, list[Run]], **extra) -> None:
    ours, theirs = runs["mlform"], runs["tofu"]
    common = {"resources": total, "depth": DEPTH, "parallelism": PARALLELISM,
              "peer_version": TOFU_VERSION, **extra}
    if not theirs:
        # tofu did not finish: mlform's figures alone, with the bound tofu ran past.
        for suffix, unit, values in (("", "s", [r.seconds for r in ours]),
                                     (".peak_rss", "bytes", [r.peak_rss for r in ours]),
                                     (".cpu", "s", [r.cpu_seconds for r in ours])):
            report(f"opentofu.{name}.{total}{suffix}", statistics.median(values), unit,
                   peer="opentofu", peer_value=None, peer_lower_bound_s=TOFU_LIMIT_S,
                   reps=len(values), range=[round(min(values), 4), round(max(values), 4)],
                   note=f"OpenTofu's first apply ran past {TOFU_LIMIT_S:g} s and was "
                        "stopped; mlform alone", **common)
        return
    compare(f"opentofu.{name}.{total}", "opentofu", [r.seconds for r in ours],
            [r.seconds for r in theirs], "s", **common)
    compare(f"opentofu.{name}.{total}.peak_rss", "opentofu", [r.peak_rss for r in ours],
            [r.peak_rss for r in theirs], "bytes", **common)
    compare(f"opentofu.{name}.{total}.cpu", "opentofu", [r.cpu_seconds for r in ours],
            [r.cpu_seconds for r in theirs], "s", **common, note="user + sys CPU time")


def _mlform_100k(reps: int) -> None:
    """mlform alone: the no-op plan of 100,000 instances (its own target, <= 10 s)."""
    total = 100_000
    directory = _fresh(WORK / f"mlform-{total}")
    _write_mlform(directory, total // DEPTH)
    setup = _mlform(["apply", "--auto-approve", *MLFORM_FLAGS], directory)
    _check_apply("mlform", setup, total)
    report(f"opentofu.mlform_apply.{total}", setup.seconds, "s", reps=1,
           note="the apply that sets up the 100k no-op plan; no peer")
    runs = []
    for _ in range(max(reps, 1)):
        run = _mlform(["plan", *MLFORM_FLAGS], directory)
        _check_noop("mlform", run)
        runs.append(run)
    seconds = [r.seconds for r in runs]
    report(f"opentofu.mlform_noop_plan.{total}", statistics.median(seconds), "s",
           target=10, reps=len(runs), range=[round(min(seconds), 4), round(max(seconds), 4)],
           note="no peer")
    report(f"opentofu.mlform_noop_plan.{total}.peak_rss",
           statistics.median([r.peak_rss for r in runs]), "bytes", reps=len(runs),
           note="no peer")
    shutil.rmtree(directory)


def run(reps: int, quick: bool) -> None:
    """Every figure at 1,000 and 10,000 instances, or the sizes listed (comma-separated)
    in ``MLFORM_PEERS_TOFU_SIZES``; 100 instances and at most 2 repetitions with
    ``quick``, whose lines say ``"quick": true``: a check of the harness, not a figure."""
    if quick:
        sizes, reps = (100,), min(reps, 2)
    else:
        listed = os.environ.get("MLFORM_PEERS_TOFU_SIZES", "")
        sizes = tuple(int(n) for n in listed.split(",") if n.strip()) or (1_000, 10_000)
    for total in sizes:
        if total % DEPTH:
            raise ValueError(f"{total} resources do not make {DEPTH} equal levels")
        finished = _first_apply(total, reps, quick=quick)
        _plans(total, reps, tofu=finished, quick=quick)
    if not quick and os.environ.get("MLFORM_PEERS_100K") == "1":
        _mlform_100k(reps)
    shutil.rmtree(WORK, ignore_errors=True)
