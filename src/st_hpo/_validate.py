"""Validation before any training: every mistake that can be found without spending a GPU second.

:func:`validate_study` checks the base arguments, the search space (names, the values it can produce,
conflicts with fixed arguments), the loss's parameters and dataset columns (one loss evaluation on two
rows), and that the evaluator really reports the objective metric (the evaluator run on a few rows).
Each problem is one :class:`~st_hpo.exceptions.StudyDefinitionError` naming the value, the rule and the fix.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import tempfile
from typing import Any

from st_hpo import _args, _space
from st_hpo._kinds import ModelKind
from st_hpo._resources import StudyResources
from st_hpo._study import Study
from st_hpo._test_score import check_test_objective
from st_hpo.exceptions import SearchSpaceError, StudyDefinitionError

__all__ = ["ValidatedStudy", "validate_study", "objective_key"]

logger = logging.getLogger(__name__)

#: Rows of the eval set the evaluator runs on to prove it reports the objective.
PROBE_ROWS = 16
#: Losses that regress a similarity score and need a 'score' or 'label' column.
LABELLED_LOSSES = {"CoSENTLoss", "CosineSimilarityLoss", "AnglELoss", "SoftmaxLoss", "ContrastiveLoss",
                   "OnlineContrastiveLoss", "BatchAllTripletLoss", "BatchHardTripletLoss",
                   "BatchSemiHardTripletLoss", "BatchHardSoftMarginTripletLoss", "MSELoss"}
LABEL_COLUMNS = ("label", "score")
#: The label columns the data collator takes, in its order (the first one present is the label).
COLLATED_LABEL_COLUMNS = ("label", "labels", "score", "scores")
#: Losses whose labels must lie in a range: (low, high, what the label is to the loss).
LABEL_RANGES = {
    "CosineSimilarityLoss": (-1.0, 1.0, "the target of the pairs' cosine similarity, which lies in [-1, 1]"),
    "ContrastiveLoss": (0.0, 1.0, "1 for a similar pair and 0 for a dissimilar one"),
    "OnlineContrastiveLoss": (0.0, 1.0, "1 for a similar pair and 0 for a dissimilar one (others are ignored)"),
}


@dataclasses.dataclass(frozen=True)
class ValidatedStudy:
    """A study that passed validation, with what validation worked out."""

    study: Study
    base_args: Any
    objective_metric: str  #: the key in the trainer's metrics, e.g. 'eval_sts-dev_spearman_cosine'
    space_names: frozenset[str]
    needs_eval_loss: bool
    evaluates_during_training: bool
    kind: ModelKind  #: the model kind the study trains (SentenceTransformer, CrossEncoder, ...)


def objective_key(objective: str) -> str:
    """The trainer's metric key for a study objective (the trainer prefixes metrics with 'eval_')."""
    return objective if objective.startswith("eval_") else f"eval_{objective}"


def validate_study(study: Study, resources: StudyResources, *, output_dir: str,
                   on_cpu: bool = False) -> ValidatedStudy:
    """Check everything about ``study`` that can be checked without training; raise on the first problem.

    ``on_cpu``: run the loss probe on the CPU, for a process that never trains (a supervisor whose
    workers own the GPUs), so that it holds no GPU memory.
    """
    kind, probe = _study_kind(study, resources)
    base_args = _args.build_base_args(study.args, output_dir=output_dir, args_class=kind.args_class())
    _args.check_base_values(base_args)
    names = _space.check_space(study.space, base_args)
    _space.check_enqueued(study.enqueue, study.space, base_args)
    losses = [study.replace(loss=option) for option in _space.loss_options(study.space)] or [study]
    for chosen in losses:  # each loss a `loss` Choice can give, else the study's
        _check_loss_params(chosen, names)
    key = objective_key(study.objective)
    needs_eval_loss = key == "eval_loss"
    train = resources.train_dataset
    if len(train) == 0:
        raise StudyDefinitionError("train_dataset is empty; give it at least one row")
    if resources.eval_dataset is not None and len(resources.eval_dataset) == 0:
        raise StudyDefinitionError("eval_dataset is empty; give it at least one row (or leave it out when the "
                                   "evaluator holds its own data)")
    if needs_eval_loss and resources.eval_dataset is None:
        raise StudyDefinitionError("objective 'eval_loss' needs an eval_dataset; add one to the Study")
    _space.check_prompts(study.space, base_args, train)
    params, model = probe or _probe(study, resources)  # one sample of the space: the model and loss of the checks
    _, loss_params, model_params = _args.split_params(params)
    _check_kind_of_parts(kind, study, resources)
    for chosen in losses:
        _check_loss_on_rows(chosen, resources, model, base_args, params if chosen is study else
                            {**params, "loss": chosen.loss}, loss_params, on_cpu=on_cpu)
    if not needs_eval_loss:
        _check_objective(study, resources, model, key)
    check_test_objective(study, resources, model)
    evaluates = evaluations_per_trial(base_args, len(train), study.pruner) > 1  # any before the end
    _check_cadence(study, resources, base_args, len(train))
    _check_checkpoints(base_args)
    _check_subset(study, resources, evaluates, needs_eval_loss)
    del model, probe
    return ValidatedStudy(study, base_args, key, frozenset(names), needs_eval_loss, evaluates, kind)


