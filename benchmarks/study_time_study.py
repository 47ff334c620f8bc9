"""The st-hpo side of benchmarks/study_time.py: a study file as a new user writes it from the README.

The recipe's base arguments and space (benchmarks/_common.py: ``recipe_args``, ``recipe_space``) and
st-hpo's defaults for everything else: no evaluation settings (st-hpo evaluates where its pruner decides),
the default pruner, baseline trial, eval subset and kept best model; the test set scores the kept best
model when the study reaches its budget.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
from optuna.distributions import FloatDistribution, IntDistribution  # noqa: E402
from sentence_transformers.sentence_transformer.losses import CoSENTLoss  # noqa: E402

import st_hpo  # noqa: E402

_common.quiet_libraries()
cfg = _common.bench_config()

study = st_hpo.Study(
    name="study-time",
    model=cfg["model"],
    train_dataset=lambda: _common.load_pairs("train", cfg["train_rows"]),
    eval_dataset=lambda: _common.load_pairs("dev", cfg["eval_rows"]),
    loss=CoSENTLoss,
    evaluator=_common.make_evaluator,
    objective=_common.OBJECTIVE,
    args=_common.recipe_args(cfg),
    space={"num_train_epochs": IntDistribution(1, 2), "per_device_train_batch_size": IntDistribution(32, 128),
           "warmup_ratio": FloatDistribution(0.0, 0.3), "learning_rate": FloatDistribution(1e-6, 1e-4, log=True)},
    n_trials=cfg["n_trials"],
    seed=cfg["seed"],
    test_dataset=lambda: _common.load_pairs("test", cfg["eval_rows"]),
    test_evaluator=lambda ds: _common.make_evaluator(ds, name="sts-test"),
)
