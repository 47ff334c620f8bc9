"""Where trials really train, a trial that runs out of GPU memory, and the other model kinds on CUDA.

    python benchmarks/gpu_trials.py --device-check  # GPU: MiniLM; merges its figures into gpu-check.json
    python benchmarks/gpu_trials.py --quick         # CPU smoke run of the same code paths (tiny BERT, seconds)

1. ``st-hpo -q run benchmarks/gpu_trials_study.py --workers 2`` (on a GPU machine st-hpo gives both workers
   GPU 0) while ``nvidia-smi --query-compute-apps=pid,used_memory`` is sampled every 0.5 s. Every trial that
   trained records the devices of its model's parameters and of its optimizer's state, read from the trainer
   after its first optimizer step (``st_hpo.device``): ``trials_on_cuda`` says whether all of them are CUDA
   devices. ``supervisor_cuda_context`` says whether the supervisor's pid was ever listed by nvidia-smi; it
   is measured only where nvidia-smi lists the workers' pids (in a container with its own pid namespace it
   may list none, or host pids: then the figure says "not measured" and why).
2. Trial 0 of that study has a batch far too large for the card (the study file's docstring works out how
   far): ``oom_trial`` is its state as st-hpo shows it (OUT_OF_MEMORY expected: recorded as out of memory, the
   sampler steers away from it; "out of memory" in its error) and
   ``next_trial_after_oom`` the state of the next trial on the same worker (COMPLETE expected). Whether the
   OOM trial's memory was released is read from that next trial's peak reserved GPU memory (st-hpo resets
   the peak at each trial's start, so memory still held would count in it), beside a normal trial's.
3. One CrossEncoder and one SparseEncoder (SPLADE) trial, in this process (``st_hpo.run_study``), whose
   ``st_hpo.device`` says where they trained: ``kinds_on_cuda``.

``--device-check`` on a machine without CUDA says so and writes nothing. ``--quick`` runs on the CPU with the
tiny random BERT and synthetic pairs, and simulates the out-of-memory error (raised by a hook on the loss);
it writes ``gpu_trials-quick.json``/``.md`` and never ``gpu-check.json``. Details (per-trial devices, errors,
peaks, the nvidia-smi samples' summary) go to ``gpu_trials-gpu.json``/``.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

STUDY = Path(__file__).resolve().parent / "gpu_trials_study.py"
DEVICE_ATTR = "st_hpo.device"


class ComputeApps:
    """Samples ``nvidia-smi --query-compute-apps=pid,used_memory`` every ``every`` seconds: (time, pid, MiB)."""

    def __init__(self, every: float = 0.5) -> None:
        self.every, self.samples, self.available = every, [], True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ComputeApps:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=10).stdout
            except (FileNotFoundError, subprocess.TimeoutExpired):
                self.available = False
                return
            now = time.time()
            for line in out.splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 2 and parts[0].isdigit():
                    self.samples.append((now, int(parts[0]), float(parts[1]) if parts[1].replace(".", "").isdigit() else None))
            self._stop.wait(self.every)


def _trials(output_dir: Path, name: str) -> list[Any]:
    import optuna

    from st_hpo._execution._storage import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(str(output_dir / "optuna.journal")))
    return sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)


def on_cuda(trial: Any) -> bool:
    devices = trial.user_attrs.get(DEVICE_ATTR) or {}
    return bool(devices) and all(v.startswith("cuda") for v in devices.values())


def _row(t: Any) -> dict[str, Any]:
    a = t.user_attrs
    state = "OUT_OF_MEMORY" if a.get("st_hpo.out_of_memory") else t.state.name  # as `st-hpo status` shows it
    return {"number": t.number, "state": state, "worker": a.get("st_hpo.tag.worker"), "pid": a.get("st_hpo.pid"),
            "batch": t.params.get("per_device_train_batch_size"), "device": a.get(DEVICE_ATTR),
            "peak_gpu_reserved_mb": a.get("st_hpo.peak_gpu_reserved_mb"), "error": (a.get("st_hpo.error") or "")[:300],
            "start": t.datetime_start.timestamp() if t.datetime_start else None,
            "end": t.datetime_complete.timestamp() if t.datetime_complete else None}


def supervisor_context(apps: ComputeApps, supervisor: int, workers: set[int], gpu: bool) -> tuple[Any, str]:
    """(True/False, how) when nvidia-smi lets us tell, else ("not measured: why", "")."""
    if not gpu:
        return "not measured: no CUDA", ""
    if not apps.available:
        return "not measured: nvidia-smi missing", ""
    listed = {pid for _, pid, _ in apps.samples}
    if supervisor in listed:
        return True, f"nvidia-smi listed the supervisor (pid {supervisor}); pids listed: {sorted(listed)}"
    if workers & listed:
        return False, (f"nvidia-smi listed worker pids {sorted(workers & listed)} and never the supervisor "
                       f"(pid {supervisor}); all pids listed: {sorted(listed)}")
    return (f"not measured: nvidia-smi listed none of the workers' pids {sorted(workers)} (pids listed: "
            f"{sorted(listed)}: another pid namespace?)"), ""


def oom_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The first trial with the huge batch, the next trial on its worker, and whether memory was released."""
    huge = max(r["batch"] or 0 for r in rows)
    oom = next((r for r in rows if r["batch"] == huge), None)
    if oom is None:
        return {"oom_trial": "not measured: no trial with the huge batch ran", "next_trial_after_oom": "not measured"}
    later = [r for r in rows if r["worker"] == oom["worker"] and r["number"] > oom["number"]]
    nxt = later[0] if later else None
    others = [r["peak_gpu_reserved_mb"] for r in rows if r is not oom and r is not nxt and r["state"] == "COMPLETE"
              and r["peak_gpu_reserved_mb"] is not None]
    out = {"oom_trial": oom["state"], "oom_error": oom["error"],
           "oom_error_says_out_of_memory": "out of memory" in oom["error"].lower(),
           "oom_trial_peak_gpu_reserved_mb": oom["peak_gpu_reserved_mb"],
           "next_trial_after_oom": nxt["state"] if nxt else "not measured: its worker ran no other trial",
           "next_trial_number": nxt["number"] if nxt else None,
           "next_trial_peak_gpu_reserved_mb": nxt["peak_gpu_reserved_mb"] if nxt else None,
           "other_trials_peak_gpu_reserved_mb": others}
    if nxt and nxt["peak_gpu_reserved_mb"] is not None and others:
        # released: the next trial's peak is that of a normal trial (held memory would be counted in it)
        out["oom_memory_released"] = nxt["peak_gpu_reserved_mb"] <= 1.5 * max(others) + 512
    else:
        out["oom_memory_released"] = "not measured"
    return out


