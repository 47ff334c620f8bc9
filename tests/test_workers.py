"""Worker processes sharing one study: the global budget, kill -9 of a worker or of the whole run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.engines import held_trial, hold_one_trial
from tests.helpers import load_trials, mlflow_runs

# the tests that signal a process group at a polled moment or time the run are marked serial; the others (each
# stop forced by the study's own code, or a kill of a trial the study file holds in training) run two at a time
pytestmark = pytest.mark.slow


def _invariants(out_dir, name, budget):
    """What a user checks after any run: budget met, nothing RUNNING, one run per trial in its state."""
    trials = [t for t in load_trials(out_dir, name) if not t.user_attrs.get("st_hpo.cancelled")]
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == budget
    assert not [t for t in trials if t.state.name == "RUNNING"]
    assert len({t.number for t in trials}) == len(trials)
    _, parents, runs = mlflow_runs(out_dir, name)
    assert len(parents) == 1
    by_number = {}
    for run in runs:
        assert int(run.data.tags["st_hpo.trial_number"]) not in by_number, "one run per trial"
        by_number[int(run.data.tags["st_hpo.trial_number"])] = run
    assert set(by_number) == {t.number for t in trials}
    expected = {"COMPLETE": {"FINISHED"}, "PRUNED": {"KILLED"}, "FAIL": {"FAILED", "KILLED"}}
    for t in trials:
        assert by_number[t.number].info.status in expected[t.state.name], t.number
        assert by_number[t.number].data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    return trials, by_number


def test_four_workers_meet_the_global_budget_exactly(tmp_path, study_file):
    path = study_file(name="four", n_trials=8)
    # the CLI's subset override reaches every worker
    proc = subprocess.run([sys.executable, "-m", "st_hpo", "run", str(path), "--workers", "4",
                           "--intermediate-eval-rows", "16"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "database is locked" not in proc.stderr
    out_dir = tmp_path / "st-hpo-runs" / "four"
    trials, runs = _invariants(out_dir, "four", 8)
    assert {r.data.tags.get("st_hpo.intermediate_eval") for r in runs.values()} == {"16 of 32 eval rows"}
    workers = {r.data.tags["st_hpo.worker"] for r in runs.values()}
    assert len(workers) >= 2, f"trials ran on several workers, got {workers}"
    # the workers share a seeded study, yet each draws its own values: no configuration is tried twice
    configs = [tuple(sorted(t.params.items())) for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(set(configs)) == len(configs), f"workers proposed the same configuration: {configs}"
    assert all(r.data.tags["st_hpo.host"] for r in runs.values())
    # the workers share the trials folder: one kept model at the end, the best trial's
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert sorted((out_dir / "trials").glob("trial-*/model*")) == [out_dir / "trials" / f"trial-{best.number}" / "model"]
    assert f"best model: {out_dir / 'trials' / f'trial-{best.number}' / 'model'}" in proc.stdout


def test_kill_9_of_a_worker_fails_its_trial_and_a_replacement_finishes(tmp_path, study_file):
    # the study file holds one trial in training until it is killed: not serial, the kill lands there on any load
    path = hold_one_trial(study_file(name="killw", n_trials=3, epochs=3))
    proc = subprocess.Popen([sys.executable, "-m", "st_hpo", "run", str(path), "--workers", "2"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_dir = tmp_path / "st-hpo-runs" / "killw"
    victim = held_trial(path, out_dir, "killw")
    number = victim.number
    os.kill(int(victim.user_attrs["st_hpo.pid"]), signal.SIGKILL)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert "killed by signal 9" in stderr
    trials, runs = _invariants(out_dir, "killw", 3)
    killed = next(t for t in trials if t.number == number)
    assert killed.state.name == "FAIL"
    assert killed.user_attrs["st_hpo.error"] == "worker killed by signal 9"
    assert runs[number].info.status == "FAILED"
    assert runs[number].data.tags["st_hpo.error"] == "worker killed by signal 9"


def test_kill_9_of_the_whole_run_then_rerun_runs_only_what_is_missing(tmp_path, study_file):
    # the study file holds the second trial in training: one trial finished and the next one runs when the
    # process group is killed, on any load (not serial)
    path = hold_one_trial(study_file(name="killall", n_trials=3, epochs=3), nth=2)
    proc = subprocess.Popen([sys.executable, "-m", "st_hpo", "run", str(path)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    out_dir = tmp_path / "st-hpo-runs" / "killall"
    held_trial(path, out_dir, "killall")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = load_trials(out_dir, "killall")
    done_before = {t.number: t.value for t in before if t.state.name == "COMPLETE"}
    assert done_before and before[-1].state.name == "RUNNING"
    again = subprocess.run([sys.executable, "-m", "st_hpo", "run", str(path)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    trials, runs = _invariants(out_dir, "killall", 3)
    stale = next(t for t in trials if t.number == before[-1].number)
    assert stale.state.name == "FAIL" and "died" in stale.user_attrs["st_hpo.error"]
    for number, value in done_before.items():  # finished trials are kept as they were
        assert next(t for t in trials if t.number == number).value == value
    started = [t for t in trials if t.number > before[-1].number]
    assert len(started) == 3 - len(done_before), "only the missing trials ran"


def test_sigterm_stops_the_workers_cleanly_and_says_how_to_resume(tmp_path, study_file):
    # SIGTERM while one trial is held in training by the study file and the other worker's trial is long: on
    # any load, no trial has finished when it comes (not serial)
    path = hold_one_trial(study_file(name="term", n_trials=4, epochs=400))
    proc = subprocess.Popen([sys.executable, "-m", "st_hpo", "run", str(path), "--workers", "2"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_dir = tmp_path / "st-hpo-runs" / "term"
    held_trial(path, out_dir, "term")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Resume with: st-hpo run" in stderr
    trials = load_trials(out_dir, "term")
    assert trials and not [t for t in trials if t.state.name == "RUNNING"]
    assert all(t.state.name == "FAIL" for t in trials)
    _, parents, runs = mlflow_runs(out_dir, "term")
    assert runs and all(r.info.status in ("KILLED", "FAILED") for r in runs)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert parents[0].info.status == "KILLED"


#: A study's evaluator that, in one worker and once, mid-trial, asks the supervisor to stop (as `kill -TERM` of
#: `st-hpo run` does) from a finalizer that the garbage collector runs, so that the supervisor's SIGTERM
#: reaches the worker there: Python prints and drops the KeyboardInterrupt a finalizer raises, and the
#: worker's trial went on as if it had never been told.
SWALLOWS_A_STOP = """
import gc, os, signal, time


