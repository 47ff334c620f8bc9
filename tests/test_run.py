"""Running studies in-process on the tiny model: real journal storage, real MLflow SQLite store."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

import st_hpo
from tests.helpers import load_trials, mlflow_runs

pytestmark = pytest.mark.slow


def test_three_trials_three_child_runs_under_one_parent(make_study, tmp_path):
    study = make_study(space={
        "learning_rate": FloatDistribution(1e-5, 1e-3, log=True),
        "warmup_ratio": FloatDistribution(0.0, 0.5),
        "batch_sampler": CategoricalDistribution(["batch_sampler", "no_duplicates"]),
    }, pruner="none")
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert (result.n_complete, result.n_pruned, result.n_fail) == (3, 0, 0)
    trials = load_trials(tmp_path, "tiny")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    client, parents, runs = mlflow_runs(tmp_path, "tiny")
    assert len(parents) == 1 and parents[0].info.run_name == "tiny"
    assert len(runs) == 3
    for trial, run in zip(trials, runs, strict=True):
        assert run.info.run_name == f"trial-{trial.number}"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.tags["st_hpo.trial_state"] == "COMPLETE"
        assert run.info.status == "FINISHED"
        for name in ("learning_rate", "warmup_ratio", "batch_sampler"):
            assert name in run.data.params
        assert float(run.data.params["learning_rate"]) == pytest.approx(trial.params["learning_rate"])
        assert run.data.params["batch_sampler"] == trial.params["batch_sampler"]
        assert run.data.metrics["objective"] == pytest.approx(trial.value)
        curve = client.get_metric_history(run.info.run_id, "objective_intermediate")
        assert len(curve) >= 2, "the objective is logged at every evaluation"
        assert len(client.get_metric_history(run.info.run_id, "objective")) == 1, "the final value, once"
        assert client.get_metric_history(run.info.run_id, "train_loss"), "the training loss curve is logged"
        assert run.data.metrics["trial_seconds"] >= run.data.metrics["train_seconds"] > 0
        art = client.download_artifacts(run.info.run_id, "training_args.json", str(tmp_path / f"a{trial.number}"))
        args = json.load(open(art))
        assert args["learning_rate"] == pytest.approx(trial.params["learning_rate"])
        assert args["warmup_ratio"] == pytest.approx(trial.params["warmup_ratio"])
    best = parents[0].data.metrics["best_value"]
    assert best == pytest.approx(max(t.value for t in trials))


def test_a_trial_shorter_than_logging_steps_still_logs_its_training_loss(make_study, tmp_path):
    """transformers' default logging_steps=500 exceeds a short trial's steps: its run gets the mean training
    loss the trainer reports at the end, as ``train_loss`` at the last step."""
    study = make_study(args={**make_study().args, "logging_steps": 500}, n_trials=1, pruner="none")
    st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    client, _, runs = mlflow_runs(tmp_path, "tiny")
    history = client.get_metric_history(runs[0].info.run_id, "train_loss")
    assert len(history) == 1 and math.isfinite(history[0].value)
    assert history[0].step == int(runs[0].data.metrics["max_steps"])
    # with a logged curve, the curve alone: the end-of-training mean is not appended to it
    study = make_study(name="tiny-curve", n_trials=1, pruner="none")  # logging_steps=1: a point per step
    st_hpo.run_study(study, output_dir=tmp_path / "curve", progress=False)
    client, _, runs = mlflow_runs(tmp_path / "curve", "tiny-curve")
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")]
    assert sorted(steps) == list(range(1, int(runs[0].data.metrics["max_steps"]) + 1))


def test_sampled_warmup_ratio_reaches_the_scheduler(make_study, tmp_path):
    study = make_study(space={"warmup_ratio": FloatDistribution(0.2, 0.6)}, n_trials=2, pruner="none")
    st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    client, _, runs = mlflow_runs(tmp_path, "tiny")
    for run in runs:
        ratio = float(run.data.params["warmup_ratio"])
        total = int(run.data.metrics["max_steps"])
        warmup = int(run.data.metrics["warmup_steps_effective"])
        assert warmup == math.ceil(ratio * total) and warmup > 0
        history = sorted(client.get_metric_history(run.info.run_id, "learning_rate"), key=lambda m: m.step)
        peak = max(history, key=lambda m: m.value)
        rising = [m for m in history if m.step < peak.step]  # the logged rate is the one used for that step
        assert len(rising) == warmup, f"the learning rate must rise for {warmup} steps, not {len(rising)}"
        assert history[0].value == 0.0


def test_args_are_cloned_not_mutated_and_losses_are_fresh(make_study, tmp_path):
    seen_losses = []

    def loss(model, params):
        from sentence_transformers.sentence_transformer.losses import CoSENTLoss

        module = CoSENTLoss(model)
        seen_losses.append((module, model))
        return module

    def space(trial):
        values = {"learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True)}
        if trial.number == 0:
            values["max_grad_norm"] = 0.25  # set in one trial only
        return values

    study = make_study(space=space, loss=loss, n_trials=2, pruner="none")
    base_args = dict(study.args)
    st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert dict(study.args) == base_args
    client, _, runs = mlflow_runs(tmp_path, "tiny")
    effective = [json.load(open(client.download_artifacts(r.info.run_id, "training_args.json", str(tmp_path / r.info.run_id))))
                 for r in runs]
    assert effective[0]["max_grad_norm"] == 0.25
    assert effective[1]["max_grad_norm"] == 1.0, "a value set in one trial must not leak into the next"
    assert effective[0]["output_dir"] != effective[1]["output_dir"]
    ids = {id(module) for module, _ in seen_losses[-2:]}
    models = {id(model) for _, model in seen_losses[-2:]}
    assert len(ids) == 2 and len(models) == 2, "every trial gets a new loss and a new model"


class _PruneAfterFirstReport(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return trial.number == 1 and len(trial.intermediate_values) >= 1


def test_pruned_trial_is_pruned_in_optuna_and_killed_in_mlflow(make_study, tmp_path):
    study = make_study(pruner=_PruneAfterFirstReport(), n_trials=3)
    st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    trials = load_trials(tmp_path, "tiny")
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "COMPLETE"]
    _, _, runs = mlflow_runs(tmp_path, "tiny")
    assert [r.info.status for r in runs] == ["FINISHED", "KILLED", "FINISHED"]
    assert runs[1].data.tags["st_hpo.trial_state"] == "PRUNED"


def test_failing_trial_is_recorded_and_the_study_goes_on(make_study, tmp_path):
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    class FailsAtStep3(CoSENTLoss):
        calls = 0

        def forward(self, *args, **kwargs):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("simulated CUDA out of memory")
            return super().forward(*args, **kwargs)

    def loss(model, params):
        return FailsAtStep3(model) if params["learning_rate"] > 1e-4 else CoSENTLoss(model)

    study = make_study(loss=loss, space={"learning_rate": CategoricalDistribution([1e-5, 5e-4])},
                       sampler="random", seed=3, pruner="none")
    result = st_hpo.run_study(study, n_trials=2, output_dir=tmp_path, progress=False)
    trials = load_trials(tmp_path, "tiny")
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert result.n_complete == 2 and failed, "the study reaches its budget despite failures"
    assert "simulated CUDA out of memory" in failed[0].user_attrs["st_hpo.error"]
    _, _, runs = mlflow_runs(tmp_path, "tiny")
    by_number = {int(r.data.tags["st_hpo.trial_number"]): r for r in runs}
    assert len(runs) == len(trials)
    assert by_number[failed[0].number].info.status == "FAILED"
    assert "simulated CUDA out of memory" in by_number[failed[0].number].data.tags["st_hpo.error"]


def test_resume_reaches_a_larger_budget_under_the_same_parent(make_study, tmp_path):
    study = make_study(n_trials=2, pruner="none")
    first = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    again = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert again.n_complete == 2, "a finished study does nothing"
    more = st_hpo.run_study(study, n_trials=4, output_dir=tmp_path, progress=False)
    assert more.n_complete == 4 and more.parent_run_id == first.parent_run_id
    trials = load_trials(tmp_path, "tiny")
    assert len(trials) == 4
    # the seeded sampler does not start over on resume: the new trials try new configurations
    configs = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(configs)) == 4, f"a resumed study proposed its first configurations again: {configs}"
    _, parents, runs = mlflow_runs(tmp_path, "tiny")
    assert len(parents) == 1 and len(runs) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {first.parent_run_id}
    assert parents[0].info.status == "FINISHED"


def test_baseline_trial_runs_the_base_arguments_first(make_study, tmp_path):
    study = make_study(baseline=True, n_trials=2, pruner="none")
    st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    trials = load_trials(tmp_path, "tiny")
    assert trials[0].user_attrs.get("st_hpo.baseline") is True
    assert trials[0].params == {"learning_rate": 5e-5, "warmup_ratio": 0.0}
    _, _, runs = mlflow_runs(tmp_path, "tiny")
    assert runs[0].data.tags["st_hpo.baseline"] == "true"


class _RowCountingEvaluator:
    """An evaluator factory that records how many eval rows each evaluation used and what it returned."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []

    def __call__(self, ds):
        from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

        calls = self.calls

        class Recording(EmbeddingSimilarityEvaluator):
            def __call__(self, model, *args, **kwargs):
                metrics = super().__call__(model, *args, **kwargs)
                calls.append((len(self.sentences1), metrics["sts-dev_spearman_cosine"]))
                return metrics

        return Recording(ds["sentence1"], ds["sentence2"], ds["score"], name="sts-dev")


