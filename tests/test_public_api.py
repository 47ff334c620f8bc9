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


def _cli_options() -> set[str]:
    """Every option of every ``st-hpo`` command (``--output-dir``, ``--workers``, ...)."""
    import argparse

    from st_hpo.cli._main import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices  # noqa: SLF001
    return {o for p in commands.values() for a in p._actions for o in a.option_strings  # noqa: SLF001
            if o.startswith("--") and o != "--help"}


#: Library errors that may name an option: next to the API's own name for it.
NAMES_BOTH = ("baseline=False (--no-baseline)",)


def test_library_errors_name_the_api_parameters_not_the_cli_options():
    """A library error says ``workers=0``, ``pass output_dir=``: what a Python caller typed (the CLI shows its
    options). An option may stand only in a whole command line to run (``st-hpo retrain FILE --register-as``)."""
    import ast
    import re
    from pathlib import Path

    options, src = _cli_options(), Path(st_hpo.__file__).parent
    named = []
    for path in sorted(src.rglob("*.py")):
        if "cli" in path.relative_to(src).parts:
            continue
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            message = ast.get_source_segment(text, node)
            for allowed in NAMES_BOTH:
                message = message.replace(allowed, "")
            for found in re.finditer(r"--[a-z][a-z-]*", message):
                before = message[:found.start()]
                in_command = "st-hpo " in before and ";" not in before[before.rindex("st-hpo "):]
                if found.group() in options and not in_command:
                    named.append(f"{path.relative_to(src)}:{node.lineno} {found.group()}")
    assert not named, "library errors that name CLI options: " + ", ".join(named)


def test_a_location_error_names_the_parameters_in_python_and_the_options_on_the_command_line(study_file, tmp_path):
    """``best_trial(study, output_dir=...)`` on a folder with no study says to pass ``output_dir=``/``storage=``;
    ``st-hpo best FILE --output-dir ...`` says ``--output-dir``/``--storage``."""
    import pytest

    from tests.helpers import run_cli

    path = study_file(name="nowhere")
    with pytest.raises(st_hpo.StorageError, match=r"or pass the output_dir= and storage= it ran with$"):
        st_hpo.best_trial(st_hpo.load_study_file(path), output_dir=tmp_path / "empty")
    with pytest.raises(st_hpo.StorageError, match=r"or pass the output_dir= and storage= it ran with$"):
        st_hpo.open_study(st_hpo.load_study_file(path), output_dir=tmp_path / "empty").status()
    proc = run_cli("best", str(path), "--output-dir", str(tmp_path / "empty"), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("or pass the --output-dir and --storage it ran with"), proc.stderr