class StopsInAFinalizer:
    def __del__(self):
        with open(MARKER, "w") as f:
            f.write(str(time.time()))
        os.kill(os.getppid(), signal.SIGTERM)
        time.sleep(120)  # the supervisor's SIGTERM reaches this worker here


class SwallowsAStop(EmbeddingSimilarityEvaluator):
    def __call__(self, model, output_path=None, epoch=-1, steps=-1):
        if steps > 0 and os.environ.get("ST_HPO_WORKER_NAME"):
            try:
                os.close(os.open(MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # once in the whole run
            except FileExistsError:
                return super().__call__(model, output_path, epoch, steps)
            cycle = StopsInAFinalizer()
            cycle.itself = cycle
            del cycle
            gc.collect()
        return super().__call__(model, output_path, epoch, steps)


def evaluator(ds):
    return SwallowsAStop(ds["sentence1"], ds["sentence2"], ds["score"], name="sts-dev")
"""


def _stopped_cleanly(tmp_path, out_dir, name, stderr, returncode, stop_time):
    """After a SIGTERM to `st-hpo run`: every trial failed as interrupted (or given back unstarted), none
    started after the stop, every run KILLED, and the command says how to resume."""
    assert returncode == 130, stderr[-3000:]
    assert "Resume with: st-hpo run" in stderr
    trials = load_trials(out_dir, name)
    assert trials and all(t.state.name == "FAIL" for t in trials), [(t.number, t.state.name) for t in trials]
    ran = [t for t in trials if not t.user_attrs.get("st_hpo.cancelled")]
    assert {t.user_attrs["st_hpo.error"] for t in ran} == {"interrupted (Ctrl-C or SIGTERM)"}, \
        [(t.number, t.user_attrs.get("st_hpo.error")) for t in ran]
    late = [t.number for t in trials if t.datetime_start.timestamp() > stop_time]
    assert not late, f"trial(s) {late} started after the stop"
    _, parents, runs = mlflow_runs(out_dir, name)
    assert {int(r.data.tags["st_hpo.trial_number"]) for r in runs} == {t.number for t in ran}
    assert runs and all(r.info.status == "KILLED" for r in runs), [r.info.status for r in runs]
    assert parents[0].info.status == "KILLED"


def test_a_stop_whose_interrupt_python_drops_in_a_finalizer_still_ends_the_trial_and_the_worker(tmp_path, study_file):
    path = study_file(name="swallowed", n_trials=4, epochs=100)
    marker = tmp_path / "stopped-at"
    text = path.read_text().replace("def evaluator(ds):", "def _plain_evaluator(ds):")
    path.write_text(f"MARKER = {str(marker)!r}\n" + text.replace("study = st_hpo.Study(", SWALLOWS_A_STOP + "\n\nstudy = st_hpo.Study("))
    proc = subprocess.run([sys.executable, "-m", "st_hpo", "run", str(path), "--workers", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert marker.exists(), proc.stderr[-3000:]
    stop_time = float(marker.read_text())
    _stopped_cleanly(tmp_path, tmp_path / "st-hpo-runs" / "swallowed", "swallowed", proc.stderr, proc.returncode,
                     stop_time)
    assert "killed by signal 9" not in proc.stderr, "the workers stopped when told, not when killed"


#: A study's sampler that asks the supervisor to stop while a worker takes its third trial (inside
#: `study.ask()`, between two trials of that worker or of the other one). The worker holds signals while it
#: takes a trial, so the sampler waits there until the supervisor's SIGTERM has come (at most 30 s), not 30 s.
STOPS_WHILE_ASKED = """
import os, signal, time

from st_hpo._interrupts import stop_requested


class StopsWhileAsked(optuna.samplers.RandomSampler):
    def before_trial(self, study, trial):
        if trial.number == 2 and os.environ.get("ST_HPO_WORKER_NAME"):
            with open(MARKER, "w") as f:
                f.write(str(time.time()))
            os.kill(os.getppid(), signal.SIGTERM)
            waited = time.monotonic() + 30
            while not stop_requested() and time.monotonic() < waited:
                time.sleep(0.05)  # the supervisor's SIGTERM reaches this worker here
        super().before_trial(study, trial)
"""


def test_a_stop_while_a_worker_takes_its_next_trial_starts_nothing_and_leaves_nothing_running(tmp_path, study_file):
    path = study_file(name="asked", n_trials=6)
    marker = tmp_path / "stopped-at"
    text = path.read_text().replace("pruner=\"median\",", "pruner=\"median\", sampler=StopsWhileAsked(seed=0),")
    path.write_text(f"MARKER = {str(marker)!r}\n" + text.replace("study = st_hpo.Study(", STOPS_WHILE_ASKED + "\n\nstudy = st_hpo.Study("))
    proc = subprocess.run([sys.executable, "-m", "st_hpo", "run", str(path), "--workers", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    out_dir = tmp_path / "st-hpo-runs" / "asked"
    assert marker.exists(), proc.stderr[-3000:]
    stop_time = float(marker.read_text())
    assert proc.returncode == 130, proc.stderr[-3000:]
    trials = load_trials(out_dir, "asked")
    assert not [t.number for t in trials if t.state.name == "RUNNING"], "a trial was left RUNNING"
    asked = next(t for t in trials if t.number == 2)
    assert asked.user_attrs.get("st_hpo.cancelled"), "the trial taken as the stop came never ran"
    assert not [t.number for t in trials if t.datetime_start.timestamp() > stop_time]
    _, _, runs = mlflow_runs(out_dir, "asked")
    assert 2 not in {int(r.data.tags["st_hpo.trial_number"]) for r in runs}
    assert not [r for r in runs if r.info.status == "RUNNING"]


@pytest.mark.serial  # timed: --timeout 30 and how long the run took
def test_timeout_reaches_every_worker(tmp_path, study_file):
    """`--timeout` with workers: each stops starting trials when the command's time is up (and -q quiets them)."""
    path = study_file(name="timed", n_trials=500)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "st_hpo", "-q", "run", str(path), "--workers", "2", "--timeout", "30"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=400)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not met: --timeout 30 s reached" in proc.stdout
    assert "COMPLETE" not in proc.stderr, "-q reaches the workers: no line per trial"
    out_dir = tmp_path / "st-hpo-runs" / "timed"
    trials = [t for t in load_trials(out_dir, "timed") if not t.user_attrs.get("st_hpo.cancelled")]
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert 0 < len(finished) < 500
    assert not [t for t in trials if t.state.name == "RUNNING"]
    # trials last seconds: no trial starts after the timeout, the last ones finish, and the run ends
    assert elapsed < 30 + 60, f"the run took {elapsed:.0f} s"
    _, parents, runs = mlflow_runs(out_dir, "timed")
    assert len(runs) == len(trials) and {r.data.tags["st_hpo.worker"] for r in runs} == {"w0", "w1"}


def test_workers_whose_trials_keep_failing_stop_and_are_not_restarted(tmp_path, study_file):
    path = study_file(name="failing", n_trials=3)
    text = path.read_text().replace("loss=CoSENTLoss,", "loss=FailsFromStep2, max_failures_in_a_row=2,")
    path.write_text(text.replace("def evaluator(ds):", (
        "class FailsFromStep2(CoSENTLoss):\n"
        "    calls = 0\n\n"
        "    def forward(self, *args, **kwargs):\n"
        "        self.calls += 1\n"
        "        if self.calls >= 2:\n"
        "            raise RuntimeError('CUDA out of memory (simulated)')\n"
        "        return super().forward(*args, **kwargs)\n\n\n"
        "def evaluator(ds):")))
    proc = subprocess.run([sys.executable, "-m", "st_hpo", "run", str(path), "--workers", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "stopped because their last trials all failed" in proc.stderr
    assert "CUDA out of memory (simulated)" in proc.stderr
    assert "st-hpo status" in proc.stderr
    out_dir = tmp_path / "st-hpo-runs" / "failing"
    trials = load_trials(out_dir, "failing")
    # two failures per worker, then each stops for good: no replacement worker fails more
    assert [t.state.name for t in trials] == ["FAIL"] * 4
    _, parents, runs = mlflow_runs(out_dir, "failing")
    assert [r.info.status for r in runs] == ["FAILED"] * 4
    assert parents[0].info.status == "FAILED"


def test_workers_that_keep_dying_before_any_trial_fail_the_run_with_their_error(tmp_path, study_file):
    path = study_file(name="dying", n_trials=2)
    # the supervisor loads the file as it is; every worker process it starts dies while loading it
    path.write_text("import os\n\nif os.environ.get('ST_HPO_WORKER_NAME'):\n"
                    "    raise RuntimeError('no data on this worker (simulated)')\n\n" + path.read_text())
    proc = subprocess.run([sys.executable, "-m", "st_hpo", "run", str(path), "--workers", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "no data on this worker (simulated)" in proc.stderr  # each worker's own error line
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: worker(s) ") and " kept dying (6 times in a row, last: " in last, last
    assert "w0 exited with code 1" in last and "w1 exited with code 1" in last and "their error is above" in last
    assert "not met: see the error below" in proc.stdout
    _, parents, runs = mlflow_runs(tmp_path / "st-hpo-runs" / "dying", "dying")
    assert runs == [] and parents[0].info.status == "FAILED"


@pytest.mark.serial  # Ctrl-C to a process group
def test_ctrl_c_before_any_trial_started_says_no_trial_was_running(tmp_path, study_file):
    path = study_file(name="early", n_trials=2)
    marker = tmp_path / "worker-loading"
    text = path.read_text().replace(  # each worker loads its train set slowly: Ctrl-C comes before a trial
        "train_dataset=lambda: Dataset.from_dict(PAIRS),", "train_dataset=slow_pairs,")
    path.write_text(text.replace("\nstudy = st_hpo.Study(", f'''
import os, time


def slow_pairs():
    if os.environ.get("ST_HPO_WORKER_NAME"):
        open({str(marker)!r}, "a").close()
        time.sleep(120)
    return Dataset.from_dict(PAIRS)

study = st_hpo.Study('''))
    proc = subprocess.Popen([sys.executable, "-m", "st_hpo", "run", str(path), "--workers", "2"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), proc.communicate(timeout=60)[1][-3000:]
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground process group
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-3000:]
    assert not load_trials(tmp_path / "st-hpo-runs" / "early", "early"), "no trial ran"
    assert "marked FAIL" not in stderr, stderr[-3000:]
    assert "no trial was running" in stderr and "Resume with: st-hpo run" in stderr, stderr[-3000:]
