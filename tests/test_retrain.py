"""Retraining the best configuration: the exported arguments and `retrain_best` reproduce the best trial."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import st_hpo
from tests.conftest import sts_evaluator
from tests.helpers import load_trials, mlflow_runs
from tests.test_results import run_file_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, tiny_model_path):
    """A 3-trial study file (baseline first) on the tiny model, run to its end once for this module."""
    path, out = run_file_study(tmp_path_factory.mktemp("retrain"), tiny_model_path, name="tiny")
    study = st_hpo.load_study_file(path)
    trials = [t for t in load_trials(out, "tiny") if t.state.name == "COMPLETE"]
    best = max(trials, key=lambda t: t.value)
    return study, out, SimpleNamespace(best_trial_number=best.number, best_value=best.value)


def test_exported_arguments_reproduce_the_best_trial(finished_study, tmp_path, tiny_model_path, pairs_train,
                                                     pairs_eval):
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    study, out, result = finished_study
    path = st_hpo.export_best(study, tmp_path / "best.json", output_dir=out)
    config = json.loads(path.read_text())
    assert config["trial"] == result.best_trial_number and config["value"] == pytest.approx(result.best_value)
    assert config["study"] == "tiny" and config["objective"] == "sts-dev_spearman_cosine"
    # a user rebuilds the run from the file alone: the model, the data, and the exported arguments
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "again"), **config["args"])
    model = SentenceTransformer(tiny_model_path, device="cpu")
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=pairs_train,
                                         loss=CoSENTLoss(model, **config["loss_params"]),
                                         evaluator=sts_evaluator(pairs_eval))
    trainer.train()
    value = sts_evaluator(pairs_eval)(model)["sts-dev_spearman_cosine"]
    assert value == pytest.approx(result.best_value, abs=1e-4)


def test_retrain_best_saves_logs_and_registers_the_model(finished_study, tmp_path):
    import mlflow
    from sentence_transformers import SentenceTransformer

    study, out, result = finished_study
    retrained = st_hpo.retrain_best(study, output_dir=out, register_as="tiny-best")
    assert retrained.trial_number == result.best_trial_number
    assert retrained.value == pytest.approx(result.best_value, abs=1e-4), "same seed, same objective"
    card = (retrained.model_dir / "README.md").read_text()
    assert "Hyperparameter Search (st-hpo)" in card and "`tiny`" in card
    assert f"| best trial | {result.best_trial_number}" in card and f"{result.best_value:.4f}" in card
    local = SentenceTransformer(str(retrained.model_dir), device="cpu")

    client, parents, _ = mlflow_runs(out, "tiny")
    run = client.get_run(retrained.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert run.data.tags["st_hpo.kind"] == "retrain" and run.info.status == "FINISHED"
    assert run.data.metrics["objective"] == pytest.approx(retrained.value)
    versions = client.search_model_versions("name='tiny-best'")
    assert [str(v.version) for v in versions] == ["1"] and retrained.registered_version == "1"
    assert versions[0].run_id == retrained.run_id
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    try:
        loaded = mlflow.sentence_transformers.load_model("models:/tiny-best/1")
        logged = Path(mlflow.artifacts.download_artifacts("models:/tiny-best/1", dst_path=str(tmp_path / "logged")))
    finally:
        mlflow.set_tracking_uri(None)
    sentences = ["a dog is running in the park", "a chef is cooking some food"]
    assert local.encode(sentences).ravel().tolist() == pytest.approx(loaded.encode(sentences).ravel().tolist(),
                                                                     abs=1e-6)
    cards = list(logged.rglob("README.md"))
    assert cards and "Hyperparameter Search (st-hpo)" in cards[0].read_text(), "MLflow's copy has the card too"
    # the study itself is untouched: retraining adds no trial
    assert len(load_trials(out, "tiny")) == 3


def test_retrain_with_more_epochs_says_so_in_the_card(finished_study, tmp_path):
    study, out, _ = finished_study
    retrained = st_hpo.retrain_best(study, output_dir=out, epochs=2, track=False,
                                    model_dir=tmp_path / "two-epochs")
    assert retrained.epochs == 2.0 and retrained.run_id is None
    assert "`num_train_epochs` used here: 2" in (tmp_path / "two-epochs" / "README.md").read_text()


def test_retrain_epochs_win_over_max_steps_in_the_base_args(finished_study, tmp_path, monkeypatch):
    from st_hpo._results import _retrain

    study, out, _ = finished_study
    trained_with = []
    real_train = _retrain._train

    def spy(validated, resources, params, args):
        trained_with.append(args)
        return real_train(validated, resources, params, args)

    monkeypatch.setattr(_retrain, "_train", spy)
    capped = study.replace(args={**study.args, "max_steps": 1})  # max_steps would override num_train_epochs
    st_hpo.retrain_best(capped, output_dir=out, epochs=2, track=False, model_dir=tmp_path / "capped")
    assert trained_with[0].max_steps == -1 and trained_with[0].num_train_epochs == 2
