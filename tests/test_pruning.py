"""Pruning compares like with like (a shared evaluation grid); a diverged trial is a failure, not pruned."""

from __future__ import annotations

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from sentence_transformers.sentence_transformer.losses import CoSENTLoss

import st_hpo
from tests.conftest import make_pairs
from tests.helpers import load_trials, mlflow_runs

#: learning rates that select what the test's loss does (the space is a choice between them)
GOOD, ALSO_GOOD, ANTI = 1e-3, 8e-4, 9e-4
NAN_LOSS, NAN_WEIGHTS = 7e-4, 6e-4


class _AntiCoSENT(CoSENTLoss):
    """Learns the opposite of the scores: a configuration whose objective only gets worse."""

    def forward(self, *args, **kwargs):
        return -super().forward(*args, **kwargs)


class _Poisoned(CoSENTLoss):
    """At training step ``at``: a NaN loss (``mode="loss"``), or a finite loss with NaN gradients, which
    leaves NaN weights and so a NaN objective at the evaluation after that last step (``mode="weights"``)."""

    def __init__(self, model, *, mode: str, at: int) -> None:
        super().__init__(model)
        self.mode, self.at, self.calls = mode, at, 0

    def forward(self, *args, **kwargs):
        loss = super().forward(*args, **kwargs)
        if not torch.is_grad_enabled():
            return loss
        self.calls += 1
        if self.calls != self.at:
            return loss
        if self.mode == "loss":
            return loss * float("nan")
        return loss + 0.0 * torch.sqrt(loss - loss)  # d sqrt(x)/dx at 0 is inf; times 0: NaN gradients


def _loss(model, params):
    lr = params["learning_rate"]
    if lr == ANTI:
        return _AntiCoSENT(model)
    if lr in (NAN_LOSS, NAN_WEIGHTS):
        return _Poisoned(model, mode="loss" if lr == NAN_LOSS else "weights", at=3 if lr == NAN_LOSS else 4)
    return CoSENTLoss(model)


@pytest.mark.slow
def test_trials_of_different_batch_sizes_report_at_the_same_steps_and_prune_each_other(make_study, tmp_path):
    from datasets import Dataset

    # 100 rows: 7, 5 and 4 steps at batch 16, 24 and 32; transformers' own schedule for eval_steps=0.25
    # (every ceil(0.25 * steps) steps) would report at 286/571/857, 400/800 and 250/500/750: never together
    study = make_study(
        train_dataset=Dataset.from_dict(make_pairs(100, seed=1)), loss=_loss, n_trials=3,
        args={**make_study().args, "eval_steps": 0.25},
        space={"learning_rate": CategoricalDistribution([GOOD, ANTI]),
               "per_device_train_batch_size": CategoricalDistribution([16, 24, 32])},
        enqueue=[{"learning_rate": GOOD, "per_device_train_batch_size": 16},
                 {"learning_rate": GOOD, "per_device_train_batch_size": 24},
                 {"learning_rate": ANTI, "per_device_train_batch_size": 32}],
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2),
    )
    st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    trials = load_trials(tmp_path, "tiny")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert [t.user_attrs["st_hpo.max_steps"] for t in trials] == [7, 5, 4]
    assert set(trials[0].intermediate_values) == set(trials[1].intermediate_values) == {250, 500, 750, 1000}
    # the batch-32 trial was compared with the batch-16 and batch-24 ones at 25% of training, and pruned there
    assert list(trials[2].intermediate_values) == [250]
    assert "25% of training" in trials[2].user_attrs["st_hpo.error"]
    _, _, runs = mlflow_runs(tmp_path, "tiny")  # the MLflow run says where it was pruned too
    assert runs[2].info.status == "KILLED" and "25% of training" in runs[2].data.tags["st_hpo.error"]


@pytest.mark.slow
def test_a_diverged_trial_fails_with_its_reason_and_does_not_count(make_study, tmp_path):
    study = make_study(
        loss=_loss, n_trials=1, pruner="none", sampler="random",
        space={"learning_rate": CategoricalDistribution([NAN_LOSS, NAN_WEIGHTS, GOOD])},
        enqueue=[{"learning_rate": NAN_LOSS}, {"learning_rate": NAN_WEIGHTS}, {"learning_rate": GOOD}],
    )
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    trials = load_trials(tmp_path, "tiny")
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "COMPLETE"]
    assert result.n_complete == 1, "the diverged trials do not count towards the budget"
    assert trials[0].user_attrs["st_hpo.error"] == "diverged: training loss nan at step 3"
    assert trials[1].user_attrs["st_hpo.error"] == "diverged: objective nan at step 4"
    for t in trials[:2]:
        assert t.user_attrs["st_hpo.diverged"] is True
        assert t.constraints == {"st_hpo.diverged": 1.0}
    assert trials[2].constraints == {} and "st_hpo.diverged" not in trials[2].user_attrs
    client, parents, runs = mlflow_runs(tmp_path, "tiny")
    assert [r.info.status for r in runs] == ["FAILED", "FAILED", "FINISHED"]
    assert runs[0].data.tags["st_hpo.error"] == "diverged: training loss nan at step 3"
    # the cost of the objective: time in evaluations per trial and in total
    assert all(t.user_attrs["st_hpo.eval_seconds"] > 0 for t in trials[1:])
    assert "eval_seconds" in runs[2].data.metrics and "train_seconds" in runs[2].data.metrics
    assert 0 < runs[2].data.metrics["eval_seconds"]
    assert parents[0].data.metrics["eval_seconds_total"] == pytest.approx(
        sum(t.user_attrs["st_hpo.eval_seconds"] for t in trials), abs=1e-3)
    for total, attr in (("trial_seconds_total", "st_hpo.trial_seconds"), ("train_seconds_total", "st_hpo.train_seconds")):
        assert parents[0].data.metrics[total] == pytest.approx(sum(t.user_attrs[attr] for t in trials), abs=1e-2)
    assert 0 < parents[0].data.metrics["train_seconds_total"] < parents[0].data.metrics["trial_seconds_total"]
    assert "base_model_objective" in parents[0].data.metrics  # the score to beat, and where the best is kept
    assert parents[0].data.tags["st_hpo.best_model_host"] and parents[0].data.tags["st_hpo.best_model_dir"]


