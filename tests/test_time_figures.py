"""A trial's time figures add up, and the parent run's totals sum them over the same trials (issue 29, item 9)."""

from __future__ import annotations

import signal
import time

import pytest
import torch
from sentence_transformers.sentence_transformer.losses import CoSENTLoss

import st_hpo
from tests.conftest import make_pairs
from tests.helpers import load_trials, mlflow_runs


class _CtrlCWhenArmed(CoSENTLoss):
    """CoSENT that, once armed, sends this process a real SIGINT (a Ctrl-C) at the third training step of
    the next trial to train: after two of its evaluations, in the middle of its training."""

    armed = False

    def __init__(self, model) -> None:
        super().__init__(model)
        self.steps = 0

    def forward(self, *args, **kwargs):
        loss = super().forward(*args, **kwargs)
        if torch.is_grad_enabled():
            self.steps += 1
            if _CtrlCWhenArmed.armed and self.steps == 3:
                _CtrlCWhenArmed.armed = False
                signal.raise_signal(signal.SIGINT)
        return loss


#: Seconds each evaluation sleeps: a floor on evaluation time that no machine's speed or load changes.
EVAL_SLEEP = 0.3


def _sleepy_evaluator(ds):
    """The tests' STS evaluator, each call at least EVAL_SLEEP seconds long."""
    from tests.conftest import sts_evaluator

    inner = sts_evaluator(ds)

    class Sleepy(type(inner)):
        def __call__(self, *args, **kwargs):
            time.sleep(EVAL_SLEEP)
            return super().__call__(*args, **kwargs)

    inner.__class__ = Sleepy
    return inner


@pytest.mark.slow
def test_train_and_eval_seconds_add_up_within_each_trial_and_the_totals_count_the_same_trials(make_study, tmp_path):
    from datasets import Dataset

    # evaluations on 500 rows at every step: most of a trial is spent evaluating
    study = make_study(eval_dataset=Dataset.from_dict(make_pairs(500, seed=2)), loss=_CtrlCWhenArmed,
                       intermediate_eval_rows=None, evaluator=_sleepy_evaluator,
                       args=dict(num_train_epochs=1, per_device_train_batch_size=16, learning_rate=5e-5,
                                 eval_strategy="steps", eval_steps=1, logging_steps=1, save_strategy="no",
                                 disable_tqdm=True, seed=7, use_cpu=True),
                       n_trials=2)
    first = st_hpo.run_study(study, output_dir=tmp_path, n_trials=1, progress=False)
    assert first.n_complete == 1
    _CtrlCWhenArmed.armed = True
    stopped = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert stopped.interrupted and not _CtrlCWhenArmed.armed
    done = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert done.budget_met

    trials = load_trials(tmp_path, "tiny")
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[1].user_attrs["st_hpo.error"].startswith("interrupted")
    client, parents, runs = mlflow_runs(tmp_path, "tiny")
    for t, run in zip(trials, runs, strict=True):
        figures = {name: t.user_attrs[f"st_hpo.{name}"] for name in ("trial_seconds", "train_seconds", "eval_seconds")}
        assert all(v > 0 for v in figures.values()), (t.number, figures)  # the interrupted trial's too
        # training excludes the evaluations: the two parts fit in the trial
        parts = figures["train_seconds"] + figures["eval_seconds"]
        assert parts <= figures["trial_seconds"] + 1e-3, (t.number, figures)
        for name, value in figures.items():  # the run shows what the trial recorded
            assert run.data.metrics[name] == pytest.approx(value, abs=1e-3), (t.number, name)
    # a complete trial evaluates at each of its 4 steps, each evaluation sleeping EVAL_SLEEP: that time is all in
    # eval_seconds, and none of it in train_seconds (whatever the machine's speed or load)
    for t in (trials[0], trials[2]):
        assert t.user_attrs["st_hpo.eval_seconds"] >= 4 * EVAL_SLEEP, t.user_attrs
        assert t.user_attrs["st_hpo.train_seconds"] <= t.user_attrs["st_hpo.trial_seconds"] - 4 * EVAL_SLEEP

    metrics = parents[0].data.metrics
    for name in ("trial_seconds", "train_seconds", "eval_seconds"):  # every trial that ended, each figure alike
        assert metrics[f"{name}_total"] == pytest.approx(sum(t.user_attrs[f"st_hpo.{name}"] for t in trials),
                                                         abs=1e-2), name
    assert metrics["train_seconds_total"] + metrics["eval_seconds_total"] <= metrics["trial_seconds_total"] + 1e-2
