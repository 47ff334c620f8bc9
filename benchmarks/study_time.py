"""A whole study, st-hpo's defaults vs the sentence-transformers docs' HPO recipe, in the same run.

    .venv/bin/python benchmarks/study_time.py                    # MiniLM, 1,000 STSb train pairs, whole dev
                                                                 # set, 10 and 30 trials, 3 sampler seeds
    .venv/bin/python benchmarks/study_time.py --trials 10 --seeds 1
    .venv/bin/python benchmarks/study_time.py --trials 10 --seeds 2 --first-seed 43 --add   # more seeds, kept
                                                                 # beside the runs already in the results file
    .venv/bin/python benchmarks/study_time.py --quick            # tiny model, synthetic pairs, 2 trials, 1 seed

Both sides get the same model, data, base arguments and space (the docs' recipe: epochs 1-2, batch 32-128,
warmup ratio 0-0.3, learning rate 1e-6..1e-4 log; no evaluation cadence), trial count and TPE seed, and run
as subprocesses at the same time (``--sequential``: one after the other), so that both see the same load
on a shared machine.

- recipe: ``python benchmarks/study_time_anchor.py``, ``hyperparameter_search(backend="optuna")`` with
  ``model_init``/``hp_space``/``compute_objective``: one evaluation per trial, at its end.
- st-hpo: ``st-hpo run benchmarks/study_time_study.py``, a study file with st-hpo's defaults (evaluations
  where its pruner decides, the default pruner and eval subset, the baseline trial, the kept best model
  scored on the test set when the study ends).

Figures per (trials, seed): each side's whole-command wall time (the recipe's minus the time its benchmark
callback spends on test scores), best dev objective, and the best model's STSb test score (the test set
neither side sees while searching). Targets: st-hpo at most 0.7x the recipe's wall time with a best dev
objective at least as good, mean over seeds, at each trial count.

The results file is rewritten after every (trials, seed) pair, so a long run that is stopped keeps the
pairs it finished. ``--add`` keeps the runs already in the results file (a pair measured again replaces
its earlier run), so seeds and trial counts can be measured in several sittings; each run records its
own date and st-hpo commit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

from st_hpo._definition._study import DEFAULT_PRUNER  # noqa: E402

#: Targets of the issue: wall time ratio at most, and st-hpo's best at least the recipe's (mean over seeds).
TARGET_WALL_RATIO = 0.7


def _env(cfg: dict[str, Any], trials: int, seed: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"STHPO_BENCH_MODEL": cfg["model"], "STHPO_BENCH_DATA": cfg["data"],
                "STHPO_BENCH_TRAIN_ROWS": str(cfg["train_rows"]), "STHPO_BENCH_EVAL_ROWS": str(cfg["eval_rows"]),
                "STHPO_BENCH_N_TRIALS": str(trials), "STHPO_BENCH_SEED": str(seed), "HF_HUB_OFFLINE": "1",
                "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    src = str(_common.REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def _commands(work: Path, pruner: str | None = None) -> dict[str, list[str]]:
    exe = Path(sys.executable).with_name("st-hpo")
    cli = [str(exe)] if exe.is_file() else [sys.executable, "-m", "st_hpo.cli"]
    return {"recipe": [sys.executable, str(_common.BENCH_DIR / "study_time_anchor.py"), str(work / "recipe"),
                       str(work / "recipe.json")],
            "st-hpo": [*cli, "-q", "run", str(_common.BENCH_DIR / "study_time_study.py"), "--output-dir",
                       str(work / "st-hpo"), *(["--pruner", pruner] if pruner else [])]}


def _st_hpo_result(out: Path) -> dict[str, Any]:
    import optuna

    from st_hpo._execution._storage import default_storage_url, open_storage

    study = optuna.load_study(study_name="study-time", storage=open_storage(default_storage_url(out)))
    trials = study.get_trials(deepcopy=False)
    return {"best_dev": study.best_value, "best_test": study.user_attrs.get("st_hpo.test_value"),
            "n_complete": sum(t.state.name == "COMPLETE" for t in trials),
            "n_pruned": sum(t.state.name == "PRUNED" for t in trials)}


def run_pair(cfg: dict[str, Any], trials: int, seed: int, *, sequential: bool, pruner: str | None = None
             ) -> dict[str, Any]:
    """Both sides on one (trial count, seed): their wall times and results."""
    work = Path(tempfile.mkdtemp(prefix="st-hpo-study-time-"))
    procs: dict[str, tuple[subprocess.Popen, Any, float]] = {}
    walls: dict[str, float] = {}
    try:
        env = _env(cfg, trials, seed)
        for side, cmd in _commands(work, pruner).items():
            log = open(work / f"{side}.log", "w")  # noqa: SIM115 - closed with the process below
            procs[side] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log, time.time())
            if sequential:
                procs[side][0].wait()
        while len(walls) < len(procs):
            for side, (proc, log, t0) in procs.items():
                if side not in walls and proc.poll() is not None:
                    walls[side] = time.time() - t0
                    log.close()
                    if proc.returncode:
                        sys.stderr.write((work / f"{side}.log").read_text()[-4000:])
                        raise SystemExit(f"[study_time] {side} failed with exit code {proc.returncode}")
            time.sleep(0.05)
        recipe = json.loads((work / "recipe.json").read_text())
        recipe["wall_s"] = walls["recipe"] - recipe["test_seconds"]
        st = {**_st_hpo_result(work / "st-hpo"), "wall_s": walls["st-hpo"]}
        print(f"[study_time] {trials} trials, seed {seed}: recipe {recipe['wall_s']:.1f}s best {recipe['best_dev']:.4f}"
              f" test {recipe['best_test']:.4f}; st-hpo {st['wall_s']:.1f}s best {st['best_dev']:.4f} test "
              f"{st['best_test'] if st['best_test'] is None else round(st['best_test'], 4)}", flush=True)
        return {"trials": trials, "seed": seed, "recipe": recipe, "st-hpo": st,
                "wall_ratio": st["wall_s"] / recipe["wall_s"]}
    finally:
        for proc, log, _ in procs.values():  # stopped (Ctrl-C, SIGTERM) or one side failed: the other stops too
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
            log.close()
        shutil.rmtree(work, ignore_errors=True)


def summarize(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    rows, table_rows = [], []
    for trials in sorted({r["trials"] for r in runs}):
        mine = [r for r in runs if r["trials"] == trials]

        def mean(side: str, key: str, mine: list = mine) -> float | None:
            values = [r[side][key] for r in mine if r[side].get(key) is not None]
            return statistics.fmean(values) if values else None

        row = {"trials": trials, "seeds": len(mine), "wall_ratio": statistics.fmean(r["wall_ratio"] for r in mine),
               "recipe_wall_s": mean("recipe", "wall_s"), "st_hpo_wall_s": mean("st-hpo", "wall_s"),
               "recipe_best_dev": mean("recipe", "best_dev"), "st_hpo_best_dev": mean("st-hpo", "best_dev"),
               "recipe_best_test": mean("recipe", "best_test"), "st_hpo_best_test": mean("st-hpo", "best_test"),
               "st_hpo_pruned": mean("st-hpo", "n_pruned")}
        row["met"] = row["wall_ratio"] <= TARGET_WALL_RATIO and row["st_hpo_best_dev"] >= row["recipe_best_dev"]
        rows.append(row)
        table_rows.append([trials, len(mine), row["recipe_wall_s"], row["st_hpo_wall_s"], row["wall_ratio"],
                           row["recipe_best_dev"], row["st_hpo_best_dev"], row["recipe_best_test"],
                           row["st_hpo_best_test"] if row["st_hpo_best_test"] is not None else "-",
                           row["st_hpo_pruned"], "met" if row["met"] else "missed"])
    table = _common.md_table(["trials", "seeds", "recipe wall s", "st-hpo wall s", "wall ratio", "recipe best dev",
                              "st-hpo best dev", "recipe best's test", "st-hpo best's test", "st-hpo pruned",
                              f"target (<= {TARGET_WALL_RATIO}x, best >= recipe's)"], table_rows)
    return rows, table


def _runs_table(runs: list[dict[str, Any]]) -> str:
    return _common.md_table(
        ["trials", "seed", "machine", "date", "recipe wall s", "st-hpo wall s", "wall ratio", "recipe best dev",
         "st-hpo best dev", "recipe best's test", "st-hpo best's test", "st-hpo pruned"],
        [[r["trials"], r["seed"], r.get("machine", "-"), r.get("date", "-"), r["recipe"]["wall_s"], r["st-hpo"]["wall_s"],
          r["wall_ratio"], r["recipe"]["best_dev"], r["st-hpo"]["best_dev"], r["recipe"]["best_test"],
          r["st-hpo"]["best_test"], r["st-hpo"]["n_pruned"]] for r in runs])


def _earlier_runs(name: str, cfg: dict[str, Any], pruner: str) -> list[dict[str, Any]]:
    """The runs already in the results file, when it measured the same set-up (else none, and says so)."""
    path = _common.results_dir() / f"{name}.json"
    if not path.is_file():
        return []
    earlier = json.loads(path.read_text())

    def same(c: dict[str, Any]) -> dict[str, Any]:  # the model and data by their names: a clone's paths differ
        return {**c, "model": _common.model_label(c.get("model", "")), "data": Path(c.get("data", "")).name}

    if same(earlier.get("config", {})) != same(cfg) or earlier.get("pruner") != pruner:
        print(f"[study_time] --add: {path} measured another set-up; its runs are not kept", flush=True)
        return []
    machine, date = earlier.get("machine", {}).get("cpu"), earlier.get("date")
    return [{"machine": machine, "date": date, **r} for r in earlier.get("runs", [])]  # older runs lack them


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, synthetic pairs, 2 trials, 1 seed")
    p.add_argument("--trials", default=None, help="comma-separated trial counts (default 10,30)")
    p.add_argument("--seeds", type=int, default=None, help="sampler seeds per trial count (default 3)")
    p.add_argument("--train-rows", type=int)
    p.add_argument("--eval-rows", type=int)
    p.add_argument("--model", help="minilm, tiny, or a SentenceTransformer folder")
    p.add_argument("--data", help="folder with train.csv, dev.csv and test.csv, or 'synthetic'")
    p.add_argument("--sequential", action="store_true", help="one side after the other (default: together)")
    p.add_argument("--pruner", help="st-hpo's pruner (default: the study default, st-hpo's DEFAULT_PRUNER)")
    p.add_argument("--first-seed", type=int, default=42, help="the first TPE seed (default 42)")
    p.add_argument("--add", action="store_true",
                   help="keep the runs already in the results file; a pair measured again replaces its run")
    ns = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # runs run_pair's clean-up: no side left training
    _common.quiet_libraries()
    ns.trials = ns.trials or ("2" if ns.quick else "10,30")
    ns.seeds = ns.seeds or (1 if ns.quick else 3)
    defaults = ({"STHPO_BENCH_MODEL": "tiny", "STHPO_BENCH_DATA": "synthetic", "STHPO_BENCH_TRAIN_ROWS": "64",
                 "STHPO_BENCH_EVAL_ROWS": "32"} if ns.quick else
                {"STHPO_BENCH_TRAIN_ROWS": "1000", "STHPO_BENCH_EVAL_ROWS": "100000"})
    trial_counts = [int(t) for t in str(ns.trials).split(",")]
    ns.trials = None
    _common.apply_settings(ns, defaults)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 shared cores: two torch threads per process fight
    cfg = _common.bench_config()
    if cfg["data"] != "synthetic":
        cfg["eval_rows"] = len(_common.load_pairs("dev", cfg["eval_rows"]))
    name = "study_time-quick" if ns.quick else "study_time" + (f"-{ns.pruner}" if ns.pruner else "")
    pruner = ns.pruner or DEFAULT_PRUNER
    runs = _earlier_runs(name, cfg, pruner) if ns.add else []
    seeds = [ns.first_seed + s for s in range(ns.seeds)]
    path = None
    for trials in trial_counts:
        for seed in seeds:
            run = {**run_pair(cfg, trials, seed, sequential=ns.sequential, pruner=ns.pruner),
                   "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": _common.git_commit(),
                   "machine": _common.machine()["cpu"]}
            runs = [r for r in runs if (r["trials"], r["seed"]) != (trials, seed)] + [run]
            runs.sort(key=lambda r: (r["trials"], r["seed"]))
            rows, table = summarize(runs)
            table += "\n\nEach run (both sides of a run on the same machine, at the same time):\n\n" + _runs_table(runs)
            all_seeds = sorted({r["seed"] for r in runs})
            head = (f"{_common.model_label(cfg['model'])}, {cfg['train_rows']} train pairs, {cfg['eval_rows']} dev "
                    f"pairs ({cfg['data'] if cfg['data'] == 'synthetic' else 'STSb'}), the docs' recipe space, TPE "
                    f"seeds {', '.join(map(str, all_seeds))}; st-hpo's pruner {pruner}; sides run "
                    f"{'one after the other' if ns.sequential else 'at the same time'}. Means over seeds.\n\n")
            path = _common.write_results(name, {"config": cfg, "pruner": pruner, "runs": runs, "summary": rows},
                                         head + table)
    print(head + table)
    print(f"[study_time] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
