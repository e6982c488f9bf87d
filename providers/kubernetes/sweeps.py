"""A pipeline's `sweep` on Kubernetes: Optuna in the apply, each trial a Job.

`run_sweep` is what `PipelineHandler.create` (and `update`) does instead of one run when
the pipeline has a sweep.  The search runs in the apply's process, as on `local`: an
Optuna study asked and told by `kit.sweep_loop`, up to `parallel` trials at once.  Each
trial is the Job a plain run would be (`PipelineHandler._start`: the same pod, code and
inputs), with the pipeline's hyperparameters plus the trial's values, named
``<sweep run>-t<N>`` (N: the Optuna trial number) and labelled with its sweep and
number; it is waited on as a plain run is (`_wait`), and its metrics are its
``metrics.json`` in storage.  A trial whose script fails, or never reports the
objective, is told failed and the sweep goes on; the sweep fails only when no trial
completes.

The sweep run is ``<name>-<fingerprint[:10]>-s<attempt>``, on record like any run
(`kit.run_ledger`, its record's `sweep` the trials, objective and direction; closed with
the best trial and `best_parameters`), and each trial has its own record whose `sweep`
names the sweep run, the trial number and its values.  The study is an Optuna
JournalStorage.  Its journal needs a file, and the provider's state lives in `storage`
(S3): the journal is a file under the stack's cache directory (a temporary directory
without one), uploaded to ``sweeps/<name>/<sweep run>.journal`` in storage whenever the
study changes: after a trial is asked (before its Job is made, so no Job exists whose
trial the stored study lacks) and after each tell.  The stored copy is the truth: an
apply opening the sweep downloads it over any local file (the apply resuming may run on
another machine, or the local file may be behind).

Resuming: an apply killed or interrupted mid-sweep leaves the sweep's record running
and its trials' Jobs going.  The next apply of the same fingerprint finds the sweep's
record, opens the stored study and rejoins the trials it left: each adopts its Job by
its name (waiting on it, or reading its outcome when it is done) instead of making a
second one, and the loop asks only the trials still missing.  A Job that is gone (a
TTL) but whose record says how it ended, with the same values, is not run again.

Pruning is refused at validate (`pipelines.sweep_diagnostics`): a trial's step lines
reach storage when its Job ends (the pod uploads ``logs.txt``), too late to stop it.

The best trial is the pipeline's result: `model_uri` is its output in storage, with its
``lineage.json`` beside it (what the registry records), `metrics` its metrics, and
`best_parameters` its values; the pipeline's `run_id` is the sweep run's, and the
`gate` judges the best trial as it would judge a single run.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from mlform.providers.base import LiveObject, Planned, ProviderError
from mlform.providers.kit.champions import judge_challenger, run_lineage
from mlform.providers.kit.gate import check_gate
from mlform.providers.kit.reruns import fingerprint_hex, run_fingerprint
from mlform.providers.kit.run_records import (
    FAILED, RUNNING, SUCCEEDED, closed_record, run_record,
)
from mlform.providers.kit.runs import METRICS_FILE
from mlform.providers.kit.sweep_loop import COMPLETE, CUT, FAIL, Outcome, SweepLoop
from mlform.providers.kit.sweeps import (
    BEST_PARAMETERS, MissingObjective, SweepSpec, best_trial, objective_value, open_study,
    runnable, trial_hyperparameters,
)

from .models import champions
from .pipelines import RUN_KINDS, SWEEP, SWEEP_RUN, TRIAL, _now, run_prefix

if TYPE_CHECKING:
    import optuna

    from .pipelines import PipelineHandler

__all__ = ["run_sweep", "sweep_name", "journal_key"]

#: room left in a Job name for a trial's ``-t<N>`` (names are DNS labels, 63 at most)
_TRIAL_ROOM = 7


def sweep_name(handler: "PipelineHandler", address: str, fingerprint: str, attempt: int) -> str:
    """The sweep run of this fingerprint's `attempt`; its trials add ``-t<N>``."""
    return handler.env.name(address, f"{fingerprint_hex(fingerprint)[:10]}-s{attempt}",
                            limit=63 - _TRIAL_ROOM)


def journal_key(handler: "PipelineHandler", address: str, run_id: str) -> str:
    """Where in storage the study of the sweep run `run_id` is kept."""
    return handler.env.store.key("sweeps", handler.env.name(address), f"{run_id}.journal")


