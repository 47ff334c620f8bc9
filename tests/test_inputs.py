"""Inputs a new user plausibly gets wrong: each is refused before anything is written, in one line naming
the value, the rule and the fix; inputs the README allows (no evaluator with the eval loss, a model
instance) train."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

import st_hpo
from st_hpo import SearchSpaceError, StudyDefinitionError, StudyFileError
from tests.helpers import load_trials, mlflow_runs


def _args(**changes):
    args = dict(num_train_epochs=1, per_device_train_batch_size=16, eval_strategy="steps", eval_steps=2,
                save_strategy="no", disable_tqdm=True, use_cpu=True)
    return {**args, **changes}


# --- 1. objective="eval_loss" needs no evaluator ---------------------------------------------------------


@pytest.mark.slow
def test_eval_loss_study_without_an_evaluator_trains_and_ends_on_the_whole_eval_set(make_study, tmp_path):
    study = make_study(evaluator=None, objective="eval_loss", direction="minimize", n_trials=1, pruner="none",
                       intermediate_eval_rows=8, space={"learning_rate": FloatDistribution(1e-4, 1e-4)})
    st_hpo.validate_study(study)
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert result.n_complete == 1 and result.n_fail == 0
    assert [t.state.name for t in load_trials(tmp_path, "tiny")] == ["COMPLETE"]
    client, _, runs = mlflow_runs(tmp_path, "tiny")
    metrics = runs[0].data.metrics
    assert metrics["objective"] == pytest.approx(result.best_value)
    assert "objective_subset" in metrics and metrics["objective_subset"] != metrics["objective"]


def test_the_eval_loss_is_minimised_by_default_and_never_maximised(make_study):
    assert make_study(evaluator=None, objective="eval_loss").direction == "minimize"
    assert make_study().direction == "maximize"  # an evaluator's metric
    with pytest.raises(StudyDefinitionError, match=r"objective='eval_loss' is the loss on the eval set, which "
                                                   r"training lowers: direction='maximize' would search for the "
                                                   r"worst model; use direction='minimize'"):
        make_study(evaluator=None, objective="eval_loss", direction="maximize")


def test_another_objective_without_an_evaluator_is_refused_in_one_line(make_study):
    with pytest.raises(StudyDefinitionError, match=r"objective 'sts-dev_spearman_cosine' needs an evaluator "
                                                   r"that reports it, and evaluator is None.*objective='eval_loss'"):
        make_study(evaluator=None)


# --- 2. a SentenceTransformer instance is a base model ---------------------------------------------------


@pytest.mark.slow
def test_a_model_instance_is_the_base_model_and_is_never_changed(make_study, tiny_model_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    study = make_study(model=model, n_trials=1, pruner="none")
    st_hpo.validate_study(study)
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert (result.n_complete, result.n_fail) == (1, 0)
    assert result.base_model_value is not None, "the instance's own score is the bar trials must clear"
    after = model.state_dict()
    assert all(before[k].equal(after[k]) for k in before), "training must not touch the user's instance"
    kept = SentenceTransformer(str(result.best_model_dir), device="cpu").state_dict()
    assert any(not before[k].equal(kept[k]) for k in before), "the trial trained a copy of its weights"


def test_a_module_that_is_not_a_sentence_transformer_is_refused(make_study):
    import torch

    with pytest.raises(StudyDefinitionError, match=r"model is a Linear module, not a SentenceTransformer"):
        make_study(model=torch.nn.Linear(2, 2))


# --- 3. a loss instance ----------------------------------------------------------------------------------


def test_a_loss_instance_is_refused_in_one_line(make_study, tiny_model_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    loss = CoSENTLoss(SentenceTransformer(tiny_model_path, device="cpu"))
    with pytest.raises(StudyDefinitionError, match=r"loss=CoSENTLoss\(...\) is a loss instance, bound to one "
                                                   r"model; pass the class \(loss=CoSENTLoss\)"):
        make_study(loss=loss)


# --- 4. conflicts and ranges validation names ------------------------------------------------------------


def _scaled(ds, factor):
    return ds.map(lambda row: {"score": row["score"] * factor})


@pytest.mark.parametrize(("change", "error", "line"), [
    (dict(space={"max_steps": IntDistribution(2, 4), "num_train_epochs": IntDistribution(1, 2)}),
     SearchSpaceError, r"samples both 'max_steps' and 'num_train_epochs'.*keep one"),
    (dict(space={"num_train_epochs": IntDistribution(1, 2)}, args=_args(max_steps=4)),
     SearchSpaceError, r"samples 'num_train_epochs' but the base args fix max_steps=4.*remove max_steps"),
    (dict(args=_args(fp16=True)),
     StudyDefinitionError, r"Study\(args=...\): fp16=True needs a CUDA GPU, but the base args set use_cpu=True; "
                           r"remove fp16"),
    (dict(space={"fp16": CategoricalDistribution([True, False])}),
     SearchSpaceError, r"fp16=True needs a CUDA GPU"),
], ids=["max_steps-and-epochs", "epochs-under-fixed-max_steps", "fp16-on-cpu", "fp16-in-space-on-cpu"])
def test_conflicts_are_refused_before_training(make_study, change, error, line):
    with pytest.raises(error, match=line):
        st_hpo.validate_study(make_study(**change))


def test_a_searched_number_whose_base_value_is_none_gives_an_unsampled_baseline(make_study):
    from st_hpo._definition._space import space_defaults

    # torch_empty_cache_steps is None in the base args: the baseline has no value in the range to take
    space = {"torch_empty_cache_steps": IntDistribution(1, 8), "learning_rate": FloatDistribution(1e-5, 1e-4)}
    study = make_study(space=space, baseline=True)
    st_hpo.validate_study(study)  # it raised a TypeError comparing None with the range
    from sentence_transformers import SentenceTransformerTrainingArguments

    assert space_defaults(space, SentenceTransformerTrainingArguments(output_dir="unused")) is None


def test_labels_outside_the_losses_range_are_refused(make_study, pairs_train):
    from sentence_transformers.sentence_transformer.losses import (
        ContrastiveLoss,
        CosineSimilarityLoss,
        SoftmaxLoss,
    )

    stsb_scale = _scaled(pairs_train, 5)  # 0..5 STSb scores where a cosine target in [-1, 1] is expected
    with pytest.raises(StudyDefinitionError, match=r"CosineSimilarityLoss reads train_dataset's 'score' column as "
                                                   r"the target.*holds values in \[0, 5\]; rescale it into \[-1, 1\]"):
        st_hpo.validate_study(make_study(loss=CosineSimilarityLoss, train_dataset=stsb_scale))
    with pytest.raises(StudyDefinitionError, match=r"ContrastiveLoss reads .* values in \[0, 5\]"):
        st_hpo.validate_study(make_study(loss=ContrastiveLoss, train_dataset=stsb_scale))

    def softmax(model, params):
        return SoftmaxLoss(model, model.get_embedding_dimension(), num_labels=3)

    with pytest.raises(StudyDefinitionError, match=r"SoftmaxLoss\(num_labels=3\) needs class ids 0..2"):
        st_hpo.validate_study(make_study(loss=softmax))
    st_hpo.validate_study(make_study(loss=CosineSimilarityLoss))  # scores in [0, 1] are cosine targets
    # CoSENTLoss only ranks pairs by their scores: any scale is right for it
    st_hpo.validate_study(make_study(train_dataset=stsb_scale))


# --- 5. a value Optuna refuses in the study file ---------------------------------------------------------


def _one_line_refusal(path) -> str:
    """The error loading the study file at ``path`` raises: one line naming the file and its line."""
    from st_hpo._definition._loading import load_study_file

    with pytest.raises(StudyDefinitionError) as info:
        load_study_file(path)
    # the CLI prints a file's traceback before the error line only when the error carries one
    assert getattr(info.value, "user_traceback", None) is None
    line = str(info.value)
    assert "\n" not in line and line.startswith(f"study file {str(path)!r}, line ")
    return line


def test_a_log_distribution_from_zero_in_the_study_file_is_one_line(study_file):
    path = study_file(name="log-zero")
    text = path.read_text().replace('"warmup_ratio": optuna.distributions.FloatDistribution(0.0, 0.5)',
                                    '"weight_decay": optuna.distributions.FloatDistribution(0.0, 0.1, log=True)')
    path.write_text(text)
    line = _one_line_refusal(path)
    assert "FloatDistribution(0.0, 0.1, log=True)" in line and "low=1e-6, or log=False" in line


@pytest.mark.parametrize("cls", ["SentenceTransformerTrainingArguments", "CrossEncoderTrainingArguments",
                                 "TrainingArguments"])
def test_a_misspelt_training_argument_in_the_study_file_is_one_line(study_file, cls):
    """A typo in the arguments class the user builds in the study file: its line, the class, the close name."""
    path = study_file(name="typo")
    module = {"Sentence": "sentence_transformers.sentence_transformer", "CrossEnc": "sentence_transformers.cross_encoder",
              "Training": "transformers"}[cls[:8]]
    text = path.read_text().replace(
        "args=dict(num_train_epochs=",
        f"args=__import__({module!r}, fromlist=['x']).{cls}(output_dir='out', learnig_rate=2e-5, num_train_epochs=")
    path.write_text(text)
    line = _one_line_refusal(path)
    assert f"'learnig_rate' is not an argument of {cls}" in line and "did you mean 'learning_rate'?" in line


def test_a_misspelt_strategy_in_the_study_file_s_arguments_is_one_line(study_file):
    path = study_file(name="enum-typo")
    text = path.read_text().replace(
        "args=dict(num_train_epochs=",
        "args=__import__('sentence_transformers').SentenceTransformerTrainingArguments(output_dir='out', "
        "lr_scheduler_type='cosin', num_train_epochs=")
    path.write_text(text)
    line = _one_line_refusal(path)
    assert "ValueError: cosin is not a valid SchedulerType" in line


def test_a_syntax_error_in_the_study_file_is_one_line(study_file):
    """Python's message and the file's line, not a traceback through runpy and st-hpo's loader."""
    path = study_file(name="syntax")
    path.write_text(path.read_text().replace("loss=CoSENTLoss,", "loss=CoSENTLoss(,"))
    line = _one_line_refusal(path)
    assert "SyntaxError: " in line and "python -m py_compile" in line


