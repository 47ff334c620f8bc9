"""One trial: sample, clone the arguments, build a fresh model and loss, train, report, clean up.

Nothing of one trial reaches another: the arguments are a new object (``dataclasses.replace``), the
model a fresh copy of the base weights, the loss and the reporting callback new instances; the trainer,
model, optimizer and CUDA cache are released in a ``finally``, whether the trial completed, was pruned
or failed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._definition import _args, _space
from st_hpo._definition._baseline import baseline_values
from st_hpo._definition._costs import TIMED_BEFORE_TRAINING, weighed_costs
from st_hpo._definition._datasets import for_one_trainer
from st_hpo._definition._resources import StudyResources
from st_hpo._definition._schedule import evaluation_fractions
from st_hpo._execution import _best_model, _memory
from st_hpo._execution._callbacks import Diverged, TrialReporter
from st_hpo._execution._costs import PeakMemory, cost_inputs, encode_ms, measure_costs
from st_hpo._execution._objectives import pruning_for, read_values
from st_hpo._execution._recovery import current_host
from st_hpo._execution._resume import prepare_resume, remove_checkpoints
from st_hpo._execution._trial_run import TrialRun, start_run
from st_hpo._tracking._census import OUT_OF_MEMORY
from st_hpo._tracking._record import shown_params, store_config
from st_hpo._tracking._schema import (
    ARGS_OVERRIDE_ATTR,
    BASELINE_ATTR,
    BASELINE_UNSAMPLED_ATTR,
    CHECKPOINT_SECONDS_KEY,
    COSTS_ATTR,
    INFEASIBLE_ATTR,
    PREFIX,
    SCORE_TEST_ATTR,
    SIDE_METRICS_ATTR,
    TEST_VALUE_ATTR,
    UNSAMPLED_ATTR,
)
from st_hpo._validation import ValidatedStudy
from st_hpo._validation._test_objective import test_metric
from st_hpo.exceptions import TrialError

if TYPE_CHECKING:
    from st_hpo._tracking._mlflow import MlflowTracker

__all__ = ["BASELINE_ATTR", "UNSAMPLED_ATTR", "TrialContext", "TrialOutcome", "WorkerInfo", "run_trial"]

logger = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """Who runs the trial: tagged on every trial's run and kept in the trial's attributes."""

    name: str = "main"
    host: str = dataclasses.field(default_factory=current_host)
    pid: int = dataclasses.field(default_factory=os.getpid)
    gpu: str = dataclasses.field(default_factory=lambda: os.environ.get("CUDA_VISIBLE_DEVICES", ""))


@dataclasses.dataclass
class TrialContext:
    """What every trial of one worker process shares (read-only for the trials)."""

    validated: ValidatedStudy
    resources: StudyResources
    tracker: MlflowTracker  # MlflowTracker or None
    output_dir: Path
    worker: WorkerInfo
    progress: Any = None  # st_hpo._execution._progress.Progress, or None: no terminal lines
    #: the GradCache mini-batch that fitted, by (batch size, sequence length): kept for the worker's next trials
    mini_batches: dict[tuple[Any, Any], int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TrialOutcome:
    """How a trial ended: ``state`` is COMPLETE, PRUNED, FAIL (``diverged``: a NaN/inf loss or objective) or
    OUT_OF_MEMORY (told to Optuna as an infeasible PRUNED trial: see :mod:`st_hpo._execution._memory`)."""

    number: int
    state: str
    value: float | None = None
    error: str | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: the whole trial: model and loss built, training, evaluations, its model kept, its run written
    seconds: float = 0.0
    #: time in the trainer's ``train()`` less the evaluations made during it (training steps alone)
    train_seconds: float = 0.0
    #: time in the objective's evaluations: those during training and the final one
    eval_seconds: float = 0.0
    diverged: bool = False
    step: int = 0
    run_id: str | None = None
    model_dir: str | None = None  #: where the trial saved its model (it beat every complete trial)
    #: a complete trial's value of every objective, in order (a multi-objective study; ``value`` is the first)
    values: list[float] | None = None
    #: what the trained model costs, ``{"cost.encode_ms": ..., ...}`` (a complete trial's only; see
    #: :mod:`st_hpo._execution._costs`), measured before the trial's objective values are read
    costs: dict[str, float] = dataclasses.field(default_factory=dict)
    #: the GPU raised when its memory was released after the trial (a device-side assert, say): the CUDA
    #: context of this process is unusable, so it must not run another trial
    device_error: str | None = None
    #: the constraints a complete trial broke (``"cost.embedding_dim = 32 breaks <= 16"``), None when it kept them
    infeasible: str | None = None


def _trial_params(ctx: TrialContext, trial: Any) -> dict[str, Any]:
    """The values the trial trains with, recorded with the trial (``st_hpo.config``, see :mod:`st_hpo._tracking._record`)
    for every reader: MLflow, ``status``, ``best``, ``export``, ``retrain``, the reports."""
    space = ctx.validated.study.space
    unsampled = trial.user_attrs.get(BASELINE_UNSAMPLED_ATTR)
    if trial.user_attrs.get(UNSAMPLED_ATTR) or unsampled is not None:
        # the baseline: names whose base value the space can produce were queued as params (sampled here
        # from them); the others keep their base value; every name is recorded as the baseline has it, for
        # MLflow, `st-hpo status` and trials.csv
        base = baseline_values(space, ctx.validated.base_args, base_loss=ctx.validated.study.loss)
        if base is None:  # a define-by-run space: the base arguments, nothing to show
            store_config(trial, {}, {}, shown={})
            return {}
        keep = set(space) if unsampled is None else set(unsampled)  # UNSAMPLED_ATTR alone: an older baseline
        values, labels = _space.sample_config({k: v for k, v in space.items() if k not in keep}, trial)
        store_config(trial, values, labels, shown={**base.shown, **trial.params})
        return values
    values, labels = _space.sample_config(space, trial)
    store_config(trial, values, labels)
    return values


def run_trial(ctx: TrialContext, trial: Any) -> TrialOutcome:
    """Run one asked trial to its end and return how it ended (the caller tells Optuna).

    ``KeyboardInterrupt`` is not absorbed: the caller marks the trial FAIL and stops.
    """
    import optuna

    started = time.perf_counter()
    froze = ctx.resources.freeze_for_trial()
    _memory.reset_gpu_peak()
    outcome = TrialOutcome(number=trial.number, state="FAIL")
    run = TrialRun(None, None)
    interrupted = False
    try:
        params = _trial_params(ctx, trial)
        outcome.params = shown_params(trial)  # Choice labels, not their values
        if ctx.progress is not None:
            ctx.progress.trial_started(trial.number, outcome.params)
        overrides, loss_params, model_params = _args.split_params(params)
        overrides.pop(_space.LOSS_NAME, None)  # a sampled loss class: new_loss builds it
        overrides.update(trial.user_attrs.get(ARGS_OVERRIDE_ATTR) or {})
        args = _args.clone_args(ctx.validated.base_args, overrides,
                                output_dir=str(ctx.output_dir / "trials" / f"trial-{trial.number}"),
                                run_name=f"trial-{trial.number}")
        run = start_run(ctx, trial, outcome.params, args)
        outcome.run_id = run.run_id
        outcome.value, outcome.step = _train(ctx, trial, params, args, loss_params, model_params, run, outcome)
        outcome.state, outcome.infeasible = "COMPLETE", trial.user_attrs.get(INFEASIBLE_ATTR) or None
    except optuna.TrialPruned as exc:
        outcome.state, outcome.error = "PRUNED", str(exc)
    except Diverged as exc:  # a failure, not a pruned trial: its value says nothing about the configuration
        outcome.state, outcome.error, outcome.diverged = "FAIL", str(exc), True
    except KeyboardInterrupt:
        outcome.state, outcome.error = "FAIL", "interrupted (Ctrl-C or SIGTERM)"
        interrupted = True
        raise
    except Exception as exc:  # noqa: BLE001 - a user's code, a CUDA OOM: the study goes on
        if _memory.is_out_of_memory_error(exc):  # a result: the finally block frees the memory
            outcome.state, outcome.error = OUT_OF_MEMORY, _memory.out_of_memory_text(exc)
        else:
            outcome.state = "FAIL"
            outcome.error = f"{type(exc).__name__}: {exc}"
        logger.debug("trial %d failed:\n%s", trial.number, traceback.format_exc())
    finally:
        if not (interrupted and ctx.validated.study.resume_interrupted):  # else kept for the trial's retry
            remove_checkpoints(trial, ctx.output_dir / "trials" / f"trial-{trial.number}")
        outcome.seconds = time.perf_counter() - started
        outcome.device_error = _memory.release_memory(unfreeze=froze)
        timings = {"trial_seconds": outcome.seconds, "train_seconds": outcome.train_seconds,
                   "eval_seconds": outcome.eval_seconds}
        if outcome.device_error is None:
            timings.update(_memory.peak_gpu_memory())
        for name in ("trial_seconds", "train_seconds", "eval_seconds"):  # an interrupted trial's too
            trial.set_user_attr(f"{PREFIX}{name}", round(timings[name], 3))
        for name, value in timings.items():
            if name.startswith("peak_gpu"):  # kept with the trial, for `st-hpo status` and sizing workers per GPU
                trial.set_user_attr(f"{PREFIX}{name}", round(value, 1))
        run.metrics(timings, outcome.step)
    return outcome


def _train(ctx: TrialContext, trial: Any, params: dict[str, Any], args: Any, loss_params: dict[str, Any],
           model_params: dict[str, Any], run: TrialRun, outcome: TrialOutcome) -> tuple[float, int]:
    """Build model, loss and trainer; train; keep the model if it is the best so far (``outcome.model_dir``);
    return (objective, final step). ``outcome.train_seconds`` (in train(), its evaluations left out) and
    ``outcome.eval_seconds`` (every evaluation) are set however the trial ends."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    validated, resources = ctx.validated, ctx.resources
    memory = PeakMemory.start()  # on the CPU: the process's resident memory from here on
    model = resources.new_model(params, model_params)
    loss = resources.new_loss(model, params, loss_params)
    # evaluations during training on the study's eval subset (if any), the final one on the whole eval set
    subset = validated.evaluates_during_training and resources.subset_rows is not None
    on_progress = None
    if ctx.progress is not None:
        def on_progress(step: int, max_steps: int, value: float, on_subset: bool) -> None:
            ctx.progress.trial_evaluated(trial.number, step, max_steps, value, subset=on_subset)
    fractions = evaluation_fractions(validated.base_args, resources.train_rows, validated.study.pruner)
    reporter = TrialReporter(trial, validated.objective_metric, run.series, on_subset=subset,
                             on_progress=on_progress, fractions=fractions,
                             pruning=pruning_for(validated.study, trial, model,  # several objectives
                                                 lambda fresh: _encode_ms_before_training(ctx, fresh, args)))
    for part in loss.values() if isinstance(loss, dict) else [loss]:  # a dict: one loss per dataset
        reporter.watch_loss(part)
    trainer = validated.kind.trainer_class()(
        model=model, args=args, train_dataset=for_one_trainer(resources.train_dataset),
        eval_dataset=for_one_trainer(resources.eval_subset if subset else resources.eval_dataset)
        if validated.needs_eval_loss else None,
        loss=loss, evaluator=resources.intermediate_evaluator if subset else resources.evaluator,
        callbacks=[reporter],
    )
    for noisy in (PrinterCallback, ProgressCallback):  # st-hpo prints one line per trial instead
        trainer.remove_callback(noisy)
    # a GradCache loss's mini-batch: from what fitted before in this worker, halved on out of memory
    fitter = _memory.MiniBatchFitter(_memory.cached_losses(loss), ctx.mini_batches, _memory.shape_key(args, model),
                                     adjust=validated.study.adjust_mini_batch)
    fitter.wrap(trainer)
    checkpoint, saver = prepare_resume(trainer, trial, reporter, validated.study)  # a retry: where it resumes
    t0 = time.perf_counter()
    trained = False
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
        outcome.train_seconds = time.perf_counter() - t0 - reporter.eval_seconds
        trained = True
        step = int(trainer.state.global_step)
        if subset:  # the final evaluation, on the whole eval set
            reporter.final_on_full()
            trainer.evaluator = resources.evaluator
            reporter.evaluation_starts()
            trainer.evaluate(for_one_trainer(resources.eval_dataset) if validated.needs_eval_loss else None)
        elif reporter.last_step != step:  # the last evaluation was not at the end of training
            reporter.allow_prune = False
            reporter.evaluation_starts()
            trainer.evaluate()
        if reporter.last_value is None:
            raise TrialError(f"the evaluation reported no {validated.objective_metric!r}")
        side = validated.kind.side_metrics_of(reporter.last_metrics)  # e.g. a sparse model's active dimensions
        if side:
            trial.set_user_attr(SIDE_METRICS_ATTR, {k.removeprefix("eval_"): round(v, 4) for k, v in side.items()})
        outcome.costs = _measure_costs(ctx, trial, trainer.model, reporter.last_metrics, memory, outcome)
        run.metrics(outcome.costs, step)
        if trial.user_attrs.get(SCORE_TEST_ATTR):  # a confirmation trial of a study with a test set
            _score_on_test(ctx, trial, trainer.model)
        outcome.values = read_values(validated.study, trial, reporter.last_metrics, outcome.costs,
                                     lambda metrics: run.metrics(metrics, step))
        if validated.study.keep_best_model:
            outcome.model_dir = _keep_model(ctx, trial, trainer.model, reporter.last_value, outcome.values)
        return reporter.last_value, step
    finally:
        reporter.evaluation_ends()  # one cut short by an error or a Ctrl-C counts up to now
        if not trained:  # pruned or failed in train(): the time it trained until then
            outcome.train_seconds = max(time.perf_counter() - t0 - reporter.eval_seconds, 0.0)
        outcome.eval_seconds = reporter.eval_seconds
        if saver is not None:  # part of train_seconds: what resuming costs this trial
            trial.set_user_attr(CHECKPOINT_SECONDS_KEY, round(saver.save_seconds, 3))
        reporter.close()  # the curves of a pruned or failed trial up to where it stopped
        fitter.record(trial)
        trainer.model = None
        del trainer, model, loss, reporter, fitter


