"""The study loop of one worker process: ask, run one trial, tell, track; until the budget is met.

The budget is global: the study stops when ``n_trials`` trials have finished (COMPLETE or PRUNED),
whatever the number of workers sharing the storage; failed and out-of-memory trials do not count. A worker
does not start a trial that the budget cannot use (finished + running elsewhere already cover it).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import signal
import time
import warnings
from collections.abc import Callable
from typing import Any

from st_hpo._execution._best_model import keep_only_best
from st_hpo._execution._memory import mark_out_of_memory, nothing_fits
from st_hpo._execution._progress import Progress
from st_hpo._execution._recovery import SUPERVISOR_ENV, record_worker, recover_stale_trials
from st_hpo._execution._resume import queue_resume
from st_hpo._execution._session import StudySession
from st_hpo._execution._storage import HeartbeatThread
from st_hpo._execution._trial import TrialContext, TrialOutcome, WorkerInfo, run_trial
from st_hpo._execution._workers import supervisor_gone
from st_hpo._interrupts import forget_stop, stop_requested, uninterrupted
from st_hpo._tracking._census import OUT_OF_MEMORY, end_tags, study_census
from st_hpo._tracking._schema import (
    BASELINE_ATTR,
    CANCELLED_ATTR,
    DIVERGED_KEY,
    ERROR_ATTR,
    EVAL_SECONDS_KEY,
    KILLED_ATTR,
    RUN_ATTR,
    STOPPED_ATTR,
    SUPERVISOR_ATTR,
    TRAIN_SECONDS_KEY,
    TRIAL_SECONDS_KEY,
)
from st_hpo.exceptions import TrackingError, TrialError

__all__ = ["LoopResult", "work"]

logger = logging.getLogger(__name__)

#: Seconds between looks at the storage while other workers finish the last trials.
POLL_SECONDS = 2.0


@dataclasses.dataclass
class LoopResult:
    """What one worker's loop did."""

    trials_run: int = 0
    interrupted: bool = False
    budget_met: bool = False
    timed_out: bool = False
    #: why this worker stopped before the budget: its last ``max_failures_in_a_row`` trials failed
    gave_up: str | None = None


def _counts(study: Any) -> tuple[int, int]:
    """(finished, running) over all workers; cancelled and out-of-memory trials do not count."""
    census = study_census(study)
    return census.finished, census.running