def test_a_study_file_path_that_is_a_folder_or_missing_says_which(tmp_path):
    from st_hpo._definition._loading import load_study_file

    with pytest.raises(StudyDefinitionError, match=r"is a folder; pass the path of a \.py file"):
        load_study_file(tmp_path)
    with pytest.raises(StudyDefinitionError, match=r"does not exist; pass the path of a \.py file"):
        load_study_file(tmp_path / "none.py")


def test_another_type_error_in_the_study_file_keeps_its_traceback(study_file):
    from st_hpo._definition._loading import load_study_file

    path = study_file(name="other-type-error")
    path.write_text(path.read_text() + "\ndef f(a):\n    return a\n\nf(1, unknown=2)\n")
    with pytest.raises(StudyFileError) as info:
        load_study_file(path)
    assert "unexpected keyword argument 'unknown'" in str(info.value) and info.value.user_traceback


# --- every field, got wrong the ways a new user would ----------------------------------------------------


def _bad_fields():
    from datasets import Dataset, DatasetDict
    from optuna import pruners, samplers
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    from tests.conftest import make_pairs

    pairs = Dataset.from_dict(make_pairs(8))
    return [
        ("n_trials", dict(n_trials=20.0), r"n_trials=20.0 must be a positive whole number"),
        ("n_trials", dict(n_trials="20"), r"n_trials='20' must be a positive whole number"),
        ("n_trials", dict(n_trials=True), r"n_trials=True must be"),
        ("seed", dict(seed="42"), r"seed='42' must be a whole number"),
        ("seed", dict(seed=-1), r"seed=-1 must be a whole number in \[0, 2\*\*32\)"),
        ("sampler", dict(sampler=samplers.TPESampler), r"sampler=TPESampler is not an Optuna sampler object; pass "
                                                        r"an instance"),
        ("pruner", dict(pruner=samplers.RandomSampler()), r"pruner=RandomSampler is not an Optuna pruner object"),
        ("pruner", dict(pruner=pruners.MedianPruner), r"pruner=MedianPruner is not an Optuna pruner object"),
        ("baseline", dict(baseline="yes"), r"baseline='yes' must be True or False"),
        ("experiment_name", dict(experiment_name=3), r"experiment_name=3 must be a non-empty string"),
        ("enqueue", dict(enqueue={"learning_rate": 1e-4}), r"enqueue=\{'learning_rate': 0.0001\} must be a list "
                                                            r"of dicts"),
        ("evaluator", dict(evaluator=EmbeddingSimilarityEvaluator), r"evaluator=EmbeddingSimilarityEvaluator is "
                                                                    r"a class; pass an instance"),
        ("evaluator", dict(evaluator="sts-dev"), r"evaluator='sts-dev' is a str, not a SentenceEvaluator"),
        ("evaluator", dict(evaluator=pairs), r"evaluator is a Dataset, not a SentenceEvaluator"),
        ("evaluator", dict(evaluator=lambda ds: [ds]), r"not list; e.g. evaluator=lambda ds: "),
        ("evaluator", dict(evaluator=lambda ds: EmbeddingSimilarityEvaluator(ds["s1"], ds["s2"], ds["score"])),
         r"the evaluator factory raised ValueError on eval_dataset \(columns \['sentence1', 'sentence2', 'score'\]\)"),
        ("test_dataset", dict(test_dataset=pairs.rename_columns({"sentence1": "query", "sentence2": "doc"})),
         r"the evaluator factory raised ValueError on test_dataset \(columns \['query', 'doc', 'score'\]\): .*it is "
         r"called as evaluator\(test_dataset\)"),
        ("model", dict(model=3), r"model=3 must be a hub id or local path, a model instance \(SentenceTransformer, "
                                 r"CrossEncoder, ...\), or a callable"),
        ("model", dict(model=lambda: None), r"the model factory raised TypeError: .*it is called as model\(params\)"),
        ("train_dataset", dict(train_dataset=None), r"train_dataset=None: give a datasets.Dataset"),
        ("train_dataset", dict(train_dataset="sentence-transformers/stsb"),
         r"train_dataset='sentence-transformers/stsb' is a string; .*load_dataset\('sentence-transformers/stsb', "
         r"split='train'\)"),
        ("train_dataset", dict(train_dataset=DatasetDict(train=pairs, validation=pairs)),
         r"train_dataset is a DatasetDict with the splits \['train', 'validation'\]; pick one"),
        ("train_dataset", dict(train_dataset=lambda: make_pairs(8)), r"train_dataset must be a datasets.Dataset "
                                                                    r"\(or a callable returning one\), not dict; "
                                                                    r"build one with e.g. Dataset.from_dict"),
        ("eval_dataset", dict(eval_dataset=pairs.to_pandas()), r"not DataFrame; build one with e.g. "
                                                               r"Dataset.from_pandas\(df\)"),
        ("loss", dict(loss="CoSENTLoss"), r"loss='CoSENTLoss' must be a loss class"),
        ("loss", dict(loss=lambda model, params: None), r"the loss factory returned NoneType, not a loss module"),
        ("args", dict(args=[("learning_rate", 1e-5)]), r"must be a SentenceTransformerTrainingArguments or a dict "
                                                       r"of its fields, not list; build it with"),
        ("space", dict(space={"per_device_train_batch_size": FloatDistribution(8, 32, step=8)}),
         r"space\['per_device_train_batch_size'\] is a FloatDistribution, which samples floats.*IntDistribution"),
    ]