#: Fewer evaluations per trial than this leave a pruner too few points to compare trials at.
MIN_EVALS_FOR_PRUNING = 3


def evaluations_per_trial(base_args: Any, train_rows: int, pruner: Any = None) -> int:
    """How many evaluations every trial runs (the one at the end of training included), for the study's
    ``pruner`` (None: the default one)."""
    from st_hpo._callbacks import evaluation_fractions  # every trial evaluates on this grid

    return len(evaluation_fractions(base_args, train_rows, pruner))


def _pruner_name(pruner: Any) -> str:
    from st_hpo._study import DEFAULT_PRUNER

    return str(pruner or DEFAULT_PRUNER) if isinstance(pruner, str) or pruner is None else type(pruner).__name__


def _check_cadence(study: Study, resources: StudyResources, base_args: Any, train_rows: int) -> None:
    """Say what the evaluations cost: st-hpo's own schedule (base args with no cadence), or the cadence the
    user set next to what st-hpo's schedule would cost instead."""
    from st_hpo._callbacks import FALLBACK_FRACTIONS, pruner_fractions

    own = pruner_fractions(study.pruner)
    name = _pruner_name(study.pruner)
    if str(getattr(base_args.eval_strategy, "value", base_args.eval_strategy)) == "no":
        points = ", ".join(f"{f:.0%}" for f in own[:-1])
        if isinstance(study.pruner, str) or study.pruner is None or len(own) == 1:
            logger.info("trials evaluate %s (st-hpo's schedule for pruner %s)",
                        f"at {points} and the end of training" if points else "once, at the end of training", name)
        else:
            logger.warning("st-hpo cannot tell where pruner %s decides: trials evaluate at %s and the end of "
                           "training; set eval_strategy='steps' and eval_steps to choose other points", name,
                           ", ".join(f"{f:.0%}" for f in FALLBACK_FRACTIONS))
        return
    count = evaluations_per_trial(base_args, train_rows, study.pruner)
    rows = resources.subset_rows or (len(resources.eval_dataset) if resources.eval_dataset is not None else None)
    if rows is not None and count != len(own):
        (logger.warning if count > len(own) else logger.info)(
            "the base args evaluate %d times per trial on %d eval rows (%d x %d rows per trial); st-hpo's own "
            "schedule for pruner %s would evaluate %d times: leave eval_strategy unset to use it",
            count, rows, count, rows, name, len(own))
    if len(own) > 1 and count < MIN_EVALS_FOR_PRUNING:
        logger.warning(
            "the study has a pruner but a trial with the base args evaluates about %d time(s) during "
            "training, which leaves the pruner little to compare; leave eval_strategy unset (st-hpo evaluates "
            "where the pruner decides) or set eval_steps=0.125 (8 evaluations per trial)", count,
        )


def _check_checkpoints(base_args: Any) -> None:
    strategy = str(getattr(base_args.save_strategy, "value", base_args.save_strategy))
    if strategy == "no" or base_args.load_best_model_at_end:
        return
    every = f"every {base_args.save_steps:g} steps" if strategy == "steps" else f"at every {strategy}"
    logger.warning(
        "the base args save a checkpoint %s (save_strategy=%r, the transformers default when unset); st-hpo "
        "deletes a trial's checkpoints when it ends and keeps the best model itself, so they only cost time: "
        "set save_strategy='no'", every, strategy,
    )


