"""The test objective: which metric of the test evaluator is the study's objective on the held-out test set,
and the check that the test evaluator, run on a few test rows, reports it.

The test metric is the objective's metric as the test evaluator reports it: the same name, or the one
name that ends like the objective after the evaluator's prefix (``sts-dev_spearman_cosine`` on the dev
evaluator is ``sts-test_spearman_cosine`` on an evaluator named ``sts-test``), unless
``Study(test_objective=...)`` names it. Scoring the kept best model is :mod:`st_hpo._execution._test_score`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from st_hpo._definition._study import Study
from st_hpo.exceptions import StudyDefinitionError

if TYPE_CHECKING:
    from st_hpo._definition._resources import StudyResources
    from st_hpo._validation._state import Validation

__all__ = ["PROBE_ROWS", "check_test_objective", "has_test", "test_metric"]

#: Rows of the test set the evaluator runs on at validation, to prove it reports the test metric.
PROBE_ROWS = 16


def check_test_objective(state: Validation) -> None:
    """The test evaluator reports the test metric (a study with no test set: nothing to check)."""
    _check_test_objective(state.study, state.resources, state.model)


def has_test(definition: Study) -> bool:
    """True when the study scores its best model on a test set."""
    return definition.test_dataset is not None or definition.test_evaluator is not None


def test_metric(definition: Study, metrics: dict[str, Any]) -> str:
    """The test evaluator's key for the study's objective (see the module docstring); raises when none."""
    bare = {k.removeprefix("eval_"): k for k in metrics}
    wanted = (definition.test_objective or definition.objectives[0]).removeprefix("eval_")
    if wanted in bare:
        return bare[wanted]
    if definition.test_objective is None:
        for i, ch in enumerate(wanted):  # the longest ending (after an '_') that one reported name shares
            if ch != "_":
                continue
            matches = [k for k in bare if k.endswith(wanted[i:])]
            if len(matches) == 1:
                return bare[matches[0]]
            if matches:
                break
    raise StudyDefinitionError(
        f"the test evaluator reports no metric for objective {wanted!r} (it reports: {', '.join(sorted(bare))}); "
        "name it with Study(test_objective=...)"
    )


def _check_test_objective(definition: Study, resources: StudyResources, model: Any) -> None:
    """Run the test evaluator on a few test rows and check that it reports the test metric."""
    if not has_test(definition):
        return
    test = resources.test_dataset
    if test is not None and len(test) == 0:
        raise StudyDefinitionError("test_dataset is empty; give it at least one row (or leave it out)")
    evaluator = resources.build_test_evaluator(test.select(range(min(PROBE_ROWS, len(test))))
                                               if test is not None else None)
    try:
        metrics = evaluator(model)
    except Exception as exc:
        raise StudyDefinitionError(f"the test evaluator raised {type(exc).__name__} on the base model: {exc}") from exc
    test_metric(definition, metrics if isinstance(metrics, dict) else {})
