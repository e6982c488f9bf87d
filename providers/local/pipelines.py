"""`pipeline` on the `local` provider: the entrypoint run as a subprocess, metrics and gate.

The run contract (`mlform.providers.kit.runs`, also in docs/local-provider.md)
------------------------------------------------------------------------------
The entrypoint runs as ``[python, entrypoint]`` (the provider's `python`,
default the interpreter running mlform) with the stack directory as its
working directory and, on top of the pipeline's `environment`, the kit's run
contract variables: ``MLFORM_INPUT_<NAME>`` (an input's path in the content
store, or an upstream pipeline's output directory), ``MLFORM_INPUTS``,
``MLFORM_HYPERPARAMETERS``, ``MLFORM_OUTPUT_DIR`` (an empty directory for
``model.pt``, ``signature.json`` and ``metrics.json``), ``MLFORM_DEVICE``
(``cuda`` when the cluster hands out GPUs) and ``MLFORM_RUN_ID``; plus
``CUDA_VISIBLE_DEVICES`` (the cluster's GPU indices, empty for CPU).

Distributed runs (`torchrun`): a cluster handing out more than one GPU runs one
process per GPU (backend ``nccl``), ``settings { processes_per_node = N }`` runs N CPU
processes (backend ``gloo``); the entrypoint is launched through torchrun on this one
machine (a cluster with ``nodes > 1`` is refused at plan), ``MLFORM_WORLD_SIZE`` and
``MLFORM_DIST_BACKEND`` tell the script, and only rank 0 writes to MLFORM_OUTPUT_DIR.
A failing rank fails the run with that rank's last log lines (``ranks/`` in the run
directory keeps every rank's output).

Exit status 0 means success; anything else fails the apply with the last
lines of the log.  Output is unbuffered (``PYTHONUNBUFFERED=1``) and every line
is kept in the run's ``logs.txt`` and shown as progress.

Runs on disk
------------
``root/runs/<slug>/<run_id>/`` holds ``run.json`` (status running / succeeded /
failed, pid, fingerprint, started, finished, metrics, error), ``logs.txt`` and
``output/``; ``root/runs/<slug>/current.json`` names the run the pipeline
publishes, with its attributes.  A run id is ``run-`` + sha256(address +
fingerprint)[:12], so an unchanged fingerprint never runs twice and a retried
create adopts the finished run; a run re-done because it was marked stale gets
``-2``, ``-3``, ... appended, and so does a run tried again after a failure: a
failed run stays on record.  A run left ``running`` by a killed apply is found on
the next one: its process is stopped if it is still ours (its command line carries
the run directory), it is recorded failed, and the next number runs.  A run that
misses its `gate` is marked failed and its output is moved to ``rejected/``, so no
model is published and nothing downstream changes.

``run.json`` also holds the run's ``record`` (`kit.run_records`: parameters, digests,
cluster, times, final and step metrics, artifacts), written before the process
starts and closed when it ends; `run_records` lists them for `mlform runs`.

Champion/challenger: a gate with ``must_beat`` also compares the run with the version
the stage alias points at in the registry (`gate.model`, else every registry holding a
version registered from this pipeline; `models.champions`), on the metrics recorded
for that version; a miss is a gate miss.  The run record keeps ``lineage`` (what the
registry copies into the version's meta.json) and ``champion`` (the comparison, or
that there was no champion yet).  Plan reads the champions as a fact: it shows the
number a new run must beat, and warns when no version is in the stage.

Sweeps (`sweep = { }`, `kit.sweeps`; `local/sweeps.py`): the run is a sweep of trial
runs, each its own run directory ``<run_id>-t<N>`` with its record; the sweep's directory
holds ``output/`` (the best trial's files, hard-linked), and its ``run.json`` the best
trial, its metrics and ``best_parameters``.  A sweep left running by a killed apply is
resumed, not started over: its Optuna study is kept in ``root/sweeps/<slug>/<run_id>.journal``.

Staleness (`kit.reruns`): a monitor writes ``root/stale/<slug>.json`` (the kit's
stale marker, naming the run it judged); `read` reports its reason as `stale`
while the named run is the current one, and the next plan re-runs it.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from functools import partial
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from mlform.providers.base import (
    UNKNOWN, Desired, Diagnostic, FactKey, Facts, KindSchema, LiveObject, Planned,
    ProgressEvent, ProviderError, Timeouts, contains_unknown, error,
)
from mlform.providers.kit.champions import (
    champion_key, gate_diagnostics, judge_challenger, run_lineage, with_champion_reason,
)
from mlform.providers.kit.gate import check_gate
from mlform.providers.kit.monitoring import stale_marker
from mlform.providers.kit.reruns import RUN_OUTPUTS, StaleMarker, plan_run, run_fingerprint
from mlform.providers.kit.run_records import closed_record, run_record, step_metrics
from mlform.providers.kit.sweeps import BEST_PARAMETERS, plan_sweep
from mlform.providers.kit.runs import (
    METRICS_FILE, MODEL_FILE, contract_environment, entrypoint_file,
)

from . import processes, torchrun
from .clusters import devices_for
from .models import champions
from .env import LocalEnv, LocalHandler, read_json, write_json_atomic

__all__ = ["PipelineHandler", "PipelineSettings", "distribution_problems", "run_environment",
           "stale_marker_path", "mark_stale", "RUNNING", "SUCCEEDED", "FAILED"]

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
_LOG_TAIL_LINES = 20
_PROGRESS_EVERY_S = 0.5
_POLL_S = 0.1


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def stale_marker_path(env: LocalEnv, address: str) -> Path:
    """Where a monitor marks the pipeline at `address` stale."""
    return env.root / "stale" / f"{env.slug(address)}.json"


def mark_stale(env: LocalEnv, address: str, run_id: str, reason: str, *, monitor: str = "",
               at: Any = None, report: str | None = None) -> dict:
    """Mark run `run_id` of the pipeline stale, so the next plan re-runs it."""
    doc = stale_marker(reason, monitor=monitor, pipeline=address, time=at, report=report,
                       run_id=run_id)
    write_json_atomic(stale_marker_path(env, address), doc)
    return doc


class PipelineSettings(BaseModel):
    """`settings { }` of a local pipeline."""

    model_config = ConfigDict(extra="forbid")

    processes_per_node: int | None = Field(
        None, ge=1, le=256,
        description="Run the entrypoint as this many CPU processes through torchrun (backend "
                    "gloo; the script sees RANK, WORLD_SIZE, ... and only rank 0 writes to "
                    "MLFORM_OUTPUT_DIR).  For CPU runs: a GPU cluster runs one process per GPU.")

    @classmethod
    def of(cls, attrs: Mapping) -> "PipelineSettings":
        """The settings of `attrs`, defaults where unset (the engine checked them already)."""
        raw = attrs.get("settings")
        return cls.model_validate({k: v for k, v in raw.items() if k in cls.model_fields}
                                  if isinstance(raw, Mapping) else {})


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def distribution_problems(address: str, attrs: Mapping[str, Any]) -> list[Diagnostic]:
    """What a local machine cannot do of the run's shape: several nodes, or CPU processes
    asked of a GPU cluster."""
    cluster = attrs.get("cluster")
    if not isinstance(cluster, Mapping) or contains_unknown(
            [cluster.get(k) for k in ("nodes", "gpus_per_node", "accelerator")]):
        return []
    problems = []
    nodes = _int(cluster.get("nodes"), 1)
    if nodes > 1:
        problems.append(error(
            f"{address} runs on {cluster.get('address') or 'a cluster'} with nodes = {nodes}, "
            f"but the local provider trains on this one machine", address=address,
            hint="Set nodes = 1 (use gpus_per_node, or settings { processes_per_node = N } on "
                 "the pipeline, for several processes), or use a provider with multi-node "
                 "training."))
    gpus = _int(cluster.get("gpus_per_node"), 0)
    wanted = PipelineSettings.of(attrs).processes_per_node if not contains_unknown(
        attrs.get("settings")) else None
    on_gpus = gpus > 0 and str(cluster.get("accelerator") or "cpu").lower() != "cpu"
    if wanted is not None and on_gpus:
        problems.append(error(
            f"{address} sets processes_per_node = {wanted}, but its cluster hands out "
            f"{gpus} GPU(s): a GPU run has one process per GPU", address=address,
            hint="Remove processes_per_node (it is for CPU runs), or set gpus_per_node."))
    return problems


# -- one run directory -------------------------------------------------------

@dataclass(frozen=True)
class RunDir:
    """``root/runs/<slug>/<run_id>/``: run.json, logs.txt, output/."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def record_path(self) -> Path:
        return self.path / "run.json"

    @property
    def logs(self) -> Path:
        return self.path / "logs.txt"

    @property
    def output(self) -> Path:
        return self.path / "output"

    @property
    def ranks(self) -> Path:
        """torchrun's log directory of a distributed run: every rank's own output."""
        return self.path / "ranks"

    @property
    def marker(self) -> str:
        """On the run's command line (``-X mlform_run_dir=...``), so `processes.is_ours` knows it."""
        return f"mlform_run_dir={self.path}{os.sep}"

    def record(self) -> dict | None:
        doc = read_json(self.record_path)
        return doc if isinstance(doc, dict) else None

    def write(self, **fields: Any) -> dict:
        doc = {**(self.record() or {}), **fields}
        write_json_atomic(self.record_path, doc)
        return doc

    def alive(self, record: Mapping[str, Any]) -> bool:
        return processes.is_ours(record.get("pid"), self.marker)

    def discard(self) -> None:
        """Stop a leftover process of ours, then remove the directory: the run starts clean."""
        record = self.record() or {}
        processes.stop(record.get("pid"), self.marker)
        torchrun.stop_marked(self.marker)   # ranks outliving their torchrun
        shutil.rmtree(self.path, ignore_errors=True)

    def interrupted(self) -> None:
        """A run a killed apply left behind: stop what is left of it and record it failed."""
        record = self.record() or {}
        processes.stop(record.get("pid"), self.marker)
        torchrun.stop_marked(self.marker)
        failure = "the apply running it was stopped before the run finished"
        closed = record.get("record")
        self.write(status=FAILED, error=failure, finished=None,
                   **({"record": {**closed, "status": FAILED, "failure": failure}}
                      if isinstance(closed, dict) else {}))

    def tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.logs.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip("\n").splitlines()[-lines:])


