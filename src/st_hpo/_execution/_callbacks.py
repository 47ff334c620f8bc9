"""The trainer callback that reports a trial's evaluations to Optuna (for pruning) and MLflow (curves).

Each trial's :class:`TrialReporter` evaluates at the trainer steps of the study's evaluation fractions
(:mod:`st_hpo._definition._schedule`) for its own step count and reports at the fraction's per-mille, so every
trial of a study reports at the same Optuna steps whatever its batch size or dataset size.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from transformers import TrainerCallback

from st_hpo._definition._schedule import PROGRESS_SCALE, progress_step
from st_hpo._interrupts import stop_requested
from st_hpo._tracking._schema import DEVICE_ATTR, MAX_STEPS_KEY

__all__ = ["DEVICE_ATTR", "Diverged", "TrialReporter", "training_devices"]

logger = logging.getLogger(__name__)




def training_devices(model: Any, optimizer: Any) -> dict[str, str]:
    """The devices of ``model``'s parameters and of ``optimizer``'s state tensors, as :data:`DEVICE_ATTR` says."""
    import torch

    def joined(tensors: Any) -> str:
        # 0-dim tensors left out: torch's AdamW keeps its step counter on the CPU beside CUDA moments
        # (unless fused or capturable), and that says nothing about where the training ran
        return ",".join(sorted({str(t.device) for t in tensors if isinstance(t, torch.Tensor) and t.dim() > 0})) \
            or "none"

    params = model.parameters() if model is not None else ()
    states = getattr(optimizer, "state", None) or {}  # accelerate's AcceleratedOptimizer passes it through
    return {"model": joined(params),
            "optimizer_state": joined(v for state in states.values() for v in state.values())}


class Diverged(Exception):  # noqa: N818 - reads as the trial's fate: "diverged: training loss nan at step 12"
    """A trial's training loss or objective became NaN or infinite: the trial fails (it is not pruned)."""


