"""A study session: the validated study, its Optuna study in the storage, its MLflow parent run.

Opening a session validates first and creates nothing until validation passed (no output directory,
no storage, no MLflow run). It then creates or attaches to the Optuna study (whichever process comes
first creates it), attaches to the study's one MLflow parent run (its id kept in the study's user
attrs), fails trials whose worker died, and brings MLflow up to date with the storage.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._definition import _args
from st_hpo._definition._baseline import baseline_values
from st_hpo._definition._identity import check_unchanged, definition_record, record_on_parent
from st_hpo._definition._resources import StudyResources, pick_device
from st_hpo._definition._study import DEFAULT_PRUNER, Study, is_model_factory
from st_hpo._execution._best_model import best_number
from st_hpo._execution._objectives import record_objectives
from st_hpo._execution._pruners import make_pruner
from st_hpo._execution._recovery import current_host, record_runner, recover_stale_trials
from st_hpo._execution._resume import record_policy
from st_hpo._execution._sampling import make_sampler
from st_hpo._execution._storage import default_storage_url, open_storage
from st_hpo._tracking._census import take_census
from st_hpo._tracking._mlflow_sync import sync_runs
from st_hpo._tracking._schema import (
    BASE_MODEL_VALUE_KEY,
    BASELINE_ATTR,
    BASELINE_UNSAMPLED_ATTR,
    BEST_MODEL_DIR_KEY,
    BEST_MODEL_HOST_KEY,
    BEST_TRIAL_KEY,
    KIND_ATTR,
    MODEL_DIR_ATTR,
    OBJECTIVE_KEY,
    QUEUED_KEY,
    STOPPED_ATTR,
    TAG_HOST_KEY,
    UNSAMPLED_ATTR,
)
from st_hpo._tracking._times import time_totals
from st_hpo._validation import ValidatedStudy, objective_key, validate_study
from st_hpo.exceptions import StorageError, StudyDefinitionError, TrackingError

if TYPE_CHECKING:
    from st_hpo._tracking._mlflow import MlflowTracker

__all__ = ["SessionOptions", "StudySession", "log_study_figures"]

logger = logging.getLogger(__name__)

#: How a refusal to mix two studies says to keep them apart.
_NEW_DIR = " (and another output_dir=, if you give one)"
#: The parameters those refusals name (the CLI shows them as its options).
_LOCATION = ("study_name", "output_dir")
#: A baseline that failed is queued again by the next run, until it has been tried this many times.
MAX_BASELINE_TRIES = 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class SessionOptions:
    """Where a study lives and how it is tracked (all optional: embedded defaults under output_dir)."""

    output_dir: str | Path | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    study_name: str | None = None
    pruner: str | None = None
    baseline: bool | None = None
    #: override the study's ``intermediate_eval_rows``; 0 evaluates on every row
    intermediate_eval_rows: int | None = None
    #: override the study's ``keep_best_model``
    keep_best_model: bool | None = None
    track: bool = True
    #: "main" opens the study for a run; "worker" joins a run that a supervisor (or another machine) opened
    role: str = "main"
    #: the worker's name (role "worker"): with the host, it gives the worker its own sampler seed
    worker_name: str | None = None
    #: False in a supervisor whose workers train on GPUs: it validates on the CPU and leaves the base
    #: model's score to the workers, so it never holds GPU memory (a CUDA context is ~0.5 GB)
    trains_here: bool = True
    #: the study file, when there is one: the parent run records the git commit of its repository
    study_file: str | Path | None = None


def _describe(value: Any) -> str:
    if isinstance(value, str) or value is None:
        return str(value)
    return type(value).__name__ if not hasattr(value, "__name__") else value.__name__


class StudySession:
    """An open study: storage, Optuna study, tracker, resources. Build with :meth:`open`."""

    def __init__(self, *, definition: Study, validated: ValidatedStudy, resources: StudyResources,
                 study: Any, tracker: MlflowTracker, output_dir: Path, storage_url: str,
                 tracking_uri: str | None) -> None:
        self.definition = definition
        self.validated = validated
        self.resources = resources
        self.study = study
        self.tracker = tracker
        self.output_dir = output_dir
        self.storage_url = storage_url
        self.tracking_uri = tracking_uri

    @classmethod
    def open(cls, definition: Study, options: SessionOptions, *,
             resources: StudyResources | None = None) -> StudySession:
        if options.study_name:
            definition = definition.replace(name=options.study_name)
        if options.pruner:
            definition = definition.replace(pruner=options.pruner)
        if options.baseline is not None:
            definition = definition.replace(baseline=options.baseline)
        if options.intermediate_eval_rows is not None:
            definition = definition.replace(intermediate_eval_rows=options.intermediate_eval_rows or None)
        if options.keep_best_model is not None:
            definition = definition.replace(keep_best_model=options.keep_best_model)
        output_dir = Path(options.output_dir or Path("st-hpo-runs") / definition.name).resolve()
        resources = resources or StudyResources(definition)
        validated = validate_study(definition, resources, output_dir=str(output_dir / "trials"),
                                   on_cpu=not options.trains_here)
        storage_url = options.storage or default_storage_url(output_dir)
        _claim_output_dir(output_dir, definition.name, write=False)  # before anything is created
        new_dir = not output_dir.exists()
        output_dir.mkdir(parents=True, exist_ok=True)
        tracker = None
        tracking_uri = None
        try:
            if options.track:  # MLflow unreachable: refuse to start before anything is created in the storage
                from st_hpo._tracking import MlflowTracker, default_tracking_uri

                tracking_uri = options.tracking_uri or default_tracking_uri(output_dir)
                artifact_root = None if options.tracking_uri else (output_dir / "mlartifacts").as_uri()
                tracker = MlflowTracker(tracking_uri, definition.experiment, artifact_root=artifact_root)
            study = _create_or_load(definition, storage_url, _sampler_salt(options, storage_url))
        except BaseException:  # a bad --tracking-uri or --storage: leave no output folder behind to puzzle over
            if new_dir:
                shutil.rmtree(output_dir, ignore_errors=True)
            raise
        record_policy(study, definition)  # read by whoever fails an interrupted trial (st_hpo._execution._resume)
        datasets = _datasets(resources)
        record = definition_record(definition, validated.base_args, datasets, kind=validated.kind.name)
        check_unchanged(study, record, where=storage_url)
        if study.user_attrs.get(KIND_ATTR) != validated.kind.name:
            study.set_user_attr(KIND_ATTR, validated.kind.name)
        _claim_output_dir(output_dir, definition.name, write=True)
        if tracker is not None:
            tracker.ensure_parent(study, _settings(definition, validated, storage_url))
            if options.role == "main":
                record_on_parent(tracker, definition, record, datasets, study_file=options.study_file)
                tracker.show_trials(definition.space, study)  # what the UI opens on
        session = cls(definition=definition, validated=validated, resources=resources, study=study,
                      tracker=tracker, output_dir=output_dir, storage_url=storage_url, tracking_uri=tracking_uri)
        try:
            session.prepare(sync=options.role == "main", score=options.trains_here)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM while the base model is scored: no run left RUNNING
            if options.role == "main":
                session.end_parent("KILLED")
            raise
        return session

    def prepare(self, *, sync: bool = True, score: bool = True) -> None:
        """Fail dead workers' trials, sync MLflow, queue the baseline and warm-start trials, and (``score``)
        score the base model if no process did yet.

        The baseline is queued once per study. Warm-start configurations are queued by the first process
        and, when ``sync`` (a run, not a joining worker), again by every run, which skips those the study
        has already tried or queued: ``--enqueue`` on a resumed study adds its new configurations.
        """
        recover_stale_trials(self.study)
        if sync:  # `st-hpo sync` ends the parent run left RUNNING once this process is gone
            record_runner(self.study)
        if self.tracker is not None and sync:
            self.tracker.set_parent_status("RUNNING")
            fixed = sync_runs(self.tracker, self.study, self.definition.objective)
            if fixed:
                logger.info("brought %d MLflow run(s) up to date with the storage", fixed)
        if not self.study.user_attrs.get(QUEUED_KEY):
            self.study.set_user_attr(QUEUED_KEY, True)
            self._queue_first_trials()
        elif sync:
            self._requeue_baseline()
            self._queue_warm_start()
        if score and BASE_MODEL_VALUE_KEY not in self.study.user_attrs:
            self._score_base_model()

    def _queue_first_trials(self) -> None:
        if self.definition.baseline:
            self._queue_baseline()
        self._queue_warm_start()

    def _queue_baseline(self) -> None:
        """Queue the baseline with every base value the space can produce, as Optuna params (Choice labels);
        the names it cannot are listed, and the trial leaves them at their base value."""
        values = baseline_values(self.definition.space, self.validated.base_args, base_loss=self.definition.loss)
        attrs: dict[str, Any] = {BASELINE_ATTR: True}
        if values is None:  # define-by-run: the base arguments, unsampled
            attrs[UNSAMPLED_ATTR] = True
        elif values.unsampled:
            attrs[BASELINE_UNSAMPLED_ATTR] = values.unsampled
        self.study.enqueue_trial(values.params if values else {}, user_attrs=attrs, skip_if_exists=False)

    def _requeue_baseline(self) -> None:
        """Queue the baseline again when every run of it was stopped from outside (Ctrl-C, SIGTERM, a killed
        worker), up to 3 tries; not when it failed on its own (diverged, raised): it would again."""
        if not self.definition.baseline:
            return
        runs = [t for t in self.study.get_trials(deepcopy=False) if t.user_attrs.get(BASELINE_ATTR)]
        if runs and len(runs) < MAX_BASELINE_TRIES and all(
                t.state.name == "FAIL" and t.user_attrs.get(STOPPED_ATTR) for t in runs):
            self._queue_baseline()

    def _queue_warm_start(self) -> None:
        for params in self.definition.enqueue:
            self.study.enqueue_trial(dict(params), skip_if_exists=True)

    def _score_base_model(self) -> None:
        """The objective of the model before any fine-tuning: the bar every trial should clear."""
        if self.validated.needs_eval_loss or is_model_factory(self.definition.model):
            return
        try:
            model = self.resources.base_model()
            device = pick_device(self.validated.base_args)
            if device != "cpu":  # the base weights stay on the CPU; score a copy on the GPU
                model = copy.deepcopy(model).to(device)
            metrics = self.resources.evaluator(model)
            del model
        except Exception as exc:  # noqa: BLE001 - informative only
            logger.warning("could not score the base model: %s", exc)
            return
        key = self.validated.objective_metric[len("eval_") :]
        value = metrics.get(key) if isinstance(metrics, dict) else None
        if value is None:
            return
        self.study.set_user_attr(BASE_MODEL_VALUE_KEY, float(value))
        if self.tracker is not None:
            self.tracker.log_parent({"base_model_objective": float(value)})

    def update_parent(self) -> None:
        """Best value so far (a curve over trial numbers), best trial and counts on the parent run."""
        if self.tracker is not None:
            log_study_figures(self.tracker, self.study)

    def close(self, status: str) -> None:
        """Sync MLflow once more and end the parent run (FINISHED, KILLED or FAILED) with its end time.

        MLflow being unreachable here loses nothing: the storage has every trial, and the next
        ``st-hpo run`` or ``st-hpo sync`` writes what is missing. A Ctrl-C or SIGTERM before the parent run
        is ended ends it KILLED (and goes on: the caller stops).
        """
        if self.tracker is None:
            return
        try:
            sync_runs(self.tracker, self.study, self.definition.objective)
            self.update_parent()
            self.tracker.show_trials(self.definition.space, self.study)  # a define-by-run space's names by now
        except TrackingError as exc:
            logger.warning("%s; run `st-hpo sync` when MLflow is back to log what is missing", exc)
            return
        except KeyboardInterrupt:
            self.end_parent("KILLED")
            raise
        self.end_parent(status)

    def end_parent(self, status: str) -> None:
        """End the parent run with ``status`` and its end time, now (a write a signal does not cut)."""
        if self.tracker is None:
            return
        try:
            self.tracker.set_parent_status(status)
        except TrackingError as exc:
            logger.warning("%s; run `st-hpo sync` when MLflow is back to end the study's run", exc)


def log_study_figures(tracker: MlflowTracker, study: Any) -> None:
    """The study's figures on its parent run: counts, time totals, the best value so far (a curve over trial
    numbers) and the best trial, with where its model was kept."""
    trials = study.get_trials(deepcopy=False)
    census = take_census(trials)
    metrics: dict[str, float] = {"n_complete": census.complete, "n_pruned": census.pruned, "n_fail": census.failed}
    if census.out_of_memory:
        metrics["n_out_of_memory"] = census.out_of_memory
    metrics.update(time_totals(trials))
    step = max((t.number for t in trials), default=0)
    if len(study.directions) > 1:  # several objectives: no one best; the front (its plot: the pareto report)
        from st_hpo._tracking._front import study_front

        metrics["n_pareto"] = len(study_front(study, trials))
        tracker.log_parent(metrics, step)
    elif census.complete and best_number(study, trials) is not None:
        best = study.best_trial
        metrics.update(best_value=best.value, best_trial_number=best.number)
        tags = {BEST_TRIAL_KEY: str(best.number)}
        if best.user_attrs.get(MODEL_DIR_ATTR):  # where the best trial's model was kept, on which host
            tags[BEST_MODEL_DIR_KEY] = best.user_attrs[MODEL_DIR_ATTR]
            tags[BEST_MODEL_HOST_KEY] = best.user_attrs.get(TAG_HOST_KEY, "")
        tracker.log_parent(metrics, step, tags=tags)
    else:
        tracker.log_parent(metrics, step)


def _datasets(resources: StudyResources) -> dict[str, Any]:
    """The study's datasets by field name (those it has)."""
    return {"train_dataset": resources.train_dataset, "eval_dataset": resources.eval_dataset,
            "test_dataset": resources.test_dataset}


