"""Other programs reading what st-hpo wrote, as a user would point them at it: Optuna's own `load_study` on the
journal file, optuna-dashboard's web app, MLflow's `search_runs`, and the registered model's `models:/` URI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from wsgiref.util import setup_testing_defaults

import pytest

import st_hpo
from tests.helpers import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ran(tmp_path_factory, tiny_model_path):
    """A finished study of 3 trials, baseline first, in `<root>/st-hpo-runs/ext`: (root, study file)."""
    from tests.conftest import STUDY_FILE_TEMPLATE, make_pairs

    root = tmp_path_factory.mktemp("external")
    path = root / "ext.py"
    path.write_text(STUDY_FILE_TEMPLATE.format(pairs=make_pairs(64, 1), eval_pairs=make_pairs(32, 2), name="ext",
                                               model=tiny_model_path, n_trials=3, epochs=1, baseline=True))
    done = run_cli("-q", "run", str(path), cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, path


def _status_states(root, path) -> dict[int, str]:
    shown = run_cli("status", str(path), "--json", cwd=root)
    assert shown.returncode == 0, shown.stderr
    return {row["number"]: row["state"] for row in json.loads(shown.stdout)}


def _journal(root):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(root / "st-hpo-runs" / "ext" / "optuna.journal")))


def test_optuna_load_study_on_the_journal_sees_the_trials_status_shows(ran):
    import optuna

    root, path = ran
    study = optuna.load_study(study_name="ext", storage=_journal(root))
    assert {t.number: t.state.name for t in study.trials} == _status_states(root, path)
    assert study.direction.name == "MAXIMIZE"
    assert study.best_trial.number == st_hpo.best_trial(st_hpo.load_study_file(path),
                                                        output_dir=root / "st-hpo-runs" / "ext").number
    assert "learning_rate" in study.trials_dataframe().columns.str.replace("params_", "").tolist()


def _get(app, url: str) -> tuple[str, dict]:
    environ: dict = {"PATH_INFO": url, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    return status[0], json.loads(body)


def test_optuna_dashboard_lists_the_study_and_its_trials(ran):
    import optuna_dashboard

    root, path = ran
    app = optuna_dashboard.wsgi(_journal(root))
    status, listed = _get(app, "/api/studies")
    assert status.startswith("200"), listed
    [summary] = [s for s in listed["study_summaries"] if s["study_name"] == "ext"]
    status, detail = _get(app, f"/api/studies/{summary['study_id']}")
    assert status.startswith("200"), detail
    assert {t["number"]: t["state"] for t in detail["trials"]} == {
        n: s.capitalize() for n, s in _status_states(root, path).items()}
    assert {p["name"] for p in detail["union_search_space"]} == {"learning_rate", "warmup_ratio"}
    status, importances = _get(app, f"/api/studies/{summary['study_id']}/param_importances")
    assert status.startswith("200"), importances


def test_mlflow_search_runs_finds_one_run_per_trial_with_its_objective(ran):
    import mlflow

    root, path = ran
    trials = {t.number: t for t in st_hpo.open_study(st_hpo.load_study_file(path),
                                                     output_dir=root / "st-hpo-runs" / "ext").optuna_study.trials}
    mlflow.set_tracking_uri(f"sqlite:///{root / 'st-hpo-runs' / 'ext' / 'mlflow.db'}")
    try:
        runs = mlflow.search_runs(experiment_names=["ext"], filter_string="tags.`st_hpo.kind` = 'trial'")
    finally:
        mlflow.set_tracking_uri(None)
    assert sorted(int(n) for n in runs["tags.st_hpo.trial_number"]) == sorted(trials)
    for _, run in runs.iterrows():
        trial = trials[int(run["tags.st_hpo.trial_number"])]
        if trial.state.name == "COMPLETE":
            assert run["metrics.objective"] == pytest.approx(trial.value)
            assert run["status"] == "FINISHED"


def test_the_registered_model_loads_through_its_models_uri(ran):
    root, path = ran
    done = run_cli("register", str(path), cwd=root)
    assert done.returncode == 0, done.stderr
    assert "models:/ext/1" in done.stdout
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'st-hpo-runs' / 'ext' / 'mlflow.db'}"}
    code = "import mlflow.sentence_transformers as f; print(f.load_model('models:/ext/1').encode(['a b']).shape)"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                            timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().startswith("(1, ")
