"""Out of GPU memory: a result the sampler learns from, and GradCache losses that fit their mini-batches.

A trial that raises ``torch.OutOfMemoryError`` is recorded as out of memory: its Optuna trial gets the
infeasible constraint ``st_hpo.out_of_memory`` (``Trial.set_constraint``, Optuna's public constraints
mechanism) and is told as PRUNED, because TPE reads constraints only from COMPLETE and PRUNED trials (a
FAIL trial is skipped entirely). TPE puts an infeasible trial among the bad ones, so it proposes that
region less. st-hpo itself never takes such a trial for a result (see :mod:`st_hpo._tracking._census`).

A GradCache loss (``Cached*``) bounds memory by its ``mini_batch_size``, which changes neither the
gradients nor the result. When a training step runs out of memory, :class:`MiniBatchFitter` restores the
step's starting point (RNG state and accumulated gradients), halves the mini-batch (down to 1) and runs
the step again at the sampled batch size. The worker remembers the size that fitted per
(batch size, sequence length), so later trials start there.

Between trials, :func:`release_memory` gives the CUDA caching allocator's blocks back (and says when the GPU
is in an error state), and :func:`reset_gpu_peak` / :func:`peak_gpu_memory` measure each trial's peak.
"""

from __future__ import annotations

import gc
import logging
import sys
from typing import Any

from st_hpo._tracking._schema import MINI_BATCH_ATTR, OUT_OF_MEMORY_ATTR

__all__ = ["OUT_OF_MEMORY_ATTR", "MiniBatchFitter", "cached_losses", "cuda_in_use", "free_memory",
           "is_out_of_memory_error", "mark_out_of_memory", "nothing_fits", "out_of_memory_text", "peak_gpu_memory",
           "release_memory", "reset_gpu_peak", "shape_key"]

logger = logging.getLogger(__name__)

#: A worker whose last this many trials all ran out of memory stops: the sampler has had every chance to
#: steer away, so nothing in the space seems to fit (``max_failures_in_a_row`` never counts them).
OUT_OF_MEMORY_IN_A_ROW = 50


def is_out_of_memory_error(exc: BaseException | None) -> bool:
    """True when ``exc``, or an exception it was raised from, is torch's out-of-memory error."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    kinds = tuple({getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError})
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def out_of_memory_text(exc: BaseException) -> str:
    """The trial's error: ``out of memory: <the failed allocation>`` (torch's message, e.g. "CUDA out of
    memory. Tried to allocate 2.00 GiB ...")."""
    return f"out of memory: {str(exc).strip() or type(exc).__name__}"


def nothing_fits(in_a_row: int, last_error: str | None) -> str | None:
    """Why a worker stops after ``in_a_row`` out-of-memory trials one after the other, or None."""
    if in_a_row < OUT_OF_MEMORY_IN_A_ROW:
        return None
    return (f"the last {in_a_row} trials all ran out of memory (the last: {last_error}); check what fits with "
            "`st-hpo validate STUDY --probe-memory`, then shrink the space's batch sizes or sequence lengths")


def mark_out_of_memory(trial: Any) -> None:
    """Record on the (running) trial that it ran out of memory, before it is told as PRUNED."""
    trial.set_user_attr(OUT_OF_MEMORY_ATTR, True)
    trial.set_constraint(OUT_OF_MEMORY_ATTR, 1.0)


def cached_losses(loss: Any) -> list[Any]:
    """The GradCache losses in ``loss`` (a dict of losses, a wrapper such as MatryoshkaLoss around one):
    those with an int ``mini_batch_size`` that cache gradients (``Cached*`` losses of every kind). A loss
    that packs mini-batches by ``mini_batch_num_tokens`` is left out: its ``mini_batch_size`` does not
    bound its memory."""
    found: list[Any] = []
    for part in loss.values() if isinstance(loss, dict) else [loss]:
        seen = 0
        while part is not None and seen < 8:
            caches = getattr(part, "uses_gradient_cache", None) is True or type(part).__name__.startswith("Cached")
            size = getattr(part, "mini_batch_size", None)
            if caches and isinstance(size, int) and not isinstance(size, bool) \
                    and getattr(part, "mini_batch_num_tokens", None) is None:
                found.append(part)
                break
            part, seen = getattr(part, "loss", None), seen + 1
    return found


