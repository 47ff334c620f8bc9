"""What every ``st-hpo`` command shares: the exit codes, and loading the study file a command names.

Here so that ``_main`` (parsing, errors), ``_commands`` and ``_review`` import it, and none of them another.
"""

from __future__ import annotations

import argparse
from typing import Any

from st_hpo._definition._loading import load_study_file
from st_hpo._results._handle import open_study

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "REVIEW_LOCATION_HELP", "add_trial_option", "RUN_LOCATION_HELP", "location_options", "quiet_optuna",
           "study_file"]

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

#: The location options' help in the commands that run or watch trials (run, worker, status, confirm, sync).
RUN_LOCATION_HELP = {
    "--output-dir": "study folder (default: st-hpo-runs/<study name>)",
    "--storage": "Optuna storage: a path ending in .journal, sqlite:///FILE or postgresql://USER@HOST/DB "
                 "(default: <output-dir>/optuna.journal)",
    "--study-name": "run under another name than the study file's",
    "--tracking-uri": "MLflow tracking URI, e.g. http://host:5000 (default: sqlite:///<output-dir>/mlflow.db)",
}
#: The same in the review commands (best, export, register, retrain, report, test, ui): where the study ran.
REVIEW_LOCATION_HELP = {
    "--output-dir": "the study's folder, as given to st-hpo run (default: st-hpo-runs/<name>)",
    "--storage": "the Optuna storage the study ran with (default: <output-dir>/optuna.journal)",
    "--study-name": "the study's name, when it ran under another name than the file's",
    "--tracking-uri": "the MLflow tracking URI the study ran with (default: sqlite:///<output-dir>/mlflow.db)",
}

def add_trial_option(p: argparse.ArgumentParser) -> None:
    """``--trial N``: the trial a command works on instead of the best one; a multi-objective study (no one
    best) needs it, a trial of its Pareto front (``st-hpo best`` lists them)."""
    p.add_argument("--trial", type=int, metavar="N", default=None,
                   help="work on trial N instead of the best one (a multi-objective study needs it: a trial of "
                   "its Pareto front, as st-hpo best lists them)")



def location_options(helps: dict[str, str], *, tracking: bool = True) -> argparse.ArgumentParser:
    """A parent parser of the options that say where a study is (``--tracking-uri`` only with ``tracking``)."""
    parent = argparse.ArgumentParser(add_help=False)
    for option in ("--output-dir", "--storage", "--study-name", *(("--tracking-uri",) if tracking else ())):
        parent.add_argument(option, help=helps[option])
    return parent


def study_file() -> argparse.ArgumentParser:
    """A parent parser for a command's own options, with the study file it names (to add the rest to)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("study_file")
    return parent


def quiet_optuna(ns: argparse.Namespace) -> None:
    """Optuna's own INFO lines only with -vv (st-hpo's progress says what they say)."""
    if ns.verbose < 2:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)


def _load(ns: argparse.Namespace) -> Any:

    quiet_optuna(ns)
    study = load_study_file(ns.study_file)
    if getattr(ns, "study_name", None):
        study = study.replace(name=ns.study_name)
    return study


def _handle(ns: argparse.Namespace) -> Any:
    """The study handle of a command's study file and location options (see :func:`st_hpo.open_study`)."""
    return open_study(_load(ns), output_dir=getattr(ns, "output_dir", None), storage=getattr(ns, "storage", None),
                      tracking_uri=getattr(ns, "tracking_uri", None))
