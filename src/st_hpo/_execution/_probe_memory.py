"""``st-hpo validate STUDY --probe-memory``: train a few steps of the space's most memory-hungry corners.

A corner is the largest batch size the space can sample (then the next one down, until one fits), the
longest training rows, and no gradient checkpointing. Each corner is a real trial of an in-memory Optuna
study (nothing is written to the study's storage or MLflow), trained for a few steps; it reports the peak
GPU memory PyTorch reserved and whether it fitted. On a machine without a CUDA GPU there is nothing to probe.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._definition._datasets import materialize
from st_hpo._definition._resources import StudyResources
from st_hpo._definition._study import Study
from st_hpo._tracking._schema import ARGS_OVERRIDE_ATTR, MINI_BATCH_ATTR, PEAK_GPU_RESERVED_MB_KEY
from st_hpo._validation import validate_study

if TYPE_CHECKING:
    from st_hpo._execution._trial import TrialContext

__all__ = ["CornerResult", "NOTHING_TO_PROBE", "batch_sizes", "probe_corners", "probe_memory"]

#: What ``--probe-memory`` says on a machine without a CUDA GPU.
NOTHING_TO_PROBE = ("no CUDA GPU is visible here: nothing to probe (--probe-memory trains the largest corners of "
                    "the space on a GPU; run it on a GPU machine)")
#: Training steps per corner: enough for the optimizer state to be allocated and a step to peak.
PROBE_STEPS = 3


@dataclasses.dataclass(frozen=True)
class CornerResult:
    """One probed corner: its values, the peak GPU memory it reserved (MiB), and whether it fitted."""

    params: dict[str, Any]
    fits: bool
    peak_reserved_mb: float | None
    total_mb: float | None
    error: str | None = None
    mini_batch_size: int | None = None

    def line(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items()) or "(base arguments)"
        peak = "?" if self.peak_reserved_mb is None else f"{self.peak_reserved_mb:,.0f}"
        total = "?" if self.total_mb is None else f"{self.total_mb:,.0f}"
        verdict = "fits" if self.fits else f"does NOT fit ({(self.error or '').splitlines()[0][:120]})"
        mini = "" if self.mini_batch_size is None else f", GradCache mini_batch_size {self.mini_batch_size}"
        return f"{shown}: peak {peak} of {total} MiB reserved, {verdict}{mini}"


def batch_sizes(space: Any, base_args: Any) -> list[int]:
    """The batch sizes to probe, largest first: the space's (all choices of a categorical, or an int range's
    top halved down to its bottom), or the base arguments' one."""
    dist = space.get("per_device_train_batch_size") if isinstance(space, dict) else None
    if dist is None:
        return [int(base_args.per_device_train_batch_size)]
    if hasattr(dist, "choices"):
        return sorted({int(c) for c in dist.choices}, reverse=True)
    sizes, size = [], int(dist.high)
    while size >= dist.low:
        sizes.append(size)
        size //= 2
    return sizes or [int(dist.low)]


def _longest_rows(dataset: Any, rows: int) -> Any:
    """The ``rows`` training rows with the most text (repeated when there are fewer), longest first."""
    if not hasattr(dataset, "column_names"):  # several datasets: the longest rows of each
        return {name: _longest_rows(part, rows) for name, part in dataset.items()}
    texts = [c for c in dataset.column_names if isinstance(dataset[0][c], str)]
    length = [sum(len(row[c]) for c in texts) for row in dataset]
    order = sorted(range(len(dataset)), key=lambda i: -length[i])
    return dataset.select([order[i % len(order)] for i in range(rows)])


def probe_memory(study: Study, *, steps: int = PROBE_STEPS) -> list[CornerResult] | None:
    """Train each corner for ``steps`` steps on the GPU, largest batch first, until one fits; None when
    no CUDA GPU is visible."""
    import torch

    if not torch.cuda.is_available():
        return None
    return probe_corners(study, steps=steps, total_mb=torch.cuda.get_device_properties(0).total_memory / 2**20)


def probe_corners(study: Study, *, steps: int, total_mb: float | None) -> list[CornerResult]:
    """Train the corners where the study's trials train (the GPU, or the CPU in tests), largest batch
    first, until one fits."""
    with tempfile.TemporaryDirectory(prefix="st-hpo-probe-") as tmp:
        ctx = _context(study, Path(tmp))
        sizes = batch_sizes(study.space, ctx.validated.base_args)
        train = _longest_rows(materialize(study.train_dataset, "train_dataset"), max(sizes) * steps)
        probe = study.replace(train_dataset=train, keep_best_model=False, test_dataset=None, baseline=False)
        ctx = _context(probe, Path(tmp))
        results = []
        for size in sizes:
            results.append(_probe_corner(ctx, size, steps, total_mb))
            if results[-1].fits:
                break
        return results


def _context(study: Study, output_dir: Path) -> Any:
    from st_hpo._execution._trial import TrialContext, WorkerInfo

    resources = StudyResources(study)
    validated = validate_study(study, resources, output_dir=str(output_dir))
    return TrialContext(validated, resources, None, output_dir, WorkerInfo(name="probe"))


def _probe_corner(ctx: TrialContext, size: int, steps: int, total_mb: float | None) -> CornerResult:
    """One corner as a trial of an in-memory study: batch ``size``, ``steps`` steps, no checkpointing."""
    import optuna

    from st_hpo._execution._trial import run_trial

    space = ctx.validated.study.space
    params = {"per_device_train_batch_size": size} if isinstance(space, dict) and \
        "per_device_train_batch_size" in space else {}
    if isinstance(space, dict) and "gradient_checkpointing" in space:
        params["gradient_checkpointing"] = False
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(params)
    trial = study.ask()
    overrides = {"max_steps": steps, "per_device_train_batch_size": size, "gradient_checkpointing": False}
    trial.set_user_attr(ARGS_OVERRIDE_ATTR, overrides)
    outcome = run_trial(ctx, trial)
    attrs = study.trials[0].user_attrs
    return CornerResult(params={"per_device_train_batch_size": size, **params},
                        fits=outcome.state in ("COMPLETE", "PRUNED"),
                        peak_reserved_mb=attrs.get(PEAK_GPU_RESERVED_MB_KEY), total_mb=total_mb,
                        error=outcome.error, mini_batch_size=attrs.get(MINI_BATCH_ATTR))
