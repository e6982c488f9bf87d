"""A pipeline's `sweep` on the `local` provider: Optuna trials as real runs, resumable.

`run_sweep` is what `PipelineHandler.create` does instead of one run when the pipeline
has a sweep.  The sweep is itself a run directory (``root/runs/<slug>/<run_id>/``, the
id a plain run would have), and each trial a run of its own beside it,
``<run_id>-t<N>`` (N: the Optuna trial number), made by the handler's `_execute` like
any run: its record (`kit.run_records`, with ``sweep = {run_id, trial, parameters}``),
its log, its output; its hyperparameters are the pipeline's plus the trial's values.

The Optuna study lives in ``root/sweeps/<slug>/<run_id>.journal`` (a JournalStorage
file, appended to as trials are asked and told).  An apply killed mid-sweep leaves the
sweep's run.json ``running``: the next apply resumes that study, so the trials told
stay told (not run again) and the numbers go on; a trial a killed apply left running
has its leftover process stopped (`RunDir.interrupted`), is told failed and marked
*open* (`kit.sweeps.counted` does not count it), and another trial takes its place.

Up to `parallel` trials run at once, capped by the machine: one GPU each when the
cluster hands out GPUs (its devices are shared out evenly between the slots), else the
CPU count over the processes one trial runs.  With ``pruning = "median"``, each trial's
log is followed for step lines with the objective (`kit.run_records.parse_step_line`),
reported to Optuna, and the trial is stopped when Optuna prunes it.  A trial that fails
(its script fails, never reports the objective, or is pruned) is told so and the sweep
goes on; the sweep fails only when no trial completes.  Then the best trial is the
pipeline's result: its output is hard-linked to the sweep's ``output/`` (so `model_uri`,
the registry's lineage and a monitor's stale marker all name the sweep's run), its
metrics are the pipeline's `metrics`, its values `best_parameters`, and the `gate`
judges it as it would judge a single run.

The ask/tell scheduling, the telling and the resuming are `kit.sweep_loop`'s (the
Kubernetes provider shares them); what is local's is here: the slots (device sets), a
trial's run (`_trial`), how a leftover trial is settled (`_settle`: never rejoined, its
process is gone with the apply or stopped) and the result.
"""

from __future__ import annotations

import os
import shutil
import threading
from typing import TYPE_CHECKING, Any, Mapping, NoReturn

from mlform.providers.base import ProviderError
from mlform.providers.kit.champions import run_lineage
from mlform.providers.kit.gate import check_gate
from mlform.providers.kit.run_records import parse_step_line, run_record
from mlform.providers.kit.sweep_loop import COMPLETE, CUT, FAIL, PRUNED, Outcome, SweepLoop
from mlform.providers.kit.sweeps import (
    BEST_PARAMETERS, MissingObjective, SweepSpec, best_trial, objective_value, open_study,
    runnable, trial_hyperparameters,
)

from .clusters import devices_for
from .pipelines import RUNNING, SUCCEEDED, PipelineSettings, RunDir, _now

if TYPE_CHECKING:
    import optuna

    from .pipelines import PipelineHandler

__all__ = ["run_sweep", "study_path", "slots"]

def study_path(handler: "PipelineHandler", address: str, run_id: str):
    """Where the study of the sweep run `run_id` is kept."""
    return handler.env.root / "sweeps" / handler.env.slug(address) / f"{run_id}.journal"