def _sampler_salt(options: SessionOptions, storage_url: str) -> str | None:
    """Who samples here, for :func:`worker_seed`: every worker process, and a run whose storage other
    machines may share; None for a run on a local storage, which keeps the study's seed as it is."""
    local = "://" not in storage_url or storage_url.startswith("sqlite:")
    if options.role == "main" and local:
        return None
    return f"{current_host()}/{options.worker_name or 'main'}"




def _claim_output_dir(output_dir: Path, study_name: str, *, write: bool) -> None:
    """Refuse an output folder that holds another study's trials: trial folders are named by number only,
    so two studies there would overwrite (and clean up) each other's kept models. ``write``: mark the
    folder as this study's when it is nobody's yet."""
    marker = output_dir / "trials" / ".st-hpo-study"
    owner = marker.read_text().strip() if marker.is_file() else None
    if owner and owner != study_name:
        raise StudyDefinitionError(
            f"{output_dir} holds the trials of study {owner!r}; give study {study_name!r} its own output_dir= "
            f"(by default st-hpo-runs/{study_name})", parameters=_LOCATION
        )
    if owner is None and write:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(study_name + "\n")


def _create_or_load(definition: Study, storage_url: str, salt: str | None = None) -> Any:
    import optuna

    storage = open_storage(storage_url)
    try:
        study = optuna.create_study(
            study_name=definition.name, storage=storage, load_if_exists=True,
            directions=list(definition.directions),
            sampler=make_sampler(definition.sampler, definition.seed, salt, parallel=salt is not None),
            pruner=make_pruner(definition.pruner, storage),
        )
    except Exception as exc:  # noqa: BLE001 - storage errors of every kind
        raise StorageError(f"could not create or load study {definition.name!r} in {storage_url}: {exc}") from None
    _check_directions(study, definition, storage_url)
    stored = study.user_attrs.get(OBJECTIVE_KEY)
    if stored is not None and objective_key(stored) != objective_key(definition.objectives[0]):
        raise StudyDefinitionError(
            f"study {definition.name!r} in {storage_url} optimises {stored!r}, but the study file says "
            f"objective={definition.objective!r}: the trials' values could not be compared; use another "
            f"study_name={_NEW_DIR}", parameters=_LOCATION,
        )
    if stored is None:
        study.set_user_attr(OBJECTIVE_KEY, definition.objectives[0])
    record_objectives(study, definition, storage_url)
    existing = len(study.get_trials(deepcopy=False))
    if existing:  # resumed or extended: seeded as before, the sampler would propose the first trials' values again
        study.sampler = make_sampler(definition.sampler, definition.seed, f"{salt or 'main'}/after-{existing}",
                                     parallel=salt is not None)
    return study


