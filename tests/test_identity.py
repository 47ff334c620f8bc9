"""A study knows what it is: the definition its trials ran under, refused when changed, and on the parent run."""

from __future__ import annotations

import subprocess

import optuna
import pytest
from datasets import Dataset

import st_hpo
from tests.conftest import make_pairs
from tests.helpers import load_trials, mlflow_runs

pytestmark = pytest.mark.slow


def test_resuming_a_changed_definition_is_refused_and_says_what_changed(make_study, tmp_path):
    st_hpo.run_study(make_study(), n_trials=1, output_dir=tmp_path, progress=False)
    base_args = dict(make_study().args)
    changes = {
        r"base args \(learning_rate 5e-05 -> 0\.0001\)": dict(args={**base_args, "learning_rate": 1e-4}),
        r"search space \(warmup_ratio\)": dict(space={
            "learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True),
            "warmup_ratio": optuna.distributions.FloatDistribution(0.0, 0.3)}),
        r"data \(train_dataset content differs\)": dict(train_dataset=Dataset.from_dict(make_pairs(64, seed=9))),
        r"model \('.*' -> '.*other-model'\)": dict(model=str(tmp_path / "other-model")),
    }
    import shutil

    shutil.copytree(make_study().model, tmp_path / "other-model")
    for what, change in changes.items():
        with pytest.raises(st_hpo.StudyDefinitionError, match=rf"ran under another definition: changed {what}.*"
                                                              r"study_name=NEW") as refused:
            st_hpo.run_study(make_study(**change), n_trials=2, output_dir=tmp_path, progress=False)
        assert "(--study-name NEW, or Study(name=...)) and another --output-dir" in refused.value.as_options()
    assert len(load_trials(tmp_path, "tiny")) == 1, "no refused definition ran a trial"
    # a new name is a new study, in its own folder
    other = st_hpo.run_study(make_study(**changes[r"base args \(learning_rate 5e-05 -> 0\.0001\)"]),
                             study_name="tiny-lr", n_trials=1, output_dir=tmp_path / "lr", progress=False)
    assert other.budget_met
    # the unchanged definition resumes
    assert st_hpo.run_study(make_study(), n_trials=2, output_dir=tmp_path, progress=False).budget_met


