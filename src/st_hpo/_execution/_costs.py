"""Measuring what a trained trial model costs (the names and what they mean: :mod:`st_hpo._definition._costs`).

:func:`measure_costs` runs once per complete trial, after its final evaluation, on the trained model where it
trained (the trial's device). What it measures:

- ``cost.encode_ms``, only when the study weighs it (an objective or a constraint names it:
  :data:`~st_hpo._definition._costs.MEASURED_WHEN_WEIGHED`): the median of 3 timed passes (after one warm-up
  pass) of the model over up to 1,000 inputs of the eval set (the train set when the study has none), in
  batches of 32, scaled to 1,000 inputs when the set has fewer. What an input is belongs to the model kind (:meth:`ModelKind.cost_inputs`): a
  sentence for an embedding model (a pair's two sentences count as two), a (query, document) pair for a
  CrossEncoder, whose ``predict`` is timed instead of ``encode``. On a GPU, CUDA is synchronised around each
  pass. Its time is counted in the trial's ``trial_seconds`` only: it is neither training
  (``train_seconds``) nor an evaluation of the objective (``eval_seconds``).
- ``cost.embedding_dim`` and ``cost.parameters`` (:func:`static_costs`: known before training too).
- ``cost.train_seconds``: the trial's ``train_seconds`` (:mod:`st_hpo._tracking._times`).
- ``cost.peak_memory_mb``: on a GPU, the peak memory PyTorch's caching allocator reserved during the trial
  (``torch.cuda.max_memory_reserved``, the trial's ``peak_gpu_reserved_mb``); on the CPU, how much the
  process's resident memory grew during the trial: its peak (``VmHWM`` of ``/proc/self/status``, reset at the
  trial's start by writing 5 to ``/proc/self/clear_refs``) less its resident memory at the start. Where
  ``/proc`` cannot do that (not Linux), the process's lifetime peak (``resource.getrusage``'s ``ru_maxrss``)
  is used instead: it may then include an earlier trial's peak.
- ``cost.active_dims`` and ``cost.flops`` for a sparse model (:meth:`ModelKind.sparsity_costs`): as its
  evaluator reported them; one it did not report is computed from the model's embeddings of those inputs
  (the warm-up pass's, or one untimed pass) when the study weighs it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import statistics
import sys
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from st_hpo._definition._costs import COST_PREFIX, MEASURED_WHEN_WEIGHED
from st_hpo._definition._datasets import dataset_parts
from st_hpo._kinds import kind_named, kind_of_model
from st_hpo._kinds._base import ModelKind

__all__ = ["ENCODE_BATCH_SIZE", "ENCODE_INPUTS", "TIMED_PASSES", "PeakMemory", "cost_inputs", "encode_ms",
           "measure_costs", "static_costs"]

logger = logging.getLogger(__name__)

#: ``cost.encode_ms`` is the time to encode this many inputs (fewer are timed and scaled when the set is smaller).
ENCODE_INPUTS = 1000
#: The batch size of the timed passes (``encode``'s default).
ENCODE_BATCH_SIZE = 32
#: Timed passes after the warm-up one; their median is the figure.
TIMED_PASSES = 3

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def static_costs(model: Any, kind: ModelKind | None = None) -> dict[str, float]:
    """``cost.parameters`` (millions) and ``cost.embedding_dim`` (after ``truncate_dim``; left out for a
    CrossEncoder, which returns a score): what a model costs whatever its training, known once it is built."""
    kind = kind or kind_of_model(model) or kind_named("sentence-transformer")
    costs = {f"{COST_PREFIX}parameters": round(sum(p.numel() for p in model.parameters()) / 1e6, 6)}
    dim = kind.embedding_dim(model)
    if dim is not None:
        costs[f"{COST_PREFIX}embedding_dim"] = float(dim)
    return costs


def cost_inputs(kind: ModelKind, dataset: Any, limit: int = ENCODE_INPUTS) -> list[Any]:
    """Up to ``limit`` inputs of ``dataset`` (a Dataset or a mapping of them, taken in order) that
    ``cost.encode_ms`` times, as the kind makes them from the dataset's text columns."""
    inputs: list[Any] = []
    for _, part in dataset_parts(dataset) if dataset is not None else ():
        rows = part[: min(len(part), limit)]  # {column: values}
        columns = [values for values in rows.values() if values and all(isinstance(v, str) for v in values)]
        if columns:
            inputs += kind.cost_inputs(columns, limit - len(inputs))
        if len(inputs) >= limit:
            break
    return inputs


