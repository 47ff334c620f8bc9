"""The public surface is exactly what __all__ lists, and every error derives from StHpoError."""

from __future__ import annotations

import st_hpo
from st_hpo import exceptions

EXPECTED = {
    "BestTrial", "Choice", "ConfirmResult", "NoResultError", "RegisterResult", "RetrainResult", "SearchSpaceError", "StHpoError",
    "StorageError", "Study", "StudyDefinitionError", "StudyFileError", "StudyHandle", "StudyResult", "TestScore", "TrackingError",
    "TrialError", "UsageError", "__version__", "best_trial", "confirm_study", "export_best", "join_study", "load_study_file",
    "open_study", "register_best", "report_study", "retrain_best", "run_study", "score_best_on_test", "validate_study",
}


def test_all_is_exact_and_importable():
    assert set(st_hpo.__all__) == EXPECTED
    assert st_hpo.__all__ == sorted(st_hpo.__all__)
    for name in st_hpo.__all__:
        assert hasattr(st_hpo, name), name
    public = {n for n in vars(st_hpo) if not n.startswith("_") and n not in ("annotations",)}
    modules = {n for n in public if type(getattr(st_hpo, n)).__name__ == "module"}
    assert public - modules - set(st_hpo.__all__) == set()


def test_exception_tree():
    for name in exceptions.__all__:
        assert issubclass(getattr(exceptions, name), st_hpo.StHpoError)
    assert issubclass(st_hpo.SearchSpaceError, st_hpo.StudyDefinitionError)
    assert issubclass(st_hpo.StudyFileError, st_hpo.StudyDefinitionError)
    assert issubclass(st_hpo.NoResultError, st_hpo.StorageError)
    from st_hpo._definition._loading import StudyFileError

    assert StudyFileError is exceptions.StudyFileError, "the old import path is the same class"
    drawn = {line.lstrip(" │├└─").split(" ")[0] for line in exceptions.__doc__.splitlines()}
    assert set(exceptions.__all__) <= drawn, "every class is drawn in the module's tree"


def test_study_is_keyword_only_and_frozen(tmp_path):
    import dataclasses

    import pytest

    with pytest.raises(TypeError):
        st_hpo.Study("name")  # type: ignore[misc]
    study = st_hpo.Study(name="s", model="m", train_dataset=list, loss=dict, evaluator=print,
                         objective="x", space={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.name = "other"  # type: ignore[misc]