def test_intermediate_evaluations_use_the_subset_and_the_final_one_every_row(make_study, tmp_path):
    counting = _RowCountingEvaluator()
    study = make_study(evaluator=counting, intermediate_eval_rows=8, n_trials=2, pruner="none",
                       args={**make_study().args, "eval_steps": 1})  # 4 steps: 3 evaluations on the subset
    st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    trials = load_trials(tmp_path, "tiny")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    in_trials = [c for c in counting.calls if c[0] in (8, 32)][-8:]  # validation and the base score ran before
    # the end of training is evaluated once, on every row: a subset evaluation there would decide nothing
    assert [rows for rows, _ in in_trials] == [8, 8, 8, 32] * 2
    client, parents, runs = mlflow_runs(tmp_path, "tiny")
    assert parents[0].data.params["intermediate_eval_rows"] == "8"
    for i, (trial, run) in enumerate(zip(trials, runs, strict=True)):
        final_full = in_trials[4 * i + 3][1]
        assert trial.value == pytest.approx(final_full), "the trial's value is measured on every eval row"
        assert run.data.tags["st_hpo.intermediate_eval"] == "8 of 32 eval rows"
        full = client.get_metric_history(run.info.run_id, "objective")
        assert {(m.step, round(m.value, 9)) for m in full} == {(4, round(final_full, 9))}
        subset = sorted(client.get_metric_history(run.info.run_id, "objective_subset"), key=lambda m: m.step)
        assert [m.value for m in subset] == pytest.approx([v for _, v in in_trials[4 * i: 4 * i + 3]])
        assert client.get_metric_history(run.info.run_id, "subset_eval_sts-dev_spearman_cosine")
        # the pruner saw the subset's values, at per-mille of training done
        assert trial.intermediate_values == pytest.approx(
            {250 * (k + 1): m.value for k, m in enumerate(subset)})


