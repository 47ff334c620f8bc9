"""Reading a study's results back: where it lives, its best trial, and the best configuration as a file.

The Optuna storage is the source of truth: the best trial, its sampled values and the baseline come from
there, and the best configuration's full training arguments are rebuilt from the study's base arguments
and the best trial's values with :func:`st_hpo._definition._args.clone_args`, exactly as the trial built them (the
MLflow copy of them is not re-parsed).

An exported configuration (``st-hpo export``, :func:`export_best`) is one JSON (or YAML, when the file
name ends in ``.yaml``/``.yml``) mapping::

    format:         "st-hpo.best-config/1"
    study:          the study name
    objective:      the metric the study optimised, e.g. "sts-dev_spearman_cosine"
    direction:      "maximize" or "minimize"
    value:          the best trial's objective
    trial:          the best trial's number (baseline: true when it is the baseline trial)
    mlflow_run_id:  the best trial's MLflow run (null when it was not tracked)
    params:         what the trial shows (as in MLflow and ``status``): its suggestions, the values it
                    trained with, and the label of each ``st_hpo.Choice`` name
    labels:         the sampled label of each Choice name (its value is in ``args``, ``loss_params``...)
    model_kind:     the model kind ("sentence-transformer", "cross-encoder", "sparse-encoder",
                    "multi-vector-encoder")
    args_class:     the arguments class to build, e.g. "sentence_transformers.CrossEncoderTrainingArguments"
    args:           the full effective training arguments (of ``args_class``), without output_dir and
                    logging_dir (secrets redacted by transformers are left out too)
    loss_params:    the sampled ``loss.<name>`` values without their prefix (kwargs of the loss class)
    model_params:   the sampled ``model.<name>`` values without their prefix
    loss:           the sampled loss class as ``module.QualName``, when the space samples ``loss``

Every value is the one the trial recorded it trained with (see :mod:`st_hpo._tracking._record`), never one
re-derived from Optuna's ``trial.params``.

so that ``SentenceTransformerTrainingArguments(output_dir="out", **config["args"])`` (the class named by
``args_class``) gives the arguments
the best trial trained with, and ``loss_cls(model, **config["loss_params"])`` its loss.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._definition import _args
from st_hpo._definition._space import LOSS_NAME
from st_hpo._definition._study import Study
from st_hpo._execution._best_model import saved_best_model
from st_hpo._execution._storage import default_storage_url, open_storage
from st_hpo._execution._test_score import recorded_test_values
from st_hpo._kinds import stored_kind
from st_hpo._results._confirm_verdict import confirmed_line
from st_hpo._tracking._record import run_id_of, shown_params, trained_values
from st_hpo._tracking._schema import (
    BASE_MODEL_VALUE_KEY,
    BASELINE_ATTR,
    CONFIG_ATTR,
    CONFIRMED_ATTR,
    KIND_ATTR,
    OBJECTIVE_KEY,
    SYNCED_RUNS_ATTR,
    TRIAL_SECONDS_KEY,
    UNSAMPLED_ATTR,
)
from st_hpo.exceptions import (
    NoResultError,
    StHpoError,
    StorageError,
    StudyDefinitionError,
    TrackingError,
    UsageError,
)

if TYPE_CHECKING:
    import optuna

    from st_hpo._results._handle import StudyHandle

__all__ = ["BestTrial", "StudyLocation", "best_config", "best_trial", "config_of", "export_best", "load_study",
           "review_experiment", "write_config"]

EXPORT_FORMAT = "st-hpo.best-config/1"
#: Exported argument fields that belong to one run, not to the configuration.
_PER_RUN_FIELDS = ("output_dir", "logging_dir")


@dataclasses.dataclass(frozen=True)
class StudyLocation:
    """Where a study's storage and MLflow store are; the defaults are the ones ``st-hpo run`` uses."""

    output_dir: Path
    storage: str
    tracking_uri: str
    artifact_root: str | None  #: the experiment's artifact location for the embedded store, else None

    @classmethod
    def resolve(cls, study: Study, *, output_dir: str | Path | None = None, storage: str | None = None,
                tracking_uri: str | None = None) -> StudyLocation:
        out = Path(output_dir or Path("st-hpo-runs") / study.name).resolve()
        uri = tracking_uri or f"sqlite:///{out / 'mlflow.db'}"
        return cls(output_dir=out, storage=storage or default_storage_url(out), tracking_uri=uri,
                   artifact_root=None if tracking_uri else (out / "mlartifacts").as_uri())


