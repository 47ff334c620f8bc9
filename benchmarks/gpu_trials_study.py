"""The study of benchmarks/gpu_trials.py: ``st-hpo run --workers 2`` on it, a trial that runs out of GPU memory first.

Trial 0 is enqueued with a batch size far too large for the card; four normal trials (enqueued too, each
with its own learning rate, so they run whatever the sampler would draw) follow on the two workers.
Settings come from the environment, set by gpu_trials.py:

    STHPO_GPU_TRIALS_MODE   ``device`` (MiniLM on CUDA) or ``quick`` (the tiny BERT on the CPU: the "out of
                            memory" is simulated, since a CPU run would only swap)

Why the device trial cannot fit in an H200 (139 GiB): MiniLM-L6 (hidden 384, FFN 1536, 6 layers) at
max_seq_length 512 on a batch of 4,096 pairs is 4,096 x 2 x 512 = 4.2M tokens through the encoder at once.
What backward needs saved per token and layer is at least the FFN's GELU input and output (2 x 1,536 fp32
values) and the layer's input (384): 13.8 kB, so 4.2M x 13.8 kB x 6 layers = 348 GB, 2.3x the card, before
the attention, dropout masks and LayerNorm inputs (which bring it to about 700 GB with SDPA attention, and
more with eager attention's 12 x 512 x 512 score matrices per sentence).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
from optuna.distributions import CategoricalDistribution, FloatDistribution  # noqa: E402
from sentence_transformers.sentence_transformer.losses import CoSENTLoss  # noqa: E402

import st_hpo  # noqa: E402

_common.quiet_libraries()
QUICK = os.environ.get("STHPO_GPU_TRIALS_MODE", "device") == "quick"
#: (batch size of the trial that cannot fit, train rows, the normal batch size, max_steps of every trial)
HUGE, ROWS, NORMAL, STEPS = (64, 64, 8, 4) if QUICK else (4096, 4096, 16, 30)
#: --quick: a forward pass over more rows than this raises torch's OutOfMemoryError, as CUDA would
QUICK_OOM_ROWS = 32
SEQ_LENGTH = 32 if QUICK else 512
LEARNING_RATES = (2e-5, 3e-5, 5e-5, 8e-5)


def long_pairs() -> object:
    """``ROWS`` sentence pairs, each sentence longer than ``SEQ_LENGTH`` tokens (a short sentence repeated:
    cheap to build; the tokenizer truncates it to ``SEQ_LENGTH``)."""
    from datasets import Dataset

    pairs = _common.synthetic_pairs(ROWS, seed=1)
    repeat = 1 if QUICK else 90  # ~7 tokens a sentence: ~630 tokens, cut to 512
    return Dataset.from_dict({"sentence1": [" ".join([s] * repeat) for s in pairs["sentence1"]],
                              "sentence2": [" ".join([s] * repeat) for s in pairs["sentence2"]],
                              "score": pairs["score"]})


def model() -> object:
    from sentence_transformers import SentenceTransformer

    built = SentenceTransformer(_common.model_path(), device="cpu")
    built.max_seq_length = SEQ_LENGTH
    return built


def _simulated_oom(module: object, args: tuple) -> None:
    import torch

    rows = len(args[0][0]["input_ids"]) if args and args[0] else 0
    if rows > QUICK_OOM_ROWS:
        raise torch.OutOfMemoryError(f"CUDA out of memory (simulated by --quick on the CPU: a batch of {rows} "
                                     f"rows, over {QUICK_OOM_ROWS})")


def loss(built: object, params: dict) -> CoSENTLoss:
    made = CoSENTLoss(built)
    if QUICK:
        made.register_forward_pre_hook(_simulated_oom)
    return made


study = st_hpo.Study(
    name="gpu-trials",
    model=model(),
    train_dataset=long_pairs,
    eval_dataset=lambda: _common.load_pairs("dev", _common.env_int("STHPO_BENCH_EVAL_ROWS", 200)),
    loss=loss,
    evaluator=_common.make_evaluator,
    objective=_common.OBJECTIVE,
    direction="maximize",
    args=dict(max_steps=STEPS, per_device_train_batch_size=NORMAL, per_device_eval_batch_size=64,
              learning_rate=5e-5, logging_steps=10, save_strategy="no", seed=_common.TRAIN_SEED, disable_tqdm=True),
    space={"per_device_train_batch_size": CategoricalDistribution([NORMAL, HUGE]),
           "learning_rate": FloatDistribution(1e-5, 1e-4, log=True)},
    enqueue=[{"per_device_train_batch_size": HUGE, "learning_rate": 5e-5}]
    + [{"per_device_train_batch_size": NORMAL, "learning_rate": lr} for lr in LEARNING_RATES],
    n_trials=len(LEARNING_RATES),
    sampler="random",
    pruner="none",
    seed=0,
    baseline=False,
    keep_best_model=False,
    intermediate_eval_rows=None,
)