def test_tpe_does_not_learn_from_failed_trials_even_with_a_constraint():
    """What the sampler does with a diverged trial (FAIL, with the constraint st-hpo sets): Optuna's TPE
    reads only COMPLETE and PRUNED trials, so it proposes exactly what it would without the trial; the
    same constraint on a PRUNED trial would steer it. Pins the Optuna behaviour the README states."""
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}

    def proposals(extra: str | None) -> list[float]:
        study = optuna.create_study(direction="maximize",
                                    sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
        for x in (0.2, 0.4, 0.6):
            study.add_trial(optuna.trial.create_trial(params={"x": x}, distributions=dist, value=x))
        if extra is not None:
            state = optuna.trial.TrialState[extra]
            diverged = optuna.trial.create_trial(params={"x": 0.9}, distributions=dist, state=state,
                                                 intermediate_values={250: 0.9} if extra == "PRUNED" else None)
            diverged.set_constraint("st_hpo.diverged", 1.0)
            study.add_trial(diverged)
        return [study.ask(dist).params["x"] for _ in range(4)]

    assert proposals("FAIL") == proposals(None)
    assert proposals("PRUNED") != proposals(None)


#: trains (barely) with CoSENT, reports at 11% and 33% of training, then its loss turns NaN; and a
#: configuration that scores below it at both points on this data (0.830 and 0.830 against 0.835 and 0.834)
LATE_NAN, BEHIND_EARLY = 1e-5, 5e-4


def _late_nan_loss(model, params):
    if params["learning_rate"] == LATE_NAN:
        return _Poisoned(model, mode="loss", at=12)  # of 18 steps: after the evaluations at steps 2 and 6
    return _loss(model, params)


@pytest.mark.slow
def test_a_trial_that_diverged_after_reporting_does_not_prune_the_next_ones(make_study, tmp_path):
    from datasets import Dataset

    # successive halving at its rungs (11% and 33% of 18 steps); no evaluation cadence of the test's own
    args = {k: v for k, v in make_study().args.items() if k not in ("eval_strategy", "eval_steps")}
    study = make_study(
        train_dataset=Dataset.from_dict(make_pairs(288, seed=1)), loss=_late_nan_loss, n_trials=1, args=args,
        pruner="successive-halving", space={"learning_rate": CategoricalDistribution([LATE_NAN, BEHIND_EARLY])},
        enqueue=[{"learning_rate": LATE_NAN}, {"learning_rate": BEHIND_EARLY}],
    )
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    trials = load_trials(tmp_path, "tiny")
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[0].user_attrs["st_hpo.error"] == "diverged: training loss nan at step 12"
    assert set(trials[0].intermediate_values) == {111, 333}, "it reported at both rungs before it diverged"
    # the failed trial was ahead at the first rung: counted there, it would have pruned trial 1
    assert trials[1].intermediate_values[111] < trials[0].intermediate_values[111]
    assert result.n_complete == 1 and result.best_trial_number == 1 and result.stop_reason is None


def test_a_study_that_ends_without_a_complete_trial_does_not_succeed(study_file, tmp_path, capsys):
    from st_hpo.cli import main

    path = study_file(name="no-result", n_trials=2)
    # a pruner that prunes every trial at its first evaluation: the budget is met with nothing complete
    path.write_text(path.read_text().replace('pruner="median"', "pruner=optuna.pruners.ThresholdPruner(lower=2.0)"))
    out = tmp_path / "out"
    result = st_hpo.run_study(st_hpo.load_study_file(path), output_dir=out, progress=False)
    assert result.budget_met and result.n_complete == 0 and result.n_pruned == 2
    assert result.best_trial_number is None
    assert result.stop_reason == "no trial completed (2 pruned, 0 failed), so the study has no best trial"
    _, parents, runs = mlflow_runs(out, "no-result")
    assert parents[0].info.status == "FAILED" and [r.info.status for r in runs] == ["KILLED", "KILLED"]
    # the CLI: exit 1 and one line that says why and what to do (here: the budget is already met)
    capsys.readouterr()
    assert main(["-q", "run", str(path), "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: no trial completed (2 pruned, 0 failed)")
    assert "a larger --n-trials" in err
