"""Validation catches each mistake before any training, with a message naming the value, rule and fix."""

from __future__ import annotations

import subprocess

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

import st_hpo
from st_hpo import SearchSpaceError, StudyDefinitionError
from tests.helpers import run_cli


def test_valid_study_passes(make_study):
    st_hpo.validate_study(make_study())


def test_unknown_argument_suggests_the_right_name(make_study):
    study = make_study(space={"learnig_rate": FloatDistribution(1e-5, 1e-3)})
    with pytest.raises(SearchSpaceError, match=r"unknown training argument 'learnig_rate'.*did you mean 'learning_rate'"):
        st_hpo.validate_study(study)


def test_unknown_argument_in_base_args(make_study):
    with pytest.raises(StudyDefinitionError, match=r"'num_train_epoch'.*did you mean 'num_train_epochs'"):
        st_hpo.validate_study(make_study(args={"num_train_epoch": 1}))


def test_batch_sampler_choice_must_be_a_batch_sampler(make_study):
    study = make_study(space={"batch_sampler": CategoricalDistribution(["no_duplicates", "shuffled"])})
    with pytest.raises(SearchSpaceError, match=r"batch_sampler='shuffled' is not one of the allowed values.*no_duplicates"):
        st_hpo.validate_study(study)


def test_negative_learning_rate_bound(make_study):
    study = make_study(space={"learning_rate": FloatDistribution(-1e-4, 1e-3)})
    with pytest.raises(SearchSpaceError, match=r"learning_rate=-0.0001 must be greater than 0"):
        st_hpo.validate_study(study)


def test_warmup_ratio_outside_unit_interval(make_study):
    study = make_study(space={"warmup_ratio": FloatDistribution(0.0, 1.5)})
    with pytest.raises(SearchSpaceError, match=r"warmup_ratio=1.5 must be a ratio in \[0, 1\)"):
        st_hpo.validate_study(study)


def test_space_conflicting_with_fixed_warmup_steps(make_study):
    args = dict(num_train_epochs=1, warmup_steps=10, eval_strategy="no", use_cpu=True)
    study = make_study(args=args, space={"warmup_ratio": FloatDistribution(0.0, 0.2)})
    with pytest.raises(SearchSpaceError, match=r"fix warmup_steps=10.*remove warmup_steps"):
        st_hpo.validate_study(study)


def test_reserved_argument_in_space(make_study):
    study = make_study(space={"output_dir": CategoricalDistribution(["a", "b"])})
    with pytest.raises(SearchSpaceError, match=r"samples 'output_dir'.*remove it from the space"):
        st_hpo.validate_study(study)


def test_objective_the_evaluator_does_not_report(make_study):
    study = make_study(objective="sts-dev_spearman_cosin")
    with pytest.raises(StudyDefinitionError, match=r"not a metric the evaluator reports; did you mean 'sts-dev_spearman_cosine'"):
        st_hpo.validate_study(study)


def test_missing_label_column_for_the_loss(make_study, pairs_train):
    study = make_study(train_dataset=pairs_train.remove_columns("score"))
    with pytest.raises(StudyDefinitionError, match=r"CoSENTLoss needs a label column.*columns \['sentence1', 'sentence2'\]"):
        st_hpo.validate_study(study)


def test_unknown_loss_parameter(make_study):
    study = make_study(space={"loss.scael": FloatDistribution(10.0, 30.0)})
    with pytest.raises(SearchSpaceError, match=r"'loss.scael'.*did you mean 'scale'"):
        st_hpo.validate_study(study)


def test_define_by_run_space_is_checked_by_sampling(make_study):
    def space(trial: optuna.Trial) -> dict:
        sampler = trial.suggest_categorical("batch_sampler", ["batch_sampler", "round_robin"])
        return {"batch_sampler": sampler}

    with pytest.raises(SearchSpaceError, match=r"batch_sampler='round_robin' is not one of"):
        st_hpo.validate_study(make_study(space=space))