# -- the environment of a run ------------------------------------------------

def _input_path(env: LocalEnv, value: Any) -> str:
    """What a script gets for an input: a local path where there is one, else the URI."""
    if isinstance(value, Mapping):
        value = value.get("uri") or value.get("model_uri") or value.get("address") or ""
    text = str(value)
    parts = urlsplit(text)
    if parts.scheme == "file":
        return unquote(parts.path)
    if len(parts.scheme) > 1:
        return text   # http(s):// and other URIs: the script knows what to do
    return str(env.resolve(text))


def run_environment(env: LocalEnv, attrs: Mapping[str, Any], run: RunDir,
                    devices: list[int], launch: torchrun.Launch | None = None) -> dict[str, str]:
    """The process environment of a run: this process's, the pipeline's `environment`, the
    run contract's variables (`kit.runs`), and the GPUs it may use."""
    inputs = {key: _input_path(env, value) for key, value in (attrs.get("inputs") or {}).items()}
    result = {**os.environ, **{str(k): str(v) for k, v in (attrs.get("environment") or {}).items()}}
    result.update(contract_environment(
        inputs=inputs, hyperparameters=attrs.get("hyperparameters") or {},
        output_dir=str(run.output), device="cuda" if devices else "cpu", run_id=run.run_id,
        world_size=launch.processes if launch else 1, backend=launch.backend if launch else None))
    result.update({"CUDA_VISIBLE_DEVICES": ",".join(str(d) for d in devices),
                   "PYTHONUNBUFFERED": "1"})
    return result


