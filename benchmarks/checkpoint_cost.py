"""What resumable checkpoints cost (``Study(resume_interrupted=True)``): the st-hpo side of
benchmarks/overhead.py run with checkpoints off, then on at every evaluation point.

    .venv/bin/python benchmarks/checkpoint_cost.py             # CPU: MiniLM, 256 STSb train pairs, 8 trials
    .venv/bin/python benchmarks/checkpoint_cost.py --quick     # seconds: tiny model, synthetic pairs, 2 trials
    python benchmarks/checkpoint_cost.py --device-check        # GPU: MiniLM, full STSb train, 1 epoch, fp32

Same model, data, arguments (four evaluations per trial: three checkpoints, none at the end), space,
seed and trial count on both runs. Per trial: its wall time (probe timeline, as in overhead.py) with
and without checkpoints, and the time its saves took as the trial recorded it (``st_hpo.checkpoint_seconds``:
from the evaluation before each save to the checkpoint in place). From the time of one save it derives the
interval at which checkpoints cost at most 5% of training time (20 saves' time): the figure behind
``Study.checkpoint_every_minutes``'s default.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import overhead  # noqa: E402

RUNS = {"off": {"STHPO_BENCH_RESUME": "off"},
        "on": {"STHPO_BENCH_RESUME": "on", "STHPO_BENCH_CHECKPOINT_MINUTES": "0"}}
#: Checkpoints may take at most this share of a trial's training time.
BUDGET = 0.05


def _trial_attrs(out: Path) -> list[dict[str, Any]]:
    import optuna

    from st_hpo._execution._storage import open_storage

    study = optuna.load_study(study_name="overhead", storage=open_storage(str(out / "optuna.journal")))
    return [dict(t.user_attrs) for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]


def run(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for label, env in RUNS.items():
        for key in ("STHPO_BENCH_RESUME", "STHPO_BENCH_CHECKPOINT_MINUTES"):
            os.environ.pop(key, None)
        os.environ.update(env)  # the side's process inherits them (overhead._env copies os.environ)
        (work / label).mkdir()
        side = overhead.Side("st-hpo", cfg, work / label)
        side.start()
        results[label] = side.finish()
        results[label]["trial_attrs"] = [
            {k: a.get(k) for k in ("st_hpo.trial_seconds", "st_hpo.train_seconds", "st_hpo.checkpoint_seconds")}
            for a in _trial_attrs(side.out)]
    return results


def summarize(results: dict[str, Any], cfg: dict[str, Any], mode: str) -> tuple[dict[str, Any], str]:
    off, on = results["off"]["per_trial"], results["on"]["per_trial"]
    attrs = results["on"]["trial_attrs"]
    saves_per_trial = 3  # four evaluations, the last at the end of training: no checkpoint there
    save_s = statistics.mean(a["st_hpo.checkpoint_seconds"] or 0.0 for a in attrs)
    train_s = statistics.mean(a["st_hpo.train_seconds"] for a in attrs)
    one_save = save_s / saves_per_trial
    interval_min = one_save / BUDGET / 60
    figures = {"wall_off_s": off["wall_s"], "wall_on_s": on["wall_s"], "wall_ratio": on["wall_s"] / off["wall_s"],
               "saves_per_trial": saves_per_trial, "save_seconds_per_trial": save_s, "one_save_s": one_save,
               "save_share_of_train": save_s / train_s, "save_share_of_wall": save_s / on["wall_s"],
               "interval_for_5pct_min": interval_min}
    rows = [["trial wall, checkpoints off (s)", off["wall_s"]], ["trial wall, checkpoints on (s)", on["wall_s"]],
            ["on / off", figures["wall_ratio"]], ["checkpoints per trial", saves_per_trial],
            ["time in saves per trial (s)", save_s], ["one save (s)", one_save],
            ["saves / trial wall", figures["save_share_of_wall"]],
            ["saves / train() time", figures["save_share_of_train"]],
            [f"interval at which saves stay under {BUDGET:.0%} of training (min)", interval_min]]
    table = (f"{mode}: {_common.model_label(cfg['model'])}, {cfg['train_rows']} train pairs, {cfg['eval_rows']} dev "
             f"pairs, batch {cfg['batch_size']}, {cfg['epochs']:g} epoch, 4 evaluations per trial, "
             f"{cfg['n_trials']} trials, checkpoints at every evaluation point but the last (on) or none (off); "
             "per-trial figures are means over trials 0..n-2 (wall) or all complete trials (saves).\n\n"
             + _common.md_table(["", "value"], rows))
    return {"mode": mode, "config": cfg, "results": results, "figures": figures}, table


def main(argv: list[str] | None = None) -> int:
    ns = overhead.parse(argv)
    _common.quiet_libraries()
    cfg, mode = overhead.configure(ns)
    name = ns.name or {"quick": "checkpoint_cost-quick", "device-check": "checkpoint_cost-gpu"}.get(
        mode, "checkpoint_cost")
    work = Path(tempfile.mkdtemp(prefix="st-hpo-checkpoints-"))
    try:
        results = run(cfg, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data, table = summarize(results, cfg, mode)
    path = _common.write_results(name, data, table)
    print(table)
    print(f"[checkpoint_cost] wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