def run_workers(root: Path, gpu: bool) -> dict[str, Any]:
    out = root / "workers"
    cmd = [sys.executable, "-m", "st_hpo", "-q", "run", str(STUDY), "--output-dir", str(out), "--workers", "2"]
    started = time.time()
    with ComputeApps() as apps:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stdout, stderr = proc.communicate()
    wall = time.time() - started
    rows = [_row(t) for t in _trials(out, "gpu-trials")]
    if not rows:
        raise RuntimeError(f"st-hpo run (exit {proc.returncode}) ran no trial:\n{stderr[-3000:]}")
    workers = {r["pid"] for r in rows if r["pid"]}
    context, how = supervisor_context(apps, proc.pid, workers, gpu)
    trained = [r for r in rows if r["device"]]
    return {"exit_code": proc.returncode, "seconds": round(wall, 1), "supervisor_pid": proc.pid,
            "worker_pids": sorted(workers), "trials": rows, "supervisor_cuda_context": context,
            "supervisor_check": how, "nvidia_smi_samples": len(apps.samples),
            "trained_trials_on_cuda": bool(trained) and all(str(v).startswith("cuda") for r in trained
                                                             for v in r["device"].values()),
            **oom_figures(rows), "stderr_tail": stderr[-1500:] if proc.returncode else ""}


