"""The loss: its sampled parameters, a dict of losses keyed like the training datasets, the label columns
and ranges, and one loss evaluation on two rows of each training dataset."""

from __future__ import annotations

import inspect
import logging
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from st_hpo._definition import _args, _space
from st_hpo._definition._datasets import dataset_parts, part_label
from st_hpo._definition._space import LOSS_NAME
from st_hpo._definition._study import Study
from st_hpo._kinds import check_kind_of
from st_hpo.exceptions import SearchSpaceError, StudyDefinitionError

if TYPE_CHECKING:
    from transformers import TrainingArguments

    from st_hpo._definition._resources import StudyResources
    from st_hpo._validation._state import Validation

__all__ = ["check_loss_keys", "check_loss_on_rows", "check_loss_params"]

logger = logging.getLogger(__name__)

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


def check_loss_params(state: Validation) -> None:
    """Every sampled ``loss.`` name is a parameter of the loss it goes to: each loss a ``loss`` Choice can
    give, else the study's; a define-by-run sample's to the loss that sample chose."""
    study = state.study
    if isinstance(study.space, Mapping):
        for chosen in state.losses:
            _check_loss_params(chosen, state.names)
    else:
        for values in _space.dry_samples(study.space):
            picked = values.get(LOSS_NAME)
            _check_loss_params(study.replace(loss=picked) if picked is not None else study, set(values))


def check_loss_on_rows(state: Validation) -> None:
    """Every loss the study can train with trains one batch of two rows of each training dataset."""
    study, params = state.study, state.params
    _, loss_params, _ = _args.split_params(params)
    for chosen in state.losses:
        _check_loss_on_rows(chosen, state.resources, state.model, state.base_args,
                            params if chosen is study else {**params, "loss": chosen.loss}, loss_params,
                            on_cpu=state.on_cpu)


def _check_loss_params(study: Study, names: set[str]) -> None:
    loss_names = {n[len("loss.") :] for n in names if n.startswith("loss.")}
    if isinstance(study.loss, Mapping):
        _check_loss_dict_params(study.loss, loss_names)
        return
    if not loss_names or not inspect.isclass(study.loss):
        return
    _check_accepted(study.loss, loss_names, "loss.")


def _check_accepted(loss: type, loss_names: set[str], prefix: str) -> None:
    accepted = set(inspect.signature(loss.__init__).parameters) - {"self", "model"}
    for name in sorted(loss_names - accepted):
        raise SearchSpaceError(
            f"the space samples '{prefix}{name}' but {loss.__name__} takes no parameter {name!r}"
            f"{_args.suggest_name(name, accepted)} (it takes: {', '.join(sorted(accepted))})"
        )


def _check_loss_dict_params(loss: Mapping[str, Any], loss_names: set[str]) -> None:
    """With a dict of losses, every ``loss.`` name is ``loss.<dataset>.<param>``, for a class that takes it."""
    by_dataset: dict[str, set[str]] = {}
    for name in sorted(loss_names):
        dataset, _, param = name.rpartition(".")
        if dataset not in loss:
            raise SearchSpaceError(
                f"the space samples 'loss.{name}' but the loss is a dict keyed by dataset ({sorted(loss)}); name "
                f"the dataset whose loss takes it, e.g. 'loss.{next(iter(loss))}.{param}'"
            )
        by_dataset.setdefault(dataset, set()).add(param)
    for dataset, params in by_dataset.items():
        if inspect.isclass(loss[dataset]):
            _check_accepted(loss[dataset], params, f"loss.{dataset}.")


def check_loss_keys(loss: Mapping[str, Any], train: Any, what: str) -> None:
    """A dict of losses must have exactly one loss per training dataset, under the dataset's name."""
    if not isinstance(train, Mapping):
        raise StudyDefinitionError(
            f"{what} is a dict of losses keyed by dataset name ({sorted(loss)}), but train_dataset is one "
            "Dataset; give train_dataset as a DatasetDict or dict of datasets with those keys, or one loss"
        )
    missing, extra = sorted(set(train) - set(loss)), sorted(set(loss) - set(train))
    if missing or extra:
        parts = ([f"no loss for the dataset(s) {missing}"] if missing else []) + (
            [f"the loss key(s) {extra} name no dataset"] if extra else [])
        raise StudyDefinitionError(
            f"{what} keys {sorted(loss)} do not match the train_dataset keys {sorted(train)}: {'; '.join(parts)}; "
            "key each loss by the name of the dataset it trains on"
        )