class MiniBatchFitter:
    """Lowers the mini-batch of a trial's GradCache losses when a training step runs out of memory.

    ``remembered`` maps (batch size, max sequence length) to the mini-batch that fitted; it lives as long
    as the worker process, so the next trials of that shape start from it.
    """

    def __init__(self, losses: list[Any], remembered: dict[tuple[Any, Any], int], key: tuple[Any, Any], *,
                 adjust: bool = True) -> None:
        self.losses, self.remembered, self.key, self.adjust = losses, remembered, key, adjust
        known = remembered.get(key) if adjust else None
        if known is not None:
            for loss in losses:
                loss.mini_batch_size = min(loss.mini_batch_size, known)

    @property
    def mini_batch_size(self) -> int | None:
        """The smallest mini-batch of the trial's GradCache losses now (None: it has none)."""
        return min((loss.mini_batch_size for loss in self.losses), default=None)

    def wrap(self, trainer: Any) -> None:
        """Make ``trainer.training_step`` retry a step that ran out of memory with halved mini-batches (nothing
        to do without a GradCache loss, or with ``Study(adjust_mini_batch=False)``)."""
        if not self.adjust or not self.losses:
            return
        step = trainer.training_step

        def training_step(model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            while True:
                start = _StepStart(model)
                try:
                    return step(model, inputs, *args, **kwargs)
                except Exception as exc:
                    if not is_out_of_memory_error(exc) or not self._halve(str(exc)):
                        raise
                start.restore()
                del start
                free_memory()

        trainer.training_step = training_step

    def _halve(self, why: str) -> bool:
        """Halve every GradCache loss's mini-batch; False when all are at 1 already (nothing left to try)."""
        if all(loss.mini_batch_size <= 1 for loss in self.losses):
            return False
        for loss in self.losses:
            loss.mini_batch_size = max(1, loss.mini_batch_size // 2)
        self.remembered[self.key] = self.mini_batch_size
        logger.info("out of memory in a training step (%s); mini_batch_size lowered to %d and the step run again",
                    why.splitlines()[0][:200] if why else "", self.mini_batch_size)
        return True

    def record(self, trial: Any) -> None:
        """Keep the mini-batch the trial trained with on the trial (its run's tag when the run ends)."""
        size = self.mini_batch_size
        if size is not None:
            trial.set_user_attr(MINI_BATCH_ATTR, size)


class _StepStart:
    """A training step's starting point: the RNG states, and the gradients accumulated by earlier steps of
    a gradient accumulation (copied only when there are any)."""

    def __init__(self, model: Any) -> None:
        import torch

        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.params = [p for p in model.parameters() if p.requires_grad]
        has_grads = any(p.grad is not None for p in self.params)
        self.grads = [None if p.grad is None else p.grad.detach().clone() for p in self.params] if has_grads else None

    def restore(self) -> None:
        import torch

        for i, param in enumerate(self.params):
            param.grad = None if self.grads is None else self.grads[i]
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def free_memory() -> None:
    """Collect what a failed step or trial left, and give the CUDA caching allocator's blocks back."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def shape_key(args: Any, model: Any) -> tuple[Any, Any]:
    """What decides a GradCache loss's memory per mini-batch besides the model: (batch size, max sequence
    length)."""
    length = getattr(model, "max_seq_length", None) or getattr(model, "max_length", None)
    return int(args.per_device_train_batch_size), length


def cuda_in_use() -> Any:
    """``torch.cuda`` when this process has initialised CUDA (it trains on a GPU), else None."""
    torch = sys.modules.get("torch")
    return torch.cuda if torch is not None and torch.cuda.is_initialized() else None


def release_memory(*, unfreeze: bool = False) -> str | None:
    """Free what the trial allocated, the CUDA cache included; returns the GPU's error if it has one.

    After a device-side assert (an index out of range in a CUDA kernel) the CUDA context of the process
    is broken for good, and ``empty_cache`` raises the sticky error.
    """
    gc.collect()  # the trial's cycles (trainer, model copy, optimizer): allocated after freeze_for_trial()
    if unfreeze:
        gc.unfreeze()
    cuda = cuda_in_use()
    if cuda is None:
        return None
    try:
        cuda.empty_cache()
    except RuntimeError as exc:  # torch.AcceleratorError is one
        return f"{type(exc).__name__}: {exc}"
    return None


def reset_gpu_peak() -> None:
    """Start the trial's peak GPU memory from what the process holds now (not validation's or the last trial's)."""
    cuda = cuda_in_use()
    if cuda is not None:
        cuda.reset_peak_memory_stats()


def peak_gpu_memory() -> dict[str, float]:
    """The trial's peak GPU memory in MiB: allocated by tensors, and reserved by PyTorch's caching allocator
    (what the GPU really had to hold: the figure to size ``--trials-per-gpu`` by)."""
    cuda = cuda_in_use()
    if cuda is None:
        return {}
    return {"peak_gpu_memory_mb": cuda.max_memory_allocated() / 2**20,
            "peak_gpu_reserved_mb": cuda.max_memory_reserved() / 2**20}
