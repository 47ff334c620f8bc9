"""st-hpo: hyperparameter search for sentence-transformers training.

Write a study file that defines ``study = st_hpo.Study(...)``, then ``st-hpo run FILE``: Optuna proposes
trials, each trains a fresh model with a clone of the base arguments, and MLflow shows one parent run per
study and one child run per trial.
"""

from st_hpo._api import StudyResult, join_study, run_study, validate_study
from st_hpo._choice import Choice
from st_hpo._confirm import ConfirmResult, confirm_study
from st_hpo._loading import load_study_file
from st_hpo._register import RegisterResult, register_best
from st_hpo._reports import report_study
from st_hpo._results import BestTrial, best_trial, export_best
from st_hpo._retrain import RetrainResult, retrain_best
from st_hpo._study import Study
from st_hpo._test_score import TestScore, score_best_on_test
from st_hpo.exceptions import (
    NoResultError,
    SearchSpaceError,
    StHpoError,
    StorageError,
    StudyDefinitionError,
    StudyFileError,
    TrackingError,
    TrialError,
)

__version__ = "0.1.0"

__all__ = [
    "BestTrial",
    "Choice",
    "ConfirmResult",
    "NoResultError",
    "RegisterResult",
    "RetrainResult",
    "SearchSpaceError",
    "StHpoError",
    "StorageError",
    "Study",
    "StudyDefinitionError",
    "StudyFileError",
    "StudyResult",
    "TestScore",
    "TrackingError",
    "TrialError",
    "__version__",
    "best_trial",
    "confirm_study",
    "export_best",
    "join_study",
    "load_study_file",
    "register_best",
    "report_study",
    "retrain_best",
    "run_study",
    "score_best_on_test",
    "validate_study",
]
