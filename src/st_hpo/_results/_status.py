"""What ``st-hpo status`` shows: every trial of a stored study as a row (state as st-hpo shows it, value,
params, duration, where it ran, why it stopped, what it kept), with the study's census, budget and kind.

A row's keys are those of ``st-hpo status --json``:

    number, state, params, value, duration_seconds, baseline, error, mlflow_run_id,
    progress (fraction of training its last evaluation reached), worker, host, best, model_dir (the best
    trial's kept model, when it is on this machine), peak_gpu_reserved_mb, worker_gone (a RUNNING trial
    whose worker on this host is gone), gpu, engine_ref, side_metrics, mini_batch_size, resumed_from,
    values (one per objective, in order; None unless complete), infeasible (the constraints a complete trial
    broke, in words; None when feasible), pareto (on the Pareto front of a multi-objective study)

In a multi-objective study ``value`` is the first objective's, ``best`` is false (there is no one best:
``pareto`` marks the front) and ``model_dir`` is shown for the trials of the front.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path
from typing import Any

from st_hpo._execution._best_model import best_number
from st_hpo._execution._recovery import current_host, worker_alive
from st_hpo._results._read import shown_params, trial_duration
from st_hpo._tracking._census import Census, is_cancelled, shown_state, take_census
from st_hpo._tracking._front import intermediate_values, study_front, trial_values
from st_hpo._tracking._schema import (
    BASELINE_ATTR,
    ENGINE_REF_ATTR,
    ERROR_ATTR,
    INFEASIBLE_ATTR,
    KIND_ATTR,
    MINI_BATCH_ATTR,
    MODEL_DIR_ATTR,
    N_TRIALS_KEY,
    PEAK_GPU_RESERVED_MB_KEY,
    PID_KEY,
    RESUMED_FROM_ATTR,
    RUN_ATTR,
    SIDE_METRICS_ATTR,
    TAG_GPU_KEY,
    TAG_HOST_KEY,
    TAG_WORKER_KEY,
)

__all__ = ["StudyStatus", "study_status", "worker_gone"]


@dataclasses.dataclass(frozen=True)
class StudyStatus:
    """Where a stored study stands: its trials as rows (see the module docstring), their census, the budget
    (finished trials in total) and the model kind."""

    rows: list[dict[str, Any]]
    census: Census
    budget: int
    kind: str


def study_status(study: Any, n_trials: int) -> StudyStatus:
    """The status of the Optuna study ``study`` (``n_trials``: the study file's budget, for a study that
    recorded none): every trial (cancelled ones left out) as a row, its census, budget and model kind."""
    trials = study.get_trials(deepcopy=False)
    best = best_number(study, trials)
    front = {t.number for t in study_front(study, trials)} if len(study.directions) > 1 else set()
    now = datetime.datetime.now()
    rows = []
    for t in trials:
        if is_cancelled(t):
            continue  # asked by a worker when others had filled the budget; it never ran
        duration = trial_duration(t, now)
        model_dir = t.user_attrs.get(MODEL_DIR_ATTR)
        values = trial_values(t)
        kept = t.number == best or t.number in front
        rows.append({
            "number": t.number, "state": shown_state(t), "params": shown_params(t),
            "value": values[0] if values else None,
            "duration_seconds": duration, "baseline": bool(t.user_attrs.get(BASELINE_ATTR)),
            "error": t.user_attrs.get(ERROR_ATTR), "mlflow_run_id": t.user_attrs.get(RUN_ATTR),
            # how far training got: the last evaluation's step is per-mille of training done
            "progress": max(steps) / 1000 if (steps := intermediate_values(t)) else None,
            "worker": t.user_attrs.get(TAG_WORKER_KEY), "host": t.user_attrs.get(TAG_HOST_KEY),
            "best": t.number == best,
            "model_dir": model_dir if kept and model_dir and Path(model_dir).is_dir() else None,
            # on a GPU: what the trial needed, to size --trials-per-gpu by
            "peak_gpu_reserved_mb": t.user_attrs.get(PEAK_GPU_RESERVED_MB_KEY),
            # a RUNNING trial whose worker on this host is gone: the next run or worker fails it
            "worker_gone": t.state.name == "RUNNING" and worker_gone(t.user_attrs),
            "gpu": t.user_attrs.get(TAG_GPU_KEY),
            # where its worker ran, as the engine names it: slurm:<job>_<task>, ray:<actor>, local:<pid>
            "engine_ref": t.user_attrs.get(ENGINE_REF_ATTR),
            # what the kind's evaluators report besides the objective (a sparse model's active dimensions)
            "side_metrics": t.user_attrs.get(SIDE_METRICS_ATTR),
            # a GradCache loss's mini-batch as trained (lowered where a step ran out of memory)
            "mini_batch_size": t.user_attrs.get(MINI_BATCH_ATTR),
            # a retry of an interrupted trial: {"trial": N, "step": S}, the checkpoint it started from
            "resumed_from": t.user_attrs.get(RESUMED_FROM_ATTR),
            "values": values,
            "infeasible": t.user_attrs.get(INFEASIBLE_ATTR) or None,
            "pareto": t.number in front,
        })
    return StudyStatus(rows=rows, census=take_census(trials), budget=int(study.user_attrs.get(N_TRIALS_KEY, n_trials)),
                       kind=study.user_attrs.get(KIND_ATTR, "sentence-transformer"))


def worker_gone(attrs: dict[str, Any]) -> bool:
    """True when the trial's worker ran on this host and its process no longer exists."""
    pid = attrs.get(PID_KEY)
    return bool(pid) and attrs.get(TAG_HOST_KEY) == current_host() and not worker_alive(attrs)
