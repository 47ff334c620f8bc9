"""Trials evaluate where the pruner decides (base args with no cadence), on a subset of a large eval set."""

from __future__ import annotations

import optuna
import pytest
from datasets import Dataset

import st_hpo
from st_hpo._definition._resources import StudyResources
from st_hpo._definition._study import DEFAULT_PRUNER
from tests.conftest import make_pairs, sts_evaluator
from tests.helpers import load_trials

#: 64 training rows at batch 4: 16 steps per trial
NO_CADENCE = dict(num_train_epochs=1, per_device_train_batch_size=4, learning_rate=5e-5, logging_steps=4,
                  save_strategy="no", disable_tqdm=True, seed=7, use_cpu=True)


class _StepRecorder:
    """An evaluator factory whose evaluators record (training step, eval rows) of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, ds):
        calls = self.calls

        class Recording(type(sts_evaluator(ds))):
            def __call__(self, model, output_path=None, epoch=-1, steps=-1):
                calls.append((steps, len(self.sentences1)))
                return super().__call__(model, output_path, epoch, steps)

        return Recording(ds["sentence1"], ds["sentence2"], ds["score"], name="sts-dev")


@pytest.mark.slow
@pytest.mark.parametrize(("pruner", "points", "steps"), [
    ("successive-halving", [111, 333, 1000], [2, 5, 16]),  # the rungs at 1/9 and 1/3 of training, and the end
    ("none", [1000], [16]),  # nothing to decide: the final evaluation alone
])
def test_a_study_without_eval_settings_evaluates_where_its_pruner_decides(make_study, tmp_path, pruner, points,
                                                                         steps):
    recorder = _StepRecorder()
    study = make_study(args=NO_CADENCE, pruner=pruner, n_trials=1, evaluator=recorder)
    recorder.calls.clear()  # validation's probe
    st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    (trial,) = load_trials(tmp_path, "tiny")
    assert trial.state.name == "COMPLETE"
    assert list(trial.intermediate_values) == points
    in_trial = [step for step, rows in recorder.calls if step > 0]  # the base model's score has no step
    assert in_trial == steps, "one evaluation per decision point and the final one, no more"


@pytest.mark.slow
def test_a_large_eval_set_is_subset_during_training_and_whole_at_the_end(make_study, tmp_path):
    recorder = _StepRecorder()
    big = Dataset.from_dict(make_pairs(1000, seed=3))
    study = make_study(args=NO_CADENCE, pruner="successive-halving", n_trials=1, evaluator=recorder,
                       eval_dataset=big)  # intermediate_eval_rows left at its default
    recorder.calls.clear()
    st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    (trial,) = load_trials(tmp_path, "tiny")
    # no subset evaluation at the end: the final one, on every row, is the trial's value
    assert [(s, r) for s, r in recorder.calls if s > 0] == [(2, 500), (5, 500), (16, 1000)]
    assert list(trial.intermediate_values) == [111, 333]
    assert trial.user_attrs["st_hpo.tag.intermediate_eval"] == "500 of 1000 eval rows"


def test_every_pruner_gets_the_points_where_it_decides():
    from st_hpo._definition._schedule import evaluation_fractions

    base = _base_args(NO_CADENCE)
    assert evaluation_fractions(base, 64, "successive-halving") == (0.111, 0.333, 1.0)
    assert evaluation_fractions(base, 64, "hyperband") == (0.111, 0.333, 1.0)  # its brackets' rungs
    assert evaluation_fractions(base, 64, "median") == (0.25, 0.5, 0.75, 1.0)
    assert evaluation_fractions(base, 64, "patient") == (0.25, 0.5, 0.75, 1.0)  # its wrapped median pruner's
    assert evaluation_fractions(base, 64, None) == evaluation_fractions(base, 64, DEFAULT_PRUNER)
    assert evaluation_fractions(base, 64, optuna.pruners.ThresholdPruner(lower=0.1)) == (0.25, 0.5, 0.75, 1.0)
    assert evaluation_fractions(base, 64, "none") == (1.0,)


def test_the_default_subset_only_where_it_ranks_like_the_whole_set(make_study, pairs_eval):
    def rows(n, **kw):
        study = make_study(eval_dataset=Dataset.from_dict(make_pairs(n, seed=3)), **kw)
        return StudyResources(study).subset_rows

    assert rows(999) is None and rows(1000) == 500 and rows(3000) == 500
    assert rows(1200, intermediate_eval_rows=None) is None, "None: every evaluation on all rows"
    assert rows(1200, intermediate_eval_rows=300) == 300
    # an evaluator instance holds its own data: no subset, and no error either
    study = make_study(eval_dataset=Dataset.from_dict(make_pairs(1200, seed=3)),
                       evaluator=sts_evaluator(pairs_eval))
    assert StudyResources(study).subset_rows is None
    st_hpo.validate_study(study)


def test_a_cadence_the_user_sets_is_kept_and_its_cost_is_said(make_study, caplog):
    args = {**NO_CADENCE, "eval_strategy": "steps", "eval_steps": 1}  # 16 evaluations per trial
    with caplog.at_level("INFO", logger="st_hpo"):
        st_hpo.validate_study(make_study(args=args, pruner="successive-halving"))
    assert ("the base args evaluate 16 times per trial on 32 eval rows (16 x 32 rows per trial); st-hpo's own "
            "schedule for pruner successive-halving would evaluate 3 times: leave eval_strategy unset to use it"
            ) in caplog.text
    from st_hpo._definition._schedule import evaluation_fractions

    assert len(evaluation_fractions(_base_args(args), 64, "successive-halving")) == 16, "the cadence is kept"


def test_a_pruner_object_gets_a_few_points_and_validation_says_so(make_study, caplog):
    with caplog.at_level("INFO", logger="st_hpo"):
        st_hpo.validate_study(make_study(args=NO_CADENCE, pruner=optuna.pruners.ThresholdPruner(lower=0.1)))
    assert "st-hpo cannot tell where pruner ThresholdPruner decides: trials evaluate at 25%, 50%, 75%" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="st_hpo"):
        st_hpo.validate_study(make_study(args=NO_CADENCE, pruner="hyperband"))
    assert "trials evaluate at 11%, 33% and the end of training (st-hpo's schedule for pruner hyperband)" in caplog.text


def _base_args(args):
    from st_hpo._definition import _args

    return _args.build_base_args(args, output_dir="unused")
