"""A trial's objective values and the Pareto front of a study's trials (several objectives).

A multi-objective study has no single best trial: its answer is the front, the feasible complete trials that
no other feasible complete trial dominates (at least as good on every objective and better on one). A trial
is feasible unless it broke one of the study's constraints (:func:`st_hpo._tracking._census.is_feasible`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from st_hpo._tracking._census import is_feasible
from st_hpo._tracking._schema import INTERMEDIATE_ATTR, OBJECTIVE_KEY, OBJECTIVES_ATTR

__all__ = ["dominates", "front_of", "intermediate_values", "objective_names", "study_front", "trial_values"]


def trial_values(trial: Any) -> list[float] | None:
    """A trial's objective values (one per objective), or None when it has none (it did not complete)."""
    values = trial.values
    return None if values is None else [float(v) for v in values]


def objective_names(study: Any) -> list[str]:
    """The objective names of an Optuna study st-hpo created, in order."""
    names = study.user_attrs.get(OBJECTIVES_ATTR)
    if names:
        return list(names)
    return [study.user_attrs.get(OBJECTIVE_KEY, "objective")]


def dominates(a: Sequence[float], b: Sequence[float], maximize: Sequence[bool]) -> bool:
    """True when values ``a`` are at least as good as ``b`` on every objective and better on one."""
    signed = [(x, y) if up else (-x, -y) for x, y, up in zip(a, b, maximize, strict=True)]
    return all(x >= y for x, y in signed) and any(x > y for x, y in signed)


def front_of(trials: Sequence[Any], maximize: Sequence[bool]) -> list[Any]:
    """The trials of ``trials`` on the Pareto front: feasible complete trials no other one dominates, by number."""
    candidates = [t for t in trials if t.state.name == "COMPLETE" and t.values is not None and is_feasible(t)]
    return sorted((t for t in candidates
                   if not any(dominates(o.values, t.values, maximize) for o in candidates if o is not t)),
                  key=lambda t: t.number)


def study_front(study: Any, trials: Sequence[Any] | None = None) -> list[Any]:
    """The Pareto front of an Optuna study (``trials``: its trials, when already read)."""
    maximize = [d.name == "MAXIMIZE" for d in study.directions]
    return front_of(study.get_trials(deepcopy=False) if trials is None else trials, maximize)


def intermediate_values(trial: Any) -> dict[int, float]:
    """A trial's intermediate values of the (first) objective by per-mille of training: Optuna's own, or in a
    multi-objective study those st-hpo keeps itself (:data:`~st_hpo._tracking._schema.INTERMEDIATE_ATTR`)."""
    if trial.intermediate_values:
        return dict(trial.intermediate_values)
    kept = trial.user_attrs.get(INTERMEDIATE_ATTR) or {}
    return {int(step): float(value) for step, value in kept.items()}
