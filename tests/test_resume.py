"""Resuming a study: what a later run refuses to mix in, and what it runs again."""

from __future__ import annotations

import optuna
import pytest

import st_hpo
from tests.helpers import load_trials

pytestmark = pytest.mark.slow


def test_a_changed_objective_is_refused_on_resume(make_study, tmp_path):
    st_hpo.run_study(make_study(), n_trials=1, output_dir=tmp_path, progress=False)
    changed = make_study(objective="sts-dev_pearson_cosine")
    with pytest.raises(st_hpo.StudyDefinitionError, match=r"optimises 'sts-dev_spearman_cosine', but the study "
                                                          r"file says objective='sts-dev_pearson_cosine'"):
        st_hpo.run_study(changed, n_trials=2, output_dir=tmp_path, progress=False)
    assert len(load_trials(tmp_path, "tiny")) == 1
    # the same objective written with the trainer's prefix is the same objective
    same = make_study(objective="eval_sts-dev_spearman_cosine")
    assert st_hpo.run_study(same, n_trials=2, output_dir=tmp_path, progress=False).budget_met


def test_a_second_study_in_the_same_output_dir_is_refused(make_study, tmp_path):
    first = st_hpo.run_study(make_study(), n_trials=2, output_dir=tmp_path, progress=False)
    assert first.best_model_dir is not None and first.best_model_dir.is_dir()
    with pytest.raises(st_hpo.StudyDefinitionError, match=r"holds the trials of study 'tiny'; give study 'other' "
                                                          r"its own output_dir="):
        st_hpo.run_study(make_study(), study_name="other", n_trials=2, output_dir=tmp_path, progress=False)
    assert first.best_model_dir.is_dir(), "the first study's kept model is untouched"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal")))
    assert optuna.get_all_study_names(storage) == ["tiny"], "nothing was created for the refused study"


def test_a_baseline_stopped_by_ctrl_c_runs_again_on_resume(make_study, tmp_path, storage_url):
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    class CtrlCAtStep2(CoSENTLoss):
        calls = 0
        armed = True  # the resume trains with the same loss (another one is another study), disarmed

        def forward(self, *args, **kwargs):
            self.calls += 1
            if self.armed and self.calls >= 2:  # validation's probe passes; the first trial is interrupted
                raise KeyboardInterrupt
            return super().forward(*args, **kwargs)

    interrupted = st_hpo.run_study(make_study(loss=CtrlCAtStep2, baseline=True), n_trials=2, output_dir=tmp_path,
                                   storage=storage_url, progress=False)
    assert interrupted.interrupted
    CtrlCAtStep2.armed = False
    result = st_hpo.run_study(make_study(loss=CtrlCAtStep2, baseline=True), n_trials=2, output_dir=tmp_path,
                              storage=storage_url,
                              progress=False)
    assert result.budget_met
    trials = load_trials(tmp_path, "tiny", storage_url)
    baselines = [(t.number, t.state.name) for t in trials if t.user_attrs.get("st_hpo.baseline")]
    assert baselines == [(0, "FAIL"), (1, "COMPLETE")]


def test_a_baseline_that_failed_on_its_own_is_not_run_again_on_resume(make_study, tmp_path):
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    class FailsAtStep2(CoSENTLoss):
        calls = 0

        def forward(self, *args, **kwargs):
            self.calls += 1
            if self.calls >= 2:  # validation's probe passes; every trial fails at its second step
                raise RuntimeError("the loss cannot take this batch (simulated)")
            return super().forward(*args, **kwargs)

    study = make_study(loss=FailsAtStep2, baseline=True, max_failures_in_a_row=1)
    first = st_hpo.run_study(study, n_trials=2, output_dir=tmp_path, progress=False)
    assert first.stop_reason and [t.state.name for t in load_trials(tmp_path, "tiny")] == ["FAIL"]
    st_hpo.run_study(study, n_trials=2, output_dir=tmp_path, progress=False)
    trials = load_trials(tmp_path, "tiny")
    assert [t.user_attrs.get("st_hpo.baseline", False) for t in trials] == [True, False], (
        "the resume tried a sampled configuration, not the baseline that fails by itself again")