_BAD = _bad_fields()


@pytest.mark.parametrize(("field", "change", "line"), _BAD, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(_BAD)])
def test_each_field_got_wrong_is_one_line_with_the_fix(make_study, field, change, line):
    with pytest.raises(StudyDefinitionError, match=line) as info:
        st_hpo.validate_study(make_study(**change))
    assert "\n" not in str(info.value)


# --- sampled values that would not reach training ---------------------------------------------------------


def test_every_sampled_value_is_the_value_the_trial_trains_with(tmp_path):
    from sentence_transformers import SentenceTransformerTrainingArguments

    from st_hpo._definition._args import clone_args

    base = SentenceTransformerTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=16)
    # the deprecated alias: transformers 5 resets it on a copy to the field it mirrors, so set that field
    clone = clone_args(base, {"gradient_checkpointing": True}, output_dir=str(tmp_path), run_name=None)
    assert clone.activation_checkpointing is True and clone.gradient_checkpointing is True
    assert base.activation_checkpointing is False, "the base arguments are never changed"
    # 32.0 from a categorical list of floats: torch's batch sampler takes an int only
    clone = clone_args(base, {"per_device_train_batch_size": 32.0}, output_dir=str(tmp_path), run_name=None)
    assert clone.per_device_train_batch_size == 32 and type(clone.per_device_train_batch_size) is int
    # no compile over a base that compiles: the backend its post-init implied would turn compiling back on
    compiled = SentenceTransformerTrainingArguments(output_dir=str(tmp_path), torch_compile=True)
    assert compiled.torch_compile_backend == "inductor"
    clone = clone_args(compiled, {"torch_compile": False}, output_dir=str(tmp_path), run_name=None)
    assert clone.torch_compile is False and clone.torch_compile_backend is None
    # values the arguments store in another form are the same value, not refused
    clone = clone_args(base, {"include_num_input_tokens_seen": True}, output_dir=str(tmp_path), run_name=None)
    assert clone.include_num_input_tokens_seen == "all"
    clone = clone_args(base, {"prompts": '{"anchor": "query: "}'}, output_dir=str(tmp_path), run_name=None)
    assert clone.prompts == {"anchor": "query: "}
    # a value the arguments' own checks override is refused, not silently trained without
    evaluating = SentenceTransformerTrainingArguments(output_dir=str(tmp_path), eval_strategy="steps", eval_steps=5)
    with pytest.raises(ValueError, match=r"do_eval=False does not take effect: "
                                         r"SentenceTransformerTrainingArguments sets it to True"):
        clone_args(evaluating, {"do_eval": False}, output_dir=str(tmp_path), run_name=None)


