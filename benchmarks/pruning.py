"""Pruning: the best objective and the training steps spent, with the median pruner and without, per seed.

    .venv/bin/python benchmarks/pruning.py            # CPU: 24 trials x {median, none} x 3 seeds
    .venv/bin/python benchmarks/pruning.py --quick    # seconds: tiny model, synthetic pairs, 4 trials, 1 seed
    python benchmarks/pruning.py --device-check       # GPU: MiniLM, full STSb train and dev

Each study runs in this process through ``st_hpo.run_study`` (real journal storage, real MLflow store) on
the space of studies/stsb_minilm.py: learning rate, warmup ratio, batch sampler and batch size; four
evaluations per trial. A pruned trial spent the steps up to its last report; a complete trial all of its
steps. ``examples`` weighs steps by batch size (a step at batch 32 is twice the work of one at 16).

Target: the pruned study's best within 0.005 Spearman of the unpruned study's best, at no more than half
its training steps.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

TOLERANCE = 0.005


def make_study(cfg: dict[str, Any], seed: int, pruner: str) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    import st_hpo

    args = {k: v for k, v in _common.training_args(cfg, "unused").items() if k not in ("output_dir", "report_to")}
    return st_hpo.Study(
        name=f"pruning-{pruner}-seed{seed}",
        model=cfg["model"],
        train_dataset=cfg["train"],
        eval_dataset=cfg["dev"],
        loss=CoSENTLoss,
        evaluator=_common.make_evaluator,
        objective=_common.OBJECTIVE,
        args=args,
        space={
            "learning_rate": FloatDistribution(1e-5, 2e-4, log=True),
            "warmup_ratio": FloatDistribution(0.0, 0.3),
            "batch_sampler": CategoricalDistribution(["batch_sampler", "no_duplicates"]),
            "per_device_train_batch_size": CategoricalDistribution([16, 32]),
        },
        n_trials=cfg["n_trials"],
        sampler="tpe",
        pruner=pruner,
        seed=seed,
        baseline=False,
    )


def trial_rows(output_dir: Path, name: str) -> list[dict[str, Any]]:
    import optuna

    from st_hpo._storage import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(str(output_dir / "optuna.journal")))
    rows = []
    for t in study.get_trials(deepcopy=False):
        steps = max(t.intermediate_values, default=0)
        batch = t.params.get("per_device_train_batch_size", 16)
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "steps": steps,
                     "examples": steps * batch, "train_seconds": t.user_attrs.get("st_hpo.train_seconds", 0.0),
                     "trial_seconds": t.user_attrs.get("st_hpo.trial_seconds", 0.0), "params": t.params})
    return rows


def run_one(cfg: dict[str, Any], seed: int, pruner: str, work: Path) -> dict[str, Any]:
    import st_hpo

    study = make_study(cfg, seed, pruner)
    out = work / study.name
    t0 = time.perf_counter()
    st_hpo.run_study(study, output_dir=out, progress=False)
    wall = time.perf_counter() - t0
    rows = trial_rows(out, study.name)
    shutil.rmtree(out, ignore_errors=True)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    best = max((r["value"] for r in complete), default=float("nan"))
    summary = {
        "seed": seed, "pruner": pruner, "best": best, "wall_s": wall,
        "complete": len(complete), "pruned": sum(r["state"] == "PRUNED" for r in rows),
        "failed": sum(r["state"] == "FAIL" for r in rows),
        "steps": sum(r["steps"] for r in rows), "examples": sum(r["examples"] for r in rows),
        "train_seconds": sum(r["train_seconds"] for r in rows),
        "trial_seconds": sum(r["trial_seconds"] for r in rows), "trials": rows,
    }
    print(f"[pruning] seed {seed} {pruner:>6}: best {best:.4f}, {summary['complete']} complete, "
          f"{summary['pruned']} pruned, {summary['steps']} steps, {wall:.0f}s", flush=True)
    return summary


def steps_to_reach(rows: list[dict[str, Any]], target: float) -> int | None:
    """Training steps spent until the first complete trial at or above ``target`` (None: never)."""
    spent = 0
    for r in sorted(rows, key=lambda r: r["number"]):
        spent += r["steps"]
        if r["state"] == "COMPLETE" and r["value"] is not None and r["value"] >= target:
            return spent
    return None


def compare(runs: list[dict[str, Any]], seeds: list[int]) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    per_seed, table = [], []
    for seed in seeds:
        base = next(r for r in runs if r["seed"] == seed and r["pruner"] == "none")
        pruned = next(r for r in runs if r["seed"] == seed and r["pruner"] == "median")
        target = base["best"] - TOLERANCE
        row = {
            "seed": seed, "best_none": base["best"], "best_median": pruned["best"],
            "best_gap": base["best"] - pruned["best"],
            "steps_none": base["steps"], "steps_median": pruned["steps"],
            "steps_ratio": pruned["steps"] / base["steps"] if base["steps"] else float("nan"),
            "examples_ratio": pruned["examples"] / base["examples"] if base["examples"] else float("nan"),
            "train_seconds_ratio": (pruned["train_seconds"] / base["train_seconds"]
                                    if base["train_seconds"] else float("nan")),
            "pruned_trials": pruned["pruned"],
            "steps_to_target_none": steps_to_reach(base["trials"], target),
            "steps_to_target_median": steps_to_reach(pruned["trials"], target),
        }
        row["met"] = row["best_gap"] <= TOLERANCE and row["steps_ratio"] <= 0.5
        per_seed.append(row)
        table.append([seed, base["best"], pruned["best"], row["best_gap"], base["steps"], pruned["steps"],
                      row["steps_ratio"], row["examples_ratio"], pruned["pruned"],
                      row["steps_to_target_none"], row["steps_to_target_median"], "yes" if row["met"] else "no"])
    return per_seed, table


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, synthetic pairs, 4 trials, 1 seed")
    p.add_argument("--device-check", action="store_true", help="GPU: MiniLM, full STSb train and dev")
    p.add_argument("--trials", type=int)
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--model", help="minilm, minilm-lN (first N layers), tiny, or a folder")
    p.add_argument("--train-rows", type=int)
    p.add_argument("--eval-rows", type=int)
    p.add_argument("--data", help="folder with train.csv and dev.csv, or 'synthetic'")
    p.add_argument("--name", help="results file name (default: pruning, pruning-quick or pruning-gpu)")
    return p.parse_args(argv)


def configure(ns: argparse.Namespace) -> tuple[dict[str, Any], list[int], str]:
    if ns.quick:
        mode, defaults, seeds = "quick", {"STHPO_BENCH_MODEL": "tiny", "STHPO_BENCH_DATA": "synthetic",
                                          "STHPO_BENCH_TRAIN_ROWS": "64", "STHPO_BENCH_EVAL_ROWS": "32",
                                          "STHPO_BENCH_N_TRIALS": "4"}, [42]
    elif ns.device_check:
        mode, defaults, seeds = "device-check", {"STHPO_BENCH_TRAIN_ROWS": "100000",
                                                 "STHPO_BENCH_EVAL_ROWS": "100000",
                                                 "STHPO_BENCH_N_TRIALS": "24"}, [42, 43, 44]
    else:
        # 2 shared CPU cores: the first 2 of MiniLM's 6 layers and 128 pairs keep 144 trials near 15 minutes
        mode, defaults, seeds = "cpu", {"STHPO_BENCH_MODEL": "minilm-l2", "STHPO_BENCH_TRAIN_ROWS": "128",
                                        "STHPO_BENCH_EVAL_ROWS": "100", "STHPO_BENCH_N_TRIALS": "24"}, [42, 43, 44]
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    given = {"STHPO_BENCH_MODEL": ns.model, "STHPO_BENCH_DATA": ns.data, "STHPO_BENCH_N_TRIALS": ns.trials,
             "STHPO_BENCH_TRAIN_ROWS": ns.train_rows, "STHPO_BENCH_EVAL_ROWS": ns.eval_rows}
    for key, value in {**defaults, **{k: v for k, v in given.items() if v is not None}}.items():
        os.environ[key] = str(value)
    if os.environ.get("OMP_NUM_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    cfg = _common.bench_config()
    cfg["train"] = _common.load_pairs("train", cfg["train_rows"])
    cfg["dev"] = _common.load_pairs("dev", cfg["eval_rows"])
    cfg["train_rows"], cfg["eval_rows"] = len(cfg["train"]), len(cfg["dev"])
    return cfg, ns.seeds or seeds, mode


def report(runs: list[dict[str, Any]], seeds: list[int], cfg: dict[str, Any], mode: str, name: str,
           total: float) -> str:
    """Write the results of the seeds done so far (both variants); returns the table."""
    per_seed, rows = compare(runs, seeds)
    gaps = [r["best_gap"] for r in per_seed]
    ratios = [r["steps_ratio"] for r in per_seed]
    headers = ["seed", "best (none)", "best (median)", "gap", "steps (none)", "steps (median)", "steps ratio",
               "examples ratio", "pruned", "steps to best-0.005 (none)", "(median)", "target met"]
    data_label = "synthetic pairs" if cfg["data"] == "synthetic" else "STSb"
    table = (f"{mode}: {_common.model_label(cfg['model'])}, {cfg['train_rows']} train pairs, {cfg['eval_rows']} "
             f"dev pairs ({data_label}), {cfg['n_trials']} trials per study, TPE, median pruner "
             f"(n_startup_trials=4) vs none, 4 evaluations per trial; {total / 60:.1f} min in all.\n\n"
             + _common.md_table(headers, rows)
             + f"\nMean gap {statistics.mean(gaps):+.4f} (target <= {TOLERANCE}), mean steps ratio "
             f"{statistics.mean(ratios):.2f} (target <= 0.5); met on {sum(r['met'] for r in per_seed)} of "
             f"{len(per_seed)} seeds.\n")
    cfg_out = {k: v for k, v in cfg.items() if k not in ("train", "dev")}
    _common.write_results(name, {"mode": mode, "config": cfg_out, "seeds": seeds, "per_seed": per_seed,
                                 "runs": runs, "total_seconds": total}, table)
    return table


def main(argv: list[str] | None = None) -> int:
    ns = parse(argv)
    _common.quiet_libraries()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg, seeds, mode = configure(ns)
    name = ns.name or {"quick": "pruning-quick", "device-check": "pruning-gpu"}.get(mode, "pruning")
    work = Path(tempfile.mkdtemp(prefix="st-hpo-pruning-"))
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    try:
        for i, seed in enumerate(seeds):
            runs += [run_one(cfg, seed, pruner, work) for pruner in ("none", "median")]
            table = report(runs, seeds[: i + 1], cfg, mode, name, time.perf_counter() - started)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table)
    print(f"[pruning] wrote {name}.json and {name}.md under {_common.results_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
