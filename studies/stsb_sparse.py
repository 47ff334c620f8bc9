"""A SPLADE sparse retriever initialised from all-MiniLM-L6-v2's weights, trained on STSb paraphrase
pairs with ``SpladeLoss`` over ``SparseMultipleNegativesRankingLoss``; st-hpo searches the learning rate
and both regularizer weights, which trade retrieval quality for sparsity.

    st-hpo run studies/stsb_sparse.py

- Model: ``MLMTransformer`` (MiniLM's encoder with a masked-language-model head: new weights, since
  MiniLM was not trained with one) and ``SpladePooling("max")``, built by a model factory; the ``args``
  are ``SparseEncoderTrainingArguments``, so it trains with the ``SparseEncoderTrainer``.
- Loss: a factory, because ``SpladeLoss`` wraps another loss; the sampled ``loss.`` values reach it as
  ``params["loss.document_regularizer_weight"]`` and ``params["loss.query_regularizer_weight"]``.
- Objective: nDCG@10 of a ``SparseInformationRetrievalEvaluator`` on the dev paraphrase pairs (each
  sentence1 a query whose one relevant document is its sentence2, among the sentence2 of every dev pair).
  The evaluator also reports the active dimensions of queries and documents (``..._query_active_dims``,
  ``..._corpus_active_dims``) and ``avg_flops``: st-hpo logs them on each trial's run and shows them in
  ``st-hpo status``.

The kept best model loads with ``SparseEncoder(path)``. Data and model come from ``_stsb.py`` beside this
file (copy both). Environment variables as in ``stsb_retrieval.py`` (default 8 trials).
"""

from __future__ import annotations

import os

# _stsb.py, the file beside this one: STSb, its paraphrase pairs, and the base model
from _stsb import (
    dev_distractors,
    dev_paraphrases,
    limit,
    load_split,
    model_name,
    paraphrase_pairs,
    retrieval_task,
)
from datasets import Dataset
from optuna.distributions import FloatDistribution
from sentence_transformers import SparseEncoder
from sentence_transformers.sparse_encoder import SparseEncoderTrainingArguments
from sentence_transformers.sparse_encoder.evaluation import SparseInformationRetrievalEvaluator
from sentence_transformers.sparse_encoder.losses import SparseMultipleNegativesRankingLoss, SpladeLoss
from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

import st_hpo


def train_dataset() -> Dataset:
    return limit(paraphrase_pairs(load_split("train")), "STHPO_TRAIN_ROWS")


eval_dataset = dev_paraphrases  # each pair a query (sentence1) and its one relevant document


def evaluator(ds: Dataset) -> SparseInformationRetrievalEvaluator:
    queries, corpus, relevant = retrieval_task(ds["sentence1"], ds["sentence2"], dev_distractors())
    return SparseInformationRetrievalEvaluator(queries, corpus, relevant, name="stsb-ir", write_csv=False)


def splade(params: dict) -> SparseEncoder:
    """A SPLADE model on the base model's encoder (a fresh one for every trial)."""
    return SparseEncoder(modules=[MLMTransformer(model_name(), max_seq_length=128), SpladePooling("max")])


def splade_loss(model: SparseEncoder, params: dict) -> SpladeLoss:
    return SpladeLoss(model, loss=SparseMultipleNegativesRankingLoss(model),
                      document_regularizer_weight=params["loss.document_regularizer_weight"],
                      query_regularizer_weight=params["loss.query_regularizer_weight"])


study = st_hpo.Study(
    name="stsb-sparse",
    model=splade,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    loss=splade_loss,
    evaluator=evaluator,
    objective="stsb-ir_dot_ndcg@10",
    direction="maximize",
    args=SparseEncoderTrainingArguments(
        output_dir="unused",  # st-hpo gives every trial its own folder
        num_train_epochs=1,
        per_device_train_batch_size=32,
        learning_rate=2e-5,
        warmup_ratio=0.1,
        batch_sampler="no_duplicates",
        eval_strategy="steps",
        eval_steps=0.25,  # four evaluations per trial
        logging_steps=10,
        save_strategy="no",
        seed=12,
        disable_tqdm=True,
    ),
    space={
        "learning_rate": FloatDistribution(1e-5, 2e-4, log=True),
        "loss.document_regularizer_weight": FloatDistribution(1e-5, 1e-2, log=True),
        "loss.query_regularizer_weight": FloatDistribution(1e-5, 1e-2, log=True),
    },
    n_trials=int(os.environ.get("STHPO_N_TRIALS", "8")),
    pruner="median",
    seed=42,
    baseline=False,  # the regularizer weights have no base value: every trial samples them
    intermediate_eval_rows=int(os.environ.get("STHPO_INTERMEDIATE_EVAL_ROWS", "100")),
)
