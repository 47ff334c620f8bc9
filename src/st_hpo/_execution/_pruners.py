"""The study's pruner (:func:`make_pruner`), which sees no failed trial: a trial that diverged (or raised,
or was stopped) after it reported must not steer which trials are pruned.

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

from st_hpo._definition._schedule import PROGRESS_SCALE, RUNG_MIN_RESOURCE, RUNG_REDUCTION_FACTOR
from st_hpo._definition._study import DEFAULT_PRUNER

__all__ = ["WithoutFailedTrials", "make_pruner"]

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


def make_pruner(spec: Any, storage: Any = None) -> Any:
    """The Optuna pruner of a study's ``pruner`` field (None: :data:`st_hpo._definition._study.DEFAULT_PRUNER`);
    given the study's ``storage``, it decides without the failed trials (:mod:`st_hpo._execution._pruners`).

    st-hpo reports at per-mille of training done (0..1000), on a grid shared by every trial of the study
    (:func:`st_hpo._execution._callbacks.evaluation_fractions`). Successive halving and hyperband have their first rung
    at 111 (1/9 of training) and each next one 3 times further: 333, then 999, the end of training, where
    st-hpo never prunes. A base-args cadence need not hit the rungs: a trial's rung value is its first
    report at or past the rung, the same grid point for every trial (eval_steps=0.125: 12.5%, 37.5%).
    """
    spec = DEFAULT_PRUNER if spec is None else spec
    if storage is not None:
        return WithoutFailedTrials(make_pruner(spec), storage)
    if spec == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    if spec == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=RUNG_MIN_RESOURCE,
                                                      reduction_factor=RUNG_REDUCTION_FACTOR)
    if spec == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=RUNG_MIN_RESOURCE, max_resource=PROGRESS_SCALE,
                                              reduction_factor=RUNG_REDUCTION_FACTOR)
    if spec == "patient":
        return optuna.pruners.PatientPruner(optuna.pruners.MedianPruner(n_startup_trials=4), patience=1)
    if spec == "none":
        return optuna.pruners.NopPruner()
    return spec