def encode_ms(kind: ModelKind, model: Any, inputs: list[Any]) -> tuple[float, Any]:
    """(milliseconds to encode 1,000 of ``inputs``: the median of :data:`TIMED_PASSES` timed passes after a
    warm-up one, scaled from ``len(inputs)``; the warm-up pass's output)."""
    synchronize = _synchronizer(model)
    output = kind.encode_for_cost(model, inputs, ENCODE_BATCH_SIZE)  # warm-up: kernels, caches, allocator
    seconds = []
    for _ in range(TIMED_PASSES):
        synchronize()
        started = time.perf_counter()
        kind.encode_for_cost(model, inputs, ENCODE_BATCH_SIZE)
        synchronize()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000 * ENCODE_INPUTS / len(inputs), output


def _device(model: Any) -> Any:
    device = getattr(model, "device", None)
    if device is None:
        device = next(model.parameters()).device
    return device


def _synchronizer(model: Any) -> Any:
    """What waits for the model's device to finish its queued work (nothing to wait for on the CPU)."""
    import torch

    device = _device(model)
    if getattr(device, "type", str(device)) == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


@dataclasses.dataclass
class PeakMemory:
    """The trial's peak memory: started at the trial's start (:meth:`start`), read at its end (:meth:`peak_mb`)."""

    rss_start_kb: int | None = None
    hwm_reset: bool = False

    @classmethod
    def start(cls) -> PeakMemory:
        """Note the process's resident memory now and make its peak start from here (Linux)."""
        try:
            _CLEAR_REFS.write_text("5")  # "5" resets the peak resident set size (VmHWM) to the current one
            reset = True
        except OSError:
            reset = False
        return cls(rss_start_kb=_status_kb("VmRSS"), hwm_reset=reset)

    def peak_mb(self, model: Any) -> float | None:
        """The peak GPU reserved memory when ``model`` is on a GPU, else the resident memory's growth; MB."""
        if getattr(_device(model), "type", "") == "cuda":
            cuda = sys.modules["torch"].cuda
            return cuda.max_memory_reserved() / 2**20
        peak = _status_kb("VmHWM") if self.hwm_reset else _max_rss_kb()
        if peak is None or self.rss_start_kb is None:
            return None
        return max(peak - self.rss_start_kb, 0) / 1024


def _status_kb(field: str) -> int | None:
    """A ``kB`` figure of ``/proc/self/status`` (None where there is none)."""
    try:
        match = re.search(rf"^{field}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _max_rss_kb() -> int | None:
    """The process's lifetime peak resident memory in kB (``ru_maxrss``: bytes on macOS)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def measure_costs(kind: ModelKind, model: Any, inputs: Callable[[], list[Any]], *, train_seconds: float,
                  memory: PeakMemory, metrics: dict[str, Any], weighed: Collection[str] = (),
                  timed: Mapping[str, float] | None = None) -> dict[str, float]:
    """The costs of a trained trial model (see the module docstring): ``{"cost.parameters": ..., ...}``.

    ``inputs``: makes the inputs to pass the model over (:func:`cost_inputs`; none: no ``cost.encode_ms``),
    called only when a cost in ``weighed`` (the study's: :func:`~st_hpo._definition._costs.weighed_costs`)
    needs a pass; ``metrics``: the final evaluation's, where a sparse model's evaluator reports its active
    dimensions and FLOPS; ``timed``: what was timed on the trial's model before it trained (its
    ``cost.encode_ms``, which the architecture and input length set, not the weights), kept rather than timed
    again. The peak memory is read first, so that the passes do not count in it.
    """
    costs = {**static_costs(model, kind), f"{COST_PREFIX}train_seconds": round(float(train_seconds), 3)}
    peak = memory.peak_mb(model)
    if peak is not None:
        costs[f"{COST_PREFIX}peak_memory_mb"] = round(peak, 1)
    costs.update(timed or {})
    passes = {name for name in weighed if name in MEASURED_WHEN_WEIGHED} - set(timed or {})
    sparsity = kind.sparsity_costs(metrics, None)  # as the evaluator reported them: no pass
    if not passes - {f"{COST_PREFIX}{name}" for name in sparsity}:
        return {**costs, **_rounded(sparsity)}
    texts, output = inputs(), None
    if not texts:
        logger.warning("no text in the eval set to pass the model over: the trial has no %s",
                       " or ".join(sorted(passes)))
    elif f"{COST_PREFIX}encode_ms" in passes:
        ms, output = encode_ms(kind, model, texts)
        costs[f"{COST_PREFIX}encode_ms"] = round(ms, 3)
    else:  # a sparse model's active dimensions or FLOPS, which its evaluator did not report: one untimed pass
        output = kind.encode_for_cost(model, texts, ENCODE_BATCH_SIZE)
    if output is not None:
        sparsity = kind.sparsity_costs(metrics, output)
    return {**costs, **_rounded(sparsity)}


def _rounded(sparsity: dict[str, float]) -> dict[str, float]:
    return {f"{COST_PREFIX}{name}": round(float(value), 4) for name, value in sparsity.items()}
