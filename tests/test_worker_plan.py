"""Which worker processes `st-hpo run` starts for --workers, --gpus and --trials-per-gpu."""

from __future__ import annotations

import pytest

from st_hpo import StudyDefinitionError
from st_hpo._execution._workers import plan_workers
from tests.helpers import run_cli


def _plan(**kw):
    return [(s.name, s.gpu) for s in plan_workers(**{"workers": None, "gpus": None, "trials_per_gpu": 1, **kw})]


def test_trials_per_gpu_gives_k_workers_per_listed_gpu():
    assert _plan(gpus="0,1", trials_per_gpu=2) == [("gpu0-w0", "0"), ("gpu0-w1", "0"), ("gpu1-w0", "1"),
                                                   ("gpu1-w1", "1")]


def test_trials_per_gpu_without_any_gpu_is_refused_not_ignored():
    with pytest.raises(StudyDefinitionError, match=r"--trials-per-gpu 4 needs GPUs, .*use --workers N"):
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
    with pytest.raises(StudyDefinitionError, match=r"--gpus 2: this process sees 2 GPU\(s\); give ids from 0 to 1"):
        _plan(gpus="0,2", devices=["0", "1"])
    with pytest.raises(StudyDefinitionError, match="--gpus 0: this process sees no GPU"):
        _plan(gpus="0", devices=[])


def test_contradictory_or_empty_plans_are_refused():
    with pytest.raises(StudyDefinitionError, match="not both"):
        _plan(workers=4, gpus="0,1", trials_per_gpu=2)
    with pytest.raises(StudyDefinitionError, match="at least 1"):
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