@pytest.mark.parametrize(("name", "why"), [
    ("eval_steps", r"every trial of a study evaluates at the same points of training"),
    ("eval_strategy", r"every trial of a study evaluates at the same points of training"),
    ("label_smoothing_factor", r"sentence-transformers' trainers never read it"),
    ("load_best_model_at_end", r"a trial's value is its model's score at the end of training"),
])
def test_arguments_the_trials_would_ignore_are_refused_in_the_space(make_study, name, why):
    dist = {"eval_strategy": CategoricalDistribution(["steps", "epoch"]),
            "load_best_model_at_end": CategoricalDistribution([True, False])}.get(name, FloatDistribution(0.0, 0.2))
    with pytest.raises(SearchSpaceError, match=rf"the space samples '{name}', but {why}"):
        st_hpo.validate_study(make_study(space={name: dist}))


def test_a_model_factory_s_new_weights_start_alike_in_every_trial(make_study, tiny_model_path):
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    from st_hpo._definition._resources import StudyResources

    def with_new_head(params):
        word = Transformer(tiny_model_path)
        dim = word.get_embedding_dimension()
        return SentenceTransformer(modules=[word, Pooling(dim), Dense(dim, 8)], device="cpu")

    resources = StudyResources(make_study(model=with_new_head))
    torch.manual_seed(123)  # whatever state the last trial left behind
    first = resources.new_model({}, {})[2].linear.weight
    torch.rand(5)
    second = resources.new_model({}, {})[2].linear.weight
    assert torch.equal(first, second), "a trial's new head would differ by the RNG state, not by its params"


