"""Trials per hour with 1, 2 (and 4) worker processes on the same study, and the GPU busy fraction.

    python benchmarks/throughput.py                 # CPU: tiny model, 1 and 2 workers (`--workers K`)
    python benchmarks/throughput.py --quick         # smoke test: fewer trials
    python benchmarks/throughput.py --device-check  # GPU: MiniLM on 1,000 STSb pairs, 1, 2 and 4 workers per GPU

Each configuration runs ``st-hpo run`` as a subprocess on a fresh output directory with the same study,
seed and trial budget (no baseline, no pruning). Trials per hour are counted over the trial phase: from
the first trial's start to the last trial's end as the Optuna storage records them, so process start-up
(the same for every configuration) is left out; the whole command's wall time is reported beside it.
On a GPU, nvidia-smi samples utilisation every 200 ms during the run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

STUDY = Path(__file__).resolve().parent / "overhead_study.py"


class GpuSampler:
    """Samples nvidia-smi's utilization.gpu (%) in the background; (timestamp, percent) pairs."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        try:
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "200"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except FileNotFoundError:
            return self
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                self.samples.append((time.time(), float(line.split(",")[0])))
            except ValueError:
                continue

    def __exit__(self, *exc: Any) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()

    def busy(self, start: float, end: float) -> float | None:
        window = [p for t, p in self.samples if start <= t <= end]
        return round(statistics.mean(window) / 100, 3) if window else None


def run_one(workers: int, *, gpu: bool, n_trials: int, root: Path, time_limit: float | None = None) -> dict[str, Any]:
    import optuna

    out = root / f"w{workers}"
    cmd = [sys.executable, "-m", "st_hpo", "-q", "run", str(STUDY), "--output-dir", str(out),
           "--n-trials", str(n_trials), "--no-baseline", "--pruner", "none"]
    cmd += ["--gpus", "0", "--trials-per-gpu", str(workers)] if gpu else ["--workers", str(workers)]
    if time_limit:  # stop starting trials then: trials per hour are counted over the trials that ran
        cmd += ["--timeout", str(round(time_limit))]
    started = time.time()
    with GpuSampler() as sampler:
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "STHPO_BENCH_N_TRIALS": str(n_trials)})
    wall = time.time() - started
    if proc.returncode != 0:
        raise RuntimeError(f"st-hpo run failed with {workers} workers:\n{proc.stderr[-3000:]}")
    from st_hpo._execution._storage import open_storage

    study = optuna.load_study(study_name="overhead", storage=open_storage(str(out / "optuna.journal")))
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    first = min(t.datetime_start for t in done).timestamp()
    last = max(t.datetime_complete for t in done).timestamp()
    span = last - first
    return {
        "workers": workers, "trials": len(done), "trial_phase_seconds": round(span, 2),
        "trials_per_hour": round(len(done) / span * 3600, 1), "command_seconds": round(wall, 2),
        "best": round(max(t.value for t in done), 4),
        "mean": round(statistics.mean(t.value for t in done), 4),
        "gpu_busy": sampler.busy(first, last) if gpu else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny model, 2 trials")
    parser.add_argument("--device-check", action="store_true", help="GPU: MiniLM, 1/2/4 workers per GPU")
    ns = parser.parse_args()
    _common.quiet_libraries()
    if ns.device_check:
        counts, n_trials = (1, 2, 4), _common.env_int("STHPO_BENCH_N_TRIALS", 8)
        os.environ.setdefault("STHPO_BENCH_TRAIN_ROWS", "1000")
        os.environ.setdefault("STHPO_BENCH_EVAL_ROWS", "500")
    else:
        counts, n_trials = (1, 2), (2 if ns.quick else 6)
        os.environ.setdefault("STHPO_BENCH_MODEL", "tiny")
        os.environ.setdefault("STHPO_BENCH_TRAIN_ROWS", "64" if ns.quick else "256")
        os.environ.setdefault("STHPO_BENCH_EVAL_ROWS", "32" if ns.quick else "100")
    with tempfile.TemporaryDirectory(prefix="st-hpo-throughput-") as tmp:
        # $STHPO_BENCH_TIME_LIMIT (seconds, for all configurations): each stops starting trials after its share
        share = float(os.environ.get("STHPO_BENCH_TIME_LIMIT", 0)) / len(counts) or None
        rows = [run_one(k, gpu=ns.device_check, n_trials=n_trials, root=Path(tmp), time_limit=share) for k in counts]
    base = rows[0]["trials_per_hour"]
    lines = ["| workers | trials | trial phase s | trials/hour | vs 1 worker | best | mean | GPU busy | whole command s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        busy = "-" if r["gpu_busy"] is None else f"{r['gpu_busy']:.0%}"
        lines.append(f"| {r['workers']} | {r['trials']} | {r['trial_phase_seconds']} | {r['trials_per_hour']} | "
                     f"{r['trials_per_hour'] / base:.2f}x | {r['best']} | {r['mean']} | {busy} | {r['command_seconds']} |")
    cfg = _common.bench_config()
    where = "GPU, workers per GPU" if ns.device_check else "CPU, --workers"
    table = (f"{where}: {_common.model_label(cfg['model'])}, {cfg['train_rows']} train pairs, {cfg['eval_rows']} dev "
             f"pairs, batch {cfg['batch_size']}, 1 epoch, {n_trials} trials per configuration, same seed.\n\n"
             + "\n".join(lines))
    name = "throughput" + ("-gpu" if ns.device_check else "-quick" if ns.quick else "")
    _common.write_results(name, {"rows": rows, "config": cfg}, table)
    print(table)


if __name__ == "__main__":
    main()
