"""The evaluation schedule: at which fractions of training every trial of a study evaluates, and the Optuna
step each evaluation reports at.

Trials compare like with like: st-hpo decides the evaluation points itself. From the *base* arguments'
schedule, or where they set none from the study's pruner (evaluations only where it can decide,
:func:`pruner_fractions`), it derives the fractions of training at which every trial evaluates
(:func:`evaluation_fractions`); each trial evaluates at the trainer steps of those fractions for its own
step count and reports at the fraction's per-mille (:func:`progress_step`), so every trial of a study
reports at the same Optuna steps whatever its batch size or dataset size. Pure arithmetic: no torch, no
transformers.
"""

from __future__ import annotations

import math
from typing import Any

from st_hpo._definition._study import DEFAULT_PRUNER

__all__ = ["FALLBACK_FRACTIONS", "MEDIAN_FRACTIONS", "PROGRESS_SCALE", "RUNG_MIN_RESOURCE", "RUNG_REDUCTION_FACTOR",
           "evaluation_fractions", "progress_step", "pruner_fractions"]

#: Optuna's intermediate values are indexed by training progress in per-mille (0..1000), not by the raw
#: step: trials with different batch sizes (so different step counts) are compared at the same fraction
#: of their training, which is what the pruners assume.
PROGRESS_SCALE = 1000


def progress_step(global_step: int, max_steps: int) -> int:
    """The Optuna step (per-mille of training done) of a trainer step."""
    return round(PROGRESS_SCALE * global_step / max(max_steps, 1))


#: Successive halving and hyperband in st-hpo's units (per-mille of training): the first rung at 1/9 of
#: training, each next one 3 times further (1/9, 1/3, then the end of training, where st-hpo never prunes).
RUNG_MIN_RESOURCE = 111
RUNG_REDUCTION_FACTOR = 3
#: Where the median pruner (and a pruner of st-hpo's that wraps it) compares trials: each point is a decision.
MEDIAN_FRACTIONS = (0.25, 0.5, 0.75)
#: An Optuna pruner object from the study file: st-hpo cannot know where it decides, so a few points.
FALLBACK_FRACTIONS = (0.25, 0.5, 0.75)


def pruner_fractions(pruner: Any) -> tuple[float, ...]:
    """The fractions of training at which ``pruner`` (a study's ``pruner`` field) can act, the end of
    training (1.0) included; ``(1.0,)`` for no pruner: the final evaluation alone.

    Successive halving and hyperband decide at their rungs (all hyperband brackets' rungs are those of its
    first bracket: 1/9 and 1/3 of training); the median pruner at each of :data:`MEDIAN_FRACTIONS`; a
    pruner object at :data:`FALLBACK_FRACTIONS` (set ``eval_strategy``/``eval_steps`` to choose others).
    """
    name = DEFAULT_PRUNER if pruner is None else pruner
    if name == "none" or type(name).__name__ == "NopPruner":
        return (1.0,)
    if name in ("successive-halving", "hyperband"):
        points, rung = [], RUNG_MIN_RESOURCE
        while rung < PROGRESS_SCALE - 1:  # a rung at the end is no decision: st-hpo never prunes there
            points.append(rung / PROGRESS_SCALE)
            rung *= RUNG_REDUCTION_FACTOR
        return (*points, 1.0)
    if name in ("median", "patient"):
        return (*MEDIAN_FRACTIONS, 1.0)
    return (*FALLBACK_FRACTIONS, 1.0)


def evaluation_fractions(base_args: Any, train_rows: int, pruner: Any = None) -> tuple[float, ...]:
    """The fractions of training (0 < f <= 1) at which every trial of the study evaluates.

    Derived from the base arguments and the study's ``pruner`` only, so they are the same for every trial.
    Base arguments that set no cadence (``eval_strategy="no"``, the transformers default) get st-hpo's
    schedule, :func:`pruner_fractions`: evaluations only where the pruner can decide, plus the final one.
    A cadence the user set is kept: a fractional ``eval_steps`` (0.125) gives k x 0.125; an integer one
    is converted with the base arguments' step count; ``eval_strategy="epoch"`` gives the end of each
    epoch. The end of training (1.0) is always one.
    """
    strategy = str(getattr(base_args.eval_strategy, "value", base_args.eval_strategy))
    if strategy == "no":
        return pruner_fractions(pruner)
    per_step = max(base_args.per_device_train_batch_size * base_args.gradient_accumulation_steps, 1)
    per_epoch = max(math.ceil(train_rows / per_step), 1)
    if base_args.max_steps and base_args.max_steps > 0:
        steps = base_args.max_steps
    else:
        steps = max(math.ceil(per_epoch * base_args.num_train_epochs), 1)
    if strategy == "epoch":
        every = per_epoch / steps
    else:
        every = base_args.eval_steps or base_args.logging_steps or 1
        every = every if every < 1 else every / steps
    fractions = [k * every for k in range(1, math.floor(1 / every + 1e-9) + 1)]
    return (*(f for f in fractions if f < 1 - 1e-9), 1.0)
