"""What MLflow's UI opens on: the study's trials, best first, in the model-training view (the browser test
looks at it; these check what st-hpo writes for it, with MLflow's own search)."""

from __future__ import annotations

import json

import pytest

import st_hpo
from st_hpo._tracking._mlflow import default_tracking_uri, seed_sqlite_store

pytestmark = pytest.mark.slow


def test_an_experiment_made_by_an_earlier_version_gets_the_kind_and_the_trials_view(tmp_path, make_study):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "out"
    uri = default_tracking_uri(out)
    seed_sqlite_store(uri)
    client = MlflowClient(tracking_uri=uri)
    # as st-hpo made it before: no experiment kind (MLflow 3 opened it on its GenAI view), no view
    experiment_id = client.create_experiment("tiny", artifact_location=(out / "mlartifacts").as_uri())
    assert "mlflow.experimentKind" not in client.get_experiment(experiment_id).tags
    result = st_hpo.run_study(make_study(n_trials=2), output_dir=out, progress=False)
    assert result.experiment_id == experiment_id
    tags = client.get_experiment(experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(tags["mlflow.sharedViewState.st-hpo-trials"])
    assert view["orderByKey"] == "metrics.`objective`" and view["orderByAsc"] is False  # maximised: best first
    assert view["selectedColumns"] == ["metrics.`objective`", "tags.`st_hpo.trial_state`", "params.`learning_rate`",
                                       "params.`warmup_ratio`"]
    charts = {c["type"]: c for c in view["compareRunCharts"]}
    assert charts["PARALLEL"]["selectedParams"] == ["learning_rate", "warmup_ratio"]
    assert charts["PARALLEL"]["selectedMetrics"] == ["objective"]
    # MLflow's own search with the view's filter and sort: the trials alone (no parent run), best first
    shown = client.search_runs([experiment_id], filter_string=view["searchFilter"], order_by=["metrics.objective DESC"])
    assert sorted(r.info.run_name for r in shown) == ["trial-0", "trial-1"]
    values = [r.data.metrics["objective"] for r in shown]
    assert values == sorted(values, reverse=True)


def test_a_minimised_objective_is_sorted_lowest_first_and_a_study_without_trials_shows_its_space():
    from st_hpo._tracking._view import searched_names, trials_url, trials_view

    view = trials_view(searched_names({"learning_rate": None, "loss.scale": None}), maximize=False)
    assert view["orderByAsc"] is True
    assert view["selectedColumns"][2:] == ["params.`learning_rate`", "params.`loss.scale`"]
    url = trials_url("http://127.0.0.1:5000/", "7")
    assert url == ("http://127.0.0.1:5000/#/experiments/7/runs?viewStateShareKey=st-hpo-trials"
                   "&workflowType=machine_learning")
