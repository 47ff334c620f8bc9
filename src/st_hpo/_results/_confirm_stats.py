"""The figures of a confirmation: mean and spread per configuration over seeds, and the paired test.

The test asks whether the best configuration beats the baseline by more than the seed noise (in a study
without a baseline trial: whether the best configuration beats the runner-up). Both were trained with the
same training seeds (seed index i trains both with seed ``args.seed + 1000 + i``), so
the comparison is paired by seed: a one-sided paired t-test (``scipy.stats.ttest_rel``, which
sentence-transformers already depends on) over the per-seed differences, oriented so that a positive
difference is an improvement whatever the study's direction, at ``alpha`` = 0.05.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any

__all__ = ["ALPHA", "ConfigScore", "paired_test", "score"]

ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class ConfigScore:
    """One configuration's objective over the confirmation seeds (``values[i]`` with ``seeds[i]``)."""

    label: str  #: "baseline" or "trial N"
    trial: int | None  #: the study's trial whose configuration this is (the baseline trial, if it ran)
    baseline: bool
    params: dict[str, Any]
    seeds: list[int]
    values: list[float]
    mean: float | None
    std: float | None  #: sample standard deviation (n - 1); None with fewer than 2 seeds
    single_run_value: float | None  #: the trial's own objective in the study (one run, the study's seed)
    test_values: list[float] = dataclasses.field(default_factory=list)
    test_mean: float | None = None
    test_std: float | None = None


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def score(label: str, trial: int | None, baseline: bool, params: dict[str, Any], by_seed: dict[int, float],
          seeds: list[int], single_run_value: float | None, test_by_seed: dict[int, float]) -> ConfigScore:
    """A :class:`ConfigScore` from the objective values keyed by training seed (missing seeds left out)."""
    done = [s for s in seeds if s in by_seed]
    values = [by_seed[s] for s in done]
    tests = [test_by_seed[s] for s in done if s in test_by_seed]
    mean, std = _mean_std(values)
    test_mean, test_std = _mean_std(tests)
    return ConfigScore(label=label, trial=trial, baseline=baseline, params=params, seeds=done, values=values,
                       mean=mean, std=std, single_run_value=single_run_value, test_values=tests,
                       test_mean=test_mean, test_std=test_std)


def paired_test(best: ConfigScore, other: ConfigScore, direction: str) -> dict[str, Any]:
    """Does ``best`` beat ``other`` (the baseline, or without one the runner-up) beyond seed noise?

    A dict with the method, the p-value, ``compared`` and ``against`` (the two labels), ``beats`` (the
    verdict: None when no test is possible), ``beats_baseline`` (the same, only when ``other`` is the
    baseline, else None) and a verdict ``line``.
    """
    pairs = [(v, other.values[other.seeds.index(s)]) for s, v in zip(best.seeds, best.values, strict=True)
             if s in other.seeds]
    sign = 1.0 if direction == "maximize" else -1.0
    diffs = [sign * (a - b) for a, b in pairs]
    n = len(diffs)
    method = f"paired t-test over {n} seed(s), one-sided, alpha {ALPHA:g}"
    out: dict[str, Any] = {"method": method, "n_pairs": n, "alpha": ALPHA, "compared": best.label,
                           "against": other.label, "mean_gain": statistics.fmean(diffs) if diffs else None,
                           "p_value": None, "beats": None, "beats_baseline": None}
    if n < 2:
        out["line"] = (f"{n} paired seed(s): no test is possible (a paired test needs at least 2 seeds; "
                       "run st-hpo confirm with --seeds 3 or more)")
        return out
    if len(set(diffs)) == 1:  # no spread: the t statistic is undefined; the sign decides
        p = 0.0 if diffs[0] > 0 else 1.0
    else:
        from scipy import stats

        a, b = zip(*pairs, strict=True)
        p = float(stats.ttest_rel(a, b, alternative="greater" if sign > 0 else "less").pvalue)
    beats = p < ALPHA and out["mean_gain"] > 0
    out.update(p_value=p, beats=beats, beats_baseline=beats if other.baseline else None)
    what = "the baseline" if other.baseline else other.label
    verdict = (f"{best.label} beats {what} beyond seed noise" if beats
               else f"{best.label} does not beat {what} beyond seed noise")
    out["line"] = f"{method}: p={_p(p)}; {verdict} (mean gain {out['mean_gain']:+.3g})"
    return out


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")
