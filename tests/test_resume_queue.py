"""Which interrupted trial is queued again, from which checkpoint, and how many times (no training here:
a real Optuna study, real folders standing for the trainer's checkpoints)."""

from __future__ import annotations

import optuna
import pytest

from st_hpo._execution._recovery import fail_trial
from st_hpo._execution._resume import queue_resume
from st_hpo._tracking._schema import CHECKPOINT_ATTR, POLICY_ATTR, RESUME_ATTR
from st_hpo.exceptions import StudyDefinitionError


def _study(max_resumes=3, enabled=True):
    study = optuna.create_study(direction="maximize")
    study.set_user_attr(POLICY_ATTR, {"resume_interrupted": enabled, "max_resumes": max_resumes})
    return study


def _interrupted(study, tmp_path, *, step=None, values=(0.1, 0.2, 0.3)):
    """Ask a trial (the last one queued, if any), report intermediate values at 250, 500, 750 per mille,
    save a checkpoint at ``step`` of 8 (None: none saved), then fail it as a killed worker's."""
    trial = study.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)})
    trial.set_user_attr("st_hpo.max_steps", 8)
    trial.set_user_attr("st_hpo.tag.training_seed", 3)
    for point, value in zip((250, 500, 750), values, strict=False):
        trial.report(value, point)
    if step is not None:
        folder = tmp_path / f"trial-{trial.number}" / f"resume-{step}"
        folder.mkdir(parents=True)
        trial.set_user_attr(CHECKPOINT_ATTR, {"path": str(folder), "step": step})
    frozen = study.get_trials(deepcopy=False)[trial.number]
    fail_trial(study, frozen, "worker killed by signal 9")
    return study.get_trials(deepcopy=False)[trial.number]


def _waiting(study):
    return [t for t in study.get_trials(deepcopy=False) if t.state.name == "WAITING"]


def test_a_killed_trial_is_queued_once_from_its_last_checkpoint(tmp_path):
    study = _study()
    stopped = _interrupted(study, tmp_path, step=4)
    assert stopped.state.name == "FAIL"
    (retry,) = _waiting(study)
    assert retry.system_attrs["fixed_params"] == stopped.params
    assert retry.user_attrs["st_hpo.resumed_from"] == {"trial": 0, "step": 4}
    assert retry.user_attrs["st_hpo.tag.resumed_from"] == "trial-0@step-4"
    assert retry.user_attrs["st_hpo.tag.training_seed"] == 3, "what it was enqueued with goes with it"
    resume = retry.user_attrs[RESUME_ATTR]
    assert resume["checkpoint"] == str(tmp_path / "trial-0" / "resume-4") and resume["resumes"] == 1
    assert resume["values"] == {"250": 0.1, "500": 0.2}, "the values up to the checkpoint (step 4 of 8: 500)"
    # failing it again (another process got there first) queues nothing more
    fail_trial(study, stopped, "worker killed by signal 9")
    assert len(_waiting(study)) == 1


def test_a_retry_interrupted_again_resumes_from_its_newer_checkpoint_up_to_max_resumes(tmp_path):
    study = _study(max_resumes=2)
    _interrupted(study, tmp_path, step=2)
    first = tmp_path / "trial-0" / "resume-2"
    retry = _interrupted(study, tmp_path, step=6)  # asks the queued retry, which saves a newer checkpoint
    assert retry.user_attrs["st_hpo.resumed_from"] == {"trial": 0, "step": 2}
    (second,) = _waiting(study)
    assert second.user_attrs["st_hpo.resumed_from"] == {"trial": 1, "step": 6}
    assert second.user_attrs[RESUME_ATTR]["resumes"] == 2
    assert not first.exists(), "the older checkpoint is deleted once a newer one is in place"
    third = _interrupted(study, tmp_path, step=None)  # interrupted again before a checkpoint of its own
    assert not _waiting(study), "max_resumes=2 reached: nothing is queued"
    assert not (tmp_path / "trial-1" / "resume-6").exists(), "and the checkpoint it would resume is deleted"
    assert third.user_attrs["st_hpo.resumed_from"] == {"trial": 1, "step": 6}


def test_a_retry_interrupted_before_its_own_checkpoint_resumes_from_the_same_one(tmp_path):
    study = _study()
    _interrupted(study, tmp_path, step=4)
    _interrupted(study, tmp_path, step=None)
    (again,) = _waiting(study)
    assert again.user_attrs["st_hpo.resumed_from"] == {"trial": 0, "step": 4}
    assert again.user_attrs[RESUME_ATTR]["resumes"] == 2
    assert (tmp_path / "trial-0" / "resume-4").is_dir()


def test_a_half_written_checkpoint_is_never_resumed(tmp_path):
    """The trainer writes checkpoint-S; only the complete one, renamed to resume-S, is recorded on the trial."""
    study = _study()
    (tmp_path / "trial-0" / "checkpoint-4").mkdir(parents=True)  # killed during the save
    _interrupted(study, tmp_path, step=None)
    assert not _waiting(study)


def test_nothing_is_queued_with_resuming_off_and_the_checkpoint_is_deleted(tmp_path):
    study = _study(enabled=False)
    _interrupted(study, tmp_path, step=4)
    assert not _waiting(study)
    assert not (tmp_path / "trial-0" / "resume-4").exists()


def test_a_study_without_a_recorded_policy_never_queues(tmp_path):
    study = optuna.create_study()
    trial = study.ask()
    folder = tmp_path / "resume-4"
    folder.mkdir()
    trial.set_user_attr(CHECKPOINT_ATTR, {"path": str(folder), "step": 4})
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert queue_resume(study, study.trials[0]) is None


@pytest.mark.parametrize(("field", "value"), [("max_resumes", -1), ("max_resumes", 1.5),
                                              ("checkpoint_every_minutes", -2), ("resume_interrupted", "yes")])
def test_bad_resume_settings_are_refused_with_the_rule(make_study, field, value):
    with pytest.raises(StudyDefinitionError, match=field):
        make_study(**{field: value})