def _check_loss_on_rows(study: Study, resources: StudyResources, model: Any, base_args: TrainingArguments,
                        params: dict[str, Any], loss_params: dict[str, Any], *, on_cpu: bool = False) -> None:
    """Build the loss and evaluate it on two rows of each training dataset (each with its own loss, for a
    dict of losses), so missing columns fail here, naming the dataset."""
    from datasets import DatasetDict

    train = resources.train_dataset
    sampled, _, _ = _args.split_params(params)  # the sample's own arguments (a router_mapping, prompts, ...)
    for name in (LOSS_NAME, *_NOT_PROBED):
        sampled.pop(name, None)
    try:
        loss = resources.new_loss(model, params, loss_params)
    except StudyDefinitionError:
        raise
    except Exception as exc:
        raise StudyDefinitionError(f"building the loss raised {type(exc).__name__}: {exc}") from exc
    if isinstance(loss, dict):
        check_loss_keys(loss, train, "the loss factory's dict" if callable(study.loss) else "loss")
    for name, part in dataset_parts(train):
        part_loss = loss[name] if isinstance(loss, dict) else loss
        check_kind_of(resources.kind, "loss", part_loss)
        _check_labels(type(part_loss).__name__, part_loss, part, part_label("train_dataset", name))
        rows = part.select(range(min(2, len(part))))
        # a dataset of several goes through the trainer as a DatasetDict of one, as in training (its name
        # keys the loss, prompts and router mappings); the loss dict likewise
        _probe_loss(resources, model, base_args, sampled, rows if name is None else DatasetDict({name: rows}),
                    part_loss if name is None or not isinstance(loss, dict) else {name: part_loss},
                    what=(type(part_loss).__name__, part_label("train_dataset", name), list(part.column_names)),
                    on_cpu=on_cpu)


#: Sampled arguments the 2-row probe leaves at its own values: batching (a label-grouping sampler needs 4
#: rows a batch) and the schedule (a plateau scheduler needs an eval strategy, which the probe has not).
_NOT_PROBED = ("batch_sampler", "multi_dataset_batch_sampler", "lr_scheduler_type", "lr_scheduler_kwargs")


def _probe_loss(resources: StudyResources, model: Any, base_args: TrainingArguments, sampled: dict[str, Any],
                rows: Any, loss: Any, *, what: tuple[str, str, list[str]], on_cpu: bool) -> None:
    """One training batch of ``rows`` through the kind's trainer and ``loss``, under the base arguments with
    the ``sampled`` training-argument values."""
    name, where, columns = what
    if on_cpu and _args.pick_device() != "cpu":
        # Building any trainer on a GPU machine creates a CUDA context (sentence-transformers' trainer builds
        # default arguments, which resolve their device with torch.cuda.set_device), which a process that never
        # trains would hold for the whole study. Its workers run this probe before their first trial.
        logger.info("%s on 2 rows of %s: probed by the workers, on their GPUs", name, where)
        return
    with tempfile.TemporaryDirectory(prefix="st-hpo-validate-") as tmp:
        # the probe runs on the trials' device: `use_cpu=True` here would pin accelerate's process-wide
        # state to the CPU, and every later trial in this process with it (harmless where none trains).
        # With fp16/bf16_full_eval the trainer leaves the model where it is until train(): keep it off.
        probe = {"per_device_train_batch_size": 2, "eval_strategy": "no", "load_best_model_at_end": False,
                 "fp16_full_eval": False, "bf16_full_eval": False, "lr_scheduler_type": "linear",
                 "batch_sampler": "batch_sampler", "multi_dataset_batch_sampler": "proportional"}
        if on_cpu:  # precision is not what the probe checks: a sampled fp16 must not stop it on the CPU
            probe.update(use_cpu=True, fp16=False)
        try:
            args = _args.clone_args(base_args, {**sampled, **probe}, output_dir=tmp, run_name=None)
        except (ValueError, TypeError) as exc:
            raise StudyDefinitionError(f"the training arguments with a sample of the space ({sorted(sampled)}) "
                                       f"are not valid together: {exc}") from exc
        try:
            trainer = resources.kind.trainer_class()(model=model, args=args, train_dataset=rows, loss=loss)
            batch = next(iter(trainer.get_train_dataloader()))
            trainer.compute_loss(model, batch)
        except Exception as exc:
            raise StudyDefinitionError(
                f"{name} failed on 2 rows of {where} (columns {columns}): {type(exc).__name__}: {exc}; "
                "check that the dataset has the columns this loss needs, in the order it needs them"
            ) from exc


def _check_labels(name: str, loss: Any, train: Any, where: str) -> None:
    """A loss that reads labels needs a label column, with labels in the range it reads them in."""
    columns = list(train.column_names)
    if name in LABELLED_LOSSES and not any(c in columns for c in LABEL_COLUMNS):
        raise StudyDefinitionError(
            f"{name} needs a label column ('score' or 'label') in {where}, which has columns "
            f"{columns}; rename the score column to 'score'"
        )
    _check_label_range(name, loss, train, where)


def _check_label_range(name: str, loss: Any, train: Any, where: str = "train_dataset") -> None:
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
                f"SoftmaxLoss(num_labels={num_labels}) needs class ids 0..{num_labels - 1} in {where}'s "
                f"{column!r} column, which holds values in [{low:g}, {high:g}]; map the labels to class ids or "
                "set num_labels"
            )
        return
    lo, hi, meaning = LABEL_RANGES[name]
    if low < lo or high > hi:
        raise StudyDefinitionError(
            f"{name} reads {where}'s {column!r} column as {meaning}, but it holds values in "
            f"[{low:g}, {high:g}]; rescale it into [{lo:g}, {hi:g}], e.g. dataset.map(lambda row: "
            f"{{{column!r}: row[{column!r}] / {high:g}}})"
        )
