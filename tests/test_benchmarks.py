"""The benchmarks still run: each one in its quickest mode (tiny model, synthetic pairs, a few trials).

Results go to a temporary folder (``STHPO_BENCH_RESULTS``), never over benchmarks/results/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _run(script: str, tmp_path: Path, *extra: str) -> dict:
    env = dict(os.environ, STHPO_BENCH_RESULTS=str(tmp_path / "results"), STHPO_BENCH_CACHE=str(tmp_path / "cache"),
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--quick", *extra], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    name = script.removesuffix(".py") + "-quick"
    assert (tmp_path / "results" / f"{name}.md").read_text().startswith(f"### {name}")
    data = json.loads((tmp_path / "results" / f"{name}.json").read_text())
    assert data["machine"]["cores"] >= 1 and data["versions"]["torch"]
    return data


def test_overhead_quick(tmp_path):
    data = _run("overhead.py", tmp_path, "--parallel")
    for side in ("anchor", "st-hpo"):
        result = data["results"][side]
        assert result["n_trials"] == 2
        per_trial = result["per_trial"]
        assert per_trial["wall_s"] > per_trial["training_s"] > 0
        assert result["end_to_end_s"] > result["trial_phase_s"] > 0
    assert data["results"]["anchor"]["per_trial"]["model_load_s"] > 0, "the anchor loads the model every trial"
    assert data["targets"]["end_to_end_ratio"] > 0


def test_pruning_quick(tmp_path):
    data = _run("pruning.py", tmp_path, "--trials", "3")
    assert {(r["pruner"], r["complete"] + r["pruned"]) for r in data["runs"]} == {("none", 3), ("median", 3)}
    (seed,) = data["per_seed"]
    assert seed["steps_none"] > 0 and 0 < seed["steps_ratio"] <= 1.0


def test_memory_drift_quick(tmp_path):
    data = _run("memory_drift.py", tmp_path)
    assert data["counts"] == {"complete": 3, "pruned": 2, "failed": 1}
    assert [s["after_trial"] for s in data["samples"]] == [1, 2, 3, 4, 5, 6]
    assert all(s["rss_mb"] > 0 for s in data["samples"])
    assert data["checks"][0]["key"] == "rss_mb"


def test_study_time_quick(tmp_path):
    data = _run("study_time.py", tmp_path)
    (run,) = data["runs"]
    assert (run["trials"], run["seed"]) == (2, 42)
    assert run["recipe"]["n_trials"] == 2 and run["st-hpo"]["n_complete"] + run["st-hpo"]["n_pruned"] == 2
    for side in ("recipe", "st-hpo"):
        assert run[side]["wall_s"] > 0 and -1 <= run[side]["best_dev"] <= 1
        assert -1 <= run[side]["best_test"] <= 1, "the best model's test score, on both sides"
    (row,) = data["summary"]
    assert row["wall_ratio"] == pytest.approx(run["st-hpo"]["wall_s"] / run["recipe"]["wall_s"])


def test_eval_subset_quick(tmp_path):
    data = _run("eval_subset.py", tmp_path)
    assert [r["k"] for r in data["by_size"]] == [50, 100] and len(data["models"]) == 5
    for row in data["by_size"]:
        assert -1 <= row["tau_mean"] <= 1 and 0 <= row["top1_same"] <= 1 and row["regret_mean"] >= 0


def test_gpu_trials_quick(tmp_path):
    data = _run("gpu_trials.py", tmp_path)
    figures = data["figures"]
    # on the CPU: trials recorded the CPU, the simulated out-of-memory trial is recorded as such and its worker
    # went on
    assert figures["trials_on_cuda"] is False and figures["kinds_on_cuda"] == {"cross-encoder": False,
                                                                             "sparse-encoder": False}
    assert figures["oom_trial"] == "OUT_OF_MEMORY" and figures["next_trial_after_oom"] == "COMPLETE"
    assert data["workers"]["oom_error_says_out_of_memory"]
    assert str(figures["supervisor_cuda_context"]).startswith("not measured")
    assert not (tmp_path / "results" / "gpu-check.json").exists()
    trained = [t for t in data["workers"]["trials"] if t["state"] == "COMPLETE"]
    assert trained and all(t["device"] == {"model": "cpu", "optimizer_state": "cpu"} for t in trained)


def test_gpu_memory_quick(tmp_path):
    data = _run("gpu_memory.py", tmp_path)
    figures = data["figures"]
    # the simulated out of memory above 8 rows: the GradCache loss came down from 32 to 8 and completed
    cached = figures["cached_mini_batch"]
    assert cached["state"] == "COMPLETE" and cached["mini_batch_size_given"] == 32
    assert cached["mini_batch_size_trained"] == 8
    costs = figures["multi_objective_costs"]
    assert len(costs) == 2 and all(c["encode_ms"] > 0 and c["peak_memory_mb"] is not None for c in costs)
    assert figures["probe_memory"]["exit_code"] == 0 and any("nothing to probe" in line for line in data["probe"]["lines"])
    assert not (tmp_path / "results" / "gpu-check.json").exists()


def test_gpu_check_parts_run_every_step_once(tmp_path):
    """The device calls' parts: part1 and part2 together run each of the five steps once (a dry run)."""
    env = dict(os.environ, PYTHON="echo", OUT=str(tmp_path))
    ran = []
    for part in ("part1", "part2"):
        out = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), part], env=env, capture_output=True,
                             text=True, timeout=60).stdout
        ran += [line.split()[0] for line in out.splitlines() if line.startswith("benchmarks/")]
    assert sorted(ran) == sorted(f"benchmarks/{s}.py" for s in ("gpu_trials", "gpu_memory", "overhead",
                                                               "memory_drift", "throughput"))


def test_checkpoint_cost_quick(tmp_path):
    data = _run("checkpoint_cost.py", tmp_path)
    figures = data["figures"]
    assert figures["wall_off_s"] > 0 and figures["wall_on_s"] > 0
    assert figures["save_seconds_per_trial"] > 0, "the run with checkpoints saved them, and timed the saves"
    assert figures["interval_for_5pct_min"] > 0


@pytest.mark.skipif(not (REPO.parent / "shared" / "data" / "stsb-en" / "train.csv").is_file(),
                    reason="needs the STS benchmark CSVs in ../shared/data/stsb-en")
def test_quality_cost_quick(tmp_path):
    """The ready quality-against-cost study, run as a user runs it (needs issue 25's several objectives and
    measured costs)."""
    data = _run("quality_cost.py", tmp_path)
    assert data["counts"]["COMPLETE"] + data["counts"]["PRUNED"] == 3 and data["n_pruned"] == data["counts"]["PRUNED"]
    assert data["front"] and {r["number"] for r in data["front"]} == {p["number"] for p in data["best_json"]["pareto"]}
    for row in data["front"]:
        assert row["state"] == "COMPLETE" and -1 <= row["spearman"] <= 1 and row["encode_ms"] > 0
        assert row["embedding_dim"] in (8, 16, 32) and row["learning_rate"] > 0
    assert data["commit"] is None or len(data["commit"]) >= 7