def _check_directions(study: Any, definition: Study, storage_url: str) -> None:
    """The stored study optimises in the study file's directions (one per objective)."""
    stored = [d.name.lower() for d in study.directions]
    if stored == list(definition.directions):
        return
    if len(stored) == 1 and not definition.is_multi_objective:
        raise StudyDefinitionError(
            f"study {definition.name!r} in {storage_url} was created to {stored[0]}, but the "
            f"study file says direction={definition.direction!r}; use another study_name={_NEW_DIR}",
            parameters=_LOCATION,
        )
    raise StudyDefinitionError(
        f"study {definition.name!r} in {storage_url} was created with the directions {stored!r}, but the study "
        f"file says {list(definition.directions)!r}; use another study_name={_NEW_DIR}", parameters=_LOCATION)


def _settings(definition: Study, validated: ValidatedStudy, storage_url: str) -> dict[str, Any]:
    space = definition.space
    described = ({k: repr(v) for k, v in space.items()} if isinstance(space, dict)
                 else getattr(space, "__name__", "define-by-run"))
    return {
        "study": definition.name,
        "objective": definition.objective if not definition.is_multi_objective else list(definition.objectives),
        "direction": definition.direction if not definition.is_multi_objective else list(definition.directions),
        **({"constraints": dict(definition.constraints)} if definition.constraints else {}),
        "n_trials": definition.n_trials,
        "model": _describe(definition.model),
        "loss": _describe(definition.loss),
        "sampler": _describe(definition.sampler or "tpe"),
        "pruner": _describe(definition.pruner or DEFAULT_PRUNER),
        "seed": definition.seed,
        "baseline": definition.baseline,
        "intermediate_eval_rows": definition.intermediate_eval_rows or "all",
        "keep_best_model": definition.keep_best_model,
        "max_failures_in_a_row": definition.max_failures_in_a_row or "never stop",
        "space": json.dumps(described),
        "storage": storage_url if "@" not in storage_url else storage_url.split("@")[-1],
        "base_args": json.dumps({k: v for k, v in _args.args_to_dict(validated.base_args).items()
                                 if k not in ("output_dir", "logging_dir")})[:6000],
    }
