"""GPU memory and costs on the card: ``validate --probe-memory``, a GradCache loss that fits itself, costs on CUDA.

    python benchmarks/gpu_memory.py --device-check  # GPU: MiniLM; merges its figures into gpu-check.json
    python benchmarks/gpu_memory.py --quick         # CPU smoke run of the same code paths (tiny BERT, seconds)

1. ``st-hpo validate benchmarks/gpu_trials_study.py --probe-memory`` (a subprocess, as a user runs it): the
   space's batch sizes are 16 and 4,096 pairs of 512 tokens, so the 4,096 corner cannot fit (the study file
   works out why) and the 16 corner must. ``probe_memory``: the lines it printed and whether they say so.
2. One trial with ``CachedMultipleNegativesRankingLoss`` at batch 4,096 and ``mini_batch_size`` 4,096 on
   512-token rows: a mini-batch of 4,096 sentences with gradients needs about 350 GB, 2.5x the card, so the
   first step runs out of CUDA memory and st-hpo halves the mini-batch until the step fits.
   ``cached_mini_batch``: the trial's state and the ``mini_batch_size`` it trained with (lower than 4,096
   expected, COMPLETE expected).
3. Two trials of a multi-objective study (Spearman up, ``cost.encode_ms`` down) on MiniLM:
   ``multi_objective_costs``: each trial's ``cost.encode_ms``, ``cost.peak_memory_mb`` (CUDA reserved
   memory on a GPU) and ``cost.embedding_dim``, and where it trained.

``--quick`` runs on the CPU with the tiny random BERT: the probe says there is nothing to probe, and the
GradCache loss's out-of-memory error is simulated (a hook raises torch's OutOfMemoryError for a mini-batch
over 8 rows); it writes ``gpu_memory-quick.json``/``.md`` and never ``gpu-check.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import gpu_trials  # noqa: E402 - the same settings for --quick and --device-check

PROBE_STUDY = Path(__file__).resolve().parent / "gpu_trials_study.py"
#: --quick: a forward pass with gradients over more rows than this raises torch's OutOfMemoryError
QUICK_OOM_ROWS = 8


def run_probe(quick: bool) -> dict[str, Any]:
    """``st-hpo validate gpu_trials_study.py --probe-memory`` as a subprocess: its exit code and lines."""
    started = time.time()
    cmd = [sys.executable, "-m", "st_hpo", "validate", str(PROBE_STUDY), "--probe-memory"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    corners = [line for line in lines if "per_device_train_batch_size=" in line]
    huge = next((line for line in corners if "per_device_train_batch_size=4096" in line or
                 "per_device_train_batch_size=64" in line and quick), None)
    small = next((line for line in corners if line is not huge), None)
    return {"exit_code": proc.returncode, "seconds": round(time.time() - started, 1), "lines": lines[-20:],
            "huge_corner": huge, "small_corner": small,
            "huge_does_not_fit": bool(huge and "does NOT fit" in huge),
            "small_fits": bool(small and "fits" in small and "does NOT fit" not in small)}


def _simulate_oom(module: Any, args: tuple) -> None:
    import torch

    features = args[0] if args else None
    rows = len(features["input_ids"]) if isinstance(features, dict) and "input_ids" in features else 0
    if torch.is_grad_enabled() and rows > QUICK_OOM_ROWS:
        raise torch.OutOfMemoryError(f"CUDA out of memory (simulated by --quick: a mini-batch of {rows} rows "
                                     f"with gradients, over {QUICK_OOM_ROWS})")


def run_cached(root: Path, quick: bool) -> dict[str, Any]:
    """One trial of a GradCache loss whose first mini-batch cannot fit: the mini-batch it trained with."""
    import optuna
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    import st_hpo
    from st_hpo._tracking._schema import MINI_BATCH_ATTR, OUT_OF_MEMORY_ATTR

    batch, seq, repeat = (32, 32, 1) if quick else (4096, 512, 90)
    pairs = _common.synthetic_pairs(batch, seed=1)
    from datasets import Dataset

    train = Dataset.from_dict({"anchor": [" ".join([s] * repeat) for s in pairs["sentence1"]],
                               "positive": [" ".join([s] * repeat) for s in pairs["sentence2"]]})
    model = SentenceTransformer(_common.model_path(), device="cpu")
    model.max_seq_length = seq

    def loss(built: Any, params: dict[str, Any]) -> Any:
        made = CachedMultipleNegativesRankingLoss(built, mini_batch_size=batch)
        if quick:
            built.register_forward_pre_hook(_simulate_oom)
        return made

    study = st_hpo.Study(
        name="gpu-cached", model=model, train_dataset=train,
        eval_dataset=lambda: _common.load_pairs("dev", 64), loss=loss, evaluator=_common.make_evaluator,
        objective=_common.OBJECTIVE, direction="maximize",
        args=dict(max_steps=1, per_device_train_batch_size=batch, per_device_eval_batch_size=64, learning_rate=2e-5,
                  save_strategy="no", seed=_common.TRAIN_SEED, disable_tqdm=True),
        space={"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-4, log=True)},
        n_trials=1, pruner="none", seed=0, baseline=False, keep_best_model=False, intermediate_eval_rows=None)
    started = time.time()
    folder = root / "cached"
    try:
        st_hpo.run_study(study, output_dir=folder, tracking_uri=f"sqlite:///{root / 'memory.db'}", progress=False)
        trial = st_hpo.open_study(study, output_dir=folder).optuna_study.trials[0]
    except Exception as exc:  # noqa: BLE001 - reported: the other steps still run
        return {"state": "not run", "error": f"{type(exc).__name__}: {exc}"[:400], "seconds": round(time.time() - started, 1)}
    attrs = trial.user_attrs
    return {"state": "OUT_OF_MEMORY" if attrs.get(OUT_OF_MEMORY_ATTR) else trial.state.name,
            "batch": batch, "mini_batch_size_given": batch, "mini_batch_size_trained": attrs.get(MINI_BATCH_ATTR),
            "peak_gpu_reserved_mb": attrs.get("st_hpo.peak_gpu_reserved_mb"), "device": attrs.get("st_hpo.device"),
            "error": (attrs.get("st_hpo.error") or "")[:400], "seconds": round(time.time() - started, 1)}


def run_multi_objective(root: Path) -> dict[str, Any]:
    """Two trials of a quality-against-cost study: the costs each recorded."""
    import optuna
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    import st_hpo
    from st_hpo._tracking._schema import COSTS_ATTR

    cfg = _common.config_with_data()
    study = st_hpo.Study(
        name="gpu-costs", model=cfg["model"], train_dataset=cfg["train"], eval_dataset=cfg["dev"],
        loss=CoSENTLoss, evaluator=_common.make_evaluator,
        objective=[_common.OBJECTIVE, "cost.encode_ms"], direction=["maximize", "minimize"],
        args=dict(max_steps=16, per_device_train_batch_size=16, learning_rate=5e-5, save_strategy="no",
                  seed=_common.TRAIN_SEED, disable_tqdm=True),
        space={"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-4, log=True)},
        n_trials=2, pruner="none", seed=0, baseline=False, keep_best_model=False, intermediate_eval_rows=None)
    started = time.time()
    folder = root / "costs"
    try:
        st_hpo.run_study(study, output_dir=folder, tracking_uri=f"sqlite:///{root / 'memory.db'}", progress=False)
        trials = st_hpo.open_study(study, output_dir=folder).optuna_study.trials
    except Exception as exc:  # noqa: BLE001 - reported
        return {"trials": [], "error": f"{type(exc).__name__}: {exc}"[:400], "seconds": round(time.time() - started, 1)}
    rows = []
    for t in trials:
        costs = t.user_attrs.get(COSTS_ATTR) or {}
        rows.append({"number": t.number, "state": t.state.name, "values": t.values,
                     "encode_ms": costs.get("cost.encode_ms"), "peak_memory_mb": costs.get("cost.peak_memory_mb"),
                     "embedding_dim": costs.get("cost.embedding_dim"), "train_seconds": costs.get("cost.train_seconds"),
                     "device": t.user_attrs.get("st_hpo.device")})
    return {"trials": rows, "seconds": round(time.time() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="CPU smoke run: tiny BERT, simulated out-of-memory error")
    mode.add_argument("--device-check", action="store_true", help="GPU: MiniLM on CUDA; figures into gpu-check.json")
    p.add_argument("--only", choices=("probe", "cached", "costs"), action="append",
                   help="run only these steps (repeatable; default: all three)")
    ns = p.parse_args(argv)
    _common.quiet_libraries()
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    gpu = torch.cuda.is_available()
    if ns.device_check and not gpu:
        print("[gpu_memory] no CUDA device here (torch.cuda.is_available() is False): nothing measured, nothing written")
        return 1
    gpu_trials.configure(ns)
    steps = ns.only or ["costs", "cached", "probe"]  # the cheapest first: each step's figures are written as it ends
    device = torch.cuda.get_device_name(0) if gpu else "cpu"
    data: dict[str, Any] = {"device": device}
    runners = {"costs": run_multi_objective, "cached": lambda root: run_cached(root, ns.quick),
               "probe": lambda root: run_probe(ns.quick)}
    with tempfile.TemporaryDirectory(prefix="st-hpo-gpu-memory-") as tmp:
        for step in steps:
            data[step] = runners[step](Path(tmp))
            print(f"[gpu_memory] {step}: {json.dumps(data[step], default=str)[:2000]}")
            save(data, quick=ns.quick)
    return 0


def figures_of(data: dict[str, Any]) -> dict[str, Any]:
    """The gpu-check.json figures of the steps that ran."""
    figures: dict[str, Any] = {}
    if "probe" in data:
        figures["probe_memory"] = {k: data["probe"][k] for k in ("exit_code", "huge_does_not_fit", "small_fits",
                                                                 "huge_corner", "small_corner")}
    if "cached" in data:
        figures["cached_mini_batch"] = {k: data["cached"].get(k) for k in
                                        ("state", "mini_batch_size_given", "mini_batch_size_trained",
                                         "peak_gpu_reserved_mb", "error")}
    if "costs" in data:
        figures["multi_objective_costs"] = [{k: r[k] for k in ("number", "state", "encode_ms", "peak_memory_mb",
                                                               "embedding_dim", "device")}
                                            for r in data["costs"]["trials"]] or data["costs"].get("error")
    return figures


def save(data: dict[str, Any], *, quick: bool) -> None:
    """Write the results so far (and, on a GPU, merge their figures into gpu-check.json)."""
    figures = figures_of(data)
    table = "\n".join(f"- {k}: {json.dumps(v, default=str)}" for k, v in figures.items())
    name = "gpu_memory-quick" if quick else "gpu_memory-gpu"
    path = _common.write_results(name, {"figures": figures, **data}, table)
    print(f"[gpu_memory] wrote {path}")
    if not quick:
        target = _common.results_dir() / "gpu-check.json"
        current = json.loads(target.read_text()) if target.is_file() else {}
        stamp = {"device": data["device"], "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        target.write_text(json.dumps({**current, **figures, **stamp}, indent=2, default=str) + "\n")
        print(f"[gpu_memory] merged {', '.join(figures)} into {target}")


if __name__ == "__main__":
    sys.exit(main())
