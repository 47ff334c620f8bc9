"""st-hpo: hyperparameter search for sentence-transformers training.

Write a study file that defines ``study = st_hpo.Study(...)``, then ``st-hpo run FILE``: Optuna proposes
trials, each trains a fresh model with a clone of the base arguments, and MLflow shows one parent run per
study and one child run per trial.

Architecture: the packages are layers, each importing only the layers below it (``tests/test_layout.py``
checks every import, function-level ones too)::

    cli/, _api.py  the faces: the ``st-hpo`` command and the Python API (``__init__`` re-exports it)
    _engines/      where workers run: local processes, SLURM job arrays, Ray actors (one seam, _base.py)
    _results/      what a study found: the study handle, status, best, export, test score, reports,
                   retrain, register, confirm, sync, the end of a study
    _execution/    how trials run: session, the worker plan, loop, workers, recovery, the trial,
                   callbacks, resuming, out of memory, storages, progress, the kept best model
    _validation/   every check that needs the study's resources, run in one ordered list (CHECKS)
    _tracking/     what is recorded: the trial census, time figures, its record in the storage, MLflow runs
    _definition/   what a study is: Study, Choice, spaces, training arguments, datasets, loading, identity,
                   the resources it loads (datasets, evaluators, base weights), the evaluation schedule
    _kinds/        what differs by model kind (SentenceTransformer, CrossEncoder, ...)
    _interrupts.py stop requests that are never lost, and writes that a Ctrl-C or SIGTERM does not cut
    _tracking/_schema.py  every key st-hpo stores (its own lowest layer: every layer spells keys through it)
    exceptions.py  the errors, importable from every layer

Data flows up through them: a definition is validated and executed trial by trial, each trial is
recorded and tracked, and the results are read back.
"""

from st_hpo._api import StudyResult, join_study, run_study, validate_study
from st_hpo._definition._choice import Choice
from st_hpo._definition._loading import load_study_file
from st_hpo._definition._study import Study
from st_hpo._execution._test_score import TestScore
from st_hpo._results._confirm import ConfirmResult, confirm_study
from st_hpo._results._handle import StudyHandle, open_study
from st_hpo._results._read import BestTrial, best_trial, export_best
from st_hpo._results._register import RegisterResult, register_best
from st_hpo._results._reports import report_study
from st_hpo._results._retrain import RetrainResult, retrain_best
from st_hpo._results._scoring import score_best_on_test
from st_hpo.exceptions import (
    NoResultError,
    SearchSpaceError,
    StHpoError,
    StorageError,
    StudyDefinitionError,
    StudyFileError,
    TrackingError,
    TrialError,
    UsageError,
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
    "StudyHandle",
    "StudyResult",
    "TestScore",
    "TrackingError",
    "TrialError",
    "UsageError",
    "__version__",
    "best_trial",
    "confirm_study",
    "export_best",
    "join_study",
    "load_study_file",
    "open_study",
    "register_best",
    "report_study",
    "retrain_best",
    "run_study",
    "score_best_on_test",
    "validate_study",
]
