"""Inputs a new user plausibly gets wrong: each is refused before anything is written, in one line naming
the value, the rule and the fix; inputs the README allows (no evaluator with the eval loss, a model
instance) train."""

from __future__ import annotations

import subprocess
import sys

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

import st_hpo
from st_hpo import SearchSpaceError, StudyDefinitionError
from tests.helpers import load_trials, mlflow_runs


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "st_hpo", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def _args(**changes):
    args = dict(num_train_epochs=1, per_device_train_batch_size=16, eval_strategy="steps", eval_steps=2,
                save_strategy="no", disable_tqdm=True, use_cpu=True)
    return {**args, **changes}


# --- 1. objective="eval_loss" needs no evaluator ---------------------------------------------------------


@pytest.mark.slow
def test_eval_loss_study_without_an_evaluator_trains_and_ends_on_the_whole_eval_set(make_study, tmp_path):
    study = make_study(evaluator=None, objective="eval_loss", direction="minimize", n_trials=1, pruner="none",
                       intermediate_eval_rows=8, space={"learning_rate": FloatDistribution(1e-4, 1e-4)})
    st_hpo.validate_study(study)
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert result.n_complete == 1 and result.n_fail == 0
    assert [t.state.name for t in load_trials(tmp_path, "tiny")] == ["COMPLETE"]
    client, _, runs = mlflow_runs(tmp_path, "tiny")
    metrics = runs[0].data.metrics
    assert metrics["objective"] == pytest.approx(result.best_value)
    assert "objective_subset" in metrics and metrics["objective_subset"] != metrics["objective"]


def test_another_objective_without_an_evaluator_is_refused_in_one_line(make_study):
    with pytest.raises(StudyDefinitionError, match=r"objective 'sts-dev_spearman_cosine' needs an evaluator "
                                                   r"that reports it, and evaluator is None.*objective='eval_loss'"):
        make_study(evaluator=None)


# --- 2. a SentenceTransformer instance is a base model ---------------------------------------------------


@pytest.mark.slow
def test_a_model_instance_is_the_base_model_and_is_never_changed(make_study, tiny_model_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    study = make_study(model=model, n_trials=1, pruner="none")
    st_hpo.validate_study(study)
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert (result.n_complete, result.n_fail) == (1, 0)
    assert result.base_model_value is not None, "the instance's own score is the bar trials must clear"
    after = model.state_dict()
    assert all(before[k].equal(after[k]) for k in before), "training must not touch the user's instance"
    kept = SentenceTransformer(str(result.best_model_dir), device="cpu").state_dict()
    assert any(not before[k].equal(kept[k]) for k in before), "the trial trained a copy of its weights"


def test_a_module_that_is_not_a_sentence_transformer_is_refused(make_study):
    import torch

    with pytest.raises(StudyDefinitionError, match=r"model is a Linear module, not a SentenceTransformer"):
        make_study(model=torch.nn.Linear(2, 2))


# --- 3. a loss instance ----------------------------------------------------------------------------------


def test_a_loss_instance_is_refused_in_one_line(make_study, tiny_model_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    loss = CoSENTLoss(SentenceTransformer(tiny_model_path, device="cpu"))
    with pytest.raises(StudyDefinitionError, match=r"loss=CoSENTLoss\(...\) is a loss instance, bound to one "
                                                   r"model; pass the class \(loss=CoSENTLoss\)"):
        make_study(loss=loss)
