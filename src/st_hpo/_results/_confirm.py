"""Confirming a study's winner beyond seed noise (``st-hpo confirm``, :func:`confirm_study`).

The ``top`` best configurations of a study and its baseline (the base arguments; only when the study has
a complete baseline trial) are trained again with ``seeds`` new training seeds each: seed index i trains
with ``args.seed + 1000 + i`` (and ``data_seed`` the same when the base arguments set one), the same seed
for every configuration, so that the comparison with the baseline is paired by seed. Without a baseline
trial (``baseline=False``) the configurations are compared with each other: the best mean against the
runner-up.

The confirmation reuses the study machinery rather than a second runner: a companion Optuna study
``<study name>.confirm`` in the same storage (no pruner) holds one enqueued trial per (configuration,
seed), with the configuration's values fixed and user attributes naming the source trial, the seed
index and the training seed. The ordinary trial loop (:func:`st_hpo._execution._loop.work`) runs them
in this process, so a stopped or killed confirmation resumes with only the missing pairs and a finished
one runs nothing again. Their MLflow runs are children of the study's parent run, tagged
``st_hpo.kind=confirm``, ``st_hpo.source_trial``, ``st_hpo.seed_index`` and ``st_hpo.training_seed``;
their trial folders are under ``<output dir>/confirm/trials``. The figures (see
:mod:`st_hpo._results._confirm_stats`) are kept in the study's user attribute ``st_hpo.confirmed``, which
``st-hpo best --json`` shows as ``confirmed``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._definition._space import space_defaults
from st_hpo._definition._study import Study
from st_hpo._execution._plan import decide_slots
from st_hpo._execution._progress import Progress
from st_hpo._execution._storage import open_storage
from st_hpo._execution._workers import WorkerSpec, supervise
from st_hpo._results._confirm_stats import ConfigScore, paired_test, score
from st_hpo._results._confirm_verdict import confirmed_line as line
from st_hpo._results._read import StudyLocation, best_of, trial_params
from st_hpo._tracking._census import study_census
from st_hpo._tracking._schema import (
    ARGS_OVERRIDE_ATTR,
    BASELINE_ATTR,
    CONFIRM_KEY_ATTR,
    CONFIRM_SEED_ATTR,
    CONFIRMED_ATTR,
    ERROR_ATTR,
    PARENT_ATTR,
    QUEUED_KEY,
    SCORE_TEST_ATTR,
    TAG_SEED_INDEX_KEY,
    TAG_SOURCE_TRIAL_KEY,
    TAG_TRAINING_SEED_KEY,
    TEST_VALUE_ATTR,
    UNSAMPLED_ATTR,
)
from st_hpo._validation._test_objective import has_test
from st_hpo.exceptions import TrialError

if TYPE_CHECKING:
    from st_hpo._execution._session import StudySession

from st_hpo._tracking._mlflow_sync import sync_runs
from st_hpo.exceptions import UsageError

if TYPE_CHECKING:
    from st_hpo._results._handle import StudyHandle

__all__ = ["CONFIRMED_ATTR", "ConfirmResult", "confirm_at", "confirm_study", "confirmed_line"]

logger = logging.getLogger(__name__)

SEED_OFFSET = 1000
#: How the progress lines name the confirmation's training runs (numbered apart from the study's trials).
CONFIRM_NOUN = "confirm run"
#: A (configuration, seed) pair that failed this many times stops the confirmation with its error.
MAX_TRIES = 3


@dataclasses.dataclass(frozen=True)
class ConfirmResult:
    """What :func:`confirm_study` found; ``to_dict()`` is what the study keeps as ``st_hpo.confirmed``."""

    study_name: str
    objective: str
    direction: str
    seeds: list[int]  #: the training seeds every configuration was trained with
    #: the baseline first (when the study has a baseline trial), then the configurations in single-run order
    configs: list[ConfigScore]
    single_run_best: int | None  #: the study's best trial when the confirmation ran (one run each)
    #: the configuration that beats the other beyond seed noise ("trial N"), or None: the test found no
    #: winner, or nothing was compared (one configuration, no baseline)
    winner: str | None
    winner_trial: int | None
    #: the paired test of the best non-baseline configuration against the baseline, or, in a study without
    #: a baseline trial, against the runner-up (see :func:`st_hpo._results._confirm_stats.paired_test`)
    test: dict[str, Any]
    trials_run: int = 0  #: confirmation trials trained by this call
    interrupted: bool = False
    best_mean: str | None = None  #: the label of the best mean after confirmation ("trial N" or "baseline")
    best_mean_trial: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("interrupted")
        data.pop("trials_run")
        return data


@dataclasses.dataclass(frozen=True)
class _Config:
    key: str
    label: str
    trial: int | None
    params: dict[str, Any]
    baseline: bool
    unsampled: bool
    value: float | None


def confirm_study(study: Study, *, top: int = 3, seeds: int = 3, output_dir: str | Path | None = None,
                  storage: str | None = None, tracking_uri: str | None = None, study_name: str | None = None,
                  progress: bool = True, workers: int | None = None, gpus: str | None = None,
                  trials_per_gpu: int = 1, study_file: str | Path | None = None,
                  trial: int | None = None) -> ConfirmResult:
    """Train the ``top`` best configurations and the baseline (when the study has a baseline trial) again
    with ``seeds`` new seeds each.

    Runs in the study's storage and MLflow store (as given to ``run_study``): in this process, or with
    ``workers``/``gpus``/``trials_per_gpu`` on worker processes as ``run_study`` places them (they load
    ``study_file``), under the same budget, kill and restart rules as trials. Calling it again resumes
    (only missing pairs train) and reports. A Ctrl-C fails the running trials and returns with
    ``interrupted``. Raises NoResultError when the study has no complete trial.

    ``trial``: confirm that trial (and the baseline) instead of the ``top`` best; a multi-objective study
    needs it (a trial of its Pareto front), and is confirmed on its first objective.
    """
    from st_hpo._results._handle import open_study

    return open_study(study, output_dir=output_dir, storage=storage, tracking_uri=tracking_uri,
                      study_name=study_name).confirm(top=top, seeds=seeds, progress=progress, workers=workers,
                                                     gpus=gpus, trials_per_gpu=trials_per_gpu, study_file=study_file,
                                                     trial=trial)


def confirm_at(handle: StudyHandle, *, top: int = 3, seeds: int = 3, progress: bool = True,
               workers: int | None = None, gpus: str | None = None, trials_per_gpu: int = 1,
               study_file: str | Path | None = None, trial: int | None = None) -> ConfirmResult:
    """Confirm the best configurations (``trial``: that one) of the study ``handle`` holds (see :func:`confirm_study`)."""

    for name, value in (("top", top), ("seeds", seeds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name}={value!r} must be a positive whole number (e.g. {name}=3)", parameters=(name,))
    study, location, main = handle.study, handle.location, handle.optuna_study
    best = best_of(main, study.objective, trial)
    specs = _worker_specs(workers, gpus, trials_per_gpu, study_file)
    session = _open_companion(study, main, location,
                              trains_here=not (specs and any(s.gpu is not None for s in specs)))
    base_seed = int(session.validated.base_args.seed)
    seed_list = [base_seed + SEED_OFFSET + i for i in range(seeds)]
    configs = _configurations(main, session, top, trial)
    if specs:
        trials_run, interrupted = _run_on_workers(session, configs, seed_list, progress, specs, study.name,
                                                  str(Path(study_file).resolve()))
    else:
        trials_run, interrupted = _run(session, configs, seed_list, progress)
    result = _summarize(session.study, best, configs, seed_list, trials_run, interrupted)
    main.set_user_attr(CONFIRMED_ATTR, result.to_dict())
    if session.tracker is not None:
        sync_runs(session.tracker, session.study, study.objective)
    return result


def _worker_specs(workers: int | None, gpus: str | None, trials_per_gpu: int, study_file: Any) -> list[Any]:
    """The worker slots of a confirmation on workers (as ``run_study`` plans them); [] to run in this process."""
    slots = decide_slots(workers=workers, gpus=gpus, trials_per_gpu=trials_per_gpu, study_file=study_file)
    if slots and study_file is None:
        raise UsageError("workers need the study file to load: pass study_file=PATH (or use the CLI)")
    return [WorkerSpec(slot.name, slot.gpu) for slot in slots]


def companion_definition(study: Study) -> Study:
    """The definition of the companion study ``<name>.confirm``: the study's, with nothing of its own queue
    (baseline, warm start), no pruning, and one try per queued pair at a time (a failed pair is queued
    again by :func:`confirm_study`, never replaced by a sampled configuration)."""
    if study.is_multi_objective:  # a trial of the front is confirmed on the first objective (its quality)
        study = study.replace(objective=study.objectives[0], direction=study.directions[0], constraints=None)
    return study.replace(name=f"{study.name}.confirm", experiment_name=study.experiment, pruner="none",
                         baseline=False, enqueue=(), keep_best_model=False, max_failures_in_a_row=1)


def join_confirmation(study: Study, *, worker_name: str, budget: int, output_dir: str | Path, storage: str,
                      tracking_uri: str | None, progress: bool = True) -> Any:
    """In a worker process started by :func:`confirm_study`: run the companion study's queued pairs until
    ``budget`` of its trials have finished; returns the loop's result."""
    from st_hpo._execution._loop import work
    from st_hpo._execution._session import SessionOptions
    from st_hpo._execution._trial import WorkerInfo
    from st_hpo._results._confirm_session import ConfirmSession

    options = SessionOptions(output_dir=output_dir, storage=storage, tracking_uri=tracking_uri, role="worker",
                             worker_name=worker_name)
    session = ConfirmSession.open(companion_definition(study), options)
    bar = Progress(budget=budget, enabled=progress, worker=worker_name, noun=CONFIRM_NOUN)
    return work(session, budget=budget, timeout=None, worker=WorkerInfo(name=worker_name), progress=bar)


