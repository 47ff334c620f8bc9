"""The end of a study, done once by whoever ends it (``st-hpo run``, its local supervisor, or the final job
of a SLURM array): keep only the best model, score it on the test set, close the parent run, write reports."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from st_hpo._definition._resources import pick_device
from st_hpo._execution._best_model import keep_only_best, saved_best_model
from st_hpo._execution._test_score import recorded_test_values, score_on_test
from st_hpo._results._reports import write_reports
from st_hpo._tracking._census import study_census
from st_hpo._tracking._schema import BASE_MODEL_VALUE_KEY
from st_hpo._validation._test_objective import has_test

if TYPE_CHECKING:
    from st_hpo._execution._session import StudySession

__all__ = ["finish_by_worker", "finish_study"]

logger = logging.getLogger(__name__)


def finish_study(session: StudySession, *, budget_met: bool, stop_reason: str | None = None) -> None:
    """End the study of ``session``: the parent run ends FAILED when there is a ``stop_reason`` (the workers
    gave up, or the budget was met with no complete trial), FINISHED when the budget is met, else KILLED.
    A failure of any step here is a warning, never an error: the trials are in the storage, and
    ``st-hpo sync``/``test`` can redo what is missing. A Ctrl-C or SIGTERM during it ends the parent run
    KILLED and stops; running the command again does this phase again."""
    try:
        keep_only_best_model(session)
        if budget_met:
            score_test(session)
        write_study_reports(session)
    except KeyboardInterrupt:
        session.end_parent("KILLED")
        raise
    session.close("FAILED" if stop_reason else ("FINISHED" if budget_met else "KILLED"))


def finish_by_worker(session: StudySession) -> None:
    """The end of a study whose budget a worker without a supervisor met (``st-hpo worker``): what
    ``run_study`` does at its end, so that the test score is of the best trial, not of an earlier one.

    The test score needs the best trial's model: a worker on a machine that does not hold it says so
    (``st-hpo test`` there scores it) and leaves the score to that machine."""
    keep_only_best_model(session)
    if study_census(session.study).complete and has_test(session.definition) \
            and not session.definition.is_multi_objective \
            and recorded_test_values(session.study)[0] is None:
        if saved_best_model(session.study) is not None:
            score_test(session)
        else:
            logger.warning("the study's best trial has no test score yet and its model is not kept on this "
                           "machine: run `st-hpo test` where it is kept")
    session.close("FINISHED")
    write_study_reports(session)


def keep_only_best_model(session: StudySession) -> None:
    """Delete saved models left by trials that are not the best (a worker killed between save and tell)."""
    if not session.definition.keep_best_model:
        return

    try:
        keep_only_best(session.study, session.output_dir)
    except Exception as exc:  # noqa: BLE001 - a storage outage here must not hide how the run ended
        logger.warning("could not clean up the saved models: %s", exc)


def score_test(session: StudySession) -> None:
    """Score the kept best model and the base model on the held-out test set, when the study has one."""
    if not has_test(session.definition):
        return
    try:
        score_on_test(session.study, session.definition, session.resources,
                      device=pick_device(session.validated.base_args), tracker=session.tracker)
    except Exception as exc:  # noqa: BLE001 - the study's result stands; `st-hpo test` can score it later
        logger.warning("could not score the best model on the test set: %s", exc)


def write_study_reports(session: StudySession) -> None:
    """Plots, CSV and summary on the parent run; a failure here never fails the run."""
    if session.tracker is None:
        return

    try:
        write_reports(session.study, session.tracker, session.definition.objective,
                      session.study.user_attrs.get(BASE_MODEL_VALUE_KEY),
                      local_dir=session.output_dir / "reports")
    except Exception as exc:  # noqa: BLE001 - reports must never fail a run
        logger.warning("could not write the study reports: %s", exc)
