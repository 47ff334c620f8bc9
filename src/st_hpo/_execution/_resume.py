"""Trials that survive interruption: checkpoints at evaluation points, and the retry from the last one.

With ``Study(resume_interrupted=True)`` (the default) every trial saves the trainer's own checkpoint (model,
optimizer, scheduler, gradient scaler, RNG states, trainer state with the data position) at each of its
evaluation points before the end of training (:class:`CheckpointSaver`). The trainer writes it as
``checkpoint-S`` in the trial's folder; once complete it is renamed to ``resume-S`` (one atomic rename on
the same file system), recorded on the trial (:data:`CHECKPOINT_ATTR`), and the previous one is deleted.
A kill during a save leaves at most a half-written ``checkpoint-S``, which nothing resumes from.

A trial stopped from outside (its worker killed, SIGTERM, Ctrl-C) is failed by whoever notices
(:func:`st_hpo._execution._recovery.fail_trial`, or the loop for Ctrl-C and SIGTERM), which then calls
:func:`queue_resume`: the trial's configuration is enqueued once more, as a new trial that starts from the
last checkpoint (:data:`RESUME_ATTR`), reports the interrupted trial's intermediate values up to there
(so the pruner compares it like any other trial), and records where it came from
(:data:`RESUMED_FROM_ATTR`, the MLflow tag ``st_hpo.resumed_from``). Only the process whose write moved the
trial to FAIL queues its retry, so a configuration is never queued twice. This mirrors Optuna's
``RetryFailedTrialCallback`` (same parameters enqueued, an attribute pointing back to the failed trial),
plus the checkpoint.

A retry interrupted again is retried from its newer checkpoint (or from the one it started from, if it
saved none), up to ``Study.max_resumes`` times per configuration. Checkpoints of a trial that ended on
its own (complete, pruned, failed) are deleted, and so is the checkpoint a retry started from.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from st_hpo._execution._callbacks import progress_step
from st_hpo._tracking._front import intermediate_values
from st_hpo._tracking._schema import (
    ARGS_OVERRIDE_ATTR,
    BASELINE_ATTR,
    CHECKPOINT_ATTR,
    CONFIRM_PREFIX,
    MAX_STEPS_KEY,
    POLICY_ATTR,
    RESUME_ATTR,
    RESUMED_FROM_ATTR,
    SCORE_TEST_ATTR,
    TAG_PREFIX,
    TAG_RESUMED_FROM_KEY,
    UNSAMPLED_ATTR,
)

if TYPE_CHECKING:
    from st_hpo._definition._study import Study

__all__ = ["CHECKPOINT_ATTR", "POLICY_ATTR", "RESUMED_FROM_ATTR", "RESUME_ATTR", "CheckpointSaver",
           "prepare_resume", "queue_resume", "record_policy", "remove_checkpoints", "resume_point", "restore_intermediate"]

logger = logging.getLogger(__name__)

#: The MLflow tag ``st_hpo.resumed_from`` (``trial-N@step-S``): the trial's run copies ``st_hpo.tag.*``.
_RESUMED_TAG_ATTR = TAG_RESUMED_FROM_KEY
#: The name of a complete, resumable checkpoint in a trial's folder (the trainer writes ``checkpoint-S``).
PREFIX = "resume-"
#: User attributes set when a trial is enqueued, that its retry must carry too (the values it trains with).
_CARRIED = (BASELINE_ATTR, UNSAMPLED_ATTR, ARGS_OVERRIDE_ATTR, SCORE_TEST_ATTR)


def record_policy(study: Any, definition: Study) -> None:
    """Keep the study file's resume settings in the storage, where whoever fails a trial reads them."""
    policy = {"resume_interrupted": bool(definition.resume_interrupted), "max_resumes": int(definition.max_resumes)}
    if study.user_attrs.get(POLICY_ATTR) != policy:
        study.set_user_attr(POLICY_ATTR, policy)


