"""Trusting processes: a reused pid is not a live worker, a surplus trial gives its queued configuration
back, workers stop when their supervisor is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from st_hpo._execution._recovery import (
    current_host,
    pid_alive,
    process_identity,
    record_worker,
    recover_stale_trials,
)
from st_hpo._tracking._schema import PID_START_ATTR
from tests.helpers import load_trials, mlflow_runs, run_cli

pytestmark = pytest.mark.serial  # signals, kills or several processes: run alone (tests/run.sh)

linux_only = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc (Linux)")


def _journal_study(tmp_path, name="s"):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    return optuna.create_study(storage=storage, study_name=name)


def test_a_worker_killed_while_it_records_itself_leaves_a_trial_recovery_fails(tmp_path):
    """The pid is written last: a worker killed between two writes leaves a trial without a pid, which
    recovery fails once it is unclaimed for long enough (a pid without a host was never recovered)."""
    import datetime

    from st_hpo._execution import _recovery

    class KilledAtLastWrite:
        def __init__(self, trial):
            self.trial, self.written = trial, []

        def set_user_attr(self, key, value):
            if key == "st_hpo.pid":
                raise KeyboardInterrupt  # the worker dies here, at its last write
            self.written.append(key)
            self.trial.set_user_attr(key, value)

    study = _journal_study(tmp_path)
    trial = study.ask()
    with pytest.raises(KeyboardInterrupt):
        record_worker(KilledAtLastWrite(trial), os.getpid(), current_host())
    assert study.trials[0].user_attrs["st_hpo.tag.host"] == current_host()
    later = datetime.datetime.now() + datetime.timedelta(seconds=_recovery.UNCLAIMED_SECONDS + 1)

    class Later(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return later

    original = _recovery.datetime.datetime
    _recovery.datetime.datetime = Later
    try:
        assert recover_stale_trials(study) == [trial.number]
    finally:
        _recovery.datetime.datetime = original
    assert study.trials[0].state.name == "FAIL"


@linux_only
def test_a_reused_pid_is_not_taken_for_the_worker(tmp_path):
    study = _journal_study(tmp_path)
    impostor = study.ask()  # recorded by a process that had this pid before (a reboot, a later process)
    record_worker(impostor, os.getpid(), current_host())
    impostor.set_user_attr(PID_START_ATTR, process_identity(os.getpid())[PID_START_ATTR] + 1)
    genuine = study.ask()
    record_worker(genuine, os.getpid(), current_host())

    assert recover_stale_trials(study) == [impostor.number]
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {impostor.number: "FAIL", genuine.number: "RUNNING"}
    assert f"pid {os.getpid()}" in study.trials[impostor.number].user_attrs["st_hpo.error"]


def test_a_surplus_trial_gives_back_the_queued_configuration_it_took(tmp_path):
    from types import SimpleNamespace

    from st_hpo._api import summarize
    from st_hpo._execution._loop import _cancel, _surplus

    study = _journal_study(tmp_path)
    other = study.ask()  # another worker's trial: it alone fills a budget of 1
    other.suggest_float("learning_rate", 1e-5, 1e-3, log=True)
    study.enqueue_trial({"learning_rate": 5e-5}, user_attrs={"st_hpo.baseline": True})
    late = study.ask()  # asked at the same moment by this worker: it pops the queued baseline
    assert _surplus(study, late.number, budget=1)
    _cancel(study, late)

    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 1, "the baseline is queued again"
    assert waiting[0].user_attrs["st_hpo.baseline"] is True
    study.tell(other, 0.5)
    again = study.ask()
    assert again.number == waiting[0].number and again.suggest_float("learning_rate", 1e-5, 1e-3, log=True) == 5e-5
    study.tell(again, 0.6)
    baselines = [t for t in study.get_trials() if t.user_attrs.get("st_hpo.baseline")]
    assert [t.state.name for t in baselines] == ["COMPLETE"], "the cancelled ask is no baseline run"

    session = SimpleNamespace(study=study, output_dir=tmp_path, storage_url="journal", tracking_uri=None,
                              tracker=None)
    result = summarize(session, interrupted=False, budget_met=True)
    assert (result.n_complete, result.n_fail) == (2, 0), "a cancelled surplus ask is not a failure"


def _running_trials(out_dir, name, count, timeout=240.0):
    """The first ``count`` trials that are RUNNING with an MLflow run (their worker trains them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            running = [t for t in load_trials(out_dir, name)
                       if t.state.name == "RUNNING" and "st_hpo.mlflow_run_id" in t.user_attrs]
        except (KeyError, FileNotFoundError):
            running = []
        if len(running) >= count:
            return running
        time.sleep(0.5)
    raise AssertionError(f"{count} trials did not start")


@pytest.mark.slow
def test_workers_stop_when_their_supervisor_is_killed(tmp_path, study_file):
    path = study_file(name="orphans", n_trials=4, epochs=400)
    supervisor = subprocess.Popen([sys.executable, "-m", "st_hpo", "run", str(path), "--workers", "2"],
                                  cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
    out_dir = tmp_path / "st-hpo-runs" / "orphans"
    running = _running_trials(out_dir, "orphans", 2)
    workers = {int(t.user_attrs["st_hpo.pid"]) for t in running}
    supervisor.kill()  # SIGKILL: it cannot tell its workers anything
    supervisor.wait()
    killed_at = time.time()
    deadline = time.monotonic() + 30
    while any(pid_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if pid_alive(pid)], "the workers outlived their supervisor"
    workers_gone_at = time.time()

    trials = {t.number: t for t in load_trials(out_dir, "orphans")}
    assert not [n for n, t in trials.items() if t.state.name == "RUNNING"]
    for t in running:
        assert trials[t.number].state.name == "FAIL"
        assert trials[t.number].user_attrs["st_hpo.error"] == f"the supervisor (pid {supervisor.pid}) is gone"
    _, parents, runs = mlflow_runs(out_dir, "orphans")
    assert not [r for r in runs if r.info.status == "RUNNING"], "their MLflow runs are closed"
    assert parents[0].info.status == "RUNNING", "nothing has ended the killed supervisor's parent run yet"

    time.sleep(1)  # found later: `st-hpo sync` ends the parent run when the supervisor died, not now (> 0.5 s)
    synced = run_cli("sync", path, cwd=tmp_path)  # in this process: what it writes is the point
    assert synced.returncode == 0, synced.stderr[-2000:]
    _, parents, _ = mlflow_runs(out_dir, "orphans")
    assert parents[0].info.status == "KILLED"
    assert (killed_at - 6) * 1000 <= parents[0].info.end_time <= (workers_gone_at + 0.5) * 1000, (
        killed_at, workers_gone_at, parents[0].info.end_time / 1000)


def test_the_installed_dependencies_meet_pyproject_s_floors():
    from importlib.metadata import version
    from pathlib import Path

    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib", reason="needs Python 3.11+ to read pyproject.toml")
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    below = []
    for line in pyproject["project"]["dependencies"]:
        req = Requirement(line)
        installed = version(req.name).split("+")[0]  # torch's local tag (+cpu) is no part of the floor
        if not req.specifier.contains(installed, prereleases=True):
            below.append(f"{req.name} {installed} does not satisfy {req.specifier}")
    assert not below
