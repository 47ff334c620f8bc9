"""MLflow and `st-hpo status` tell the truth: final values only on finished trials, every trial's params,
queued configurations, one registration, and what a killed run or an MLflow outage left behind."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import optuna
import pytest

import st_hpo
from st_hpo.cli._main import main
from tests.conftest import STUDY_FILE_TEMPLATE, make_pairs
from tests.helpers import load_trials, mlflow_runs, run_cli


class _PruneTrialOne(optuna.pruners.BasePruner):
    """Prunes trial 1 at its first report: a trial that did not finish, deterministically."""

    def prune(self, study, trial) -> bool:
        return trial.number == 1


def test_only_a_complete_trial_carries_objective_and_every_trial_its_train_time(tmp_path, make_study, capsys):
    study = make_study(n_trials=1, pruner=_PruneTrialOne())
    st_hpo.run_study(study, n_trials=2, output_dir=tmp_path, progress=False)
    trials = load_trials(tmp_path, "tiny")
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    client, parents, runs = mlflow_runs(tmp_path, "tiny")
    complete, pruned = runs
    assert "objective" not in pruned.data.metrics, "an unfinished trial has no final value"
    assert client.get_metric_history(pruned.info.run_id, "objective_intermediate")
    assert pruned.data.metrics["train_seconds"] > 0, "the time spent in train() before it was pruned"
    assert trials[1].user_attrs["st_hpo.train_seconds"] > 0
    final = client.get_metric_history(complete.info.run_id, "objective")
    assert [m.value for m in final] == pytest.approx([trials[0].value]), "logged once, the final value"
    last_step = max(m.step for m in client.get_metric_history(complete.info.run_id, "eval_sts-dev_spearman_cosine"))
    at_end = client.get_metric_history(complete.info.run_id, "eval_sts-dev_spearman_cosine")
    assert sum(m.step == last_step for m in at_end) == 1, "the final point once"
    assert "eval_samples_per_second" not in complete.data.metrics, "no eval dataset: no 0.0 speeds"
    assert parents[0].info.end_time is not None and parents[0].info.status == "FINISHED"
    # run again without n_trials: the extended budget of 2 stands
    capsys.readouterr()
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=True)
    assert result.budget_met and len(load_trials(tmp_path, "tiny")) == 2
    assert "2 of 2 trials finished" in capsys.readouterr().err


def _baseline_study_file(tmp_path, model_path):
    text = STUDY_FILE_TEMPLATE.format(pairs=make_pairs(32, 1), eval_pairs=make_pairs(16, 2), name="outside",
                                      model=model_path, n_trials=1, epochs=1, baseline=True)
    text = text.replace("FloatDistribution(1e-5, 1e-3, log=True)", "FloatDistribution(1e-4, 1e-3, log=True)")
    text = text.replace('"warmup_ratio": optuna.distributions.FloatDistribution(0.0, 0.5)',
                        '"loss.scale": optuna.distributions.FloatDistribution(10.0, 30.0)')
    text = text.replace("    seed=0,", '    seed=0,\n    enqueue=[{"learning_rate": 2e-4, "loss.scale": 15.0}],')
    path = tmp_path / "outside.py"
    path.write_text(text)
    return path


def test_baseline_outside_the_space_shows_its_values_queued_trials_theirs_and_registers_once(
        tmp_path, tiny_model_path, capsys):
    path = _baseline_study_file(tmp_path, tiny_model_path)
    out = tmp_path / "out"
    study = st_hpo.load_study_file(path)
    st_hpo.run_study(study, output_dir=out, progress=False)
    trials = load_trials(out, "outside")
    assert [t.state.name for t in trials] == ["COMPLETE", "WAITING"]
    expected = {"learning_rate": 5e-05, "loss.scale": 20.0}  # the base value and CoSENTLoss's default
    _, _, runs = mlflow_runs(out, "outside")
    assert {k: float(v) for k, v in runs[0].data.params.items() if k in expected} == expected
    assert main(["status", str(path), "--output-dir", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["params"] == expected
    assert rows[1]["state"] == "WAITING" and rows[1]["params"] == {"learning_rate": 2e-4, "loss.scale": 15.0}
    with open(out / "reports" / "trials.csv") as fh:
        row = next(csv.DictReader(fh))
    assert float(row["params_learning_rate"]) == 5e-05 and float(row["params_loss.scale"]) == 20.0
    target = tmp_path / "new" / "dir" / "best.json"
    assert main(["export", str(path), "--output-dir", str(out), "--to", str(target)]) == 0
    assert f"created the folder {tmp_path / 'new'}" in capsys.readouterr().out and target.is_file()
    # register twice: one version
    first = st_hpo.register_best(study, output_dir=out)
    assert main(["register", str(path), "--output-dir", str(out)]) == 0
    said = capsys.readouterr().out
    assert "already registered" in said and f"version {first.version}" in said
    client, _, runs = mlflow_runs(out, "outside")
    assert [str(v.version) for v in client.search_model_versions("name = 'outside'")] == [first.version]
    assert runs[0].data.tags["st_hpo.registered_model"] == f"outside v{first.version}"
    # --new-version: asked for, a second version of the same model
    assert main(["register", str(path), "--output-dir", str(out), "--new-version"]) == 0
    second = str(int(first.version) + 1)
    assert f"registered as 'outside' version {second}" in capsys.readouterr().out
    assert sorted(str(v.version) for v in client.search_model_versions("name = 'outside'")) == [first.version, second]


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "st_hpo", *args]


@pytest.mark.slow
@pytest.mark.serial  # a kill -9 timed against the trial's liveness beats: run alone (tests/run.sh)
def test_sync_after_kill_fails_the_trial_closes_its_run_and_keeps_the_time_it_ran(tmp_path, study_file):
    path = study_file(name="killed", n_trials=1, epochs=400)
    proc = subprocess.Popen(_cmd("run", str(path)), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    out = tmp_path / "st-hpo-runs" / "killed"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            trials = load_trials(out, "killed")
            if trials and trials[0].intermediate_values and "st_hpo.last_seen" in trials[0].user_attrs:
                break
        except (KeyError, FileNotFoundError):
            pass
        time.sleep(0.3)
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = time.time()
    time.sleep(1)  # dead for a while before anyone notices: a sync that took its own time would be > 0.5 s late
    sync = run_cli("sync", path, cwd=tmp_path)  # in this process: what it writes is the point
    assert sync.returncode == 0, sync.stderr[-2000:]
    trials = load_trials(out, "killed")
    assert [t.state.name for t in trials] == ["FAIL"]
    ran = killed_at - trials[0].datetime_start.timestamp()
    assert 0 < trials[0].user_attrs["st_hpo.trial_seconds"] <= ran + 0.5
    _, parents, runs = mlflow_runs(out, "killed")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].info.end_time <= (killed_at + 0.5) * 1000, "the run ends when the trial stopped"
    assert "objective" not in runs[0].data.metrics
    assert main(["status", str(path), "--output-dir", str(out), "--json"]) == 0


DIES_AFTER_MAKING_THE_RUN = """
import os, sys
import st_hpo
from st_hpo._tracking._mlflow import MlflowTracker

