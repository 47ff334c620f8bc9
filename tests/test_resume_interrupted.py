"""Interrupted trials resume from their last checkpoint: kill -9 of a worker, SIGTERM, Ctrl-C then run again.

The study file's evaluator stops its own process at the evaluation of step 6 of 8 (once: a flag file says
it did), so the moment is forced, not waited for: the trial evaluates at steps 2, 4, 6 and 8, checkpoints
after the evaluations at 2 and 4, and is stopped at 6, past half of its training, before that checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import STUDY_FILE_TEMPLATE, make_pairs
from tests.helpers import load_trials, mlflow_runs, run_cli
from tests.test_workers import _invariants

# not serial: each stop is forced by the study's own evaluator at a fixed step, not timed, and signals only its own
# process (no process group, no port): two tests at a time only slow each other
pytestmark = pytest.mark.slow

FLAG_ENV = "ST_HPO_TEST_INTERRUPT_FLAG"
STEPS, STOP_AT, LAST_CHECKPOINT = 8, 6, 4

INTERRUPTING = '''
import os
import signal
from pathlib import Path


class Interrupting(EmbeddingSimilarityEvaluator):
    """Stops its own process with {signal} at the evaluation of step {step}, once."""

    def __call__(self, model, output_path=None, epoch=-1, steps=-1):
        flag = os.environ.get({flag_env!r})
        if flag and steps == {step} and not Path(flag).exists():
            Path(flag).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.{signal})
        return super().__call__(model, output_path=output_path, epoch=epoch, steps=steps)


# a checkpoint at every evaluation point: the tiny model trains 8 steps in a second
study = study.replace(evaluator=lambda ds: Interrupting(ds["sentence1"], ds["sentence2"], ds["score"],
                                                        name="sts-dev"), checkpoint_every_minutes=0, **{extra})
'''


def _study_file(tmp_path, model, *, name, signal_name, extra="{}"):
    path = tmp_path / f"{name}.py"
    path.write_text(STUDY_FILE_TEMPLATE.format(
        pairs=make_pairs(64, 1), eval_pairs=make_pairs(32, 2), name=name, model=model, n_trials=1, epochs=2,
        baseline=False) + INTERRUPTING.format(signal=signal_name, step=STOP_AT, flag_env=FLAG_ENV, extra=extra))
    return path


def _run(path, cwd, *args, flag=None):
    env = {k: v for k, v in os.environ.items() if k != FLAG_ENV}
    if flag is not None:
        env[FLAG_ENV] = str(flag)
    return subprocess.run([sys.executable, "-m", "st_hpo", "run", str(path), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


#: reference trials by configuration: the tests' interrupted trials mostly share one, trained once
_REFERENCES: dict[tuple, object] = {}


def _uninterrupted(tmp_path, model, params):
    """The same configuration trained without interruption, in one process (same seed and arguments): in
    this one (``st_hpo.run_study``, as `st-hpo run` does with one worker; the process is not the point), once
    per configuration in this module."""
    import st_hpo

    key = tuple(sorted(params.items()))
    if key not in _REFERENCES:
        assert not os.environ.get(FLAG_ENV), "the reference is never interrupted"
        ref = tmp_path / "reference"
        ref.mkdir()
        path = _study_file(ref, model, name="reference", signal_name="SIGINT", extra=repr({"enqueue": [params]}))
        result = st_hpo.run_study(st_hpo.load_study_file(path), output_dir=ref / "st-hpo-runs" / "reference",
                                  progress=False)
        assert result.n_complete == 1
        (trial,) = load_trials(ref / "st-hpo-runs" / "reference", "reference")
        assert trial.params == params
        _REFERENCES[key] = trial
    return _REFERENCES[key]


def _check_resumed(tmp_path, name, model):
    """What a user checks after the interrupted study ended: the budget met, the interrupted trial FAIL and
    its retry resumed from its last checkpoint, with only the remaining steps trained and the same result."""
    out_dir = tmp_path / "st-hpo-runs" / name
    trials, runs = _invariants(out_dir, name, 1)
    (stopped,) = [t for t in trials if t.state.name == "FAIL"]
    (retry,) = [t for t in trials if t.state.name == "COMPLETE"]
    assert stopped.user_attrs.get("st_hpo.stopped") is True
    assert retry.params == stopped.params
    assert retry.user_attrs["st_hpo.resumed_from"] == {"trial": stopped.number, "step": LAST_CHECKPOINT}
    assert runs[retry.number].data.tags["st_hpo.resumed_from"] == f"trial-{stopped.number}@step-{LAST_CHECKPOINT}"
    assert "st_hpo.resumed_from" not in runs[stopped.number].data.tags
    # the retry's intermediate values before the checkpoint are the stopped trial's
    assert {k: v for k, v in retry.intermediate_values.items() if k <= 500} == {
        k: v for k, v in stopped.intermediate_values.items() if k <= 500}
    # it trained only the remaining steps: its training-loss curve starts after the checkpoint
    client, (parent,), _ = mlflow_runs(out_dir, name)
    # the parent's figures count both trials: the interrupted one and its retry
    assert (parent.data.metrics["n_fail"], parent.data.metrics["n_complete"]) == (1, 1)
    assert parent.data.metrics["train_seconds_total"] == pytest.approx(
        retry.user_attrs["st_hpo.train_seconds"] + stopped.user_attrs.get("st_hpo.train_seconds", 0.0), abs=0.01)
    trained = sorted(m.step for m in client.get_metric_history(runs[retry.number].info.run_id, "train_loss"))
    assert trained == list(range(LAST_CHECKPOINT + 1, STEPS + 1))
    reference = _uninterrupted(tmp_path, model, retry.params)
    assert retry.intermediate_values == pytest.approx(reference.intermediate_values, abs=1e-4)
    assert retry.value == pytest.approx(reference.value, abs=1e-4)
    assert 0 < retry.user_attrs["st_hpo.train_seconds"]
    # no checkpoint is left once the retry ended
    assert not list((out_dir / "trials").glob("trial-*/checkpoint-*"))
    assert not list((out_dir / "trials").glob("trial-*/resume-*"))
    # what `st-hpo status` shows (in this process: its output is the point, not the process)
    status = run_cli("status", tmp_path / f"{name}.py", "--json", cwd=tmp_path)
    rows = {r["number"]: r for r in json.loads(status.stdout)}
    assert rows[retry.number]["resumed_from"] == {"trial": stopped.number, "step": LAST_CHECKPOINT}
    assert rows[stopped.number]["resumed_from"] is None
    table = run_cli("status", tmp_path / f"{name}.py", cwd=tmp_path)
    assert f"resumed from trial {stopped.number} at step {LAST_CHECKPOINT}" in table.stdout
    return stopped, retry


def test_ctrl_c_then_run_again_resumes_the_trial_from_its_last_checkpoint(tmp_path, tiny_model_path):
    path = _study_file(tmp_path, tiny_model_path, name="ctrlc", signal_name="SIGINT")
    first = _run(path, tmp_path, flag=tmp_path / "stopped")
    assert first.returncode == 130, first.stderr[-3000:]
    (stopped,) = load_trials(tmp_path / "st-hpo-runs" / "ctrlc", "ctrlc")[:1]
    assert stopped.state.name == "FAIL"
    assert list((tmp_path / "st-hpo-runs" / "ctrlc" / "trials").glob("trial-0/resume-*")) == [
        tmp_path / "st-hpo-runs" / "ctrlc" / "trials" / "trial-0" / f"resume-{LAST_CHECKPOINT}"]
    again = _run(path, tmp_path, flag=tmp_path / "stopped")
    assert again.returncode == 0, again.stderr[-3000:]
    _check_resumed(tmp_path, "ctrlc", tiny_model_path)


# `--workers 1` trains in the `st-hpo run` process itself: two worker processes under a supervisor, of which
# one runs the study's single trial (the other finds the budget taken and waits to step in)


def test_kill_9_of_a_worker_resumes_its_trial_in_another_worker(tmp_path, tiny_model_path):
    path = _study_file(tmp_path, tiny_model_path, name="kill9", signal_name="SIGKILL")
    proc = _run(path, tmp_path, "--workers", "2", flag=tmp_path / "stopped")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "killed by signal 9" in proc.stderr
    stopped, _ = _check_resumed(tmp_path, "kill9", tiny_model_path)
    assert stopped.user_attrs["st_hpo.error"] == "worker killed by signal 9"


def test_sigterm_of_a_worker_resumes_its_trial_in_another_worker(tmp_path, tiny_model_path):
    path = _study_file(tmp_path, tiny_model_path, name="term", signal_name="SIGTERM")
    proc = _run(path, tmp_path, "--workers", "2", flag=tmp_path / "stopped")
    assert proc.returncode == 0, proc.stderr[-3000:]
    stopped, _ = _check_resumed(tmp_path, "term", tiny_model_path)
    assert "interrupted" in stopped.user_attrs["st_hpo.error"]


def test_without_resume_an_interrupted_trial_starts_again_from_step_0(tmp_path, tiny_model_path):
    path = _study_file(tmp_path, tiny_model_path, name="noresume", signal_name="SIGINT",
                       extra='{"resume_interrupted": False}')
    first = _run(path, tmp_path, flag=tmp_path / "stopped")
    assert first.returncode == 130, first.stderr[-3000:]
    out_dir = tmp_path / "st-hpo-runs" / "noresume"
    assert not list((out_dir / "trials").glob("trial-0/*checkpoint-*")), "no checkpoint was written or kept"
    assert not list((out_dir / "trials").glob("trial-0/resume-*"))
    again = _run(path, tmp_path, flag=tmp_path / "stopped")
    assert again.returncode == 0, again.stderr[-3000:]
    trials = load_trials(out_dir, "noresume")
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert "st_hpo.resumed_from" not in trials[1].user_attrs
