"""What every ``st-hpo`` command shares: the exit codes, and loading the study file a command names.

Here so that ``_main`` (parsing, errors), ``_commands`` and ``_review`` import it, and none of them another.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "add_trial_option"]

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def add_trial_option(p: argparse.ArgumentParser) -> None:
    """``--trial N``: the trial a command works on instead of the best one; a multi-objective study (no one
    best) needs it, a trial of its Pareto front (``st-hpo best`` lists them)."""
    p.add_argument("--trial", type=int, metavar="N", default=None,
                   help="work on trial N instead of the best one (a multi-objective study needs it: a trial of "
                   "its Pareto front, as st-hpo best lists them)")


def _load(ns: argparse.Namespace) -> Any:
    from st_hpo._definition._loading import load_study_file

    if ns.verbose < 2:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)

    study = load_study_file(ns.study_file)
    if getattr(ns, "study_name", None):
        study = study.replace(name=ns.study_name)
    return study


def _handle(ns: argparse.Namespace) -> Any:
    """The study handle of a command's study file and location options (see :func:`st_hpo.open_study`)."""
    from st_hpo._results._handle import open_study

    return open_study(_load(ns), output_dir=getattr(ns, "output_dir", None), storage=getattr(ns, "storage", None),
                      tracking_uri=getattr(ns, "tracking_uri", None))