def test_a_define_by_run_space_is_checked_one_sample_at_a_time(make_study):
    """Branches that sample different names are not refused for the union of what they sample."""
    from sentence_transformers.sentence_transformer.losses import ContrastiveLoss

    def warmup(trial: optuna.Trial) -> dict:
        if trial.suggest_categorical("by_ratio", [True, False]):
            return {"warmup_ratio": trial.suggest_float("warmup_ratio", 0.0, 0.2)}
        return {"warmup_steps": trial.suggest_int("warmup_steps", 0, 4)}

    st_hpo.validate_study(make_study(space=warmup))

    def loss(trial: optuna.Trial) -> dict:  # the margin goes to the loss that takes it, not to the study's CoSENT
        if trial.suggest_categorical("contrastive", [True, False]):
            return {"loss": ContrastiveLoss, "loss.margin": trial.suggest_float("loss.margin", 0.2, 0.8)}
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True)}

    st_hpo.validate_study(make_study(space=loss))

    def both(trial: optuna.Trial) -> dict:  # one sample with both is still refused
        return {"warmup_ratio": 0.1, "warmup_steps": trial.suggest_int("warmup_steps", 0, 4)}

    with pytest.raises(SearchSpaceError, match=r"samples both 'warmup_ratio' and 'warmup_steps'"):
        st_hpo.validate_study(make_study(space=both))


def test_bad_study_fields_fail_at_construction(make_study):
    with pytest.raises(StudyDefinitionError, match="direction='up'"):
        make_study(direction="up")
    with pytest.raises(StudyDefinitionError, match="pruner='fast'"):
        make_study(pruner="fast")


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd)


def test_cli_validate_reports_one_line_and_creates_nothing(tmp_path, study_file):
    path = study_file(name="bad")
    path.write_text(path.read_text().replace('"learning_rate": optuna', '"learnig_rate": optuna'))
    proc = _cli("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: unknown training argument 'learnig_rate'") and "did you mean 'learning_rate'" in last
    assert "Traceback" not in proc.stderr
    proc = _cli("run", str(path), cwd=tmp_path)
    assert proc.returncode == 1
    assert not (tmp_path / "st-hpo-runs").exists(), "a failed validation must create no output directory"


