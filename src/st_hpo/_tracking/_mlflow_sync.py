"""Bringing MLflow up to date with the Optuna storage, which is the truth: every trial gets its run, in the
state the storage holds.

A run that is missing (its process died before it made it, or MLflow was down) is made again from the trial's
records: its parameters, tags, intermediate curve, time figures and values; a run left RUNNING by a killed
worker is ended as the storage has its trial; what a trial could not write (its spool file, on this machine)
is written now. :func:`sync_runs` runs at the start and end of every ``st-hpo run`` and as ``st-hpo sync``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from st_hpo._tracking._census import OUT_OF_MEMORY, end_tags, shown_state
from st_hpo._tracking._front import intermediate_values, objective_names
from st_hpo._tracking._mlflow import ACCEPTED_STATUSES, MlflowTracker
from st_hpo._tracking._schema import (
    CANCELLED_ATTR,
    ERROR_ATTR,
    INTERMEDIATE_EVAL_KEY,
    KILLED_ATTR,
    LAST_SEEN_ATTR,
    MAX_STEPS_KEY,
    PREFIX,
    SYNCED_KEY,
    SYNCED_RUNS_ATTR,
    TAG_PREFIX,
    TRIAL_STATE_KEY,
)
from st_hpo._tracking._times import TIME_FIGURES

__all__ = ["sync_runs"]


def sync_runs(tracker: MlflowTracker, study: Any, objective_name: str) -> int:
    """Make MLflow agree with the Optuna storage; returns how many runs were created or fixed."""
    runs = tracker.trial_runs(study.study_name)
    names = objective_names(study)
    if not isinstance(objective_name, str):  # a multi-objective study's objectives: curves are the first's
        objective_name = names[0]
    fixed = 0
    made: dict[str, str] = {}
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get(CANCELLED_ATTR):
            continue
        state = shown_state(trial)
        run = runs.get(trial.number)
        if run is None:
            if state in ("WAITING", "RUNNING"):
                continue  # a running trial's own worker creates its run
            made[str(trial.number)] = _recreate(tracker, study.study_name, trial, objective_name, names)
            fixed += 1
            continue
        spooled = state != "RUNNING" and _replay_spool(tracker, run.info.run_id, trial)
        if state not in ("WAITING", "RUNNING") and not spooled:  # a killed trial's time, set after its run stopped
            _log_times(tracker, run.info.run_id, trial, run.data.metrics)
        if state in ACCEPTED_STATUSES and (
            run.info.status not in _accepted(trial) or run.data.tags.get(TRIAL_STATE_KEY) != state
        ):
            _end_as_stored(tracker, run.info.run_id, trial, names)
            fixed += 1
        elif spooled:
            fixed += 1
    if made:  # readers find a re-created run here: a finished trial's own run id cannot change
        study.set_user_attr(SYNCED_RUNS_ATTR, {**study.user_attrs.get(SYNCED_RUNS_ATTR, {}), **made})
    return fixed

def _end_as_stored(tracker: MlflowTracker, run_id: str, trial: Any, names: list[str]) -> None:
    state = shown_state(trial)
    error = _fail_reason(trial) if state in ("FAIL", OUT_OF_MEMORY) else None
    last_seen = trial.user_attrs.get(LAST_SEEN_ATTR)  # a dead worker's trial: when it last worked
    end_time = int(last_seen * 1000) if state == "FAIL" and last_seen else None
    values = trial.values or []
    if len(values) > 1 and state == "COMPLETE" and len(names) == len(values):  # several objectives
        tracker.log_metrics(run_id, {f"objective.{n.removeprefix('eval_')}": v for n, v in zip(names, values,
                                                                                          strict=True)},
                         _last_step(trial))
    tracker.end_trial(run_id, state, value=values[0] if len(values) == 1 else None, error=error,
                   step=_last_step(trial), end_time=end_time,
                   tags=end_tags(trial), status="KILLED" if trial.user_attrs.get(KILLED_ATTR) else None)

def _log_times(tracker: MlflowTracker, run_id: str, trial: Any, logged: Mapping[str, float]) -> None:
    """The trial's time figures (``trial_seconds``, ...) that its run lacks: a trial whose worker died
    gets its ``trial_seconds`` from recovery, after its run stopped being written."""
    figures = {name: trial.user_attrs[f"{PREFIX}{name}"] for name in TIME_FIGURES
               if f"{PREFIX}{name}" in trial.user_attrs and name not in logged}
    if figures:
        tracker.log_metrics(run_id, figures, _last_step(trial))

def _replay_spool(tracker: MlflowTracker, run_id: str, trial: Any) -> bool:
    """Write what the trial could not write to MLflow (its spool file, on this machine); True if any."""
    from st_hpo._tracking import _spool

    path = trial.user_attrs.get(_spool.SPOOL_ATTR)
    records = _spool.read(path)
    if not records:
        return False
    _spool.replay(tracker, run_id, records)
    Path(path).unlink(missing_ok=True)
    return True

def _recreate(tracker: MlflowTracker, study_name: str, trial: Any, objective_name: str, names: list[str]) -> str:
    """Make ``trial``'s run anew from the storage; returns its run id."""
    tags = {k: str(v) for k, v in trial.user_attrs.items() if k.startswith(TAG_PREFIX)}
    tags = {k.replace(TAG_PREFIX, PREFIX): v for k, v in tags.items()}
    tags[SYNCED_KEY] = "true"
    from st_hpo._tracking._record import (
        shown_params,  # _record imports the definition, which imports this
    )

    run_id = tracker.start_trial(study_name, trial.number, shown_params(trial), {}, tags)
    state = trial.state.name
    if state != "RUNNING" and _replay_spool(tracker, run_id, trial):  # everything the trial tried to write
        _end_as_stored(tracker, run_id, trial, names)
        return run_id
    max_steps = int(trial.user_attrs.get(MAX_STEPS_KEY, 1000))
    # per-mille -> steps; values measured on the eval subset keep their subset names
    curve_names = (f"subset_{objective_name}", "objective_subset") if tags.get(INTERMEDIATE_EVAL_KEY) \
        else (objective_name, "objective_intermediate")
    curve = [(dict.fromkeys(curve_names, value), round(progress * max_steps / 1000))
             for progress, value in sorted(intermediate_values(trial).items())]
    tracker.log_series(run_id, curve)
    if state != "RUNNING":
        _log_times(tracker, run_id, trial, {})
        _end_as_stored(tracker, run_id, trial, names)
    return run_id


def _accepted(trial: Any) -> set[str]:
    """The run statuses that agree with a finished trial (a stopped one's run is KILLED, see KILLED_ATTR)."""
    return {"KILLED"} if trial.user_attrs.get(KILLED_ATTR) else ACCEPTED_STATUSES[shown_state(trial)]


def _last_step(trial: Any) -> int:
    """The trainer step of a trial's last report (Optuna holds it in per-mille of training)."""
    progress = max(intermediate_values(trial), default=0)
    return round(progress * int(trial.user_attrs.get(MAX_STEPS_KEY, 1000)) / 1000)


def _fail_reason(trial: Any) -> str:
    return (trial.user_attrs.get(ERROR_ATTR) or trial.system_attrs.get("fail_reason")
        or "its worker vanished (no heartbeat within the grace period)")
