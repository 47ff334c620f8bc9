"""Trusting processes: a reused pid is not a live worker, a surplus trial gives its queued configuration
back, workers stop when their supervisor is gone."""

from __future__ import annotations

import os
import sys

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from st_hpo._execution._recovery import (
    PID_START_ATTR,
    current_host,
    process_identity,
    record_worker,
    recover_stale_trials,
)

linux_only = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc (Linux)")


def _journal_study(tmp_path, name="s"):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    return optuna.create_study(storage=storage, study_name=name)


@linux_only
def test_a_reused_pid_is_not_taken_for_the_worker(tmp_path):
    study = _journal_study(tmp_path)
    impostor = study.ask()  # recorded by a process that had this pid before (a reboot, a later process)
    impostor.set_user_attr("st_hpo.tag.host", current_host())
    record_worker(impostor, os.getpid())
    impostor.set_user_attr(PID_START_ATTR, process_identity(os.getpid())[PID_START_ATTR] + 1)
    genuine = study.ask()
    genuine.set_user_attr("st_hpo.tag.host", current_host())
    record_worker(genuine, os.getpid())

    assert recover_stale_trials(study) == [impostor.number]
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {impostor.number: "FAIL", genuine.number: "RUNNING"}
    assert f"pid {os.getpid()}" in study.trials[impostor.number].user_attrs["st_hpo.error"]
