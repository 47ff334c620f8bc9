"""st-hpo: hyperparameter search for sentence-transformers training.

Write a study file that defines ``study = st_hpo.Study(...)``, then ``st-hpo run FILE``: Optuna proposes
trials, each trains a fresh model with a clone of the base arguments, and MLflow shows one parent run per
study and one child run per trial.
"""

from st_hpo._api import StudyResult, run_study, validate_study
from st_hpo._loading import load_study_file
from st_hpo._study import Study
from st_hpo.exceptions import (
    SearchSpaceError,
    StHpoError,
    StorageError,
    StudyDefinitionError,
    TrackingError,
    TrialError,
)

__version__ = "0.1.0"

__all__ = [
    "SearchSpaceError",
    "StHpoError",
    "StorageError",
    "Study",
    "StudyDefinitionError",
    "StudyResult",
    "TrackingError",
    "TrialError",
    "__version__",
    "load_study_file",
    "run_study",
    "validate_study",
]
