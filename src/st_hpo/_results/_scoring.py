"""Scoring a stored study's kept best model on its held-out test set now (``st-hpo test``).

How the test score is taken and recorded (also at the end of a run) is :mod:`st_hpo._execution._test_score`.
"""

from __future__ import annotations

from typing import Any

from st_hpo._execution._resources import StudyResources, pick_device
from st_hpo._execution._test_score import TestScore, has_test, score_on_test
from st_hpo._results._read import StudyLocation, base_args_of, load_study
from st_hpo._tracking._schema import PARENT_ATTR
from st_hpo.exceptions import StudyDefinitionError

__all__ = ["score_best_on_test"]


def score_best_on_test(study: Any, *, output_dir: Any = None, storage: str | None = None,
                       tracking_uri: str | None = None, study_name: str | None = None,
                       track: bool = True, trial: int | None = None) -> TestScore:
    """Score a study's kept best model (``trial``: that trial's; a multi-objective study needs it, one of its
    Pareto front) and the base model on its test set now (``st-hpo test``).

    Records the values like the end of a run does (study attributes, the parent run's ``test_objective``
    and ``base_model_test_objective``). Raises StudyDefinitionError when the study has no test set.
    """
    if study_name:
        study = study.replace(name=study_name)
    if not has_test(study):
        raise StudyDefinitionError(f"study {study.name!r} has no test set; add Study(test_dataset=..., "
                                   "test_evaluator=...) to the study file")
    location = StudyLocation.resolve(study, output_dir=output_dir, storage=storage, tracking_uri=tracking_uri)
    optuna_study = load_study(study, location)
    tracker = None
    if track and optuna_study.user_attrs.get(PARENT_ATTR):
        from st_hpo._tracking import MlflowTracker

        tracker = MlflowTracker(location.tracking_uri, study.experiment, artifact_root=location.artifact_root)
        tracker.parent_run_id = optuna_study.user_attrs[PARENT_ATTR]
    from st_hpo._kinds import stored_kind

    kind = stored_kind(optuna_study)
    device = pick_device(base_args_of(study, str(location.output_dir / "trials"), args_class=kind.args_class()))
    resources = StudyResources(study)
    resources.kind = kind
    from st_hpo._results._pareto import chosen_trial, is_multi_objective

    chosen = chosen_trial(optuna_study, trial) if trial is not None or is_multi_objective(optuna_study) else None
    score = score_on_test(optuna_study, study, resources, device=device, tracker=tracker, force=True,
                          chosen=chosen)
    assert score is not None
    return score