def _measure_costs(ctx: TrialContext, trial: Any, model: Any, metrics: dict[str, Any], memory: PeakMemory,
                   outcome: TrialOutcome) -> dict[str, float]:
    """The trained model's costs, kept with the trial (``st_hpo.costs``): those the study weighs that take
    passes of the model (``cost.encode_ms``) and every cheap one; the time it takes is in the trial's
    ``trial_seconds`` only (after the final evaluation, outside ``train_seconds`` and ``eval_seconds``)."""
    kind, resources, study = ctx.validated.kind, ctx.resources, ctx.validated.study
    costs = measure_costs(kind, model, lambda: cost_inputs(kind, resources.eval_dataset if resources.eval_dataset
                                                           is not None else resources.train_dataset),
                          train_seconds=outcome.train_seconds, memory=memory, metrics=metrics,
                          weighed=weighed_costs(study.objectives, study.constraints),
                          timed={k: v for k, v in (trial.user_attrs.get(COSTS_ATTR) or {}).items()
                                 if k in TIMED_BEFORE_TRAINING})  # timed on the fresh model: not again
    trial.set_user_attr(COSTS_ATTR, costs)
    return costs


def _encode_ms_before_training(ctx: TrialContext, model: Any, args: Any) -> float | None:
    """The freshly built model's ``cost.encode_ms`` on the trial's device (its weights do not change it)."""
    resources = ctx.resources
    inputs = cost_inputs(ctx.validated.kind, resources.eval_dataset if resources.eval_dataset is not None
                         else resources.train_dataset)
    if not inputs:
        return None
    model.to(args.device)
    return encode_ms(ctx.validated.kind, model, inputs)[0]


def _score_on_test(ctx: TrialContext, trial: Any, model: Any) -> None:
    """The trained model's score on the held-out test set, kept as the trial's ``st_hpo.test_value``."""
    metrics = ctx.resources.test_evaluator(model)
    trial.set_user_attr(TEST_VALUE_ATTR, float(metrics[test_metric(ctx.validated.study, metrics)]))


def _keep_model(ctx: TrialContext, trial: Any, model: Any, value: float, values: list[float] | None) -> str | None:
    """Save the trial's model when it beats every complete trial so far, or (several objectives) enters the
    Pareto front (see :mod:`st_hpo._execution._best_model`); never an infeasible trial's."""
    if trial.user_attrs.get(INFEASIBLE_ATTR):
        return None
    if not (_best_model.enters_front(trial.study, values) if values is not None
            else _best_model.beats_best(trial.study, value)):
        return None
    try:
        path = _best_model.save_model(model, ctx.output_dir, trial.number)
    except OSError as exc:  # a full disk must not cost the trial its result
        logger.warning("trial %d: could not save its model (%s); its result stands", trial.number, exc)
        return None
    trial.set_user_attr(_best_model.MODEL_DIR_ATTR, str(path))
    return str(path)