def _open_companion(study: Study, main: Any, location: StudyLocation, *, trains_here: bool = True) -> Any:
    """The companion study ``<name>.confirm``, attached to the study's MLflow parent run."""
    import optuna

    from st_hpo._execution._session import SessionOptions
    from st_hpo._results._confirm_session import ConfirmSession

    name = f"{study.name}.confirm"
    companion = optuna.create_study(study_name=name, storage=open_storage(location.storage),
                                    load_if_exists=True, direction=main.directions[0].name.lower(),
                                    pruner=optuna.pruners.NopPruner())
    if main.user_attrs.get(PARENT_ATTR):
        companion.set_user_attr(PARENT_ATTR, main.user_attrs[PARENT_ATTR])
    companion.set_user_attr(QUEUED_KEY, True)  # nothing of the study's own queue (baseline, warm start)
    options = SessionOptions(output_dir=location.output_dir / "confirm", storage=location.storage,
                             tracking_uri=location.tracking_uri, trains_here=trains_here)
    return ConfirmSession.open(companion_definition(study), options)


def _configurations(main: Any, session: StudySession, top: int, only: int | None = None) -> list[_Config]:
    """The baseline (the base arguments, as the baseline trial ran them), when the study has a complete
    baseline trial, and the ``top`` best other trials.

    A study without one (``baseline=False``, or a baseline that never completed) confirms only what it has:
    its base arguments may not even train (a loss factory that reads a searched ``loss.`` value)."""
    trials = [t for t in main.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    base_trial = next((t for t in trials if t.user_attrs.get(BASELINE_ATTR)), None)
    configs = []
    if base_trial is not None:
        defaults = space_defaults(session.definition.space, session.validated.base_args)
        configs.append(_Config("baseline", "baseline", base_trial.number, defaults or {}, True, defaults is None,
                               base_trial.values[0]))
    others = sorted((t for t in trials if not t.user_attrs.get(BASELINE_ATTR)), key=lambda t: t.values[0],
                    reverse=main.directions[0].name == "MAXIMIZE")
    if only is not None:  # one picked trial (``--trial N``): it alone, beside the baseline
        others, top = [t for t in others if t.number == only], 1
    for t in others[:top]:
        configs.append(_Config(str(t.number), f"trial {t.number}", t.number, trial_params(t), False, False,
                               t.values[0]))
    return configs


def _queue(session: StudySession, configs: list[_Config], seeds: list[int]) -> int:
    """Queue every (configuration, seed) pair that has no complete, queued or running trial; returns how
    many pairs are not complete yet."""
    study = session.study
    trials = study.get_trials(deepcopy=False)
    base = session.validated.base_args
    missing = 0
    for config in configs:
        for index, seed in enumerate(seeds):
            mine = [t for t in trials if t.user_attrs.get(CONFIRM_KEY_ATTR) == config.key
                    and t.user_attrs.get(CONFIRM_SEED_ATTR) == seed]
            if any(t.state.name == "COMPLETE" for t in mine):
                continue
            missing += 1
            if any(t.state.name in ("WAITING", "RUNNING") for t in mine):
                continue
            failed = [t for t in mine if t.state.name in ("FAIL", "PRUNED")]
            if len(failed) >= MAX_TRIES:
                error = failed[-1].user_attrs.get(ERROR_ATTR, "unknown error")
                raise TrialError(f"the confirmation of {config.label} with seed {seed} failed {len(failed)} times "
                                 f"(last: {error.splitlines()[0][:300]}); fix the cause and run st-hpo confirm again")
            override = {"seed": seed, **({"data_seed": seed} if getattr(base, "data_seed", None) is not None else {})}
            attrs = {CONFIRM_KEY_ATTR: config.key, CONFIRM_SEED_ATTR: seed, TAG_SEED_INDEX_KEY: index,
                     TAG_TRAINING_SEED_KEY: seed,
                     TAG_SOURCE_TRIAL_KEY: "baseline" if config.trial is None else config.trial,
                     ARGS_OVERRIDE_ATTR: override}
            if has_test(session.definition):
                attrs[SCORE_TEST_ATTR] = True
            if config.baseline:
                attrs[BASELINE_ATTR] = True
                if config.unsampled:
                    attrs[UNSAMPLED_ATTR] = True
            study.enqueue_trial(dict(config.params), user_attrs=attrs, skip_if_exists=False)
    return missing


def _run(session: StudySession, configs: list[_Config], seeds: list[int], progress: bool) -> tuple[int, bool]:
    """Run the missing pairs with the study's trial loop; returns (trials run, interrupted)."""
    from st_hpo._execution._loop import work
    from st_hpo._execution._trial import WorkerInfo

    ran = 0
    while True:
        missing = _queue(session, configs, seeds)
        if not missing:
            return ran, False
        finished = study_census(session.study).finished
        budget = finished + missing
        bar = Progress(budget=budget, enabled=progress, noun=CONFIRM_NOUN)
        if ran == 0:
            bar.message(f"confirming {_what(configs)} with {len(seeds)} seed(s) each: {missing} training run(s) "
                        "to go")
        loop = work(session, budget=budget, timeout=None, worker=WorkerInfo(name="main"), progress=bar)
        ran += loop.trials_run
        if loop.interrupted:
            return ran, True


def _what(configs: list[_Config]) -> str:
    """What a confirmation trains, in words: with the baseline, or (a study without one) the configurations
    compared with each other."""
    others = sum(not c.baseline for c in configs)
    if any(c.baseline for c in configs):
        return f"{others} configuration(s) and the baseline"
    return (f"{others} configuration(s) (the study has no baseline trial: "
            + ("they are compared with each other)" if others > 1 else "nothing to compare with; --top 2 or more "
               "compares configurations with each other)"))


def _run_on_workers(session: StudySession, configs: list[_Config], seeds: list[int], progress: bool,
                    specs: list[Any],
                    study_name: str, study_file: str) -> tuple[int, bool]:
    """Run the missing pairs on worker processes (``st-hpo worker --confirm-of``); (trials run, interrupted)."""
    ran = 0
    extra = ["--confirm-of", study_name] + ([] if progress else ["--no-progress"])
    while True:
        missing = _queue(session, configs, seeds)
        if not missing:
            return ran, False
        finished = study_census(session.study).finished
        budget = finished + missing
        bar = Progress(budget=budget, enabled=progress, noun=CONFIRM_NOUN)
        bar.message(f"confirming on {len(specs)} worker(s) ({', '.join(s.name for s in specs)}): {missing} "
                    "training run(s) to go")
        _, interrupted, stopped = supervise(session, study_file=study_file, specs=specs, budget=budget,
                                            extra_args=extra, progress=bar)
        if stopped and not interrupted:  # the workers died or gave up: starting them again would too
            raise TrialError(f"the confirmation stopped: {stopped}; fix the cause and run st-hpo confirm again")
        now = study_census(session.study).finished
        ran += now - finished
        if interrupted:
            return ran, True


def _summarize(companion: Any, best: Any, configs: list[_Config], seeds: list[int], trials_run: int,
               interrupted: bool) -> ConfirmResult:
    done = [t for t in companion.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    scores = []
    for config in configs:
        mine = [t for t in done if t.user_attrs.get(CONFIRM_KEY_ATTR) == config.key]
        by_seed = {t.user_attrs[CONFIRM_SEED_ATTR]: float(t.value) for t in mine}
        tests = {t.user_attrs[CONFIRM_SEED_ATTR]: v for t in mine if (v := test_score_of(t)) is not None}
        scores.append(score(config.label, config.trial, config.baseline, config.params, by_seed, seeds,
                            config.value, tests))
    sign = 1.0 if best.direction == "maximize" else -1.0
    ranked = sorted((s for s in scores if s.mean is not None), key=lambda s: sign * s.mean, reverse=True)
    top = ranked[0] if ranked else None
    contenders = [s for s in ranked if not s.baseline]
    baseline = next((s for s in scores if s.baseline), None)
    against = baseline if baseline is not None else (contenders[1] if len(contenders) > 1 else None)
    if contenders and against is not None:
        test = paired_test(contenders[0], against, best.direction)
    else:
        why = ("no configuration besides the baseline was confirmed" if baseline is not None else
               "the study has no baseline trial and one configuration was confirmed: nothing to compare it with "
               "(st-hpo confirm --top 2 or more compares configurations with each other)")
        test = {"method": "paired t-test", "line": why, "p_value": None, "beats": None, "beats_baseline": None,
                "compared": contenders[0].label if contenders else None,
                "against": baseline.label if baseline is not None else None}
    winner = contenders[0] if contenders and top is contenders[0] and test.get("beats") else None
    return ConfirmResult(study_name=best.study_name, objective=best.objective, direction=best.direction,
                         seeds=seeds, configs=scores, single_run_best=best.number,
                         winner=winner.label if winner else None, winner_trial=winner.trial if winner else None,
                         test=test, trials_run=trials_run, interrupted=interrupted,
                         best_mean=top.label if top else None, best_mean_trial=top.trial if top else None)


def test_score_of(trial: Any) -> float | None:
    """The confirmation trial's objective on the study's test set, when it has one.

    The one place a per-trial test score enters the confirmation: it reads the trial's
    ``st_hpo.test_value`` user attribute, which a study with a test set sets; None otherwise.
    """
    value = trial.user_attrs.get(TEST_VALUE_ATTR)
    return None if value is None else float(value)


def confirmed_line(confirmed: dict[str, Any] | None, single_run_best: int) -> str | None:
    """``st-hpo best``'s note on the confirmation: see :func:`st_hpo._results._confirm_verdict.confirmed_line`."""
    return line(confirmed, single_run_best)