def slots(spec: SweepSpec, devices: list[int], processes: int,
          cpus: int | None = None) -> list[list[int]]:
    """The device sets of the trials that run at once: up to `parallel`, one GPU each at
    least (the cluster's GPUs shared out evenly), else CPU slots (CPUs / processes)."""
    if devices:
        count = min(spec.parallel, len(devices))
        share = len(devices) // count
        return [devices[i * share:(i + 1) * share] for i in range(count)]
    cpus = cpus or os.cpu_count() or 1
    return [[] for _ in range(max(1, min(spec.parallel, cpus // max(1, processes))))]


class _Pruning:
    """Follows a trial's log for the objective's step values: reports them to Optuna and
    says when the trial should stop (also when the whole sweep is stopping)."""

    def __init__(self, trial: "optuna.trial.Trial", spec: SweepSpec, run: RunDir,
                 stopping: threading.Event) -> None:
        self.trial, self.spec, self.run, self.stopping = trial, spec, run, stopping
        self.pruned: str | None = None
        self._offset, self._partial = 0, b""

    def __call__(self) -> str | None:
        """Polled while the trial's process runs: why it must stop, or None."""
        if self.stopping.is_set():
            return "the sweep was interrupted"
        if self.spec.pruning == "none":
            return None
        for step, value in self._new_steps():
            self.trial.report(value, step)
            if self.trial.should_prune():
                self.pruned = (f"pruned at step {step} ({self.spec.objective} {value:g}, "
                               "worse than the median of earlier trials)")
                return self.pruned
        return None

    def drain(self) -> None:
        """Report the steps the trial logged since the last poll (a short run may end
        before the first): the pruner judges later trials against them."""
        if self.spec.pruning != "none" and self.pruned is None:
            for step, value in self._new_steps(final=True):
                self.trial.report(value, step)

    def _new_steps(self, final: bool = False) -> list[tuple[int, float]]:
        """(step, objective value) of the step lines logged since the last call."""
        try:
            with open(self.run.logs, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return []
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = b"" if final else lines.pop()
        found = []
        for line in lines:
            step = parse_step_line(line.decode(errors="replace"))
            value = step.metrics.get(self.spec.objective) if step is not None else None
            if value is not None:
                found.append((step.step, value))
        return found


class _Sweep:
    """One sweep run: its study, its trials, its result."""

    def __init__(self, handler: "PipelineHandler", address: str, attrs: Mapping[str, Any],
                 run: RunDir, spec: SweepSpec) -> None:
        self.handler, self.address, self.attrs, self.run, self.spec = (
            handler, address, attrs, run, spec)
        self.loop: SweepLoop   # made when the study is open
        self.script = str(attrs.get("entrypoint"))

    # -- the sweep's own record ----------------------------------------------------------

    def _say(self, message: str) -> None:
        """A line in the sweep's log and on the progress stream."""
        with open(self.run.logs, "a") as log:
            log.write(message + "\n")
        self.handler._progress(self.address, message, self.run)

    def _begin(self) -> None:
        self.run.path.mkdir(parents=True, exist_ok=True)
        if (self.run.record() or {}).get("status") == RUNNING:
            self._say(f"resuming sweep {self.run.run_id}")
            return
        started = _now()
        summary = {"trials": self.spec.trials, "objective": self.spec.objective,
                   "direction": self.spec.direction}
        self.run.write(run_id=self.run.run_id, address=self.address, status=RUNNING, pid=None,
                       fingerprint=self.attrs.get("fingerprint"), started=started,
                       finished=None, sweep=summary, record=run_record(
                           provider=self.handler.env.context.name, address=self.address,
                           attrs=self.attrs, run_id=self.run.run_id, status=RUNNING,
                           started=started, sweep=summary,
                           artifacts={"logs": self.run.logs.as_uri(),
                                      "output": self.run.output.as_uri()}))

    def _fail(self, message: str, metrics: Any = None) -> NoReturn:
        self.handler._fail(self.run, self.address, message, metrics=metrics)

    # -- the trials ----------------------------------------------------------------------

    def _settle(self, trial: "optuna.trial.FrozenTrial") -> Outcome:
        """A trial a killed apply left running: its run finished (told its value), or what
        is left of the run is stopped and the trial is cut (another takes its place)."""
        run_id = trial.user_attrs.get("run_id")
        run = self.handler.run_dir(self.address, str(run_id))
        record = (run.record() or {}) if isinstance(run_id, str) else {}
        if record.get("status") == SUCCEEDED:
            try:
                return Outcome(COMPLETE, value=objective_value(
                    self.spec, record.get("metrics") or {}))
            except MissingObjective:
                pass
        if record.get("status") == RUNNING:
            run.interrupted()
        return Outcome(CUT)

    def _trial(self, trial: "optuna.trial.Trial", devices: list[int]) -> Outcome:
        """Run one trial to its end (in a worker thread)."""
        run = self.handler.run_dir(self.address, str(trial.user_attrs["run_id"]))
        if run.path.exists():
            run.discard()   # a directory no record names (a crash before its first write)
        values = dict(trial.params)
        attrs = {**self.attrs, "gate": None,   # the gate judges the sweep's best trial only
                 "hyperparameters": trial_hyperparameters(self.attrs, values)}
        watch = _Pruning(trial, self.spec, run, self.loop.stopping)

        def judge(metrics: Mapping[str, Any]) -> str | None:
            try:
                objective_value(self.spec, metrics, self.script)
            except MissingObjective as exc:
                return str(exc)
            return None

        try:
            try:
                self.handler._execute(self.address, attrs, run, devices=devices, judge=judge,
                                      stop=watch, sweep={"run_id": self.run.run_id,
                                                         "trial": trial.number,
                                                         "parameters": values})
            finally:
                watch.drain()
        except ProviderError as exc:
            if watch.pruned is not None:
                return Outcome(PRUNED, message=watch.pruned)
            if self.loop.stopping.is_set():
                return Outcome(CUT, message="the sweep was interrupted")
            return Outcome(FAIL, message=exc.message.removeprefix(f"{self.address}: "))
        metrics = (run.record() or {}).get("metrics") or {}
        return Outcome(COMPLETE, value=objective_value(self.spec, metrics, self.script))

    # -- the result ----------------------------------------------------------------------

    def _result(self, study: "optuna.study.Study") -> None:
        best = best_trial(study)
        if best is None:
            failures = self.loop.failures()
            self._fail(f"{self.address}: no trial of the sweep completed "
                       f"({len(failures)} tried)\n" + "\n".join(failures[-10:]))
        values = dict(best.params)
        trial_run = self.handler.run_dir(self.address, str(best.user_attrs["run_id"]))
        record = trial_run.record() or {}
        metrics = record.get("metrics") or {}
        # the best trial's files, hard-linked: the sweep's run is what the pipeline
        # publishes, so model_uri, the registry's lineage and stale markers name it
        shutil.rmtree(self.run.output, ignore_errors=True)
        shutil.rmtree(self.run.path / "rejected", ignore_errors=True)
        shutil.copytree(trial_run.output, self.run.output, copy_function=_link)
        gate = self.attrs.get("gate")
        missed = check_gate(gate, metrics)
        note = None
        if missed is None:
            missed, note = self.handler._challenge(self.address, gate, metrics, self.run.run_id)
        self.run.write(best_trial=best.number, best_run_id=trial_run.run_id,
                       **{BEST_PARAMETERS: values})
        if missed is not None:
            os.replace(self.run.output, self.run.path / "rejected")
            self._fail(f"{missed} (best trial {best.number}, run {trial_run.run_id})",
                       metrics=metrics)
        finished = _now()
        attrs = {**self.attrs, "hyperparameters": trial_hyperparameters(self.attrs, values)}
        closed = self.handler._closed(self.run, SUCCEEDED, finished, metrics=metrics,
                                      model_uri=self.run.output.as_uri())
        if closed is not None:
            closed["parameters"] = attrs["hyperparameters"]
            closed["sweep"] = {**(closed.get("sweep") or {}), "best_trial": best.number,
                               "best_run_id": trial_run.run_id, BEST_PARAMETERS: values}
        self.run.write(status=SUCCEEDED, finished=finished, exit_code=0, metrics=metrics,
                       lineage=run_lineage(self.address, attrs, trial_run.run_id, metrics),
                       record=closed, **({"champion": note} if note else {}))
        self._say(f"best: trial {best.number} ({', '.join(f'{k}={v}' for k, v in values.items())}"
                  f"), {self.spec.objective} {best.value:g}")

    def __call__(self) -> None:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        self._begin()
        path = study_path(self.handler, self.address, self.run.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        study = open_study(self.spec, JournalStorage(JournalFileBackend(str(path))))
        self.loop = SweepLoop(self.spec, study, self.run.run_id, say=self._say)
        self.loop.resume(self._settle)     # every leftover trial is settled: none rejoined
        done = self.loop.done_before()
        self._say(f"sweep {self.run.run_id}: {self.spec.trials} trials"
                  + (f", {done} done before" if done else "") + f", storage {path}")
        settings = PipelineSettings.of(self.attrs)
        self.loop.search(slots(self.spec, devices_for(self.handler.env, self.attrs.get("cluster")),
                               settings.processes_per_node or 1), self._trial)
        self._result(study)


def _link(source: str, target: str) -> None:
    """Hard-link a file (same file system: both under the provider root), else copy it."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def run_sweep(handler: "PipelineHandler", address: str, attrs: Mapping[str, Any],
              run: RunDir) -> None:
    """Run (or resume) the pipeline's sweep in `run`; raises ProviderError when it fails."""
    spec = runnable(address, attrs, "Install the local provider's extras: "
                                    "pip install 'mlform[local]' (or pip install optuna).")
    _Sweep(handler, address, attrs, run, spec)()