class _Sweep:
    """One sweep run on the cluster: its record, study, trial Jobs and result."""

    def __init__(self, handler: "PipelineHandler", planned: Planned, spec: SweepSpec) -> None:
        self.handler, self.planned, self.spec = handler, planned, spec
        self.address, self.attrs = planned.address, dict(planned.attributes)
        self.env, self.store = handler.env, handler.env.store
        self.fingerprint = run_fingerprint(planned)
        self.namespace = handler.namespace(self.attrs)
        self.slug = self.env.name(self.address)
        self.script = str(self.attrs.get("entrypoint"))
        self.attempt, self.run_id = self._choose()
        self.journal = self._journal_path()
        self.loop: SweepLoop   # made when the study is open

    # -- which sweep run -----------------------------------------------------------------

    def _choose(self) -> tuple[int, str]:
        """(attempt, name) of the sweep to run: one left running (or finished but not yet
        published: its study is still stored) is taken up, unless a monitor marked it
        stale; after a failed or stale one, the next attempt."""
        marker = self.handler.stale_marker(self.address)
        attempt = 1
        while True:
            name = sweep_name(self.handler, self.address, self.fingerprint, attempt)
            entry = self.handler.ledger.entry(self.slug, name, address=self.address)
            if entry is None:
                return attempt, name
            status = entry["record"].get("status")
            stale = marker is not None and marker.marks(name, self.fingerprint)
            if not stale and (status == RUNNING or (
                    status == SUCCEEDED and self.store.head(
                        journal_key(self.handler, self.address, name),
                        address=self.address) is not None)):
                return attempt, name
            attempt += 1

    def _say(self, message: str) -> None:
        self.handler.kube.progress(self.address, message)

    def _begin(self) -> None:
        """The sweep's own record, written once (a resumed sweep keeps its start)."""
        if self.handler.ledger.entry(self.slug, self.run_id, address=self.address) is not None:
            self._say(f"resuming sweep {self.run_id}")
            return
        summary = {"trials": self.spec.trials, "objective": self.spec.objective,
                   "direction": self.spec.direction}
        self.handler.ledger.open(self.slug, run_record(
            provider=self.env.context.name, address=self.address, attrs=self.attrs,
            run_id=self.run_id, status=RUNNING, started=_now(), sweep=summary),
            job={"kind": SWEEP_RUN}, address=self.address)

    def _close(self, status: str, *, metrics: Any = None, failure: str | None = None,
               model_uri: str | None = None, **extra: Any) -> None:
        """Close the sweep's record (`extra`: fields of the record to set)."""
        entry = self.handler.ledger.entry(self.slug, self.run_id, address=self.address)
        if entry is None:
            return
        record = closed_record(entry["record"], status, finished=_now(), metrics=metrics,
                               failure=failure, model_uri=model_uri,
                               artifacts={"output": model_uri} if model_uri else None)
        self.handler.ledger.open(self.slug, {**record, **extra}, job=entry["job"],
                                 address=self.address)

    # -- the study, kept in storage ------------------------------------------------------

    def _journal_path(self) -> Path:
        cache = self.env.context.cache_dir
        root = Path(cache) if cache is not None else Path(tempfile.mkdtemp(prefix="mlform-"))
        return root / "kubernetes-sweeps" / f"{self.run_id}.journal"

    def _open(self) -> "optuna.study.Study":
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        key = journal_key(self.handler, self.address, self.run_id)
        stored = self.store.get_bytes(key, address=self.address)
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        if stored is not None:
            self.journal.write_bytes(stored)
        else:
            self.journal.unlink(missing_ok=True)   # a new study: nothing of an older one
        # a lock a killed apply left would hold every write for Optuna's grace period;
        # one apply at a time runs a stack (the engine's state lock), so none is live
        Path(f"{self.journal}.lock").unlink(missing_ok=True)
        return open_study(self.spec, JournalStorage(JournalFileBackend(str(self.journal))))

    def _save(self) -> None:
        self.store.put_bytes(journal_key(self.handler, self.address, self.run_id),
                             self.journal.read_bytes(), address=self.address,
                             content_type="application/octet-stream")

    # -- a trial -------------------------------------------------------------------------

    def _trial(self, trial: "optuna.trial.Trial", slot: Any) -> Outcome:
        """Run trial `trial` as its Job, adopting the Job when it exists (in a worker)."""
        name = str(trial.user_attrs["run_id"])
        values = dict(trial.params)
        attrs = {**self.attrs, "gate": None,   # the gate judges the sweep's best trial only
                 "hyperparameters": trial_hyperparameters(self.attrs, values)}
        api_version, kind = RUN_KINDS[self.handler.run_kind(attrs)][:2]
        job = self.handler.kube.get(api_version, kind, name, self.namespace,
                                    address=self.address)
        if job is not None:
            self.env.check_owner(job, self.address)
            self._say(f"trial {trial.number}: adopting its {kind} {self.namespace}/{name}")
        else:
            entry = self.handler.ledger.entry(self.slug, name, address=self.address)
            record = entry["record"] if entry is not None else {}
            if record.get("status") in (SUCCEEDED, FAILED) and \
                    (record.get("sweep") or {}).get("parameters") == values:
                return self._recorded(record)   # it ended, and a TTL took its Job
            job = self.handler._start(
                self.address, attrs, self.namespace, self.fingerprint, self.attempt,
                name=name, labels={SWEEP: self.run_id, TRIAL: str(trial.number)},
                sweep={"run_id": self.run_id, "trial": trial.number, "parameters": values})
        try:
            self.handler._wait(self.address, self.namespace, job, attrs,
                               stop=self.loop.stopping)
        except ProviderError as exc:
            if self.loop.stopping.is_set():
                return Outcome(CUT, message="the sweep was interrupted")
            return Outcome(FAIL, message=exc.message.removeprefix(f"{self.address}: "))
        prefix = run_prefix(self.env, self.address, name)
        metrics = self.store.get_json(f"{prefix}/output/{METRICS_FILE}", address=self.address)
        metrics = metrics if isinstance(metrics, dict) else {}
        try:
            value = objective_value(self.spec, metrics, self.script)
        except MissingObjective as exc:
            message = f"{exc} (run {name})"
            self.handler._close_record(self.address, name, FAILED, metrics=metrics,
                                       failure=message)
            return Outcome(FAIL, message=message)
        self.handler._close_record(self.address, name, SUCCEEDED, metrics=metrics,
                                   model_uri=f"s3://{self.store.bucket}/{prefix}/output/")
        return Outcome(COMPLETE, value=value)

    def _recorded(self, record: Mapping[str, Any]) -> Outcome:
        """The outcome a trial's closed record gives."""
        if record.get("status") == SUCCEEDED:
            try:
                return Outcome(COMPLETE, value=objective_value(
                    self.spec, record.get("metrics") or {}, self.script))
            except MissingObjective as exc:
                return Outcome(FAIL, message=str(exc))
        return Outcome(FAIL, message=str(record.get("failure") or "its run failed"))

    # -- the result ----------------------------------------------------------------------

    def _result(self, study: "optuna.study.Study") -> LiveObject:
        best = best_trial(study)
        if best is None:
            failures = self.loop.failures()
            message = (f"no trial of the sweep completed ({len(failures)} tried)\n"
                       + "\n".join(failures[-10:]))
            self._close(FAILED, failure=message)
            raise ProviderError(f"{self.address}: {message}", address=self.address)
        values, trial_run = dict(best.params), str(best.user_attrs["run_id"])
        prefix = run_prefix(self.env, self.address, trial_run)
        metrics = self.store.get_json(f"{prefix}/output/{METRICS_FILE}", address=self.address)
        metrics = metrics if isinstance(metrics, dict) else {}
        gate = self.attrs.get("gate")
        missed, note = check_gate(gate, metrics), None
        if missed is None:
            missed, note = judge_challenger(gate, metrics,
                                            partial(champions, self.handler, self.address),
                                            run_id=trial_run)
        attrs = {**self.attrs, "hyperparameters": trial_hyperparameters(self.attrs, values)}
        summary = {"trials": self.spec.trials, "objective": self.spec.objective,
                   "direction": self.spec.direction, "best_trial": best.number,
                   "best_run_id": trial_run, BEST_PARAMETERS: values}
        if missed is not None:
            failure = f"{missed} (best trial {best.number}, run {trial_run})"
            self._close(FAILED, metrics=metrics, failure=failure, sweep=summary)
            raise ProviderError(f"{self.address}: {failure}", address=self.address)
        model_uri = f"s3://{self.store.bucket}/{prefix}/output/"
        # what the registry records for a version made from the best trial, beside its output
        self.store.put_json(f"{prefix}/lineage.json",
                            {**run_lineage(self.address, attrs, trial_run, metrics),
                             **({"champion": note} if note else {})}, address=self.address)
        self._close(SUCCEEDED, metrics=metrics, model_uri=model_uri, sweep=summary,
                    parameters=attrs["hyperparameters"])
        self._say(f"best: trial {best.number} "
                  f"({', '.join(f'{k}={v}' for k, v in values.items())}), "
                  f"{self.spec.objective} {best.value:g}")
        live = {**self.attrs, "run_id": self.run_id, "model_uri": model_uri,
                "metrics": metrics, "stale": None, BEST_PARAMETERS: values}
        # `read` finds the pipeline by the best trial's Job, as a plain run's by its Job
        self.store.put_json(self.handler.record_key(self.address),
                            {"address": self.address, "namespace": self.namespace,
                             "job": trial_run, "attributes": live}, address=self.address)
        return LiveObject(self.address, self.planned.kind, f"{self.namespace}/{trial_run}",
                          live)

    def __call__(self) -> LiveObject:
        self._begin()
        study = self._open()
        self.loop = SweepLoop(self.spec, study, self.run_id, say=self._say, saved=self._save)
        rejoin = self.loop.resume(lambda trial: None)   # each adopts its Job (or remakes it)
        done = self.loop.done_before()
        self._say(f"sweep {self.run_id}: {self.spec.trials} trials"
                  + (f", {done} done before" if done else "")
                  + (f", {len(rejoin)} taken up" if rejoin else "")
                  + f", study s3://{self.store.bucket}/"
                    f"{journal_key(self.handler, self.address, self.run_id)}")
        self.loop.search([None] * self.spec.parallel, self._trial, rejoin)
        return self._result(study)


def run_sweep(handler: "PipelineHandler", planned: Planned) -> LiveObject:
    """Run (or resume) the pipeline's sweep; raises ProviderError when it fails."""
    address = planned.address
    spec = runnable(address, planned.attributes,
                    "Install the kubernetes provider's extras: pip install "
                    "'mlform[kubernetes]' (or pip install optuna).")
    return _Sweep(handler, planned, spec)()
