"""What every ``st-hpo`` command shares: the exit codes, and loading the study file a command names.

Here so that ``_main`` (parsing, errors), ``_commands`` and ``_review`` import it, and none of them another.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED"]

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _load(ns: argparse.Namespace) -> Any:
    from st_hpo._definition._loading import load_study_file

    if ns.verbose < 2:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)

    study = load_study_file(ns.study_file)
    if getattr(ns, "study_name", None):
        study = study.replace(name=ns.study_name)
    return study
