"""The anchor side of benchmarks/overhead.py: the sentence-transformers docs' HPO recipe.

https://sbert.net/examples/training/hpo : ``SentenceTransformerTrainer(model=None, model_init=...,
loss=<model -> loss>, eval_dataset=..., evaluator=...)`` then ``trainer.hyperparameter_search(
backend="optuna", hp_space=..., compute_objective=..., n_trials=..., direction="maximize")``.

Same model, data, fixed arguments and space as the st-hpo side (STHPO_BENCH_* variables, see
benchmarks/_common.py). Two adaptations, both needed for a like-for-like comparison and neither making
the anchor slower: the pruner is Optuna's NopPruner (``create_study`` would default to MedianPruner,
st-hpo runs with ``pruner="none"``), and the sampled warmup ratio is written to ``warmup_steps`` (on
transformers 5 a float below 1 there is a ratio; ``setattr(args, "warmup_ratio", v)`` after
``__post_init__`` would be silently ignored). The sampler is TPE with the same seed, and the Optuna
parameter names and distributions are the same, so both sides train the same values.

    python benchmarks/overhead_anchor.py [OUTPUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402


def main(output_dir: str) -> int:
    _common.quiet_libraries()
    import _probe
    import optuna
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    _probe.install()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = _common.bench_config()
    train_dataset = _common.load_pairs("train", cfg["train_rows"])
    eval_dataset = _common.load_pairs("dev", cfg["eval_rows"])
    dev_evaluator = _common.make_evaluator(eval_dataset)

    def hpo_search_space(trial: optuna.Trial) -> dict:
        (lr_lo, lr_hi, lr_log), (w_lo, w_hi, _) = _common.SPACE["learning_rate"], _common.SPACE["warmup_ratio"]
        return {
            "learning_rate": trial.suggest_float("learning_rate", lr_lo, lr_hi, log=lr_log),
            "warmup_steps": trial.suggest_float("warmup_ratio", w_lo, w_hi),
        }

    def hpo_model_init(trial: optuna.Trial) -> SentenceTransformer:
        return SentenceTransformer(cfg["model"])

    def hpo_loss_init(model: SentenceTransformer) -> CoSENTLoss:
        return CoSENTLoss(model)

    def hpo_compute_objective(metrics: dict) -> float:
        return metrics[f"eval_{_common.OBJECTIVE}"]

    args = SentenceTransformerTrainingArguments(**_common.training_args(cfg, output_dir))
    trainer = SentenceTransformerTrainer(
        model=None,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        evaluator=dev_evaluator,
        model_init=hpo_model_init,
        loss=hpo_loss_init,
    )
    best = trainer.hyperparameter_search(
        hp_space=hpo_search_space,
        compute_objective=hpo_compute_objective,
        n_trials=cfg["n_trials"],
        direction="maximize",
        backend="optuna",
        sampler=optuna.samplers.TPESampler(seed=cfg["seed"]),
        pruner=optuna.pruners.NopPruner(),
    )
    print(f"anchor best: trial {best.run_id}, {_common.OBJECTIVE} = {best.objective:.4f}, {best.hyperparameters}")
    return 0


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="anchor-") as tmp:
        sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else tmp))