# -- watching a run ----------------------------------------------------------

class _LogFollower:
    """New complete lines of a growing log file, turned into rate-limited progress."""

    def __init__(self, path: Path, report: Any) -> None:
        self._path = path
        self._report = report
        self._offset = 0
        self._partial = b""
        self._last_sent = 0.0
        self._held: str | None = None

    def poll(self, final: bool = False) -> None:
        try:
            with open(self._path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if final and self._partial:
            lines.append(self._partial)
            self._partial = b""
        for line in lines:
            text = line.decode(errors="replace").rstrip()
            if text:
                self._held = text[:300]
        now = time.monotonic()
        # at most one line per interval: a chatty script must not flood the terminal
        if self._held is not None and (final or now - self._last_sent >= _PROGRESS_EVERY_S):
            self._report(self._held)
            self._held, self._last_sent = None, now


def _kill_group(proc: subprocess.Popen, marker: str) -> None:
    """The script and whatever it started (data loader workers) share its session; the
    ranks of a distributed run each lead their own, and carry the run's marker."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    torchrun.stop_marked(marker)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


# -- the handler -------------------------------------------------------------

class PipelineHandler(LocalHandler):
    """`pipeline`: one subprocess run per fingerprint, gated on its metrics."""

    # `best_parameters` (a sweep's) is not among `computed`: only a pipeline with a sweep
    # has it (`kit.sweeps.plan_sweep`), so no other plan moves
    schema = KindSchema(settings_model=PipelineSettings, computed=(*RUN_OUTPUTS, "stale"),
                        timeouts=Timeouts(create=24 * 3600.0, update=24 * 3600.0, delete=300.0))

    # -- where things are ----------------------------------------------------

    def runs_dir(self, address: str) -> Path:
        return self.env.root / "runs" / self.env.slug(address)

    def run_dir(self, address: str, run_id: str) -> RunDir:
        return RunDir(self.runs_dir(address) / run_id)

    def current_path(self, address: str) -> Path:
        return self.runs_dir(address) / "current.json"

    def base_run_id(self, address: str, fingerprint: str) -> str:
        return "run-" + hashlib.sha256((address + fingerprint).encode()).hexdigest()[:12]

    def stale_marker(self, address: str) -> StaleMarker | None:
        return StaleMarker.from_json(read_json(stale_marker_path(self.env, address)))

    # -- plan ----------------------------------------------------------------

    def fact_keys(self, desired: Desired, prior: LiveObject | None) -> list[FactKey]:
        key = champion_key(desired)
        return [key] if key is not None else []

    def read_facts(self, keys) -> dict[FactKey, Any]:
        return {key: champions(self.env, *key.args) for key in keys}

    def validate(self, desired: Desired, facts: Facts) -> list[Diagnostic]:
        problems = distribution_problems(desired.address, desired.attributes)
        return problems + gate_diagnostics(desired, facts, problems)

    def plan(self, desired: Desired, prior: LiveObject | None, facts: Facts) -> Planned:
        planned = plan_sweep(plan_run(desired, prior), prior)
        return with_champion_reason(planned, desired, facts,
                                    runs=planned.attributes.get("run_id") is UNKNOWN)

    # -- create / update -----------------------------------------------------

    def create(self, planned: Planned) -> LiveObject:
        address, attrs = planned.address, dict(planned.attributes)
        fingerprint = run_fingerprint(planned)
        if attrs.get("run_id") is not UNKNOWN:
            run = self._kept(address, str(attrs["run_id"]), attrs.get("gate"))
        else:
            run = self._choose(address, fingerprint, resume=bool(attrs.get("sweep")))
            record = run.record()
            if attrs.get("sweep"):
                if record is None or record.get("status") == RUNNING:
                    from .sweeps import run_sweep   # Optuna is loaded only for a sweep
                    run_sweep(self, address, attrs, run)
            elif record is None:
                self._execute(address, attrs, run)
        attrs.update(self._outputs(run), stale=None)
        write_json_atomic(self.current_path(address), {"run_id": run.run_id, "attributes": attrs})
        return LiveObject(address, planned.kind, self.env.object_id(address), attrs)

    def update(self, prior: LiveObject, planned: Planned) -> LiveObject:
        return self.create(planned)

    def _kept(self, address: str, run_id: str, gate: Any) -> RunDir:
        """The plan kept an earlier run: it must still be there, and pass the gate as it is now."""
        run = self.run_dir(address, run_id)
        record = run.record()
        if not record or record.get("status") != SUCCEEDED:
            raise ProviderError(f"{address}: run {run_id}, which the plan keeps, is gone; "
                                f"run plan again", address=address)
        # the gate is not part of the fingerprint: a stricter gate (or a better champion)
        # judges the same metrics
        metrics = record.get("metrics") or {}
        missed = check_gate(gate, metrics) or self._challenge(address, gate, metrics, run_id)[0]
        if missed is not None:
            raise ProviderError(f"{missed} (run {run_id})", address=address)
        return run

    def _choose(self, address: str, fingerprint: str, resume: bool = False) -> RunDir:
        """The run for this fingerprint: a finished one to adopt, or a clean directory;
        with `resume` (a sweep), also one a killed apply left running."""
        base = self.base_run_id(address, fingerprint)
        marker = self.stale_marker(address)
        for number in itertools.count(1):
            run = self.run_dir(address, base if number == 1 else f"{base}-{number}")
            record = run.record()
            if record is None:
                if run.path.exists():   # a create killed before its record was written
                    run.discard()
                return run
            if record.get("status") == SUCCEEDED:
                if record.get("superseded"):
                    continue
                if marker is not None and marker.marks(run.run_id):
                    # remember it, so a later marker for another run cannot revive this one
                    run.write(superseded=marker.reason)
                    continue
                return run   # a retried or crashed create: adopt the finished run
            if record.get("status") == RUNNING:
                if resume and record.get("sweep"):
                    return run   # its study goes on where the killed apply left it
                run.interrupted()   # left running by a killed apply
            # a failed run stays on record (`mlform runs`); the next number runs again
        raise AssertionError("unreachable")

    def _outputs(self, run: RunDir) -> dict[str, Any]:
        record = run.record() or {}
        best = {BEST_PARAMETERS: record[BEST_PARAMETERS]} if BEST_PARAMETERS in record else {}
        return {"run_id": run.run_id, "model_uri": run.output.as_uri(),
                "metrics": record.get("metrics") or {}, **best}

    def _execute(self, address: str, attrs: Mapping[str, Any], run: RunDir, *,
                 devices: list[int] | None = None, sweep: Mapping[str, Any] | None = None,
                 judge: Callable[[Mapping[str, Any]], str | None] | None = None,
                 stop: Callable[[], str | None] | None = None) -> None:
        """Run the entrypoint once in `run`; raises ProviderError when the run fails.

        A sweep's trial (`local/sweeps.py`) passes its share of the GPUs (`devices`),
        its place in the sweep (`sweep`, for its record), `judge` (why its metrics
        fail it: no objective) and `stop` (polled while it runs: a reason stops it)."""
        entrypoint = entrypoint_file(self.env.stack_dir, address, attrs)
        if devices is None:
            devices = devices_for(self.env, attrs.get("cluster"))
        run.output.mkdir(parents=True, exist_ok=True)
        started = _now()
        launch = torchrun.launch_of(devices, PipelineSettings.of(attrs).processes_per_node)
        # the run's record (`kit.run_records`) is written before the process starts, so a
        # killed apply leaves a record of the run it was making
        run.write(run_id=run.run_id, address=address, status=RUNNING, pid=None,
                  fingerprint=attrs.get("fingerprint"), started=started, finished=None,
                  devices=devices, record=run_record(
                      provider=self.env.context.name, address=address, attrs=attrs,
                      run_id=run.run_id, status=RUNNING, started=started,
                      processes=launch.processes, sweep=sweep,
                      artifacts={"logs": run.logs.as_uri(), "output": run.output.as_uri()}))
        problems = distribution_problems(address, attrs)   # a plan made elsewhere
        if problems:
            self._fail(run, address, problems[0].summary)
        script = str(attrs.get("entrypoint_path") or attrs.get("entrypoint"))
        argv = [self.env.python, "-X", run.marker, script]
        if launch.distributed:
            argv = torchrun.torchrun_argv(self.env.python, run.marker, script, launch,
                                          port=processes.free_port(), log_dir=run.ranks,
                                          run_id=run.run_id)
        run.write(processes=launch.processes)
        timeout = attrs.get("timeout_seconds") or self.schema.timeouts.create
        with open(run.logs, "ab") as log:
            proc = subprocess.Popen(argv, cwd=self.env.stack_dir, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, close_fds=True,
                                    env=run_environment(self.env, attrs, run, devices, launch),
                                    start_new_session=True)
        run.write(pid=proc.pid)
        where = "GPU " + ",".join(map(str, devices)) if devices else "CPU"
        if launch.distributed:
            where += f", {launch.processes} processes ({launch.backend})"
        self._progress(address, f"{run.run_id} started: {entrypoint.name} on {where}", run)
        code, stopped = self._wait(address, proc, run, float(timeout), stop)
        if stopped is not None:
            self._fail(run, address, f"{address}: run {run.run_id} was stopped: {stopped}")
        self._finish(address, attrs, run, code, float(timeout), launch, judge)

    def _progress(self, address: str, message: str, run: RunDir) -> None:
        self.env.context.progress(ProgressEvent(address, message, f"run {run.run_id}"))

    def _wait(self, address: str, proc: subprocess.Popen, run: RunDir, timeout: float,
              stop: Callable[[], str | None] | None = None) -> tuple[int | None, str | None]:
        """(the exit status, or None when the run outlived its timeout; why `stop` stopped
        it, or None): a run stopped either way is killed."""
        follower = _LogFollower(run.logs, lambda line: self._progress(address, line, run))
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    return proc.wait(timeout=_POLL_S), None
                except subprocess.TimeoutExpired:
                    follower.poll()
                stopped = stop() if stop is not None else None
                if stopped is not None:
                    _kill_group(proc, run.marker)
                    return proc.returncode, stopped
                if time.monotonic() > deadline:
                    _kill_group(proc, run.marker)
                    return None, None
        finally:
            if proc.poll() is None:   # interrupted (Ctrl-C): leave no orphan behind
                _kill_group(proc, run.marker)
            follower.poll(final=True)

    def _finish(self, address: str, attrs: Mapping[str, Any], run: RunDir, code: int | None,
                timeout: float, launch: torchrun.Launch,
                judge: Callable[[Mapping[str, Any]], str | None] | None = None) -> None:
        """Judge a finished process: exit status, metrics, gate, model.  Raises on failure."""
        if code is None:
            self._fail(run, address, f"{address}: the run {run.run_id} took longer than "
                                     f"timeout_seconds = {timeout:g} and was stopped")
        if code != 0 and launch.distributed:
            self._rank_failed(address, attrs, run, code, launch)
        if code != 0:
            self._fail(run, address, f"{address}: {attrs.get('entrypoint')} {_exit_text(code)} "
                                     f"(run {run.run_id}, log {run.logs})", tail=True)
        metrics = read_json(run.output / METRICS_FILE)
        if not isinstance(metrics, dict):
            self._fail(run, address, f"{address}: {attrs.get('entrypoint')} wrote no {METRICS_FILE} "
                                     f"(a JSON object) in MLFORM_OUTPUT_DIR", tail=True)
        judged = judge(metrics) if judge is not None else None
        if judged is not None:
            self._fail(run, address, f"{address}: {judged} (run {run.run_id})", metrics=metrics)
        gate = attrs.get("gate")
        missed = check_gate(gate, metrics)
        note = None
        if missed is None:
            missed, note = self._challenge(address, gate, metrics, run.run_id)
        if missed is not None:
            # no model is published: the output is set aside and the apply stops here
            if run.output.exists():
                os.replace(run.output, run.path / "rejected")
            self._fail(run, address, missed, metrics=metrics)
        if not (run.output / MODEL_FILE).is_file():
            self._fail(run, address, f"{address}: {attrs.get('entrypoint')} wrote no {MODEL_FILE} "
                                     f"in MLFORM_OUTPUT_DIR", tail=True, metrics=metrics)
        # the lineage is what the registry records for a version made from this run
        finished = _now()
        run.write(status=SUCCEEDED, finished=finished, exit_code=0, metrics=metrics,
                  lineage=run_lineage(address, attrs, run.run_id, metrics),
                  record=self._closed(run, SUCCEEDED, finished, metrics=metrics,
                                      model_uri=run.output.as_uri()),
                  **({"champion": note} if note else {}))

    def _rank_failed(self, address: str, attrs: Mapping[str, Any], run: RunDir, code: int,
                     launch: torchrun.Launch) -> None:
        """Fail a distributed run with the failing rank's own message, when torchrun names it."""
        try:
            console = run.logs.read_text(errors="replace")
        except OSError:
            return
        failure = torchrun.failed_rank(console, run.ranks, _LOG_TAIL_LINES)
        if failure is None:
            return   # torchrun failed before the ranks ran: its own log says why
        message = (f"{address}: {attrs.get('entrypoint')} {_exit_text(failure.exit_code)} in "
                   f"rank {failure.rank} of {launch.processes} (run {run.run_id}, logs "
                   f"{run.ranks})")
        self._fail(run, address, message, log=failure.tail,
                   heading=f"last lines of rank {failure.rank}")

    def _challenge(self, address: str, gate: Any, metrics: Mapping[str, Any],
                   run_id: str) -> tuple[str | None, str | None]:
        """(why the run does not beat the champion or None, the note for its record)."""
        return judge_challenger(gate, metrics, partial(champions, self.env, address), run_id)

    def _fail(self, run: RunDir, address: str, message: str, *, tail: bool = False,
              metrics: Any = None, log: str = "",
              heading: str = "last lines of the log") -> NoReturn:
        finished = _now()
        run.write(status=FAILED, finished=finished, error=message, metrics=metrics,
                  record=self._closed(run, FAILED, finished, metrics=metrics, failure=message))
        log = log or (run.tail() if tail else "")
        raise ProviderError(message + (f"\n{heading}:\n{log}" if log else ""),
                            address=address, service_message=log)

    def _closed(self, run: RunDir, status: str, finished: str, *, metrics: Any = None,
                failure: str | None = None, model_uri: str | None = None) -> dict | None:
        """The run's record, finished: status, end, metrics, the steps its log reported."""
        record = (run.record() or {}).get("record")
        if not isinstance(record, dict):
            return None
        try:
            with open(run.logs, errors="replace") as log:
                steps = step_metrics(log)
        except OSError:
            steps = []
        artifacts = {}
        if status != SUCCEEDED and (run.path / "rejected").is_dir():
            artifacts["output"] = (run.path / "rejected").as_uri()   # set aside by the gate
        return closed_record(record, status, finished=finished, metrics=metrics,
                             failure=failure, steps=steps, model_uri=model_uri,
                             artifacts=artifacts)

    def run_records(self, pipeline: str | None) -> list[dict]:
        """Every run's record under ``root/runs`` (the pipeline's only, when named): a run
        still marked running whose process is gone is reported failed."""
        roots = ([self.runs_dir(pipeline)] if pipeline else
                 sorted(p for p in (self.env.root / "runs").glob("*") if p.is_dir()))
        records = []
        for root in roots:
            for path in (p for p in root.glob("*") if p.is_dir()):
                run = RunDir(path)
                doc = run.record() or {}
                record = doc.get("record")
                if not isinstance(record, dict):
                    continue
                if record.get("status") == RUNNING and not run.alive(doc):
                    record = {**record, "status": FAILED,
                              "failure": "the apply running it stopped before it finished"}
                records.append(record)
        return sorted(records, key=lambda r: (str(r.get("started") or ""), r["run_id"]))

    # -- read / delete -------------------------------------------------------

    def read(self, prior: LiveObject) -> LiveObject | None:
        address = prior.address
        current = read_json(self.current_path(address))
        if not isinstance(current, dict) or not isinstance(current.get("run_id"), str):
            return None
        run = self.run_dir(address, current["run_id"])
        record = run.record()
        if not record or record.get("status") != SUCCEEDED or not run.output.is_dir():
            return None   # the run (or its output) was removed: gone
        attrs = dict(current.get("attributes") or {})
        marker = self.stale_marker(address)
        attrs["stale"] = marker.reason if marker is not None and marker.marks(run.run_id) else None
        return LiveObject(address, prior.kind, self.env.object_id(address), attrs)

    def delete(self, prior: LiveObject) -> None:
        root = self.runs_dir(prior.address)
        if root.is_dir():
            for path in sorted(p for p in root.iterdir() if p.is_dir()):
                RunDir(path).discard()   # stops only processes whose command line is ours
            shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(self.env.root / "sweeps" / self.env.slug(prior.address), ignore_errors=True)
        stale_marker_path(self.env, prior.address).unlink(missing_ok=True)
