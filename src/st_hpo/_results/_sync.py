"""Bringing MLflow up to date with the Optuna storage after a run stopped (``st-hpo sync``, :func:`sync_study`).

The storage is the source of truth. Sync fails the trials whose worker is gone (as the next ``st-hpo run``
would), in the study and in its confirmation (``<name>.confirm``), and closes their runs at the time they
were last seen alive; it re-creates runs that are missing, writes what an MLflow outage kept back, and
ends the study's parent run when the process that held it open is gone.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._definition._study import Study
from st_hpo._execution._recovery import recover_stale_trials, runner_gone
from st_hpo._tracking import MlflowTracker
from st_hpo._tracking._census import take_census
from st_hpo._tracking._mlflow_sync import sync_runs
from st_hpo._tracking._schema import (
    KILLED_ATTR,
    LAST_SEEN_ATTR,
    N_TRIALS_KEY,
    PARENT_ATTR,
    RUNNER_ATTR,
    STOPPED_ATTR,
)

if TYPE_CHECKING:
    import optuna

    from st_hpo._results._handle import StudyHandle

__all__ = ["SyncResult", "sync_at", "sync_study"]

#: Where nothing says whether the run that holds the parent run open is alive (it ran on another host):
#: a parent run still RUNNING with no trial running and none ended for this long belongs to no live run.
ABANDONED_AFTER_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class SyncResult:
    """What :func:`sync_study` did."""

    tracking_uri: str
    #: MLflow runs created or closed: trial and confirmation runs, and the parent run when it was ended
    fixed: int
    #: how the parent run was ended ("FINISHED" or "KILLED"), or None when it was left as it was
    parent_ended: str | None = None


def sync_study(study: Study, *, output_dir: str | Path | None = None, storage: str | None = None,
               tracking_uri: str | None = None) -> SyncResult:
    """Make MLflow agree with the storage of ``study`` (as given to ``run_study``; ``open_study(...).sync()``);
    see the module."""
    from st_hpo._results._handle import open_study

    return open_study(study, output_dir=output_dir, storage=storage, tracking_uri=tracking_uri).sync()


def sync_at(handle: StudyHandle) -> SyncResult:
    """Make MLflow agree with the storage of the study ``handle`` holds (see :func:`sync_study`)."""
    from st_hpo._execution._recovery import recover_stale_trials

    study, optuna_study = handle.study, handle.optuna_study
    recover_stale_trials(optuna_study)  # a killed run's trials, as the next `run` would: FAIL
    tracker = handle.tracker()
    before = optuna_study.user_attrs.get(PARENT_ATTR)
    tracker.ensure_parent(optuna_study, {"study": study.name})
    fixed = sync_runs(tracker, optuna_study, study.objective)
    fixed += _sync_confirmation(optuna_study, tracker, study.objective)
    ended = _end_parent(optuna_study, tracker, study, made_here=tracker.parent_run_id != before)
    return SyncResult(tracking_uri=handle.tracking_uri, fixed=fixed + (ended is not None), parent_ended=ended)


def _sync_confirmation(optuna_study: optuna.Study, tracker: MlflowTracker, objective: str) -> int:
    """The runs of the study's confirmation (``st-hpo confirm``), whose process may have been killed too."""
    import optuna

    try:
        companion = optuna.load_study(study_name=f"{optuna_study.study_name}.confirm",
                                      storage=optuna_study._storage)  # noqa: SLF001 - the study's own storage
    except KeyError:
        return 0  # never confirmed
    recover_stale_trials(companion)
    tracker.run_kind = "confirm"
    try:
        return sync_runs(tracker, companion, objective)
    finally:
        tracker.run_kind = "trial"


def _end_parent(optuna_study: optuna.Study, tracker: MlflowTracker, study: Study, *,
                made_here: bool) -> str | None:
    """End the parent run when nothing runs the study: FINISHED when its budget is met, else KILLED (with the
    study's figures). Returns the status it was given, or None when it was left as it was."""
    trials = optuna_study.get_trials(deepcopy=False)
    if any(t.state.name == "RUNNING" for t in trials):
        return None
    if not made_here and not _abandoned(optuna_study, tracker, trials):
        return None
    from st_hpo._execution._session import log_study_figures

    log_study_figures(tracker, optuna_study)
    finished = take_census(trials).finished
    budget = int(optuna_study.user_attrs.get(N_TRIALS_KEY, study.n_trials))
    status = "FINISHED" if finished >= budget else "KILLED"
    tracker.set_parent_status(status, end_time=None if made_here else _last_sign_of_life(optuna_study, trials))
    return status


def _last_sign_of_life(optuna_study: Any, trials: list[Any]) -> int:
    """When the run that left the parent run RUNNING last showed it was alive (ms since the epoch): the
    latest of its start (:data:`RUNNER_ATTR`), a trial's start or end, and a trial's last beat
    (:data:`LAST_SEEN_ATTR`), so the parent run ends when that run died, not when it was synced."""
    runner = optuna_study.user_attrs.get(RUNNER_ATTR)
    signs = [float(runner["since"])] if isinstance(runner, dict) and "since" in runner else []
    for t in trials:
        # a trial failed by whoever found its worker dead (not by its worker) ended when that was noticed
        noticed = t.user_attrs.get(STOPPED_ATTR) and not t.user_attrs.get(KILLED_ATTR)
        ends = (t.datetime_start,) if noticed else (t.datetime_start, t.datetime_complete)
        signs += [d.timestamp() for d in ends if d is not None]
        if t.user_attrs.get(LAST_SEEN_ATTR) is not None:
            signs.append(float(t.user_attrs[LAST_SEEN_ATTR]))
    return int(min(max(signs, default=time.time()), time.time()) * 1000)


def _abandoned(optuna_study: optuna.Study, tracker: MlflowTracker, trials: list[Any]) -> bool:
    """True when the parent run says RUNNING but the process that ran the study is gone (it recorded itself
    on the study), or, where that cannot be told, when no trial ended for over a minute."""
    if tracker.parent_status() != "RUNNING":
        return False
    gone = runner_gone(optuna_study)
    if gone is not None:
        return gone
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    return bool(ends) and (datetime.datetime.now() - max(ends)).total_seconds() > ABANDONED_AFTER_SECONDS
