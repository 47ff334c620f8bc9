"""The trials' evaluations: what the cadence costs next to st-hpo's own schedule, and whether an
``intermediate_eval_rows`` subset can be built and pays."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from st_hpo._definition._compat import evaluator_base
from st_hpo._definition._schedule import FALLBACK_FRACTIONS, pruner_fractions
from st_hpo._definition._study import DEFAULT_PRUNER, Study
from st_hpo._validation._state import evaluations_per_trial
from st_hpo.exceptions import StudyDefinitionError

if TYPE_CHECKING:
    from transformers import TrainingArguments

    from st_hpo._definition._resources import StudyResources
    from st_hpo._validation._state import Validation

__all__ = ["MIN_EVALS_FOR_PRUNING", "check_cadence", "check_subset"]

logger = logging.getLogger(__name__)

#: Fewer evaluations per trial than this leave a pruner too few points to compare trials at.
MIN_EVALS_FOR_PRUNING = 3


def check_cadence(state: Validation) -> None:
    """Say what the evaluations cost (logs only)."""
    _check_cadence(state.study, state.resources, state.base_args, state.resources.train_rows)


def check_subset(state: Validation) -> None:
    """``intermediate_eval_rows`` needs an evaluator st-hpo can build on a subset, and an eval set."""
    _check_subset(state.study, state.resources, state.evaluates, state.needs_eval_loss)


def _pruner_name(pruner: Any) -> str:
    return str(pruner or DEFAULT_PRUNER) if isinstance(pruner, str) or pruner is None else type(pruner).__name__


def _check_cadence(study: Study, resources: StudyResources, base_args: TrainingArguments, train_rows: int) -> None:
    """Say what the evaluations cost: st-hpo's own schedule (base args with no cadence), or the cadence the
    user set next to what st-hpo's schedule would cost instead."""
    own = pruner_fractions(study.pruner)
    name = _pruner_name(study.pruner)
    if str(getattr(base_args.eval_strategy, "value", base_args.eval_strategy)) == "no":
        points = ", ".join(f"{f:.0%}" for f in own[:-1])
        if isinstance(study.pruner, str) or study.pruner is None or len(own) == 1:
            logger.info("trials evaluate %s (st-hpo's schedule for pruner %s)",
                        f"at {points} and the end of training" if points else "once, at the end of training", name)
        else:
            logger.warning("st-hpo cannot tell where pruner %s decides: trials evaluate at %s and the end of "
                           "training; set eval_strategy='steps' and eval_steps to choose other points", name,
                           ", ".join(f"{f:.0%}" for f in FALLBACK_FRACTIONS))
        return
    count = evaluations_per_trial(base_args, train_rows, study.pruner)
    rows = resources.subset_rows or (len(resources.eval_dataset) if resources.eval_dataset is not None else None)
    if rows is not None and count != len(own):
        (logger.warning if count > len(own) else logger.info)(
            "the base args evaluate %d times per trial on %d eval rows (%d x %d rows per trial); st-hpo's own "
            "schedule for pruner %s would evaluate %d times: leave eval_strategy unset to use it",
            count, rows, count, rows, name, len(own))
    if len(own) > 1 and count < MIN_EVALS_FOR_PRUNING:
        logger.warning(
            "the study has a pruner but a trial with the base args evaluates about %d time(s) during "
            "training, which leaves the pruner little to compare; leave eval_strategy unset (st-hpo evaluates "
            "where the pruner decides) or set eval_steps=0.125 (8 evaluations per trial)", count,
        )


def _check_subset(study: Study, resources: StudyResources, evaluates: bool, needs_eval_loss: bool) -> None:
    rows = study.intermediate_eval_rows
    if rows == "auto":  # st-hpo's choice: a subset only where it can build one and it pays
        if evaluates and resources.subset_rows is not None:
            logger.info("evaluations during training use %d of the %d eval rows (intermediate_eval_rows='auto'); "
                        "the final one of every trial uses all of them", resources.subset_rows,
                        len(resources.eval_dataset))
        return
    if rows is None:
        return
    if not needs_eval_loss and isinstance(study.evaluator, evaluator_base()):
        raise StudyDefinitionError(
            f"intermediate_eval_rows={rows} needs the evaluator as a callable (eval_dataset) -> evaluator, so "
            "st-hpo can build one on the subset; e.g. evaluator=lambda ds: EmbeddingSimilarityEvaluator("
            "ds['sentence1'], ds['sentence2'], ds['score'], name='sts-dev')"
        )
    if resources.eval_dataset is None:
        raise StudyDefinitionError(f"intermediate_eval_rows={rows} needs an eval_dataset; add one to the Study")
    if resources.subset_rows is None:
        logger.warning("intermediate_eval_rows=%d is not smaller than the eval set (%d rows): every evaluation "
                       "uses all of it", rows, resources.eval_rows)
    elif not evaluates:
        logger.warning("intermediate_eval_rows=%d has no effect: the base args never evaluate during training",
                       rows)
