"""The held-out test score: the kept best model and the base model scored on a set no trial chose by."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from datasets import Dataset
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

import st_hpo
from tests.conftest import make_pairs
from tests.helpers import mlflow_runs

pytestmark = pytest.mark.slow

TEST_PAIRS = make_pairs(24, seed=3)


class CountingTestEvaluator:
    """A test_evaluator factory that records which rows each evaluator it built was called on."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, ds):
        calls, rows = self.calls, len(ds)

        class Counting(EmbeddingSimilarityEvaluator):
            def __call__(self, model, *args, **kwargs):
                calls.append(rows)
                return super().__call__(model, *args, **kwargs)

        return Counting(ds["sentence1"], ds["sentence2"], ds["score"], name="sts-test")


def test_the_best_model_and_the_base_model_are_scored_on_the_test_set_only_at_the_end(make_study, tmp_path):
    counting = CountingTestEvaluator()
    study = make_study(test_dataset=lambda: Dataset.from_dict(TEST_PAIRS), test_evaluator=counting,
                       n_trials=2, pruner="none")
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    # validation probes 16 rows; then only the kept best model and the base model see the 24 test rows
    assert counting.calls == [16, 24, 24]
    assert result.test_value is not None and result.base_model_test_value is not None
    best = st_hpo.best_trial(study, output_dir=tmp_path)
    assert (best.test_value, best.base_model_test_value) == (result.test_value, result.base_model_test_value)
    # it is the kept model's score, with the objective's metric as the test evaluator names it
    from sentence_transformers import SentenceTransformer

    kept = SentenceTransformer(best.model_dir, device="cpu")
    direct = EmbeddingSimilarityEvaluator(TEST_PAIRS["sentence1"], TEST_PAIRS["sentence2"], TEST_PAIRS["score"],
                                          name="sts-test")(kept)["sts-test_spearman_cosine"]
    assert best.test_value == pytest.approx(direct)
    client, parents, trials = mlflow_runs(tmp_path, "tiny")
    metrics = client.get_run(parents[0].info.run_id).data.metrics
    assert metrics["test_objective"] == pytest.approx(best.test_value)
    assert metrics["base_model_test_objective"] == pytest.approx(best.base_model_test_value)
    assert parents[0].data.tags["st_hpo.test_metric"] == "sts-test_spearman_cosine"
    assert not any(k.startswith("test") for run in trials for k in run.data.metrics), "trials never see the test set"
    # a confirmation scores each retrained model on the test set too
    confirmed = st_hpo.confirm_study(study, top=1, seeds=1, output_dir=tmp_path, progress=False)
    assert all(len(c.test_values) == 1 and c.test_mean == c.test_values[0] for c in confirmed.configs)


def test_st_hpo_test_and_best_json_show_the_test_values(study_file, tmp_path):
    path = study_file(name="tiny-test", n_trials=1)
    path.write_text(path.read_text() + f"\nstudy = study.replace(test_dataset=lambda: Dataset.from_dict({TEST_PAIRS!r}))\n")
    study = st_hpo.load_study_file(path)
    out = tmp_path / "out"
    st_hpo.run_study(study, output_dir=out, progress=False)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "st_hpo", *args, str(path), "--output-dir", str(out)],
                              capture_output=True, text=True, timeout=300)

    best = cli("best", "--json")
    assert best.returncode == 0, best.stderr
    data = json.loads(best.stdout)
    assert isinstance(data["test_value"], float) and isinstance(data["base_model_test_value"], float)
    again = cli("test")
    assert again.returncode == 0, again.stderr
    assert f"on the held-out test set: sts-dev_spearman_cosine = {data['test_value']:.4f}" in again.stdout
    assert f"base model {data['base_model_test_value']:.4f}" in again.stdout
    # the model retrained from the best configuration is scored on the test set too
    retrained = cli("retrain", "--no-track", "--model-dir", str(tmp_path / "retrained"))
    assert retrained.returncode == 0, retrained.stderr
    assert "held-out test: " in retrained.stdout and " epoch, " in retrained.stdout
    assert "| this model on the held-out test set |" in (tmp_path / "retrained" / "README.md").read_text()


def test_a_test_evaluator_without_the_objective_is_refused_at_validation(make_study):
    def other_metric(ds):
        from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator as E

        return E(ds["sentence1"], ds["sentence2"], ds["score"], name="t", main_similarity="cosine",
                 similarity_fn_names=["dot"])

    study = make_study(test_dataset=Dataset.from_dict(TEST_PAIRS), test_evaluator=other_metric)
    with pytest.raises(st_hpo.StudyDefinitionError, match=r"the test evaluator reports no metric for objective "
                                                          r"'sts-dev_spearman_cosine' \(it reports: .*t_spearman_dot"):
        st_hpo.validate_study(study)
    instance = EmbeddingSimilarityEvaluator(["a man", "a dog"], ["a woman", "a cat"], [1.0, 0.0], name="sts-dev")
    with pytest.raises(st_hpo.StudyDefinitionError, match="test_dataset needs a test_evaluator"):
        st_hpo.validate_study(make_study(evaluator=instance, test_dataset=Dataset.from_dict(TEST_PAIRS)))
