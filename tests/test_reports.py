"""Study reports on the parent run: plots (HTML and PNG), trials.csv and summary.md."""

from __future__ import annotations

import csv

import optuna
import pytest
from optuna.distributions import FloatDistribution

from st_hpo._results._reports import MIN_TRIALS_FOR_IMPORTANCE, write_reports
from st_hpo._tracking import MlflowTracker
from st_hpo.cli import main
from tests.helpers import load_trials, mlflow_runs
from tests.test_results import run_file_study

SPACE = {"learning_rate": FloatDistribution(1e-5, 1e-3, log=True), "warmup_ratio": FloatDistribution(0.0, 0.5)}


def _study_with_pruned_trials() -> optuna.Study:
    """Six trials told to a real in-memory study: a baseline, four complete with curves, one pruned."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="synthetic", direction="maximize")
    study.enqueue_trial({"learning_rate": 5e-5, "warmup_ratio": 0.0}, user_attrs={"st_hpo.baseline": True})
    for i in range(6):
        trial = study.ask(SPACE)
        for step in (2, 4, 6):
            trial.report(0.1 * i + 0.01 * step, step)
            if i == 3 and step == 4:
                break
        trial.set_user_attr("st_hpo.trial_seconds", 2.0)
        trial.set_user_attr("st_hpo.train_seconds", 1.5)
        if i == 3:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, 0.1 * i + 0.06)
    return study


def test_reports_mark_pruned_trials_and_rank_parameters(tmp_path):
    study = _study_with_pruned_trials()
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "synthetic",
                            artifact_root=(tmp_path / "art").as_uri())
    tracker.ensure_parent(study, {"study": "synthetic"})
    written = write_reports(study, tracker, "spearman", base_model_value=0.01, local_dir=tmp_path / "reports")
    names = {p.split("/", 1)[1] for p in written}
    assert {"summary.md", "trials.csv", "plots.html", "optimization_history.png", "param_importances.png",
            "parallel_coordinate.png", "intermediate_values.png"} <= names
    assert {p.split("/", 1)[0] for p in written} == {"reports"}
    listed = {a.path for a in tracker.client.list_artifacts(tracker.parent_run_id, "reports")}
    assert listed == set(written), "every report file is on the parent run"
    html = (tmp_path / "reports" / "plots.html").read_text()
    assert "trial 3 (pruned)" in html and "Parameter importances" in html and "Parallel coordinates" in html
    assert html.count("plotly.js v") == 1, "plotly.js is embedded once: the page works offline"
    summary = (tmp_path / "reports" / "summary.md").read_text()
    assert "| best | 5 | 0.5600 |" in summary and "| baseline (base arguments) | 0 | 0.0600 |" in summary
    assert "+0.5000 over the baseline" in summary and "+0.5500 over the base model" in summary
    assert "6 in all: 5 complete, 1 pruned, 0 failed, 0 running" in summary
    assert "12.0 s in trials" in summary and "not computed" not in summary
    run = tracker.client.get_run(tracker.parent_run_id)
    assert run.data.tags["mlflow.note.content"] == summary, "the summary is the parent run's description"
    rows = list(csv.DictReader(open(tmp_path / "reports" / "trials.csv")))
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3 + ["PRUNED"] + ["COMPLETE"] * 2
    assert rows[0]["baseline"] == "True" and float(rows[5]["value"]) == pytest.approx(0.56)


def test_reports_without_a_tracker_write_files_only(tmp_path):
    study = optuna.create_study(study_name="empty")
    written = write_reports(study, None, "loss", local_dir=tmp_path)
    assert written == ["reports/trials.csv", "reports/summary.md"]
    assert "No trial has completed yet." in (tmp_path / "summary.md").read_text()


@pytest.mark.slow
def test_report_command_on_a_real_study(tmp_path, tiny_model_path, capsys):
    path, out = run_file_study(tmp_path, tiny_model_path)
    capsys.readouterr()
    assert main(["report", str(path), "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (f"Parameter importances: not computed; they need at least {MIN_TRIALS_FOR_IMPORTANCE} complete "
            "trials and the study has 3.") in printed
    for name in ("summary.md", "trials.csv", "plots.html", "optimization_history.png", "parallel_coordinate.png",
                 "intermediate_values.png"):
        assert (out / "reports" / name).stat().st_size > 0, name
    assert not (out / "reports" / "param_importances.png").exists(), "3 complete trials: no importances"
    client, parents, _ = mlflow_runs(out, "tiny-file")
    listed = {a.path for a in client.list_artifacts(parents[0].info.run_id, "reports")}
    assert "reports/plots.html" in listed and "reports/summary.md" in listed
    trials = load_trials(out, "tiny-file")
    rows = list(csv.DictReader(open(out / "reports" / "trials.csv")))
    assert [(int(r["number"]), r["state"]) for r in rows] == [(t.number, t.state.name) for t in trials]
    assert all(r["mlflow_run_id"] for r in rows)