def _check_subset(study: Study, resources: StudyResources, evaluates: bool, needs_eval_loss: bool) -> None:
    rows = study.intermediate_eval_rows
    if rows == "auto":  # st-hpo's choice: a subset only where it can build one and it pays
        if evaluates and resources.subset_rows is not None:
            logger.info("evaluations during training use %d of the %d eval rows (intermediate_eval_rows='auto'); "
                        "the final one of every trial uses all of them", resources.subset_rows,
                        len(resources.eval_dataset))
        return
    if rows is None:
        return
    from st_hpo._compat import evaluator_base

    if not needs_eval_loss and isinstance(study.evaluator, evaluator_base()):
        raise StudyDefinitionError(
            f"intermediate_eval_rows={rows} needs the evaluator as a callable (eval_dataset) -> evaluator, so "
            "st-hpo can build one on the subset; e.g. evaluator=lambda ds: EmbeddingSimilarityEvaluator("
            "ds['sentence1'], ds['sentence2'], ds['score'], name='sts-dev')"
        )
    if resources.eval_dataset is None:
        raise StudyDefinitionError(f"intermediate_eval_rows={rows} needs an eval_dataset; add one to the Study")
    if resources.subset_rows is None:
        logger.warning("intermediate_eval_rows=%d is not smaller than the eval set (%d rows): every evaluation "
                       "uses all of it", rows, len(resources.eval_dataset))
    elif not evaluates:
        logger.warning("intermediate_eval_rows=%d has no effect: the base args never evaluate during training",
                       rows)


def _probe_params(study: Study) -> dict[str, Any]:
    """One sample of the space (from a throw-away study), to build a model and a loss for the checks."""
    import optuna

    dry = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return _space.sample(study.space, dry.ask())

def _study_kind(study: Study, resources: StudyResources) -> tuple[ModelKind, tuple[dict[str, Any], Any] | None]:
    """The study's kind, and the probe (params, model) when the model had to be built to tell it: a model
    factory, with no kind declared by ``kind=``, ``args`` or a model instance, is asked for one model."""
    from st_hpo._kinds import declared_kind, kind_named, resolve_kind
    from st_hpo._study import is_model_factory

    kind = declared_kind(study)
    probe = None
    if kind is None and is_model_factory(study.model):
        probe = _probe(study, resources)
        kind = resolve_kind(study, probe[1])
    kind = kind or kind_named("sentence-transformer")
    resources.kind = kind
    return kind, probe


def _probe(study: Study, resources: StudyResources) -> tuple[dict[str, Any], Any]:
    """One sample of the space and the model it builds."""
    params = _probe_params(study)
    _, _, model_params = _args.split_params(params)
    return params, _probe_model(resources, params, model_params)


def check_kind_of(kind: ModelKind, what: str, part: Any) -> None:
    """Refuse a loss or evaluator (class or instance) of another model kind than the study's."""
    foreign = kind.package_of(part)
    if foreign:
        name = part.__name__ if isinstance(part, type) else type(part).__name__
        where = "losses" if what == "loss" else "evaluation"
        raise StudyDefinitionError(
            f"{what} {name} is from {foreign}, but the study trains a {kind.model_class_name}; use one from "
            f"{kind.package}.{where} (or change the study's kind: its args class, model or kind=)"
        )


def _check_kind_of_parts(kind: ModelKind, study: Study, resources: StudyResources) -> None:
    """The loss class and an evaluator instance must be the study's kind's (or shared ones); what factories
    build is checked where it is built."""
    from st_hpo._compat import evaluator_base

    if inspect.isclass(study.loss):
        check_kind_of(kind, "loss", study.loss)
    if isinstance(study.evaluator, evaluator_base()):
        check_kind_of(kind, "evaluator", study.evaluator)


def _probe_model(resources: StudyResources, params: dict[str, Any], model_params: dict[str, Any]) -> Any:
    """The model of the checks; a model factory that raises is named (it is called as model(params))."""
    try:
        return resources.new_model(params, model_params)
    except StudyDefinitionError:
        raise
    except Exception as exc:
        raise StudyDefinitionError(
            f"the model factory raised {type(exc).__name__}: {exc}; it is called as model(params), params being "
            "the trial's sampled values (a dict)"
        ) from exc


def _check_loss_params(study: Study, names: set[str]) -> None:
    loss_names = {n[len("loss.") :] for n in names if n.startswith("loss.")}
    if not loss_names or not inspect.isclass(study.loss):
        return
    accepted = set(inspect.signature(study.loss.__init__).parameters) - {"self", "model"}
    for name in sorted(loss_names - accepted):
        raise SearchSpaceError(
            f"the space samples 'loss.{name}' but {study.loss.__name__} takes no parameter {name!r}"
            f"{_args.suggest_name(name, accepted)} (it takes: {', '.join(sorted(accepted))})"
        )


def _loss_name(study: Study, loss: Any) -> str:
    return study.loss.__name__ if inspect.isclass(study.loss) else type(loss).__name__


