"""Reading results back: `st-hpo best` and `st-hpo export` on a study that really ran (tiny model)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

import st_hpo
from st_hpo.cli import main
from tests.conftest import STUDY_FILE_TEMPLATE, make_pairs
from tests.helpers import load_trials, mlflow_runs

pytestmark = pytest.mark.slow


def run_file_study(root, model_path, *, name="tiny-file", n_trials=3, pruner="none"):
    """Write a study file (baseline first) in ``root``, run it to its end in ``root/out``; (file, out)."""
    path = root / f"{name}.py"
    path.write_text(STUDY_FILE_TEMPLATE.format(pairs=make_pairs(64, 1), eval_pairs=make_pairs(32, 2), name=name,
                                               model=model_path, n_trials=n_trials, epochs=1, baseline=True))
    out = root / "out"
    st_hpo.run_study(st_hpo.load_study_file(path), output_dir=out, pruner=pruner, progress=False)
    return path, out


@pytest.fixture(scope="module")
def ran(tmp_path_factory, tiny_model_path):
    return run_file_study(tmp_path_factory.mktemp("results"), tiny_model_path)


def test_best_reports_the_best_trial_and_its_gain_over_the_baseline(ran, capsys):
    path, out = ran
    trials = load_trials(out, "tiny-file")
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    baseline = trials[0]
    assert main(["best", str(path), "--output-dir", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["number"] == best.number and shown["value"] == pytest.approx(best.value)
    assert shown["params"] == best.params
    assert shown["mlflow_run_id"] == best.user_attrs["st_hpo.mlflow_run_id"]
    assert shown["baseline_number"] == 0 and shown["baseline_value"] == pytest.approx(baseline.value)
    assert shown["gain_over_baseline"] == pytest.approx(best.value - baseline.value)
    assert shown["base_model_value"] is not None, "the base model was scored before fine-tuning"
    assert shown["gain_over_base_model"] == pytest.approx(best.value - shown["base_model_value"])
    _, _, runs = mlflow_runs(out, "tiny-file")
    assert shown["mlflow_run_id"] in {r.info.run_id for r in runs}
    assert shown["model_dir"] == str(out.resolve() / "trials" / f"trial-{best.number}" / "model")

    assert main(["best", str(path), "--output-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"trial {best.number}" in text and f"{best.value:.4f}" in text and "vs baseline trial" in text
    assert f"model: {shown['model_dir']}" in text


def test_export_writes_arguments_that_load_back(ran, tmp_path, capsys):
    from sentence_transformers import SentenceTransformerTrainingArguments

    path, out = ran
    trials = load_trials(out, "tiny-file")
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert main(["export", str(path), "--output-dir", str(out), "--to", str(tmp_path / "best.yaml")]) == 0
    config = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert (config["study"], config["trial"], config["objective"]) == ("tiny-file", best.number,
                                                                       "sts-dev_spearman_cosine")
    assert config["value"] == pytest.approx(best.value) and config["params"] == best.params
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "x"), **config["args"])
    assert args.learning_rate == pytest.approx(best.params["learning_rate"])
    assert args.seed == 7 and args.per_device_train_batch_size == 16 and args.eval_steps == 2
    # the same effective arguments the trial logged to MLflow (output folders aside)
    client, _, runs = mlflow_runs(out, "tiny-file")
    run = next(r for r in runs if r.info.run_id == best.user_attrs["st_hpo.mlflow_run_id"])
    logged = json.load(open(client.download_artifacts(run.info.run_id, "training_args.json", str(tmp_path))))
    mine = json.loads(args.to_json_string())
    for key in ("learning_rate", "warmup_steps", "num_train_epochs", "seed", "lr_scheduler_type", "max_grad_norm"):
        assert mine[key] == logged[key], key
    assert "output_dir" not in config["args"]

    assert main(["export", str(path), "--output-dir", str(out), "--to", str(tmp_path / "best.json")]) == 0
    assert json.loads((tmp_path / "best.json").read_text()) == config


def test_export_writes_by_suffix_into_a_folder_or_refuses_in_one_line(ran, tmp_path, capsys):
    path, out = ran
    assert main(["export", str(path), "--output-dir", str(out), "--to", str(tmp_path / "best.txt")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ".json" in err and ".yaml" in err and "best.txt" in err, err
    assert not (tmp_path / "best.txt").exists(), "no JSON hidden in a .txt file"
    folder = tmp_path / "configs"
    folder.mkdir()
    assert main(["export", str(path), "--output-dir", str(out), "--to", str(folder)]) == 0
    assert f"wrote the best configuration to {folder / 'tiny-file.json'}" in capsys.readouterr().out
    assert json.loads((folder / "tiny-file.json").read_text())["study"] == "tiny-file"


def test_export_to_a_path_it_cannot_write_refuses_in_one_line(ran, tmp_path, capsys):
    """A folder on the way that is a file (or one without permission): one line that says what to do, exit 1."""
    path, out = ran
    blocker = tmp_path / "taken.json"
    blocker.write_text("{}")
    assert main(["export", str(path), "--output-dir", str(out), "--to", str(blocker / "best.json")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err and "folder you can write" in err, err
    with pytest.raises(st_hpo.UsageError, match="cannot write"):
        st_hpo.open_study(st_hpo.load_study_file(path), output_dir=out).export(blocker / "best.json")
    assert blocker.read_text() == "{}"


def test_open_study_on_a_study_files_path_says_to_load_it(ran):
    """The CLI takes the file's path; the API a Study: given the path, one error that says how to load it."""
    path, out = ran
    for given in (path, str(path)):
        with pytest.raises(st_hpo.UsageError, match=r"load_study_file"):
            st_hpo.open_study(given, output_dir=out).status()
    with pytest.raises(st_hpo.UsageError, match=r"load_study_file"):
        st_hpo.best_trial(str(path), output_dir=out)


