"""The Python API behind the CLI: validate a study, run it, read its results."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from st_hpo._study import Study

__all__ = ["StudyResult", "run_study", "validate_study"]


@dataclasses.dataclass(frozen=True)
class StudyResult:
    """Where a study stands after :func:`run_study` returns."""

    study_name: str
    output_dir: Path
    storage: str
    tracking_uri: str | None
    parent_run_id: str | None
    n_complete: int
    n_pruned: int
    n_fail: int
    best_trial_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    base_model_value: float | None
    interrupted: bool
    budget_met: bool


def validate_study(study: Study) -> None:
    """Check ``study`` without training (see ``st-hpo validate``); raise StudyDefinitionError on a problem."""
    from st_hpo._resources import StudyResources
    from st_hpo._validate import validate_study as _validate

    with tempfile.TemporaryDirectory(prefix="st-hpo-validate-") as tmp:
        _validate(study, StudyResources(study), output_dir=tmp)


def run_study(
    study: Study,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    output_dir: str | Path | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    study_name: str | None = None,
    pruner: str | None = None,
    baseline: bool | None = None,
    progress: bool = True,
) -> StudyResult:
    """Validate ``study`` and run trials until ``n_trials`` have finished in total (resuming if it exists).

    Args:
        n_trials: the total number of finished (complete or pruned) trials to reach; defaults to the
            study's ``n_trials``. A study that already has them does nothing; a larger number extends it.
        timeout: stop starting trials after this many seconds.
        output_dir: holds the storage, the MLflow store and the trials' output; default
            ``st-hpo-runs/<study name>``.
        storage: an Optuna storage (``*.journal`` path, ``sqlite:///...``, ``postgresql://...``);
            default a journal file in ``output_dir``.
        tracking_uri: an MLflow tracking URI; default a SQLite file in ``output_dir``.
        study_name: run under another name than ``study.name``.
        pruner: override the study's pruner by name (``median``, ``hyperband``, ...).
        baseline: override the study's ``baseline`` (run the base arguments first).
        progress: print a line per trial to stderr.

    A Ctrl-C (or SIGTERM, under the CLI) stops cleanly: the running trial is failed, its run KILLED,
    and the result says ``interrupted``; run again to resume.
    """
    from st_hpo._execution._loop import work
    from st_hpo._execution._session import SessionOptions, StudySession
    from st_hpo._progress import Progress
    from st_hpo._trial import WorkerInfo

    options = SessionOptions(output_dir=output_dir, storage=storage, tracking_uri=tracking_uri,
                             study_name=study_name, pruner=pruner, baseline=baseline)
    session = StudySession.open(study, options)
    budget = n_trials or session.definition.n_trials
    session.study.set_user_attr("st_hpo.n_trials", budget)
    bar = Progress(budget=budget, enabled=progress)
    loop = None
    try:
        loop = work(session, budget=budget, timeout=timeout, worker=WorkerInfo(), progress=bar)
    finally:
        session.close("FINISHED" if loop is not None and loop.budget_met else "KILLED")
    return summarize(session, interrupted=loop.interrupted, budget_met=loop.budget_met)


def summarize(session: Any, *, interrupted: bool, budget_met: bool) -> StudyResult:
    """A :class:`StudyResult` from an open session."""
    study = session.study
    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    best = study.best_trial if count["COMPLETE"] else None
    return StudyResult(
        study_name=study.study_name,
        output_dir=session.output_dir,
        storage=session.storage_url,
        tracking_uri=session.tracking_uri,
        parent_run_id=session.tracker.parent_run_id if session.tracker else None,
        n_complete=count["COMPLETE"],
        n_pruned=count["PRUNED"],
        n_fail=count["FAIL"],
        best_trial_number=best.number if best else None,
        best_value=best.value if best else None,
        best_params=dict(best.params) if best else {},
        base_model_value=study.user_attrs.get("st_hpo.base_model_value"),
        interrupted=interrupted,
        budget_met=budget_met,
    )
