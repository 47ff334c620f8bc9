"""The st-hpo command as a user runs it, on real stores: in this process (``st_hpo``) where the command's
output and effects are the point, as a real process (``st_hpo_process``) where signals, pipes, start-up time
or the process's own state are."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import load_trials, mlflow_runs, run_cli

st_hpo = run_cli


def st_hpo_process(*args: str, cwd: Path, timeout: float = 600, env: dict | None = None
                   ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "st_hpo", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_an_st_hpo_process_freezes_its_objects_as_it_ends_and_main_in_process_does_not(tmp_path):
    """The interpreter's collections at shutdown would scan every object torch, transformers and mlflow left
    (2 s of a command that trained, on a 2-core CPU): the process's entry point freezes them as it ends,
    while ``main``, called in-process, leaves the caller's garbage collector alone."""
    import gc

    from st_hpo.cli import main

    code = ("import atexit, gc, runpy, sys; atexit.register(lambda: print('frozen:', gc.get_freeze_count() > 0)); "
            "sys.argv = ['st-hpo', '--version']; runpy.run_module('st_hpo', run_name='__main__', alter_sys=True)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "st-hpo" in proc.stdout and "frozen: True" in proc.stdout, proc.stderr
    frozen = gc.get_freeze_count()
    with pytest.raises(SystemExit):
        main(["--version"])
    assert gc.get_freeze_count() == frozen


@pytest.mark.slow
def test_help_is_fast_and_lists_the_commands(tmp_path):
    started = time.perf_counter()
    proc = st_hpo_process("--help", cwd=tmp_path)
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0
    for command in ("validate", "run", "status", "worker", "sync"):
        assert command in proc.stdout
    assert elapsed < 3.0, f"st-hpo --help took {elapsed:.1f}s"
    run_help = st_hpo("run", "--help", cwd=tmp_path).stdout
    assert "re-running the same command resumes" in run_help.replace("\n", " ")


def test_import_is_light():
    code = "import sys, st_hpo; print(sorted(m for m in ('torch', 'mlflow', 'sentence_transformers', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_run_then_status_json_and_resume(tmp_path, study_file):
    path = study_file(name="cli-study", n_trials=2, baseline=True)
    proc = st_hpo("run", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "trial   0" in proc.stderr and "COMPLETE" in proc.stderr and "best" in proc.stderr
    # before the first trial: what runs where, and the score to beat; then a line as each trial starts
    assert "study 'cli-study': 0 of 2 trials finished; sampler tpe, pruner median; 1 worker(s) on cpu" in proc.stderr
    assert "base model before fine-tuning: sts-dev_spearman_cosine = " in proc.stderr
    assert "trial   0  started" in proc.stderr
    assert "2 complete, 0 pruned, 0 failed" in proc.stdout
    out_dir = tmp_path / "st-hpo-runs" / "cli-study"
    assert (out_dir / "optuna.journal").exists() and (out_dir / "mlflow.db").exists()
    rows = json.loads(st_hpo("status", str(path), "--json", cwd=tmp_path).stdout)
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]
    assert {"number", "state", "params", "value"} <= set(rows[0])
    assert rows[0]["baseline"] is True
    assert {r["engine_ref"] for r in rows} == {f"local:{rows[0]['engine_ref'].split(':')[1]}"}  # where they ran
    again = st_hpo("run", str(path), cwd=tmp_path)
    assert again.returncode == 0 and "2 complete" in again.stdout
    assert len(load_trials(out_dir, "cli-study")) == 2, "a finished study runs nothing more"
    table = st_hpo("status", str(path), cwd=tmp_path)
    assert "(baseline)" in table.stdout
    assert "ran on" in table.stdout and rows[0]["engine_ref"] in table.stdout
    assert "2 of 2 trials finished (2 complete, 0 pruned), 0 failed, 0 running" in table.stdout
    best = [r for r in rows if r["best"]]
    assert len(best) == 1 and best[0]["model_dir"], "the best trial's model is kept"
    assert "best, model kept" in table.stdout and f"best model: {best[0]['model_dir']}" in table.stdout
    assert f"best model: {best[0]['model_dir']}" in proc.stdout
    # where to review: the URL that opens MLflow's UI on the trials (as `st-hpo ui` prints it first)
    experiment = mlflow_runs(out_dir, "cli-study")[2][0].info.experiment_id
    assert (f"review in MLflow: st-hpo ui {path}, then open http://127.0.0.1:5000/#/experiments/{experiment}/runs?"
            "viewStateShareKey=st-hpo-trials&workflowType=machine_learning") in proc.stdout
    # a worker joining the finished study says why it does nothing
    joined = st_hpo("worker", str(path), cwd=tmp_path)
    assert joined.returncode == 0, joined.stderr[-2000:]
    assert "study 'cli-study' already has 2 finished trials, its budget: nothing to run" in joined.stderr
    assert len(load_trials(out_dir, "cli-study")) == 2


@pytest.mark.serial
@pytest.mark.slow
def test_ctrl_c_fails_the_running_trial_and_the_run_resumes(tmp_path, study_file):
    path = study_file(name="interrupted", n_trials=2, epochs=400)  # long: it is interrupted 2 s in
    proc = subprocess.Popen([sys.executable, "-m", "st_hpo", "run", str(path)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_dir = tmp_path / "st-hpo-runs" / "interrupted"
    _wait_for_running_trial(out_dir, "interrupted")
    time.sleep(2)
    # status while the trial runs: where it is and who runs it
    running = json.loads(st_hpo("status", str(path), "--json", cwd=tmp_path).stdout)
    assert [r["state"] for r in running] == ["RUNNING"]
    assert running[0]["worker"] == "main" and running[0]["host"] and running[0]["duration_seconds"] > 0
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Resume with: st-hpo run" in stderr
    trials = load_trials(out_dir, "interrupted")
    assert [t.state.name for t in trials] == ["FAIL"]
    assert "interrupted" in trials[0].user_attrs["st_hpo.error"]
    _, parents, runs = mlflow_runs(out_dir, "interrupted")
    assert [r.info.status for r in runs] == ["KILLED"]
    assert parents[0].info.status == "KILLED"


def _wait_for_running_trial(out_dir: Path, name: str, timeout: float = 240) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out_dir / "optuna.journal").exists():
            try:
                running = [t for t in load_trials(out_dir, name) if t.state.name == "RUNNING"
                           and "st_hpo.mlflow_run_id" in t.user_attrs]
            except KeyError:
                running = []
            if running:
                return running[0].number
        time.sleep(0.5)
    raise AssertionError("no trial started")


def test_unreachable_postgres_is_one_clear_line(tmp_path, study_file):
    proc = st_hpo("status", str(study_file()), "--storage", "postgresql://nobody@127.0.0.1:1/none", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: could not open the Optuna storage postgresql://nobody@127.0.0.1:1/none")
    assert "Traceback" not in proc.stderr


def test_a_storage_whose_driver_is_not_installed_says_what_to_install(make_study, tmp_path):
    import st_hpo as library

    handle = library.open_study(make_study(), output_dir=tmp_path, storage="mysql+pymysql://u@localhost/db")
    with pytest.raises(library.StorageError, match=r"pymysql is not installed; install the driver the URL names, "
                                                   r"e\.g\. `pip install pymysql`"):
        handle.status()


def test_a_tracking_uri_mlflow_cannot_use_is_one_clear_line(tmp_path, study_file):
    proc = st_hpo("run", str(study_file()), "--tracking-uri", "foo://bar", "--output-dir", str(tmp_path / "out"),
                  cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: MLflow cannot use the tracking URI 'foo://bar'") and "--tracking-uri" in line
    assert not (tmp_path / "out").exists(), "a refused run leaves no output folder behind"


def test_a_run_on_an_unreachable_storage_leaves_no_output_folder(tmp_path, study_file):
    proc = st_hpo("run", str(study_file()), "--storage", "postgresql://nobody@127.0.0.1:1/none",
                  "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "could not open the Optuna storage postgresql://nobody@127.0.0.1:1/none" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists(), "a refused run leaves no output folder (nor an MLflow store) behind"


@pytest.mark.slow
def test_status_into_a_pipe_whose_reader_left_ends_without_a_traceback(tmp_path, study_file):
    import optuna

    from st_hpo._execution._storage import default_storage_url, open_storage

    path = study_file(name="piped")
    out = tmp_path / "st-hpo-runs" / "piped"
    out.mkdir(parents=True)
    study = optuna.create_study(study_name="piped", storage=open_storage(default_storage_url(out)),
                                direction="maximize")
    dist = {"learning_rate": optuna.distributions.FloatDistribution(1e-6, 1e-4, log=True)}
    for i in range(300):  # more than a pipe holds
        study.add_trial(optuna.trial.create_trial(params={"learning_rate": 1e-5 + i * 1e-8}, distributions=dist,
                                                  value=0.5))
    # `st-hpo status --json | head -0`: the reader is gone before the first line
    proc = subprocess.Popen([sys.executable, "-m", "st_hpo", "status", str(path), "--json"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 1
    assert stderr == "", stderr


@pytest.mark.slow
def test_run_flags_enqueue_no_baseline_no_kept_model_and_pruner_take_effect(tmp_path, study_file):
    path = study_file(name="flags", n_trials=2, baseline=True)
    queued = tmp_path / "queued.json"
    queued.write_text(json.dumps([{"learning_rate": 2e-4}]))  # names left out are sampled
    proc = st_hpo("run", str(path), "--enqueue", str(queued), "--no-baseline", "--no-keep-best-model",
                  "--pruner", "none", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sampler tpe, pruner none" in proc.stderr
    out_dir = tmp_path / "st-hpo-runs" / "flags"
    trials = load_trials(out_dir, "flags")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[0].params["learning_rate"] == pytest.approx(2e-4), "the queued configuration runs first"
    rows = json.loads(st_hpo("status", str(path), "--json", cwd=tmp_path).stdout)
    assert not any(r["baseline"] for r in rows), "--no-baseline: no trial runs the base arguments"
    assert not list(out_dir.glob("trials/*/model")) and not any("st_hpo.model_dir" in t.user_attrs for t in trials)
    # a bad queue file is one line
    queued.write_text('{"learning_rate": ')
    bad = st_hpo("run", str(path), "--enqueue", str(queued), cwd=tmp_path)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and str(queued) in bad.stderr, bad.stderr[-2000:]


def test_ui_refuses_a_port_that_is_not_one(tmp_path, study_file):
    proc = st_hpo("ui", str(study_file()), "--port", "70000", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "'70000' is not a port number; give one from 1 to 65535" in proc.stderr


def test_ui_on_a_tracking_server_that_is_down_is_one_clear_line_soon(tmp_path, study_file):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    proc = st_hpo("ui", str(study_file()), "--tracking-uri", f"http://127.0.0.1:{port}", cwd=tmp_path, timeout=300)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"error: MLflow at http://127.0.0.1:{port} could not be read")
    assert "start the server, or check --tracking-uri" in proc.stderr
    assert elapsed < 60, f"st-hpo ui took {elapsed:.0f} s to give up"


@pytest.mark.slow  # not serial: one process; its trials last a second and its bound leaves 45 s for ending
def test_timeout_counts_from_the_start_of_the_command(tmp_path, study_file):
    path = study_file(name="timed-here", n_trials=500)
    started = time.monotonic()
    proc = st_hpo_process("run", str(path), "--timeout", "30", cwd=tmp_path, timeout=400)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not met: --timeout 30 s reached; run the same command again to go on" in proc.stdout
    trials = load_trials(tmp_path / "st-hpo-runs" / "timed-here", "timed-here")
    assert 0 < len([t for t in trials if t.state.name == "COMPLETE"]) < 500
    assert not [t for t in trials if t.state.name == "RUNNING"]
    assert elapsed < 30 + 45, f"the run took {elapsed:.0f} s"


def test_bad_numbers_on_the_command_line_are_refused_before_anything_runs(tmp_path, study_file):
    path = str(study_file())
    for option, value, message in (("--n-trials", "0", "0 is too small; give at least 1"),
                                   ("--timeout", "-5", "-5 seconds: give a positive number"),
                                   ("--intermediate-eval-rows", "-4", "-4 is too small; give at least 0")):
        proc = st_hpo("run", path, option, value, cwd=tmp_path)
        assert proc.returncode == 2 and f"argument {option}: {message}" in proc.stderr
    assert not (tmp_path / "st-hpo-runs").exists()


def test_sync_of_a_study_that_never_ran_says_so_and_creates_nothing(tmp_path, study_file):
    proc = st_hpo("sync", str(study_file()), "--output-dir", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: no study 'tiny-file' at ") and "run it first" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "nowhere").exists()


def test_cpus_per_worker_without_a_cluster_engine_is_refused_not_ignored(tmp_path, study_file):
    proc = st_hpo("run", str(study_file()), "--workers", "2", "--cpus-per-worker", "4", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == ("error: --cpus-per-worker 4 is for --engine slurm or ray; on this machine each worker gets "
                           "OMP_NUM_THREADS = cores / workers (set OMP_NUM_THREADS to choose)\n"), proc.stderr
    assert not (tmp_path / "st-hpo-runs").exists()


def test_a_journal_storage_that_is_a_folder_is_refused_in_one_line(tmp_path, study_file):
    (tmp_path / "runs.journal").mkdir()
    proc = st_hpo("status", str(study_file()), "--storage", str(tmp_path / "runs.journal"), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == (f"error: storage {str(tmp_path / 'runs.journal')!r} is a folder; give the path of the "
                           f"journal file in it ({tmp_path / 'runs.journal' / 'optuna.journal'}, say), or "
                           "--output-dir for the folder\n"), proc.stderr


@pytest.mark.slow
def test_sync_rebuilds_a_lost_mlflow_store_and_closes_its_parent_run(tmp_path, study_file):
    path = str(study_file(n_trials=1))
    assert st_hpo("run", path, cwd=tmp_path).returncode == 0
    out = tmp_path / "st-hpo-runs" / "tiny-file"
    (out / "mlflow.db").unlink()
    proc = st_hpo("sync", path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, parents, runs = mlflow_runs(out, "tiny-file")
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert [p.info.status for p in parents] == ["FINISHED"], "the re-made parent run does not stay RUNNING"
    # a path below a file: one line, not a traceback (a folder gets <study>.json: test_results.py)
    proc = st_hpo("export", path, "--to", str(out / "mlflow.db" / "best.json"), cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_sync_ends_the_parent_run_a_killed_run_left_running(tmp_path, study_file, monkeypatch):
    import optuna

    import st_hpo
    from st_hpo._results import _sync
    from st_hpo._tracking._schema import RUNNER_ATTR
    from st_hpo.cli._main import main

    path = study_file(name="left-running", n_trials=1)
    out = tmp_path / "st-hpo-runs" / "left-running"
    st_hpo.run_study(st_hpo.load_study_file(path), output_dir=out, progress=False)
    client, parents, _ = mlflow_runs(out, "left-running")
    parent = parents[0].info.run_id
    # as a run killed with kill -9 leaves it: the parent RUNNING, with no end time and no final figures
    client.update_run(parent, status="RUNNING")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_sync, "ABANDONED_AFTER_SECONDS", 0.0)
    assert main(["sync", str(path)]) == 0
    assert client.get_run(parent).info.status == "RUNNING", "the process that ran it (this one) is alive"
    from st_hpo._execution._storage import open_storage

    study = optuna.load_study(study_name="left-running", storage=open_storage(str(out / "optuna.journal")))
    runner = dict(study.user_attrs[RUNNER_ATTR])
    # it ran on another machine, which says nothing here: a trial ended seconds ago, its run may be alive
    study.set_user_attr(RUNNER_ATTR, {**runner, "host": "elsewhere"})
    monkeypatch.setattr(_sync, "ABANDONED_AFTER_SECONDS", 60.0)
    assert main(["sync", str(path)]) == 0
    assert client.get_run(parent).info.status == "RUNNING"
    # it ran here and its process is gone (killed): the parent run ends at once
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    study.set_user_attr(RUNNER_ATTR, {"host": runner["host"], "st_hpo.pid": int(dead.stdout)})
    assert main(["sync", str(path)]) == 0
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and run.info.end_time, "the budget was met: FINISHED, with its end"
    assert run.data.metrics["n_complete"] == 1 and "best_value" in run.data.metrics


@pytest.mark.slow
def test_a_study_file_s_own_deprecation_warnings_are_shown(study_file, tmp_path):
    """Library deprecation notices are hidden; one the study file's own code triggers is the user's to see."""
    path = study_file(name="deprecated")
    text = path.read_text().replace("from sentence_transformers.sentence_transformer.losses import CoSENTLoss",
                                    "from sentence_transformers.losses import CoSENTLoss")
    assert "from sentence_transformers.losses import CoSENTLoss" in text
    path.write_text(text)
    proc = st_hpo_process("validate", str(path), cwd=tmp_path)  # a module warns once per process
    assert proc.returncode == 0, proc.stderr
    assert "DeprecationWarning: Importing from 'sentence_transformers.losses' is deprecated" in proc.stderr
    assert proc.stderr.count("Warning:") == 1, proc.stderr


def test_the_printed_review_line_names_the_study_the_run_used(tmp_path):
    """`st-hpo run FILE --study-name N --storage URL` ends with an `st-hpo ui` line that opens that study, as
    pasted (a line without --study-name opened the study file's own study, or none)."""
    import argparse

    from st_hpo.cli._commands import _review_lines

    ns = argparse.Namespace(study_file="my studies/s.py", output_dir="runs/with space", storage=None,
                            study_name="w2", tracking_uri=None)
    result = argparse.Namespace(tracking_uri="sqlite:////tmp/x y/mlflow.db", experiment_id="7")
    first, second = _review_lines(ns, result)
    assert first.startswith("review in MLflow: st-hpo ui 'my studies/s.py' --output-dir 'runs/with space' "
                            "--study-name w2, then open http://127.0.0.1:5000/#/experiments/7/runs?")
    assert second == "  or serve the store yourself: mlflow ui --backend-store-uri 'sqlite:////tmp/x y/mlflow.db'"