def test_best_on_a_study_that_never_ran_says_to_run_it(ran, tmp_path, capsys):
    path, _ = ran
    assert main(["best", str(path), "--output-dir", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "run it first" in err and "Traceback" not in err


def test_a_registry_name_mlflow_refuses_is_refused_before_anything_is_logged_or_trained(ran, tmp_path, capsys):
    """register --name / retrain --register-as with '/' or ':': one line, exit 1, no logged model left on the
    run (register) and no training (retrain: refused before minutes of it, not after)."""
    path, out = ran
    client, parents, _ = mlflow_runs(out, "tiny-file")
    experiment_ids = [parents[0].info.experiment_id]
    before = len(client.search_logged_models(experiment_ids))
    assert main(["register", str(path), "--output-dir", str(out), "--name", "team/model:v1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--name 'team/model:v1'" in err and "Traceback" not in err, err
    assert len(client.search_logged_models(experiment_ids)) == before, "nothing logged when refused"
    target = tmp_path / "retrained"
    assert main(["retrain", str(path), "--output-dir", str(out), "--model-dir", str(target),
                 "--register-as", "a:b"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--register-as 'a:b'" in err, err
    assert not target.exists() and not (out / "retrain").exists(), "refused before training"


def test_a_lost_mlflow_store_report_says_to_sync_and_status_best_register_use_the_synced_runs(tmp_path, tiny_model_path, capsys):
    """mlflow.db replaced (lost, or only the journal copied): report refuses in one line that says to sync;
    after `st-hpo sync`, report and register work on the runs sync re-created (the trial's stored run id is
    the lost one: Optuna keeps a finished trial's attributes as they were)."""
    path, ran_in = run_file_study(tmp_path, tiny_model_path, name="tiny-lost", n_trials=2)
    out = tmp_path / "journal-only"  # a new path: this process's MLflow client still holds the old store open
    shutil.copytree(ran_in, out, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    capsys.readouterr()  # what the run logged
    assert main(["report", str(path), "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "st-hpo sync" in err, err
    assert main(["sync", str(path), "--output-dir", str(out)]) == 0
    capsys.readouterr()
    # status and best name the runs sync made, not the lost ones the trials recorded
    _, _, runs = mlflow_runs(out, "tiny-lost")
    run_of = {int(r.data.tags["st_hpo.trial_number"]): r.info.run_id for r in runs}
    assert main(["status", str(path), "--output-dir", str(out), "--json"]) == 0
    assert {row["number"]: row["mlflow_run_id"] for row in json.loads(capsys.readouterr().out)} == run_of
    assert main(["best", str(path), "--output-dir", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["mlflow_run_id"] == run_of[shown["number"]]
    assert main(["report", str(path), "--output-dir", str(out)]) == 0
    assert main(["register", str(path), "--output-dir", str(out)]) == 0
    capsys.readouterr()
    _, _, runs = mlflow_runs(out, "tiny-lost")
    best = st_hpo.best_trial(st_hpo.load_study_file(path), output_dir=out)
    assert best.mlflow_run_id == run_of[best.number]
    run = next(r for r in runs if r.data.tags["st_hpo.trial_number"] == str(best.number))
    assert run.data.tags.get("st_hpo.registered_model") == "tiny-lost v1"


def test_register_logs_the_kept_model_on_the_best_trials_run(ran, capsys):
    import mlflow
    import numpy as np
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    from sentence_transformers import SentenceTransformer

    path, out = ran
    trials = load_trials(out, "tiny-file")
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert main(["register", str(path), "--output-dir", str(out), "--name", "tiny-best"]) == 0
    text = capsys.readouterr().out
    assert f"logged trial {best.number}'s model" in text and "registered as 'tiny-best' version 1" in text

    client, _, runs = mlflow_runs(out, "tiny-file")
    run = next(r for r in runs if r.info.run_id == best.user_attrs["st_hpo.mlflow_run_id"])
    assert run.data.tags["st_hpo.registered_model"] == "tiny-best v1"
    version = client.get_model_version("tiny-best", "1")
    assert version.run_id == run.info.run_id, "the registered model comes from the best trial's own run"
    # what MLflow serves is the kept model: same embeddings
    with _use_tracking_uri(f"sqlite:///{out / 'mlflow.db'}"):  # the README's line, as a user runs it
        served = mlflow.sentence_transformers.load_model("models:/tiny-best/1")
    kept = SentenceTransformer(str(out.resolve() / "trials" / f"trial-{best.number}" / "model"), device="cpu")
    sentence = ["a dog is running in the park"]
    assert np.allclose(served.encode(sentence), kept.encode(sentence), atol=1e-6)


def test_open_study_hands_out_the_optuna_study_and_every_result(ran, tmp_path):
    """One handle, opened from the study file's Study and the run's location, does what the functions do."""
    path, out = ran
    handle = st_hpo.open_study(st_hpo.load_study_file(path), output_dir=out)
    assert handle.output_dir == out.resolve() and handle.storage == str(out.resolve() / "optuna.journal")
    trials = handle.optuna_study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == [t.number for t in load_trials(out, "tiny-file")]
    best = handle.best()
    assert best == st_hpo.best_trial(st_hpo.load_study_file(path), output_dir=out)
    assert best.number == handle.optuna_study.best_trial.number
    exported = json.loads(handle.export(tmp_path / "best.json").read_text())
    assert exported["trial"] == best.number and exported["value"] == pytest.approx(best.value)
    status = handle.status()
    assert [r["number"] for r in status.rows] == [t.number for t in trials] and status.budget == 3
    assert status.census.finished == 3 and status.kind == "sentence-transformer"
    assert [r["number"] for r in status.rows if r["best"]] == [best.number]
    # what `st-hpo status` prints above and below its table comes from the library too
    assert re.fullmatch(r"sentence-transformer: 3 of 3 trials finished \(\d complete, \d pruned\), 0 failed, 0 running",
                        status.headline()), status.headline()
    assert status.best_model_dir == best.model_dir and best.model_dir
    assert handle.sync().fixed == 0, "a finished study's MLflow runs already agree with its storage"
    written = handle.report(track=False)
    assert {p.name for p in written} >= {"summary.md", "trials.csv"}
    never_ran = st_hpo.open_study(st_hpo.load_study_file(path), output_dir=tmp_path / "nowhere")
    with pytest.raises(st_hpo.StorageError, match="run it first"):
        never_ran.best()
    assert not (tmp_path / "nowhere").exists(), "opening a handle creates nothing"
