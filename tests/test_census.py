"""The trial census: every count of a study's trials agrees, and a cancelled surplus trial is never "failed"."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution

from st_hpo._execution._loop import _cancel
from st_hpo._execution._session import log_study_figures
from st_hpo._execution._storage import open_storage
from st_hpo._results._reports import summarize
from st_hpo._tracking import MlflowTracker
from st_hpo._tracking._census import Census, study_census, take_census

SPACE = {"learning_rate": FloatDistribution(1e-5, 1e-3, log=True)}


def _study_with_a_cancelled_surplus(storage_url: str) -> optuna.Study:
    """A stored study: 2 complete, 1 pruned, 1 failed, and a surplus ask cancelled by the loop."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="census", direction="maximize", storage=open_storage(storage_url))
    for value in (0.5, 0.6):
        study.tell(study.ask(SPACE), value)
    pruned = study.ask(SPACE)
    pruned.report(0.1, 1)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    failed = study.ask(SPACE)
    failed.set_user_attr("st_hpo.error", "diverged")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    _cancel(study, study.ask(SPACE))  # what a worker does when others filled the budget
    return study


def test_a_cancelled_surplus_trial_is_not_counted_as_failed_anywhere(tmp_path, storage_url):
    study = _study_with_a_cancelled_surplus(storage_url)
    assert study_census(study) == Census(complete=2, pruned=1, failed=1, cancelled=1)
    assert study_census(study).finished == 3

    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "census",
                            artifact_root=(tmp_path / "art").as_uri())
    tracker.ensure_parent(study, {"study": "census"})
    log_study_figures(tracker, study)
    metrics = tracker.client.get_run(tracker.parent_run_id).data.metrics
    assert (metrics["n_complete"], metrics["n_pruned"], metrics["n_fail"]) == (2, 1, 1)

    summary = summarize(study, "spearman", None, [])
    assert "Trials: 4 in all: 2 complete, 1 pruned, 1 failed, 0 running" in summary


def test_finished_is_complete_or_pruned_unlike_optunas_is_finished(tmp_path):
    study = _study_with_a_cancelled_surplus(str(tmp_path / "optuna.journal"))
    trials = study.get_trials(deepcopy=False)
    assert sum(t.state.is_finished() for t in trials) == 5  # Optuna: COMPLETE, PRUNED and FAIL
    assert take_census(trials).finished == 3  # st-hpo: what the budget counts
    queued = optuna.create_study()
    queued.enqueue_trial({"x": 1.0})
    assert take_census(queued.get_trials()) == Census(waiting=1)
