"""The held-out test score: the kept best model and the base model scored on data no trial chose by.

The best trial is the one with the best dev score among many, so its dev score is optimistic: part of
its lead is the luck of the draw on the dev set it was picked on. A study with ``Study(test_dataset=...,
test_evaluator=...)`` scores the kept best model (and the base model, once) on a test set that no
trial, pruner or sampler ever sees: when a study reaches its budget, and on demand with ``st-hpo test``.

Which metric of the test evaluator is the test objective, and the check at validation that the test
evaluator reports it, are :mod:`st_hpo._validation._test_objective`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._execution._best_model import saved_best_model
from st_hpo._tracking._schema import BASE_TEST_VALUE_ATTR, TEST_METRIC_ATTR, TEST_TRIAL_ATTR, TEST_VALUE_ATTR
from st_hpo._validation._test_objective import has_test, test_metric
from st_hpo.exceptions import NoResultError

if TYPE_CHECKING:
    import optuna

    from st_hpo._definition._resources import StudyResources
    from st_hpo._definition._study import Study
    from st_hpo._tracking._mlflow import MlflowTracker

__all__ = ["TEST_TRIAL_ATTR", "TEST_VALUE_ATTR", "BASE_TEST_VALUE_ATTR", "TestScore", "recorded_test_values",
           "score_model", "score_on_test"]

logger = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class TestScore:
    """The held-out test score of a study's best trial's kept model (and of the base model)."""

    __test__ = False  # not a pytest test class

    trial_number: int
    metric: str  #: the test evaluator's metric, e.g. 'sts-test_spearman_cosine'
    value: float
    base_model_value: float | None
    dev_value: float  #: the trial's dev objective, for comparison


def score_model(evaluator: Any, model: Any, definition: Study) -> tuple[str, float]:
    """(test metric, value) of ``model`` under the test ``evaluator``."""
    metrics = evaluator(model)
    key = test_metric(definition, metrics)
    return key.removeprefix("eval_"), float(metrics[key])


def score_on_test(optuna_study: optuna.Study, definition: Study, resources: StudyResources, *, device: str,
                  tracker: MlflowTracker | None = None, force: bool = False, chosen: Any = None) -> TestScore | None:
    """Score the best trial's kept model (``chosen``: that stored trial's, e.g. one of a multi-objective study's
    Pareto front) and the base model on the test set; record and return it.

    The values go to the study's user attributes (so ``st-hpo best`` shows them) and, with a
    ``tracker``, to the parent run as ``test_objective`` and ``base_model_test_objective``. Without
    ``force`` a best trial already scored is not scored again. None when the study has no test set.
    Raises NoResultError when no trial completed or the best model was not kept on this machine.
    """
    if not has_test(definition):
        return None
    complete = [t for t in optuna_study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        raise NoResultError(f"study {optuna_study.study_name!r} has no complete trial to score on the test set")
    best = optuna_study.best_trial if chosen is None else chosen
    attrs = optuna_study.user_attrs
    if not force and attrs.get(TEST_TRIAL_ATTR) == best.number and TEST_VALUE_ATTR in attrs:
        return TestScore(best.number, attrs[TEST_METRIC_ATTR], attrs[TEST_VALUE_ATTR],
                         attrs.get(BASE_TEST_VALUE_ATTR), float(best.values[0]))
    model_dir = saved_best_model(optuna_study) if chosen is None else _kept_model(chosen)
    if model_dir is None:
        raise NoResultError(f"trial {best.number}'s model was not kept on this machine, so it cannot be scored on "
                           "the test set; `st-hpo retrain` trains its configuration again and scores that model on "
                           "the test set")
    evaluator = resources.test_evaluator
    metric, value = score_model(evaluator, resources.kind.load_saved(str(model_dir), device=device), definition)
    base_value = attrs.get(BASE_TEST_VALUE_ATTR)
    if base_value is None or force:
        base_value = _score_base(resources, evaluator, definition, device)
    optuna_study.set_user_attr(TEST_VALUE_ATTR, value)
    optuna_study.set_user_attr(TEST_TRIAL_ATTR, best.number)
    optuna_study.set_user_attr(TEST_METRIC_ATTR, metric)
    if base_value is not None:
        optuna_study.set_user_attr(BASE_TEST_VALUE_ATTR, base_value)
    if tracker is not None:
        metrics = {"test_objective": value, **({"base_model_test_objective": base_value}
                                               if base_value is not None else {})}
        tracker.log_parent(metrics, best.number, tags={TEST_METRIC_ATTR: metric,
                                                        TEST_TRIAL_ATTR: str(best.number)})
    return TestScore(best.number, metric, value, base_value, float(best.values[0]))


def _score_base(resources: StudyResources, evaluator: Any, definition: Study, device: str) -> float | None:
    """The base model's test score (None for a model factory, which has no one base model)."""
    if callable(definition.model) and not hasattr(definition.model, "state_dict"):
        return None
    model = resources.base_model()
    if device != "cpu":
        model = copy.deepcopy(model).to(device)
    return score_model(evaluator, model, definition)[1]


def _kept_model(trial: Any) -> Path | None:
    """Where ``trial``'s model is kept, when it is on this machine."""
    from st_hpo._execution._best_model import MODEL_DIR_ATTR

    saved = trial.user_attrs.get(MODEL_DIR_ATTR)
    return Path(saved) if saved and (Path(saved) / "modules.json").is_file() else None


def recorded_test_values(study: optuna.Study) -> tuple[float | None, float | None]:
    """(the best trial's test value, the base model's) as recorded; the first is None when the study's
    best trial is not the one that was scored (a later trial beat it: run ``st-hpo test``)."""
    from st_hpo._execution._best_model import best_number

    attrs = study.user_attrs
    best = best_number(study, study.get_trials(deepcopy=False))  # None: no (feasible) complete trial, a front
    scored = best is not None and attrs.get(TEST_TRIAL_ATTR) == best
    return (attrs.get(TEST_VALUE_ATTR) if scored else None), attrs.get(BASE_TEST_VALUE_ATTR)