def _policy(study: Any) -> dict[str, Any]:
    return study.user_attrs.get(POLICY_ATTR) or {"resume_interrupted": False, "max_resumes": 0}


class CheckpointSaver(TrainerCallback):
    """Asks the trainer for a checkpoint at evaluations before the end of training, at most one per
    ``every_seconds`` of training, and puts each complete one into place (``resume-S``) for
    :func:`queue_resume`.

    Runs after :class:`~st_hpo._execution._callbacks.TrialReporter` (which decides the evaluations); the
    trainer saves right after it evaluates, so a checkpoint at step S comes after the value reported at S.
    The time of the saves is summed in ``save_seconds`` (kept as the trial's ``st_hpo.checkpoint_seconds``).
    """

    def __init__(self, trial: Any, trial_dir: Path, every_seconds: float = 0.0) -> None:
        self.trial, self.trial_dir, self.every_seconds = trial, Path(trial_dir), every_seconds
        self.requested: set[int] = set()
        self.saves = 0
        self.save_seconds = 0.0  #: time in the trainer's saves that st-hpo asked for
        self._started: float | None = None
        self._last: float | None = None  #: when training started, or the last checkpoint was saved

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._last = time.monotonic()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        due = self._last is None or time.monotonic() - self._last >= self.every_seconds
        if control.should_evaluate and state.global_step < state.max_steps and due:
            control.should_save = True
        if control.should_save:
            self.requested.add(int(state.global_step))

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if int(state.global_step) in self.requested:  # the trainer saves next
            self._started = time.perf_counter()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = int(state.global_step)
        if self._started is not None:
            self.save_seconds += time.perf_counter() - self._started
            self._started = None
        written = Path(args.output_dir) / f"checkpoint-{step}"
        if step not in self.requested or not written.is_dir():
            return
        target = self.trial_dir / f"{PREFIX}{step}"
        shutil.rmtree(target, ignore_errors=True)
        os.replace(written, target)  # complete now: a kill before this line leaves only checkpoint-S
        self.trial.set_user_attr(CHECKPOINT_ATTR, {"path": str(target), "step": step})
        self.saves += 1
        self._last = time.monotonic()
        for old in self.trial_dir.glob(f"{PREFIX}*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)


def resume_point(trial: Any) -> tuple[str | None, int]:
    """The checkpoint folder a trial resumes from and its step, or ``(None, 0)``: it starts at step 0.

    A checkpoint that is gone (deleted by hand, or on a file system this host does not see) is reported
    and the trial starts from step 0."""
    resume = trial.user_attrs.get(RESUME_ATTR)
    if not resume:
        return None, 0
    path = resume.get("checkpoint")
    if not path or not Path(path).is_dir():
        logger.warning("trial %d: the checkpoint of trial %s at step %s is gone (%s); it trains from step 0",
                       trial.number, resume.get("trial"), resume.get("step"), path)
        return None, 0
    return path, int(resume["step"])


def restore_intermediate(trial: Any, reporter: Any) -> None:
    """Report a retry's inherited intermediate values (the interrupted trial's, up to its checkpoint) to
    Optuna, so that the pruner compares the retry at those points like any other trial."""
    resume = trial.user_attrs.get(RESUME_ATTR) or {}
    for point, value in sorted((int(k), float(v)) for k, v in (resume.get("values") or {}).items()):
        reporter.report(value, point)


def prepare_resume(trainer: Any, trial: Any, reporter: Any, study: Any) -> tuple[str | None, CheckpointSaver | None]:
    """Add the :class:`CheckpointSaver` to ``trainer`` (after ``reporter``: it decides where the trial
    evaluates) when ``study`` (a :class:`~st_hpo.Study`) resumes interrupted trials; for a retry, report
    its inherited values. Returns the checkpoint to pass to ``trainer.train`` (None: from step 0) and the saver."""
    checkpoint, _ = resume_point(trial)
    saver = None
    if study.resume_interrupted:
        saver = CheckpointSaver(trial, Path(trainer.args.output_dir), 60.0 * study.checkpoint_every_minutes)
        trainer.add_callback(saver)
    if checkpoint is not None:
        restore_intermediate(trial, reporter)
    return checkpoint, saver


def remove_checkpoints(trial: Any, trial_dir: Path) -> None:
    """Delete an ended trial's checkpoints (the trainer's and st-hpo's) and the one it resumed from."""
    for pattern in ("checkpoint-*", f"{PREFIX}*"):
        for path in Path(trial_dir).glob(pattern):
            shutil.rmtree(path, ignore_errors=True)
    source = (trial.user_attrs.get(RESUME_ATTR) or {}).get("checkpoint")
    if source:
        shutil.rmtree(source, ignore_errors=True)


def _latest(frozen: Any) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The interrupted trial's latest complete checkpoint (its own, else the one it resumed from) and
    what it resumed (empty for a first run)."""
    resume = frozen.user_attrs.get(RESUME_ATTR) or {}
    own = frozen.user_attrs.get(CHECKPOINT_ATTR)
    if own and Path(own["path"]).is_dir():
        return {"trial": frozen.number, "step": int(own["step"]), "checkpoint": own["path"]}, resume
    if resume.get("checkpoint") and Path(resume["checkpoint"]).is_dir():
        return {k: resume[k] for k in ("trial", "step", "checkpoint")}, resume
    return None, resume


def queue_resume(study: Any, frozen: Any) -> int | None:
    """Queue the retry of ``frozen``, a trial just failed because it was stopped from outside; returns how
    many times its configuration has been resumed with this one, or None when nothing was queued (resuming
    is off, ``max_resumes`` is reached, or it saved no checkpoint): its checkpoints are then deleted.

    Call it only from the process whose write failed the trial (that write succeeds once)."""
    policy = _policy(study)
    point, resume = _latest(frozen)
    resumes = int(resume.get("resumes", 0)) + 1
    if not policy["resume_interrupted"] or point is None or resumes > int(policy["max_resumes"]):
        if point is not None or resume:
            _delete_all(frozen, point)
        return None
    max_steps = int(frozen.user_attrs.get(MAX_STEPS_KEY) or 1)
    upto = progress_step(point["step"], max_steps)
    values = {str(k): v for k, v in intermediate_values(frozen).items() if k <= upto}
    attrs = {k: frozen.user_attrs[k] for k in _CARRIED if k in frozen.user_attrs}
    attrs.update({k: v for k, v in frozen.user_attrs.items() if k.startswith((TAG_PREFIX, CONFIRM_PREFIX))})
    attrs.update({
        RESUME_ATTR: {**point, "resumes": resumes, "values": values},
        RESUMED_FROM_ATTR: {"trial": point["trial"], "step": point["step"]},
        _RESUMED_TAG_ATTR: f"trial-{point['trial']}@step-{point['step']}",
    })
    study.enqueue_trial(dict(frozen.params), user_attrs=attrs, skip_if_exists=False)
    stale = resume.get("checkpoint")
    if stale and stale != point["checkpoint"]:  # the retry saved a newer one: the older is of no more use
        shutil.rmtree(stale, ignore_errors=True)
    logger.warning("trial %d: its configuration is queued again, to resume from trial %d's checkpoint at "
                   "step %d (resume %d of at most %d)", frozen.number, point["trial"], point["step"], resumes,
                   policy["max_resumes"])
    return resumes


def _delete_all(frozen: Any, point: dict[str, Any] | None) -> None:
    own = frozen.user_attrs.get(CHECKPOINT_ATTR)
    folders = {p for p in (own and own.get("path"), point and point.get("checkpoint"),
                           (frozen.user_attrs.get(RESUME_ATTR) or {}).get("checkpoint")) if p}
    for path in folders:
        shutil.rmtree(path, ignore_errors=True)
