"""Loading a study file: a Python file that defines ``study = st_hpo.Study(...)`` at module level."""

from __future__ import annotations

import dataclasses
import re
import runpy
import sys
import traceback
from pathlib import Path

from st_hpo._definition._args import suggest_name
from st_hpo._definition._study import Study
from st_hpo._kinds import all_kinds
from st_hpo.exceptions import StudyDefinitionError, StudyFileError

__all__ = ["StudyFileError", "load_study_file"]  # StudyFileError lives in st_hpo.exceptions


#: Where the libraries check the values a study file gives them: an error raised there is a refused value,
#: told in one line (the file's line and the library's message), not a traceback through the library.
_VALUE_CHECKS = ("optuna/distributions.py", "transformers/training_args.py",
                 "transformers/utils/generic.py",  # the enums' "is not a valid IntervalStrategy"
                 "sentence_transformers/base/training_args.py",
                 "sentence_transformers/sentence_transformer/training_args.py")


#: What Python says when a dataclass is given a keyword it has no field for.
_UNKNOWN_KEYWORD = re.compile(r"^(\w*TrainingArguments)\.__init__\(\) got an unexpected keyword argument '(\w+)'$")


def _where(path: Path, resolved: str, exc: BaseException) -> str:
    mine = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == resolved]
    return f"study file {str(path)!r}" + (f", line {mine[-1].lineno}: {mine[-1].line.strip()!r}" if mine else "")


def _line_of(resolved: str, exc: BaseException) -> str:
    """`` (line N: 'code')``: where in the study file an error was raised (its last frame there), or ""."""
    mine = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == resolved]
    if not mine:
        return ""
    code = f": {mine[-1].line.strip()!r}" if mine[-1].line and mine[-1].line.strip() else ""
    return f" (line {mine[-1].lineno}{code})"


def _refuse_unknown_argument(path: Path, resolved: str, exc: BaseException) -> None:
    """A misspelt keyword of a training-arguments class (one of the model kinds'): one line, the close name."""
    match = _UNKNOWN_KEYWORD.match(str(exc)) if isinstance(exc, TypeError) else None
    if match is None:
        return
    from transformers import TrainingArguments

    classes = {cls.__name__: cls for cls in [TrainingArguments, *(kind.args_class() for kind in all_kinds())]}
    cls = classes.get(match.group(1))
    if cls is None:
        return
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    raise StudyDefinitionError(f"{_where(path, resolved, exc)}: {match.group(2)!r} is not an argument of "
                               f"{cls.__name__}{suggest_name(match.group(2), fields)}") from None


def _refuse_library_check(path: Path, resolved: str, exc: BaseException) -> None:
    _refuse_unknown_argument(path, resolved, exc)
    if not isinstance(exc, (ValueError, TypeError)):
        return
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames or not frames[-1].filename.replace("\\", "/").endswith(_VALUE_CHECKS):
        return
    where = _where(path, resolved, exc)
    message = str(exc).rstrip(".")
    if "log" in message and "low" in message:
        message += "; a log distribution needs low > 0: use e.g. low=1e-6, or log=False"
    raise StudyDefinitionError(f"{where}: {type(exc).__name__}: {message}") from None


def _refuse_syntax_error(path: Path, resolved: str, exc: BaseException) -> None:
    """A syntax error in the study file itself: its line and Python's message, not runpy's frames."""
    if not isinstance(exc, SyntaxError) or exc.filename != resolved:
        return
    code = f" {exc.text.strip()!r}:" if exc.text and exc.text.strip() else ""
    raise StudyDefinitionError(f"study file {str(path)!r}, line {exc.lineno}:{code} {type(exc).__name__}: "
                               f"{exc.msg}; fix the file (python -m py_compile {str(path)} checks it)") from None


def load_study_file(path: str | Path) -> Study:
    """Run the study file and return its module-level ``study``.

    Raises StudyFileError (with the file's own traceback) when the file raises, and StudyDefinitionError
    when it is missing or defines no ``Study``.
    """
    path = Path(path)
    if path.is_dir():
        raise StudyDefinitionError(f"study file {str(path)!r} is a folder; pass the path of a .py file")
    if not path.is_file():
        raise StudyDefinitionError(f"study file {str(path)!r} does not exist; pass the path of a .py file")
    resolved = str(path.resolve())
    sys.path.insert(0, str(path.resolve().parent))  # let the file import its neighbours
    try:
        namespace = runpy.run_path(resolved, run_name="__st_hpo_study__")
    except StudyDefinitionError:
        raise
    except BaseException as exc:  # noqa: BLE001 - anything the user's file raises, SystemExit included
        if isinstance(exc, KeyboardInterrupt):
            raise
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != resolved:
            tb = tb.tb_next  # drop runpy's frames: show the user's file first
        _refuse_syntax_error(path, resolved, exc)
        _refuse_library_check(path, resolved, exc)
        text = "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))
        first = (str(exc).strip().splitlines() or [""])[0]
        raise StudyFileError(
            f"study file {str(path)!r} failed to import: {type(exc).__name__}: {first}{_line_of(resolved, exc)}",
            text) from exc
    finally:
        try:
            sys.path.remove(str(path.resolve().parent))
        except ValueError:
            pass
    study = namespace.get("study")
    if study is None:
        raise StudyDefinitionError(
            f"study file {str(path)!r} defines no 'study'; add `study = st_hpo.Study(...)` at module level"
        )
    if not isinstance(study, Study):
        raise StudyDefinitionError(
            f"'study' in {str(path)!r} is a {type(study).__name__}, not an st_hpo.Study"
        )
    return study
