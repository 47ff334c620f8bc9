"""Every file in studies/ and examples/ runs (tiny model, a few rows of STSb)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import st_hpo
from tests.conftest import REPO, STSB_DIR
from tests.helpers import load_trials, mlflow_runs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not STSB_DIR.exists(), reason=f"needs the STS benchmark CSVs at {STSB_DIR}"),
]


def _env(tiny_model_path: str, **extra: str) -> dict:
    return {**os.environ, "STHPO_STSB_DIR": str(STSB_DIR), "STHPO_MODEL": tiny_model_path,
            "STHPO_TRAIN_ROWS": "48", "STHPO_EVAL_ROWS": "32", "STHPO_N_TRIALS": "2",
            "STHPO_INTERMEDIATE_EVAL_ROWS": "16", **extra}


def test_studies_stsb_minilm_runs(tmp_path, tiny_model_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "st_hpo", "run", str(REPO / "studies/stsb_minilm.py"),
                           "--output-dir", str(out)], capture_output=True, text=True, timeout=600,
                          env=_env(tiny_model_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DeprecationWarning" not in proc.stderr, "the study uses sentence-transformers 6's import paths"
    # the ready study (what the quickstart runs) leaves the evaluations and the pruner to st-hpo's defaults
    assert "leave eval_strategy unset" not in proc.stderr, "no warning about the study's own cadence"
    assert "pruner successive-halving" in proc.stdout + proc.stderr  # the header before trial 0
    trials = load_trials(out, "stsb-minilm")
    states = [t.state.name for t in trials]
    assert len(states) == 2 and states[0] == "COMPLETE" and states[1] in ("COMPLETE", "PRUNED"), states
    assert trials[0].user_attrs["st_hpo.baseline"] is True
    assert set(trials[1].params) == {"learning_rate", "warmup_ratio", "batch_sampler", "per_device_train_batch_size"}
    _, parents, runs = mlflow_runs(out, "stsb-minilm")
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}
    assert len(parents) == 1 and [r.info.status for r in runs] == [status[s] for s in states]
    assert all(r.data.tags["st_hpo.intermediate_eval"] == "16 of 32 eval rows" for r in runs)


def test_studies_stsb_retrieval_runs(tmp_path, tiny_model_path):
    """The in-batch-negatives study: (anchor, positive) pairs, an IR evaluator, the loss's scale searched."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "st_hpo", "run", str(REPO / "studies/stsb_retrieval.py"),
                           "--output-dir", str(out)], capture_output=True, text=True, timeout=600,
                          env=_env(tiny_model_path, STHPO_EVAL_ROWS="48", STHPO_INTERMEDIATE_EVAL_ROWS="8"),
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load_trials(out, "stsb-retrieval")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert set(trials[1].params) == {"learning_rate", "warmup_ratio", "per_device_train_batch_size",
                                     "batch_sampler", "loss.scale"}
    assert all(0.0 <= t.value <= 1.0 for t in trials)
    _, parents, runs = mlflow_runs(out, "stsb-retrieval")
    assert len(parents) == 1 and [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    # MLflow has the loss's scale under its own name, and the objective under a name MLflow accepts ("@" -> "_")
    assert float(runs[1].data.params["loss.scale"]) == pytest.approx(trials[1].params["loss.scale"])
    metrics = runs[1].data.metrics
    assert metrics["eval_stsb-ir_cosine_ndcg_10"] == pytest.approx(trials[1].value)
    assert metrics["objective"] == pytest.approx(trials[1].value)


def test_examples_python_api_runs(tmp_path, tiny_model_path):
    out = tmp_path / "api"
    proc = subprocess.run([sys.executable, str(REPO / "examples/python_api.py"), str(out)], capture_output=True,
                          text=True, timeout=600, env=_env(tiny_model_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best trial" in proc.stdout
    assert "best model: " in proc.stdout and "similarity of two paraphrases" in proc.stdout
    # the default pruner (successive halving) may stop the second trial; the first always completes
    states = [t.state.name for t in load_trials(out, "python-api")]
    assert len(states) == 2 and states[0] == "COMPLETE" and states[1] in ("COMPLETE", "PRUNED"), states


def test_examples_quickstart_runs(tmp_path, tiny_model_path):
    out = tmp_path / "quick"
    proc = subprocess.run(["bash", str(REPO / "examples/quickstart.sh"), "--output-dir", str(out), "--n-trials", "1"],
                          capture_output=True, text=True, timeout=900, env=_env(tiny_model_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 complete" in proc.stdout
    assert (out / "mlflow.db").exists()


def test_studies_stsb_reranker_runs(tmp_path, tiny_model_path):
    """A CrossEncoder from the bi-encoder's weights, the loss searched with a Choice."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "st_hpo", "run", str(REPO / "studies/stsb_reranker.py"),
                           "--output-dir", str(out)], capture_output=True, text=True, timeout=600,
                          env=_env(tiny_model_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DeprecationWarning" not in proc.stderr
    trials = load_trials(out, "stsb-reranker")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    _, parents, runs = mlflow_runs(out, "stsb-reranker")
    assert parents[0].data.tags["st_hpo.model_kind"] == "cross-encoder"
    assert runs[0].data.params["loss"] == "bce", "the baseline shows the label of the study's loss"
    assert runs[1].data.params["loss"] in ("bce", "mse")
    from sentence_transformers import CrossEncoder

    best = [t for t in trials if t.user_attrs.get("st_hpo.model_dir")][-1]
    assert CrossEncoder(best.user_attrs["st_hpo.model_dir"]).num_labels == 1


def test_studies_stsb_sparse_runs(tmp_path, tiny_model_path):
    """SPLADE on the base model's encoder, SpladeLoss's regularizer weights searched, sparsity kept."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "st_hpo", "run", str(REPO / "studies/stsb_sparse.py"),
                           "--output-dir", str(out)], capture_output=True, text=True, timeout=600,
                          env=_env(tiny_model_path, STHPO_EVAL_ROWS="48", STHPO_INTERMEDIATE_EVAL_ROWS="8"),
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load_trials(out, "stsb-sparse")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert set(trials[0].params) == {"learning_rate", "loss.document_regularizer_weight",
                                     "loss.query_regularizer_weight"}
    assert trials[0].user_attrs["st_hpo.side_metrics"]["stsb-ir_query_active_dims"] > 0
    _, _, runs = mlflow_runs(out, "stsb-sparse")
    assert [r.data.tags["st_hpo.model_kind"] for r in runs] == ["sparse-encoder"] * 2
    assert runs[0].data.metrics["eval_stsb-ir_corpus_active_dims"] > 0
@pytest.mark.skipif(not hasattr(st_hpo, "Choice"), reason="st_hpo.Choice is not in this build's search space yet")
def test_studies_stsb_multitask_runs(tmp_path, tiny_model_path):
    """Two datasets with a loss each; the batch sampler and the prompts (a Choice) searched with the rate."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "st_hpo", "run", str(REPO / "studies/stsb_multitask.py"),
                           "--output-dir", str(out)], capture_output=True, text=True, timeout=600,
                          env=_env(tiny_model_path, STHPO_TRAIN_ROWS="64", STHPO_EVAL_ROWS="48"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load_trials(out, "stsb-multitask")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert set(trials[1].params) == {"learning_rate", "multi_dataset_batch_sampler", "prompts"}
    assert trials[1].params["prompts"] in ("none", "query-passage")
    _, parents, runs = mlflow_runs(out, "stsb-multitask")
    assert len(parents) == 1 and [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    metrics = runs[1].data.metrics
    assert metrics["objective"] == pytest.approx(trials[1].value) == pytest.approx(
        metrics["eval_sts-dev_spearman_cosine"])
    assert "eval_pairs-dev_cosine_ndcg_10" in metrics  # the SequentialEvaluator's other evaluator
    assert all(r.data.tags["st_hpo.intermediate_eval"].startswith("16 of ") for r in runs)


def test_studies_stsb_minilm_cost_runs(tmp_path, tiny_model_path):
    """Quality against cost: two objectives (Spearman up, cost.encode_ms down), the embedding size and the
    learning rate searched; the answer is the Pareto front, on the parent run and in `best --json`.
    (Needs issue 25's several objectives and measured costs.)"""
    import csv
    import json

    from tests.helpers import run_cli

    out = tmp_path / "out"
    # the tiny model's embeddings are 32 wide: search sizes below that
    env = _env(tiny_model_path, STHPO_N_TRIALS="4", STHPO_TRUNCATE_DIMS="8,16,32")
    proc = subprocess.run([sys.executable, "-m", "st_hpo", "run", str(REPO / "studies/stsb_minilm_cost.py"),
                           "--output-dir", str(out)], capture_output=True, text=True, timeout=600, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DeprecationWarning" not in proc.stderr
    trials = load_trials(out, "stsb-minilm-cost")
    assert len(trials) == 4 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert trials[0].state.name == "COMPLETE" and trials[0].user_attrs["st_hpo.baseline"] is True
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    for t in complete:
        costs = t.user_attrs["st_hpo.costs"]
        assert len(t.values) == 2 and -1.0 <= t.values[0] <= 1.0
        assert t.values[1] == costs["cost.encode_ms"] > 0
        assert costs["cost.embedding_dim"] == t.params.get("model.truncate_dim", 32), "the baseline: full size"
    assert all(set(t.params) == {"learning_rate", "model.truncate_dim", "model.max_seq_length"} for t in trials[1:])

    def beats(a, b):  # at least as good on both, better on one (Spearman up, milliseconds down)
        return a.values[0] >= b.values[0] and a.values[1] <= b.values[1] and a.values != b.values
    front = {t.number for t in complete if not any(beats(o, t) for o in complete)}

    best = run_cli("best", str(REPO / "studies/stsb_minilm_cost.py"), "--output-dir", str(out), "--json",
                   cwd=tmp_path, env=env)
    assert best.returncode == 0, best.stderr
    pareto = json.loads(best.stdout)["pareto"]
    assert {p["number"] for p in pareto} == front
    assert all(p["values"] == list(trials[p["number"]].values) for p in pareto)

    client, parents, runs = mlflow_runs(out, "stsb-minilm-cost")
    listed = {a.path for a in client.list_artifacts(parents[0].info.run_id, "reports")}
    assert {"reports/pareto.html", "reports/pareto.png", "reports/pareto.csv"} <= listed
    rows = list(csv.DictReader(open(out / "reports" / "pareto.csv")))
    assert {int(r["number"]) for r in rows if r["on_front"] == "True"} == front
    assert {int(r.data.tags["st_hpo.trial_number"]) for r in runs if r.data.tags.get("st_hpo.pareto") == "true"} == front
    for t in complete:
        metrics = runs[t.number].data.metrics
        assert metrics["objective.sts-dev_spearman_cosine"] == pytest.approx(t.values[0])
        assert metrics["objective.cost.encode_ms"] == pytest.approx(t.values[1])
        assert metrics["cost.encode_ms"] == pytest.approx(t.values[1])
