"""A trial's objective values and feasibility, read by name when it completes; the study's objectives and
constraints as stored with the Optuna study.

A trial's values are read by objective name from its final evaluation's metrics merged with the costs st-hpo
measured (a ``cost.*`` objective comes from the costs). A constraint is checked the same way; a complete trial
that breaks one gets the Optuna constraint :data:`~st_hpo._tracking._schema.INFEASIBLE_ATTR` (how far it is
broken, summed over the study's constraints: 0 when kept, so samplers that read constraints learn from it)
and the user attribute of the same name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from st_hpo._definition._costs import STATIC_COSTS, TIMED_BEFORE_TRAINING, is_cost, parse_constraints
from st_hpo._execution._costs import static_costs
from st_hpo._tracking._schema import CONSTRAINTS_ATTR, COSTS_ATTR, INFEASIBLE_ATTR, OBJECTIVES_ATTR
from st_hpo.exceptions import StudyDefinitionError, TrialError

logger = logging.getLogger(__name__)

__all__ = ["check_constraints", "known_before_training", "objective_values", "pruning_for", "read_values",
           "record_objectives"]


def record_objectives(study: Any, definition: Any, where: str) -> None:
    """Store the objective names and constraints on the Optuna study; refuse a study file whose objectives
    differ from those the stored study was created with."""
    stored = study.user_attrs.get(OBJECTIVES_ATTR)
    names = list(definition.objectives)
    if stored is not None and [_bare(n) for n in stored] != [_bare(n) for n in names]:
        raise StudyDefinitionError(
            f"study {definition.name!r} in {where} optimises {stored!r}, but the study file says objective="
            f"{names!r}: the trials' values could not be compared; use another study_name= (and another "
            f"output_dir=, if you give one)", parameters=("study_name", "output_dir"))
    if stored is None:
        study.set_user_attr(OBJECTIVES_ATTR, names)
    constraints = dict(definition.constraints or {})
    if constraints and study.user_attrs.get(CONSTRAINTS_ATTR) != constraints:
        study.set_user_attr(CONSTRAINTS_ATTR, constraints)


def _bare(name: str) -> str:
    return name.removeprefix("eval_")


def _lookup(name: str, metrics: dict[str, Any], costs: dict[str, float]) -> float | None:
    """``name``'s value: a cost from ``costs``, else the evaluator's metric (with or without ``eval_``)."""
    if is_cost(name):
        value = costs.get(name)
    else:
        value = metrics.get(name, metrics.get(f"eval_{_bare(name)}"))
    return None if value is None else float(value)


def objective_values(objectives: tuple[str, ...], metrics: dict[str, Any], costs: dict[str, float]) -> list[float]:
    """The trial's value of every objective, in order; a TrialError names one that was not measured."""
    values = []
    for name in objectives:
        value = _lookup(name, metrics, costs)
        if value is None:
            raise TrialError(f"objective {name!r} was not measured for this trial (measured: "
                             f"{', '.join(sorted({*costs, *(k.removeprefix('eval_') for k in metrics)}))})")
        values.append(value)
    return values


def check_constraints(trial: Any, constraints: Any, metrics: dict[str, Any], costs: dict[str, float]) -> list[str]:
    """Tell Optuna how far the complete ``trial`` breaks the study's ``constraints`` (the dict as written) and
    mark it infeasible when it breaks one; returns the broken ones, in words (none: feasible)."""
    parsed = parse_constraints(dict(constraints) if constraints else None)
    if not parsed:
        return []
    broken, violation = [], 0.0
    for constraint in parsed:
        value = _lookup(constraint.name, metrics, costs)
        value = math.nan if value is None else value
        if not constraint.satisfied(value):
            broken.append(f"{constraint.name} = {value:.6g} breaks {constraint.op} {constraint.bound:g}")
        violation += constraint.violation(value)
    trial.set_constraint(INFEASIBLE_ATTR, violation)
    if broken:
        trial.set_user_attr(INFEASIBLE_ATTR, "; ".join(broken))
    return broken


def known_before_training(trial: Any, model: Any, objectives: tuple[str, ...],
                          time_encoding: Callable[[Any], float | None] | None = None) -> dict[str, float]:
    """The costs of the trial's model known before it trains, when the study optimises one: the static ones
    (``cost.embedding_dim``, ``cost.parameters``) and, with ``time_encoding`` (the model -> its
    ``cost.encode_ms``), the encoding time, which the architecture and input length set, not the weights.
    Kept in the trial's costs (the final measurement replaces them), for
    :mod:`st_hpo._execution._first_objective`."""
    costs: dict[str, float] = {}
    if any(name in STATIC_COSTS for name in objectives):
        costs.update(static_costs(model))
    if time_encoding is not None and any(name in TIMED_BEFORE_TRAINING for name in objectives):
        timed = time_encoding(model)  # None: no text to time the model on
        if timed is not None:
            costs["cost.encode_ms"] = round(timed, 3)
    if costs:
        trial.set_user_attr(COSTS_ATTR, {**(trial.user_attrs.get(COSTS_ATTR) or {}), **costs})
    return costs


def pruning_for(study: Any, trial: Any, model: Any,
                time_encoding: Callable[[Any], float | None] | None = None) -> Any:
    """A multi-objective study's reports and pruning decisions for ``trial`` (None for a single objective),
    with the costs of the trial's model known before it trains (see :func:`known_before_training`)."""
    if not study.is_multi_objective:
        return None
    from st_hpo._execution._first_objective import FirstObjectivePruning

    known_before_training(trial, model, study.objectives, time_encoding)
    return FirstObjectivePruning(trial, study.objectives, study.directions)


def read_values(study: Any, trial: Any, metrics: dict[str, Any], costs: dict[str, float],
                log: Callable[[dict[str, float]], None]) -> list[float] | None:
    """A complete trial's objective values (several objectives: read by name from its final ``metrics`` and
    ``costs``, and logged with ``log`` as ``objective.<name>``; None for a single objective), after its
    feasibility under the study's constraints is told to Optuna."""
    broken = check_constraints(trial, study.constraints, metrics, costs)
    if broken:
        logger.info("trial %d is infeasible: %s", trial.number, "; ".join(broken))
    if not study.is_multi_objective:
        return None
    values = objective_values(study.objectives, metrics, costs)
    log({f"objective.{name.removeprefix('eval_')}": value for name, value in zip(study.objectives, values,
                                                                                   strict=True)})
    return values
