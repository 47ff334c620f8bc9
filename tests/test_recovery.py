"""Failing the trials of dead workers: with the exact reason when the supervisor knows it."""

from __future__ import annotations

import signal
import subprocess
import sys

import optuna
import pytest

from st_hpo._execution import _recovery
from st_hpo._execution._recovery import current_host, recover_stale_trials
from st_hpo._tracking._schema import SUPERVISOR_ATTR

pytestmark = pytest.mark.serial  # signals, kills or several processes: run alone (tests/run.sh)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _running_trial(study: optuna.Study, pid: int, supervisor: int | None) -> optuna.Trial:
    trial = study.ask()
    trial.set_user_attr("st_hpo.pid", pid)
    trial.set_user_attr("st_hpo.tag.host", current_host())
    if supervisor is not None:
        trial.set_user_attr(SUPERVISOR_ATTR, supervisor)
    return trial


def test_a_live_supervisor_reports_its_worker_s_signal(monkeypatch):
    supervisor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        study = optuna.create_study()
        worker = _dead_pid()
        _running_trial(study, worker, supervisor.pid)
        assert recover_stale_trials(study) == [], "another worker leaves it to the live supervisor"
        assert recover_stale_trials(study, exit_codes={worker: -signal.SIGKILL}) == [0]
        trial = study.trials[0]
        assert trial.state.name == "FAIL" and trial.user_attrs["st_hpo.error"] == "worker killed by signal 9"

        _running_trial(study, _dead_pid(), supervisor.pid)  # a supervisor that never reports it
        monkeypatch.setattr(_recovery, "SUPERVISOR_GRACE_SECONDS", 0.0)
        assert recover_stale_trials(study) == [1], "after the grace period the other workers fail it"
        assert "died during the trial" in study.trials[1].user_attrs["st_hpo.error"]
    finally:
        supervisor.kill()
        supervisor.wait()


def test_a_dead_supervisor_leaves_nothing_running():
    study = optuna.create_study()
    _running_trial(study, _dead_pid(), supervisor=_dead_pid())
    assert recover_stale_trials(study) == [0]
    assert study.trials[0].state.name == "FAIL"