class TrialReporter(TrainerCallback):
    """Reports the objective at every evaluation and decides on pruning; logs curves to the trial's run.

    One instance per trial: it holds only that trial's state. Curves (training loss, learning rate) are
    buffered and written in one batch per evaluation and at the end of training, not one write per step.

    Args:
        trial: the Optuna trial being trained.
        objective_key: the trainer's metric key of the objective, e.g. ``eval_sts-dev_spearman_cosine``.
        log_series: ``(entries) -> None`` writes ``[(metrics, step), ...]`` to the trial's run (errors are
            the caller's to absorb).
        on_subset: the evaluations during training run on a subset of the eval set. Their values go to the
            pruner and to MLflow as ``objective_subset`` and ``subset_<metric>``; call :meth:`final_on_full`
            before the final evaluation on the whole set. Otherwise the values are ``objective_intermediate``;
            ``objective`` is the final value of a complete trial only, logged when it ends.
        on_progress: called at every evaluation with ``(step, max_steps, value, subset)`` (progress lines).
        fractions: the study's evaluation grid (:func:`st_hpo._definition._schedule.evaluation_fractions`): the trial evaluates exactly at
            the trainer steps of these fractions of its training and reports at their per-mille (on a subset,
            not at the end: the final evaluation on the whole set is the caller's). Empty: the trainer's own
            schedule decides, and values are reported at the per-mille of their step.
        pruning: in a multi-objective study, what reports and decides instead of the Optuna trial (which
            refuses to): a :class:`~st_hpo._execution._first_objective.FirstObjectivePruning`.

    A NaN or infinite training loss or objective raises :class:`Diverged`, which ends the trial. The time
    spent in evaluations (from :meth:`evaluation_starts` to the trainer's ``on_evaluate``) is summed in
    ``eval_seconds``.
    """

    def __init__(self, trial: Any, objective_key: str, log_series: Any, *, on_subset: bool = False,
                 on_progress: Any = None, fractions: tuple[float, ...] = (), pruning: Any = None) -> None:
        self.trial = trial
        #: a multi-objective study's reports and pruning decisions (:mod:`st_hpo._execution._first_objective`);
        #: None: Optuna's own (``trial.report``, ``trial.should_prune``)
        self.pruning = pruning
        self.on_progress = on_progress  # (step, max_steps, value, subset) -> None, for the terminal
        self.on_subset = on_subset
        self.objective_key = objective_key
        self.log_series = log_series
        self.last_value: float | None = None
        self.last_metrics: dict[str, Any] = {}  #: every metric of the last evaluation that reported the objective
        self.last_step: int | None = None
        self.warmup_steps: int | None = None
        self.max_steps: int = 1
        self.reported: set[int] = set()
        self.allow_prune = True  # off for the final evaluation after training
        self.final_on_full_set = False  # the final evaluation runs on a larger set than the pruner's values
        self._pending: list[tuple[dict[str, float], int]] = []
        self.fractions = fractions
        self.grid: dict[int, list[int]] = {}  #: trainer step -> the per-mille grid points evaluated there
        self.eval_seconds = 0.0  #: time spent in evaluations
        self._eval_started: float | None = None
        self._state: Any = None
        self._hook: Any = None
        self.devices: dict[str, str] | None = None  #: :func:`training_devices`, after the first optimizer step
        self._logged_loss = False  #: a ``train_loss`` curve point was logged (logging_steps came round)

    def report(self, value: float, point: int) -> None:
        """Report the objective's ``value`` at ``point`` (per-mille of training) for the pruner."""
        (self.pruning or self.trial).report(value, point)
        self.reported.add(point)

    def final_on_full(self) -> None:
        """The next evaluation is the final one, on the whole eval set: log it as ``objective``, never prune."""
        self.on_subset = False
        self.allow_prune = False
        self.final_on_full_set = True
        self.last_value = None

    def flush(self) -> None:
        if self._pending:
            entries, self._pending = self._pending, []
            self.log_series(entries)

    def watch_loss(self, loss: Any) -> None:
        """Check every training forward of ``loss`` for a NaN or infinite value (the trainer's logged loss
        cannot tell: ``logging_nan_inf_filter``, on by default, replaces such losses by the running mean)."""
        self._hook = loss.register_forward_hook(self._check_loss)

    def _check_loss(self, module: Any, inputs: Any, output: Any) -> None:
        import torch

        if not torch.is_grad_enabled() or self._state is None:  # an evaluation's loss: see the objective
            return
        values = output.values() if isinstance(output, dict) else [output]
        for value in values:
            if isinstance(value, torch.Tensor) and not bool(torch.isfinite(value.detach()).all()):
                bad = value.detach()[~torch.isfinite(value.detach())].reshape(-1)[0]
                raise Diverged(f"diverged: training loss {float(bad)} at step {self._state.global_step + 1}")

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._state = state
        self.max_steps = max(int(state.max_steps), 1)
        self.grid = {}
        # on a subset, the end of training is evaluated once, on the whole set, after train(): a subset
        # evaluation there would decide nothing (st-hpo never prunes at the end)
        fractions = [f for f in self.fractions if f < 1.0] if self.on_subset else self.fractions
        for fraction in fractions:
            step = min(max(round(fraction * self.max_steps), 1), self.max_steps)
            per_mille = round(PROGRESS_SCALE * fraction)
            if all(per_mille not in points for points in self.grid.values()):
                self.grid.setdefault(step, []).append(per_mille)
        self.warmup_steps = int(args.get_warmup_steps(state.max_steps))
        self.trial.set_user_attr(MAX_STEPS_KEY, self.max_steps)
        self._pending.append(({"warmup_steps_effective": self.warmup_steps, "max_steps": self.max_steps}, 0))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if stop_requested():  # its KeyboardInterrupt was lost (see st_hpo._interrupts): stop here
            raise KeyboardInterrupt("stop requested")
        # runs after the trainer's DefaultFlowCallback: on a grid, st-hpo alone decides when to evaluate
        if self.devices is None:  # after the first optimizer step: its state tensors exist by now
            self.devices = training_devices(kwargs.get("model"), kwargs.get("optimizer"))
            self.trial.set_user_attr(DEVICE_ATTR, self.devices)
        if self.grid:
            control.should_evaluate = state.global_step in self.grid
        if control.should_evaluate:
            self.evaluation_starts()

    def evaluation_starts(self) -> None:
        """An evaluation starts now: its time, up to :meth:`on_evaluate`, goes to ``eval_seconds``."""
        self._eval_started = time.perf_counter()

    def evaluation_ends(self) -> None:
        """The running evaluation (if any) ends now: its time so far goes to ``eval_seconds``."""
        if self._eval_started is not None:
            self.eval_seconds += time.perf_counter() - self._eval_started
            self._eval_started = None

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.grid:  # eval_strategy="epoch": the epoch's last step is a grid point, evaluated in on_step_end
            control.should_evaluate = False
        elif control.should_evaluate and self._eval_started is None:  # the trainer's own epoch evaluation
            self.evaluation_starts()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        loss = (logs or {}).get("loss")
        if isinstance(loss, (int, float)) and not math.isfinite(loss):
            raise Diverged(f"diverged: training loss {loss} at step {state.global_step}")
        curves = {}
        for key, name in (("loss", "train_loss"), ("learning_rate", "learning_rate")):
            if logs and key in logs:
                curves[name] = logs[key]
        self._logged_loss = self._logged_loss or "train_loss" in curves
        end_mean = (logs or {}).get("train_loss")  # the trainer's mean over training, logged once at its end
        if not self._logged_loss and isinstance(end_mean, (int, float)):
            curves["train_loss"] = end_mean  # logging_steps beyond the trial's steps: no curve, this point
        if curves:
            self._pending.append((curves, state.global_step))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.flush()

    def close(self) -> None:
        """Flush the curves and stop watching the loss (the trial has ended, however it ended)."""
        self.flush()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None,
                    **kw: Any) -> None:
        import optuna

        self.evaluation_ends()
        metrics = metrics or {}
        if self.objective_key not in metrics:
            return
        value = float(metrics[self.objective_key])
        step = int(state.global_step)
        self.last_value, self.last_step = value, step
        self.last_metrics = dict(metrics)
        # no eval dataset (the evaluator alone): the trainer's eval speeds are 0.0, which would only mislead
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not k.endswith("_runtime")
                   and not (k.endswith("_per_second") and not v)}
        if self.on_subset:
            numeric = {f"subset_{k}" if k.startswith("eval_") else k: v for k, v in numeric.items()}
            self._pending.append(({**numeric, "objective_subset": value}, step))
        elif self.final_on_full_set:  # `objective` itself is the trial's final value, logged when it completes
            self._pending.append((numeric, step))
        else:
            self._pending.append(({**numeric, "objective_intermediate": value}, step))
        self.flush()
        if self.on_progress is not None:
            self.on_progress(step, self.max_steps, value, self.on_subset)
        if not math.isfinite(value):
            raise Diverged(f"diverged: objective {value} at step {step}")
        if self.final_on_full_set:
            return  # not comparable with the subset values the pruner holds; it is the trial's value
        points = [p for p in self.grid.get(step, [progress_step(step, self.max_steps)]) if p not in self.reported]
        if not points:
            return
        for point in points:  # several grid points on one step: a trial with fewer steps than grid points
            self.report(value, point)
        progress = max(points)
        # at the end of training the trial has spent all its steps: pruning it then would only lose its value
        if self.allow_prune and progress < PROGRESS_SCALE and (self.pruning or self.trial).should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} ({progress / 10:.0f}% of training) with "
                                     f"{self.objective_key}={value:.6g}")
