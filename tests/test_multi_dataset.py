"""Multi-dataset training: several training sets (a DatasetDict or a dict), each with its own loss, searched
like any study; what is wrong with one dataset or its loss is refused in one line naming it."""

from __future__ import annotations

import textwrap

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

import st_hpo
from st_hpo import SearchSpaceError, StudyDefinitionError
from tests.conftest import make_pairs
from tests.helpers import load_trials, mlflow_runs, run_cli


def _datasets(rows: int, seed: int):
    """Two datasets: STS-like scored pairs, and the high-score pairs as (anchor, positive) without a score."""
    from datasets import Dataset, DatasetDict

    sts = Dataset.from_dict(make_pairs(rows, seed))
    high = sts.filter(lambda row: row["score"] >= 2 / 3)
    pairs = Dataset.from_dict({"anchor": high["sentence1"], "positive": high["sentence2"]})
    return DatasetDict(sts=sts, pairs=pairs)


def sequential_evaluator(ds):
    """One evaluator per eval dataset, in a SequentialEvaluator (the factory gets the dict as given)."""
    from sentence_transformers.sentence_transformer.evaluation import (
        EmbeddingSimilarityEvaluator,
        SequentialEvaluator,
        TripletEvaluator,
    )

    sts, pairs = ds["sts"], ds["pairs"]
    negatives = pairs["positive"][1:] + pairs["positive"][:1]  # another pair's positive
    return SequentialEvaluator([
        EmbeddingSimilarityEvaluator(sts["sentence1"], sts["sentence2"], sts["score"], name="sts-dev"),
        TripletEvaluator(pairs["anchor"], pairs["positive"], negatives, name="pairs-dev"),
    ], main_score_function=lambda scores: sum(scores) / len(scores))


def _losses():
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss, MultipleNegativesRankingLoss

    return {"sts": CoSENTLoss, "pairs": MultipleNegativesRankingLoss}


@pytest.fixture
def multi_study(make_study):
    def build(**changes):
        fields = dict(train_dataset=_datasets(64, 1), eval_dataset=_datasets(32, 2), loss=_losses(),
                      evaluator=sequential_evaluator, objective="sequential_score",
                      space={"learning_rate": FloatDistribution(1e-5, 1e-3, log=True),
                             "multi_dataset_batch_sampler": CategoricalDistribution(["proportional", "round_robin"]),
                             "loss.sts.scale": FloatDistribution(10.0, 30.0)})
        return make_study(**{**fields, **changes})

    return build


@pytest.mark.slow
def test_a_dataset_dict_with_a_loss_per_dataset_trains_and_searches_the_batch_sampler(multi_study, tmp_path):
    study = multi_study(n_trials=2, pruner="none", intermediate_eval_rows=12)
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert result.n_complete == 2 and result.n_fail == 0
    trials = load_trials(tmp_path, "tiny")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(t.params["multi_dataset_batch_sampler"] in ("proportional", "round_robin") for t in trials)
    assert all(10.0 <= t.params["loss.sts.scale"] <= 30.0 for t in trials)
    _, parents, runs = mlflow_runs(tmp_path, "tiny")
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    for run, trial in zip(runs, trials, strict=True):
        assert run.data.params["multi_dataset_batch_sampler"] == trial.params["multi_dataset_batch_sampler"]
        # the objective is the SequentialEvaluator's own metric; its evaluators' metrics sit beside it
        assert run.data.metrics["objective"] == pytest.approx(trial.value)
        assert "eval_sts-dev_spearman_cosine" in run.data.metrics
        assert "eval_pairs-dev_cosine_accuracy" in run.data.metrics
        # intermediate evaluations on a subset of each eval dataset: 12 of the 32 + high-score pairs rows
        assert run.data.tags["st_hpo.intermediate_eval"] == f"12 of {result_rows(study)} eval rows"
    (inputs,) = [i for i in parents[0].inputs.dataset_inputs if i.dataset.name == "train_dataset"]
    assert '"sts": 64' in inputs.dataset.profile and '"pairs"' in inputs.dataset.profile
    # the trainer's dataset-name transforms went on its own copies: the study's datasets are as given
    assert all(part.format["type"] is None for part in study.train_dataset.values())


def result_rows(study) -> int:
    return sum(len(part) for part in study.eval_dataset.values())


def test_loss_keys_that_do_not_match_the_datasets_are_refused_by_name(multi_study):
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    cases = {
        r"loss keys \['sts'\] do not match the train_dataset keys \['pairs', 'sts'\]: no loss for the "
        r"dataset\(s\) \['pairs'\]": dict(loss={"sts": CoSENTLoss}),
        r"the loss key\(s\) \['nli'\] name no dataset": dict(loss={**_losses(), "nli": CoSENTLoss}),
        r"loss is a dict of losses keyed by dataset name .* but train_dataset is one Dataset": dict(
            train_dataset=_datasets(16, 1)["sts"]),
        r"the loss factory's dict keys \['sts'\] do not match the train_dataset keys \['pairs', 'sts'\]": dict(
            loss=lambda model, params: {"sts": CoSENTLoss(model)}),
        r"objective 'eval_loss' with several datasets is not supported: .* \(eval_<name>_loss\)": dict(
            objective="eval_loss", direction="minimize", evaluator=None),
    }
    for message, change in cases.items():
        space = {"learning_rate": FloatDistribution(1e-5, 1e-3, log=True)}
        with pytest.raises(StudyDefinitionError, match=message) as info:
            st_hpo.validate_study(multi_study(space=space, **change))
        assert "\n" not in str(info.value)
    with pytest.raises(SearchSpaceError, match=r"'loss.pairs.margin' but MultipleNegativesRankingLoss takes no "
                                               r"parameter 'margin'"):
        st_hpo.validate_study(multi_study(space={"loss.pairs.margin": FloatDistribution(0.1, 0.5)}))
    with pytest.raises(SearchSpaceError, match=r"'loss.scale' but the loss is a dict keyed by dataset .* e.g. "
                                               r"'loss.sts.scale'"):
        st_hpo.validate_study(multi_study(space={"loss.scale": FloatDistribution(10.0, 30.0)}))


