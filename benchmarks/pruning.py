"""Pruning: the best objective and the training steps spent with each named pruner and without, per seed.

    .venv/bin/python benchmarks/pruning.py            # CPU: 24 trials x {none + 3 pruners} x 3 seeds
    .venv/bin/python benchmarks/pruning.py --quick    # seconds: tiny model, synthetic pairs, 4 trials, 1 seed
    python benchmarks/pruning.py --device-check       # GPU: MiniLM, full STSb train and dev

Each study runs in this process through ``st_hpo.run_study`` (real journal storage, real MLflow store) on
the space of studies/stsb_minilm.py: learning rate, warmup ratio, batch sampler and batch size. Trials
evaluate ``--evals`` times during training (default 8) on a fixed subset of ``--subset-rows`` dev pairs
(``Study.intermediate_eval_rows``), and every trial that finishes once more on all dev pairs; the best
objective is always the all-pairs value. Steps are counted in per-mille of each trial's training: a
pruned trial spent the steps up to its last report, a complete trial all of them (1000). ``examples``
counts the training examples behind them (trainer steps x batch size). The batch sizes (16 and 24) give
step counts that differ and do not divide evenly, so the pruners compare trials of different step counts
(every trial reports on the study's shared grid of fractions of training). Wall time is recorded per study
next to the steps.

Target: the pruned study's best within 0.005 Spearman of the unpruned study's best, at no more than half
its training steps. Each pruner is compared with the unpruned study of the same seed.
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
PRUNERS = ("median", "successive-halving", "hyperband")
#: step counts that differ and do not divide evenly (256 rows: 16 and 11 steps; full STSb: 360 and 240)
BATCH_SIZES = [16, 24]


def make_study(cfg: dict[str, Any], seed: int, pruner: str) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    import st_hpo

    args = {k: v for k, v in _common.training_args(cfg, "unused").items() if k not in ("output_dir", "report_to")}
    args["eval_steps"] = 1 / cfg["evals"]
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
            "per_device_train_batch_size": CategoricalDistribution(BATCH_SIZES),
        },
        n_trials=cfg["n_trials"],
        sampler="tpe",
        pruner=pruner,
        seed=seed,
        baseline=False,
        intermediate_eval_rows=cfg["subset_rows"] or None,
    )


def trial_rows(output_dir: Path, name: str) -> list[dict[str, Any]]:
    import optuna

    from st_hpo._execution._storage import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(str(output_dir / "optuna.journal")))
    rows = []
    for t in study.get_trials(deepcopy=False):
        steps = 1000 if t.state.name == "COMPLETE" else max(t.intermediate_values, default=0)
        batch = t.params.get("per_device_train_batch_size", 16)
        train_steps = round(steps * t.user_attrs.get("st_hpo.max_steps", 0) / 1000)
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "steps": steps,
                     "train_steps": train_steps, "examples": train_steps * batch,
                     "eval_seconds": t.user_attrs.get("st_hpo.eval_seconds", 0.0), "train_seconds": t.user_attrs.get("st_hpo.train_seconds", 0.0),
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
        "eval_seconds": sum(r["eval_seconds"] for r in rows),
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


def compare(runs: list[dict[str, Any]], seeds: list[int],
            pruners: list[str]) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    per_seed, table = [], []
    for pruner in pruners:
        for seed in seeds:
            base = next(r for r in runs if r["seed"] == seed and r["pruner"] == "none")
            pruned = next((r for r in runs if r["seed"] == seed and r["pruner"] == pruner), None)
            if pruned is None:
                continue
            target = base["best"] - TOLERANCE
            row = {
                "pruner": pruner, "seed": seed, "best_none": base["best"], "best_pruned": pruned["best"],
                "best_gap": base["best"] - pruned["best"],
                "steps_none": base["steps"], "steps_pruned": pruned["steps"],
                "steps_ratio": pruned["steps"] / base["steps"] if base["steps"] else float("nan"),
                "examples_ratio": pruned["examples"] / base["examples"] if base["examples"] else float("nan"),
                "train_seconds_ratio": (pruned["train_seconds"] / base["train_seconds"]
                                        if base["train_seconds"] else float("nan")),
                "wall_none": base["wall_s"], "wall_pruned": pruned["wall_s"],
                "wall_ratio": pruned["wall_s"] / base["wall_s"] if base["wall_s"] else float("nan"),
                "pruned_trials": pruned["pruned"],
                "steps_to_target_none": steps_to_reach(base["trials"], target),
                "steps_to_target_pruned": steps_to_reach(pruned["trials"], target),
            }
            row["met"] = row["best_gap"] <= TOLERANCE and row["steps_ratio"] <= 0.5
            per_seed.append(row)
            table.append([pruner, seed, base["best"], pruned["best"], row["best_gap"], base["steps"],
                          pruned["steps"], row["steps_ratio"], row["examples_ratio"], row["train_seconds_ratio"],
                          base["wall_s"], pruned["wall_s"], row["wall_ratio"],
                          pruned["pruned"], row["steps_to_target_none"], row["steps_to_target_pruned"],
                          "yes" if row["met"] else "no"])
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
    p.add_argument("--pruners", nargs="+", choices=PRUNERS + ("patient",), help=f"default: {' '.join(PRUNERS)}")
    p.add_argument("--evals", type=int, default=8, help="evaluations per trial during training (default 8)")
    p.add_argument("--subset-rows", type=int,
                   help="dev pairs of the intermediate evaluations (0: all; default 100 on the CPU, 500 on a GPU)")
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
        # 2 shared CPU cores: the first 2 of MiniLM's 6 layers and 256 pairs keep 12 studies near 30 minutes
        mode, defaults, seeds = "cpu", {"STHPO_BENCH_MODEL": "minilm-l2", "STHPO_BENCH_TRAIN_ROWS": "256",
                                        "STHPO_BENCH_EVAL_ROWS": "400", "STHPO_BENCH_N_TRIALS": "24"}, [42, 43, 44]
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    _common.apply_settings(ns, defaults)
    cfg = _common.config_with_data()
    cfg["evals"] = ns.evals
    default_subset = {"quick": 16, "device-check": 500}.get(mode, 100)
    cfg["subset_rows"] = ns.subset_rows if ns.subset_rows is not None else default_subset
    return cfg, ns.seeds or seeds, mode


PRUNER_SETTINGS = {
    "median": "MedianPruner(n_startup_trials=4)",
    "successive-halving": "SuccessiveHalvingPruner(min_resource=1/9 of training, reduction_factor=3)",
    "hyperband": "HyperbandPruner(min_resource=1/9, max_resource=100%, reduction_factor=3)",
    "patient": "PatientPruner(MedianPruner(n_startup_trials=4), patience=1)",
}


def report(runs: list[dict[str, Any]], seeds: list[int], pruners: list[str], cfg: dict[str, Any], mode: str,
           name: str, total: float) -> str:
    """Write the results of the studies done so far; returns the tables."""
    per_seed, rows = compare(runs, seeds, pruners)
    headers = ["pruner", "seed", "best (none)", "best (pruned)", "gap", "steps (none)", "steps (pruned)",
               "steps ratio", "examples ratio", "train s ratio", "wall s (none)", "wall s (pruned)", "wall ratio",
               "pruned", "steps to best-0.005 (none)",
               "(pruned)", "target met"]
    summary_rows = []
    for pruner in pruners:
        mine = [r for r in per_seed if r["pruner"] == pruner]
        if mine:
            summary_rows.append([
                pruner, PRUNER_SETTINGS[pruner], len(mine), statistics.mean(r["best_gap"] for r in mine),
                max(r["best_gap"] for r in mine), statistics.mean(r["steps_ratio"] for r in mine),
                statistics.mean(r["train_seconds_ratio"] for r in mine),
                statistics.mean(r["wall_ratio"] for r in mine), f"{sum(r['met'] for r in mine)} of {len(mine)}",
            ])
    data_label = "synthetic pairs" if cfg["data"] == "synthetic" else "STSb"
    subset = (f"on a fixed subset of {cfg['subset_rows']} dev pairs, the final one of each finished trial on all "
              f"{cfg['eval_rows']}" if cfg["subset_rows"] and cfg["subset_rows"] < cfg["eval_rows"]
              else f"on all {cfg['eval_rows']} dev pairs")
    table = (f"{mode}: {_common.model_label(cfg['model'])}, {cfg['train_rows']} train pairs, {cfg['eval_rows']} "
             f"dev pairs ({data_label}), {cfg['n_trials']} trials per study, TPE, batch sizes {BATCH_SIZES}; {cfg['evals']} evaluations per "
             f"trial during training {subset}; each pruner against no pruning with the same seed; "
             f"{total / 60:.1f} min in all.\n\n"
             + _common.md_table(["pruner", "settings", "seeds", "mean gap", "worst gap", "mean steps ratio",
                                 "mean train s ratio", "mean wall ratio", "target met"], summary_rows)
             + f"\nTarget per seed: gap <= {TOLERANCE} and steps ratio <= 0.5.\n\n"
             + _common.md_table(headers, rows))
    cfg_out = {k: v for k, v in cfg.items() if k not in ("train", "dev")}
    _common.write_results(name, {"mode": mode, "config": cfg_out, "seeds": seeds, "pruners": pruners,
                                 "per_seed": per_seed, "runs": runs, "total_seconds": total}, table)
    return table


def main(argv: list[str] | None = None) -> int:
    ns = parse(argv)
    _common.quiet_libraries()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg, seeds, mode = configure(ns)
    pruners = list(ns.pruners or (PRUNERS[:1] if mode == "quick" else PRUNERS))
    name = ns.name or {"quick": "pruning-quick", "device-check": "pruning-gpu"}.get(mode, "pruning")
    work = Path(tempfile.mkdtemp(prefix="st-hpo-pruning-"))
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    try:
        for i, seed in enumerate(seeds):
            runs += [run_one(cfg, seed, pruner, work) for pruner in ["none", *pruners]]
            table = report(runs, seeds[: i + 1], pruners, cfg, mode, name, time.perf_counter() - started)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table)
    print(f"[pruning] wrote {name}.json and {name}.md under {_common.results_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
