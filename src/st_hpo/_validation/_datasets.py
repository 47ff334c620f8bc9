"""The study's datasets: none empty, labels and scores finite, a dict of losses keyed like the training
datasets, the eval loss of one eval set, and prompts that name the training data's columns or datasets."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from st_hpo._definition import _space
from st_hpo._definition._choice import Choice
from st_hpo._definition._datasets import dataset_parts, part_label
from st_hpo._definition._study import Study
from st_hpo._validation._loss import check_loss_keys
from st_hpo.exceptions import SearchSpaceError, StudyDefinitionError

if TYPE_CHECKING:
    from transformers import TrainingArguments

    from st_hpo._definition._resources import StudyResources
    from st_hpo._validation._state import Validation

__all__ = ["check_datasets", "check_finite_labels", "check_prompts"]


def check_datasets(state: Validation) -> None:
    """No dataset empty; labels finite; a loss dict keyed like the training datasets; the eval loss of one
    eval set."""
    _check_datasets(state.study, state.resources, state.needs_eval_loss)


def check_prompts(state: Validation) -> None:
    """Prompts (of the base args or the space) name columns or datasets of the training data."""
    _check_prompts(state.study.space, state.base_args, state.resources.train_dataset)


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


def check_finite_labels(datasets: Mapping[str, Any]) -> None:
    """Refuse a NaN or infinite number in any float column of the study's datasets (``datasets``: field name ->
    study dataset): a label, a score or a target the loss or the evaluator reads. One NaN score makes the
    evaluator's correlation NaN and every trial look diverged; one NaN label makes the training loss NaN."""
    import numpy as np

    for what, data in datasets.items():
        for name, part in dataset_parts(data):
            for column in part.column_names:
                dtype = getattr(part.features.get(column), "dtype", None)
                if not (isinstance(dtype, str) and dtype.startswith(("float", "double"))) and \
                        not _holds_float_lists(part.features.get(column)):
                    continue
                values = np.asarray(part.with_format("numpy")[column])
                if values.dtype.kind != "f":
                    continue
                bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
                if bad.any():
                    row = int(np.argmax(bad))
                    shown = values[row] if values.ndim == 1 else "a NaN or infinite number"
                    raise StudyDefinitionError(
                        f"{part_label(what, name)}'s {column!r} column holds {shown} at row {row} "
                        f"({int(bad.sum())} row(s) in all); labels and scores must be finite numbers: drop or fix "
                        f"those rows, e.g. dataset.filter(lambda row: math.isfinite(row[{column!r}]))")


def _holds_float_lists(feature: Any) -> bool:
    """True for a column of fixed-length float lists (a distillation target, say)."""
    inner = getattr(feature, "feature", None)
    dtype = getattr(inner, "dtype", None)
    return isinstance(dtype, str) and dtype.startswith(("float", "double")) and getattr(feature, "length", -1) > 0


def _prompt_candidates(space: Mapping[str, Any] | Callable[..., Any], base_args: TrainingArguments) -> list[Any]:
    """Every ``prompts`` value a trial can train with: the base one, and what the space can give."""
    import optuna

    found = [getattr(base_args, "prompts", None)]
    if isinstance(space, Mapping):
        dist = space.get("prompts")
        if isinstance(dist, Choice):
            found += list(dist.options.values())
        elif isinstance(dist, optuna.distributions.CategoricalDistribution):
            found += list(dist.choices)
        return found
    dry = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(_space.DRY_SAMPLES):  # the space already passed check_space: it samples without raising
        trial = dry.ask()
        found.append(_space.sample(space, trial).get("prompts"))
        dry.tell(trial, 0.0)
    return found


def _prompt_problem(prompts: Any, columns: dict[str | None, list[str]]) -> str | None:
    """Why ``prompts`` names a column or dataset that is not there (``columns``: dataset name -> columns;
    the only key is None for a single Dataset), or None."""
    if not isinstance(prompts, Mapping) or not prompts:
        return None
    every = sorted({c for cols in columns.values() for c in cols})
    names = [k for k in columns if k is not None]
    if any(isinstance(v, Mapping) for v in prompts.values()):  # dataset name -> (prompt | column -> prompt)
        for dataset, inner in prompts.items():
            if dataset not in names:
                return (f"names dataset {dataset!r}, but the train dataset "
                        f"{'has datasets ' + repr(names) if names else 'is a single Dataset'}")
            unknown = [c for c in (inner if isinstance(inner, Mapping) else {}) if c not in columns[dataset]]
            if unknown:
                return f"names column {unknown[0]!r} of dataset {dataset!r}, which has columns {columns[dataset]}"
        return None
    for key in prompts:
        if key not in every and key not in names:
            return f"names column {key!r}, which the train dataset does not have (its columns: {every})"
    return None


def _check_prompts(space: Mapping[str, Any] | Callable[..., Any], base_args: TrainingArguments,
                   train_dataset: Any) -> None:
    """Refuse a ``prompts`` value (base args or space) whose keys name no column or dataset of the train data."""
    if isinstance(train_dataset, Mapping):  # several datasets (a DatasetDict, a dict): columns per dataset
        columns = {k: list(part.column_names) for k, part in train_dataset.items()}
    else:
        columns = {None: list(train_dataset.column_names)}
    for prompts in _prompt_candidates(space, base_args):
        reason = _prompt_problem(prompts, columns)
        if reason:
            raise SearchSpaceError(f"prompts={prompts!r} {reason}; key prompts by the train dataset's column "
                                   "names (or by dataset name for a dict of datasets)")