def _surplus(study: Any, number: int, budget: int) -> bool:
    """True when trial ``number`` would take the study past its budget (several workers asked at once)."""
    finished, _ = _counts(study)
    running = sorted(t.number for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING")
    return number not in running[: max(budget - finished, 0)]


def _cancel(study: Any, trial: Any, why: str = "not needed: other workers filled the budget") -> None:
    """End a trial that will not run (the budget cannot use it; its worker was told to stop), giving back
    the queued configuration it popped, if any.

    ``study.ask()`` takes a WAITING trial (the baseline, a warm-start configuration) before sampling; a
    surplus trial that took one queues it again, with its user attrs, before it is ended, or it would be
    lost (queueing skips configurations that exist in any state). The cancelled trial is marked
    ``st_hpo.cancelled``: it never ran, and counts neither as a failure nor as a baseline run.
    """
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    fixed = frozen.system_attrs.get("fixed_params")
    if fixed is not None:
        study.enqueue_trial(dict(fixed), user_attrs=dict(frozen.user_attrs), skip_if_exists=False)
        if frozen.user_attrs.get(BASELINE_ATTR):
            trial.set_user_attr(BASELINE_ATTR, False)  # the queued copy is the baseline now
    trial.set_user_attr(CANCELLED_ATTR, True)
    trial.set_user_attr(ERROR_ATTR, why)
    study.tell(trial, state=_state("FAIL"))


def work(session: StudySession, *, budget: int, timeout: float | None, worker: WorkerInfo,
         progress: Progress, engine_ended: Callable[[str], str | None] | None = None) -> LoopResult:
    """Run trials of ``session.study`` until ``budget`` trials have finished, the timeout, or Ctrl-C.

    A stop (Ctrl-C, SIGTERM) ends the running trial FAIL and its run KILLED, and no trial starts after it:
    the loop also asks :func:`stop_requested`, since the ``KeyboardInterrupt`` of a stop can be lost (see
    :mod:`st_hpo._interrupts`), and holds stops back while it takes a trial and while it records one.
    ``engine_ended``: asks the engines about other workers' trials (see :func:`recover_stale_trials`).
    """
    ctx = TrialContext(session.validated, session.resources, session.tracker, session.output_dir, worker,
                       progress=progress)
    result = LoopResult()
    try:
        return _loop(session, ctx, result, budget, None if timeout is None else time.monotonic() + timeout,
                     engine_ended)
    except KeyboardInterrupt:  # between two trials, with none of this worker's open
        return _stopped(result)


def _loop(session: StudySession, ctx: TrialContext, result: LoopResult, budget: int, deadline: float | None,
          engine_ended: Callable[[str], str | None] | None) -> LoopResult:
    study, progress, worker = session.study, ctx.progress, ctx.worker
    failures = 0  # this worker's trials that failed one after the other
    out_of_memory = 0  # and that ran out of memory one after the other
    while True:
        if stop_requested():
            return _stopped(result)
        recover_stale_trials(study, engine_ended=engine_ended)
        finished, running = _counts(study)
        progress.set_finished(finished)
        if finished >= budget:
            result.budget_met = True
            return result
        if deadline is not None and time.monotonic() >= deadline:
            result.timed_out = True
            return result
        if finished + running >= budget:
            time.sleep(POLL_SECONDS)  # others run the last trials; take over if one of them fails
            continue
        with uninterrupted(deliver=False):  # a stop now must not leave the trial RUNNING and its worker gone
            trial = _take_trial(study, budget, worker)
        if trial is None:
            continue
        if stop_requested():  # it came while the trial was taken: give it back untouched
            _cancel(study, trial, "not started: its worker was told to stop (Ctrl-C or SIGTERM)")
            return _stopped(result)
        outcome, restore_sigterm = _run_one(ctx, trial)
        with uninterrupted(deliver=False):  # the trial's end is recorded whole; the loop's top then stops
            if outcome is None or stop_requested():  # stopped while it ran, whatever became of the exception
                _record_stopped(session, trial, restore_sigterm)
                return _stopped(result)
            _finish(session, trial, outcome)
        result.trials_run += 1
        progress.trial_done(outcome, study)
        if outcome.state != OUT_OF_MEMORY:  # out of memory is a result, never a failure in a row
            failures = failures + 1 if outcome.state == "FAIL" else 0
        out_of_memory = out_of_memory + 1 if outcome.state == OUT_OF_MEMORY else 0
        result.gave_up = (_give_up(outcome, failures, session.definition.max_failures_in_a_row, worker.name)
                          or nothing_fits(out_of_memory, outcome.error))
        if result.gave_up:
            return result


def _stopped(result: LoopResult) -> LoopResult:
    forget_stop()  # acted on: the caller reports the run as interrupted
    result.interrupted = True
    return result


def _take_trial(study: Any, budget: int, worker: WorkerInfo) -> Any:
    """Ask for a trial and mark it this worker's; None when the budget cannot use it (it is cancelled)."""
    with warnings.catch_warnings():  # st-hpo beats for its trials itself (HeartbeatThread)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        trial = study.ask()
    if stop_requested():  # the caller gives it back
        return trial
    if _surplus(study, trial.number, budget):
        _cancel(study, trial, "not needed: other workers filled the budget")
        return None
    if os.environ.get(SUPERVISOR_ENV):  # the supervisor that started this worker reports how it ends
        trial.set_user_attr(SUPERVISOR_ATTR, int(os.environ[SUPERVISOR_ENV]))
    record_worker(trial, worker.pid, worker.host)  # its host, start time, boot id, and last its pid
    return trial


def _run_one(ctx: TrialContext, trial: Any) -> tuple[TrialOutcome | None, Callable[[], None]]:
    """Run ``trial``: (its outcome, None when a Ctrl-C or SIGTERM stopped it; what puts SIGTERM's handler
    back, ignored from the moment it stopped until its end is recorded)."""
    try:
        with HeartbeatThread(trial.study._storage, trial._trial_id):  # noqa: SLF001
            return run_trial(ctx, trial), lambda: None
    except KeyboardInterrupt:
        restore_sigterm = _ignore_sigterm()  # a second SIGTERM must not leave the trial half-recorded
    return None, restore_sigterm


def _record_stopped(session: StudySession, trial: Any, restore_sigterm: Callable[[], None]) -> None:
    """Record a trial that a stop ended: FAIL, its run KILLED, with who stopped it; then put SIGTERM's
    handler back."""
    # recorded once the except block is left: its traceback, and any database cursor the interrupt left
    # open in it (with SQLite's lock on the file), are gone by then
    try:
        gc.collect()
        why = supervisor_gone() or "interrupted (Ctrl-C or SIGTERM)"
        spent = trial.user_attrs  # the times run_trial recorded as it stopped
        stopped = TrialOutcome(trial.number, "FAIL", error=why, seconds=spent.get(TRIAL_SECONDS_KEY, 0.0),
                               train_seconds=spent.get(TRAIN_SECONDS_KEY, 0.0),
                               eval_seconds=spent.get(EVAL_SECONDS_KEY, 0.0))
        _finish(session, trial, stopped, killed=True)
    finally:
        restore_sigterm()


def _ignore_sigterm() -> Callable[[], None]:
    """Ignore SIGTERM while an interrupted trial's end is recorded (a second Ctrl-C, SIGINT, still stops);
    returns what puts the handler back.

    A worker whose supervisor dies gets its parent-death signal once per thread of the supervisor that
    exits (Linux re-parents it each time): the later ones would interrupt the recording and leave the
    trial RUNNING in the storage and its MLflow run open."""
    try:
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are not ours to change
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


def _give_up(outcome: TrialOutcome, failures: int, limit: int | None, worker_name: str) -> str | None:
    """Why this worker must not run another trial, or None.

    Raises TrialError when the trial left the GPU in an error state: only a fresh process can train
    again (a supervisor starts one; a run in one process stops).
    """
    if outcome.device_error:
        raise TrialError(f"the GPU of this process is in an error state since trial {outcome.number} "
                         f"({outcome.device_error}); it cannot train again: run the same command again "
                         "to go on in a fresh process")
    if limit is None or failures < limit:
        return None
    who = "" if worker_name == "main" else f" of worker {worker_name}"
    return (f"the last {failures} trials{who} failed (max_failures_in_a_row={limit}); "
            f"the last, trial {outcome.number}: {outcome.error}")


def _state(name: str) -> Any:
    import optuna

    return optuna.trial.TrialState[name]


def _finish(session: StudySession, trial: Any, outcome: TrialOutcome, *, killed: bool = False) -> None:
    """Tell Optuna how the trial ended, then close its MLflow run and update the parent."""
    study = session.study
    if outcome.error:
        trial.set_user_attr(ERROR_ATTR, outcome.error[:2000])
    if killed:
        trial.set_user_attr(STOPPED_ATTR, True)
        trial.set_user_attr(KILLED_ATTR, True)  # its run ends KILLED, also if `sync` has to close it
    trial.set_user_attr(TRIAL_SECONDS_KEY, round(outcome.seconds, 3))
    trial.set_user_attr(TRAIN_SECONDS_KEY, round(outcome.train_seconds, 3))
    trial.set_user_attr(EVAL_SECONDS_KEY, round(outcome.eval_seconds, 3))
    if outcome.diverged:
        # FAIL, not PRUNED: a pruned trial keeps its last intermediate value, and the sampler would take the
        # diverged configuration for a fair one. Optuna's samplers skip FAIL trials entirely (TPE reads only
        # COMPLETE and PRUNED ones, constraints included); the constraint records the infeasibility in
        # Optuna's own terms, for samplers and analyses that read it.
        trial.set_user_attr(DIVERGED_KEY, True)
        trial.set_constraint(DIVERGED_KEY, 1.0)
    if outcome.state == OUT_OF_MEMORY:  # an infeasible PRUNED trial: one TPE reads, and steers away from
        mark_out_of_memory(trial)
        study.tell(trial, state=_state("PRUNED"))
    elif outcome.state == "COMPLETE":
        study.tell(trial, outcome.values if outcome.values is not None else outcome.value)
    else:
        study.tell(trial, state=_state(outcome.state))
    if killed:  # Ctrl-C or SIGTERM: this process failed it, so it queues its retry from the last checkpoint
        queue_resume(study, next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number))
    if session.definition.keep_best_model:
        keep_only_best(study, session.output_dir)
    tracker = session.tracker
    if tracker is None:
        return
    run_id = trial.user_attrs.get(RUN_ATTR)
    try:
        if run_id:
            tracker.end_trial(run_id, outcome.state, value=outcome.value if outcome.values is None else None,
                              error=outcome.error,
                              step=outcome.step, status="KILLED" if killed else None, tags=end_tags(trial))
        session.update_parent()
    except TrackingError as exc:
        logger.warning("%s; `st-hpo sync` will bring MLflow up to date", exc)