def test_a_dataset_its_loss_cannot_train_on_is_named(multi_study):
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    train = _datasets(16, 1)
    wrong = {"sts": CoSENTLoss, "pairs": CoSENTLoss}  # the pairs have no score column
    with pytest.raises(StudyDefinitionError, match=r"CoSENTLoss needs a label column \('score' or 'label'\) in "
                                                   r"train_dataset\['pairs'\], which has columns \['anchor', "
                                                   r"'positive'\]"):
        st_hpo.validate_study(multi_study(train_dataset=train, loss=wrong))
    anchors = train["pairs"].remove_columns("positive")  # MultipleNegativesRankingLoss needs the positives
    with pytest.raises(StudyDefinitionError, match=r"MultipleNegativesRankingLoss failed on 2 rows of "
                                                   r"train_dataset\['pairs'\] \(columns \['anchor'\]\)"):
        st_hpo.validate_study(multi_study(train_dataset={"sts": train["sts"], "pairs": lambda: anchors}))
    with pytest.raises(StudyDefinitionError, match=r"train_dataset\['pairs'\] is empty"):
        st_hpo.validate_study(multi_study(train_dataset={"sts": train["sts"], "pairs": train["pairs"].select([])}))


def test_mismatched_loss_keys_from_the_cli_exit_1_in_one_line_and_write_nothing(tiny_model_path, tmp_path):
    path = tmp_path / "multi.py"
    path.write_text(textwrap.dedent(f'''
        import optuna
        from sentence_transformers.sentence_transformer.losses import CoSENTLoss
        import st_hpo
        from tests.test_multi_dataset import _datasets, sequential_evaluator

        study = st_hpo.Study(
            name="multi", model={tiny_model_path!r}, train_dataset=lambda: _datasets(16, 1),
            eval_dataset=lambda: _datasets(16, 2), loss={{"sts": CoSENTLoss, "pair": CoSENTLoss}},
            evaluator=sequential_evaluator, objective="sequential_score",
            args=dict(num_train_epochs=1, per_device_train_batch_size=4, save_strategy="no", use_cpu=True),
            space={{"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)}},
        )
    '''))
    out = tmp_path / "out"
    proc = run_cli("run", str(path), "--output-dir", str(out), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "loss keys ['pair', 'sts'] do not match the train_dataset keys ['pairs', 'sts']" \
        in lines[0], proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_the_baseline_records_every_base_value_as_optuna_params_and_shows_labels(multi_study, tmp_path):
    """The baseline of a multi-dataset study with Choices and `loss.` names: the base values the space can produce
    are Optuna params (labels for Choices, the loss classes' defaults), so best_params and TPE see them; every
    reader (status/best, MLflow, trials.csv, export) shows every name, a base value outside the space too."""
    import csv
    import json

    import optuna

    from st_hpo._execution._storage import open_storage

    space = {"learning_rate": FloatDistribution(1e-5, 1e-3, log=True),
             "multi_dataset_batch_sampler": CategoricalDistribution(["proportional", "round_robin"]),
             "loss.sts.scale": FloatDistribution(10.0, 30.0), "loss.pairs.scale": FloatDistribution(10.0, 30.0),
             "prompts": st_hpo.Choice({"none": None, "query": {"sentence1": "query: "}}),
             "warmup_ratio": FloatDistribution(0.1, 0.3)}  # the base ratio (0) lies outside: kept unsampled
    study = multi_study(space=space, baseline=True, n_trials=1, pruner="none", intermediate_eval_rows=12)
    st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    in_space = {"learning_rate": 5e-5, "multi_dataset_batch_sampler": "proportional", "loss.sts.scale": 20.0,
                "loss.pairs.scale": 20.0, "prompts": "none"}
    shown = {**in_space, "warmup_ratio": 0.0}
    (baseline,) = load_trials(tmp_path, "tiny")
    assert baseline.state.name == "COMPLETE" and baseline.user_attrs["st_hpo.baseline"] is True
    assert baseline.params == in_space, "Optuna holds the baseline's values (Choice labels, loss defaults)"
    assert optuna.load_study(study_name="tiny", storage=open_storage(str(tmp_path / "optuna.journal"))
                             ).best_params == in_space
    assert st_hpo.best_trial(study, output_dir=tmp_path).params == shown  # what `best` and `status` show
    _, _, runs = mlflow_runs(tmp_path, "tiny")
    assert {k: runs[0].data.params[k] for k in shown} == {k: str(v) for k, v in shown.items()}
    with (tmp_path / "reports" / "trials.csv").open() as f:
        row = next(csv.DictReader(f))
    assert {k: row[f"params_{k}"] for k in shown} == {k: str(v) for k, v in shown.items()}
    config = json.loads(st_hpo.export_best(study, tmp_path / "best.json", output_dir=tmp_path).read_text())
    assert config["params"] == shown and config["labels"] == {"prompts": "none"}
    assert config["loss_params"] == {"sts.scale": 20.0, "pairs.scale": 20.0}
    assert config["args"]["prompts"] is None
