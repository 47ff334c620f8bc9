"""--engine slurm on a real one-node SLURM cluster (in namespaces of its own): the workers run as one job
array from the plan, a task killed mid-trial is noticed from SLURM, and the study ends by itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import optuna
import pytest

from tests.engines import (
    SlurmCluster,
    engine_state,
    held_trial,
    hold_one_trial,
    slurm_available,
    trials_so_far,
    wait_for,
)
from tests.helpers import mlflow_runs

pytestmark = pytest.mark.slow  # none serial: the refusals are one process each, nothing timed
needs_slurm = pytest.mark.skipif(slurm_available() is not None, reason=f"SLURM: {slurm_available()}")


@pytest.fixture
def slurm():
    cluster = SlurmCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


# not serial: the cluster is in namespaces of its own, and the worker is killed in a trial the study file holds
@needs_slurm
def test_a_slurm_array_runs_the_study_survives_a_killed_task_and_ends_it(tmp_path, study_file, slurm):
    path = hold_one_trial(study_file(name="slurm-e2e", n_trials=4, epochs=3))
    out = tmp_path / "out"
    submitted = time.time()
    run = slurm.run(sys.executable, "-m", "st_hpo", "run", str(path), "--engine", "slurm", "--workers", "2",
                    "--gpus-per-worker", "1", "--cpus-per-worker", "1", "--shared-dir", "--output-dir", str(out),
                    cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    returned = time.time()
    assert json.loads((out / "worker-plan.json").read_text())["engine"] == "slurm"
    array_id = run.stdout.split("submitted to slurm: ")[1].split()[0]
    script = (out / "slurm" / "workers.sbatch").read_text()
    assert "#SBATCH --array=0-1" in script and "#SBATCH --gres=gpu:1" in script and "--plan" in script

    # a trial well into training (the one the study file holds): its worker dies at once, as on a lost node or
    # the OOM killer (`scancel -s KILL` would not do: SLURM sends SIGTERM first, and the worker ends its trial
    # cleanly)
    victim = held_trial(path, out, "slurm-e2e", explain=lambda: engine_state(out, "slurm-e2e", slurm.squeue))
    victim_ref = victim.user_attrs["st_hpo.tag.engine_ref"]
    other_ref = {f"slurm:{array_id}_0": f"slurm:{array_id}_1", f"slurm:{array_id}_1": f"slurm:{array_id}_0"}[victim_ref]
    killed = slurm.run("kill", "-9", str(victim.user_attrs["st_hpo.pid"]))  # a pid in the cluster's namespace
    assert killed.returncode == 0, killed.stderr

    wait_for("every job to leave the queue", lambda: not slurm.squeue(), timeout=300,
             explain=lambda: engine_state(out, "slurm-e2e", slurm.squeue))
    trials = [t for t in trials_so_far(out, "slurm-e2e") if not t.user_attrs.get("st_hpo.cancelled")]
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 4
    assert not [t.number for t in trials if t.state.name == "RUNNING"]
    victim_now = next(t for t in trials if t.number == victim.number)
    assert victim_now.state == optuna.trial.TrialState.FAIL
    assert victim_now.user_attrs["st_hpo.error"] == f"slurm job {victim_ref.removeprefix('slurm:')} ended: FAILED"
    refs = {t.user_attrs.get("st_hpo.tag.engine_ref") for t in trials}
    assert refs == {victim_ref, other_ref}
    assert {t.user_attrs.get("st_hpo.tag.gpu") for t in trials} <= {"0", "1"}  # each task got its own GPU

    _, parents, runs = mlflow_runs(out, "slurm-e2e")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert sorted(int(r.data.tags["st_hpo.trial_number"]) for r in runs) == sorted(t.number for t in trials)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert {r.data.tags["st_hpo.engine_ref"] for r in runs} == refs
    assert next(r for r in runs if int(r.data.tags["st_hpo.trial_number"]) == victim.number).info.status == "FAILED"
    starts = {ref: min(t.datetime_start.timestamp() for t in trials if t.user_attrs["st_hpo.tag.engine_ref"] == ref)
              - submitted for ref in sorted(refs)}
    print(f"\n`st-hpo run --engine slurm` returned after {returned - submitted:.1f} s; from then to each worker's "
          "first trial: " + ", ".join(f"{r} {s - (returned - submitted):.1f} s" for r, s in starts.items()))


def test_slurm_without_sbatch_is_refused_in_one_line_before_anything_is_created(tmp_path, study_file):
    path = study_file(name="no-sbatch")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python")
    env = {**os.environ, "PATH": str(bin_dir)}
    proc = subprocess.run([sys.executable, "-m", "st_hpo", "run", str(path), "--engine", "slurm", "--workers", "2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: --engine slurm: sbatch is not on the PATH; run st-hpo on a login node of the cluster (where sbatch, "
        "squeue and scancel are), or use --engine local"]
    assert not (tmp_path / "st-hpo-runs").exists()


@pytest.mark.skipif(shutil.which("sbatch") is None, reason="needs sbatch on the PATH")
def test_slurm_with_a_storage_file_is_refused_without_shared_dir(tmp_path, study_file):
    path = study_file(name="not-shared")
    proc = subprocess.run([sys.executable, "-m", "st_hpo", "run", str(path), "--engine", "slurm", "--workers", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert line.startswith("error: --engine slurm: the storage ") and line.endswith(
        "optuna.journal is a file on this machine, which workers on other nodes cannot reach; give --storage "
        "postgresql://... and --tracking-uri http://..., or --shared-dir when the output folder is on a "
        "filesystem every node mounts"), line
    assert "\n" not in line
    assert not (tmp_path / "st-hpo-runs").exists()
