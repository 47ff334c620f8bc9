"""The base training arguments: built with the kind's class and in range, the space's names and values
against them, the enqueued trials inside the space, and the arguments the trials cannot honour (a best
checkpoint loaded at the end, a best metric never reported, checkpoints saved for nothing)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from st_hpo._definition import _args, _space
from st_hpo._definition._choice import Choice
from st_hpo.exceptions import StudyDefinitionError

if TYPE_CHECKING:
    from transformers import TrainingArguments

    from st_hpo._validation._state import Validation

__all__ = ["check_base_args", "check_best_metric", "check_checkpoints", "check_space"]

logger = logging.getLogger(__name__)


def check_base_args(state: Validation) -> None:
    """The study's ``args`` build an arguments object of the kind's class, with values in range."""
    state.base_args = _args.build_base_args(state.study.args, output_dir=state.output_dir,
                                            args_class=state.kind.args_class())
    _args.check_base_values(state.base_args)


def check_space(state: Validation) -> None:
    """The space's names and the values it can produce, against the base arguments; the enqueued trials."""
    state.names = _space.check_space(state.study.space, state.base_args)
    _space.check_enqueued(state.study.enqueue, state.study.space, state.base_args)


def check_best_metric(state: Validation) -> None:
    """No best checkpoint loaded at the end; no best metric the trials never report."""
    _check_best_metric(state.base_args, state.study.space, state.objective_metric, state.needs_eval_loss)


def check_checkpoints(state: Validation) -> None:
    """Checkpoints saved during a trial only cost time: say so."""
    _check_checkpoints(state.base_args)


def _check_best_metric(base_args: TrainingArguments, space: Any, key: str, needs_eval_loss: bool) -> None:
    """No checkpoint swapped in after the trial's value was taken; no ``metric_for_best_model`` (transformers
    sets ``"loss"`` for a plateau or greedy scheduler) that the trials' evaluations never report."""
    if base_args.load_best_model_at_end:
        raise StudyDefinitionError(
            "Study(args=...) sets load_best_model_at_end=True, but a trial's value is its model's score at the "
            "end of training, and st-hpo keeps that model (the best trial's) itself: an earlier checkpoint "
            "loaded at the end would not be the model scored; remove load_best_model_at_end"
        )
    metric = base_args.metric_for_best_model
    names_the_loss = metric is not None and (metric if metric.startswith("eval_") else f"eval_{metric}") == "eval_loss"
    if needs_eval_loss or metric is not None and not names_the_loss:
        return
    stepping = {"reduce_lr_on_plateau", "greedy"} & _scheduler_values(base_args, space)
    if metric is None and not stepping:
        return
    shown = metric or "loss"  # what transformers' post-init sets for a plateau or greedy scheduler
    why = f"metric_for_best_model is {shown!r}" + (
        " (transformers' default when a plateau or greedy lr scheduler steps on it)" if stepping and shown == "loss"
        else "")
    raise StudyDefinitionError(
        f"{why}, but the trials compute no eval loss: the objective is {key!r}, so st-hpo gives the trainer no "
        f"eval_dataset; set metric_for_best_model={key.removeprefix('eval_')!r} in Study(args=...)"
    )


def _scheduler_values(base_args: TrainingArguments, space: Any) -> set[str]:
    """Every ``lr_scheduler_type`` a trial can train with: the base one and what the space can sample."""
    values = [base_args.lr_scheduler_type]
    if isinstance(space, Mapping):
        dist = space.get("lr_scheduler_type")
        if isinstance(dist, Choice):
            values += list(dist.options.values())
        elif dist is not None:
            values += list(getattr(dist, "choices", ()))
    else:
        values += [v["lr_scheduler_type"] for v in _space.dry_samples(space) if "lr_scheduler_type" in v]
    return {str(getattr(v, "value", v)) for v in values}


def _check_checkpoints(base_args: TrainingArguments) -> None:
    strategy = str(getattr(base_args.save_strategy, "value", base_args.save_strategy))
    if strategy == "no":
        return
    every = f"every {base_args.save_steps:g} steps" if strategy == "steps" else f"at every {strategy}"
    logger.warning(
        "the base args save a checkpoint %s (save_strategy=%r, the transformers default when unset); st-hpo "
        "deletes a trial's checkpoints when it ends and keeps the best model itself, so they only cost time: "
        "set save_strategy='no'", every, strategy,
    )
