"""Every model kind through the same path: validate, train, keep the best model, export, retrain, register."""

from __future__ import annotations

import json

import optuna
import pytest

import st_hpo
from st_hpo._kinds import kind_named
from tests.helpers import load_trials, mlflow_runs

ARGS = dict(num_train_epochs=1, per_device_train_batch_size=16, learning_rate=5e-5, eval_strategy="steps",
            eval_steps=2, logging_steps=1, save_strategy="no", disable_tqdm=True, seed=7, use_cpu=True)
LR = {"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)}


def _pairs(ds):
    return list(zip(ds["sentence1"], ds["sentence2"], strict=True))


def _cross_encoder(tiny_model_path):
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderCorrelationEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    return dict(model=tiny_model_path, args=CrossEncoderTrainingArguments(output_dir="unused", **ARGS),
                loss=BinaryCrossEntropyLoss, objective="sts-dev_spearman",
                evaluator=lambda ds: CrossEncoderCorrelationEvaluator(_pairs(ds), ds["score"], name="sts-dev"))


def _sparse_encoder(tiny_model_path):
    from pathlib import Path

    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.evaluation import SparseEmbeddingSimilarityEvaluator
    from sentence_transformers.sparse_encoder.losses import SparseMultipleNegativesRankingLoss, SpladeLoss
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    hf = str(Path(tiny_model_path).parent / "hf")  # the tiny BERT the fixture built the model from
    model = SparseEncoder(modules=[MLMTransformer(hf, max_seq_length=32), SpladePooling("max")], device="cpu")

    def splade(model, params):
        return SpladeLoss(model, loss=SparseMultipleNegativesRankingLoss(model),
                          document_regularizer_weight=params["loss.document_regularizer_weight"],
                          query_regularizer_weight=5e-5)

    return dict(model=model, args=ARGS, loss=splade, objective="sts-dev_spearman_dot",
                space={**LR, "loss.document_regularizer_weight": optuna.distributions.FloatDistribution(1e-5, 1e-3,
                                                                                                        log=True)},
                evaluator=lambda ds: SparseEmbeddingSimilarityEvaluator(ds["sentence1"], ds["sentence2"], ds["score"],
                                                                        name="sts-dev"))


def _multi_vector(tiny_model_path):
    from sentence_transformers.multi_vector_encoder import MultiVectorEncoderTrainingArguments
    from sentence_transformers.multi_vector_encoder.evaluation import MultiVectorInformationRetrievalEvaluator
    from sentence_transformers.multi_vector_encoder.losses import MultiVectorMultipleNegativesRankingLoss

    def evaluator(ds):
        queries = {f"q{i}": s for i, s in enumerate(ds["sentence1"])}
        corpus = {f"d{i}": s for i, s in enumerate(ds["sentence2"])}
        return MultiVectorInformationRetrievalEvaluator(queries, corpus, {q: {f"d{q[1:]}"} for q in queries},
                                                        name="ir", write_csv=False)

    return dict(model=tiny_model_path, args=MultiVectorEncoderTrainingArguments(output_dir="unused", **ARGS),
                loss=MultiVectorMultipleNegativesRankingLoss, objective="ir_maxsim_ndcg@10", evaluator=evaluator)


def _sentence_transformer(tiny_model_path):
    return {}


KINDS = {"sentence-transformer": _sentence_transformer, "cross-encoder": _cross_encoder,
         "sparse-encoder": _sparse_encoder, "multi-vector-encoder": _multi_vector}


@pytest.mark.slow
@pytest.mark.parametrize("kind_name", list(KINDS))
def test_every_kind_trains_keeps_exports_retrains_and_registers(kind_name, make_study, tiny_model_path, tmp_path,
                                                                capsys):
    kind = kind_named(kind_name)
    study = make_study(**{"space": LR, "n_trials": 1, "pruner": "none", **KINDS[kind_name](tiny_model_path)})
    result = st_hpo.run_study(study, output_dir=tmp_path)
    assert result.budget_met and result.n_complete == 1
    # the header printed before the first trial names the kind that trains
    header = capsys.readouterr().err.split("trial   0")[0]
    assert f"model   {kind.model_class_name} (" in header
    trial = load_trials(tmp_path, "tiny")[0]
    assert set(trial.params) == set(study.space)
    # the kept model loads with its own class
    model = kind.model_class()(str(result.best_model_dir), device="cpu")
    assert type(model).__name__ == kind.model_class_name
    _, parents, runs = mlflow_runs(tmp_path, "tiny")
    assert parents[0].data.tags["st_hpo.model_kind"] == kind_name
    assert [r.data.tags["st_hpo.model_kind"] for r in runs] == [kind_name]
    if kind_name == "sparse-encoder":  # sparsity next to quality, on the run and with the trial
        assert runs[0].data.metrics["eval_sts-dev_active_dims"] > 0
        assert trial.user_attrs["st_hpo.side_metrics"]["sts-dev_active_dims"] > 0
    # export says which arguments class to build, and its args build it
    path = st_hpo.export_best(study, tmp_path / "best.json", output_dir=tmp_path)
    config = json.loads(path.read_text())
    assert config["model_kind"] == kind_name and config["args_class"].endswith(kind.args_class_name)
    kind.args_class()(output_dir=str(tmp_path / "x"), **config["args"])
    # retrain trains the same kind again; register logs what loads back
    again = st_hpo.retrain_best(study, output_dir=tmp_path, model_dir=tmp_path / "retrained")
    assert type(kind.model_class()(str(again.model_dir), device="cpu")).__name__ == kind.model_class_name
    registered = st_hpo.register_best(study, output_dir=tmp_path, name=f"tiny-{kind_name}")
    assert registered.version == "1"
    import os

    assert "MLFLOW_REGISTRY_URI" not in os.environ, "registering leaves the process's registry as it was"
    if not kind.mlflow_flavor:
        import mlflow
        from mlflow.tracking import MlflowClient

        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        source = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_download_uri(
            registered.name, registered.version)
        folder = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp_path / "dl"),
                                                     tracking_uri=uri)
        assert type(kind.model_class()(folder, device="cpu")).__name__ == kind.model_class_name
        # the README's line, with the tracking URI set as it says: the registered version's models:/ URI
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        with _use_tracking_uri(uri):
            folder = mlflow.artifacts.download_artifacts(f"models:/{registered.name}/{registered.version}",
                                                         dst_path=str(tmp_path / "dl-models"))
        assert type(kind.model_class()(folder, device="cpu")).__name__ == kind.model_class_name