def test_the_parent_run_records_versions_commit_model_and_datasets(make_study, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    study_file = repo / "study.py"
    study_file.write_text("# a study file under git\n")
    for cmd in (["init", "-q"], ["add", "study.py"],
                ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "study"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    study = make_study()
    st_hpo.run_study(study, n_trials=1, output_dir=tmp_path / "out", progress=False, study_file=study_file)
    client, parents, _ = mlflow_runs(tmp_path / "out", "tiny")
    parent = client.get_run(parents[0].info.run_id)
    tags = parent.data.tags
    import optuna as optuna_module
    import sentence_transformers
    import torch

    assert tags["st_hpo.version.torch"] == torch.__version__
    assert tags["st_hpo.version.sentence-transformers"] == sentence_transformers.__version__
    assert tags["st_hpo.version.optuna"] == optuna_module.__version__
    assert tags["st_hpo.version.st-hpo"] == st_hpo.__version__
    assert tags["mlflow.source.git.commit"] == head and tags["st_hpo.git_dirty"] == "false"
    assert tags["st_hpo.model"] == study.model
    inputs = {d.dataset.name: d for d in parent.inputs.dataset_inputs}
    assert set(inputs) == {"train_dataset", "eval_dataset"}
    assert '"rows": 64' in inputs["train_dataset"].dataset.profile
    assert {t.value for t in inputs["eval_dataset"].tags if t.key == "mlflow.data.context"} == {"evaluation"}
    assert len(inputs["train_dataset"].dataset.digest) == 16


def test_a_run_without_n_trials_keeps_the_extended_budget(make_study, tmp_path):
    study = make_study(n_trials=1, pruner="none")
    assert st_hpo.run_study(study, n_trials=2, output_dir=tmp_path, progress=False).budget_met
    again = st_hpo.run_study(study, output_dir=tmp_path, progress=False)  # the file still says n_trials=1
    assert again.budget_met and again.n_complete == 2
    assert again.budget == 2, "the result (and the CLI's last line) names the budget the run worked to"
    study_attrs = optuna.load_study(study_name="tiny", storage=st_hpo._execution._storage.open_storage(
        str(tmp_path / "optuna.journal"))).user_attrs
    assert study_attrs["st_hpo.n_trials"] == 2, "the extension is not overwritten by the file's n_trials"


def test_more_trials_finished_than_a_lowered_budget_is_said_as_it_is(study_file, tmp_path):
    from tests.helpers import run_cli

    path = study_file(name="lowered", n_trials=2)
    assert run_cli("-q", "run", str(path), cwd=tmp_path).returncode == 0
    again = run_cli("run", str(path), "--n-trials", "1", cwd=tmp_path)  # the budget lowered below what ran
    assert again.returncode == 0, again.stderr[-2000:]
    status = run_cli("status", str(path), cwd=tmp_path)
    for text in (again.stderr, status.stdout):
        assert "2 of 1" not in text, text
        assert "2 trials finished, 1 more than the budget of 1" in text, text


def test_a_resume_with_another_progress_bar_setting_is_the_same_study(make_study, tmp_path):
    """``disable_tqdm`` follows transformers' logger level (``st-hpo run`` vs ``st-hpo -vv run`` or a notebook):
    it changes no trial, so a resume under the other setting is not refused as another definition."""
    base_args = dict(make_study().args)
    st_hpo.run_study(make_study(args={**base_args, "disable_tqdm": True}), n_trials=1, output_dir=tmp_path,
                     progress=False)
    resumed = st_hpo.run_study(make_study(args={**base_args, "disable_tqdm": False}), n_trials=2,
                               output_dir=tmp_path, progress=False)
    assert resumed.budget_met
    assert len(load_trials(tmp_path, "tiny")) == 2


def test_a_changed_loss_or_evaluator_is_refused_on_resume_and_an_older_record_resumes(
        study_file, tmp_path, capsys, caplog, monkeypatch, make_study):
    from sentence_transformers.sentence_transformer.losses import AnglELoss, CoSENTLoss

    from st_hpo.cli import main

    path = study_file(name="loss-id", n_trials=1)
    out = tmp_path / "out"
    assert main(["-q", "run", str(path), "--output-dir", str(out)]) == 0
    # AnglELoss imported under the name CoSENTLoss: the same name in the file, another loss
    path.write_text(path.read_text().replace(
        "from sentence_transformers.sentence_transformer.losses import CoSENTLoss",
        "from sentence_transformers.sentence_transformer.losses import AnglELoss as CoSENTLoss"))
    capsys.readouterr()
    assert main(["-q", "run", str(path), "--output-dir", str(out), "--n-trials", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "ran under another definition: changed loss (" in err
    assert "cosent.CoSENTLoss' -> " in err and "angle.AnglELoss')" in err
    assert len(load_trials(out, "loss-id")) == 1, "the refused definition ran no trial"

    # a factory is known by its code: the same function name building another loss is another definition
    def loss(model, params):
        return CoSENTLoss(model)

    st_hpo.run_study(make_study(loss=loss), n_trials=1, output_dir=tmp_path / "f", progress=False)
    first = loss

    def loss(model, params):  # noqa: F811 - the edited factory, same qualified name
        return AnglELoss(model)

    with pytest.raises(st_hpo.StudyDefinitionError, match=r"ran under another definition: changed loss \("):
        st_hpo.run_study(make_study(loss=loss), n_trials=2, output_dir=tmp_path / "f", progress=False)

    def evaluator(ds):
        from tests.conftest import sts_evaluator

        return sts_evaluator(ds.select(range(16)))  # scores the trials on half the rows: other values

    with pytest.raises(st_hpo.StudyDefinitionError, match=r"ran under another definition: changed evaluator \("):
        st_hpo.run_study(make_study(loss=first, evaluator=evaluator), n_trials=2, output_dir=tmp_path / "f", progress=False)

    # a study stored before st-hpo recorded the loss, evaluator and objective resumes, with a warning, and
    # records them from then on
    path.write_text(path.read_text().replace("import AnglELoss as CoSENTLoss", "import CoSENTLoss"))
    from st_hpo._execution._storage import open_storage
    from st_hpo._tracking._schema import DEFINITION_ATTR

    stored = optuna.load_study(study_name="loss-id", storage=open_storage(str(out / "optuna.journal")))
    old = {k: v for k, v in stored.user_attrs[DEFINITION_ATTR].items() if k not in ("loss", "evaluator", "objective")}
    stored.set_user_attr(DEFINITION_ATTR, old)
    import logging

    monkeypatch.setattr(logging.getLogger("st_hpo"), "propagate", True)  # the CLI above turned it off
    with caplog.at_level("WARNING", logger="st_hpo"):
        assert st_hpo.run_study(st_hpo.load_study_file(path), n_trials=2, output_dir=out, progress=False).budget_met
    assert "was stored before st-hpo recorded its loss, evaluator, objective" in caplog.text
    record = optuna.load_study(study_name="loss-id", storage=open_storage(str(out / "optuna.journal"))
                               ).user_attrs[DEFINITION_ATTR]
    assert record["loss"].endswith("cosent.CoSENTLoss") and record["objective"].endswith("(maximize)")
