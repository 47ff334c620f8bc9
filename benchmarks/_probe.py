"""Timing probes, installed the same way in the anchor script and in the st-hpo study file.

When ``STHPO_BENCH_PROBE`` names a file, :func:`install` wraps a few methods at class level and appends
one JSON line per call: ``{"ev": NAME, "t0": start, "t1": end}`` (``time.time()`` seconds, so the parent
process can line them up with its own clock). A wrapper costs a few microseconds per call.

    train       SentenceTransformerTrainer.train (for the anchor this includes model_init: the model load)
    loop        Trainer._inner_training_loop: the training loop, evaluations during training included
    evaluate    SentenceTransformerTrainer.evaluate (eval-loss pass when there is an eval_dataset, evaluator)
    evaluator   EmbeddingSimilarityEvaluator.__call__
    model_load  SentenceTransformer.__init__
    process     one line at exit: t0 = when the probe was installed (after the imports it needs)

Training time of a trial = ``loop`` minus the ``evaluate`` calls inside it.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import time
from typing import Any

_installed = False


def _wrap(cls: Any, attr: str, name: str, sink: Any) -> None:
    original = getattr(cls, attr)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        try:
            return original(*args, **kwargs)
        finally:
            sink(name, t0, time.time())

    setattr(cls, attr, timed)


def install() -> bool:
    """Install the probes when ``STHPO_BENCH_PROBE`` is set; returns whether they are installed."""
    global _installed
    path = os.environ.get("STHPO_BENCH_PROBE")
    if not path or _installed:
        return _installed
    _installed = True
    fh = open(path, "a", buffering=1)  # noqa: SIM115 - open for the process's lifetime

    def sink(name: str, t0: float, t1: float) -> None:
        fh.write(json.dumps({"ev": name, "t0": t0, "t1": t1}) + "\n")

    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
    from transformers import Trainer

    _wrap(SentenceTransformerTrainer, "train", "train", sink)
    _wrap(Trainer, "_inner_training_loop", "loop", sink)
    _wrap(SentenceTransformerTrainer, "evaluate", "evaluate", sink)
    _wrap(EmbeddingSimilarityEvaluator, "__call__", "evaluator", sink)
    _wrap(SentenceTransformer, "__init__", "model_load", sink)
    started = time.time()
    atexit.register(lambda: sink("process", started, time.time()))
    return True
