"""Quality against cost: the ready study ``studies/stsb_minilm_cost.py`` (Spearman on STSb dev against
``cost.encode_ms``, ``model.max_seq_length``, ``model.truncate_dim`` and the learning rate searched), run as a user runs it.

    .venv/bin/python benchmarks/quality_cost.py              # MiniLM, 1,000 STSb train pairs, all dev, 12 trials
    .venv/bin/python benchmarks/quality_cost.py --trials 20
    .venv/bin/python benchmarks/quality_cost.py --quick      # tiny model, a few pairs, 3 trials (the test's mode)

Runs ``st-hpo run studies/stsb_minilm_cost.py`` in a temporary output folder, then ``st-hpo best --json`` on
it, and writes ``results/quality_cost.{json,md}``: the Pareto front (trial number, dev Spearman, encode
milliseconds, embedding size, learning rate), how many trials were pruned, the study's wall time, the
machine, versions, date and commit. The study evaluates and prunes with st-hpo's defaults (successive
halving on the first objective, the Spearman).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import _common  # noqa: E402

STUDY = _common.REPO / "studies" / "stsb_minilm_cost.py"
NAME = "stsb-minilm-cost"
#: (model, train pairs, dev pairs, dev pairs of the evaluations during training, trials, embedding sizes)
MODES = {
    "full": {"model": "minilm", "train_rows": 1000, "eval_rows": None, "subset_rows": 500, "trials": 12,
             "dims": "64,128,256,384"},
    "quick": {"model": "tiny", "train_rows": 48, "eval_rows": 32, "subset_rows": 16, "trials": 3,
              "dims": "8,16,32"},
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, a few STSb pairs, 3 trials (seconds)")
    parser.add_argument("--trials", type=int, help="trial budget (default 12; 3 with --quick)")
    parser.add_argument("--train-rows", type=int, help="STSb train pairs (a seeded subset; default 1,000)")
    parser.add_argument("--eval-rows", type=int, help="STSb dev pairs (a seeded subset; default all 1,500)")
    parser.add_argument("--model", help="minilm, minilm-lN, tiny, tiny-hH or a folder (see _common.model_path)")
    parser.add_argument("--data", help="a folder with the STSb CSVs (default ../shared/data/stsb-en)")
    parser.add_argument("--name", help="results file name (default quality_cost, quality_cost-quick)")
    parser.add_argument("--output-dir", help="keep the study here (its storage, MLflow store, reports/pareto.png); "
                                             "default a temporary folder, deleted at the end")
    return parser.parse_args(argv)


def configure(ns: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The run's settings and the environment the study file reads them from (see its docstring)."""
    mode = "quick" if ns.quick else "full"
    cfg = {**MODES[mode], "mode": mode}
    for key in ("trials", "train_rows", "eval_rows", "model"):
        if getattr(ns, key) is not None:
            cfg[key] = getattr(ns, key)
    data = ns.data or str(_common.DEFAULT_STSB)
    if not (Path(data) / "train.csv").is_file():
        raise SystemExit(f"quality_cost: no STSb CSVs in {data}; give --data DIR (train.csv, dev.csv)")
    cfg["model_path"], cfg["data"] = _common.model_path(cfg["model"]), data
    env = {**os.environ, "STHPO_STSB_DIR": data, "STHPO_MODEL": cfg["model_path"],
           "STHPO_TRAIN_ROWS": str(cfg["train_rows"]), "STHPO_N_TRIALS": str(cfg["trials"]),
           "STHPO_INTERMEDIATE_EVAL_ROWS": str(cfg["subset_rows"]), "STHPO_TRUNCATE_DIMS": cfg["dims"],
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if cfg["eval_rows"] is not None:
        env["STHPO_EVAL_ROWS"] = str(cfg["eval_rows"])
    else:
        env.pop("STHPO_EVAL_ROWS", None)
    return cfg, env


def run_study(out: Path, cfg: dict[str, Any], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """``st-hpo run`` then ``st-hpo best --json``: the study's wall time and what ``best`` answered."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "st_hpo", "run", str(STUDY), "--output-dir", str(out),
                           "--n-trials", str(cfg["trials"])], env=env, cwd=_common.REPO, text=True,
                          capture_output=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"quality_cost: st-hpo run exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    best = subprocess.run([sys.executable, "-m", "st_hpo", "best", str(STUDY), "--output-dir", str(out), "--json"],
                          env=env, cwd=_common.REPO, text=True, capture_output=True)
    if best.returncode != 0:
        raise SystemExit(f"quality_cost: st-hpo best exited {best.returncode}:\n{best.stderr[-3000:]}")
    return wall, json.loads(best.stdout)


def trial_rows(out: Path) -> list[dict[str, Any]]:
    """Every trial as stored: state, objective values, costs, embedding size and learning rate it trained with."""
    import optuna

    from st_hpo._execution._storage import open_storage
    from st_hpo._tracking._census import shown_state
    from st_hpo._tracking._record import shown_params
    from st_hpo._tracking._schema import BASELINE_ATTR, COSTS_ATTR

    study = optuna.load_study(study_name=NAME, storage=open_storage(str(out / "optuna.journal")))
    rows = []
    for t in study.get_trials(deepcopy=False):
        costs = t.user_attrs.get(COSTS_ATTR) or {}
        params = shown_params(t)
        rows.append({"number": t.number, "state": shown_state(t), "baseline": bool(t.user_attrs.get(BASELINE_ATTR)),
                     "spearman": t.values[0] if t.values else None, "encode_ms": t.values[1] if t.values else None,
                     "embedding_dim": costs.get("cost.embedding_dim"), "truncate_dim": params.get("model.truncate_dim"),
                     "max_seq_length": params.get("model.max_seq_length"),
                     "learning_rate": params.get("learning_rate"), "costs": costs})
    return rows


def summarize(cfg: dict[str, Any], wall: float, best: dict[str, Any], rows: list[dict[str, Any]]
              ) -> tuple[dict[str, Any], str]:
    by_number = {r["number"]: r for r in rows}
    front = sorted((by_number[p["number"]] for p in best["pareto"]), key=lambda r: -r["spearman"])
    counts = {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL", "OUT_OF_MEMORY")}
    table_rows = [[r["number"] if not r["baseline"] else f"{r['number']} (baseline)", r["spearman"], r["encode_ms"],
                   r["embedding_dim"] if r["embedding_dim"] is not None else "?",
                   r["max_seq_length"] if r["max_seq_length"] is not None else "model's",
                   r["learning_rate"]] for r in front]
    table = (f"{cfg['mode']}: `studies/stsb_minilm_cost.py`, {_common.model_label(cfg['model_path'])}, "
             f"{cfg['train_rows']} STSb train pairs, {cfg['eval_rows'] or 'all'} dev pairs "
             f"({cfg['subset_rows']} for the evaluations during training), {cfg['trials']} trials, embedding sizes "
             f"{cfg['dims']}; {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed; "
             f"the study took {wall:.0f} s; commit {_common.git_commit()}.\n\n"
             f"Pareto front ({len(front)} of {counts['COMPLETE']} complete trials, best Spearman first):\n\n"
             + _common.md_table(["trial", "dev Spearman", "encode ms (1,000 sentences)", "embedding dim",
                                 "max seq length", "learning rate"], table_rows))
    data = {"mode": cfg["mode"], "commit": _common.git_commit(), "config": dict(cfg),
            "wall_s": wall, "counts": counts, "n_pruned": counts["PRUNED"], "front": front, "trials": rows,
            "best_json": best}
    return data, table


def main(argv: list[str] | None = None) -> int:
    ns = parse(argv)
    _common.quiet_libraries()
    cfg, env = configure(ns)
    name = ns.name or ("quality_cost-quick" if cfg["mode"] == "quick" else "quality_cost")
    work = Path(tempfile.mkdtemp(prefix="st-hpo-quality-cost-"))
    out = Path(ns.output_dir).resolve() if ns.output_dir else work / "out"
    try:
        wall, best = run_study(out, cfg, env)
        rows = trial_rows(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data, table = summarize(cfg, wall, best, rows)
    path = _common.write_results(name, data, table)
    print(table)
    print(f"[quality_cost] wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