_SAMPLERS_BUILT: list[int] = []


def _counting_sampler(dataset, **kwargs):
    """A batch sampler factory, as sentence-transformers takes for ``batch_sampler``."""
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    _SAMPLERS_BUILT.append(len(dataset))
    return NoDuplicatesBatchSampler(dataset, **kwargs)


@pytest.mark.slow
def test_a_batch_sampler_factory_in_the_space_trains(make_study, tmp_path):
    study = make_study(space={"batch_sampler": st_hpo.Choice({"counting": _counting_sampler})}, n_trials=1,
                       pruner="none")
    st_hpo.validate_study(study)
    _SAMPLERS_BUILT.clear()
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert result.n_complete == 1
    assert _SAMPLERS_BUILT, "the trial's trainer built its batches with the sampled factory"


@pytest.mark.slow
def test_a_router_mapping_sampled_in_the_space_is_what_validation_and_the_trial_train_with(make_study,
                                                                                          tiny_model_path, tmp_path):
    """A query/document Router model needs a ``router_mapping``; the space gives it, the base args do not."""
    import copy

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.router import Router

    tiny = SentenceTransformer(tiny_model_path, device="cpu")
    query = [tiny[0], tiny[1]]
    router = Router.for_query_document(query_modules=query, document_modules=copy.deepcopy(query))
    model = SentenceTransformer(modules=[router], device="cpu")
    mapping = {"sentence1": "query", "sentence2": "document"}
    study = make_study(model=model, space={"router_mapping": st_hpo.Choice({"qd": mapping})}, n_trials=1,
                       pruner="none")
    st_hpo.validate_study(study)  # its loss probe trains one batch with the sampled mapping
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert result.n_complete == 1 and result.n_fail == 0


