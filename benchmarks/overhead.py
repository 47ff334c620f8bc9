"""Per-trial overhead and end-to-end time: st-hpo (``st-hpo run``) vs the sentence-transformers docs' HPO
recipe (``SentenceTransformerTrainer.hyperparameter_search(backend="optuna")``), in the same run.

    .venv/bin/python benchmarks/overhead.py                 # CPU: MiniLM, 256 STSb train pairs, 8 trials
    .venv/bin/python benchmarks/overhead.py --quick         # seconds: tiny model, synthetic pairs, 2 trials
    python benchmarks/overhead.py --device-check            # GPU: MiniLM, full STSb train, 1 epoch, fp32

Each side runs as its own subprocess (process start, imports and everything else included) on the same
model, data, fixed arguments (four evaluations per trial), space (learning_rate, warmup_ratio), sampler
seed and trial count, without pruning. The parent times each whole command; timing probes
(benchmarks/_probe.py) in both processes time ``trainer.train()``, the training loop and every
evaluation, so each trial splits into:

    wall             one trial's share of the trial phase: from one trial's train() start to the next's
    train()          the literal trainer.train() call (the anchor's includes model_init: the model load)
    training         the training loop minus the evaluations inside it (forward, backward, optimizer)
    outside training wall - training: model load/copy, evaluations, trainer set-up, tracking, storage
    evaluator        the evaluator's calls (the same work on both sides)
    eval-loss pass   evaluate() minus the evaluator: the anchor's pass over eval_dataset
    model load       SentenceTransformer() calls (the anchor loads the model from disk every trial)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

SIDES = ("anchor", "st-hpo")


class GpuSampler:
    """``nvidia-smi`` utilization.gpu (percent of time a kernel ran) sampled every 250 ms, time-stamped here."""

    def __init__(self) -> None:
        import threading

        self.samples: list[tuple[float, float]] = []
        self.proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "250"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            try:
                self.samples.append((time.time(), float(line.split(",")[0])))
            except ValueError:
                continue

    def mean(self, t0: float, t1: float) -> float | None:
        values = [u for t, u in self.samples if t0 <= t <= t1]
        return statistics.mean(values) if values else None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _cli() -> list[str]:
    """``st-hpo`` next to this Python when installed, else ``python -m st_hpo.cli`` (the GPU box)."""
    exe = Path(sys.executable).with_name("st-hpo")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "st_hpo.cli"]


def _command(side: str, out: Path) -> list[str]:
    if side == "anchor":
        return [sys.executable, str(_common.BENCH_DIR / "overhead_anchor.py"), str(out)]
    return [*_cli(), "-q", "run", str(_common.BENCH_DIR / "overhead_study.py"), "--output-dir", str(out)]


def _env(cfg: dict[str, Any], probe: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "STHPO_BENCH_MODEL": cfg["model"], "STHPO_BENCH_DATA": cfg["data"],
        "STHPO_BENCH_TRAIN_ROWS": str(cfg["train_rows"]), "STHPO_BENCH_EVAL_ROWS": str(cfg["eval_rows"]),
        "STHPO_BENCH_N_TRIALS": str(cfg["n_trials"]), "STHPO_BENCH_SEED": str(cfg["seed"]),
        "STHPO_BENCH_BATCH": str(cfg["batch_size"]), "STHPO_BENCH_EPOCHS": str(cfg["epochs"]),
        "STHPO_BENCH_PROBE": str(probe), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1",
        "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
    })
    src = str(_common.REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


class Side:
    """One side's subprocess, started with :meth:`start` and collected with :meth:`finish`."""

    def __init__(self, side: str, cfg: dict[str, Any], work: Path) -> None:
        self.side, self.cfg = side, cfg
        self.out, self.probe, self.log = work / side, work / f"{side}.probe.jsonl", work / f"{side}.log"
        self.cmd = _command(side, self.out)
        self.probe.unlink(missing_ok=True)

    def start(self) -> None:
        print(f"[overhead] {self.side}: {' '.join(self.cmd)}", flush=True)
        self.fh = open(self.log, "w")  # noqa: SIM115 - closed in finish()
        self.t0 = time.time()
        self.proc = subprocess.Popen(self.cmd, env=_env(self.cfg, self.probe), stdout=self.fh,
                                     stderr=subprocess.STDOUT)

    def poll(self) -> bool:
        """True once the process has exited; its exit time is taken at the first poll that sees it."""
        if getattr(self, "t1", None) is None and self.proc.poll() is not None:
            self.t1 = time.time()
        return getattr(self, "t1", None) is not None

    def finish(self, gpu: GpuSampler | None = None) -> dict[str, Any]:
        while not self.poll():
            time.sleep(0.02)
        code, t1 = self.proc.returncode, self.t1
        self.fh.close()
        if code != 0:
            sys.stderr.write(self.log.read_text()[-4000:])
            raise SystemExit(f"[overhead] {self.side} failed with exit code {code}; log above")
        events = [json.loads(line) for line in self.probe.read_text().splitlines() if line.strip()]
        result = analyse(events, self.t0, t1)
        result["command"] = " ".join(self.cmd)
        if gpu is not None:
            trains = [e for e in events if e["ev"] == "train"]
            result["gpu_busy_pct_whole_command"] = gpu.mean(self.t0, t1)
            result["gpu_busy_pct_trial_phase"] = gpu.mean(min(e["t0"] for e in trains),
                                                          max(e["t1"] for e in trains))
        print(f"[overhead] {self.side}: {result['end_to_end_s']:.1f}s end to end, {result['n_trials']} trials, "
              f"{result['per_trial']['wall_s']:.2f}s/trial wall, "
              f"{result['per_trial']['outside_training_s']:.2f}s/trial outside training", flush=True)
        return result


