"""The trainer callback that reports a trial's evaluations to Optuna (for pruning) and MLflow (curves)."""

from __future__ import annotations

import logging
import math
from typing import Any

from transformers import TrainerCallback

__all__ = ["TrialReporter"]

logger = logging.getLogger(__name__)


class TrialReporter(TrainerCallback):
    """Reports the objective at every evaluation and decides on pruning; logs curves to the trial's run.

    One instance per trial: it holds only that trial's state.

    Args:
        trial: the Optuna trial being trained.
        objective_key: the trainer's metric key of the objective, e.g. ``eval_sts-dev_spearman_cosine``.
        log_metrics: ``(metrics, step) -> None`` writes metrics to the trial's run (errors are the
            caller's to absorb).
    """

    def __init__(self, trial: Any, objective_key: str, log_metrics: Any) -> None:
        self.trial = trial
        self.objective_key = objective_key
        self.log_metrics = log_metrics
        self.last_value: float | None = None
        self.last_step: int | None = None
        self.warmup_steps: int | None = None
        self.max_steps: int | None = None
        self.reported_steps: set[int] = set()
        self.allow_prune = True  # off for the final evaluation after training

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.max_steps = int(state.max_steps)
        self.warmup_steps = int(args.get_warmup_steps(state.max_steps))
        self.log_metrics({"warmup_steps_effective": self.warmup_steps, "max_steps": self.max_steps}, 0)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not logs:
            return
        curves = {}
        if "loss" in logs:
            curves["train_loss"] = logs["loss"]
        if "learning_rate" in logs:
            curves["learning_rate"] = logs["learning_rate"]
        if curves:
            self.log_metrics(curves, state.global_step)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None,
                    **kw: Any) -> None:
        import optuna

        metrics = metrics or {}
        if self.objective_key not in metrics:
            return
        value = float(metrics[self.objective_key])
        step = int(state.global_step)
        self.last_value, self.last_step = value, step
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not k.endswith("_runtime")}
        self.log_metrics({**numeric, "objective": value}, step)
        if math.isnan(value):
            raise optuna.TrialPruned(f"objective is NaN at step {step}")
        if step not in self.reported_steps:
            self.trial.report(value, step)
            self.reported_steps.add(step)
            if self.allow_prune and self.trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} with {self.objective_key}={value:.6g}")
