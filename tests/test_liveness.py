"""After `kill -9`, `st-hpo sync` ends what the killed process left RUNNING at the time it really died:
a trial that had reported nothing for a while, and a `confirm` run."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import load_trials, mlflow_runs, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # real processes killed with real signals

#: A run whose end time is within this many seconds of the kill is "right" (beats come every 2 s).
TOLERANCE = 6.0


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "st_hpo", *args]


def _sync(path, cwd) -> int:
    """Run `st-hpo sync` (in this process: what it writes is the point, not its process); the number of runs
    it says it created or closed."""
    proc = run_cli("sync", path, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(re.search(r"(\d+) run\(s\) created or closed", proc.stdout).group(1))


def _quiet_study(study_file, name):
    """A long trial that reports nothing until it ends: no logging step, one evaluation at the end."""
    path = study_file(name=name, n_trials=1, epochs=4000)
    text = path.read_text().replace('eval_strategy="steps",', "").replace("eval_steps=2, logging_steps=1,",
                                                                        "logging_steps=10**6,")
    assert "logging_steps=10**6" in text and "eval_strategy" not in text
    path.write_text(text.replace('pruner="median"', 'pruner="none"'))
    return path


def test_sync_ends_a_killed_trial_that_reported_nothing_at_its_last_sign_of_life(tmp_path, study_file):
    path = _quiet_study(study_file, "quiet")
    out = tmp_path / "st-hpo-runs" / "quiet"
    proc = subprocess.Popen(_cmd("run", str(path)), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    trial = None
    while time.monotonic() < deadline:  # the trial trains, with no report, for 8 s
        try:
            trials = load_trials(out, "quiet")
        except (KeyError, FileNotFoundError):
            trials = []
        if trials and "st_hpo.mlflow_run_id" in trials[0].user_attrs:
            trial = trials[0]
            if time.time() - trial.datetime_start.timestamp() > 8:
                break
        assert proc.poll() is None, "the run ended before it was killed"
        time.sleep(0.3)
    assert trial is not None and not trial.intermediate_values, "no report before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = time.time()
    time.sleep(1)  # dead for a while before anyone notices: a sync that took its own time would be > 0.5 s late
    assert _sync(path, tmp_path) == 2, "the trial's run and the parent run"
    trial = load_trials(out, "quiet")[0]
    assert trial.state.name == "FAIL"
    ran = killed_at - trial.datetime_start.timestamp()
    assert ran - TOLERANCE <= trial.user_attrs["st_hpo.trial_seconds"] <= ran + 0.5
    _, parents, runs = mlflow_runs(out, "quiet")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert (killed_at - TOLERANCE) * 1000 <= runs[0].info.end_time <= (killed_at + 0.5) * 1000, (
        "the run ends when the process died, not at its start, its last report or the sync")
    assert runs[0].data.metrics["trial_seconds"] == trial.user_attrs["st_hpo.trial_seconds"], (
        "the run has the time the trial ran, as the storage has it")
    assert parents[0].info.status == "KILLED" and parents[0].info.end_time is not None
    assert (killed_at - TOLERANCE) * 1000 <= parents[0].info.end_time <= (killed_at + 0.5) * 1000, (
        "the parent run ends when its process died, not when sync found it dead")


KILLED_IN_CONFIRM = '''

class KilledInConfirm(CoSENTLoss):
    """Kills its own process (kill -9) at its second training step, in a `confirm` only."""
    calls = 0

    def forward(self, *args, **kwargs):
        import os
        import signal
        self.calls += 1
        if self.calls == 2 and os.environ.get("KILL_IN_CONFIRM"):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(*args, **kwargs)
'''


def test_sync_closes_a_confirm_run_left_running_by_kill_9(tmp_path, study_file):
    import os

    path = study_file(name="confirmk", n_trials=1, baseline=True)
    text = path.read_text().replace("loss=CoSENTLoss,", "loss=KilledInConfirm,")
    path.write_text(text.replace("\nstudy = st_hpo.Study(", KILLED_IN_CONFIRM + "\nstudy = st_hpo.Study("))
    done = subprocess.run(_cmd("run", str(path)), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    confirm = subprocess.run(_cmd("confirm", str(path), "--top", "1", "--seeds", "1"), cwd=tmp_path,
                             capture_output=True, text=True, timeout=600, env={**os.environ, "KILL_IN_CONFIRM": "1"})
    killed_at = time.time()
    assert confirm.returncode == -signal.SIGKILL, confirm.stderr[-3000:]
    out = tmp_path / "st-hpo-runs" / "confirmk"
    client, _, _ = mlflow_runs(out, "confirmk")
    experiment = client.get_experiment_by_name("confirmk").experiment_id

    def confirm_runs():
        return [r for r in client.search_runs([experiment]) if r.data.tags.get("st_hpo.kind") == "confirm"]

    assert [r.info.status for r in confirm_runs()] == ["RUNNING"]
    time.sleep(1)  # a sync that took its own time would be > 0.5 s late
    assert _sync(path, tmp_path) == 1, "the confirm run it closed"
    [run] = confirm_runs()
    assert run.info.status == "FAILED" and "died" in run.data.tags["st_hpo.error"]
    assert (killed_at - TOLERANCE) * 1000 <= run.info.end_time <= (killed_at + 0.5) * 1000
    assert [t.state.name for t in load_trials(out, "confirmk.confirm")] == ["FAIL"]
