"""The engine seam without a cluster: recovery asks the engine about a trial's worker on any host, and the
SLURM job scripts carry what the user asked for."""

from __future__ import annotations

import os

import optuna
import pytest

from st_hpo._engines import EngineSettings, ended_reason, engine_for
from st_hpo._execution._plan import SlotPlan, WorkerPlan
from st_hpo._execution._recovery import recover_stale_trials
from st_hpo._execution._storage import open_storage


def _running_trial_of_a_dead_node(tmp_path, ref: str):
    study = optuna.create_study(study_name="s", storage=open_storage(str(tmp_path / "optuna.journal")))
    trial = study.ask()
    trial.set_user_attr("st_hpo.tag.host", "node-that-is-gone")
    trial.set_user_attr("st_hpo.tag.engine_ref", ref)
    trial.set_user_attr("st_hpo.pid", 4242)
    return study


def test_a_trial_of_another_host_is_failed_with_what_its_engine_says(tmp_path):
    # a journal on a shared filesystem: the trial's host is not this one, so its pid tells nothing here
    study = _running_trial_of_a_dead_node(tmp_path, "slurm:12_1")
    assert recover_stale_trials(study) == []  # without the engine: left RUNNING (heartbeats on PostgreSQL)
    said = {"slurm:12_1": "slurm job 12_1 ended: NODE_FAIL"}
    assert recover_stale_trials(study, engine_ended=said.get) == [0]
    trial = study.get_trials(deepcopy=False)[0]
    assert trial.state.name == "FAIL" and trial.user_attrs["st_hpo.error"] == "slurm job 12_1 ended: NODE_FAIL"


def test_a_dead_pid_here_is_left_to_the_engine_while_it_still_ends_the_task(tmp_path):
    # a SLURM task whose process is gone but which SLURM still ends (COMPLETING): its reason is coming
    import subprocess
    import sys

    from st_hpo._execution._recovery import current_host

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    study = _running_trial_of_a_dead_node(tmp_path, "slurm:12_0")
    trial_id = study.get_trials(deepcopy=False)[0]._trial_id
    study._storage.set_trial_user_attr(trial_id, "st_hpo.tag.host", current_host())
    study._storage.set_trial_user_attr(trial_id, "st_hpo.pid", gone.pid)
    assert recover_stale_trials(study, engine_ended=lambda ref: None) == []
    assert study.get_trials(deepcopy=False)[0].state.name == "RUNNING"
    assert recover_stale_trials(study) == [0]  # nobody asks the engine: the pid decides, as before


def test_unknown_engine_refs_and_local_ones_are_not_the_engines_to_answer():
    assert ended_reason("local:4242") is None
    assert ended_reason("k8s:pod-1") is None
    assert ended_reason("") is None


def test_the_slurm_job_scripts_carry_the_users_options(tmp_path):
    engine = engine_for(EngineSettings(name="slurm", slurm_partition="gpu", slurm_time="08:00:00",
                                       slurm_account="A", slurm_options=("--qos=high",)))
    plan = WorkerPlan(study_file="/s.py", study_name="s", output_dir=str(tmp_path), storage="postgresql://db/x",
                      tracking_uri="http://t:5000", budget=8, deadline=None, engine="slurm",
                      slots=tuple(SlotPlan(f"slurm-w{i}", None, 2.0, 4) for i in range(3)))
    workers, finish = engine.scripts(tmp_path / "worker-plan.json", plan)
    text = workers.read_text()
    for line in ("#SBATCH --array=0-2", "#SBATCH --cpus-per-task=4", "#SBATCH --gres=gpu:2", "#SBATCH --partition=gpu",
                 "#SBATCH --time=08:00:00", "#SBATCH --account=A", "#SBATCH --qos=high"):
        assert line in text.splitlines()
    assert text.splitlines()[-1].endswith(f"-m st_hpo worker --plan {tmp_path / 'worker-plan.json'}")
    final = finish.read_text()
    assert "--gres" not in final and "#SBATCH --partition=gpu" in final
    assert final.splitlines()[-1].endswith("--finish")


@pytest.mark.slow
def test_a_slurm_submission_that_sbatch_refuses_says_so_in_one_line_and_leaves_nothing_running(tmp_path, study_file):
    """sbatch on the PATH but no cluster behind it (no slurmctld, no configuration): sbatch's last line in one
    line, and the study's parent run is not left RUNNING for a run that never started."""
    from tests.helpers import mlflow_runs, run_cli

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, text in (("sbatch", "echo 'sbatch: error: DNS SRV lookup failed' >&2\n"
                                  "echo 'sbatch: fatal: Could not establish a configuration source' >&2\nexit 1"),
                       ("squeue", "exit 1"), ("scancel", "exit 0")):
        (bin_dir / tool).write_text(f"#!/bin/sh\n{text}\n")
        (bin_dir / tool).chmod(0o755)
    path = study_file(name="nocluster", n_trials=2)
    done = run_cli("-q", "run", str(path), "--engine", "slurm", "--workers", "2", "--shared-dir", cwd=tmp_path,
                   env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: sbatch refused workers.sbatch (sbatch: fatal: Could not establish a "
                                  "configuration source); run the same command again"), done.stderr
    _, parents, runs = mlflow_runs(tmp_path / "st-hpo-runs" / "nocluster", "nocluster")
    assert [p.info.status for p in parents] == ["FAILED"] and not runs