class _PruneEverything(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


def test_no_trial_is_pruned_at_its_last_evaluation(make_study, tmp_path):
    # one evaluation per trial, at its last step: there is nothing left to save by pruning there
    study = make_study(pruner=_PruneEverything(), n_trials=2, args={**make_study().args, "eval_steps": 4})
    st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    trials = load_trials(tmp_path, "tiny")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(list(t.intermediate_values) == [1000] for t in trials)
    study = make_study(name="tiny2", pruner=_PruneEverything(), n_trials=2)  # evaluations at steps 2 and 4
    st_hpo.run_study(study, output_dir=tmp_path / "b", progress=False)
    assert [t.state.name for t in load_trials(tmp_path / "b", "tiny2")] == ["PRUNED", "PRUNED"]


def test_retraining_a_subset_study_reproduces_the_whole_set_value(make_study, tmp_path):
    counting = _RowCountingEvaluator()
    study = make_study(evaluator=counting, intermediate_eval_rows=8, n_trials=2, pruner="none")
    st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    best = max(load_trials(tmp_path, "tiny"), key=lambda t: t.value)
    counting.calls.clear()
    retrained = st_hpo.retrain_best(study, output_dir=tmp_path, track=False)
    during = [rows for rows, _ in counting.calls if rows in (8, 32)]
    assert during[-3:] == [8, 8, 32], "as in the trials: the subset during training, every row at the end"
    assert retrained.value == pytest.approx(best.value, abs=1e-4)


def test_a_trials_checkpoints_are_deleted_when_it_ends(make_study, tmp_path, monkeypatch):
    import st_hpo._execution._trial as trial_module

    seen = []
    remove = trial_module.remove_checkpoints

    def spy(trial, trial_dir):  # what the trial left just before st-hpo cleans up (the trainer's checkpoints,
        # or the last of them put into place for resuming an interrupted trial, resume-S)
        seen.append(sorted(p.name for p in [*trial_dir.glob("checkpoint-*"), *trial_dir.glob("resume-*")]))
        remove(trial, trial_dir)

    monkeypatch.setattr(trial_module, "remove_checkpoints", spy)
    args = {**make_study().args, "save_strategy": "steps", "save_steps": 2}
    result = st_hpo.run_study(make_study(args=args, n_trials=2, pruner="none"), output_dir=tmp_path, progress=False)
    assert result.n_complete == 2
    assert len(seen) == 2 and all(seen), f"the trainer wrote checkpoints in every trial: {seen}"
    assert list((tmp_path / "trials").glob("trial-*/checkpoint-*")) == []
    assert list((tmp_path / "trials").glob("trial-*/resume-*")) == []
    assert result.best_model_dir is not None and (result.best_model_dir / "modules.json").is_file()


def test_enqueued_configurations_run_first_and_a_resumed_study_takes_new_ones(make_study, tmp_path):
    first = {"learning_rate": 3e-4, "warmup_ratio": 0.2}
    study = make_study(n_trials=2, pruner="none", enqueue=[first])
    st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert load_trials(tmp_path, "tiny")[0].params == first
    # later, with --enqueue more.json: the new configuration runs next, the one tried before does not again
    later = {"learning_rate": 1e-4, "warmup_ratio": 0.05}
    st_hpo.run_study(study.replace(enqueue=[first, later]), n_trials=3, output_dir=tmp_path, progress=False)
    trials = load_trials(tmp_path, "tiny")
    assert len(trials) == 3 and trials[2].params == later
    assert [t.params for t in trials].count(first) == 1


def test_a_worker_stops_when_its_trials_keep_failing(make_study, tmp_path):
    """Every configuration fails (all out of GPU memory, say): the study stops instead of failing trials forever."""
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    class FailsFromStep2(CoSENTLoss):
        calls = 0

        def forward(self, *args, **kwargs):
            self.calls += 1
            if self.calls >= 2:  # validation's one probe passes; every trial fails at its second step
                raise RuntimeError("CUDA out of memory (simulated)")
            return super().forward(*args, **kwargs)

    study = make_study(loss=FailsFromStep2, max_failures_in_a_row=2, pruner="none")
    result = st_hpo.run_study(study, n_trials=3, output_dir=tmp_path, progress=False)
    assert not result.budget_met and not result.interrupted
    assert result.stop_reason.startswith("the last 2 trials failed")
    assert "CUDA out of memory (simulated)" in result.stop_reason
    trials = load_trials(tmp_path, "tiny")
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    _, parents, runs = mlflow_runs(tmp_path, "tiny")
    assert [r.info.status for r in runs] == ["FAILED", "FAILED"]
    assert parents[0].info.status == "FAILED"


def test_max_failures_in_a_row_must_be_a_positive_count(make_study):
    with pytest.raises(st_hpo.StudyDefinitionError, match="max_failures_in_a_row=0"):
        make_study(max_failures_in_a_row=0)
    assert make_study(max_failures_in_a_row=None).max_failures_in_a_row is None


def test_a_gpu_in_an_error_state_ends_the_process_after_its_trial_is_recorded(make_study, tmp_path, monkeypatch):
    """After a device-side assert every CUDA call raises: the trial is recorded, then the process stops (a
    supervisor starts a fresh one) instead of failing every later trial. The GPU is simulated: none here."""
    import torch

    def sticky_error():
        raise torch.AcceleratorError("CUDA error: device-side assert triggered")

    study = make_study(pruner="none")
    with monkeypatch.context() as patch:
        patch.setattr("st_hpo._execution._memory.cuda_in_use", lambda: type("Cuda", (), {
            "empty_cache": staticmethod(sticky_error), "reset_peak_memory_stats": staticmethod(lambda: None)}))
        with pytest.raises(st_hpo.TrialError, match="device-side assert triggered.*run the same command again"):
            st_hpo.run_study(study, n_trials=3, output_dir=tmp_path, progress=False)
    trials = load_trials(tmp_path, "tiny")
    assert [t.state.name for t in trials] == ["COMPLETE"], "the trial's result stands; no second trial started"
    _, parents, runs = mlflow_runs(tmp_path, "tiny")
    assert [r.info.status for r in runs] == ["FINISHED"] and parents[0].info.status == "KILLED"
    result = st_hpo.run_study(study, n_trials=3, output_dir=tmp_path, progress=False)  # a fresh start goes on
    assert result.budget_met and result.n_complete == 3


def test_a_supervisor_of_gpu_workers_leaves_the_base_model_score_to_them(make_study, tmp_path):
    """A supervisor whose workers own the GPUs never trains, so it holds no GPU memory: it validates on the
    CPU and does not score the base model; the first worker to open the study does."""
    from st_hpo._execution._session import SessionOptions, StudySession

    study = make_study()
    supervisor = StudySession.open(study, SessionOptions(output_dir=tmp_path, trains_here=False))
    assert "st_hpo.base_model_value" not in supervisor.study.user_attrs
    worker = StudySession.open(study, SessionOptions(output_dir=tmp_path, role="worker", worker_name="gpu0-w0"))
    assert -1.0 <= worker.study.user_attrs["st_hpo.base_model_value"] <= 1.0
    supervisor.close("FINISHED")
