"""Structured choices (``st_hpo.Choice``) and what a trial ran, stored with the trial: every reader
(MLflow, status, best, export, retrain, sync) shows labels and trains with the recorded values."""

from __future__ import annotations

import json

import pytest

import st_hpo
from st_hpo import SearchSpaceError
from st_hpo.cli import main
from tests.conftest import STUDY_FILE_TEMPLATE, make_pairs
from tests.helpers import load_trials, mlflow_runs

QUERY = {"sentence1": "query: ", "sentence2": "passage: "}

CHOICE_SPACE = (
    f'{{"prompts": st_hpo.Choice({{"none": None, "query": {QUERY!r}}}),\n'
    '  "loss": st_hpo.Choice({"cosent": CoSENTLoss, "angle": AnglELoss}),\n'
    '  "learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)}'
)


def _write(root, model, name, space, *, n_trials=2, extra=""):
    """A study file on the tiny model with ``space`` (source text) and ``extra`` Study fields."""
    text = STUDY_FILE_TEMPLATE.format(pairs=make_pairs(64, 1), eval_pairs=make_pairs(32, 2), name=name, model=model,
                                      n_trials=n_trials, epochs=1, baseline=False)
    start = text.index("space={")
    end = text.index("n_trials=")
    text = text[:start] + f"space={space},\n    {extra}" + text[end:]
    text = text.replace("import CoSENTLoss", "import AnglELoss, CoSENTLoss")
    path = root / f"{name}.py"
    path.write_text(text)
    return path


# --- bad input: one line, exit 1, nothing written, before any training ------------------------------------


@pytest.mark.parametrize("options, line", [
    ({}, "Choice({}) has no options; give at least one label"),
    ({1: "x"}, "Choice labels must be non-empty strings"),
])
def test_a_choice_without_options_or_with_labels_that_are_not_strings_is_one_line(options, line):
    with pytest.raises(SearchSpaceError) as info:
        st_hpo.Choice(options)
    assert "\n" not in str(info.value) and line in str(info.value)


