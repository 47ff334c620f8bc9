"""Several machines: PostgreSQL storage with heartbeats, an `mlflow server`, outages that lose nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from st_hpo._execution._storage import open_storage
from tests.servers import MlflowServer, mlflow_server, postgres_available, postgres_database

pytestmark = pytest.mark.slow
needs_pg = pytest.mark.skipif(not postgres_available(), reason="needs PostgreSQL on 127.0.0.1:5432")


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "st_hpo", *args]


def _trials(storage: str, name: str) -> list:
    return optuna.load_study(study_name=name, storage=open_storage(storage)).get_trials(deepcopy=False)


def _server_runs(uri: str, experiment: str) -> tuple[list, list]:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("st_hpo.kind") == "study"]
    trials = [r for r in runs if r.data.tags.get("st_hpo.kind") == "trial"]
    return parents, trials


@needs_pg  # not serial: its own database and a server on a free port; nothing is timed or signalled
def test_two_machines_share_a_postgres_study_and_an_mlflow_server(tmp_path, study_file):
    path = study_file(name="pg-shared", n_trials=4)
    with postgres_database() as storage, mlflow_server(tmp_path / "mlflow") as server:
        common = ["--storage", storage, "--tracking-uri", server.uri, "--n-trials", "4"]
        machines = [
            subprocess.Popen(_cmd("worker", str(path), *common, "--worker-name", f"m{i}"), cwd=tmp_path,
                             env={**os.environ, "ST_HPO_HOST": f"machine-{i}"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(2)
        ]
        for proc in machines:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
        trials = _trials(storage, "pg-shared")
        assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 4
        assert not [t for t in trials if t.state.name == "RUNNING"]
        parents, runs = _server_runs(server.uri, "pg-shared")
        assert len(parents) == 1, "both machines attach to one parent run"
        counted = [t for t in trials if not t.user_attrs.get("st_hpo.cancelled")]
        assert sorted(int(r.data.tags["st_hpo.trial_number"]) for r in runs) == sorted(t.number for t in counted)
        assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
        assert {r.data.tags["st_hpo.host"] for r in runs} <= {"machine-0", "machine-1"}


@needs_pg
@pytest.mark.serial  # a heartbeat grace period of 4 s: alone, so that a slowed live machine is not taken for dead
def test_heartbeat_fails_a_vanished_machines_trial_and_retries_its_params(tmp_path, study_file):
    path = study_file(name="pg-heartbeat", n_trials=2, epochs=3)  # the same definition on both machines
    env = {**os.environ, "ST_HPO_HEARTBEAT_INTERVAL": "1", "ST_HPO_GRACE_PERIOD": "4"}
    with postgres_database() as storage:
        common = ["--storage", storage, "--output-dir", str(tmp_path / "out")]
        a = subprocess.Popen(_cmd("worker", str(path), *common, "--n-trials", "2"), cwd=tmp_path,
                             env={**env, "ST_HPO_HOST": "machine-a"}, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        running = []
        while time.monotonic() < deadline and not running:
            time.sleep(0.5)
            try:
                running = [t for t in _trials(storage, "pg-heartbeat") if t.state.name == "RUNNING" and t.params]
            except KeyError:
                pass
        assert running, "machine a never started a trial"
        os.killpg(a.pid, signal.SIGKILL)  # the machine vanishes: no exit code reaches anyone
        a.wait()
        b = subprocess.run(_cmd("worker", str(path), *common, "--n-trials", "2"), cwd=tmp_path,
                           env={**env, "ST_HPO_HOST": "machine-b"}, capture_output=True, text=True, timeout=600)
        assert b.returncode == 0, b.stderr[-3000:]
        trials = _trials(storage, "pg-heartbeat")
        lost = next(t for t in trials if t.number == running[0].number)
        assert lost.state.name == "FAIL", "the vanished machine's trial is failed by the heartbeat"
        retried = [t for t in trials if t.system_attrs.get("failed_trial") == lost.number]
        assert retried and retried[0].params == lost.params, "its parameters are tried again"
        assert sum(t.state.name == "COMPLETE" for t in trials) == 2


def test_mlflow_unreachable_at_start_refuses_to_start(tmp_path, study_file):
    path = study_file(name="no-mlflow")
    proc = subprocess.run(_cmd("run", str(path), "--tracking-uri", "http://127.0.0.1:9"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: MLflow at http://127.0.0.1:9 could not")
    assert "Traceback" not in proc.stderr


@pytest.mark.serial  # the server is killed and started again on the same port, which must stay free meanwhile
def test_mlflow_outage_mid_run_then_sync_writes_what_was_missed(tmp_path, study_file):
    path = study_file(name="outage", n_trials=3, epochs=2)
    server = MlflowServer(tmp_path / "mlflow").start()
    out = tmp_path / "out"
    proc = subprocess.Popen(_cmd("run", str(path), "--tracking-uri", server.uri, "--output-dir", str(out)),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage = str(out / "optuna.journal")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if any(t.state.name == "COMPLETE" for t in _trials(storage, "outage")):
                break
        except (KeyError, FileNotFoundError):
            pass
        time.sleep(0.3)
    server.kill()  # MLflow goes away after the first trial
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "st-hpo sync" in err
    trials = _trials(storage, "outage")
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3, "trials go on while MLflow is down"
    server.start()  # back, same store and port
    try:
        sync = subprocess.run(_cmd("sync", str(path), "--tracking-uri", server.uri, "--output-dir", str(out)),
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert sync.returncode == 0, sync.stderr[-3000:]
        parents, runs = _server_runs(server.uri, "outage")
        assert len(parents) == 1
        assert sorted(int(r.data.tags["st_hpo.trial_number"]) for r in runs) == [t.number for t in trials]
        assert all(r.info.status == "FINISHED" for r in runs), [r.info.status for r in runs]
        # what the trials could not write was kept beside them and is all in MLflow now
        spooled = [t for t in trials if t.user_attrs.get("st_hpo.mlflow_spool")]
        assert spooled, "the trials run while MLflow was down spooled their writes"
        client = MlflowClient(tracking_uri=server.uri)
        by_number = {int(r.data.tags["st_hpo.trial_number"]): r for r in runs}
        for trial in spooled:
            run = by_number[trial.number]
            assert float(run.data.params["learning_rate"]) == pytest.approx(trial.params["learning_rate"])
            assert client.get_metric_history(run.info.run_id, "train_loss"), "the loss curve"
            assert len(client.get_metric_history(run.info.run_id, "objective_intermediate")) >= 2
            assert run.data.metrics["objective"] == pytest.approx(trial.value)
            assert run.data.metrics["train_seconds"] > 0
            local = client.download_artifacts(run.info.run_id, "training_args.json", str(tmp_path / "a"))
            assert json.load(open(local))["learning_rate"] == pytest.approx(trial.params["learning_rate"])
            assert not Path(trial.user_attrs["st_hpo.mlflow_spool"]).exists(), "sync deletes the spool"
    finally:
        server.kill()
