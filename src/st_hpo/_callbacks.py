"""The trainer callback that reports a trial's evaluations to Optuna (for pruning) and MLflow (curves)."""

from __future__ import annotations

import logging
import math
from typing import Any

from transformers import TrainerCallback

__all__ = ["PROGRESS_SCALE", "TrialReporter", "progress_step"]

logger = logging.getLogger(__name__)


#: Optuna's intermediate values are indexed by training progress in per-mille (0..1000), not by the raw
#: step: trials with different batch sizes (so different step counts) are compared at the same fraction
#: of their training, which is what the pruners assume.
PROGRESS_SCALE = 1000


def progress_step(global_step: int, max_steps: int) -> int:
    """The Optuna step (per-mille of training done) of a trainer step."""
    return round(PROGRESS_SCALE * global_step / max(max_steps, 1))


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
    """

    def __init__(self, trial: Any, objective_key: str, log_series: Any, *, on_subset: bool = False,
                 on_progress: Any = None) -> None:
        self.trial = trial
        self.on_progress = on_progress  # (step, max_steps, value, subset) -> None, for the terminal
        self.on_subset = on_subset
        self.objective_key = objective_key
        self.log_series = log_series
        self.last_value: float | None = None
        self.last_step: int | None = None
        self.warmup_steps: int | None = None
        self.max_steps: int = 1
        self.reported: set[int] = set()
        self.allow_prune = True  # off for the final evaluation after training
        self.final_on_full_set = False  # the final evaluation runs on a larger set than the pruner's values
        self._pending: list[tuple[dict[str, float], int]] = []

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

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.max_steps = max(int(state.max_steps), 1)
        self.warmup_steps = int(args.get_warmup_steps(state.max_steps))
        self.trial.set_user_attr("st_hpo.max_steps", self.max_steps)
        self._pending.append(({"warmup_steps_effective": self.warmup_steps, "max_steps": self.max_steps}, 0))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        curves = {}
        for key, name in (("loss", "train_loss"), ("learning_rate", "learning_rate")):
            if logs and key in logs:
                curves[name] = logs[key]
        if curves:
            self._pending.append((curves, state.global_step))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.flush()

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None,
                    **kw: Any) -> None:
        import optuna

        metrics = metrics or {}
        if self.objective_key not in metrics:
            return
        value = float(metrics[self.objective_key])
        step = int(state.global_step)
        self.last_value, self.last_step = value, step
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
        if math.isnan(value):
            raise optuna.TrialPruned(f"objective is NaN at step {step}")
        if self.final_on_full_set:
            return  # not comparable with the subset values the pruner holds; it is the trial's value
        progress = progress_step(step, self.max_steps)
        if progress in self.reported:
            return
        self.trial.report(value, progress)
        self.reported.add(progress)
        # at the end of training the trial has spent all its steps: pruning it then would only lose its value
        if self.allow_prune and progress < PROGRESS_SCALE and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} ({progress / 10:.0f}% of training) with "
                                     f"{self.objective_key}={value:.6g}")
