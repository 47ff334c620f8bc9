"""The Python API behind the CLI: validate a study, run it, read its results."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._definition._resources import StudyResources, pick_device
from st_hpo._definition._study import DEFAULT_PRUNER, Study
from st_hpo._engines import ClusterEngine, EngineSettings, engine_for
from st_hpo._engines._cluster import run_on_cluster
from st_hpo._execution._best_model import best_number, saved_best_model
from st_hpo._execution._plan import PLAN_FILE, WorkerPlan, decide_slots, read_plan
from st_hpo._execution._progress import Progress
from st_hpo._execution._recovery import SUPERVISOR_ENV
from st_hpo._execution._test_score import recorded_test_values
from st_hpo._results._finish import finish_by_worker, finish_study
from st_hpo._tracking._census import study_census
from st_hpo._tracking._front import study_front
from st_hpo._tracking._record import shown_params
from st_hpo._tracking._schema import BASE_MODEL_VALUE_KEY, N_TRIALS_KEY
from st_hpo._validation import validate_study as _validate

if TYPE_CHECKING:
    from st_hpo._execution._session import StudySession

__all__ = ["StudyResult", "join_study", "run_study", "validate_study"]


@dataclasses.dataclass(frozen=True)
class StudyResult:
    """Where a study stands after :func:`run_study` returns."""

    study_name: str
    output_dir: Path
    storage: str
    tracking_uri: str | None
    parent_run_id: str | None
    n_complete: int
    n_pruned: int
    n_fail: int
    best_trial_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    base_model_value: float | None
    interrupted: bool
    budget_met: bool
    #: the best trial's saved model folder (``Study.keep_best_model``), when it is on this machine
    best_model_dir: Path | None = None
    #: why the study has no result: it stopped short of its budget, other than by a timeout or Ctrl-C (trials
    #: kept failing), or it met its budget without a complete trial (every one pruned or failed)
    stop_reason: str | None = None
    #: the best trial's kept model scored on the held-out test set (``Study.test_dataset``), and the base model
    test_value: float | None = None
    base_model_test_value: float | None = None
    #: the study's budget of finished trials that this run worked to (``n_trials``, or a stored extension)
    budget: int | None = None
    #: trials that ran out of memory (never counted as finished; the sampler steers away from them)
    n_out_of_memory: int = 0
    #: what a cluster engine was handed when the run returned without waiting: its job or actor ids, the
    #: job script, and the commands to watch and stop it (:class:`st_hpo._engines.Submission`)
    submission: Any = None
    #: the study's MLflow experiment (None without tracking)
    experiment_id: str | None = None
    #: a multi-objective study's Pareto front: the numbers of its trials (``st-hpo best`` shows them)
    pareto_numbers: list[int] = dataclasses.field(default_factory=list)


def validate_study(study: Study) -> None:
    """Check ``study`` without training (see ``st-hpo validate``); raise StudyDefinitionError on a problem."""
    with tempfile.TemporaryDirectory(prefix="st-hpo-validate-") as tmp:
        _validate(study, StudyResources(study), output_dir=tmp)


def run_study(
    study: Study,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    output_dir: str | Path | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    study_name: str | None = None,
    pruner: str | None = None,
    baseline: bool | None = None,
    intermediate_eval_rows: int | None = None,
    keep_best_model: bool | None = None,
    progress: bool = True,
    workers: int | None = None,
    gpus: str | None = None,
    trials_per_gpu: int = 1,
    study_file: str | Path | None = None,
    engine: str = "local",
    gpus_per_worker: float | None = None,
    cpus_per_worker: int = 1,
    engine_options: dict[str, Any] | None = None,
) -> StudyResult:
    """Validate ``study`` and run trials until ``n_trials`` have finished in total (resuming if it exists).

    Args:
        n_trials: the total number of finished (complete or pruned) trials to reach; defaults to the
            study's ``n_trials``. A study that already has them does nothing; a larger number extends it.
        timeout: stop starting trials after this many seconds (in this process, or in every worker
            process, which is then told what is left of it); running trials finish.
        output_dir: holds the storage, the MLflow store and the trials' output; default
            ``st-hpo-runs/<study name>``.
        storage: an Optuna storage (``*.journal`` path, ``sqlite:///...``, ``postgresql://...``);
            default a journal file in ``output_dir``.
        tracking_uri: an MLflow tracking URI; default a SQLite file in ``output_dir``.
        study_name: run under another name than ``study.name``.
        pruner: override the study's pruner by name (``median``, ``hyperband``, ...).
        baseline: override the study's ``baseline`` (run the base arguments first).
        intermediate_eval_rows: override the study's ``intermediate_eval_rows`` (0: every row).
        keep_best_model: override the study's ``keep_best_model``.
        progress: print a line per trial to stderr.
        workers: run this many worker processes sharing the storage (needs ``study_file``, which
            each worker loads); None or 1 without ``gpus`` runs the trials in this process.
        gpus: comma-separated GPU ids (positions in ``CUDA_VISIBLE_DEVICES`` when that is set);
            ``trials_per_gpu`` workers per GPU, each seeing only its GPU. With ``workers`` > 1 and no
            ``gpus`` on a GPU machine, the workers are spread over every visible GPU.
        study_file: the study file the worker processes load.
        engine: where the workers run: ``"local"`` (worker processes on this machine), ``"slurm"`` (one
            ``sbatch --array`` job of ``workers`` tasks and a final job that ends the study). Every worker
            starts from the plan written to ``<output_dir>/worker-plan.json``.
        gpus_per_worker, cpus_per_worker: what each worker asks of a cluster engine (whole GPUs on SLURM).
        engine_options: the engine's own settings, as :class:`st_hpo._engines.EngineSettings` names them
            (``shared_dir``, ``wait``, ``slurm_partition``, ``slurm_time``, ``slurm_account``,
            ``slurm_options``). Without ``wait``, a cluster engine returns once the workers are submitted
            (``StudyResult.submission`` says what was submitted) and the study ends by itself.

    A Ctrl-C (or SIGTERM, under the CLI) stops cleanly: running trials are failed, their runs KILLED,
    and the result says ``interrupted``; run again to resume.
    """
    from st_hpo._execution._session import SessionOptions, StudySession

    deadline = _deadline(timeout)  # counts from here: validation and set-up included
    chosen = engine_for(EngineSettings(name=engine, **(engine_options or {})))
    slots = decide_slots(engine=engine, workers=workers, gpus=gpus, trials_per_gpu=trials_per_gpu,  # bad input
                         gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,  # fails here, first
                         study_file=study_file)
    if slots and study_file is None:
        from st_hpo.exceptions import UsageError

        raise UsageError("workers need the study file to load: pass study_file=PATH (or use the CLI)")
    where = Path(output_dir or Path("st-hpo-runs") / (study_name or study.name)).resolve()
    chosen.check(storage=storage or str(where / "optuna.journal"),
                 tracking_uri=tracking_uri or f"sqlite:///{where / 'mlflow.db'}", slots=slots)
    options = SessionOptions(output_dir=output_dir, storage=storage, tracking_uri=tracking_uri,
                             study_name=study_name, pruner=pruner, baseline=baseline,
                             intermediate_eval_rows=intermediate_eval_rows, keep_best_model=keep_best_model,
                             trains_here=not (engine != "local" or any(s.gpu is not None for s in slots)),
                             study_file=study_file)
    session = StudySession.open(study, options)
    budget = _budget(session, n_trials)
    if progress:
        _announce(session, budget, max(len(slots), 1), engine)
    budget_met = interrupted = False
    stop_reason = None
    if slots:
        plan_path = _write_plan(session, study_file, budget, slots, deadline, engine, progress,
                                pruner=pruner, intermediate_eval_rows=intermediate_eval_rows,
                                keep_best_model=keep_best_model)
    if slots and isinstance(chosen, ClusterEngine):
        submission, waited, interrupted = run_on_cluster(chosen, session, plan_path, progress=progress)
        finished = study_census(session.study).finished
        return summarize(session, interrupted=interrupted, budget_met=finished >= budget, budget=budget,
                         submission=None if waited else submission)
    try:
        if slots:
            budget_met, interrupted, stop_reason = _run_workers(chosen, session, plan_path, progress)
        else:
            loop = _run_here(session, budget, _left(deadline), progress, worker_name="main")
            budget_met, interrupted, stop_reason = loop.budget_met, loop.interrupted, loop.gave_up
        if budget_met and not stop_reason:
            stop_reason = no_result(session.study)
    finally:
        finish_study(session, budget_met=budget_met, stop_reason=stop_reason)
    return summarize(session, interrupted=interrupted, budget_met=budget_met, stop_reason=stop_reason,
                     budget=budget)


def no_result(study: Any) -> str | None:
    """Why a study that met its budget has no result: no trial completed (all were pruned or failed); else None."""
    census = study_census(study)
    if census.complete:
        return None
    failed = census.failed + census.out_of_memory
    return f"no trial completed ({census.pruned} pruned, {failed} failed), so the study has no best trial"


def _write_plan(session: StudySession, study_file: Any, budget: int, slots: list[Any], deadline: float | None,
                engine: str, progress: bool, **overrides: Any) -> Path:
    """The worker plan of this run, written to ``<output_dir>/worker-plan.json``; returns its path."""
    left = _left(deadline)
    plan = WorkerPlan(study_file=str(Path(study_file).resolve()), study_name=session.study.study_name,
                      output_dir=str(session.output_dir), storage=session.storage_url,
                      tracking_uri=session.tracking_uri, budget=budget,
                      deadline=None if left is None else time.time() + left, engine=engine, slots=tuple(slots),
                      options={k: v for k, v in overrides.items() if v is not None}, progress=progress)
    return plan.write(session.output_dir / PLAN_FILE)


def _budget(session: StudySession, n_trials: int | None) -> int:
    """The study's total budget for this run, stored for the workers that join it.

    ``n_trials`` given: that, said in a line when it lowers the stored budget. Not given: the stored
    budget (an earlier ``--n-trials`` extension is kept) or the study file's ``n_trials``, the larger.
    """
    stored = session.study.user_attrs.get(N_TRIALS_KEY)
    if n_trials is not None:
        budget = n_trials
        if stored is not None and budget < stored:
            logging.getLogger(__name__).warning(
                "the study's budget is lowered from %d to %d trials (--n-trials / n_trials=)", stored, budget)
    else:
        budget = max(int(stored or 0), session.definition.n_trials)
    if budget != stored:
        session.study.set_user_attr(N_TRIALS_KEY, budget)
    return budget


def _announce(session: StudySession, budget: int, workers: int, engine: str = "local") -> None:
    """What is about to run, where it is stored, and the score to beat: printed before the first trial."""
    from rich.markup import escape

    from st_hpo._execution._progress import Progress, finished_of
    from st_hpo._execution._session import _describe

    definition, study = session.definition, session.study
    finished = study_census(study).finished
    lines = [f"study {study.study_name!r}: {finished_of(finished, budget)}; sampler "
             f"{_describe(definition.sampler or 'tpe')}, pruner {_describe(definition.pruner or DEFAULT_PRUNER)}; "
             f"{workers} worker(s) on "
             f"{pick_device(session.validated.base_args) if engine == 'local' else engine}",
             f"  model   {session.validated.kind.model_class_name} ({_describe(definition.model)})",
             f"  storage {session.storage_url}",
             f"  output  {session.output_dir}"]
    if session.tracking_uri:
        lines.append(f"  MLflow  {session.tracking_uri}")
    base = study.user_attrs.get(BASE_MODEL_VALUE_KEY)
    if base is not None:
        lines.append(f"  base model before fine-tuning: {definition.objectives[0]} = {base:.4f}")
    Progress(budget=budget).message(escape("\n".join(lines)))


def join_study(study: Study, *, n_trials: int | None = None, worker_name: str | None = None,
               timeout: float | None = None, output_dir: str | Path | None = None, storage: str | None = None,
               tracking_uri: str | None = None, study_name: str | None = None, pruner: str | None = None,
               intermediate_eval_rows: int | None = None, keep_best_model: bool | None = None,
               progress: bool = True) -> StudyResult:
    """Work on a study that already runs elsewhere (``st-hpo worker``) until its global budget is met.

    The study is created if no process created it yet; the MLflow parent run is shared.
    """
    import os

    from st_hpo._execution._session import SessionOptions, StudySession

    deadline = _deadline(timeout)
    name = worker_name or os.environ.get("ST_HPO_WORKER_NAME") or f"worker-{os.getpid()}"
    options = SessionOptions(output_dir=output_dir, storage=storage, tracking_uri=tracking_uri,
                             study_name=study_name, pruner=pruner, intermediate_eval_rows=intermediate_eval_rows,
                             keep_best_model=keep_best_model, role="worker", worker_name=name)
    session = StudySession.open(study, options)
    budget = n_trials or int(session.study.user_attrs.get(N_TRIALS_KEY, session.definition.n_trials))
    loop = _run_here(session, budget, _left(deadline), progress, worker_name=name)
    if progress and loop.budget_met and not loop.trials_run and not os.environ.get(SUPERVISOR_ENV):
        Progress(budget=budget).message(
            f"study {session.study.study_name!r} already has {budget} finished trials, its budget: nothing to run "
            "(a larger --n-trials extends it)")
    if loop.budget_met and not os.environ.get(SUPERVISOR_ENV):
        finish_by_worker(session)  # no supervisor ends this study: whoever meets the budget does, as `run` does
    elif loop.budget_met and session.tracker is not None:
        session.close("FINISHED")
    return summarize(session, interrupted=loop.interrupted, budget_met=loop.budget_met, stop_reason=loop.gave_up,
                     budget=budget)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


def _run_here(session: StudySession, budget: int, timeout: float | None, progress: bool, *,
              worker_name: str) -> Any:
    from st_hpo._execution._loop import work
    from st_hpo._execution._trial import WorkerInfo

    _warn_if_many_gpus()
    bar = Progress(budget=budget, enabled=progress, worker=None if worker_name == "main" else worker_name)
    return work(session, budget=budget, timeout=timeout, worker=WorkerInfo(name=worker_name), progress=bar)


def _warn_if_many_gpus() -> None:
    """Trials in a process that sees several GPUs train on all of them at once (DataParallel)."""
    import os

    from st_hpo._execution._workers import visible_gpus

    count = len(visible_gpus())
    if count > 1 and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        logging.getLogger(__name__).warning(
            "this process sees %d GPUs: transformers trains every trial on all of them with DataParallel "
            "(%d x per_device_train_batch_size per step). To run one trial per GPU, start `st-hpo run` "
            "(one worker per GPU) or give each worker one GPU: CUDA_VISIBLE_DEVICES=0 st-hpo worker ...",
            count, count)


def _run_workers(engine: Any, session: StudySession, plan_path: Path,
                 progress: bool) -> tuple[bool, bool, str | None]:
    plan = read_plan(plan_path)
    bar = Progress(budget=plan.budget, enabled=progress)
    bar.message(f"{len(plan.slots)} worker(s): {', '.join(s.name for s in plan.slots)}")
    return engine.run(session, plan_path, plan, progress=bar)


def summarize(session: StudySession, *, interrupted: bool, budget_met: bool, stop_reason: str | None = None,
              budget: int | None = None, submission: Any = None) -> StudyResult:
    """A :class:`StudyResult` from an open session."""
    study = session.study
    census = study_census(study)
    trials = study.get_trials(deepcopy=False)
    best = study.best_trial if census.complete and best_number(study, trials) is not None else None
    front = [t.number for t in study_front(study, trials)] if len(study.directions) > 1 else []
    return StudyResult(
        study_name=study.study_name,
        output_dir=session.output_dir,
        storage=session.storage_url,
        tracking_uri=session.tracking_uri,
        parent_run_id=session.tracker.parent_run_id if session.tracker else None,
        n_complete=census.complete,
        n_pruned=census.pruned,
        n_fail=census.failed,
        n_out_of_memory=census.out_of_memory,
        best_trial_number=best.number if best else None,
        best_value=best.value if best else None,
        best_params=shown_params(best) if best else {},
        base_model_value=study.user_attrs.get(BASE_MODEL_VALUE_KEY),
        interrupted=interrupted,
        budget_met=budget_met,
        best_model_dir=saved_best_model(study),
        pareto_numbers=front,
        stop_reason=stop_reason,
        test_value=recorded_test_values(study)[0],
        base_model_test_value=recorded_test_values(study)[1],
        budget=budget,
        submission=submission,
        experiment_id=session.tracker.experiment_id if session.tracker else None,
    )

