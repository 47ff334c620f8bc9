"""The recipe side of benchmarks/study_time.py: the sentence-transformers docs' HPO recipe, as the docs give it.

https://sbert.net/examples/training/hpo : ``model_init``, ``hp_space`` (the docs' space: epochs 1-2, batch
32-128, warmup ratio 0-0.3, learning rate 1e-6..1e-4 log), ``compute_objective``, then
``trainer.hyperparameter_search(backend="optuna")``; no evaluation during training (one per trial, at its
end). One adaptation, needed on transformers 5 and not making the recipe slower: the sampled warmup ratio
is written to ``warmup_steps`` (a float below 1 there is a ratio; ``setattr(args, "warmup_ratio", v)``
after ``__post_init__`` is ignored). To report the best model's test score, a callback scores every
trial's model on the test set when its training ends; that time is measured and left out of the wall time.

    python benchmarks/study_time_anchor.py OUTPUT_DIR RESULT_JSON
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402


def main(output_dir: str, result: str) -> int:
    _common.quiet_libraries()
    import optuna
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss
    from transformers import TrainerCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = _common.bench_config()
    train_dataset = _common.load_pairs("train", cfg["train_rows"])
    eval_dataset = _common.load_pairs("dev", cfg["eval_rows"])
    dev_evaluator = _common.make_evaluator(eval_dataset)
    test_evaluator = _common.make_evaluator(_common.load_pairs("test", cfg["eval_rows"]), name="sts-test")
    tests: list[float] = []
    devs: list[float] = []
    test_seconds = [0.0]

    class TestScore(TrainerCallback):  # the benchmark's, not the recipe's: timed and left out
        def on_train_end(self, args, state, control, model=None, **kwargs):
            t0 = time.perf_counter()
            tests.append(float(test_evaluator(model)["sts-test_spearman_cosine"]))
            test_seconds[0] += time.perf_counter() - t0

    def hpo_search_space(trial: optuna.Trial) -> dict:
        space = _common.recipe_space(trial)
        space["warmup_steps"] = space.pop("warmup_ratio")
        return space

    def hpo_model_init(trial: optuna.Trial) -> SentenceTransformer:
        return SentenceTransformer(cfg["model"])

    def hpo_loss_init(model: SentenceTransformer) -> CoSENTLoss:
        return CoSENTLoss(model)

    def hpo_compute_objective(metrics: dict) -> float:
        devs.append(metrics[f"eval_{_common.OBJECTIVE}"])
        return devs[-1]

    args = SentenceTransformerTrainingArguments(output_dir=output_dir, **_common.recipe_args(cfg), report_to="none")
    trainer = SentenceTransformerTrainer(
        model=None, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, evaluator=dev_evaluator,
        model_init=hpo_model_init, loss=hpo_loss_init, callbacks=[TestScore()],
    )
    best = trainer.hyperparameter_search(
        hp_space=hpo_search_space, compute_objective=hpo_compute_objective, n_trials=cfg["n_trials"],
        direction="maximize", backend="optuna", sampler=optuna.samplers.TPESampler(seed=cfg["seed"]),
    )
    at = max(range(len(devs)), key=devs.__getitem__)
    Path(result).write_text(json.dumps({"best_dev": best.objective, "best_test": tests[at], "n_trials": len(devs),
                                        "test_seconds": test_seconds[0], "best_params": best.hyperparameters}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
