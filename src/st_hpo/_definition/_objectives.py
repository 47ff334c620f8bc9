"""Several objectives and constraints: the checks of a study's ``objective``, ``direction``, ``constraints``
and sampler that need no resource (the check that the evaluator reports each metric is validation's).

A single objective (a string, or a list of one name) keeps every behaviour of a single-objective study; a
list of several names makes a multi-objective study (an Optuna study with ``directions=``), whose answer is
the Pareto set of its feasible complete trials.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from st_hpo._definition._costs import COST_NAMES, is_cost, parse_constraints
from st_hpo.exceptions import StudyDefinitionError

__all__ = ["MULTI_OBJECTIVE_SAMPLERS", "check_objectives", "default_direction", "normalise_objectives"]

#: The Optuna samplers that optimise several objectives (a study may also name "tpe", "random" or "qmc").
MULTI_OBJECTIVE_SAMPLERS = ("TPESampler", "NSGAIISampler", "RandomSampler", "QMCSampler")

_DIRECTIONS = ("maximize", "minimize")


def default_direction(name: str) -> str:
    """A loss or a cost goes down, an evaluator's metric up."""
    return "minimize" if name in ("eval_loss", "loss") or is_cost(name) else "maximize"


def _is_names(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def normalise_objectives(study: Any) -> None:
    """A list of one objective (and of one direction) becomes the single-objective form (strings); a list of
    several becomes a tuple, with the default direction of each objective when ``direction`` is None."""
    objective, direction = study.objective, study.direction
    if not _is_names(objective):
        return
    objective = tuple(objective)
    if _is_names(direction):
        direction = tuple(direction)
    if len(objective) == 1:
        if isinstance(direction, tuple) and len(direction) == 1:
            direction = direction[0]
        objective = objective[0]
    elif direction is None:
        direction = tuple(default_direction(str(name)) for name in objective)
    object.__setattr__(study, "objective", objective)
    object.__setattr__(study, "direction", direction)


def check_objectives(study: Any) -> None:
    """The objectives, their directions, the constraints and the sampler of a multi-objective study (the
    constraints of any study), each refused in one line with the fix."""
    parse_constraints(study.constraints)
    if _is_names(study.direction) and not study.is_multi_objective:
        raise StudyDefinitionError(f"direction={list(study.direction)!r} has several directions for the one "
                                   f"objective {study.objective!r}; give one direction per objective")
    if not study.is_multi_objective:
        return
    names, directions = study.objectives, study.direction
    for name in names:
        if not isinstance(name, str) or not name:
            raise StudyDefinitionError(f"objective={list(names)!r}: {name!r} is not a metric name; use e.g. "
                                       "['sts-dev_spearman_cosine', 'cost.embedding_dim']")
        if is_cost(name) and name not in COST_NAMES:
            raise StudyDefinitionError(f"objective: unknown cost {name!r}; st-hpo measures {', '.join(COST_NAMES)}")
    if len(set(names)) != len(names):
        raise StudyDefinitionError(f"objective={list(names)!r} names an objective twice; name each once")
    if not _is_names(directions) or len(directions) != len(names):
        raise StudyDefinitionError(
            f"direction={directions!r} must be a list of {len(names)} directions, one per objective of "
            f"{list(names)!r}, e.g. {[default_direction(n) for n in names]!r} (or None: those defaults)")
    for name, direction in zip(names, directions, strict=True):
        if direction not in _DIRECTIONS:
            raise StudyDefinitionError(f"direction {direction!r} of objective {name!r} is not allowed; use "
                                       "'maximize' or 'minimize'")
        if name in ("eval_loss", "loss") and direction == "maximize":
            raise StudyDefinitionError(f"objective {name!r} is the loss on the eval set, which training lowers: "
                                       "direction 'maximize' would search for the worst model; use 'minimize'")
    _check_first(names)
    _check_sampler(study.sampler)


def _check_first(names: tuple[str, ...]) -> None:
    """The first objective is measured during training (trials are pruned on it): no cost, no second loss."""
    if is_cost(names[0]):
        raise StudyDefinitionError(
            f"objective={list(names)!r} starts with the cost {names[0]!r}, but trials are pruned on the first "
            f"objective, measured during training; put the evaluator's metric first, e.g. "
            f"{[*names[1:], names[0]]!r}")
    if any(name in ("eval_loss", "loss") for name in names[1:]):
        raise StudyDefinitionError(f"objective={list(names)!r}: 'eval_loss' may only be the first objective; "
                                   "put it first or leave it out")


def _check_sampler(sampler: Any) -> None:
    """An Optuna sampler object that cannot optimise several objectives (CMA-ES, GP, grid...) is refused."""
    optuna = sys.modules.get("optuna")
    base = getattr(getattr(optuna, "samplers", None), "BaseSampler", None)
    if base is None or not isinstance(sampler, base):
        return  # a name (checked with the single-objective ones), or not a sampler (refused there)
    if type(sampler).__name__ not in MULTI_OBJECTIVE_SAMPLERS:
        raise StudyDefinitionError(
            f"sampler={type(sampler).__name__} cannot optimise several objectives; use 'tpe' (the default), "
            "'random', 'qmc' or optuna.samplers.NSGAIISampler()")