def killed(self, run_id, data, path):  # the process dies (kill -9) after the run was made, before this write
    os._exit(137)

MlflowTracker.log_dict = killed
st_hpo.run_study(st_hpo.load_study_file(sys.argv[1]), output_dir=sys.argv[2], progress=False)
"""


@pytest.mark.slow  # not serial: the process ends itself at a forced point, nothing is timed
def test_a_run_whose_process_died_as_it_was_made_gets_its_training_arguments_from_sync(tmp_path, study_file):
    path = study_file(name="dies", n_trials=1)
    out = tmp_path / "st-hpo-runs" / "dies"
    script = tmp_path / "run_and_die.py"
    script.write_text(DIES_AFTER_MAKING_THE_RUN)
    died = subprocess.run([sys.executable, str(script), str(path), str(out)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert died.returncode == 137, died.stderr[-2000:]
    sync = run_cli("sync", path, cwd=tmp_path)  # in this process: what it writes is the point
    assert sync.returncode == 0, sync.stderr[-2000:]
    trials = load_trials(out, "dies")
    assert [t.state.name for t in trials] == ["FAIL"]
    client, _, runs = mlflow_runs(out, "dies")
    assert [r.info.status for r in runs] == ["FAILED"]
    local = client.download_artifacts(runs[0].info.run_id, "training_args.json", str(tmp_path / "a"))
    trained = json.loads(open(local).read())
    assert trained["learning_rate"] == pytest.approx(trials[0].params["learning_rate"])
    assert trained["output_dir"].endswith("trial-0")
