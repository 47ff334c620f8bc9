"""The end of a study, done once by whoever ends it (``st-hpo run``, its local supervisor, or the final job
of a SLURM array): keep only the best model, score it on the test set, close the parent run, write reports."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["finish_study"]

logger = logging.getLogger(__name__)


def finish_study(session: Any, *, budget_met: bool, stop_reason: str | None = None) -> None:
    """End the study of ``session``: the parent run ends FINISHED when the budget is met, FAILED when the
    workers gave up (``stop_reason``), else KILLED. A failure of any step here is a warning, never an error:
    the trials are in the storage, and ``st-hpo sync``/``test`` can redo what is missing."""
    keep_only_best_model(session)
    if budget_met:
        score_test(session)
    session.close("FINISHED" if budget_met else ("FAILED" if stop_reason else "KILLED"))
    write_study_reports(session)


def keep_only_best_model(session: Any) -> None:
    """Delete saved models left by trials that are not the best (a worker killed between save and tell)."""
    if not session.definition.keep_best_model:
        return
    from st_hpo._execution._best_model import keep_only_best

    try:
        keep_only_best(session.study, session.output_dir)
    except Exception as exc:  # noqa: BLE001 - a storage outage here must not hide how the run ended
        logger.warning("could not clean up the saved models: %s", exc)


def score_test(session: Any) -> None:
    """Score the kept best model and the base model on the held-out test set, when the study has one."""
    from st_hpo._execution._resources import pick_device
    from st_hpo._execution._test_score import has_test, score_on_test

    if not has_test(session.definition):
        return
    try:
        score_on_test(session.study, session.definition, session.resources,
                      device=pick_device(session.validated.base_args), tracker=session.tracker)
    except Exception as exc:  # noqa: BLE001 - the study's result stands; `st-hpo test` can score it later
        logger.warning("could not score the best model on the test set: %s", exc)


def write_study_reports(session: Any) -> None:
    """Plots, CSV and summary on the parent run; a failure here never fails the run."""
    if session.tracker is None:
        return
    from st_hpo._results._reports import write_reports

    try:
        write_reports(session.study, session.tracker, session.definition.objective,
                      session.study.user_attrs.get("st_hpo.base_model_value"),
                      local_dir=session.output_dir / "reports")
    except Exception as exc:  # noqa: BLE001 - reports must never fail a run
        logger.warning("could not write the study reports: %s", exc)