def test_a_bad_choice_in_a_study_file_exits_1_in_one_line_and_writes_nothing(tmp_path, tiny_model_path, capsys):
    path = _write(tmp_path, tiny_model_path, "empty-choice", '{"prompts": st_hpo.Choice({})}')
    out = tmp_path / "out"
    assert main(["run", str(path), "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Choice({}) has no options" in err
    assert not out.exists()


def test_a_prompt_for_a_column_the_data_lacks_is_refused_before_training(make_study, tmp_path):
    from optuna.distributions import FloatDistribution

    space = {"learning_rate": FloatDistribution(1e-5, 1e-3, log=True),
             "prompts": st_hpo.Choice({"none": None, "typo": {"sentence1": "query: ", "sentense2": "passage: "}})}
    with pytest.raises(SearchSpaceError) as info:
        st_hpo.validate_study(make_study(space=space))
    line = str(info.value)
    assert "\n" not in line and "'sentense2'" in line and "['score', 'sentence1', 'sentence2']" in line
    # a prompt in the base args is checked the same way; a prompt for every column is fine
    with pytest.raises(SearchSpaceError, match="names column 'anchor'"):
        st_hpo.validate_study(make_study(args={"prompts": {"anchor": "query: "}, "use_cpu": True}))
    st_hpo.validate_study(make_study(space={**space, "prompts": st_hpo.Choice({"all": "query: "})}))


def test_every_loss_of_a_loss_choice_is_probed_at_validation(make_study, tiny_model_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import (
        CoSENTLoss,
        MultipleNegativesRankingLoss,
        SoftmaxLoss,
    )

    # SoftmaxLoss needs more than the model: building it fails at validation, not in a trial
    space = {"loss": st_hpo.Choice({"cosent": CoSENTLoss, "softmax": SoftmaxLoss})}
    with pytest.raises(st_hpo.StudyDefinitionError, match="building the loss raised TypeError"):
        st_hpo.validate_study(make_study(space=space))
    with pytest.raises(SearchSpaceError, match="loss option CoSENTLoss is not a loss class"):
        st_hpo.validate_study(make_study(space={"loss": st_hpo.Choice({"x": CoSENTLoss(SentenceTransformer(tiny_model_path))})}))
    st_hpo.validate_study(make_study(space={"loss": st_hpo.Choice({"cosent": CoSENTLoss,
                                                                   "mnrl": MultipleNegativesRankingLoss})}))


# --- a dict space with Choices runs, and every reader shows labels and trains with values -----------------


@pytest.mark.slow
def test_choices_show_labels_and_train_with_their_values(tmp_path, tiny_model_path, capsys):
    # the same configuration but for the loss: different objectives prove the sampled loss is the one trained
    enqueue = ('enqueue=[{"prompts": "query", "loss": "angle", "learning_rate": 3e-4}, '
               '{"prompts": "query", "loss": "cosent", "learning_rate": 3e-4}],\n    ')
    path = _write(tmp_path, tiny_model_path, "choices", CHOICE_SPACE, extra=enqueue)
    out = tmp_path / "out"
    study = st_hpo.load_study_file(path)
    st_hpo.run_study(study, output_dir=out, progress=False)
    trials = load_trials(out, "choices")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]

    client, _, runs = mlflow_runs(out, "choices")
    # different losses train different models: their training losses and the continuous pearson score differ
    # (the objective, a rank correlation over 32 pairs of a tiny model, can tie on some CPUs)
    for metric in ("train_loss", "eval_sts-dev_pearson_cosine"):
        assert runs[0].data.metrics[metric] != runs[1].data.metrics[metric], \
            f"AnglELoss and CoSENTLoss trained the same model ({metric})"
    for run, loss in zip(runs, ("angle", "cosent"), strict=True):
        assert run.data.params["prompts"] == "query" and run.data.params["loss"] == loss
        args = json.loads((tmp_path / client.download_artifacts(run.info.run_id, "training_args.json", str(tmp_path)))
                          .read_text())
        assert args["prompts"] == QUERY

    assert main(["status", str(path), "--output-dir", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["params"]["prompts"], r["params"]["loss"]) for r in rows] == [("query", "angle"), ("query", "cosent")]

    assert main(["export", str(path), "--to", str(tmp_path / "best.json"), "--output-dir", str(out)]) == 0
    config = json.loads((tmp_path / "best.json").read_text())
    best = max(trials, key=lambda t: t.value)
    assert config["trial"] == best.number and config["args"]["prompts"] == QUERY
    assert config["labels"] == {"prompts": "query", "loss": best.params["loss"]}
    assert config["loss"].endswith({"angle": "AnglELoss", "cosent": "CoSENTLoss"}[best.params["loss"]])

    # a run lost from MLflow is made again by sync with the same params (labels)
    client.delete_run(runs[0].info.run_id)
    assert main(["sync", str(path), "--output-dir", str(out)]) == 0
    _, _, again = mlflow_runs(out, "choices")
    assert again[0].data.params["prompts"] == "query" and again[0].data.params["loss"] == "angle"


# --- a define-by-run space: the values the callable computed are the ones read back -----------------------


def conditional_space(trial):
    """A helper suggestion (use_warmup) that is not an argument, and values computed from suggestions."""
    values = {"learning_rate": 10 ** trial.suggest_float("lr_exponent", -4.0, -3.0)}
    if trial.suggest_categorical("use_warmup", [True, False]):
        values["warmup_ratio"] = trial.suggest_float("warmup_ratio", 0.1, 0.4)
        values["weight_decay"] = 0.01
    return values


@pytest.mark.slow
def test_define_by_run_exports_and_retrains_what_the_trial_ran(make_study, tmp_path):
    study = make_study(space=conditional_space, n_trials=2)
    st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    trials = [t for t in load_trials(tmp_path, "tiny") if t.state.name == "COMPLETE"]
    best = max(trials, key=lambda t: t.value)
    learning_rate = 10 ** best.params["lr_exponent"]

    config = json.loads(st_hpo.export_best(study, tmp_path / "best.json", output_dir=tmp_path).read_text())
    assert config["args"]["learning_rate"] == pytest.approx(learning_rate, rel=1e-12)
    assert config["args"]["weight_decay"] == (0.01 if best.params["use_warmup"] else 0.0)
    assert config["params"]["learning_rate"] == pytest.approx(learning_rate, rel=1e-12)
    _, _, runs = mlflow_runs(tmp_path, "tiny")
    assert float(runs[best.number].data.params["learning_rate"]) == pytest.approx(learning_rate)

    retrained = st_hpo.retrain_best(study, output_dir=tmp_path, track=False)
    assert retrained.trial_number == best.number
    assert retrained.value == pytest.approx(best.value, abs=1e-6), "same recorded values, same seed"


def test_a_choice_describes_its_values_the_same_in_every_process():
    # the study's identity (checked on every resume) compares the space's repr: no memory addresses in it
    def factory(model, params):
        return None

    text = repr(st_hpo.Choice({"f": factory, "q": QUERY}))
    assert "0x" not in text and "factory" in text and "'query: '" in text
    assert repr(st_hpo.Choice({"q": {"sentence1": "q: "}})) != repr(st_hpo.Choice({"q": {"sentence1": "query: "}}))
