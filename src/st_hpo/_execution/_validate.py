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
from collections.abc import Mapping
from typing import Any

from st_hpo._definition import _args, _space
from st_hpo._definition._choice import Choice
from st_hpo._definition._datasets import dataset_parts, head, part_label
from st_hpo._definition._study import Study
from st_hpo._execution._resources import StudyResources
from st_hpo._execution._test_score import check_test_objective
from st_hpo._execution._validate_loss import (
    check_finite_labels,
    check_loss_keys,
    check_loss_on_rows,
    check_loss_params,
)
from st_hpo._kinds import ModelKind, check_kind_of
from st_hpo.exceptions import StudyDefinitionError

__all__ = ["ValidatedStudy", "validate_study", "objective_key"]

logger = logging.getLogger(__name__)

#: Rows of the eval set the evaluator runs on to prove it reports the objective.
PROBE_ROWS = 16


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
    if isinstance(study.space, Mapping):
        for chosen in losses:  # each loss a `loss` Choice can give, else the study's
            check_loss_params(chosen, names)
    else:  # a define-by-run sample's loss params go to the loss that sample chose
        for values in _space.dry_samples(study.space):
            picked = values.get(_space.LOSS_NAME)
            check_loss_params(study.replace(loss=picked) if picked is not None else study, set(values))
    key = objective_key(study.objectives[0])  # several objectives: the first is the one measured in training
    needs_eval_loss = key == "eval_loss"
    _check_best_metric(base_args, study.space, key, needs_eval_loss)
    _check_datasets(study, resources, needs_eval_loss)
    _space.check_prompts(study.space, base_args, resources.train_dataset)
    params, model = probe or _probe(study, resources)  # one sample of the space: the model and loss of the checks
    _, loss_params, model_params = _args.split_params(params)
    _check_kind_of_parts(kind, study, resources)
    for chosen in losses:
        check_loss_on_rows(chosen, resources, model, base_args, params if chosen is study else
                           {**params, "loss": chosen.loss}, loss_params, on_cpu=on_cpu)
    _check_unsampled_baseline(study, resources, model, base_args, names)
    if not needs_eval_loss:
        _check_objective(study, resources, model, key)
    check_test_objective(study, resources, model)
    evaluates = evaluations_per_trial(base_args, resources.train_rows, study.pruner) > 1  # any before the end
    _check_cadence(study, resources, base_args, resources.train_rows)
    _check_checkpoints(base_args)
    _check_subset(study, resources, evaluates, needs_eval_loss)
    del model, probe
    return ValidatedStudy(study, base_args, key, frozenset(names), needs_eval_loss, evaluates, kind)


#: Fewer evaluations per trial than this leave a pruner too few points to compare trials at.
MIN_EVALS_FOR_PRUNING = 3


def evaluations_per_trial(base_args: Any, train_rows: int, pruner: Any = None) -> int:
    """How many evaluations every trial runs (the one at the end of training included), for the study's
    ``pruner`` (None: the default one)."""
    from st_hpo._execution._schedule import evaluation_fractions  # every trial evaluates on this grid

    return len(evaluation_fractions(base_args, train_rows, pruner))


def _pruner_name(pruner: Any) -> str:
    from st_hpo._definition._study import DEFAULT_PRUNER

    return str(pruner or DEFAULT_PRUNER) if isinstance(pruner, str) or pruner is None else type(pruner).__name__


def _check_cadence(study: Study, resources: StudyResources, base_args: Any, train_rows: int) -> None:
    """Say what the evaluations cost: st-hpo's own schedule (base args with no cadence), or the cadence the
    user set next to what st-hpo's schedule would cost instead."""
    from st_hpo._execution._schedule import FALLBACK_FRACTIONS, pruner_fractions

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