def test_cli_study_file_that_fails_to_import_says_so_in_one_line_and_debug_shows_its_own_traceback(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import st_hpo\n\ndef make():\n    raise RuntimeError('no data here')\n\nstudy = make()\n")
    proc = _cli("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == (f"error: study file {str(path)!r} failed to import: RuntimeError: no data here "
                           "(line 4: \"raise RuntimeError('no data here')\"); `st-hpo --debug ...` shows its "
                           "traceback\n"), "one line, no traceback"
    proc = _cli("--debug", "validate", str(path), cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "broken.py\", line 4, in make" in proc.stderr
    assert "runpy" not in proc.stderr and "st_hpo/_definition/_loading.py" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: study file {str(path)!r} failed to import: RuntimeError: no data here (line 4")


def test_cli_validate_ok(tmp_path, study_file):
    proc = _cli("validate", str(study_file()), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ok study 'tiny-file'" in proc.stdout


def test_validation_does_not_pin_the_process_to_the_cpu(make_study):
    """A CPU-only probe would pin accelerate's process-wide state, and every later trial, to the CPU."""
    from accelerate.state import PartialState

    PartialState._reset_state()  # earlier tests in this process train with use_cpu=True
    args = dict(num_train_epochs=1, per_device_train_batch_size=16, eval_strategy="no", save_strategy="no")
    st_hpo.validate_study(make_study(args=args))
    assert PartialState._shared_state.get("_cpu") is not True


def test_intermediate_eval_rows_must_be_a_positive_count(make_study):
    for bad in (0, -5, 2.5, True):
        with pytest.raises(StudyDefinitionError, match="intermediate_eval_rows=.* must be a positive number"):
            make_study(intermediate_eval_rows=bad)


def test_intermediate_eval_rows_needs_an_evaluator_factory(make_study, pairs_eval):
    from tests.conftest import sts_evaluator

    study = make_study(evaluator=sts_evaluator(pairs_eval), intermediate_eval_rows=8)
    with pytest.raises(StudyDefinitionError, match=r"intermediate_eval_rows=8 needs the evaluator as a callable"):
        st_hpo.validate_study(study)


def test_a_pruner_with_too_few_evaluations_is_warned_about(make_study, caplog):
    # 64 rows at batch 16: 4 steps; an evaluation every 2 steps gives the pruner 2 points per trial
    with caplog.at_level("WARNING", logger="st_hpo"):
        st_hpo.validate_study(make_study(pruner="median"))
    assert "evaluates about 2 time(s) during training" in caplog.text
    assert "eval_steps=0.125" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="st_hpo"):
        st_hpo.validate_study(make_study(pruner="none"))
        st_hpo.validate_study(make_study(pruner="median", args={**make_study().args, "eval_steps": 1}))
    assert "evaluates about" not in caplog.text


def test_checkpoints_a_study_does_not_need_are_warned_about(make_study, caplog):
    args = {k: v for k, v in make_study().args.items() if k != "save_strategy"}  # transformers' default: steps
    with caplog.at_level("WARNING", logger="st_hpo"):
        st_hpo.validate_study(make_study(args=args))
    assert "save a checkpoint every 500 steps" in caplog.text and "save_strategy='no'" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="st_hpo"):
        st_hpo.validate_study(make_study())  # save_strategy="no"
    assert "checkpoint" not in caplog.text


def _base_args(**changes):
    args = dict(num_train_epochs=1, per_device_train_batch_size=16, eval_strategy="steps", eval_steps=2,
                save_strategy="no", use_cpu=True)
    return {**args, **changes}


def test_impossible_base_values_fail_like_the_spaces_do(make_study):
    with pytest.raises(StudyDefinitionError, match=r"Study\(args=...\): per_device_train_batch_size=0 must be greater than 0"):
        st_hpo.validate_study(make_study(args=_base_args(per_device_train_batch_size=0)))
    with pytest.raises(StudyDefinitionError, match=r"learning_rate=-5.0 must be greater than 0"):
        st_hpo.validate_study(make_study(args=_base_args(learning_rate=-5.0)))
    st_hpo.validate_study(make_study(args=_base_args(eval_steps=0.125)))  # a ratio of the steps stays allowed


def test_an_empty_eval_set_is_named(make_study, pairs_eval):
    with pytest.raises(StudyDefinitionError, match="eval_dataset is empty"):
        st_hpo.validate_study(make_study(eval_dataset=pairs_eval.select([])))


def test_enqueued_configurations_are_checked_against_the_space(make_study):
    with pytest.raises(SearchSpaceError, match=r"enqueue\[0\]: warmup_raito=0.1: the space does not sample "
                                               r"'warmup_raito'; did you mean 'warmup_ratio'\?"):
        st_hpo.validate_study(make_study(enqueue=[{"learning_rate": 1e-4, "warmup_raito": 0.1}]))
    with pytest.raises(SearchSpaceError, match=r"enqueue\[1\]: learning_rate=-0.0001 lies outside its range"):
        st_hpo.validate_study(make_study(enqueue=[{"learning_rate": 1e-4}, {"learning_rate": -1e-4}]))
    with pytest.raises(SearchSpaceError, match=r"enqueue\[0\]: learning_rate='fast' is not a number"):
        st_hpo.validate_study(make_study(enqueue=[{"learning_rate": "fast"}]))
    st_hpo.validate_study(make_study(enqueue=[{"learning_rate": 1e-4}]))  # names left out are sampled


def test_enqueue_into_a_define_by_run_space_checks_the_values(make_study):
    def space(trial):
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True)}

    with pytest.raises(SearchSpaceError, match=r"learning_rate=0 must be greater than 0"):
        st_hpo.validate_study(make_study(space=space, enqueue=[{"learning_rate": 0}]))


def test_a_loss_factory_the_unsampled_baseline_cannot_build_is_refused(make_study):
    """A `loss.` name has no base value: the baseline runs unsampled, and the factory gets no value for it."""
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    space = {"learning_rate": FloatDistribution(1e-5, 1e-3, log=True), "loss.scale": FloatDistribution(10, 30)}
    strict = make_study(loss=lambda model, params: CoSENTLoss(model, scale=params["loss.scale"]), space=space,
                        baseline=True)
    with pytest.raises(StudyDefinitionError, match=r"the baseline trial runs the base arguments unsampled.*"
                       r"'loss\.scale'.*KeyError.*params\.get\('loss\.scale', DEFAULT\).*baseline=False"):
        st_hpo.validate_study(strict)
    st_hpo.validate_study(strict.replace(baseline=False))
    lenient = lambda model, params: CoSENTLoss(model, scale=params.get("loss.scale", 20.0))  # noqa: E731
    st_hpo.validate_study(make_study(loss=lenient, space=space, baseline=True))
    st_hpo.validate_study(make_study(space=space, baseline=True))  # a loss class: its own default scale
