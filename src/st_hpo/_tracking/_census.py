"""What a stored trial is, for everything that counts trials or shows their state.

An out-of-memory trial is stored as Optuna's PRUNED with an infeasible constraint, so that the samplers
that read constraints (TPE among them) learn from it (see :mod:`st_hpo._execution._memory`); it is no
pruned trial for st-hpo: it never counts toward ``n_trials``, is never the best and shows as
``OUT_OF_MEMORY``. Count with :func:`is_finished` / :func:`census`, show with :func:`shown_state`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["CANCELLED_ATTR", "MINI_BATCH_ATTR", "OUT_OF_MEMORY", "OUT_OF_MEMORY_ATTR", "census", "end_tags", "is_finished",
           "is_out_of_memory", "shown_state"]

#: True on a trial that ran out of (GPU) memory; also its MLflow tag ``st_hpo.out_of_memory``.
OUT_OF_MEMORY_ATTR = "st_hpo.out_of_memory"
#: The ``mini_batch_size`` a trial's GradCache (Cached) loss trained with; also its MLflow tag.
MINI_BATCH_ATTR = "st_hpo.mini_batch_size"
#: Set on a trial asked when other workers had filled the budget: it never ran.
CANCELLED_ATTR = "st_hpo.cancelled"
#: The state ``status``, the reports and MLflow's ``st_hpo.trial_state`` show for an out-of-memory trial.
OUT_OF_MEMORY = "OUT_OF_MEMORY"


def is_out_of_memory(trial: Any) -> bool:
    """True for a trial that ran out of memory (whatever Optuna state it was told with)."""
    return bool(trial.user_attrs.get(OUT_OF_MEMORY_ATTR))


def is_finished(trial: Any) -> bool:
    """True for a trial that counts toward ``n_trials``: COMPLETE or PRUNED, and not out of memory."""
    return trial.state.name in ("COMPLETE", "PRUNED") and not is_out_of_memory(trial)


def shown_state(trial: Any) -> str:
    """The trial's state as st-hpo shows it: Optuna's, or ``OUT_OF_MEMORY``."""
    return OUT_OF_MEMORY if is_out_of_memory(trial) else trial.state.name


def census(trials: Iterable[Any]) -> dict[str, int]:
    """Trials by shown state (COMPLETE, PRUNED, FAIL, OUT_OF_MEMORY, RUNNING, WAITING), plus ``finished``
    (what counts toward ``n_trials``); trials cancelled before they ran are left out."""
    counts = dict.fromkeys(("COMPLETE", "PRUNED", "FAIL", OUT_OF_MEMORY, "RUNNING", "WAITING"), 0)
    for trial in trials:
        if trial.user_attrs.get(CANCELLED_ATTR):
            continue
        state = shown_state(trial)
        counts[state] = counts.get(state, 0) + 1
    counts["finished"] = counts["COMPLETE"] + counts["PRUNED"]
    return counts


def end_tags(trial: Any) -> dict[str, str]:
    """The MLflow tags an ended trial's run gets from what it learnt about memory: ``st_hpo.out_of_memory``
    and the GradCache loss's ``st_hpo.mini_batch_size``."""
    tags = {OUT_OF_MEMORY_ATTR: "true"} if is_out_of_memory(trial) else {}
    if trial.user_attrs.get(MINI_BATCH_ATTR) is not None:
        tags[MINI_BATCH_ATTR] = str(trial.user_attrs[MINI_BATCH_ATTR])
    return tags
