"""Which worker processes `st-hpo run` starts for --workers, --gpus and --trials-per-gpu."""

from __future__ import annotations

import pytest

from st_hpo import UsageError
from st_hpo._execution._workers import plan_workers
from tests.helpers import run_cli


def _plan(**kw):
    return [(s.name, s.gpu) for s in plan_workers(**{"workers": None, "gpus": None, "trials_per_gpu": 1, **kw})]


def test_trials_per_gpu_gives_k_workers_per_listed_gpu():
    assert _plan(gpus="0,1", trials_per_gpu=2) == [("gpu0-w0", "0"), ("gpu0-w1", "0"), ("gpu1-w0", "1"),
                                                   ("gpu1-w1", "1")]


def test_trials_per_gpu_without_any_gpu_is_refused_not_ignored():
    with pytest.raises(UsageError, match=r"trials_per_gpu=4 needs GPUs, .*use workers=N"):
        _plan(trials_per_gpu=4)


def test_workers_are_spread_round_robin_over_the_gpus():
    assert _plan(workers=3, gpus="0,1") == [("gpu0-w0", "0"), ("gpu1-w0", "1"), ("gpu0-w1", "0")]


def test_workers_without_gpus_run_on_the_cpu():
    assert _plan(workers=2) == [("w0", None), ("w1", None)]


def test_gpu_ids_are_positions_among_the_visible_gpus():
    # inside a job whose CUDA_VISIBLE_DEVICES=2,3: --gpus 0,1 are GPUs 2 and 3, and each worker sees one
    assert _plan(gpus="0,1", devices=["2", "3"]) == [("gpu0-w0", "2"), ("gpu1-w0", "3")]
    assert _plan(workers=3, gpus="1", devices=["GPU-a1b2", "GPU-c3d4"]) == [
        ("gpu1-w0", "GPU-c3d4"), ("gpu1-w1", "GPU-c3d4"), ("gpu1-w2", "GPU-c3d4")]


def test_gpus_the_process_cannot_see_are_refused():
    with pytest.raises(UsageError, match=r"gpus=2: this process sees 2 GPU\(s\); give ids from 0 to 1"):
        _plan(gpus="0,2", devices=["0", "1"])
    with pytest.raises(UsageError, match="gpus=0: this process sees no GPU"):
        _plan(gpus="0", devices=[])
    with pytest.raises(UsageError, match="gpus=0,1: this process sees no GPU"):  # all of them, as typed
        _plan(gpus="0,1", devices=[])


def test_contradictory_or_empty_plans_are_refused():
    with pytest.raises(UsageError, match="not both"):
        _plan(workers=4, gpus="0,1", trials_per_gpu=2)
    with pytest.raises(UsageError, match="at least 1"):
        _plan(workers=0)


def test_a_contradictory_plan_fails_before_anything_is_created(tmp_path, study_file):

    proc = run_cli("run", str(study_file()), "--workers", "4", "--trials-per-gpu", "2", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: give --workers N (spread over the GPUs) or --trials-per-gpu K, not both"
    assert not (tmp_path / "st-hpo-runs").exists()


def test_gpus_on_a_machine_without_one_fail_before_anything_is_created(tmp_path, study_file):

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = run_cli("run", str(study_file()), "--gpus", "0", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: --gpus 0: this process sees no GPU")
    assert not (tmp_path / "st-hpo-runs").exists()


def _slots(monkeypatch, devices, **kw):
    from st_hpo._execution import _workers
    from st_hpo._execution._plan import decide_slots

    monkeypatch.setattr(_workers, "visible_gpus", lambda: list(devices))
    return [(s.name, s.gpu, s.gpus, s.cpus) for s in decide_slots(**kw)]


def test_one_function_decides_the_slots_for_the_cli_and_the_api(monkeypatch):
    # nothing asked: several visible GPUs (and a study file for the workers) give one worker per GPU; one GPU
    # or none trains in the run's own process, from the CLI as from run_study()
    assert _slots(monkeypatch, ["0", "1"], study_file="s.py") == [("gpu0-w0", "0", 1.0, 1), ("gpu1-w0", "1", 1.0, 1)]
    assert _slots(monkeypatch, ["0"], study_file="s.py") == []
    assert _slots(monkeypatch, [], study_file="s.py") == []
    assert _slots(monkeypatch, ["0", "1"]) == []  # no study file to load: in this process
    assert _slots(monkeypatch, ["3", "5"], workers=3) == [("gpu0-w0", "3", 1.0, 1), ("gpu1-w0", "5", 1.0, 1),
                                                          ("gpu0-w1", "3", 1.0, 1)]
    assert _slots(monkeypatch, [], workers=2) == [("w0", None, 0.0, 1), ("w1", None, 0.0, 1)]


def test_a_cluster_engine_gets_slots_of_gpu_shares_never_checked_against_this_host(monkeypatch):
    assert _slots(monkeypatch, [], engine="slurm", workers=2, gpus_per_worker=1, cpus_per_worker=4) == [
        ("slurm-w0", None, 1.0, 4), ("slurm-w1", None, 1.0, 4)]
    with pytest.raises(UsageError, match="engine=slurm places workers on the cluster's GPUs"):
        _slots(monkeypatch, [], engine="slurm", gpus="0")
    with pytest.raises(UsageError, match="gpus_per_worker= is for engine=slurm or ray"):
        _slots(monkeypatch, ["0"], gpus_per_worker=1)


def test_a_plan_written_is_read_back_and_a_worker_finds_its_slot(tmp_path, monkeypatch):
    from st_hpo._execution._plan import SlotPlan, WorkerPlan, read_plan

    plan = WorkerPlan(study_file="/s.py", study_name="s", output_dir=str(tmp_path), storage="x.journal",
                      tracking_uri=None, budget=4, deadline=None, engine="slurm",
                      slots=(SlotPlan("slurm-w0", None, 1.0, 2), SlotPlan("slurm-w1", None, 1.0, 2)),
                      options={"pruner": "none"})
    back = read_plan(plan.write(tmp_path / "worker-plan.json"))
    assert back == plan
    assert back.slot("1").name == "slurm-w1" and back.slot("slurm-w0").name == "slurm-w0"
    with pytest.raises(UsageError, match="the worker plan has no slot 'w9'"):
        back.slot("w9")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UsageError, match="not a worker plan of this st-hpo version"):
        read_plan(tmp_path / "bad.json")


def test_usage_errors_name_the_api_parameters_and_the_cli_shows_its_options(tmp_path, study_file):
    """The library says ``workers=0`` (what a Python caller typed); the command line says ``--workers 0``."""
    with pytest.raises(UsageError, match=r"^workers=0: give at least 1$") as caught:
        _plan(workers=0)
    assert isinstance(caught.value, ValueError), "a bad argument is also a ValueError"
    assert caught.value.as_options() == "--workers 0: give at least 1"
    proc = run_cli("run", str(study_file()), "--workers", "0", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip() == "error: --workers 0: give at least 1"
    proc = run_cli("run", str(study_file()), "--gpus", "0", cwd=tmp_path)
    assert "leave --gpus out, or use --workers N to run on the CPU" in proc.stderr, proc.stderr
