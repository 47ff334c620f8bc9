"""A Ctrl-C, SIGTERM or kill -9 outside a trial (while the base model is scored, in the final phase) leaves no
MLflow run RUNNING, says how to resume, and a second Ctrl-C stops as quietly as the first."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import load_trials, mlflow_runs, run_cli

# real processes, real signals, yet not serial: each process signals itself at a forced moment (or is sent one
# SIGINT by its pid once it said it was interrupted), nothing is timed, no port or process group is shared
pytestmark = pytest.mark.slow

#: An evaluator that signals its own process (SIGNAL_NAME) when it is called inside the function SIGNAL_IN:
#: the moment is forced, not waited for.
SIGNALLING_EVALUATOR = '''
class SignallingEvaluator(EmbeddingSimilarityEvaluator):
    def __call__(self, *args, **kwargs):
        import os
        import signal
        import sys
        where, frame = os.environ.get("SIGNAL_IN"), sys._getframe()
        while where and frame is not None:
            if frame.f_code.co_name == where:
                os.environ.pop("SIGNAL_IN")
                os.kill(os.getpid(), getattr(signal, os.environ["SIGNAL_NAME"]))
                break
            frame = frame.f_back
        return super().__call__(*args, **kwargs)


def evaluator(ds):
    return SignallingEvaluator(ds["sentence1"], ds["sentence2"], ds["score"], name="sts-dev")


def unused(ds):'''


def _study(study_file, name: str) -> Path:
    path = study_file(name=name, n_trials=1)
    text = path.read_text().replace("def evaluator(ds):", SIGNALLING_EVALUATOR, 1)
    text = text.replace("    n_trials=1,", "    n_trials=1,\n    test_dataset=lambda: Dataset.from_dict(EVAL),")
    assert "SignallingEvaluator(ds" in text and "test_dataset=" in text
    path.write_text(text)
    return path


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "st_hpo", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **env})


def _parent(out: Path, name: str):
    _, parents, _ = mlflow_runs(out, name)
    assert len(parents) == 1
    return parents[0]


def _resume_argv(stderr: str) -> list[str]:
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("interrupted. Resume with: st-hpo "), stderr[-2000:]
    return shlex.split(line[len("interrupted. Resume with: "):])


def test_sigterm_while_the_base_model_is_scored_ends_the_run_killed_and_says_how_to_resume(tmp_path, study_file):
    path = _study(study_file, "base-term")
    args = ["run", str(path), "--output-dir", "runs/with space"]
    proc = _run(args, tmp_path, SIGNAL_IN="_score_base_model", SIGNAL_NAME="SIGTERM")
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert _resume_argv(proc.stderr) == ["st-hpo", *args]
    out = tmp_path / "runs" / "with space"
    parent = _parent(out, "base-term")
    assert parent.info.status == "KILLED" and parent.info.end_time is not None
    assert load_trials(out, "base-term") == []
    # the printed line, pasted into a shell, resumes and finishes the study
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"], "PYTHONPATH": os.pathsep.join(sys.path)}
    line = proc.stderr.strip().splitlines()[-1][len("interrupted. Resume with: "):]
    again = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _parent(out, "base-term").info.status == "FINISHED"
    assert [t.state.name for t in load_trials(out, "base-term")] == ["COMPLETE"]


def test_ctrl_c_while_the_best_model_is_scored_on_the_test_set_ends_the_run_killed(tmp_path, study_file):
    path = _study(study_file, "test-int")
    proc = _run(["run", str(path)], tmp_path, SIGNAL_IN="score_on_test", SIGNAL_NAME="SIGINT")
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert _resume_argv(proc.stderr) == ["st-hpo", "run", str(path)]
    out = tmp_path / "st-hpo-runs" / "test-int"
    assert [t.state.name for t in load_trials(out, "test-int")] == ["COMPLETE"]
    parent = _parent(out, "test-int")
    assert parent.info.status == "KILLED" and parent.info.end_time is not None
    assert "test_objective" not in parent.data.metrics
    sync = run_cli("sync", path, cwd=tmp_path)  # in this process: what it writes is the point
    assert sync.returncode == 0 and "0 run(s) created or closed" in sync.stdout, "nothing was left open"


def test_sync_ends_and_counts_the_run_of_a_process_killed_while_it_scored_the_base_model(tmp_path, study_file):
    path = _study(study_file, "base-kill")
    proc = _run(["run", str(path)], tmp_path, SIGNAL_IN="_score_base_model", SIGNAL_NAME="SIGKILL")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    out = tmp_path / "st-hpo-runs" / "base-kill"
    assert _parent(out, "base-kill").info.status == "RUNNING", "kill -9: nothing could end it"
    sync = run_cli("sync", path, cwd=tmp_path)  # in this process: what it writes is the point
    assert sync.returncode == 0, sync.stderr[-2000:]
    assert "1 run(s) created or closed (the study's run ended KILLED)" in sync.stdout
    parent = _parent(out, "base-kill")
    assert parent.info.status == "KILLED" and parent.info.end_time is not None
    assert "0 run(s) created or closed" in run_cli("sync", path, cwd=tmp_path).stdout, "once"


#: A loss that, once SECOND_CTRL_C_MARK exists, collects garbage whose finalizer presses Ctrl-C (once): the
#: interrupt lands in a ``__del__`` run by the garbage collector in the main thread, as a second Ctrl-C does
#: in ``Dataset.__del__`` while an interrupted trial's objects are freed.
IN_A_FINALIZER = '''
class PressesCtrlC:
    def __del__(self):
        import os
        import signal
        mark = os.environ.get("SECOND_CTRL_C_MARK", "")
        if mark and os.path.exists(mark):
            os.remove(mark)
            signal.raise_signal(signal.SIGINT)


class LeavesAFinalizer(CoSENTLoss):
    def forward(self, *args, **kwargs):
        import gc
        import os
        if os.path.exists(os.environ.get("SECOND_CTRL_C_MARK", "")):
            garbage = PressesCtrlC()
            garbage.cycle = garbage
            del garbage
            gc.collect()  # its finalizer runs here, in the main thread, as Dataset.__del__ does
        return super().forward(*args, **kwargs)


def evaluator(ds):'''


def test_ctrl_c_that_lands_in_a_finalizer_stops_the_run_quietly(tmp_path, study_file):
    path = study_file(name="twice", n_trials=1, epochs=400)
    text = path.read_text().replace("def evaluator(ds):", IN_A_FINALIZER, 1).replace("loss=CoSENTLoss,",
                                                                                     "loss=LeavesAFinalizer,")
    path.write_text(text)
    mark = tmp_path / "ctrl-c-in-a-finalizer"
    proc = subprocess.Popen([sys.executable, "-m", "st_hpo", "run", str(path)], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "SECOND_CTRL_C_MARK": str(mark)})
    out = tmp_path / "st-hpo-runs" / "twice"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if any(t.intermediate_values for t in load_trials(out, "twice")):
                break  # the trial trains
        except (KeyError, FileNotFoundError):
            pass
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.3)
    mark.write_text("")
    while mark.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not mark.exists(), "the Ctrl-C in the finalizer was pressed"
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # and one more from the terminal, wherever it lands
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Exception ignored" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert re.search(r"Resume with: st-hpo run \S+", stderr), stderr[-3000:]
