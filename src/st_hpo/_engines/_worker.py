"""A worker started from a plan (``st-hpo worker --plan PLAN.json``), and the end of a study it names
(``--finish``: the final job of a SLURM array)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._definition._loading import load_study_file
from st_hpo._engines import ended_reason
from st_hpo._execution._plan import read_plan, slot_for_this_process
from st_hpo._execution._progress import Progress, finished_of
from st_hpo._execution._recovery import recover_stale_trials
from st_hpo._results._finish import finish_study
from st_hpo._tracking._census import take_census

if TYPE_CHECKING:
    from st_hpo._execution._plan import WorkerPlan

__all__ = ["finish_from_plan", "work_from_plan"]

logger = logging.getLogger(__name__)


def _open(plan: WorkerPlan, worker_name: str, *, trains_here: bool = True) -> Any:
    from st_hpo._execution._session import SessionOptions, StudySession

    study = load_study_file(plan.study_file).replace(name=plan.study_name)
    options = SessionOptions(output_dir=plan.output_dir, storage=plan.storage, tracking_uri=plan.tracking_uri,
                             role="worker", worker_name=worker_name, trains_here=trains_here,
                             pruner=plan.options.get("pruner"),
                             intermediate_eval_rows=plan.options.get("intermediate_eval_rows"),
                             keep_best_model=plan.options.get("keep_best_model"))
    return StudySession.open(study, options)


def work_from_plan(plan_path: str | Path, *, slot: str | None = None, progress: bool | None = None) -> Any:
    """Join the run the plan describes as its slot ``slot`` (None: ``SLURM_ARRAY_TASK_ID``, else the first)
    and run trials until the study's budget is met, the plan's deadline, or Ctrl-C; returns the loop's
    :class:`st_hpo._execution._loop.LoopResult`. A slot whose study already met its budget returns at once."""
    from st_hpo._execution._loop import work
    from st_hpo._execution._trial import WorkerInfo

    plan = read_plan(plan_path)
    name = plan.slot(slot_for_this_process(slot)).name
    session = _open(plan, name)
    shown = plan.progress if progress is None else progress
    bar = Progress(budget=plan.budget, enabled=shown, worker=name)
    return work(session, budget=plan.budget, timeout=plan.timeout(), worker=WorkerInfo(name=name), progress=bar,
                engine_ended=ended_reason)


def finish_from_plan(plan_path: str | Path) -> bool:
    """End the study of the plan once its workers are done: fail the trials of workers the engine says
    ended, then keep the best model, score it, close the parent run, write the reports (see
    :func:`st_hpo._results._finish.finish_study`); True when the budget was met."""
    plan = read_plan(plan_path)
    session = _open(plan, "finish", trains_here=False)
    recover_stale_trials(session.study, engine_ended=ended_reason)
    trials = session.study.get_trials(deepcopy=False)
    finished = take_census(trials).finished
    running = [t.number for t in trials if t.state.name == "RUNNING"]
    if running:
        logger.warning("trial(s) %s still RUNNING after every worker ended; `st-hpo sync` fails them once "
                       "their workers are known to be gone", running)
    met = finished >= plan.budget
    finish_study(session, budget_met=met)
    logger.info("study %r ended: %s", plan.study_name, finished_of(finished, plan.budget))
    return met
