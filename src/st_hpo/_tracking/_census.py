"""The trial census: what a stored trial is, and one count of a study's trials by it, used by everything that
counts trials or shows their state.

st-hpo's words differ from Optuna's states in three places, and this module is where that is decided:

- **finished** means COMPLETE or PRUNED (and not out of memory): a trial that trained and gave the study a
  result. It is what the budget (``n_trials``) counts. Optuna's ``TrialState.is_finished()`` also counts
  FAIL; st-hpo does not, since a failed trial (an error, a divergence, an interrupted worker) says nothing
  about its configuration.
- **out of memory**: a trial that ran out of (GPU) memory is stored as Optuna's PRUNED with an infeasible
  constraint, so that the samplers that read constraints (TPE among them) learn from it (see
  :mod:`st_hpo._execution._memory`). For st-hpo it is no pruned trial: it never counts toward ``n_trials``,
  is never the best and shows as ``OUT_OF_MEMORY``.
- **cancelled** is a FAIL that never ran: a worker asked for a trial when others had already filled the
  budget (marked with the ``st_hpo.cancelled`` attribute). It is neither failed nor shown.

``failed`` is every other FAIL. ``waiting`` counts queued configurations (the baseline, ``enqueue``, a
retry) that no worker has taken yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from st_hpo._tracking._schema import CANCELLED_ATTR, INFEASIBLE_ATTR, MINI_BATCH_ATTR, OUT_OF_MEMORY_ATTR

__all__ = ["CANCELLED_ATTR", "Census", "MINI_BATCH_ATTR", "OUT_OF_MEMORY", "OUT_OF_MEMORY_ATTR", "end_tags",
           "is_cancelled", "is_feasible", "is_finished", "is_out_of_memory", "shown_state", "study_census", "take_census"]

#: True on a trial that ran out of (GPU) memory; also its MLflow tag ``st_hpo.out_of_memory``.
#: The state ``status``, the reports and MLflow's ``st_hpo.trial_state`` show for an out-of-memory trial.
OUT_OF_MEMORY = "OUT_OF_MEMORY"


def is_cancelled(trial: Any) -> bool:
    """True for a trial that was asked for but never ran (the budget was already filled)."""
    return trial.state.name == "FAIL" and bool(trial.user_attrs.get(CANCELLED_ATTR))


def is_out_of_memory(trial: Any) -> bool:
    """True for a trial that ran out of memory (whatever Optuna state it was told with)."""
    return bool(trial.user_attrs.get(OUT_OF_MEMORY_ATTR))


def is_finished(trial: Any) -> bool:
    """True for a trial that counts toward ``n_trials``: COMPLETE or PRUNED, and not out of memory
    (Optuna's ``is_finished`` also takes FAIL)."""
    return trial.state.name in ("COMPLETE", "PRUNED") and not is_out_of_memory(trial)


def is_feasible(trial: Any) -> bool:
    """False for a complete trial that broke one of the study's constraints (``Study.constraints``): it is
    complete, the sampler learns from it, but it is never the best nor in the Pareto set."""
    return not trial.user_attrs.get(INFEASIBLE_ATTR)


def shown_state(trial: Any) -> str:
    """The trial's state as st-hpo shows it: Optuna's, or ``OUT_OF_MEMORY``."""
    return OUT_OF_MEMORY if is_out_of_memory(trial) else trial.state.name


def end_tags(trial: Any) -> dict[str, str]:
    """The MLflow tags an ended trial's run gets from what it learnt about memory: ``st_hpo.out_of_memory``
    and the GradCache loss's ``st_hpo.mini_batch_size``; ``st_hpo.infeasible`` when it broke a constraint."""
    tags = {OUT_OF_MEMORY_ATTR: "true"} if is_out_of_memory(trial) else {}
    if not is_feasible(trial):
        tags[INFEASIBLE_ATTR] = "true"
    if trial.user_attrs.get(MINI_BATCH_ATTR) is not None:
        tags[MINI_BATCH_ATTR] = str(trial.user_attrs[MINI_BATCH_ATTR])
    return tags


@dataclass(frozen=True)
class Census:
    """How many trials of a study are in each of st-hpo's states (see the module docstring)."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    out_of_memory: int = 0
    running: int = 0
    waiting: int = 0
    cancelled: int = 0

    @property
    def finished(self) -> int:
        """COMPLETE + PRUNED: the trials the budget counts."""
        return self.complete + self.pruned

    @property
    def shown(self) -> int:
        """Every trial a user sees (all but the cancelled ones)."""
        return self.complete + self.pruned + self.failed + self.out_of_memory + self.running + self.waiting


def take_census(trials: Iterable[Any]) -> Census:
    """Count ``trials`` (Optuna ``FrozenTrial`` objects) by st-hpo's states."""
    counts = dict.fromkeys(("complete", "pruned", "failed", "out_of_memory", "running", "waiting", "cancelled"), 0)
    for t in trials:
        name = t.state.name
        if is_out_of_memory(t):
            counts["out_of_memory"] += 1
        elif name == "FAIL":
            counts["cancelled" if is_cancelled(t) else "failed"] += 1
        elif name in ("COMPLETE", "PRUNED", "RUNNING", "WAITING"):
            counts[name.lower()] += 1
    return Census(**counts)


def study_census(study: Any) -> Census:
    """The census of an Optuna study's trials, read without copying them."""
    return take_census(study.get_trials(deepcopy=False))
