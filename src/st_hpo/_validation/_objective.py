"""The objective: the study's evaluator, run on a few eval rows, really reports the objective metric."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from st_hpo._definition import _args
from st_hpo._definition._compat import evaluator_base
from st_hpo._definition._costs import is_cost
from st_hpo._definition._datasets import head
from st_hpo._definition._study import Study
from st_hpo._kinds import check_kind_of
from st_hpo._validation._state import objective_key
from st_hpo.exceptions import StudyDefinitionError

if TYPE_CHECKING:
    from st_hpo._definition._resources import StudyResources
    from st_hpo._validation._state import Validation

__all__ = ["PROBE_ROWS", "check_objective"]

#: Rows of the eval set the evaluator runs on to prove it reports the objective.
PROBE_ROWS = 16


def check_objective(state: Validation) -> None:
    """The evaluator reports the objective (an eval-loss objective is the trainer's own: nothing to run)."""
    if not state.needs_eval_loss:
        _check_objective(state.study, state.resources, state.model, state.objective_metric)


def _check_objective(study: Study, resources: StudyResources, model: Any, key: str) -> None:
    """Run the evaluator on a few rows and check that it reports the objective."""
    eval_ds = resources.eval_dataset
    if eval_ds is not None and not isinstance(study.evaluator, evaluator_base()):
        evaluator = resources.build_evaluator(head(eval_ds, PROBE_ROWS))
    else:
        evaluator = resources.evaluator
    check_kind_of(resources.kind, "evaluator", evaluator)
    try:
        metrics = evaluator(model)
    except Exception as exc:
        raise StudyDefinitionError(
            f"the evaluator raised {type(exc).__name__} on the base model: {exc}"
        ) from exc
    if not isinstance(metrics, dict):
        metrics = {"evaluator": metrics}
    produced = {objective_key(k) for k in metrics}
    _check_other_metrics(study, produced)
    if key not in produced:
        bare = sorted(k[len("eval_") :] for k in produced)
        hint = _args.suggest_name(key[len("eval_") :], set(bare))
        raise StudyDefinitionError(
            f"objective {study.objectives[0]!r} is not a metric the evaluator reports{hint} "
            f"(it reports: {', '.join(bare)})"
        )


def _check_other_metrics(study: Study, produced: set[str]) -> None:
    """Every objective after the first and every constraint that is not a cost names a metric the evaluator
    reports (``produced``: its metrics as trainer keys)."""
    names = [("objective", n) for n in study.objectives[1:]] + [("constraints", n) for n in study.constraints or {}]
    for what, name in names:
        if is_cost(name) or objective_key(name) in produced:
            continue
        bare = sorted(k[len("eval_") :] for k in produced)
        hint = _args.suggest_name(objective_key(name)[len("eval_") :], set(bare))
        raise StudyDefinitionError(
            f"{what}: {name!r} is neither a cost st-hpo measures (cost.*) nor a metric the evaluator reports{hint} "
            f"(it reports: {', '.join(bare)})"
        )
