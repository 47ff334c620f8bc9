"""The study definition: what a study file builds, checked for the mistakes that need no model to find."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from st_hpo._definition._objectives import check_objectives as _check_objectives
from st_hpo._definition._objectives import normalise_objectives as _normalise_objectives
from st_hpo._kinds import KIND_NAMES, kind_of_model
from st_hpo._kinds._base import is_model_factory, is_module
from st_hpo.exceptions import StudyDefinitionError

if TYPE_CHECKING:  # heavy imports only for type checkers
    import optuna
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments
    from sentence_transformers.evaluation import SentenceEvaluator

__all__ = ["Study", "PRUNER_NAMES", "SAMPLER_NAMES", "is_module", "is_model_factory"]

#: Pruners a study (or ``st-hpo run --pruner``) may name instead of passing an Optuna pruner object.
PRUNER_NAMES = ("median", "successive-halving", "hyperband", "patient", "none")
#: The pruner of a study that names none (``pruner=None``): change it here, and only here. Chosen by
#: measurement (benchmarks/study_time.py, 10 trials: the recipe's best within 0.0004 at 0.45x its wall time,
#: where ``median`` took 0.94x; benchmarks/pruning.py: the unpruned best at 0.51x the steps).
DEFAULT_PRUNER = "successive-halving"
#: The default of ``Study.checkpoint_every_minutes``: at most one resumable checkpoint per this many minutes
#: of a trial's training. Chosen by measurement (benchmarks/results/checkpoint_cost.md): MiniLM on a loaded
#: 2-core CPU, a checkpoint at every evaluation took 7.2% of trial wall time (over the 5% allowed); one
#: save took 2.3 s, so saves stay under 5% of training at one per 0.75 min or more: rounded up to 1 min.
CHECKPOINT_EVERY_MINUTES = 1.0
#: Samplers a study may name instead of passing an Optuna sampler object.
SAMPLER_NAMES = ("tpe", "random", "qmc")

Direction = Literal["maximize", "minimize"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Study:
    """A hyperparameter study over sentence-transformers training.

    A study file defines ``study = st_hpo.Study(...)`` at module level; ``st-hpo run FILE`` runs it.

    Args:
        name: the Optuna study name, the MLflow experiment name (unless ``experiment_name`` is given) and
            the default output folder ``st-hpo-runs/<name>/``.
        model: a hub id or local path loaded with the kind's model class (``SentenceTransformer``,
            ``CrossEncoder``, ...; once per process, every trial gets a fresh copy of its weights), a model
            instance (never changed: every trial trains a copy of its weights), or a callable
            ``(params) -> model`` called once per trial with the trial's sampled values.
        train_dataset: a ``datasets.Dataset``, or a zero-argument callable that returns one (called once
            per process, not once per trial); or, for multi-dataset training, several datasets named by
            their keys: a ``DatasetDict`` or a dict of datasets (or of callables returning one), or a
            callable returning such a mapping. The trainer draws batches from one dataset at a time, as
            ``multi_dataset_batch_sampler`` says (searchable like any argument). A ``DatasetDict`` keyed only
            by split names (``train``, ``validation``, ``test``, ...) is refused: it is one dataset's splits.
        eval_dataset: like ``train_dataset``; handed to ``evaluator`` when that is a callable (as it is: a
            mapping for several datasets), and to the trainer only when the objective is the eval loss
            (of one eval dataset only).
        loss: a loss class (built as ``loss(model, **loss_params)`` where ``loss_params`` are the sampled
            ``loss.<name>`` values), or a callable ``(model, params) -> torch.nn.Module``; for several
            training datasets also a dict of those keyed by dataset name (its keys must be the dataset
            names; a class in it gets the sampled ``loss.<dataset>.<name>`` values), or a callable
            ``(model, params) -> dict`` of loss modules. One loss (not a dict) trains every dataset. A new
            loss module is built for every trial, so a loss instance (bound to one model) is refused.
        evaluator: a ``SentenceEvaluator``, or a callable ``(eval_dataset) -> SentenceEvaluator``; may be
            left out (None) when the objective is ``"eval_loss"``.
        objective: the metric the evaluator reports that the study optimises, e.g.
            ``"sts-dev_spearman_cosine"`` (the trainer's ``eval_`` prefix is optional), or ``"eval_loss"``
            (the loss on ``eval_dataset``, computed by the trainer; needs no evaluator). A list of names makes
            a multi-objective study (quality against cost): each an evaluator's metric or a cost st-hpo
            measures (``"cost.encode_ms"``, ``"cost.embedding_dim"``, ...: ``st_hpo._definition._costs``);
            the first is measured during training (trials are pruned on it), so it is the evaluator's metric
            (or ``"eval_loss"``). Its answer is the Pareto set of the feasible complete trials.
        direction: ``"maximize"`` or ``"minimize"`` the objective; default ``"minimize"`` for ``"eval_loss"``
            (a loss, which is refused with ``"maximize"``), ``"maximize"`` for an evaluator's metric. With
            several objectives, a list of one direction per objective (default: ``"minimize"`` for a loss or
            a cost, ``"maximize"`` for an evaluator's metric).
        constraints: ``{name: comparison}``, e.g. ``{"cost.embedding_dim": "<= 256"}`` (a cost or an
            evaluator's metric; comparisons ``<=``, ``<``, ``>=``, ``>`` with a number): a complete trial that
            breaks one is infeasible (the sampler is told through Optuna's constraints); it is never the best
            nor in the Pareto set.
        args: the base training arguments of the kind (``SentenceTransformerTrainingArguments``,
            ``CrossEncoderTrainingArguments``, ...), or a dict of their fields. Never mutated:
            each trial gets a copy built with ``dataclasses.replace`` and its sampled values.
        space: a dict from names to Optuna distributions, or a define-by-run callable
            ``(trial) -> dict`` for conditional spaces. Plain names are training-argument fields; names
            with a ``loss.`` or ``model.`` prefix go to the loss and model factories.
        n_trials: how many finished (complete or pruned) trials the study should reach in total.
        sampler: an Optuna sampler, or one of ``"tpe"`` (default), ``"random"``, ``"qmc"``.
        pruner: an Optuna pruner, or one of ``"successive-halving"`` (the default, :data:`DEFAULT_PRUNER`),
            ``"median"``, ``"hyperband"``, ``"patient"``, ``"none"``. Base ``args`` that set no
            evaluation cadence (``eval_strategy`` left at ``"no"``) get st-hpo's: trials evaluate where the
            pruner can decide (successive halving and hyperband at 1/9 and 1/3 of training, median and
            patient at 25%, 50% and 75%, an Optuna pruner object at 25%, 50% and 75%) and at the end. A
            cadence set in ``args`` is kept (validation says what it costs next to st-hpo's schedule).
        seed: seeds the sampler (the training seed is ``args.seed``).
        experiment_name: the MLflow experiment; defaults to ``name``.
        baseline: run the base arguments unchanged as the first trial, so reviews show the gain over
            the starting point.
        enqueue: known configurations (dicts of space names to values) to try first (warm start).
        intermediate_eval_rows: evaluate the evaluations *during* training (the ones the pruner sees) on a
            fixed, seeded subset of this many eval rows, and the final evaluation of every trial that
            finishes on the whole eval set. Needs ``evaluator`` to be a callable ``(eval_dataset) ->
            evaluator`` (or the objective ``eval_loss``). ``"auto"`` (the default): an eval set of 1,000
            rows or more gets a subset of half its rows, at most 500 (on STSb dev, 500 rows kept the order
            of every pair of models 0.01 or more apart: ``benchmarks/results/eval_subset.md``); smaller
            eval sets, and an evaluator instance (which holds its own data), use all rows. ``None``: all
            rows. In MLflow the subset's values are the metrics ``objective_subset`` and
            ``subset_<metric>``; ``objective`` is always measured on the whole eval set.
        keep_best_model: save the fine-tuned model of every trial that beats all complete trials so far
            to ``<output-dir>/trials/trial-N/model`` (a ``SentenceTransformer`` folder), and delete the
            saved models of trials that are no longer the best; so the best trial's model is on disk
            when the study ends, without retraining. ``st-hpo best`` shows where. With several objectives:
            the model of every trial that enters the Pareto front, deleted when the trial leaves it.
        max_failures_in_a_row: a worker stops when this many of its trials have failed one after the
            other (a broken data pipeline, a GPU in an error state), instead of filling the storage and
            MLflow with failed trials; the command then exits non-zero with the last trial's error. Failed
            trials never count towards ``n_trials``. A trial that runs out of memory is no failure: it
            counts neither here nor toward ``n_trials``, and the sampler learns from it. ``None``: never
            stop. The default, 10, is seldom reached by chance: where half the space fails at random, a
            run of 5 failures comes about once in 64 trials, a run of 10 about once in 2,000.
        resume_interrupted: a trial saves a resumable checkpoint (the trainer's own: model, optimizer,
            scheduler, RNG and data-order state) at each of its evaluation points during training, and a
            trial stopped from outside (its worker killed, SIGTERM, Ctrl-C) is queued again once, as a new
            trial that resumes from its last checkpoint instead of step 0 (``resumed_from`` in
            ``st-hpo status``). ``False``: no checkpoints; an interrupted trial is lost.
        max_resumes: how many times one configuration is resumed after interruptions (a retry that is
            interrupted again is retried from its newer checkpoint), at most.
        checkpoint_every_minutes: with ``resume_interrupted``, at most one checkpoint per this many minutes
            of a trial's training (at the first evaluation point after they have passed); ``0``: at every
            evaluation point. A checkpoint costs a save of the model and its optimizer state.
        test_dataset: a held-out test set (same forms as ``eval_dataset``), never used to choose anything:
            when the study reaches its budget (and with ``st-hpo test``) the kept best model and the base
            model are scored on it, since the best trial's dev score is optimistic (it was picked on it).
        test_evaluator: the evaluator for ``test_dataset`` (an evaluator, or a callable
            ``(test_dataset) -> evaluator``); defaults to the ``evaluator`` factory applied to the test set.
        test_objective: the test evaluator's metric to report; by default the objective's metric (the same
            name, or the one name ending like it after the evaluator's prefix, e.g. ``sts-test_spearman_cosine``).
        kind: the model kind, ``"sentence-transformer"``, ``"cross-encoder"``, ``"sparse-encoder"`` or
            ``"multi-vector-encoder"``, for a study whose other parts do not say it. By default the kind comes
            from ``args`` (a ``CrossEncoderTrainingArguments`` object trains a CrossEncoder), from a model
            instance, or from the class a model factory returns; SentenceTransformer otherwise. The kind
            picks the model class that loads ``model``, the arguments class, the trainer, and how the kept
            model is saved, loaded and logged.
        adjust_mini_batch: when a training step runs out of memory, halve the ``mini_batch_size`` of the
            trial's GradCache losses (``CachedMultipleNegativesRankingLoss`` and the other ``Cached*`` losses
            of every kind; down to 1) and run the step again at the sampled batch size: the mini-batch
            changes memory and speed, not the result. Also when a loss factory fixes ``mini_batch_size``.
            ``False``: a Cached loss keeps the mini-batch it was built with.
    """

    name: str
    model: str | SentenceTransformer | Callable[[dict[str, Any]], SentenceTransformer]
    train_dataset: Dataset | Mapping[str, Dataset] | Callable[[], Dataset | Mapping[str, Dataset]]
    eval_dataset: Dataset | Mapping[str, Dataset] | Callable[[], Dataset | Mapping[str, Dataset]] | None = None
    loss: (type | Callable[[SentenceTransformer, dict[str, Any]], torch.nn.Module | Mapping[str, torch.nn.Module]]
           | Mapping[str, type | Callable[[SentenceTransformer, dict[str, Any]], torch.nn.Module]])
    evaluator: SentenceEvaluator | Callable[[Dataset], SentenceEvaluator] | None = None
    objective: str | Sequence[str]
    direction: Direction | Sequence[Direction] | None = None
    args: SentenceTransformerTrainingArguments | Mapping[str, Any] = dataclasses.field(default_factory=dict)
    space: Mapping[str, Any] | Callable[[optuna.Trial], dict[str, Any]]
    n_trials: int = 20
    sampler: optuna.samplers.BaseSampler | str | None = None
    pruner: optuna.pruners.BasePruner | str | None = None
    seed: int | None = None
    experiment_name: str | None = None
    baseline: bool = True
    enqueue: Sequence[Mapping[str, Any]] = ()
    intermediate_eval_rows: int | Literal["auto"] | None = "auto"
    keep_best_model: bool = True
    max_failures_in_a_row: int | None = 10
    resume_interrupted: bool = True
    max_resumes: int = 3
    checkpoint_every_minutes: float = CHECKPOINT_EVERY_MINUTES
    test_dataset: Dataset | Callable[[], Dataset] | None = None
    test_evaluator: SentenceEvaluator | Callable[[Dataset], SentenceEvaluator] | None = None
    test_objective: str | None = None
    kind: str | None = None
    adjust_mini_batch: bool = True
    constraints: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        _normalise_objectives(self)
        if self.direction is None:  # a loss goes down, a metric up
            object.__setattr__(self, "direction", "minimize" if self.uses_eval_loss else "maximize")
        _check_scalars(self)
        _check_objectives(self)
        _check_resume(self)
        _check_choices(self)
        _check_parts(self)

    @property
    def uses_eval_loss(self) -> bool:
        """True when the (first) objective is the trainer's eval loss (which needs no evaluator)."""
        return self.objectives[0] in ("eval_loss", "loss")

    @property
    def objectives(self) -> tuple[str, ...]:
        """The objective names, in order (one for a single-objective study)."""
        return tuple(self.objective) if self.is_multi_objective else (self.objective,)  # type: ignore[arg-type]

    @property
    def directions(self) -> tuple[str, ...]:
        """One direction per objective."""
        return tuple(self.direction) if self.is_multi_objective else (self.direction,)  # type: ignore[arg-type]

    @property
    def is_multi_objective(self) -> bool:
        """True when the study optimises several objectives (a Pareto set, not one best trial)."""
        return not isinstance(self.objective, str)

    @property
    def experiment(self) -> str:
        """The MLflow experiment name."""
        return self.experiment_name or self.name

    def replace(self, **changes: Any) -> Study:
        """A copy of this study with some fields changed."""
        return dataclasses.replace(self, **changes)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_resume(study: Study) -> None:
    """The settings of resumable trials (``resume_interrupted`` is checked with the other flags)."""
    if not isinstance(study.max_resumes, int) or isinstance(study.max_resumes, bool) or study.max_resumes < 0:
        raise StudyDefinitionError(
            f"max_resumes={study.max_resumes!r} must be a number of retries, 0 or more (0: never resume)"
        )
    every = study.checkpoint_every_minutes
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not every >= 0:
        raise StudyDefinitionError(
            f"checkpoint_every_minutes={every!r} must be a number of minutes, 0 or more (0: at every evaluation)"
        )


def _check_scalars(study: Study) -> None:
    """Names, numbers and flags."""
    if not isinstance(study.name, str) or not study.name.strip():
        raise StudyDefinitionError("Study(name=...) must be a non-empty string, e.g. name='stsb-minilm'")
    if any(ch in study.name for ch in "/\\"):
        raise StudyDefinitionError(
            f"Study name {study.name!r} contains a path separator; it names a folder, use e.g. "
            f"{study.name.replace('/', '-')!r}"
        )
    if study.experiment_name is not None and (not isinstance(study.experiment_name, str)
                                              or not study.experiment_name.strip()):
        raise StudyDefinitionError(
            f"experiment_name={study.experiment_name!r} must be a non-empty string (or None: the study's name)"
        )
    if not _positive_int(study.n_trials):
        raise StudyDefinitionError(f"n_trials={study.n_trials!r} must be a positive whole number, e.g. n_trials=20")
    seed = study.seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise StudyDefinitionError(
            f"seed={seed!r} must be a whole number in [0, 2**32), e.g. seed=42 (or None: unseeded)"
        )
    rows = study.intermediate_eval_rows
    if rows is not None and rows != "auto" and not _positive_int(rows):
        raise StudyDefinitionError(
            f"intermediate_eval_rows={rows!r} must be a positive number of eval rows (or None: all of them, "
            "'auto': st-hpo decides)"
        )
    limit = study.max_failures_in_a_row
    if limit is not None and not _positive_int(limit):
        raise StudyDefinitionError(
            f"max_failures_in_a_row={limit!r} must be a positive number of trials (or None: never stop)"
        )
    for flag in ("keep_best_model", "baseline", "adjust_mini_batch", "resume_interrupted"):
        if not isinstance(getattr(study, flag), bool):
            raise StudyDefinitionError(f"{flag}={getattr(study, flag)!r} must be True or False")
    if study.test_objective is not None and (not isinstance(study.test_objective, str) or not study.test_objective):
        raise StudyDefinitionError(f"test_objective={study.test_objective!r} must name a metric of the test "
                                   "evaluator, e.g. 'sts-test_spearman_cosine' (or be left out)")


def _check_choices(study: Study) -> None:
    """Direction, objective, sampler, pruner, enqueue (several objectives: :mod:`st_hpo._definition._objectives`)."""
    if study.is_multi_objective:
        pass
    elif study.direction not in ("maximize", "minimize"):
        raise StudyDefinitionError(f"direction={study.direction!r} is not allowed; use 'maximize' or 'minimize'")
    elif study.uses_eval_loss and study.direction == "maximize":
        raise StudyDefinitionError(
            f"objective={study.objective!r} is the loss on the eval set, which training lowers: direction="
            "'maximize' would search for the worst model; use direction='minimize' (the default for a loss)")
    elif not isinstance(study.objective, str) or not study.objective:
        raise StudyDefinitionError(
            f"objective={study.objective!r}: the objective must name a metric the evaluator reports, e.g. "
            "'sts-dev_spearman_cosine', or be 'eval_loss'"
        )
    for what, names, base in (("sampler", SAMPLER_NAMES, "samplers.BaseSampler"),
                              ("pruner", PRUNER_NAMES, "pruners.BasePruner")):
        value = getattr(study, what)
        if value is None:
            continue
        if isinstance(value, str):
            if value not in names:
                raise StudyDefinitionError(f"{what}={value!r} is not known; use one of {', '.join(names)} "
                                           f"or pass an optuna.{what}s object")
            continue
        optuna = sys.modules.get("optuna")
        cls = getattr(getattr(optuna, f"{what}s", None), base.split(".")[1], None)
        if cls is None or not isinstance(value, cls):
            shown = value.__name__ if isinstance(value, type) else type(value).__name__
            raise StudyDefinitionError(
                f"{what}={shown} is not an Optuna {what} object; pass an instance (e.g. optuna.{what}s."
                f"{'TPESampler(seed=42)' if what == 'sampler' else 'MedianPruner()'}) or one of "
                f"{', '.join(names)}"
            )
    if isinstance(study.enqueue, (Mapping, str)) or not isinstance(study.enqueue, Sequence):
        raise StudyDefinitionError(
            f"enqueue={study.enqueue!r} must be a list of dicts of space names to values, e.g. "
            "enqueue=[{'learning_rate': 2e-5}]"
        )


def _check_parts(study: Study) -> None:
    """The model, data, loss, evaluator and space: the right kind of thing in each field."""
    model = study.model
    if is_module(model):
        if kind_of_model(model) is None:
            raise StudyDefinitionError(
                f"model is a {type(model).__name__} module, not a SentenceTransformer, CrossEncoder, SparseEncoder "
                "or MultiVectorEncoder; pass one of those, a hub id or local path, or a callable (params) -> model"
            )
    elif not (isinstance(model, str) or callable(model)):
        raise StudyDefinitionError(
            f"model={model!r} must be a hub id or local path, a model instance (SentenceTransformer, CrossEncoder, "
            "...), or a callable (params) -> model"
        )
    if study.kind is not None:
        if study.kind not in KIND_NAMES:
            raise StudyDefinitionError(f"kind={study.kind!r} is not a model kind; use one of {', '.join(KIND_NAMES)}")
    for what in ("train_dataset", "eval_dataset"):
        data = getattr(study, what)
        if data is None and what == "train_dataset":
            raise StudyDefinitionError("train_dataset=None: give a datasets.Dataset, or a callable returning one")
        if isinstance(data, (str, bytes)):
            raise StudyDefinitionError(
                f"{what}={data!r} is a string; give a datasets.Dataset or a callable returning one, e.g. "
                f"lambda: load_dataset({data!r}, split='train')"
            )
    _check_loss(study.loss)
    _check_evaluator(study)
    if not (callable(study.space) or isinstance(study.space, Mapping)):
        raise StudyDefinitionError(
            "space must be a dict of Optuna distributions or a callable (trial) -> dict, "
            f"not {type(study.space).__name__}"
        )


def _check_loss(loss: Any) -> None:
    """A loss class or factory, or a non-empty dict of them keyed by dataset name."""
    if isinstance(loss, Mapping):
        if not loss:
            raise StudyDefinitionError("loss={} has no losses; key one loss class per training dataset, e.g. "
                                       "loss={'sts': CoSENTLoss, 'pairs': MultipleNegativesRankingLoss}")
        for key, part in loss.items():
            if not isinstance(key, str) or not key or "." in key:
                raise StudyDefinitionError(f"loss has the key {key!r}; key each loss by the name of its training "
                                           "dataset (a non-empty string without dots)")
            _check_one_loss(part, f"loss[{key!r}]")
        return
    _check_one_loss(loss, "loss")


def _check_one_loss(loss: Any, what: str) -> None:
    if is_module(loss):
        name = type(loss).__name__
        raise StudyDefinitionError(
            f"{what}={name}(...) is a loss instance, bound to one model; pass the class ({what}={name}) or a "
            "callable (model, params) -> loss, so every trial gets a fresh loss for its own model"
        )
    if not callable(loss):
        raise StudyDefinitionError(
            f"{what}={loss!r} must be a loss class (e.g. losses.CoSENTLoss) or a callable (model, params) -> module"
            + (", or a dict of them keyed by dataset name" if what == "loss" else "")
        )


def _check_evaluator(study: Study) -> None:
    evaluator = study.evaluator
    if evaluator is None:
        if not study.uses_eval_loss:
            raise StudyDefinitionError(
                f"objective {study.objective!r} needs an evaluator that reports it, and evaluator is None; pass "
                "evaluator=... (a SentenceEvaluator or a callable (eval_dataset) -> evaluator), or use "
                "objective='eval_loss'"
            )
        return
    if isinstance(evaluator, type):
        raise StudyDefinitionError(
            f"evaluator={evaluator.__name__} is a class; pass an instance, or a callable (eval_dataset) -> "
            f"evaluator, e.g. evaluator=lambda ds: {evaluator.__name__}(...)"
        )
    if not callable(evaluator):
        raise StudyDefinitionError(
            f"evaluator{'=' + repr(evaluator) if isinstance(evaluator, (str, int, float)) else ''} is a "
            f"{type(evaluator).__name__}, not a SentenceEvaluator; pass one (or a callable "
            "(eval_dataset) -> evaluator)"
        )
