"""Where `register` and `retrain` put a SentenceTransformer: in the study's own experiment and output folder,
never in MLflow's Default experiment, whose artifact folder is wherever the cached empty store was made."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import load_trials, mlflow_runs

pytestmark = pytest.mark.slow  # several processes, one after the other: nothing timed or signalled, not serial


def _st_hpo(*args: str, cwd, env) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "st_hpo", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_register_and_retrain_log_the_model_in_the_studys_experiment_and_folder(tmp_path, study_file):
    import mlflow
    import numpy as np
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    from sentence_transformers import SentenceTransformer

    path = study_file(name="landing", n_trials=1)
    first, second = tmp_path / "first-job", tmp_path / "second-job"
    first.mkdir()
    second.mkdir()
    out = tmp_path / "runs" / "landing"
    # a fresh cache: the empty store template is made by the run in `first-job`, the register runs elsewhere
    env = {**os.environ, "ST_HPO_CACHE": str(tmp_path / "cache"), "PYTHONPATH": os.pathsep.join(sys.path)}
    _st_hpo("run", str(path), "--output-dir", str(out), cwd=first, env=env)
    _st_hpo("register", str(path), "--output-dir", str(out), "--name", "landing-best", cwd=second, env=env)
    _st_hpo("retrain", str(path), "--output-dir", str(out), "--register-as", "landing-retrained", cwd=second,
            env=env)
    # the job folders go away (a temporary folder of another job, a CI workspace)
    shutil.rmtree(first)
    shutil.rmtree(second)

    uri = f"sqlite:///{out / 'mlflow.db'}"
    client, _, runs = mlflow_runs(out, "landing")
    experiment = client.get_experiment_by_name("landing").experiment_id
    with _use_tracking_uri(uri):
        models = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list")
        default = mlflow.search_logged_models(experiment_ids=["0"], output_format="list")
    assert default == [], "nothing goes to MLflow's Default experiment"
    best_run = runs[0].info.run_id
    retrain_run = next(r for r in client.search_runs([experiment]) if r.data.tags.get("st_hpo.kind") == "retrain")
    assert sorted(m.source_run_id for m in models) == sorted([best_run, retrain_run.info.run_id])
    for model in models:
        assert model.name == "model"
        assert model.artifact_location.startswith((out / "mlartifacts").as_uri()), model.artifact_location
    registry = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert registry.get_model_version("landing-best", "1").run_id == best_run
    sentence = ["a dog is running in the park"]
    trial = load_trials(out, "landing")[0]
    kept = SentenceTransformer(trial.user_attrs["st_hpo.model_dir"], device="cpu")
    retrained = SentenceTransformer(str(out / "best-model"), device="cpu")
    with _use_tracking_uri(uri):  # the README's lines, after the job folders are gone
        served = mlflow.sentence_transformers.load_model("models:/landing-best/1")
        served_retrained = mlflow.sentence_transformers.load_model("models:/landing-retrained/1")
        from_run = mlflow.sentence_transformers.load_model(f"runs:/{best_run}/model")
    assert np.allclose(served.encode(sentence), kept.encode(sentence), atol=1e-6)
    assert np.allclose(from_run.encode(sentence), kept.encode(sentence), atol=1e-6)
    assert np.allclose(served_retrained.encode(sentence), retrained.encode(sentence), atol=1e-6)
