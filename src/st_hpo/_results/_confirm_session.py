"""The session of a confirmation's companion study (see :mod:`st_hpo._results._confirm`)."""

from __future__ import annotations

from st_hpo._execution._recovery import recover_stale_trials
from st_hpo._execution._session import StudySession
from st_hpo._tracking._mlflow_sync import sync_runs

__all__ = ["ConfirmSession"]


class ConfirmSession(StudySession):
    """The companion study's session: its trials are queued by :func:`confirm_study` only, its runs are
    tagged ``st_hpo.kind=confirm``, and it leaves the study's parent run (best value, counts) alone."""

    def prepare(self, *, sync: bool = True, score: bool = True) -> None:
        recover_stale_trials(self.study)
        if self.tracker is not None:
            self.tracker.run_kind = "confirm"
            if sync:  # the process that runs the confirmation; its workers leave MLflow's catch-up to it
                sync_runs(self.tracker, self.study, self.definition.objective)

    def update_parent(self) -> None:
        """The parent run's figures are the study's, not the confirmation's."""

    def end_parent(self, status: str) -> None:
        """The parent run is the study's: a confirmation never ends it."""
