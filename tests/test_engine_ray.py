"""--engine ray on a real two-node Ray cluster (in namespaces of its own): one actor per worker, a worker
process killed with -9 mid-trial is noticed from Ray, and the driver ends the study."""

from __future__ import annotations

import subprocess
import sys
import time

import optuna
import pytest

from tests.engines import RayCluster, held_trial, hold_one_trial, ray_available, trials_so_far
from tests.helpers import mlflow_runs

pytestmark = pytest.mark.slow  # none serial: the refusals are one process each, nothing timed


@pytest.fixture
def ray_cluster():
    cluster = RayCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


# not serial: the cluster is in namespaces of its own, and the worker is killed in a trial the study file holds
@pytest.mark.skipif(ray_available() is not None, reason=f"Ray: {ray_available()}")
def test_ray_actors_run_the_study_survive_a_killed_worker_and_the_driver_ends_it(tmp_path, study_file, ray_cluster):
    path = hold_one_trial(study_file(name="ray-e2e", n_trials=4, epochs=3))
    out = tmp_path / "out"
    started = time.time()
    driver = subprocess.Popen(ray_cluster.command(
        sys.executable, "-m", "st_hpo", "run", str(path), "--engine", "ray", "--ray-address", ray_cluster.address,
        "--workers", "2", "--cpus-per-worker", "1", "--shared-dir", "--output-dir", str(out)),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        victim = held_trial(path, out, "ray-e2e", timeout=300)
        first_trial = min(t.datetime_start for t in trials_so_far(out, "ray-e2e")).timestamp()
        # the Ray worker process (the actor) that runs this trial's st-hpo worker: kill it with -9
        stat = ray_cluster.run("cat", f"/proc/{victim.user_attrs['st_hpo.pid']}/stat").stdout
        actor_pid = stat.rsplit(")", 1)[1].split()[1]
        assert ray_cluster.run("kill", "-9", actor_pid).returncode == 0
        stdout, stderr = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stderr[-3000:]
    assert "ray worker died" in stdout + stderr

    trials = [t for t in trials_so_far(out, "ray-e2e") if not t.user_attrs.get("st_hpo.cancelled")]
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 4
    assert not [t.number for t in trials if t.state.name == "RUNNING"]
    victim_now = next(t for t in trials if t.number == victim.number)
    assert victim_now.state == optuna.trial.TrialState.FAIL
    assert victim_now.user_attrs["st_hpo.error"] == "ray worker died"
    refs = {t.user_attrs["st_hpo.tag.engine_ref"] for t in trials}
    assert len(refs) == 2 and all(r.startswith("ray:") for r in refs)  # one actor per worker, none restarted

    _, parents, runs = mlflow_runs(out, "ray-e2e")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert sorted(int(r.data.tags["st_hpo.trial_number"]) for r in runs) == sorted(t.number for t in trials)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert {r.data.tags["st_hpo.engine_ref"] for r in runs} == refs
    print(f"\nfrom `st-hpo run --engine ray` to the first trial: {first_trial - started:.1f} s")


def test_ray_without_a_cluster_is_refused_in_one_line(tmp_path, study_file):
    pytest.importorskip("ray")
    path = study_file(name="no-ray")
    proc = subprocess.run([sys.executable, "-m", "st_hpo", "run", str(path), "--engine", "ray", "--workers", "2",
                           "--ray-address", "127.0.0.1:1"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --engine ray: no Ray cluster at --ray-address "
                                                   "127.0.0.1:1 ("), proc.stderr
    assert lines[0].endswith("start one with `ray start --head` or give the head's HOST:PORT")
    assert not (tmp_path / "st-hpo-runs").exists()
