"""The study's sampler in this process: Optuna's, seeded per worker so that workers draw apart."""

from __future__ import annotations

import zlib
from typing import Any

__all__ = ["make_sampler", "worker_seed"]


def worker_seed(seed: int | None, salt: str | None) -> int | None:
    """The sampler seed of one worker: the study's seed mixed with the worker's identity (host/name), so
    that workers sharing a seeded study draw different values, and the same worker draws the same ones."""
    if seed is None or not salt:
        return seed
    return (seed + zlib.crc32(salt.encode())) % 2**32


def make_sampler(spec: Any, seed: int | None, salt: str | None = None, *, parallel: bool = False) -> Any:
    """The study's sampler in this process.

    ``salt`` says who samples and when (the worker's host/name, the number of trials already there): given
    where the study's seed alone would repeat configurations, because several processes sample the same
    study or a resumed study would draw its first trials' values again. ``parallel``: other processes
    sample the same study at the same time.
    """
    import optuna

    if spec is None or spec == "tpe":
        # with several workers, the constant liar counts running trials as bad results, so that workers
        # asking at the same time do not all propose the neighbourhood of the current best (Optuna's advice)
        return optuna.samplers.TPESampler(seed=worker_seed(seed, salt), constant_liar=parallel)
    if spec == "random":
        return optuna.samplers.RandomSampler(seed=worker_seed(seed, salt))
    if spec == "qmc":  # one scrambled sequence for all workers: Optuna hands each trial the next point
        return optuna.samplers.QMCSampler(seed=seed)
    if salt:  # a sampler object from the study file, seeded alike in every worker: draw apart
        spec.reseed_rng()
    return spec
