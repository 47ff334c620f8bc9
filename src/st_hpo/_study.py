"""The study definition: what a study file builds, checked for the mistakes that need no model to find."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from st_hpo.exceptions import StudyDefinitionError

if TYPE_CHECKING:  # heavy imports only for type checkers
    import optuna
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments
    from sentence_transformers.evaluation import SentenceEvaluator

__all__ = ["Study", "PRUNER_NAMES", "SAMPLER_NAMES"]

#: Pruners a study (or ``st-hpo run --pruner``) may name instead of passing an Optuna pruner object.
PRUNER_NAMES = ("median", "successive-halving", "hyperband", "patient", "none")
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
        model: a hub id or local path loaded with ``SentenceTransformer`` (once per process; every trial
            gets a fresh copy of its weights), or a callable ``(params) -> SentenceTransformer`` called
            once per trial with the trial's sampled values.
        train_dataset: a ``datasets.Dataset``, or a zero-argument callable that returns one (called once
            per process, not once per trial).
        eval_dataset: like ``train_dataset``; handed to ``evaluator`` when that is a callable, and to the
            trainer only when the objective is the eval loss.
        loss: a loss class (built as ``loss(model, **loss_params)`` where ``loss_params`` are the sampled
            ``loss.<name>`` values), or a callable ``(model, params) -> torch.nn.Module``. A new loss
            module is built for every trial.
        evaluator: a ``SentenceEvaluator``, or a callable ``(eval_dataset) -> SentenceEvaluator``.
        objective: the metric the evaluator reports that the study optimises, e.g.
            ``"sts-dev_spearman_cosine"`` (the trainer's ``eval_`` prefix is optional), or ``"eval_loss"``.
        direction: ``"maximize"`` or ``"minimize"`` the objective.
        args: the base ``SentenceTransformerTrainingArguments`` (or a dict of its fields). Never mutated:
            each trial gets a copy built with ``dataclasses.replace`` and its sampled values.
        space: a dict from names to Optuna distributions, or a define-by-run callable
            ``(trial) -> dict`` for conditional spaces. Plain names are training-argument fields; names
            with a ``loss.`` or ``model.`` prefix go to the loss and model factories.
        n_trials: how many finished (complete or pruned) trials the study should reach in total.
        sampler: an Optuna sampler, or one of ``"tpe"`` (default), ``"random"``, ``"qmc"``.
        pruner: an Optuna pruner, or one of ``"median"`` (default), ``"successive-halving"``,
            ``"hyperband"``, ``"patient"``, ``"none"``. Pruning needs evaluations during training
            (``eval_strategy="steps"`` or ``"epoch"`` in ``args``).
        seed: seeds the sampler (the training seed is ``args.seed``).
        experiment_name: the MLflow experiment; defaults to ``name``.
        baseline: run the base arguments unchanged as the first trial, so reviews show the gain over
            the starting point.
        enqueue: known configurations (dicts of space names to values) to try first (warm start).
        intermediate_eval_rows: evaluate the evaluations *during* training (the ones the pruner sees) on a
            fixed, seeded subset of this many eval rows, and the final evaluation of every trial that
            finishes on the whole eval set. Cuts the cost of a dense evaluation cadence. Needs
            ``evaluator`` to be a callable ``(eval_dataset) -> evaluator`` (or the objective
            ``eval_loss``). In MLflow the subset's values are the metrics ``objective_subset`` and
            ``subset_<metric>``; ``objective`` is always measured on the whole eval set.
        keep_best_model: save the fine-tuned model of every trial that beats all complete trials so far
            to ``<output-dir>/trials/trial-N/model`` (a ``SentenceTransformer`` folder), and delete the
            saved models of trials that are no longer the best; so the best trial's model is on disk
            when the study ends, without retraining. ``st-hpo best`` shows where.
        max_failures_in_a_row: a worker stops when this many of its trials have failed one after the
            other (every configuration out of GPU memory, a broken data pipeline, a GPU in an error
            state), instead of filling the storage and MLflow with failed trials; the command then exits
            non-zero with the last trial's error. Failed trials never count towards ``n_trials``.
            ``None``: never stop. The default, 10, is seldom reached by chance: where half the space
            fails at random (the largest batch size runs out of memory), a run of 5 failures comes about
            once in 64 trials, a run of 10 about once in 2,000.
        test_dataset: a held-out test set (same forms as ``eval_dataset``), never used to choose anything:
            when the study reaches its budget (and with ``st-hpo test``) the kept best model and the base
            model are scored on it, since the best trial's dev score is optimistic (it was picked on it).
        test_evaluator: the evaluator for ``test_dataset`` (an evaluator, or a callable
            ``(test_dataset) -> evaluator``); defaults to the ``evaluator`` factory applied to the test set.
        test_objective: the test evaluator's metric to report; by default the objective's metric (the same
            name, or the one name ending like it after the evaluator's prefix, e.g. ``sts-test_spearman_cosine``).
    """

    name: str
    model: str | Callable[[dict[str, Any]], SentenceTransformer]
    train_dataset: Dataset | Callable[[], Dataset]
    eval_dataset: Dataset | Callable[[], Dataset] | None = None
    loss: type | Callable[[SentenceTransformer, dict[str, Any]], torch.nn.Module]
    evaluator: SentenceEvaluator | Callable[[Dataset], SentenceEvaluator]
    objective: str
    direction: Direction = "maximize"
    args: SentenceTransformerTrainingArguments | Mapping[str, Any] = dataclasses.field(default_factory=dict)
    space: Mapping[str, Any] | Callable[[optuna.Trial], dict[str, Any]]
    n_trials: int = 20
    sampler: optuna.samplers.BaseSampler | str | None = None
    pruner: optuna.pruners.BasePruner | str | None = None
    seed: int | None = None
    experiment_name: str | None = None
    baseline: bool = True
    enqueue: Sequence[Mapping[str, Any]] = ()
    intermediate_eval_rows: int | None = None
    keep_best_model: bool = True
    max_failures_in_a_row: int | None = 10
    test_dataset: Dataset | Callable[[], Dataset] | None = None
    test_evaluator: SentenceEvaluator | Callable[[Dataset], SentenceEvaluator] | None = None
    test_objective: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise StudyDefinitionError("Study(name=...) must be a non-empty string, e.g. name='stsb-minilm'")
        if any(ch in self.name for ch in "/\\"):
            raise StudyDefinitionError(
                f"Study name {self.name!r} contains a path separator; it names a folder, use e.g. "
                f"{self.name.replace('/', '-')!r}"
            )
        if self.direction not in ("maximize", "minimize"):
            raise StudyDefinitionError(
                f"direction={self.direction!r} is not allowed; use 'maximize' or 'minimize'"
            )
        if not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise StudyDefinitionError(f"n_trials={self.n_trials!r} must be a positive integer")
        if not isinstance(self.objective, str) or not self.objective:
            raise StudyDefinitionError(
                "objective must name a metric the evaluator reports, e.g. 'sts-dev_spearman_cosine'"
            )
        if not (callable(self.space) or isinstance(self.space, Mapping)):
            raise StudyDefinitionError(
                "space must be a dict of Optuna distributions or a callable (trial) -> dict, "
                f"not {type(self.space).__name__}"
            )
        if isinstance(self.sampler, str) and self.sampler not in SAMPLER_NAMES:
            raise StudyDefinitionError(
                f"sampler={self.sampler!r} is not known; use one of {', '.join(SAMPLER_NAMES)} "
                "or pass an optuna.samplers object"
            )
        if isinstance(self.pruner, str) and self.pruner not in PRUNER_NAMES:
            raise StudyDefinitionError(
                f"pruner={self.pruner!r} is not known; use one of {', '.join(PRUNER_NAMES)} "
                "or pass an optuna.pruners object"
            )
        rows = self.intermediate_eval_rows
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
            raise StudyDefinitionError(
                f"intermediate_eval_rows={rows!r} must be a positive number of eval rows (or None: all of them)"
            )
        limit = self.max_failures_in_a_row
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise StudyDefinitionError(
                f"max_failures_in_a_row={limit!r} must be a positive number of trials (or None: never stop)"
            )
        if self.test_objective is not None and (not isinstance(self.test_objective, str) or not self.test_objective):
            raise StudyDefinitionError(f"test_objective={self.test_objective!r} must name a metric of the test "
                                       "evaluator, e.g. 'sts-test_spearman_cosine' (or be left out)")
        if not isinstance(self.keep_best_model, bool):
            raise StudyDefinitionError(f"keep_best_model={self.keep_best_model!r} must be True or False")
        if not (isinstance(self.model, str) or callable(self.model)):
            raise StudyDefinitionError(
                "model must be a hub id or local path, or a callable (params) -> SentenceTransformer"
            )
        if not callable(self.loss):
            raise StudyDefinitionError(
                "loss must be a loss class (e.g. losses.CoSENTLoss) or a callable (model, params) -> module"
            )

    @property
    def experiment(self) -> str:
        """The MLflow experiment name."""
        return self.experiment_name or self.name

    def replace(self, **changes: Any) -> Study:
        """A copy of this study with some fields changed."""
        return dataclasses.replace(self, **changes)
