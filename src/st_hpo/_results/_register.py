"""Putting the kept best model into MLflow: logged on the best trial's own run and registered.

``Study.keep_best_model`` leaves the best trial's fine-tuned model on disk. :func:`register_best` logs
that folder with ``mlflow.sentence_transformers.log_model`` as the ``model`` artifact of the best
trial's child run, so that the MLflow UI shows the model next to the params and curves that produced it,
and registers it in the Model Registry (under the study's name unless another is given). Nothing is
trained again; when the model was not kept (``keep_best_model=False``, or the best trial ran on another
machine) :func:`st_hpo.retrain_best` with ``register_as`` is the way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._definition._study import Study
from st_hpo._kinds import stored_kind
from st_hpo._results._read import best_of
from st_hpo._tracking import MlflowTracker
from st_hpo._tracking._schema import REGISTERED_MODEL_KEY
from st_hpo.exceptions import NoResultError, TrackingError, UsageError

if TYPE_CHECKING:
    from st_hpo._results._handle import StudyHandle

__all__ = ["RegisterResult", "register_best", "register_kept_best"]


@dataclasses.dataclass(frozen=True)
class RegisterResult:
    """What :func:`register_best` logged and registered."""

    trial_number: int  #: the best trial
    value: float  #: its objective
    model_dir: Path  #: the kept model that was logged
    run_id: str  #: the best trial's MLflow run, which now holds the model
    model_uri: str  #: the logged MLflow model
    name: str  #: the registered model's name
    version: str | None  #: its Model Registry version
    #: it was registered before (``version`` is that version) and nothing was logged again
    already_registered: bool = False


def register_best(study: Study, *, name: str | None = None, output_dir: str | Path | None = None,
                  storage: str | None = None, tracking_uri: str | None = None,
                  study_name: str | None = None, new_version: bool = False, trial: int | None = None) -> RegisterResult:
    """Log the best trial's kept model (``trial``: that trial's; a multi-objective study needs it, one of its
    Pareto front) on its MLflow run and register it as ``name`` (default: the study's).

    When the best trial's run already has a version of ``name``, nothing is logged or registered again
    and the result says which version it is (``already_registered``), unless ``new_version``.

    Raises NoResultError (a StorageError) when the study has no complete trial or its best model is not on this machine,
    TrackingError when MLflow cannot take it.
    """
    from st_hpo._results._handle import open_study

    return open_study(study, output_dir=output_dir, storage=storage, tracking_uri=tracking_uri,
                      study_name=study_name).register(name, new_version=new_version, trial=trial)


def register_kept_best(handle: StudyHandle, *, name: str | None = None, new_version: bool = False,
                       trial: int | None = None) -> RegisterResult:
    """Log and register the kept best model (``trial``: that trial's) of the study ``handle`` holds (see
    :func:`register_best`)."""
    study, optuna_study = handle.study, handle.optuna_study
    if name is not None:
        check_registry_name(name, "name")
    best = best_of(optuna_study, study.objective, trial)
    if not best.model_dir:
        raise NoResultError(
            f"trial {best.number}'s model was not kept on this machine (keep_best_model=False, or it ran "
            f"elsewhere); train it again and register that: retrain with register_as=NAME (st-hpo retrain "
            "STUDY_FILE --register-as NAME)")
    if not best.mlflow_run_id:
        raise TrackingError(f"trial {best.number} has no MLflow run yet; run `st-hpo sync STUDY_FILE` first")
    name = name or study.name
    tracker = handle.tracker()
    if not tracker.run_exists(best.mlflow_run_id):  # the store was replaced: `sync` made the trial a new run
        found = tracker.trial_runs(optuna_study.study_name).get(best.number)
        if found is None:
            raise TrackingError(f"trial {best.number}'s MLflow run {best.mlflow_run_id} is not in the store at "
                                f"{handle.tracking_uri}; run `st-hpo sync STUDY_FILE` first (it re-creates "
                                "missing runs)")
        best = dataclasses.replace(best, mlflow_run_id=found.info.run_id)
    existing = None if new_version else _registered_version(tracker, name, best.mlflow_run_id)
    if existing is not None:
        return RegisterResult(trial_number=best.number, value=best.value, model_dir=Path(best.model_dir),
                              run_id=best.mlflow_run_id, model_uri=f"models:/{name}/{existing.version}",
                              name=name, version=str(existing.version), already_registered=True)
    model_uri, version = stored_kind(optuna_study).log_to_mlflow(handle.tracking_uri, best.mlflow_run_id,
                                                                 best.model_dir, name)
    label = f"{name} v{version}" if version else name
    tracker.client.set_tag(best.mlflow_run_id, REGISTERED_MODEL_KEY, label)
    return RegisterResult(trial_number=best.number, value=best.value, model_dir=Path(best.model_dir),
                          run_id=best.mlflow_run_id, model_uri=model_uri, name=name, version=version)


#: What MLflow's Model Registry refuses in a registered model's name (its own check is private).
_REFUSED_IN_REGISTRY_NAMES = ("/", ":")


def check_registry_name(name: str, parameter: str) -> None:
    """Refuse a Model Registry name MLflow would refuse (blank, ``.`` or ``..``, or with '/' or ':'), before
    anything is logged or trained; ``parameter`` names the argument it came in (``name``, ``register_as``)."""
    if not name.strip():
        why = "a name is needed"
    elif any(c in name for c in _REFUSED_IN_REGISTRY_NAMES):
        why = "names cannot contain '/' or ':'"
    elif name.strip() in (".", ".."):
        why = "a name cannot be a path like '.' or '..'"
    else:
        return
    raise UsageError(f"{parameter}={name!r}: MLflow refuses this registered model name ({why}); "
                     f"pass another {parameter}=", parameters=(parameter,))


def _registered_version(tracker: MlflowTracker, name: str, run_id: str) -> Any:
    """The newest version of registered model ``name`` made from run ``run_id``, or None."""
    try:
        versions = tracker.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except Exception as exc:  # noqa: BLE001 - the client raises many kinds
        raise TrackingError(f"MLflow at {tracker.tracking_uri} could not search the Model Registry for "
                            f"{name!r}: {type(exc).__name__}: {exc}") from exc
    return max(versions, key=lambda v: int(v.version), default=None)
