"""The trial census: one count of a study's trials by what they are, used by everything that counts.

st-hpo's words differ from Optuna's states in two places, and this module is where that is decided:

- **finished** means COMPLETE or PRUNED: a trial that trained and gave the study a result. It is what the
  budget (``n_trials``) counts. Optuna's ``TrialState.is_finished()`` also counts FAIL; st-hpo does not,
  since a failed trial (an error, a divergence, an interrupted worker) says nothing about its configuration.
- **cancelled** is a FAIL that never ran: a worker asked for a trial when others had already filled the
  budget (marked with the ``st_hpo.cancelled`` attribute). It is neither failed nor shown.

``failed`` is every other FAIL. ``waiting`` counts queued configurations (the baseline, ``enqueue``) that no
worker has taken yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: The user attribute that marks a cancelled trial (see the module docstring).
CANCELLED_ATTR = "st_hpo.cancelled"


def is_cancelled(trial: Any) -> bool:
    """True for a trial that was asked for but never ran (the budget was already filled)."""
    return trial.state.name == "FAIL" and bool(trial.user_attrs.get(CANCELLED_ATTR))


def is_finished(trial: Any) -> bool:
    """True for a COMPLETE or PRUNED trial: one the budget counts (Optuna's ``is_finished`` also takes FAIL)."""
    return trial.state.name in ("COMPLETE", "PRUNED")


@dataclass(frozen=True)
class Census:
    """How many trials of a study are in each of st-hpo's states (see the module docstring)."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
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
        return self.complete + self.pruned + self.failed + self.running + self.waiting


def take_census(trials: Iterable[Any]) -> Census:
    """Count ``trials`` (Optuna ``FrozenTrial`` objects) by st-hpo's states."""
    counts = dict.fromkeys(("complete", "pruned", "failed", "running", "waiting", "cancelled"), 0)
    for t in trials:
        name = t.state.name
        if name == "FAIL":
            counts["cancelled" if is_cancelled(t) else "failed"] += 1
        elif name in ("COMPLETE", "PRUNED", "RUNNING", "WAITING"):
            counts[name.lower()] += 1
    return Census(**counts)


def study_census(study: Any) -> Census:
    """The census of an Optuna study's trials, read without copying them."""
    return take_census(study.get_trials(deepcopy=False))


__all__ = ["CANCELLED_ATTR", "Census", "is_cancelled", "is_finished", "study_census", "take_census"]
