"""Does a k-row subset of the dev set rank models the way the whole dev set does?

    .venv/bin/python benchmarks/eval_subset.py            # MiniLM, STSb dev (1,500 pairs), ~3-5 min on CPU
    .venv/bin/python benchmarks/eval_subset.py --quick    # tiny model, synthetic pairs (the test's mode)

What ``intermediate_eval_rows="auto"`` rests on. Models of different quality: the base model and
checkpoints of short fine-tunes at several learning rates (CoSENTLoss on the first 1,000 STSb train pairs,
batch 16; snapshots after 10 and 30 steps), i.e. what a study's trials look like at its pruner's rungs.
Each model's dev embeddings are computed once; then for each k, for many seeded random k-row subsets,
the Spearman (cosine) of every model on the subset is ranked against the whole set's ranking: Kendall's
tau, how often the best model is the same, and how often a pair of models closer than 0.01 on the whole
set keeps its order. The subset st-hpo would pick (``random.Random(0)``, as in ``StudyResources``) is
reported too.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import _common  # noqa: E402

LEARNING_RATES = (5e-6, 2e-5, 1e-4, 4e-4)
SNAPSHOTS = (10, 30)
SIZES = (100, 200, 300, 500, 750, 1000)
DRAWS = 200


def _cosines(model, ds) -> list[float]:
    import numpy as np

    a = model.encode(ds["sentence1"], batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
    b = model.encode(ds["sentence2"], batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
    return np.sum(a * b, axis=1)


def model_cosines(model_path: str, train, dev, lrs, snapshots) -> dict[str, list[float]]:
    """Dev-pair cosine similarities of the base model and of each learning rate's snapshots."""
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Args
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss
    from transformers import TrainerCallback

    out = {"base": _cosines(SentenceTransformer(model_path, device="cpu"), dev)}

    class Snapshot(TrainerCallback):
        def __init__(self, model, lr):
            self.model, self.lr = model, lr

        def on_step_end(self, args, state, control, **kw):
            if state.global_step in snapshots:
                out[f"lr={self.lr:g} step={state.global_step}"] = _cosines(self.model, dev)
                self.model.train()

    import tempfile

    for lr in lrs:
        model = SentenceTransformer(model_path, device="cpu")
        with tempfile.TemporaryDirectory() as tmp:
            args = Args(output_dir=tmp, max_steps=max(snapshots), per_device_train_batch_size=16, learning_rate=lr,
                        warmup_ratio=0.1, save_strategy="no", report_to="none", disable_tqdm=True, seed=12,
                        use_cpu=True, logging_steps=1000)
            SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=CoSENTLoss(model),
                                       callbacks=[Snapshot(model, lr)]).train()
    return out


def agreement(cosines: dict[str, list[float]], scores, sizes, draws: int) -> tuple[list[dict], dict[str, float]]:
    """Per subset size: Kendall tau of the subset ranking vs the whole set's, top-1 and close-pair agreement."""
    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    names = list(cosines)
    sims = np.stack([np.asarray(cosines[n]) for n in names])
    scores = np.asarray(scores)
    full = np.array([spearmanr(s, scores).statistic for s in sims])
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    close = [(i, j) for i, j in pairs if abs(full[i] - full[j]) < 0.01]
    far = [(i, j) for i, j in pairs if abs(full[i] - full[j]) >= 0.01]
    rows = []
    n = len(scores)
    for k in sizes:
        if k >= n:
            continue
        rng = random.Random(1)
        taus, top, kept, far_kept, regret = [], 0, [], [], []
        picks = [sorted(random.Random(0).sample(range(n), k))]  # st-hpo's own subset first
        picks += [sorted(rng.sample(range(n), k)) for _ in range(draws)]
        for idx in picks:
            sub = np.array([spearmanr(s[idx], scores[idx]).statistic for s in sims])
            taus.append(kendalltau(sub, full).statistic)
            top += int(np.argmax(sub) == np.argmax(full))
            kept += [np.sign(sub[i] - sub[j]) == np.sign(full[i] - full[j]) for i, j in close]
            far_kept += [np.sign(sub[i] - sub[j]) == np.sign(full[i] - full[j]) for i, j in far]
            regret.append(float(full.max() - full[np.argmax(sub)]))  # whole-set score lost by the subset's pick
        rows.append({"k": k, "tau_st_hpo_subset": round(float(taus[0]), 4),
                     "tau_mean": round(float(np.mean(taus[1:])), 4),
                     "tau_p5": round(float(np.percentile(taus[1:], 5)), 4),
                     "top1_same": round(top / len(picks), 3),
                     "close_pairs": len(close),
                     "close_pairs_kept": round(float(np.mean(kept)), 3) if kept else None,
                     "far_pairs": len(far), "far_pairs_kept": round(float(np.mean(far_kept)), 4) if far_kept else None,
                     "regret_mean": round(float(np.mean(regret)), 5), "regret_max": round(float(np.max(regret)), 5)})
    return rows, dict(zip(names, (round(float(v), 4) for v in full), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, synthetic pairs (seconds)")
    ns = parser.parse_args()
    _common.quiet_libraries()
    started = time.perf_counter()
    if ns.quick:
        os.environ["STHPO_BENCH_DATA"] = "synthetic"
        model, train_rows, dev_rows, lrs, snaps, sizes, draws = (
            _common.tiny_model(), 64, 200, (1e-4, 1e-3), (2, 4), (50, 100), 20)
    else:
        model, train_rows, dev_rows, lrs, snaps, sizes, draws = (
            _common.minilm_path(), 1000, 10**6, LEARNING_RATES, SNAPSHOTS, SIZES, DRAWS)
    train = _common.load_pairs("train", train_rows)
    dev = _common.load_pairs("dev", dev_rows)
    cosines = model_cosines(model, train, dev, lrs, snaps)
    rows, full = agreement(cosines, dev["score"], sizes, draws)
    name = "eval_subset-quick" if ns.quick else "eval_subset"
    data = {"model": _common.model_label(model), "dev_rows": len(dev), "train_rows": len(train),
            "models": full, "draws_per_size": draws, "by_size": rows,
            "seconds": round(time.perf_counter() - started, 1)}
    table = (f"{len(full)} models ({data['model']}: base + snapshots after {', '.join(map(str, snaps))} steps at "
             f"learning rates {', '.join(f'{x:g}' for x in lrs)}), whole-set Spearman "
             f"{min(full.values()):.3f}..{max(full.values()):.3f} on {len(dev)} dev pairs; {draws} seeded "
             "random subsets per size.\n\n")
    table += _common.md_table(
        ["subset rows", "Kendall tau (st-hpo's subset)", "tau mean", "tau 5th pct", "same best model",
         "pairs < 0.01 apart kept in order", "pairs >= 0.01 apart kept", "best's loss mean / max"],
        [[r["k"], r["tau_st_hpo_subset"], r["tau_mean"], r["tau_p5"], r["top1_same"],
          f"{r['close_pairs_kept']} of {r['close_pairs']}" if r["close_pairs"] else "-",
          f"{r['far_pairs_kept']} of {r['far_pairs']}" if r["far_pairs"] else "-",
          f"{r['regret_mean']:.4f} / {r['regret_max']:.4f}"] for r in rows])
    path = _common.write_results(name, data, table)
    print(table)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
