"""Scoring a stored study's kept best model on its held-out test set now (``st-hpo test``).

How the test score is taken and recorded (also at the end of a run) is :mod:`st_hpo._execution._test_score`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from st_hpo._definition._resources import StudyResources, pick_device
from st_hpo._execution._test_score import TestScore, score_on_test
from st_hpo._kinds import stored_kind
from st_hpo._results._read import base_args_of
from st_hpo._tracking._schema import PARENT_ATTR
from st_hpo._validation._test_objective import has_test
from st_hpo.exceptions import StudyDefinitionError

if TYPE_CHECKING:
    from st_hpo._results._handle import StudyHandle

__all__ = ["score_best_on_test", "score_kept_best"]


def score_best_on_test(study: Any, *, output_dir: Any = None, storage: str | None = None,
                       tracking_uri: str | None = None, study_name: str | None = None,
                       track: bool = True, trial: int | None = None) -> TestScore:
    """Score a study's kept best model (``trial``: that trial's; a multi-objective study needs it, one of its
    Pareto front) and the base model on its test set now (``st-hpo test``; ``open_study(...).test()``).

    Records the values like the end of a run does (study attributes, the parent run's ``test_objective``
    and ``base_model_test_objective``). Raises StudyDefinitionError when the study has no test set.
    """
    from st_hpo._results._handle import open_study

    return open_study(study, output_dir=output_dir, storage=storage, tracking_uri=tracking_uri,
                      study_name=study_name).test(track=track, trial=trial)


def score_kept_best(handle: StudyHandle, *, track: bool = True, trial: int | None = None) -> TestScore:
    """Score the kept best model of the study ``handle`` holds, and the base model, on its test set now."""
    study = handle.study
    if not has_test(study):
        raise StudyDefinitionError(f"study {study.name!r} has no test set; add Study(test_dataset=..., "
                                   "test_evaluator=...) to the study file")
    optuna_study = handle.optuna_study
    tracker = None
    if track and optuna_study.user_attrs.get(PARENT_ATTR):
        tracker = handle.tracker()
        tracker.parent_run_id = optuna_study.user_attrs[PARENT_ATTR]

    kind = stored_kind(optuna_study)
    device = pick_device(base_args_of(study, str(handle.output_dir / "trials"), args_class=kind.args_class()))
    resources = StudyResources(study)
    resources.kind = kind
    from st_hpo._results._pareto import chosen_trial, is_multi_objective

    chosen = chosen_trial(optuna_study, trial) if trial is not None or is_multi_objective(optuna_study) else None
    score = score_on_test(optuna_study, study, resources, device=device, tracker=tracker, force=True,
                          chosen=chosen)
    assert score is not None
    return score
