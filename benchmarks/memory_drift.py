"""Memory drift over many trials in one process: process RSS (and CUDA allocated/reserved) after each trial.

    .venv/bin/python benchmarks/memory_drift.py             # CPU: 30 trials, small random BERT (hidden 64)
    .venv/bin/python benchmarks/memory_drift.py --quick     # seconds: 6 trials
    python benchmarks/memory_drift.py --device-check        # GPU: 30 trials of MiniLM on CUDA

One ``st_hpo.run_study`` with a deterministic mix of outcomes: trials whose number is 2 mod 5 fail in
the middle of training (the loss raises at its second forward pass, after the first optimizer step and
before the second evaluation, so a failing trial is never pruned first), trials
whose number is 1 mod 3 (and not failing) are pruned at their second evaluation by a pruner that says so,
the rest complete. Memory is read at the start of every trial, before anything of it is built (so after
the previous trial was cleaned up). One more trial runs after the N measured ones, so that "after trial N"
is read the same way, before ``run_study``'s end-of-run work (the MLflow sync and the report plots, whose
libraries load once); that work's figure is reported beside the table ("after the run").

Target: RSS after trial 30 within 5% or 100 MB of RSS after trial 3.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

FAIL_EVERY, FAIL_AT = 5, 2  # trial number % 5 == 2 fails
PRUNE_EVERY, PRUNE_AT = 3, 1  # trial number % 3 == 1 is pruned (unless it fails first)
TARGET_PCT, TARGET_MB = 5.0, 100.0


def fails(number: int) -> bool:
    return number % FAIL_EVERY == FAIL_AT


def make_pruner() -> Any:
    import optuna

    class EveryThirdPruner(optuna.pruners.BasePruner):
        """Prunes the trials whose number is 1 mod 3 at their second report."""

        def prune(self, study: Any, trial: Any) -> bool:
            return trial.number % PRUNE_EVERY == PRUNE_AT and len(trial.intermediate_values) >= 2

    return EveryThirdPruner()


def make_loss(model: Any, params: dict[str, Any]) -> Any:
    """CoSENTLoss that raises at forward pass ``loss.fail_at`` (0: never) when the space marks the trial to fail."""
    import torch
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    class FailingLoss(torch.nn.Module):
        def __init__(self, inner: Any, fail_at: int) -> None:
            super().__init__()
            self.inner, self.fail_at, self.calls = inner, fail_at, 0
            self.model = inner.model

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.fail_at and self.calls >= self.fail_at:
                raise RuntimeError(f"injected failure at forward pass {self.calls}")
            return self.inner(*args, **kwargs)

    return FailingLoss(CoSENTLoss(model), int(params.get("loss.fail_at", 0)))


class MemoryLog:
    """Reads RSS (and CUDA memory) when a trial starts; the space callable calls it."""

    def __init__(self, study_name: str) -> None:
        import psutil

        self.process = psutil.Process()
        self.study_name = study_name
        self.samples: list[dict[str, Any]] = []
        self.started = time.perf_counter()

    def read(self, after_trial: int) -> None:
        sample = {"after_trial": after_trial, "rss_mb": self.process.memory_info().rss / 2**20,
                  # st-hpo freezes older objects during a trial: count the frozen ones too
                  "python_objects": len(gc.get_objects()) + gc.get_freeze_count(),
                  "t": time.perf_counter() - self.started}
        import torch

        if torch.cuda.is_available():
            sample["cuda_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
            sample["cuda_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
        self.samples.append(sample)

    def space(self, trial: Any) -> dict[str, Any]:
        if trial.study.study_name == self.study_name and trial.number > 0:
            self.read(after_trial=trial.number)  # trials are numbered from 0: trial k-1 is the k-th
        return {
            "learning_rate": trial.suggest_float("learning_rate", 1e-5, 2e-4, log=True),
            "warmup_ratio": trial.suggest_float("warmup_ratio", 0.0, 0.3),
            "loss.fail_at": 2 if fails(trial.number) else 0,
        }


def drift(samples: list[dict[str, Any]], key: str, first: int, last: int) -> dict[str, Any] | None:
    by_trial = {s["after_trial"]: s for s in samples}
    if first not in by_trial or last not in by_trial or key not in by_trial[first]:
        return None
    a, b = by_trial[first][key], by_trial[last][key]
    growth = b - a
    pct = 100.0 * growth / a if a else 0.0
    return {"key": key, "after_first": a, "after_last": b, "growth_mb": growth, "growth_pct": pct,
            "met": growth <= TARGET_MB or pct <= TARGET_PCT}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="6 trials, tiny model, synthetic pairs (seconds)")
    p.add_argument("--device-check", action="store_true", help="GPU: MiniLM on CUDA")
    p.add_argument("--trials", type=int)
    p.add_argument("--model", help="tiny-hH (random BERT, hidden H), minilm, minilm-lN, or a folder")
    p.add_argument("--train-rows", type=int)
    p.add_argument("--eval-rows", type=int)
    p.add_argument("--data", help="folder with train.csv and dev.csv, or 'synthetic'")
    p.add_argument("--name", help="results file name (default: memory_drift, memory_drift-quick or -gpu)")
    p.add_argument("--time-limit", type=float, default=float(os.environ.get("STHPO_BENCH_TIME_LIMIT", 0)) or None,
                   help="stop starting trials after S seconds (run_study's timeout) and report the trials that ran "
                        "(default: $STHPO_BENCH_TIME_LIMIT, else none)")
    return p.parse_args(argv)


def configure(ns: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if ns.quick:
        mode, defaults = "quick", {"STHPO_BENCH_MODEL": "tiny", "STHPO_BENCH_DATA": "synthetic",
                                   "STHPO_BENCH_TRAIN_ROWS": "64", "STHPO_BENCH_EVAL_ROWS": "32",
                                   "STHPO_BENCH_N_TRIALS": "6"}
    elif ns.device_check:
        mode, defaults = "device-check", {"STHPO_BENCH_MODEL": "minilm", "STHPO_BENCH_TRAIN_ROWS": "256",
                                          "STHPO_BENCH_EVAL_ROWS": "200", "STHPO_BENCH_N_TRIALS": "30"}
    else:
        mode, defaults = "cpu", {"STHPO_BENCH_MODEL": "tiny-h64", "STHPO_BENCH_TRAIN_ROWS": "64",
                                 "STHPO_BENCH_EVAL_ROWS": "32", "STHPO_BENCH_N_TRIALS": "30"}
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    _common.apply_settings(ns, defaults)
    cfg = _common.config_with_data()
    return cfg, mode


def run(cfg: dict[str, Any], work: Path, time_limit: float | None = None
        ) -> tuple[MemoryLog, dict[str, int], dict[str, Any]]:
    import st_hpo

    log = MemoryLog("memory-drift")
    args = {k: v for k, v in _common.training_args(cfg, "unused").items() if k not in ("output_dir", "report_to")}
    args["logging_steps"] = 1
    study = st_hpo.Study(
        name="memory-drift", model=cfg["model"], train_dataset=cfg["train"], eval_dataset=cfg["dev"],
        loss=make_loss, evaluator=_common.make_evaluator, objective=_common.OBJECTIVE, args=args,
        space=log.space, n_trials=cfg["n_trials"], sampler="random", pruner=make_pruner(), seed=0,
        baseline=False,
    )
    # failed trials do not count towards the budget: ask for the finished ones the mix leaves, and one more
    # so that memory after trial N is read at the start of trial N+1
    n = cfg["n_trials"]
    finished = sum(not fails(k) for k in range(n))
    st_hpo.run_study(study, n_trials=finished + 1, output_dir=work / "study", progress=False, timeout=time_limit)
    gc.collect()
    log.read(after_trial=-1)
    after_run = log.samples.pop()
    # a time limit may end the run early: trial N is measured when trial N+1 starts
    n = min(n, max((s["after_trial"] for s in log.samples), default=0))
    log.samples = [s for s in log.samples if s["after_trial"] <= n]
    import optuna

    from st_hpo._execution._storage import open_storage

    trials = optuna.load_study(study_name="memory-drift",
                               storage=open_storage(str(work / "study" / "optuna.journal"))).get_trials()
    states = [t.state.name for t in trials if t.number < n]
    counts = {"complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"), "failed": states.count("FAIL")}
    return log, counts, after_run


def main(argv: list[str] | None = None) -> int:
    ns = parse(argv)
    _common.quiet_libraries()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg, mode = configure(ns)
    name = ns.name or {"quick": "memory_drift-quick", "device-check": "memory_drift-gpu"}.get(mode, "memory_drift")
    work = Path(tempfile.mkdtemp(prefix="st-hpo-memory-"))
    try:
        log, counts, after_run = run(cfg, work, ns.time_limit)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = sum(counts.values())
    first = min(3, n)
    checks = [d for d in (drift(log.samples, k, first, n) for k in ("rss_mb", "cuda_allocated_mb",
                                                                     "cuda_reserved_mb")) if d]
    rows = [[d["key"], d["after_first"], d["after_last"], d["growth_mb"], d["growth_pct"],
             "yes" if d["met"] else "no"] for d in checks]
    objs = drift(log.samples, "python_objects", first, n)
    curve = ", ".join(f"{s['rss_mb']:.0f}" for s in log.samples)
    table = (f"{mode}: {_common.model_label(cfg['model'])}, {cfg['train_rows']} train pairs, "
             f"{cfg['eval_rows']} dev pairs, {n} trials in one process: {counts['complete']} complete, "
             f"{counts['pruned']} pruned, {counts['failed']} failed mid-training (and one more trial, so that "
             f"trial {n} is measured like the others).\n\n"
             + _common.md_table(["memory (MB)", f"after trial {first}", f"after trial {n}", "growth MB",
                                 "growth %", f"within {TARGET_PCT:g}% or {TARGET_MB:g} MB"], rows)
             + (f"\nPython objects tracked by the GC: {objs['after_first']:.0f} -> {objs['after_last']:.0f}.\n"
                if objs else "")
             + f"\nRSS (MB) after trials 1..{n}: {curve}\n"
             + f"\nAfter the run (MLflow sync and report plots done): RSS {after_run['rss_mb']:.0f} MB, "
             f"{after_run['python_objects']:.0f} Python objects.\n")
    cfg_out = {k: v for k, v in cfg.items() if k not in ("train", "dev")}
    path = _common.write_results(name, {"mode": mode, "config": cfg_out, "samples": log.samples,
                                        "checks": checks, "python_objects": objs, "after_run": after_run,
                                        "counts": counts}, table)
    print(table)
    print(f"[memory_drift] wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
