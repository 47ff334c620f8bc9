"""Validation before any training: every mistake that can be found without spending a GPU second.

:func:`validate_study` walks a study through :data:`CHECKS`, in order, and returns the
:class:`ValidatedStudy`. Each check takes the :class:`~st_hpo._validation._state.Validation` state (the study,
its loaded resources, and what the checks before it worked out) and raises one
:class:`~st_hpo.exceptions.StHpoError` naming the value, the rule and the fix; a few only log what a setting
costs. What needs no resources (names, types, ranges of the study's own fields) is checked where the
``Study`` is made, in ``_definition``; what needs the base arguments, the datasets, a model, the loss or the
evaluators is here.
"""

from __future__ import annotations

from collections.abc import Callable

from st_hpo._definition._args import arguments_off_the_gpu
from st_hpo._definition._resources import StudyResources
from st_hpo._definition._study import Study
from st_hpo._validation._arguments import check_base_args, check_best_metric, check_checkpoints, check_space
from st_hpo._validation._baseline import check_unsampled_baseline
from st_hpo._validation._datasets import check_datasets, check_prompts
from st_hpo._validation._evaluations import check_cadence, check_subset
from st_hpo._validation._kind import build_probe, check_kind_of_parts, resolve_study_kind
from st_hpo._validation._loss import check_loss_on_rows, check_loss_params
from st_hpo._validation._objective import check_objective
from st_hpo._validation._state import ValidatedStudy, Validation, evaluations_per_trial, objective_key
from st_hpo._validation._test_objective import check_test_objective

__all__ = ["CHECKS", "ValidatedStudy", "evaluations_per_trial", "objective_key", "validate_study"]

#: The checks, in the order they run: the first problem stops validation. The cheap ones first; the ones
#: that build a model (the probe: one sample of the space) and run the loss and the evaluators after.
CHECKS: tuple[Callable[[Validation], None], ...] = (
    resolve_study_kind,        # the model kind (a model factory with no declared kind builds the probe)
    check_base_args,           # the base arguments build with the kind's class, values in range
    check_space,               # the space's names and values against them; enqueued trials inside it
    check_loss_params,         # every sampled loss. name is a parameter of the loss it goes to
    check_best_metric,         # no best checkpoint loaded at the end, no best metric never reported
    check_datasets,            # none empty, labels finite, a loss dict keyed like the train datasets
    check_prompts,             # prompts name columns or datasets of the train data
    build_probe,               # one sample of the space and its model, for the checks below
    check_kind_of_parts,       # the loss classes and an evaluator instance are of the study's kind
    check_loss_on_rows,        # every loss trains one batch of two rows of each train dataset
    check_unsampled_baseline,  # the factories build from the baseline trial's params
    check_objective,           # the evaluator reports the objective (on a few eval rows)
    check_test_objective,      # the test evaluator reports the test metric (on a few test rows)
    check_cadence,             # logs what the evaluations cost next to st-hpo's schedule
    check_checkpoints,         # logs that checkpoints only cost time
    check_subset,              # intermediate_eval_rows can be honoured
)


def validate_study(study: Study, resources: StudyResources, *, output_dir: str,
                   on_cpu: bool = False) -> ValidatedStudy:
    """Check everything about ``study`` that can be checked without training; raise on the first problem.

    ``on_cpu``: for a process that never trains (a supervisor whose workers own the GPUs): the loss probe
    runs on the CPU and no training arguments built here touch the GPU, so that the process holds no CUDA
    context (:func:`~st_hpo._definition._args.arguments_off_the_gpu`).
    """
    state = Validation(study, resources, output_dir, on_cpu)
    with arguments_off_the_gpu(on_cpu):  # a supervisor's validation holds no CUDA context
        for check in CHECKS:
            check(state)
        validated = state.validated()
    state.probe = None  # the probe's model goes before any trial trains
    return validated