def run_sides(order: tuple[str, ...], cfg: dict[str, Any], work: Path, *, parallel: bool,
              gpu: GpuSampler | None) -> dict[str, dict[str, Any]]:
    """Run the sides one after the other, or both at once (``parallel``: same load on a shared machine)."""
    sides = [Side(name, cfg, work) for name in order]
    if not parallel:
        results = {}
        for side in sides:
            side.start()
            results[side.side] = side.finish(gpu)
        return results
    for side in sides:
        side.start()
    while not all([side.poll() for side in sides]):  # each side's exit time, whichever ends first
        time.sleep(0.02)
    return {side.side: side.finish(gpu) for side in sides}


def _within(events: list[dict], name: str, t0: float, t1: float) -> list[dict]:
    return [e for e in events if e["ev"] == name and e["t0"] >= t0 and e["t1"] <= t1]


def _dur(events: list[dict]) -> float:
    return sum(e["t1"] - e["t0"] for e in events)


def analyse(events: list[dict], start: float, end: float) -> dict[str, Any]:
    """Split the probe timeline into per-trial figures (means over the steady-state trials) and fixed costs.

    A trial's wall time is the time from its train() start to the next trial's: every step of the study
    loop (tell, ask, sampling, tracking, model copy or load, trainer set-up) falls in exactly one trial.
    The last trial has no successor, so the per-trial means are over the first n-1 trials (n >= 2).
    """
    trains = sorted((e for e in events if e["ev"] == "train"), key=lambda e: e["t0"])
    if len(trains) < 2:
        raise SystemExit(f"[overhead] need at least 2 trials, the probe saw {len(trains)}")
    rows = []
    for i, tr in enumerate(trains):
        nxt = trains[i + 1]["t0"] if i + 1 < len(trains) else None
        loops = _within(events, "loop", tr["t0"], tr["t1"])
        loop = _dur(loops)
        evals_in_loop = sum(_dur(_within(events, "evaluate", lp["t0"], lp["t1"])) for lp in loops)
        span_end = nxt if nxt is not None else tr["t1"]
        evaluate = _dur(_within(events, "evaluate", tr["t0"], span_end))
        evaluator = _dur(_within(events, "evaluator", tr["t0"], span_end))
        load = _dur(_within(events, "model_load", trains[i - 1]["t1"] if i else tr["t0"], span_end))
        row = {"train_call_s": tr["t1"] - tr["t0"], "loop_s": loop, "training_s": loop - evals_in_loop,
               "evaluate_s": evaluate, "evaluator_s": evaluator, "eval_loss_pass_s": evaluate - evaluator,
               "model_load_s": load, "evaluations": len(_within(events, "evaluate", tr["t0"], span_end))}
        if nxt is not None:
            row["wall_s"] = nxt - tr["t0"]
            row["outside_training_s"] = row["wall_s"] - row["training_s"]
            row["outside_train_call_s"] = row["wall_s"] - row["train_call_s"]
            row["other_s"] = row["outside_training_s"] - evaluate - load
        rows.append(row)
    steady = rows[:-1]
    per_trial = {k: statistics.mean(r[k] for r in steady) for k in steady[0]}
    first, last = trains[0], trains[-1]
    return {
        "n_trials": len(trains),
        "end_to_end_s": end - start,
        "before_first_trial_s": first["t0"] - start,
        "trial_phase_s": last["t1"] - first["t0"],
        "after_last_train_s": end - last["t1"],
        "per_trial": per_trial,
        "trials": rows,
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def summarize(results: dict[str, dict], cfg: dict[str, Any], mode: str,
              parallel: bool = False) -> tuple[dict[str, Any], str]:
    a, s = results["anchor"], results["st-hpo"]
    pa, ps = a["per_trial"], s["per_trial"]
    keys = [("wall_s", "wall"), ("train_call_s", "train() call"), ("training_s", "training (loop - evals)"),
            ("outside_training_s", "outside training"), ("outside_train_call_s", "outside train() call"),
            ("evaluator_s", "evaluator"), ("eval_loss_pass_s", "evaluate() minus evaluator (eval-loss pass, callbacks)"), ("model_load_s", "model load"),
            ("other_s", "other (set-up, tracking, storage)")]
    rows = [[label, pa[k], ps[k], _ratio(ps[k], pa[k])] for k, label in keys]
    fixed = [("end_to_end_s", f"whole command, {cfg['n_trials']} trials"),
             ("before_first_trial_s", "start to first trial"), ("trial_phase_s", "trial phase"),
             ("after_last_train_s", "after the last train()")]
    rows += [[label, a[k], s[k], _ratio(s[k], a[k])] for k, label in fixed]
    framework_a = pa["outside_training_s"] - pa["evaluator_s"]
    framework_s = ps["outside_training_s"] - ps["evaluator_s"]
    rows.append(["outside training, evaluator excluded", framework_a, framework_s, _ratio(framework_s, framework_a)])
    for key, label in (("gpu_busy_pct_trial_phase", "GPU busy % (nvidia-smi), trial phase"),
                       ("gpu_busy_pct_whole_command", "GPU busy % (nvidia-smi), whole command")):
        if a.get(key) is not None and s.get(key) is not None:
            rows.append([label, a[key], s[key], _ratio(s[key], a[key])])
    targets = {
        "outside_training_ratio": _ratio(ps["outside_training_s"], pa["outside_training_s"]),
        "outside_training_target": 0.5,
        "outside_training_met": ps["outside_training_s"] <= 0.5 * pa["outside_training_s"],
        "end_to_end_ratio": _ratio(s["end_to_end_s"], a["end_to_end_s"]),
        "end_to_end_met": s["end_to_end_s"] <= a["end_to_end_s"],
    }
    table = (f"{mode}: {_common.model_label(cfg['model'])}, {cfg['train_rows']} train pairs, "
             f"{cfg['eval_rows']} dev pairs ({'synthetic' if cfg['data'] == 'synthetic' else 'STSb'}), "
             f"batch {cfg['batch_size']}, {cfg['epochs']:g} epoch, 4 evaluations per trial, {cfg['n_trials']} "
             f"trials, TPE seed {cfg['seed']}, no pruning; the sides ran "
             f"{'at the same time' if parallel else 'one after the other'}. Per-trial figures are means over "
             "trials 0..n-2 (seconds).\n\n"
             + _common.md_table(["seconds", "anchor", "st-hpo", "st-hpo / anchor"], rows)
             + f"\nTargets: outside training per trial <= 0.5x anchor: "
             f"{targets['outside_training_ratio']:.2f}x ({'met' if targets['outside_training_met'] else 'missed'}); "
             f"whole command <= anchor: {targets['end_to_end_ratio']:.2f}x "
             f"({'met' if targets['end_to_end_met'] else 'missed'}).\n")
    return {"mode": mode, "config": cfg, "results": results, "targets": targets}, table


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, synthetic data, 2 trials (seconds)")
    p.add_argument("--device-check", action="store_true",
                   help="the GPU variant: MiniLM, full STSb train and dev, 1 epoch, fp32, 8 trials")
    p.add_argument("--trials", type=int)
    p.add_argument("--train-rows", type=int)
    p.add_argument("--eval-rows", type=int)
    p.add_argument("--model", help="minilm, tiny, or a SentenceTransformer folder")
    p.add_argument("--data", help="folder with train.csv and dev.csv, or 'synthetic'")
    p.add_argument("--order", choices=["anchor-first", "st-hpo-first"], default="anchor-first")
    p.add_argument("--parallel", action="store_true",
                   help="run both sides at the same time (a shared CPU machine: both see the same load); "
                   "not with a GPU, where they would share it")
    p.add_argument("--name", help="results file name (default: overhead, overhead-quick or overhead-gpu)")
    p.add_argument("--keep", action="store_true", help="keep the runs' folders and logs")
    return p.parse_args(argv)


def configure(ns: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if ns.quick:
        defaults = {"STHPO_BENCH_MODEL": "tiny", "STHPO_BENCH_DATA": "synthetic", "STHPO_BENCH_TRAIN_ROWS": "64",
                    "STHPO_BENCH_EVAL_ROWS": "32", "STHPO_BENCH_N_TRIALS": "2"}
        mode = "quick"
    elif ns.device_check:
        defaults = {"STHPO_BENCH_TRAIN_ROWS": "100000", "STHPO_BENCH_EVAL_ROWS": "100000"}
        mode = "device-check"
    else:
        defaults, mode = {}, "cpu"
    _common.apply_settings(ns, defaults)
    if mode != "device-check":
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 shared cores: two torch threads fight for them
    cfg = _common.bench_config()
    if cfg["data"] != "synthetic":  # the real row counts (the files may hold fewer than asked)
        cfg["train_rows"] = len(_common.load_pairs("train", cfg["train_rows"]))
        cfg["eval_rows"] = len(_common.load_pairs("dev", cfg["eval_rows"]))
    return cfg, mode


def main(argv: list[str] | None = None) -> int:
    ns = parse(argv)
    _common.quiet_libraries()
    cfg, mode = configure(ns)
    name = ns.name or {"quick": "overhead-quick", "device-check": "overhead-gpu"}.get(mode, "overhead")
    work = Path(tempfile.mkdtemp(prefix="st-hpo-overhead-"))
    order = SIDES if ns.order == "anchor-first" else SIDES[::-1]
    gpu = GpuSampler() if mode == "device-check" and shutil.which("nvidia-smi") else None
    try:
        results = run_sides(order, cfg, work, parallel=ns.parallel, gpu=gpu)
    finally:
        if gpu is not None:
            gpu.stop()
        if ns.keep:
            print(f"[overhead] kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    data, table = summarize(results, cfg, mode, ns.parallel)
    data["order"] = list(order)
    data["parallel"] = ns.parallel
    path = _common.write_results(name, data, table)
    print(table)
    print(f"[overhead] wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
