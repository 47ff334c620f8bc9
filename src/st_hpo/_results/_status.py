"""What ``st-hpo status`` shows: every trial of a stored study as a row (state as st-hpo shows it, value,
params, duration, where it ran, why it stopped, what it kept), with the study's census, budget and kind.

A row's keys are those of ``st-hpo status --json``:

    number, state, params, value, duration_seconds, baseline, error, mlflow_run_id,
    progress (fraction of training its last evaluation reached), worker, host, best, model_dir (the best
    trial's kept model, when it is on this machine), peak_gpu_reserved_mb, worker_gone (a RUNNING trial
    whose worker on this host is gone), gpu, engine_ref, side_metrics, mini_batch_size, resumed_from,
    costs (a complete trial's measured costs, ``{"cost.encode_ms": ..., ...}``; None for the others),
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

from st_hpo._definition._costs import is_cost
from st_hpo._execution._best_model import best_number
from st_hpo._execution._progress import finished_of
from st_hpo._execution._recovery import current_host, worker_alive
from st_hpo._results._read import trial_duration
from st_hpo._tracking._census import Census, is_cancelled, shown_state, take_census
from st_hpo._tracking._front import intermediate_values, study_front, trial_values
from st_hpo._tracking._record import run_id_of, shown_params
from st_hpo._tracking._schema import (
    BASELINE_ATTR,
    CONSTRAINTS_ATTR,
    COSTS_ATTR,
    ENGINE_REF_ATTR,
    ERROR_ATTR,
    INFEASIBLE_ATTR,
    KIND_ATTR,
    MINI_BATCH_ATTR,
    MODEL_DIR_ATTR,
    N_TRIALS_KEY,
    OBJECTIVES_ATTR,
    PEAK_GPU_RESERVED_MB_KEY,
    PID_KEY,
    RESUMED_FROM_ATTR,
    SIDE_METRICS_ATTR,
    SYNCED_RUNS_ATTR,
    TAG_GPU_KEY,
    TAG_HOST_KEY,
    TAG_WORKER_KEY,
)

__all__ = ["StudyStatus", "study_status", "trial_note", "weighs_costs", "worker_gone"]


@dataclasses.dataclass(frozen=True)
class StudyStatus:
    """Where a stored study stands: its trials as rows (see the module docstring), their census, the budget
    (finished trials in total) and the model kind; ``shows_costs``: the study weighs costs (several
    objectives, or a ``cost.`` objective or constraint), so the table shows them."""

    rows: list[dict[str, Any]]
    census: Census
    budget: int
    kind: str
    shows_costs: bool = False

    def headline(self) -> str:
        """One line: the kind, finished trials against the budget, and the count in each state."""
        c = self.census
        oom = f"{c.out_of_memory} out of memory, " if c.out_of_memory else ""
        return (f"{self.kind}: {finished_of(c.finished, self.budget)} ({c.complete} complete, {c.pruned} "
                f"pruned), {c.failed} failed, {oom}{c.running} running")

    @property
    def best_model_dir(self) -> str | None:
        """The best trial's kept model, when it is on this machine."""
        return next((r["model_dir"] for r in self.rows if r["best"]), None)


def study_status(study: Any, n_trials: int) -> StudyStatus:
    """The status of the Optuna study ``study`` (``n_trials``: the study file's budget, for a study that
    recorded none): every trial (cancelled ones left out) as a row, its census, budget and model kind."""
    trials = study.get_trials(deepcopy=False)
    best = best_number(study, trials)
    front = {t.number for t in study_front(study, trials)} if len(study.directions) > 1 else set()
    now = datetime.datetime.now()
    rows = []
    synced_runs = study.user_attrs.get(SYNCED_RUNS_ATTR, {})
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
            "error": t.user_attrs.get(ERROR_ATTR), "mlflow_run_id": run_id_of(t, synced_runs),
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
            # what the trained model costs (a complete trial's): cost.encode_ms, cost.embedding_dim, ...
            "costs": t.user_attrs.get(COSTS_ATTR),
            "values": values,
            "infeasible": t.user_attrs.get(INFEASIBLE_ATTR) or None,
            "pareto": t.number in front,
        })
    return StudyStatus(rows=rows, census=take_census(trials), budget=int(study.user_attrs.get(N_TRIALS_KEY, n_trials)),
                       kind=study.user_attrs.get(KIND_ATTR, "sentence-transformer"), shows_costs=weighs_costs(study))


def weighs_costs(study: Any) -> bool:
    """True when the stored study trades quality against cost: several objectives, or a ``cost.`` name
    among its objectives or constraints."""
    objectives = list(study.user_attrs.get(OBJECTIVES_ATTR) or [])
    names = objectives + list(study.user_attrs.get(CONSTRAINTS_ATTR) or {})
    return len(objectives) > 1 or any(is_cost(name) for name in names)


def worker_gone(attrs: dict[str, Any]) -> bool:
    """True when the trial's worker ran on this host and its process no longer exists."""
    pid = attrs.get(PID_KEY)
    return bool(pid) and attrs.get(TAG_HOST_KEY) == current_host() and not worker_alive(attrs)


def trial_note(r: dict[str, Any]) -> str:
    """A row's note (the last column of ``st-hpo status``): where a trial is, why it stopped, what it kept, where it resumed."""
    note = _state_note(r)
    source = r.get("resumed_from")
    if source:
        resumed = f"resumed from trial {source['trial']} at step {source['step']}"
        return f"{resumed}; {note}" if note else resumed
    return note


def _state_note(r: dict[str, Any]) -> str:
    done = "" if r["progress"] is None else f"{r['progress']:.0%} of training"
    where = f" on {r['worker']}@{r['host']}" if r["worker"] and r["host"] else ""
    if r["state"] == "RUNNING" and r["worker_gone"]:
        return f"its worker{where} is gone; the next `st-hpo run` or `st-hpo sync` marks it FAIL"
    if r["state"] == "RUNNING":
        return f"{done or 'started'}{where}"
    if r["state"] == "PRUNED":
        return f"pruned at {done}" if done else "pruned"
    if r["state"] == "FAIL":
        return (r["error"] or "").splitlines()[0][:100] if r["error"] else ""
    if r["state"] == "OUT_OF_MEMORY":  # "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB ..."
        return (r["error"] or "out of memory").splitlines()[0][:160]
    side = ", ".join(f"{k} {v:g}" for k, v in (r.get("side_metrics") or {}).items())
    if r.get("infeasible"):  # broke a constraint: complete, never the best nor in the front
        return str(r["infeasible"])[:160]
    if r.get("pareto"):
        front = "Pareto front, model kept" if r["model_dir"] else "Pareto front"
        return f"{front}; {side}" if side else front
    if r["best"]:
        best = "best, model kept" if r["model_dir"] else "best"
        return f"{best}; {side}" if side else best
    return side
