"""The ask/tell loop of a sweep, provider-neutral: trials run at once, told, resumed.

A provider running a sweep (`kit.sweeps`) in the apply's process hands `SweepLoop` its
Optuna study and two things of its own: the *slots* trials run in (a local GPU set, or
just `parallel` places on a cluster) and `run_trial(trial, slot)`, which runs one trial
to its end in a worker thread and says how it went (an `Outcome`).  The loop asks
trials (each gets the user attributes ``run_id`` = ``<sweep run>-t<N>`` and `OPEN`),
runs up to one per slot at once, tells each outcome and says so through `say`, until
`trials` trials count (`kit.sweeps.counted`).

Resuming: trials an earlier apply asked and never told are still *running* in the
study.  `resume` hands each to the provider's `settle`, which says what it is now: an
outcome to tell at once (its run had finished; or `CUT`: nothing of it can be taken up,
so it is told failed and stays open, and another trial takes its place), or None: the
trial is *rejoined*, run again by `run_trial`, which takes up what is left of it (on a
cluster: adopts its Job).  A trial the loop itself had to leave (Ctrl-C, an error: the
loop sets `stopping`, and `run_trial` answers `CUT`) is not told: the next apply's
`resume` settles it.

`saved` is called whenever the study changed (a trial asked, a trial told), for a
provider that keeps a copy of the study elsewhere.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from .sweeps import OPEN, SweepSpec, counted, distributions

if TYPE_CHECKING:   # only for the annotations: optuna is imported when a sweep runs
    import optuna

__all__ = ["SweepLoop", "Outcome", "COMPLETE", "PRUNED", "FAIL", "CUT"]

#: how a trial's run went: finished with the objective, pruned, failed, or left unfinished
#: because the sweep is stopping (a Ctrl-C, an error elsewhere)
COMPLETE, PRUNED, FAIL, CUT = "complete", "pruned", "fail", "cut"


@dataclass
class Outcome:
    """What became of one trial's run."""

    state: str               # COMPLETE, PRUNED, FAIL or CUT
    value: float | None = None
    message: str = ""


class SweepLoop:
    """One sweep run's study, asked and told from the apply's thread."""

    def __init__(self, spec: SweepSpec, study: "optuna.study.Study", run_id: str, *,
                 say: Callable[[str], None],
                 saved: Callable[[], None] = lambda: None) -> None:
        self.spec, self.study, self.run_id, self.say, self.saved = (
            spec, study, run_id, say, saved)
        #: set when the sweep stops early: running trials must end (answering CUT)
        self.stopping = threading.Event()

    def trial_run_id(self, number: int) -> str:
        """The run (and on a cluster the Job) of trial `number`: the same on every try."""
        return f"{self.run_id}-t{number}"

    def done_before(self) -> int:
        return counted(self.study.get_trials(deepcopy=False))

    # -- resuming --------------------------------------------------------------------------

    def resume(self, settle: Callable[["optuna.trial.FrozenTrial"], Outcome | None]
               ) -> list["optuna.trial.Trial"]:
        """Settle the trials an earlier apply left running; returns those to rejoin."""
        import optuna
        from optuna.trial import TrialState

        rejoin = []
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            outcome = settle(frozen)
            if outcome is None:
                # the trial as an object to report to and tell (what `ask` returns); its
                # id is the storage's, which a FrozenTrial keeps only privately
                rejoin.append(optuna.trial.Trial(self.study, frozen._trial_id))
            elif outcome.state == COMPLETE:
                self.study.tell(frozen.number, outcome.value)
                self.say(f"trial {frozen.number}: its run {frozen.user_attrs.get('run_id')} "
                         f"had finished, {self.spec.objective} {outcome.value:g}")
            else:   # still open: it does not count, another trial takes its place
                self.study.tell(frozen.number, state=TrialState.FAIL)
                self.say(f"trial {frozen.number} was cut short by a stopped apply: another "
                         "takes its place")
            if outcome is not None:
                self.saved()
        return rejoin

    # -- searching -------------------------------------------------------------------------

    def search(self, slots: Sequence[Any],
               run_trial: Callable[["optuna.trial.Trial", Any], Outcome],
               rejoin: Iterable["optuna.trial.Trial"] = ()) -> None:
        """Run the trials to rejoin, then ask new ones, one per free slot at once, until
        `trials` of them count; each is told as it ends."""
        space = distributions(self.spec)
        pending = list(rejoin)
        remaining = max(0, self.spec.trials - self.done_before() - len(pending))
        free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for slot in slots:
            free.put(slot)
        running: dict[Future, "optuna.trial.Trial"] = {}

        def start(trial: "optuna.trial.Trial", slot: Any) -> Outcome:
            try:
                return run_trial(trial, slot)
            finally:
                free.put(slot)   # before the future is done: the loop finds it free

        with ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="trial") as pool:
            try:
                while pending or remaining > 0 or running:
                    while (pending or remaining > 0) and len(running) < len(slots):
                        if pending:
                            trial = pending.pop(0)
                        else:
                            trial = self.study.ask(space)
                            trial.set_user_attr(OPEN, True)   # until its run ends
                            trial.set_user_attr("run_id", self.trial_run_id(trial.number))
                            self.saved()   # kept before its run starts: a resumed study
                            remaining -= 1  # never asks the same number for another run
                        running[pool.submit(start, trial, free.get())] = trial
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        self.tell(running.pop(future), future.result())
            except BaseException:
                # Ctrl-C or a failure here: every running trial must end now (their
                # `run_trial` sees the event); their trials stay running in the study,
                # for the next apply's `resume`
                self.stopping.set()
                raise

    def tell(self, trial: "optuna.trial.Trial", outcome: Outcome) -> None:
        """Tell the study how `trial` went (a CUT trial is left for `resume`)."""
        from optuna.trial import TrialState

        if outcome.state == CUT:
            return
        shown = ", ".join(f"{k}={v}" for k, v in trial.params.items())
        trial.set_user_attr(OPEN, False)
        if outcome.state == COMPLETE:
            self.study.tell(trial, outcome.value)
            self.saved()
            self.say(f"trial {trial.number} ({shown}): {self.spec.objective} "
                     f"{outcome.value:g}")
            return
        trial.set_user_attr("failure", outcome.message)
        self.study.tell(trial, state=TrialState.PRUNED if outcome.state == PRUNED else
                        TrialState.FAIL)
        self.saved()
        self.say(f"trial {trial.number} ({shown}) "
                 + ("was " if outcome.state == PRUNED else "failed: ") + outcome.message)

    def failures(self) -> list[str]:
        """Why each trial that counts did not complete: "trial 3: <its failure>"."""
        return [f"trial {t.number}: {t.user_attrs.get('failure') or t.state.name.lower()}"
                for t in self.study.get_trials(deepcopy=False)
                if t.state.name != "RUNNING"
                and not (t.user_attrs.get(OPEN) and t.state.name == "FAIL")]
