"""The best trial's model is kept on disk: saved when a trial beats all before it, the others deleted."""

from __future__ import annotations

import pytest
from optuna.distributions import FloatDistribution

import st_hpo
from tests.conftest import sts_evaluator
from tests.helpers import load_trials, mlflow_runs

pytestmark = pytest.mark.slow


def _saved(out_dir):
    return sorted(p for p in (out_dir / "trials").glob("trial-*/model*"))


def test_the_best_trials_model_is_kept_and_scores_the_best_value(make_study, tmp_path, pairs_eval):
    from sentence_transformers import SentenceTransformer

    # a wide learning rate range, so that the trials' values differ and the best changes hands
    study = make_study(space={"learning_rate": FloatDistribution(1e-5, 3e-3, log=True)}, n_trials=4,
                       sampler="random", pruner="none", baseline=True)
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    trials = load_trials(tmp_path, "tiny")
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    expected = tmp_path / "trials" / f"trial-{best.number}" / "model"
    assert _saved(tmp_path) == [expected], "one saved model, the best trial's"
    assert result.best_model_dir == expected
    assert st_hpo.best_trial(study, output_dir=tmp_path).model_dir == str(expected)
    # every trial that beat all before it saved its model (the first one always does)
    leaders = [t for i, t in enumerate(trials) if all(t.value > u.value for u in trials[:i])]
    assert [t.number for t in trials if t.user_attrs.get("st_hpo.model_dir")] == [t.number for t in leaders]

    # the kept model is the trained one: it scores the trial's value again
    model = SentenceTransformer(str(expected), device="cpu")
    score = sts_evaluator(pairs_eval)(model)["sts-dev_spearman_cosine"]
    assert score == pytest.approx(best.value, abs=1e-5)

    _, parents, _ = mlflow_runs(tmp_path, "tiny")
    assert parents[0].data.tags["st_hpo.best_model_dir"] == str(expected)


def test_keep_best_model_false_saves_nothing(make_study, tmp_path):
    study = make_study(n_trials=2, pruner="none", keep_best_model=False)
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert result.n_complete == 2
    assert _saved(tmp_path) == [] and result.best_model_dir is None
    assert st_hpo.best_trial(study, output_dir=tmp_path).model_dir is None
    with pytest.raises(st_hpo.StorageError, match="st-hpo retrain STUDY_FILE --register-as NAME"):
        st_hpo.register_best(study, output_dir=tmp_path)


def test_a_leftover_model_of_a_killed_save_is_cleaned_up(make_study, tmp_path):
    """A worker killed between saving and telling leaves a model (or a partial save): the run removes it."""
    study = make_study(n_trials=1, pruner="none")
    st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    stray = tmp_path / "trials" / "trial-0" / "model.partial-12345"
    stray.mkdir()
    st_hpo.run_study(study, n_trials=2, output_dir=tmp_path, progress=False)
    saved = _saved(tmp_path)
    assert len(saved) == 1 and saved[0].name == "model"


def test_clean_up_spares_the_best_and_running_trials_in_either_direction(tmp_path):
    import optuna

    from st_hpo._execution._best_model import beats_best, keep_only_best

    for direction, values, best in (("maximize", [0.5, 0.7], 1), ("minimize", [0.5, 0.7], 0)):
        out = tmp_path / direction
        study = optuna.create_study(direction=direction)
        for value in values:
            study.add_trial(optuna.trial.create_trial(value=value))
        running = study.ask()  # another worker's trial, saving its model right now
        for number in (0, 1, running.number):
            (out / "trials" / f"trial-{number}" / "model").mkdir(parents=True)
        (out / "trials" / "trial-0" / "model.partial-99").mkdir()  # a killed worker's half-written save
        keep_only_best(study, out)
        left = sorted(str(p.relative_to(out / "trials")) for p in (out / "trials").glob("trial-*/model*"))
        assert left == sorted([f"trial-{best}/model", f"trial-{running.number}/model"]), direction
        assert beats_best(study, 0.8) is (direction == "maximize")
        assert beats_best(study, 0.4) is (direction == "minimize")