def _check_loss_on_rows(study: Study, resources: StudyResources, model: Any, base_args: Any,
                        params: dict[str, Any], loss_params: dict[str, Any], *, on_cpu: bool = False) -> None:
    """Build the loss and evaluate it on two training rows, so missing columns fail here."""
    train = resources.train_dataset
    columns = list(train.column_names)
    try:
        loss = resources.new_loss(model, params, loss_params)
    except StudyDefinitionError:
        raise
    except Exception as exc:
        raise StudyDefinitionError(f"building the loss raised {type(exc).__name__}: {exc}") from exc
    check_kind_of(resources.kind, "loss", loss)
    name = _loss_name(study, loss)
    if name in LABELLED_LOSSES and not any(c in columns for c in LABEL_COLUMNS):
        raise StudyDefinitionError(
            f"{name} needs a label column ('score' or 'label') in train_dataset, which has columns "
            f"{columns}; rename the score column to 'score'"
        )
    _check_label_range(name, loss, train)
    rows = train.select(range(min(2, len(train))))
    with tempfile.TemporaryDirectory(prefix="st-hpo-validate-") as tmp:
        # the probe runs on the trials' device: `use_cpu=True` here would pin accelerate's process-wide
        # state to the CPU, and every later trial in this process with it (harmless where none trains).
        # With fp16/bf16_full_eval the trainer leaves the model where it is until train(): keep it off.
        probe = {"per_device_train_batch_size": 2, "eval_strategy": "no", "load_best_model_at_end": False,
                 "fp16_full_eval": False, "bf16_full_eval": False}
        if on_cpu:
            probe["use_cpu"] = True
        args = _args.clone_args(base_args, probe, output_dir=tmp, run_name=None)
        try:
            trainer = resources.kind.trainer_class()(model=model, args=args, train_dataset=rows, loss=loss)
            batch = next(iter(trainer.get_train_dataloader()))
            trainer.compute_loss(model, batch)
        except Exception as exc:
            raise StudyDefinitionError(
                f"{name} failed on 2 rows of train_dataset (columns {columns}): {type(exc).__name__}: {exc}; "
                "check that the dataset has the columns this loss needs, in the order it needs them"
            ) from exc


def _check_label_range(name: str, loss: Any, train: Any) -> None:
    """Refuse labels outside the range the loss reads them in (e.g. 0-5 STSb scores for a cosine target)."""
    column = next((c for c in COLLATED_LABEL_COLUMNS if c in train.column_names), None)
    num_labels = getattr(loss, "num_labels", None) if name == "SoftmaxLoss" else None
    if column is None or (name not in LABEL_RANGES and num_labels is None):
        return
    import numpy as np

    labels = np.asarray(train.with_format("numpy")[column])
    if labels.dtype.kind not in "biuf" or labels.ndim != 1 or labels.size == 0:
        return
    low, high = float(labels.min()), float(labels.max())
    if num_labels is not None:
        if low < 0 or high >= num_labels or not np.all(np.mod(labels, 1) == 0):
            raise StudyDefinitionError(
                f"SoftmaxLoss(num_labels={num_labels}) needs class ids 0..{num_labels - 1} in train_dataset's "
                f"{column!r} column, which holds values in [{low:g}, {high:g}]; map the labels to class ids or "
                "set num_labels"
            )
        return
    lo, hi, meaning = LABEL_RANGES[name]
    if low < lo or high > hi:
        raise StudyDefinitionError(
            f"{name} reads train_dataset's {column!r} column as {meaning}, but it holds values in "
            f"[{low:g}, {high:g}]; rescale it into [{lo:g}, {hi:g}], e.g. dataset.map(lambda row: "
            f"{{{column!r}: row[{column!r}] / {high:g}}})"
        )


def _check_objective(study: Study, resources: StudyResources, model: Any, key: str) -> None:
    """Run the evaluator on a few rows and check that it reports the objective."""
    eval_ds = resources.eval_dataset
    from st_hpo._compat import evaluator_base

    if eval_ds is not None and not isinstance(study.evaluator, evaluator_base()):
        evaluator = resources.build_evaluator(eval_ds.select(range(min(PROBE_ROWS, len(eval_ds)))))
    else:
        evaluator = resources.evaluator
    check_kind_of(resources.kind, "evaluator", evaluator)
    try:
        metrics = evaluator(model)
    except Exception as exc:
        raise StudyDefinitionError(
            f"the evaluator raised {type(exc).__name__} on the base model: {exc}"
        ) from exc
    if not isinstance(metrics, dict):
        metrics = {"evaluator": metrics}
    produced = {objective_key(k) for k in metrics}
    if key not in produced:
        bare = sorted(k[len("eval_") :] for k in produced)
        hint = _args.suggest_name(key[len("eval_") :], set(bare))
        raise StudyDefinitionError(
            f"objective {study.objective!r} is not a metric the evaluator reports{hint} "
            f"(it reports: {', '.join(bare)})"
        )
