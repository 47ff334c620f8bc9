"""A handle on one stored study: where it lives, its Optuna study, and what can be read or done with it.

``st_hpo.open_study(study, output_dir=..., storage=..., tracking_uri=...)`` resolves the location once (the
defaults are those ``st-hpo run`` uses) and every operation is a method: ``status``, ``best``, ``export``,
``test``, ``register``, ``retrain``, ``confirm``, ``report``, ``sync``, and ``optuna_study`` for Optuna's own
API (``optuna-dashboard``, ``study.trials_dataframe()``). The module-level functions (``st_hpo.best_trial``,
``st_hpo.export_best``, ...) are one-call forms of the handle, as ``httpx.get`` is of ``httpx.Client``:
``best_trial(study, output_dir=out)`` is ``open_study(study, output_dir=out).best()``. Each method is the entry
to its operation and calls its implementation with the handle (``config_of``, ``score_kept_best``,
``register_kept_best``, ``retrain_from``, ``confirm_at``, ``report_at``, ``sync_at``), which reads the study, its
location and its Optuna study from it rather than taking the location arguments again.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._definition._study import Study
from st_hpo._results._read import StudyLocation, best_of, load_study
from st_hpo._results._status import study_status
from st_hpo.exceptions import UsageError

if TYPE_CHECKING:
    import optuna

    from st_hpo._execution._test_score import TestScore
    from st_hpo._results._confirm import ConfirmResult
    from st_hpo._results._read import BestTrial
    from st_hpo._results._register import RegisterResult
    from st_hpo._results._retrain import RetrainResult
    from st_hpo._results._status import StudyStatus
    from st_hpo._results._sync import SyncResult
    from st_hpo._tracking import MlflowTracker

__all__ = ["StudyHandle", "open_study"]


def open_study(study: Study, *, output_dir: str | Path | None = None, storage: str | None = None,
               tracking_uri: str | None = None, study_name: str | None = None) -> StudyHandle:
    """A handle on the stored ``study``: the location arguments are those it ran with (``run_study`` or
    ``st-hpo run``), each defaulting as there. Nothing is opened until a method needs it; a study that was
    never run raises :class:`~st_hpo.StorageError` (saying to run it first) at that point."""
    if not isinstance(study, Study):  # a study file's path, most often: say how to load it
        raise UsageError(f"study={str(study)!r}: pass a Study, not a {type(study).__name__}; for a study file, "
                         "study=st_hpo.load_study_file(PATH)")
    if study_name:
        study = study.replace(name=study_name)
    location = StudyLocation.resolve(study, output_dir=output_dir, storage=storage, tracking_uri=tracking_uri)
    return StudyHandle(study=study, location=location)


@dataclasses.dataclass(frozen=True)
class StudyHandle:
    """One stored study and its location (see :func:`open_study`)."""

    study: Study
    location: StudyLocation

    @property
    def output_dir(self) -> Path:
        return self.location.output_dir

    @property
    def storage(self) -> str:
        return self.location.storage

    @property
    def tracking_uri(self) -> str:
        return self.location.tracking_uri

    @cached_property
    def optuna_study(self) -> optuna.Study:
        """The study's ``optuna.Study`` in its storage (loaded once per handle)."""
        return load_study(self.study, self.location)

    def status(self) -> StudyStatus:
        """Every trial as a row (what ``st-hpo status --json`` prints), the census, budget and model kind."""
        return study_status(self.optuna_study, self.study.n_trials)

    def sync(self) -> SyncResult:
        """Make MLflow agree with the storage: fail the trials whose worker is gone, close their runs, end a
        parent run a killed run left RUNNING, re-create missing runs (what ``st-hpo sync`` does)."""
        from st_hpo._results._sync import sync_at

        return sync_at(self)

    def best(self, *, trial: int | None = None) -> BestTrial:
        """The best complete trial (``trial``: that one; a multi-objective study needs it, a trial of its
        Pareto front) and its gains over the baseline and the base model."""
        return best_of(self.optuna_study, self.study.objective, trial)

    def pareto(self) -> list[Any]:
        """A multi-objective study's Pareto front: its feasible complete non-dominated trials (FrozenTrials)."""
        from st_hpo._results._pareto import pareto_trials

        return pareto_trials(self.optuna_study)

    def pareto_answer(self) -> dict[str, Any] | None:
        """What ``st-hpo best`` answers for a multi-objective study (None for a single objective): the objectives,
        their directions, the complete trials' count and the front as rows (``pareto``)."""
        from st_hpo._results._pareto import pareto_answer

        return pareto_answer(self.optuna_study)

    def best_config(self, *, trial: int | None = None) -> dict[str, Any]:
        """The best trial's configuration (``trial``: that trial's): the mapping :meth:`export` writes (see
        :mod:`st_hpo._results._read`)."""
        from st_hpo._results._read import config_of

        return config_of(self, trial=trial)

    def export(self, path: str | Path, *, trial: int | None = None) -> Path:
        """Write the best configuration (``trial``: that trial's) to ``path``: JSON for ``.json``, YAML for ``.yaml``/``.yml``,
        ``<study name>.json`` inside an existing folder; any other name is refused (a UsageError)."""
        from st_hpo._results._read import export_target, write_config

        target = export_target(path, self.study.name)  # refused before the study is read
        return write_config(self.best_config(trial=trial), target)

    def test(self, *, track: bool = True, trial: int | None = None) -> TestScore:
        """Score the kept best model and the base model on the study's test set now."""
        from st_hpo._results._scoring import score_kept_best

        return score_kept_best(self, track=track, trial=trial)

    def register(self, name: str | None = None, *, new_version: bool = False,
                 trial: int | None = None) -> RegisterResult:
        """Log the best trial's kept model on its MLflow run and register it (default name: the study's)."""
        from st_hpo._results._register import register_kept_best

        return register_kept_best(self, name=name, new_version=new_version, trial=trial)

    def retrain(self, *, model_dir: str | Path | None = None, epochs: float | None = None,
                register_as: str | None = None, track: bool = True, trial: int | None = None) -> RetrainResult:
        """Train the best configuration again and save (and log) the model."""
        from st_hpo._results._retrain import retrain_from

        return retrain_from(self, model_dir=model_dir, epochs=epochs, register_as=register_as, track=track,
                            trial=trial)

    def confirm(self, *, top: int = 3, seeds: int = 3, progress: bool = True, workers: int | None = None,
                gpus: str | None = None, trials_per_gpu: int = 1,
                study_file: str | Path | None = None, trial: int | None = None) -> ConfirmResult:
        """Train the ``top`` best configurations (``trial``: that one; a multi-objective study needs it) and
        the baseline again over ``seeds`` new seeds each."""
        from st_hpo._results._confirm import confirm_at

        return confirm_at(self, top=top, seeds=seeds, progress=progress, workers=workers, gpus=gpus,
                          trials_per_gpu=trials_per_gpu, study_file=study_file, trial=trial)

    def report(self, *, track: bool = True) -> list[Path]:
        """Write the reports (plots, trials.csv, summary.md) to the output folder and the parent run."""
        from st_hpo._results._reports import report_at

        return report_at(self, track=track)

    def review(self) -> str:
        """Ready the study's MLflow experiment for review (what ``st-hpo ui`` opens): write its trials view (the
        runs list, best first) and return the experiment's id. TrackingError when the tracking store or the
        experiment is missing (the study never ran here)."""
        from st_hpo._results._read import review_experiment

        return review_experiment(self)

    def tracker(self) -> MlflowTracker:
        """An MLflow tracker on the study's experiment in its tracking store (opened at each call)."""
        from st_hpo._tracking import MlflowTracker

        return MlflowTracker(self.tracking_uri, self.study.experiment, artifact_root=self.location.artifact_root)