def _check_best_metric(base_args: Any, space: Any, key: str, needs_eval_loss: bool) -> None:
    """No checkpoint swapped in after the trial's value was taken; no ``metric_for_best_model`` (transformers
    sets ``"loss"`` for a plateau or greedy scheduler) that the trials' evaluations never report."""
    if base_args.load_best_model_at_end:
        raise StudyDefinitionError(
            "Study(args=...) sets load_best_model_at_end=True, but a trial's value is its model's score at the "
            "end of training, and st-hpo keeps that model (the best trial's) itself: an earlier checkpoint "
            "loaded at the end would not be the model scored; remove load_best_model_at_end"
        )
    metric = base_args.metric_for_best_model
    names_the_loss = metric is not None and (metric if metric.startswith("eval_") else f"eval_{metric}") == "eval_loss"
    if needs_eval_loss or metric is not None and not names_the_loss:
        return
    stepping = {"reduce_lr_on_plateau", "greedy"} & _scheduler_values(base_args, space)
    if metric is None and not stepping:
        return
    shown = metric or "loss"  # what transformers' post-init sets for a plateau or greedy scheduler
    why = f"metric_for_best_model is {shown!r}" + (
        " (transformers' default when a plateau or greedy lr scheduler steps on it)" if stepping and shown == "loss"
        else "")
    raise StudyDefinitionError(
        f"{why}, but the trials compute no eval loss: the objective is {key!r}, so st-hpo gives the trainer no "
        f"eval_dataset; set metric_for_best_model={key.removeprefix('eval_')!r} in Study(args=...)"
    )


def _scheduler_values(base_args: Any, space: Any) -> set[str]:
    """Every ``lr_scheduler_type`` a trial can train with: the base one and what the space can sample."""
    values = [base_args.lr_scheduler_type]
    if isinstance(space, Mapping):
        dist = space.get("lr_scheduler_type")
        if isinstance(dist, Choice):
            values += list(dist.options.values())
        elif dist is not None:
            values += list(getattr(dist, "choices", ()))
    else:
        values += [v["lr_scheduler_type"] for v in _space.dry_samples(space) if "lr_scheduler_type" in v]
    return {str(getattr(v, "value", v)) for v in values}


def _check_checkpoints(base_args: Any) -> None:
    strategy = str(getattr(base_args.save_strategy, "value", base_args.save_strategy))
    if strategy == "no":
        return
    every = f"every {base_args.save_steps:g} steps" if strategy == "steps" else f"at every {strategy}"
    logger.warning(
        "the base args save a checkpoint %s (save_strategy=%r, the transformers default when unset); st-hpo "
        "deletes a trial's checkpoints when it ends and keeps the best model itself, so they only cost time: "
        "set save_strategy='no'", every, strategy,
    )


def _check_datasets(study: Study, resources: StudyResources, needs_eval_loss: bool) -> None:
    """No dataset empty; a loss dict keyed like the training datasets; the eval loss of one eval set."""
    for what, data in (("train_dataset", resources.train_dataset), ("eval_dataset", resources.eval_dataset)):
        for name, part in dataset_parts(data):
            if len(part) == 0:
                extra = "" if what == "train_dataset" else " (or leave it out when the evaluator holds its own data)"
                raise StudyDefinitionError(f"{part_label(what, name)} is empty; give it at least one row{extra}")
    check_finite_labels({"train_dataset": resources.train_dataset, "eval_dataset": resources.eval_dataset,
                         "test_dataset": resources.test_dataset})
    if isinstance(study.loss, Mapping):
        check_loss_keys(study.loss, resources.train_dataset, "loss")
    if not needs_eval_loss:
        return
    if resources.eval_dataset is None:
        raise StudyDefinitionError("objective 'eval_loss' needs an eval_dataset; add one to the Study")
    if isinstance(resources.eval_dataset, Mapping) or isinstance(study.loss, Mapping):
        raise StudyDefinitionError(
            "objective 'eval_loss' with several datasets is not supported: the trainer reports one loss per eval "
            "dataset (eval_<name>_loss) and none named 'eval_loss'; make the objective a metric of an evaluator "
            "(e.g. a SequentialEvaluator of one evaluator per dataset)"
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
    from st_hpo._definition._compat import evaluator_base

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
                       "uses all of it", rows, resources.eval_rows)
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
    from st_hpo._definition._study import is_model_factory
    from st_hpo._kinds import declared_kind, kind_named, resolve_kind

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


