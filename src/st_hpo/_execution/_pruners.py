"""The study's pruner sees no failed trial: a trial that diverged (or raised, or was stopped) after it
reported must not steer which trials are pruned.

Optuna's successive halving and hyperband compare a trial at a rung with every trial that reached the rung,
failed ones included (they read the rung values of all trials), so a trial that reported well at 11% and 33%
of training and then diverged kept pruning the trials after it. :class:`WithoutFailedTrials` hands the
pruner a view of the study whose trials leave out those that FAILED; what the pruner writes (a trial's rung
value) goes to the study's storage as before.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import optuna
from optuna.trial import TrialState

__all__ = ["WithoutFailedTrials"]

_NOT_FAILED = tuple(s for s in TrialState if s != TrialState.FAIL)


class _StorageWithoutFailed:
    """A study storage whose trial lists leave out FAIL trials; everything else is the storage's own."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[Any]:
        wanted = tuple(s for s in _NOT_FAILED if states is None or s in states)
        return self._storage.get_all_trials(study_id, deepcopy=deepcopy, states=wanted)


class WithoutFailedTrials(optuna.pruners.BasePruner):
    """``pruner``, deciding on the study's trials other than the failed ones (see the module docstring).

    Args:
        pruner: the Optuna pruner that decides.
        storage: the storage the study lives in (the one given to ``optuna.create_study``).
    """

    def __init__(self, pruner: optuna.pruners.BasePruner, storage: Any) -> None:
        self.pruner = pruner
        self._storage = _StorageWithoutFailed(storage)
        self._views: dict[str, optuna.Study] = {}

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        view = self._views.get(study.study_name)
        if view is None:
            view = optuna.load_study(study_name=study.study_name, storage=self._storage,  # type: ignore[arg-type]
                                     sampler=study.sampler, pruner=self.pruner)
            self._views[study.study_name] = view
        return self.pruner.prune(view, trial)
