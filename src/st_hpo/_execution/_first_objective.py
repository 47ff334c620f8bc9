"""Pruning a multi-objective study on its first objective, with the study's own pruner.

Optuna refuses ``Trial.report`` and ``Trial.should_prune`` in a multi-objective study. st-hpo keeps the
intermediate values of the first objective itself (the trial's user attribute
:data:`~st_hpo._tracking._schema.INTERMEDIATE_ATTR`, at the same per-mille evaluation points as a
single-objective study) and asks the study's pruner (successive halving by default) on a single-objective
*view* of the study: an in-memory Optuna study (public API only: ``optuna.create_study``,
``optuna.trial.create_trial``, ``Study.add_trial``) whose trials carry the first objective's intermediate and
final values and its direction. What the pruner writes on the trial in the view (successive halving's rung
values) is kept in :data:`~st_hpo._tracking._schema.PRUNER_ATTRS_ATTR`, so later views show it.

The view leaves out the trials that cannot be compared with this one: failed ones (as
:mod:`st_hpo._execution._pruners` does for single-objective studies), infeasible ones (never in the front),
and, when objectives are costs known before training (``cost.embedding_dim``, ``cost.parameters``, and
``cost.encode_ms``, which the model's architecture and input length set, not its weights: it is timed on the
freshly built model), every trial that is worse than this one on one of them: a trial is pruned only when
trials at least as good on every such cost beat it on the first objective, so a small or fast model is not
pruned for scoring below a big or slow one. A timed cost counts as worse only beyond
:data:`TIMING_SLACK` (timings of one model vary from pass to pass). Objectives measured at the end
(``cost.train_seconds``, ``cost.peak_memory_mb``, ...) cannot be compared during training; pruning on the
first objective alone assumes (as successive halving always does) that a trial far behind on it at a rung
rarely ends on the front.
"""

from __future__ import annotations

import math
from typing import Any

from st_hpo._definition._costs import KNOWN_BEFORE_TRAINING, TIMED_BEFORE_TRAINING
from st_hpo._tracking._census import is_feasible
from st_hpo._tracking._front import intermediate_values
from st_hpo._tracking._schema import COSTS_ATTR, INTERMEDIATE_ATTR, PRUNER_ATTRS_ATTR

__all__ = ["TIMING_SLACK", "FirstObjectivePruning", "first_objective_view"]

#: How much slower (relative) another trial's timed cost may be and still count as as good as this one's:
#: two timings of one model on a shared machine differ by a few percent.
TIMING_SLACK = 0.1


class FirstObjectivePruning:
    """Reports and pruning decisions of one trial of a multi-objective study (see the module docstring).

    Args:
        trial: the running Optuna trial.
        objectives: the study's objective names, in order.
        directions: their directions.
    """

    def __init__(self, trial: Any, objectives: tuple[str, ...], directions: tuple[str, ...]) -> None:
        self.trial = trial
        self.direction = directions[0]
        self.static = {name: direction for name, direction in zip(objectives, directions, strict=True)
                       if name in KNOWN_BEFORE_TRAINING}
        self.values: dict[int, float] = {}
        self.pruner_attrs: dict[str, Any] = {}

    def report(self, value: float, step: int) -> None:
        """Keep the first objective's ``value`` at ``step`` (per-mille of training)."""
        self.values[int(step)] = float(value)
        self.trial.set_user_attr(INTERMEDIATE_ATTR, {str(k): v for k, v in sorted(self.values.items())})

    def should_prune(self) -> bool:
        """The study's pruner's decision on the single-objective view."""
        from st_hpo._execution._pruners import WithoutFailedTrials

        pruner = self.trial.study.pruner
        if isinstance(pruner, WithoutFailedTrials):  # the view leaves the failed trials out itself
            pruner = pruner.pruner
        own = _static_costs(self.trial.user_attrs)
        view = first_objective_view(self.trial.study, self.trial.number, self.values, self.pruner_attrs,
                                    direction=self.direction, pruner=pruner,
                                    comparable=lambda t: _no_worse(t, own, self.static))
        frozen = view.get_trials(deepcopy=False)[self.trial.number]
        pruned = bool(pruner.prune(view, frozen))
        written = dict(view.get_trials(deepcopy=False)[self.trial.number].system_attrs)
        if written != self.pruner_attrs:
            self.pruner_attrs = written
            self.trial.set_user_attr(PRUNER_ATTRS_ATTR, written)
        return pruned


def _static_costs(user_attrs: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in (user_attrs.get(COSTS_ATTR) or {}).items() if k in KNOWN_BEFORE_TRAINING}


def _no_worse(other: Any, own: dict[str, float], static: dict[str, str]) -> bool:
    """True when trial ``other`` is at least as good as this trial on every cost objective known before
    training (a trial that did not record one is taken as comparable; a timed cost within
    :data:`TIMING_SLACK` of this trial's counts as as good)."""
    theirs = _static_costs(other.user_attrs)
    for name, direction in static.items():
        if name not in own or name not in theirs:
            continue
        slack = TIMING_SLACK * abs(own[name]) if name in TIMED_BEFORE_TRAINING else 0.0
        if (theirs[name] > own[name] + slack) if direction == "minimize" else (theirs[name] < own[name] - slack):
            return False
    return True


def first_objective_view(study: Any, number: int, values: dict[int, float], pruner_attrs: dict[str, Any], *,
                         direction: str, pruner: Any, comparable: Any = None) -> Any:
    """An in-memory single-objective study with one trial per trial of ``study`` (same numbers): trial
    ``number`` RUNNING with ``values``; the others with their first objective's values, or, when failed,
    infeasible or not ``comparable`` (a predicate on the stored trial), a FAIL trial without values, which no
    pruner reads."""
    import optuna
    from optuna.trial import TrialState, create_trial

    view = optuna.create_study(storage=optuna.storages.InMemoryStorage(), study_name=study.study_name,
                               direction=direction, pruner=pruner,
                               sampler=optuna.samplers.RandomSampler(seed=0))
    blank = create_trial(state=TrialState.FAIL)
    for t in study.get_trials(deepcopy=False):
        while len(view.get_trials(deepcopy=False)) < t.number:  # numbers are dense; keep them aligned anyway
            view.add_trial(blank)
        if t.number == number:
            view.add_trial(create_trial(state=TrialState.RUNNING, intermediate_values=dict(values),
                                        system_attrs=dict(pruner_attrs)))
            continue
        view.add_trial(_view_trial(t, comparable) or blank)
    return view


def _view_trial(t: Any, comparable: Any) -> Any:
    """The view of stored trial ``t``, or None when the pruner must not see it."""
    from optuna.trial import TrialState, create_trial

    state = t.state
    if state in (TrialState.FAIL, TrialState.WAITING) or not is_feasible(t):
        return None
    if comparable is not None and not comparable(t):
        return None
    steps = {k: v for k, v in intermediate_values(t).items() if math.isfinite(v)}
    attrs = dict(t.user_attrs.get(PRUNER_ATTRS_ATTR) or {})
    if state == TrialState.COMPLETE:
        if t.values is None or not math.isfinite(t.values[0]):
            return None
        return create_trial(state=state, value=float(t.values[0]), intermediate_values=steps, system_attrs=attrs)
    return create_trial(state=state, intermediate_values=steps, system_attrs=attrs)