@pytest.mark.slow
def test_a_best_checkpoint_or_a_best_metric_the_trials_never_report_is_refused(make_study, tmp_path):
    base = dict(make_study().args)
    with pytest.raises(StudyDefinitionError, match=r"sets load_best_model_at_end=True, but a trial's value is its "
                                                   r"model's score at the end of training.*remove"):
        st_hpo.validate_study(make_study(args={**base, "load_best_model_at_end": True, "save_strategy": "steps",
                                               "save_steps": 2, "metric_for_best_model": "sts-dev_spearman_cosine"}))
    # a plateau scheduler steps on metric_for_best_model, "loss" unless set: the trials compute no eval loss
    line = (r"metric_for_best_model is 'loss' \(transformers' default when a plateau or greedy lr scheduler steps "
            r"on it\), but the trials compute no eval loss: the objective is 'eval_sts-dev_spearman_cosine'.*set "
            r"metric_for_best_model='sts-dev_spearman_cosine'")
    with pytest.raises(StudyDefinitionError, match=line):
        st_hpo.validate_study(make_study(args={**base, "lr_scheduler_type": "reduce_lr_on_plateau"}))
    with pytest.raises(StudyDefinitionError, match=line):
        st_hpo.validate_study(make_study(space={"lr_scheduler_type": CategoricalDistribution(
            ["linear", "reduce_lr_on_plateau"])}))
    with pytest.raises(StudyDefinitionError, match=line):
        st_hpo.validate_study(make_study(space={"lr_scheduler_type": st_hpo.Choice(
            {"linear": "linear", "plateau": "reduce_lr_on_plateau"})}))
    with pytest.raises(StudyDefinitionError, match=r"metric_for_best_model is 'eval_loss', but the trials compute no"):
        st_hpo.validate_study(make_study(args={**base, "metric_for_best_model": "eval_loss"}))
    # as the line says: with the objective named, the trial trains
    study = make_study(args={**base, "lr_scheduler_type": "reduce_lr_on_plateau",
                             "metric_for_best_model": "sts-dev_spearman_cosine"}, n_trials=1, pruner="none")
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert result.n_complete == 1 and result.n_fail == 0


def _with_score(dataset, row: int, value: float):
    scores = list(dataset["score"])
    scores[row] = value
    return dataset.remove_columns("score").add_column("score", scores)


def test_nan_or_infinite_labels_are_refused_naming_dataset_column_and_row(make_study, pairs_train, pairs_eval,
                                                                           tmp_path, capsys):
    from datasets import DatasetDict
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss

    # one NaN score in the eval set: the evaluator's correlation would be NaN and every trial "diverged"
    with pytest.raises(StudyDefinitionError) as info:
        st_hpo.validate_study(make_study(eval_dataset=_with_score(pairs_eval, 5, float("nan"))))
    line = str(info.value)
    assert "\n" not in line and "eval_dataset's 'score' column holds nan at row 5" in line
    # a NaN among CosineSimilarityLoss's training labels is not "inside [-1, 1]"
    with pytest.raises(StudyDefinitionError, match=r"^train_dataset's 'score' column holds nan at row 17 \(1 row"):
        st_hpo.validate_study(make_study(loss=CosineSimilarityLoss,
                                         train_dataset=_with_score(pairs_train, 17, float("nan"))))
    # an infinite score in one dataset of several: the dataset is named
    sts = _with_score(pairs_train, 3, float("inf"))
    with pytest.raises(StudyDefinitionError, match=r"train_dataset\['sts'\]'s 'score' column holds inf at row 3"):
        st_hpo.validate_study(make_study(train_dataset=DatasetDict(sts=sts, other=pairs_train),
                                         loss={"sts": CosineSimilarityLoss, "other": CosineSimilarityLoss}))
    # and `st-hpo validate` says it in one line, exit 1, before any training
    from st_hpo.cli import main
    from tests.conftest import STUDY_FILE_TEMPLATE, make_pairs

    eval_pairs = make_pairs(32, 2)
    eval_pairs["score"][9] = float("nan")
    path = tmp_path / "nan.py"
    path.write_text(STUDY_FILE_TEMPLATE.format(pairs=make_pairs(64, 1), eval_pairs=eval_pairs, name="nan",
                                               model=make_study().model, n_trials=1, epochs=1, baseline=False)
                    .replace("import optuna", "import optuna\nfrom math import nan"))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "eval_dataset's 'score' column holds nan at row 9" in err
