"""Who meets the budget ends the study as `run` does, and the test set's refusals say what is missing
(issue 29, item 14 a-b)."""

from __future__ import annotations

import optuna
import pytest

import st_hpo
from tests.conftest import make_pairs
from tests.helpers import mlflow_runs
from tests.test_confirm_verdicts import GOOD, POOR


@pytest.mark.slow
def test_a_worker_that_meets_the_budget_scores_the_new_best_on_the_test_set(make_study, tmp_path):
    from datasets import Dataset

    from st_hpo._execution._storage import open_storage

    # the eval loss tells the configurations apart on every CPU (see POOR); the test set reports Spearman
    study = make_study(test_dataset=Dataset.from_dict(make_pairs(32, seed=3)), enqueue=POOR, n_trials=2,
                       objective="eval_loss", test_objective="sts-dev_spearman_cosine")
    first = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert first.test_value is not None
    earlier = first.best_trial_number
    # a better configuration, queued for whoever works next: a worker joining the study (st-hpo worker)
    optuna.load_study(study_name="tiny", storage=open_storage(str(tmp_path / "optuna.journal"))).enqueue_trial(GOOD)
    joined = st_hpo.join_study(study, n_trials=3, worker_name="w-far", output_dir=tmp_path, progress=False)
    assert joined.budget_met and joined.best_trial_number == 2 != earlier

    stored = optuna.load_study(study_name="tiny", storage=open_storage(str(tmp_path / "optuna.journal")))
    assert stored.user_attrs["st_hpo.test_trial"] == 2, "the test score is of the best trial, not an earlier one"
    assert joined.test_value == stored.user_attrs["st_hpo.test_value"]
    assert st_hpo.best_trial(study, output_dir=tmp_path).test_value == joined.test_value
    _, parents, _ = mlflow_runs(tmp_path, "tiny")
    parent = parents[0]
    assert parent.data.tags["st_hpo.best_trial"] == "2" and parent.data.tags["st_hpo.test_trial"] == "2"
    assert parent.data.metrics["test_objective"] == pytest.approx(joined.test_value)
    assert parent.info.status == "FINISHED"


def test_a_test_set_without_an_evaluator_to_score_it_is_refused_saying_what_to_add(make_study):
    from datasets import Dataset

    from tests.conftest import sts_evaluator

    test = Dataset.from_dict(make_pairs(32, seed=3))
    with pytest.raises(st_hpo.StudyDefinitionError) as refused:
        st_hpo.validate_study(make_study(evaluator=None, objective="eval_loss", test_dataset=test))
    message = str(refused.value)
    assert "holds its own data" not in message
    assert "the study has no evaluator to point at the test set" in message
    assert "test_evaluator=" in message and "test_objective=" in message
    # what it says to add is enough
    st_hpo.validate_study(make_study(evaluator=None, objective="eval_loss", test_dataset=test,
                                     test_evaluator=sts_evaluator, test_objective="sts-dev_spearman_cosine"))