def _kind_study(kind: str, cfg: dict[str, Any]) -> Any:
    import optuna

    import st_hpo

    args = dict(max_steps=8, per_device_train_batch_size=16, learning_rate=5e-5, logging_steps=4,
                save_strategy="no", seed=_common.TRAIN_SEED, disable_tqdm=True)
    common = dict(name=kind, train_dataset=cfg["train"], eval_dataset=cfg["dev"], n_trials=1, pruner="none",
                  baseline=False, keep_best_model=False, seed=0,
                  space={"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-4, log=True)})
    if kind == "cross-encoder":
        from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments
        from sentence_transformers.cross_encoder.evaluation import CrossEncoderCorrelationEvaluator
        from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

        def evaluator(ds: Any) -> Any:
            pairs = list(zip(ds["sentence1"], ds["sentence2"], strict=True))
            return CrossEncoderCorrelationEvaluator(pairs, ds["score"], name="sts-dev")

        return st_hpo.Study(model=cfg["model"], args=CrossEncoderTrainingArguments(output_dir="unused", **args),
                            loss=BinaryCrossEntropyLoss, evaluator=evaluator, objective="sts-dev_spearman", **common)
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.evaluation import SparseEmbeddingSimilarityEvaluator
    from sentence_transformers.sparse_encoder.losses import SparseMultipleNegativesRankingLoss, SpladeLoss
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    hf = cfg["model"] + "-hf" if Path(cfg["model"] + "-hf").is_dir() else cfg["model"]  # the tiny BERT's own folder
    model = SparseEncoder(modules=[MLMTransformer(hf, max_seq_length=64), SpladePooling("max")], device="cpu")

    def splade(built: Any, params: dict[str, Any]) -> Any:
        return SpladeLoss(built, loss=SparseMultipleNegativesRankingLoss(built), document_regularizer_weight=3e-5,
                          query_regularizer_weight=5e-5)

    common["train_dataset"] = cfg["train"].remove_columns("score")  # (anchor, positive) pairs
    return st_hpo.Study(model=model, args=args, loss=splade, objective="sts-dev_spearman_dot",
                        evaluator=lambda ds: SparseEmbeddingSimilarityEvaluator(ds["sentence1"], ds["sentence2"],
                                                                                ds["score"], name="sts-dev"), **common)


def run_kinds(root: Path) -> dict[str, Any]:
    import st_hpo

    cfg = _common.config_with_data()
    out: dict[str, Any] = {}
    for kind in ("cross-encoder", "sparse-encoder"):
        started = time.time()
        folder = root / kind
        try:
            st_hpo.run_study(_kind_study(kind, cfg), output_dir=folder, tracking_uri=f"sqlite:///{root / 'kinds.db'}",
                             progress=False)
            rows = [_row(t) for t in _trials(folder, kind)]
        except Exception as exc:  # noqa: BLE001 - reported: the other kind still runs
            rows = [{"state": "not run", "error": f"{type(exc).__name__}: {exc}"[:300], "device": None}]
        trial = rows[0] if rows else {"state": "not run", "device": None, "error": ""}
        out[kind] = {"state": trial["state"], "device": trial["device"], "error": trial["error"],
                     "seconds": round(time.time() - started, 1)}
    return out


def configure(ns: argparse.Namespace) -> None:
    if ns.quick:
        os.environ.update({"STHPO_GPU_TRIALS_MODE": "quick", "STHPO_BENCH_MODEL": "tiny", "STHPO_BENCH_DATA": "synthetic",
                           "STHPO_BENCH_TRAIN_ROWS": "32", "STHPO_BENCH_EVAL_ROWS": "32"})
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    else:
        os.environ["STHPO_GPU_TRIALS_MODE"] = "device"
        os.environ.setdefault("STHPO_BENCH_MODEL", "minilm")
        os.environ.setdefault("STHPO_BENCH_TRAIN_ROWS", "256")
        os.environ.setdefault("STHPO_BENCH_EVAL_ROWS", "200")


def merge_gpu_check(figures: dict[str, Any]) -> Path:
    """Write ``figures`` into gpu-check.json (the other benchmarks' keys in it are kept)."""
    path = _common.results_dir() / "gpu-check.json"
    current = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**current, **figures}, indent=2, default=str) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="CPU smoke run: tiny BERT, simulated out-of-memory error")
    mode.add_argument("--device-check", action="store_true", help="GPU: MiniLM on CUDA; figures into gpu-check.json")
    ns = p.parse_args(argv)
    _common.quiet_libraries()
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    gpu = torch.cuda.is_available()
    if ns.device_check and not gpu:
        print("[gpu_trials] no CUDA device here (torch.cuda.is_available() is False): nothing measured, nothing written")
        return 1
    configure(ns)
    with tempfile.TemporaryDirectory(prefix="st-hpo-gpu-trials-") as tmp:
        workers = run_workers(Path(tmp), gpu)
        kinds = run_kinds(Path(tmp))
    device = torch.cuda.get_device_name(0) if gpu else "cpu"
    kinds_on_cuda = {k: bool(v["device"]) and all(d.startswith("cuda") for d in v["device"].values())
                     for k, v in kinds.items()}
    figures = {"trials_on_cuda": workers["trained_trials_on_cuda"] and all(kinds_on_cuda.values()),
               "supervisor_cuda_context": workers["supervisor_cuda_context"], "oom_trial": workers["oom_trial"],
               "next_trial_after_oom": workers["next_trial_after_oom"], "kinds_on_cuda": kinds_on_cuda,
               "device": device, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    table = _table(workers, kinds, figures, quick=ns.quick)
    name = "gpu_trials-quick" if ns.quick else "gpu_trials-gpu"
    path = _common.write_results(name, {"figures": figures, "workers": workers, "kinds": kinds}, table)
    print(table)
    print(f"[gpu_trials] wrote {path} and {path.with_suffix('.md')}")
    if ns.device_check:
        print(f"[gpu_trials] merged {', '.join(figures)} into {merge_gpu_check(figures)}")
    return 0 if workers["exit_code"] == 0 else 1


def _table(workers: dict[str, Any], kinds: dict[str, Any], figures: dict[str, Any], *, quick: bool) -> str:
    lines = ["| trial | worker | batch | state | model / optimizer state on | peak reserved MiB | error |",
             "|---|---|---|---|---|---|---|"]
    for r in workers["trials"]:
        dev = r["device"] or {}
        lines.append(f"| {r['number']} | {r['worker']} | {r['batch']} | {r['state']} | {dev.get('model', '-')} / "
                     f"{dev.get('optimizer_state', '-')} | {r['peak_gpu_reserved_mb'] or '-'} | {r['error'][:80]} |")
    for kind, k in kinds.items():
        dev = k["device"] or {}
        lines.append(f"| {kind} | main | 16 | {k['state']} | {dev.get('model', '-')} / {dev.get('optimizer_state', '-')} "
                     f"| - | {k['error'][:80]} |")
    head = ("quick (CPU, tiny BERT; the out-of-memory error is simulated, nothing here is a GPU figure)" if quick else
            f"device check on {figures['device']}") + f": `st-hpo run --workers 2` exit {workers['exit_code']}, " \
        f"{workers['seconds']} s; supervisor pid {workers['supervisor_pid']}, workers {workers['worker_pids']}."
    summary = "\n".join(f"- {k}: {v}" for k, v in figures.items() if k != "date")
    return (f"{head}\n\n" + "\n".join(lines) + f"\n\n{summary}\n- oom memory released: {workers['oom_memory_released']}"
            f"\n- supervisor check: {workers['supervisor_check'] or '-'}\n")


if __name__ == "__main__":
    sys.exit(main())
