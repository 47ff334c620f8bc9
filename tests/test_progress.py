"""The line printed per finished trial says what a user needs: state, value, best, and why it stopped."""

from __future__ import annotations

import optuna

from st_hpo._execution._progress import Progress
from st_hpo._execution._trial import TrialOutcome


def test_pruned_and_failed_trials_say_where_and_why(capsys):
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.8, params={}, distributions={}))
    progress = Progress(budget=3)
    progress.trial_done(TrialOutcome(number=1, state="PRUNED", seconds=2.0,
                                     error="pruned at step 3 (12% of training) with eval_x=0.61"), study)
    progress.trial_done(TrialOutcome(number=2, state="FAIL", seconds=1.0,
                                     error="OutOfMemoryError: CUDA out of memory\ntraceback..."), study)
    err = capsys.readouterr().err
    pruned, failed = err.split("trial   2")
    assert "PRUNED" in pruned and "pruned at step 3 (12% of training)" in pruned and "eval_x" not in pruned
    assert "best 0.8000 (#0)" in pruned and "[1/3 finished" in pruned
    assert "FAIL" in failed and "OutOfMemoryError: CUDA out of memory" in failed and "traceback" not in failed


def test_a_trial_that_kept_its_model_says_so(capsys):
    study = optuna.create_study(direction="maximize")
    Progress(budget=2).trial_done(TrialOutcome(number=0, state="COMPLETE", value=0.7, seconds=3.0,
                                               model_dir="/runs/trials/trial-0/model"), study)
    Progress(budget=2).trial_done(TrialOutcome(number=1, state="COMPLETE", value=0.6, seconds=3.0), study)
    first, second = capsys.readouterr().err.split("trial   1")
    assert "model kept" in first and "model kept" not in second


def test_worker_lines_show_the_worker_and_trials_say_when_they_start(capsys):
    study = optuna.create_study(direction="maximize")
    progress = Progress(budget=2, worker="gpu0-w1")
    progress.trial_started(3, {"learning_rate": 2.5e-5, "batch_sampler": "no_duplicates"})
    progress.trial_done(TrialOutcome(number=3, state="COMPLETE", value=0.7, seconds=3.0), study)
    started, done = capsys.readouterr().err.splitlines()
    assert started.startswith("[gpu0-w1] trial   3  started") and "learning_rate=2.5e-05" in started
    assert "batch_sampler=no_duplicates" in started
    assert done.startswith("[gpu0-w1] trial   3  COMPLETE")


def test_a_long_trial_prints_where_it_is_at_most_every_heartbeat(capsys, monkeypatch):
    import st_hpo._execution._progress as progress_module

    progress = Progress(budget=2)
    progress.trial_started(0, {})
    progress.trial_evaluated(0, 40, 100, 0.81, subset=True)  # just started: quiet
    assert "running" not in capsys.readouterr().err
    monkeypatch.setattr(progress_module, "HEARTBEAT_SECONDS", 0.0)
    progress.trial_evaluated(0, 40, 100, 0.81, subset=True)
    line = capsys.readouterr().err
    assert "trial   0  running   step 40/100 (40% of training), objective on the eval subset 0.8100" in line