def load_study(study: Study, location: StudyLocation) -> Any:
    """The study's ``optuna.Study``; StorageError (saying to run it first) when there is none."""
    import optuna

    url = location.storage
    if "://" not in url and not Path(url).exists():
        raise StorageError(f"no study {study.name!r} at {url}; run it first (st-hpo run STUDY_FILE), "
                           "or pass the output_dir= and storage= it ran with", parameters=("output_dir", "storage"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=study.name, storage=open_storage(url))
    except KeyError:
        raise StorageError(f"no study {study.name!r} in {url}; run it first, or pass study_name=",
                           parameters=("study_name",)) from None


@dataclasses.dataclass(frozen=True)
class BestTrial:
    """The best finished trial of a study and how much it beat the starting points.

    Gains are signed so that a positive gain is an improvement whatever the direction: for a maximised
    objective ``value - reference``, for a minimised one ``reference - value``.
    """

    study_name: str
    objective: str
    direction: str
    number: int
    value: float
    params: dict[str, Any]
    mlflow_run_id: str | None
    is_baseline: bool
    n_complete: int
    baseline_number: int | None = None
    baseline_value: float | None = None
    base_model_value: float | None = None  #: the objective of the model before any fine-tuning
    #: the best trial's saved model (``keep_best_model``), when it is on this machine
    model_dir: str | None = None
    #: that model's score on the held-out test set (``Study.test_dataset``), and the base model's
    test_value: float | None = None
    base_model_test_value: float | None = None
    #: the model kind the study trains ("sentence-transformer", "cross-encoder", ...)
    model_kind: str = "sentence-transformer"
    #: what ``st-hpo confirm`` found (mean/std per configuration over new seeds, the winner, the test)
    confirmed: dict[str, Any] | None = None

    @property
    def gain_over_baseline(self) -> float | None:
        return None if self.baseline_value is None else self._gain(self.baseline_value)

    @property
    def gain_over_base_model(self) -> float | None:
        return None if self.base_model_value is None else self._gain(self.base_model_value)

    def _gain(self, reference: float) -> float:
        return self.value - reference if self.direction == "maximize" else reference - self.value

    @property
    def load_hint(self) -> str | None:
        """How to load the kept model (with its kind's class), when it is on this machine."""
        from st_hpo._kinds import kind_named

        return kind_named(self.model_kind).load_hint(self.model_dir) if self.model_dir else None

    @property
    def confirmation_is_current(self) -> bool | None:
        """Whether ``confirmed`` was made while this trial was the study's best (None: no confirmation). False
        after the study was extended and a later trial became the best: it confirmed an earlier best."""
        if not self.confirmed:
            return None
        return self.confirmed.get("single_run_best") == self.number

    @property
    def confirmation_note(self) -> str | None:
        """What ``st-hpo best`` says about the confirmation (see :mod:`st_hpo._results._confirm_verdict`)."""
        return confirmed_line(self.confirmed, self.number)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(gain_over_baseline=self.gain_over_baseline, gain_over_base_model=self.gain_over_base_model,
                    confirmation_is_current=self.confirmation_is_current, confirmation_note=self.confirmation_note)
        return data


def _baseline(trials: list[Any]) -> Any:
    """The finished baseline trial (the base arguments, trial 0 normally), or None."""
    for t in trials:
        if t.user_attrs.get(BASELINE_ATTR) and t.state.name == "COMPLETE":
            return t
    return None


def best_of(optuna_study: optuna.Study, objective: Any, trial: int | None = None) -> BestTrial:
    """The :class:`BestTrial` of an open ``optuna.Study``; NoResultError (a StorageError) when no trial completed.

    ``trial``: that trial instead of the best one (in a multi-objective study, which has no one best, a trial
    of the Pareto front, and required: see :mod:`st_hpo._results._pareto`); its value is the first objective's.
    """
    from st_hpo._results._pareto import chosen_trial, saved_model_of

    trials = optuna_study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if not complete:
        states = ", ".join(sorted({t.state.name for t in trials})) or "none"
        raise NoResultError(f"study {optuna_study.study_name!r} has no complete trial yet (trial states: "
                           f"{states}); run more trials with st-hpo run")
    best = chosen_trial(optuna_study, trial)
    baseline = _baseline(trials)
    if trial is None:
        model_dir = str(saved) if (saved := saved_best_model(optuna_study)) else None
    else:
        model_dir = saved_model_of(best)
    return BestTrial(
        study_name=optuna_study.study_name,
        objective=optuna_study.user_attrs.get(OBJECTIVE_KEY, objective),
        direction=optuna_study.directions[0].name.lower(),
        number=best.number,
        value=float(best.values[0]),
        params=shown_params(best),
        mlflow_run_id=run_id_of(best, optuna_study.user_attrs.get(SYNCED_RUNS_ATTR, {})),
        is_baseline=bool(best.user_attrs.get(BASELINE_ATTR)),
        n_complete=len(complete),
        baseline_number=baseline.number if baseline else None,
        baseline_value=float(baseline.values[0]) if baseline else None,
        base_model_value=optuna_study.user_attrs.get(BASE_MODEL_VALUE_KEY),
        model_dir=model_dir,
        test_value=recorded_test_values(optuna_study)[0] if trial is None else None,
        base_model_test_value=recorded_test_values(optuna_study)[1],
        confirmed=optuna_study.user_attrs.get(CONFIRMED_ATTR),
        model_kind=optuna_study.user_attrs.get(KIND_ATTR, "sentence-transformer"),
    )


def best_trial(study: Study, *, output_dir: str | Path | None = None, storage: str | None = None,
               study_name: str | None = None, trial: int | None = None) -> BestTrial:
    """The best trial of ``study`` as stored by a run with the same ``output_dir``/``storage``/``study_name``
    (``trial``: that trial; a multi-objective study needs it, a trial of its Pareto front;
    ``open_study(...).best(trial=...)``)."""
    from st_hpo._results._handle import open_study

    return open_study(study, output_dir=output_dir, storage=storage, study_name=study_name).best(trial=trial)


def trial_duration(trial: Any, now: Any = None) -> float | None:
    """Seconds a trial ran: what it recorded (a dead worker's trial: up to its last sign of life), else its
    start to its end (to ``now`` while it runs)."""
    recorded = trial.user_attrs.get(TRIAL_SECONDS_KEY)
    if recorded is not None and trial.state.name != "RUNNING":
        return float(recorded)
    end = trial.datetime_complete or (now if trial.state.name == "RUNNING" else None)
    return (end - trial.datetime_start).total_seconds() if end and trial.datetime_start else None


def trial_params(trial: Any) -> dict[str, Any]:
    """What Optuna sampled for a trial (Choice labels, helper suggestions): the params to queue to run the
    same configuration again; none for a baseline that ran the base arguments unsampled. What the trial
    trained with is :func:`st_hpo._tracking._record.trained_values`."""
    return {} if trial.user_attrs.get(UNSAMPLED_ATTR) else dict(trial.params)


def effective_args(base_args: Any, params: dict[str, Any], *, output_dir: str, run_name: str | None,
                   extra: dict[str, Any] | None = None) -> Any:
    """The arguments a trial with ``params`` trains with: ``base_args`` cloned with the training overrides."""
    overrides, _, _ = _args.split_params(params)
    overrides.pop(LOSS_NAME, None)  # a sampled loss class, not an argument
    overrides.update(extra or {})
    try:
        return _args.clone_args(base_args, overrides, output_dir=output_dir, run_name=run_name)
    except (ValueError, TypeError) as exc:
        raise StudyDefinitionError(f"the best trial's values no longer fit the study's base args: {exc}; "
                                   "was the study file changed since the study ran?") from None


def base_args_of(study: Study, output_dir: str, *, args_class: type | None = None) -> Any:
    """The study's base arguments (of the kind's ``args_class``), checked the way validation checks them."""
    return _args.build_base_args(study.args, output_dir=output_dir, args_class=args_class)


def best_config(study: Study, *, output_dir: str | Path | None = None, storage: str | None = None,
                study_name: str | None = None, trial: int | None = None) -> dict[str, Any]:
    """The best trial's configuration as the mapping described in this module's docstring."""
    from st_hpo._results._handle import open_study

    return open_study(study, output_dir=output_dir, storage=storage, study_name=study_name).best_config(trial=trial)


def config_of(handle: StudyHandle, *, trial: int | None = None) -> dict[str, Any]:
    """The best configuration (``trial``: that trial's) of the study ``handle`` holds (see :func:`best_config`)."""
    from st_hpo._definition import _args

    study, location, optuna_study = handle.study, handle.location, handle.optuna_study
    best = best_of(optuna_study, study.objective, trial)
    chosen = next(t for t in optuna_study.get_trials(deepcopy=False) if t.number == best.number)
    params = trained_values(chosen, study.space)
    kind = stored_kind(optuna_study)
    args = effective_args(base_args_of(study, str(location.output_dir / "trials"), args_class=kind.args_class()), params,
                          output_dir=str(location.output_dir / "trials" / f"trial-{best.number}"), run_name=None)
    fields = json.loads(args.to_json_string())
    fields = {k: v for k, v in fields.items()
              if k not in _PER_RUN_FIELDS and not (isinstance(v, str) and v.endswith("_TOKEN>"))}
    _, loss_params, model_params = _args.split_params(params)
    config = {
        "format": EXPORT_FORMAT, "study": best.study_name, "objective": best.objective,
        "direction": best.direction, "value": best.value, "trial": best.number, "baseline": best.is_baseline,
        "mlflow_run_id": best.mlflow_run_id, "params": best.params,
        "labels": dict((chosen.user_attrs.get(CONFIG_ATTR) or {}).get("labels", {})),
        "model_kind": kind.name, "args_class": f"sentence_transformers.{kind.args_class_name}",
        "args": fields, "loss_params": loss_params, "model_params": model_params,
    }
    if len(optuna_study.directions) > 1:  # several objectives: the trial's value of each
        from st_hpo._tracking._front import objective_names

        config["values"] = dict(zip(objective_names(optuna_study), chosen.values, strict=True))
    if "loss" in params:
        loss = params["loss"]
        config["loss"] = f"{getattr(loss, '__module__', '?')}.{getattr(loss, '__qualname__', repr(loss))}"
    return config


#: The file names ``export`` writes, by their suffix.
EXPORT_SUFFIXES = (".json", ".yaml", ".yml")


def export_best(study: Study, path: str | Path, *, output_dir: str | Path | None = None,
                storage: str | None = None, study_name: str | None = None, trial: int | None = None) -> Path:
    """Write the best configuration (``trial``: that trial's) to ``path``: JSON for ``.json``, YAML for
    ``.yaml``/``.yml``; an existing folder gets ``<study name>.json`` inside it; any other name is refused
    before the study is read (see :func:`export_target`). Returns the file written
    (``open_study(...).export(path, trial=...)``)."""
    from st_hpo._results._handle import open_study

    return open_study(study, output_dir=output_dir, storage=storage, study_name=study_name).export(path, trial=trial)


def export_target(path: str | Path, study_name: str) -> Path:
    """The file ``export`` writes for ``path``: ``path`` itself when it ends in ``.json``, ``.yaml`` or ``.yml``;
    ``<study name>.json`` inside it when it is an existing folder. Any other name is refused (a file called
    ``best.txt`` holding JSON would surprise whoever opens it)."""
    path = Path(path)
    if path.is_dir():
        return path / f"{study_name}.json"
    if path.suffix.lower() not in EXPORT_SUFFIXES:
        raise UsageError(f"{str(path)!r}: export writes JSON (.json) or YAML (.yaml, .yml), or into an existing "
                         "folder; name the file with one of these suffixes")
    return path


def write_config(config: dict[str, Any], path: str | Path) -> Path:
    """Write an exported configuration to ``path`` (its folders created): YAML for ``.yaml``/``.yml``, else JSON."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(config, sort_keys=False)
    else:
        text = json.dumps(config, indent=2) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:  # a folder on the way is a file, no permission, a read-only disk
        raise UsageError(f"cannot write {str(path)!r}: {exc.strerror or exc}"
                         f"{f' ({exc.filename})' if exc.filename and str(exc.filename) != str(path) else ''}; "
                         "export to a file in a folder you can write") from exc
    return path


def review_experiment(handle: StudyHandle) -> str:
    """The MLflow experiment of the study ``handle`` holds, its trials view written (see ``StudyHandle.review``)."""
    import logging

    from st_hpo._tracking._mlflow import experiment_id

    uri = handle.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri[10:]).exists():
        raise TrackingError(f"no MLflow store at {uri}; run the study first or pass output_dir=",
                            parameters=("output_dir",))
    found = experiment_id(uri, handle.study.experiment)
    try:
        optuna_study = handle.optuna_study
    except StHpoError:  # no storage here (another machine's): the study file's space alone
        optuna_study = None
    study = handle.study
    try:
        handle.tracker().show_trials(study.space, optuna_study, maximize=study.direction == "maximize")
    except StHpoError as exc:  # the UI still shows the runs; only the first screen is MLflow's own
        logging.getLogger(__name__).warning("%s; the URL opens MLflow's default view", exc)
    return found