def test_contradicting_kinds_are_refused_in_one_line(make_study, tiny_model_path):
    from sentence_transformers import SparseEncoder
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderCorrelationEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    ce_args = CrossEncoderTrainingArguments(output_dir="unused", **ARGS)
    sparse = SparseEncoder(tiny_model_path, device="cpu")
    cases = {
        r"args is a CrossEncoderTrainingArguments \(CrossEncoder\) but model is a SparseEncoder": dict(
            args=ce_args, model=sparse),
        r"loss CoSENTLoss is from sentence_transformers.sentence_transformer, but the study trains a CrossEncoder":
            {**_cross_encoder(tiny_model_path), "loss": make_study().loss},
        r"loss BinaryCrossEntropyLoss is from sentence_transformers.cross_encoder, but the study trains a "
        r"SentenceTransformer": dict(loss=BinaryCrossEntropyLoss),
        r"evaluator CrossEncoderCorrelationEvaluator is from sentence_transformers.cross_encoder": dict(
            evaluator=lambda ds: CrossEncoderCorrelationEvaluator(_pairs(ds), ds["score"], name="sts-dev")),
        r"kind='bi-encoder' is not a model kind": dict(kind="bi-encoder"),
        r"the model factory returned a SparseEncoder, but the study says CrossEncoder": dict(
            args=ce_args, model=lambda params: sparse),
    }
    for message, change in cases.items():
        with pytest.raises(st_hpo.StudyDefinitionError, match=message):
            st_hpo.validate_study(make_study(**change))


def test_a_factory_decides_the_kind_and_arguments_are_checked_against_its_class(make_study, tiny_model_path):
    from sentence_transformers import MultiVectorEncoder

    spec = {k: v for k, v in _multi_vector(tiny_model_path).items() if k not in ("model", "args")}
    args = {**ARGS, "max_length": 32}  # a field of MultiVectorEncoderTrainingArguments only
    st_hpo.validate_study(make_study(model=lambda params: MultiVectorEncoder(tiny_model_path, device="cpu"),
                                     args=args, **spec))
    with pytest.raises(st_hpo.StudyDefinitionError, match=r"unknown training argument 'max_length' in Study\(args=...\) "
                                                          r"for SentenceTransformerTrainingArguments"):
        st_hpo.validate_study(make_study(args=args))


@pytest.mark.slow
def test_kind_with_a_dict_of_arguments_trains_that_kind(make_study, tiny_model_path, tmp_path):
    """The README's other form: ``Study(kind="cross-encoder")`` with the arguments as a dict."""
    from sentence_transformers import CrossEncoder

    parts = {**_cross_encoder(tiny_model_path), "args": dict(ARGS)}
    study = make_study(kind="cross-encoder", space=LR, n_trials=1, pruner="none", **parts)
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert result.n_complete == 1
    assert type(CrossEncoder(str(result.best_model_dir), device="cpu")).__name__ == "CrossEncoder"
    _, parents, runs = mlflow_runs(tmp_path, "tiny")
    assert parents[0].data.tags["st_hpo.model_kind"] == "cross-encoder"
    config = json.loads(st_hpo.export_best(study, tmp_path / "best.json", output_dir=tmp_path).read_text())
    assert config["args_class"].endswith("CrossEncoderTrainingArguments"), "the dict built the kind's own class"