def _check_kind_of_parts(kind: ModelKind, study: Study, resources: StudyResources) -> None:
    """The loss class(es) and an evaluator instance must be the study's kind's (or shared ones); what factories
    build is checked where it is built."""
    from st_hpo._definition._compat import evaluator_base

    for part in study.loss.values() if isinstance(study.loss, Mapping) else [study.loss]:
        if inspect.isclass(part):
            check_kind_of(kind, "loss", part)
    if isinstance(study.evaluator, evaluator_base()):
        check_kind_of(kind, "evaluator", study.evaluator)


def _check_unsampled_baseline(study: Study, resources: StudyResources, model: Any, base_args: Any,
                              names: set[str]) -> None:
    """A baseline that leaves names unsampled (a ``model.`` name or a loss factory's ``loss.`` name has no base
    value, a base value lies outside the space, or the space is define-by-run) calls the factories with params
    that do not hold them: the loss (and, when ``model.`` names are searched, the model) must build from them."""
    import optuna

    from st_hpo._definition._baseline import baseline_values
    from st_hpo._definition._study import is_model_factory

    base = baseline_values(study.space, base_args, base_loss=study.loss)
    if not study.baseline or base is not None and not base.unsampled:
        return
    names = set(base.unsampled) if base is not None else names
    params = _space.sample({k: v for k, v in study.space.items() if k not in names},
                           optuna.trial.FixedTrial(base.params)) if base is not None else {}
    _, loss_params, model_params = _args.split_params(params)
    what = "loss"
    try:
        if is_model_factory(study.model) and any(name.startswith("model.") for name in names):
            what = "model"
            model = resources.new_model(params, model_params)
            what = "loss"
        resources.new_loss(model, params, loss_params)
    except StudyDefinitionError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the user's factory raises
        missing = exc.args[0] if isinstance(exc, KeyError) and exc.args else sorted(names)[0]
        raise StudyDefinitionError(
            f"the baseline trial runs the base arguments unsampled, so the {what} factory gets params without "
            f"{', '.join(repr(n) for n in sorted(names))}, and building the {what} from them raised "
            f"{type(exc).__name__}: {exc}; read such a name with params.get({missing!r}, DEFAULT), or set "
            "baseline=False (--no-baseline)"
        ) from None


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


def _check_objective(study: Study, resources: StudyResources, model: Any, key: str) -> None:
    """Run the evaluator on a few rows and check that it reports the objective."""
    eval_ds = resources.eval_dataset
    from st_hpo._definition._compat import evaluator_base

    if eval_ds is not None and not isinstance(study.evaluator, evaluator_base()):
        evaluator = resources.build_evaluator(head(eval_ds, PROBE_ROWS))
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
    _check_other_metrics(study, produced)
    if key not in produced:
        bare = sorted(k[len("eval_") :] for k in produced)
        hint = _args.suggest_name(key[len("eval_") :], set(bare))
        raise StudyDefinitionError(
            f"objective {study.objectives[0]!r} is not a metric the evaluator reports{hint} "
            f"(it reports: {', '.join(bare)})"
        )


def _check_other_metrics(study: Study, produced: set[str]) -> None:
    """Every objective after the first and every constraint that is not a cost names a metric the evaluator
    reports (``produced``: its metrics as trainer keys)."""
    from st_hpo._definition._costs import is_cost

    names = [("objective", n) for n in study.objectives[1:]] + [("constraints", n) for n in study.constraints or {}]
    for what, name in names:
        if is_cost(name) or objective_key(name) in produced:
            continue
        bare = sorted(k[len("eval_") :] for k in produced)
        hint = _args.suggest_name(objective_key(name)[len("eval_") :], set(bare))
        raise StudyDefinitionError(
            f"{what}: {name!r} is neither a cost st-hpo measures (cost.*) nor a metric the evaluator reports{hint} "
            f"(it reports: {', '.join(bare)})"
        )
