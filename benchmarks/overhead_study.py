"""The st-hpo side of benchmarks/overhead.py: a study file for ``st-hpo run``.

The same model, data, fixed arguments and space as the anchor (benchmarks/overhead_anchor.py), all read
from the STHPO_BENCH_* environment variables (see benchmarks/_common.py). No baseline trial and no
pruning, so both sides train the same trials with the same sampled values.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import _probe  # noqa: E402
from sentence_transformers.sentence_transformer.losses import CoSENTLoss  # noqa: E402

import st_hpo  # noqa: E402

_common.quiet_libraries()
_probe.install()
cfg = _common.bench_config()

study = st_hpo.Study(
    name="overhead",
    model=cfg["model"],
    train_dataset=lambda: _common.load_pairs("train", cfg["train_rows"]),
    eval_dataset=lambda: _common.load_pairs("dev", cfg["eval_rows"]),
    loss=CoSENTLoss,
    evaluator=_common.make_evaluator,
    objective=_common.OBJECTIVE,
    direction="maximize",
    args={k: v for k, v in _common.training_args(cfg, "unused").items() if k not in ("output_dir", "report_to")},
    space=_common.optuna_space(),
    n_trials=cfg["n_trials"],
    sampler="tpe",
    pruner="none",
    seed=cfg["seed"],
    baseline=False,
    # benchmarks/checkpoint_cost.py: resumable checkpoints off, or on at a given interval (st-hpo's default)
    resume_interrupted=os.environ.get("STHPO_BENCH_RESUME", "on") == "on",
    **({"checkpoint_every_minutes": float(os.environ["STHPO_BENCH_CHECKPOINT_MINUTES"])}
       if os.environ.get("STHPO_BENCH_CHECKPOINT_MINUTES") else {}),
)
