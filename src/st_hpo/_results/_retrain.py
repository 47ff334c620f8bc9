"""Retraining the best configuration of a study, saving it with a model card, logging it to MLflow.

:func:`retrain_best` trains the best trial's configuration again on the study's data: the study's base
arguments cloned with the values the best trial recorded it trained with (as the trial did, with ``--epochs`` as the only change
allowed), a fresh model and loss, the same evaluator. With the same seed and hardware it reproduces the
trial's objective. The model is saved with a sentence-transformers model card that has a
"Hyperparameter search" section (study, objective, best trial, its value, baseline and the retrained
value), and logged with ``mlflow.sentence_transformers.log_model`` in a ``retrain-trial-<n>`` run nested
under the study's parent run; ``register_as`` registers it in the MLflow Model Registry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._definition import _args
from st_hpo._definition._datasets import for_one_trainer
from st_hpo._definition._resources import StudyResources
from st_hpo._definition._study import Study
from st_hpo._execution._test_score import score_model
from st_hpo._results._read import BestTrial, best_of, effective_args
from st_hpo._tracking._record import trained_values
from st_hpo._tracking._schema import KIND_KEY, PARENT_ATTR, SOURCE_TRIAL_KEY, STUDY_KEY
from st_hpo._validation import validate_study
from st_hpo._validation._test_objective import has_test
from st_hpo.exceptions import StudyDefinitionError

if TYPE_CHECKING:

    from st_hpo._validation import ValidatedStudy

if TYPE_CHECKING:
    from st_hpo._results._handle import StudyHandle

__all__ = ["RetrainResult", "retrain_best", "retrain_from"]

logger = logging.getLogger(__name__)

#: The model card section st-hpo adds; inserted before this heading of the sentence-transformers card.
CARD_ANCHOR = "## Training Details"


@dataclasses.dataclass(frozen=True)
class RetrainResult:
    """What :func:`retrain_best` made."""

    model_dir: Path  #: the saved model (with README.md), loadable with its kind's class
    trial_number: int  #: the best trial whose configuration was retrained
    trial_value: float  #: that trial's objective
    value: float  #: the retrained model's objective
    epochs: float  #: num_train_epochs used
    seconds: float  #: time spent in trainer.train()
    run_id: str | None = None  #: the MLflow run of the retraining (nested under the parent run)
    model_uri: str | None = None  #: the logged MLflow model
    registered_version: str | None = None  #: the Model Registry version, when registered
    #: the retrained model on the study's held-out test set (``Study.test_dataset``), when it has one
    test_value: float | None = None


def retrain_best(study: Study, *, output_dir: str | Path | None = None, storage: str | None = None,
                 tracking_uri: str | None = None, study_name: str | None = None,
                 model_dir: str | Path | None = None, epochs: float | None = None,
                 register_as: str | None = None, track: bool = True, trial: int | None = None) -> RetrainResult:
    """Train the best configuration of a stored study (``trial``: that trial's; a multi-objective study needs
    it, one of its Pareto front) again and save (and log) the model.

    Args:
        study: the study definition the study ran with (its data, model, loss, evaluator, base args).
        output_dir, storage, tracking_uri, study_name: where the study is, as given to ``run_study``.
        model_dir: where to save the model; default ``<output_dir>/best-model``.
        epochs: train this many epochs instead of the best trial's ``num_train_epochs``.
        register_as: register the logged model under this name in the MLflow Model Registry.
        track: log the run and the model to MLflow (under the study's parent run).
    """
    from st_hpo._results._handle import open_study

    return open_study(study, output_dir=output_dir, storage=storage, tracking_uri=tracking_uri,
                      study_name=study_name).retrain(model_dir=model_dir, epochs=epochs, register_as=register_as,
                                                     track=track, trial=trial)


def retrain_from(handle: StudyHandle, *, model_dir: str | Path | None = None, epochs: float | None = None,
                 register_as: str | None = None, track: bool = True, trial: int | None = None) -> RetrainResult:
    """Train the best configuration (``trial``: that trial's) of the study ``handle`` holds again (see
    :func:`retrain_best`)."""
    if register_as is not None:  # refused before minutes of training, not after
        from st_hpo._results._register import check_registry_name

        check_registry_name(register_as, "register_as")
    study, location, optuna_study = handle.study, handle.location, handle.optuna_study
    best = best_of(optuna_study, study.objective, trial)
    chosen = next(t for t in optuna_study.get_trials(deepcopy=False) if t.number == best.number)
    params = trained_values(chosen, study.space)  # what it recorded it trained with
    target = Path(model_dir or location.output_dir / "best-model").resolve()
    work = location.output_dir / "retrain" / f"trial-{best.number}"
    resources = StudyResources(study)
    validated = validate_study(study, resources, output_dir=str(work))
    # epochs given: trained for that many, also where the base args or the trial set max_steps (which wins)
    extra = {} if epochs is None else {"num_train_epochs": epochs, "max_steps": -1}
    args = effective_args(validated.base_args, params, output_dir=str(work),
                          run_name=f"retrain-trial-{best.number}", extra=extra)
    model, value, seconds = _train(validated, resources, params, args)
    result = RetrainResult(model_dir=target, trial_number=best.number, trial_value=best.value, value=value,
                           epochs=float(args.num_train_epochs), seconds=seconds,
                           test_value=_test_value(study, resources, model))
    card = model_card_section(best, result, tracking=location.tracking_uri if track else None)
    with _card_template(model, card):
        _describe_model(model, study, best)
        model.save(str(target))
        if track:
            result = _log(handle, result, (validated.kind, model), args, best.params, register_as)
    logger.info("retrained trial %d's configuration: %s = %.4f (trial: %.4f); saved to %s",
                best.number, best.objective, value, best.value, target)
    return result


def _train(validated: ValidatedStudy, resources: StudyResources, params: dict[str, Any],
           args: Any) -> tuple[Any, float, float]:
    """Train a fresh model with ``args``; returns (model, objective of the final model, train seconds)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    _, loss_params, model_params = _args.split_params(params)
    model = resources.new_model(params, model_params)
    loss = resources.new_loss(model, params, loss_params)
    # evaluations during training as in the trials (on the study's eval subset, if it has one); the final
    # evaluation on the whole eval set
    trainer = validated.kind.trainer_class()(
        model=model, args=args, train_dataset=for_one_trainer(resources.train_dataset),
        eval_dataset=for_one_trainer(resources.eval_subset) if validated.needs_eval_loss else None,
        loss=loss, evaluator=resources.intermediate_evaluator,
    )
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.evaluator = resources.evaluator
    metrics = trainer.evaluate(for_one_trainer(resources.eval_dataset) if validated.needs_eval_loss else None)
    value = metrics.get(validated.objective_metric)
    if value is None:
        raise StudyDefinitionError(f"the retrained model's evaluation reported no {validated.objective_metric!r}")
    return model, float(value), seconds


def _test_value(study: Study, resources: StudyResources, model: Any) -> float | None:
    """The retrained model's objective on the study's test set (None without one)."""
    return score_model(resources.test_evaluator, model, study)[1] if has_test(study) else None


def model_card_section(best: BestTrial, result: RetrainResult, *, tracking: str | None) -> str:
    """The "Hyperparameter search" section of the model card, in Markdown."""
    lines = [
        "## Hyperparameter Search (st-hpo)", "",
        f"This model was trained with the best configuration found by the st-hpo study `{best.study_name}`, "
        f"which optimised `{best.objective}` ({best.direction}) over {best.n_complete} complete trials.", "",
        "| | value |", "|---|---|",
        f"| best trial | {best.number}{' (baseline)' if best.is_baseline else ''} |",
        f"| best trial's `{best.objective}` | {best.value:.4f} |",
        f"| this model's `{best.objective}` | {result.value:.4f} |",
    ]
    if result.test_value is not None:
        lines.append(f"| this model on the held-out test set | {result.test_value:.4f} |")
    if best.baseline_value is not None:
        lines.append(f"| baseline trial (base arguments) | {best.baseline_value:.4f} |")
    if best.base_model_value is not None:
        lines.append(f"| base model before fine-tuning | {best.base_model_value:.4f} |")
    lines += ["", "Sampled values of the best trial:", ""]
    lines += [f"- `{k}`: {v}" for k, v in best.params.items()] or ["- (none: the base arguments)"]
    lines.append(f"- `num_train_epochs` used here: {result.epochs:g}")
    if tracking:
        lines += ["", f"MLflow: the study's runs are in the experiment of `{best.study_name}` at `{tracking}`"
                  f"{f'; best trial run `{best.mlflow_run_id}`' if best.mlflow_run_id else ''}."]
    return "\n".join(lines) + "\n\n"


@contextlib.contextmanager
def _card_template(model: Any, section: str) -> Iterator[None]:
    """Make every save of ``model`` (ours and MLflow's) write a model card with ``section`` in it."""
    card_data = getattr(model, "model_card_data", None)
    template = getattr(card_data, "template_path", None)
    if template is None or not Path(template).is_file():
        yield
        return
    text = Path(template).read_text()
    block = "{% raw %}" + section + "{% endraw %}"
    text = text.replace(CARD_ANCHOR, block + CARD_ANCHOR, 1) if CARD_ANCHOR in text else text + "\n" + block
    with tempfile.TemporaryDirectory(prefix="st-hpo-card-") as tmp:
        path = Path(tmp) / "model_card_template.md"
        path.write_text(text)
        card_data.template_path = path
        try:
            yield
        finally:
            card_data.template_path = template


def _describe_model(model: Any, study: Study, best: BestTrial) -> None:
    card = getattr(model, "model_card_data", None)
    if card is None:
        return
    card.model_name = f"{study.name}: best configuration of an st-hpo study (trial {best.number})"
    card.local_files_only = True
    if "st-hpo" not in card.tags:
        card.tags = [*card.tags, "st-hpo"]


def _log(handle: StudyHandle, result: RetrainResult, trained: tuple[Any, Any], args: Any, params: dict[str, Any],
         register_as: str | None) -> RetrainResult:
    """Log the retraining as a run nested under the parent run, with the model (and register it)."""
    from st_hpo._definition import _args

    tracker = handle.tracker()
    parent = handle.optuna_study.user_attrs.get(PARENT_ATTR)
    tags = {KIND_KEY: "retrain", STUDY_KEY: handle.study.name, SOURCE_TRIAL_KEY: str(result.trial_number),
            "mlflow.parentRunId": parent or ""}
    run = tracker._call("create the retrain run", tracker.client.create_run, tracker.experiment_id,  # noqa: SLF001
                        tags=tags, run_name=f"retrain-trial-{result.trial_number}")
    run_id = run.info.run_id
    metrics = {"objective": result.value, "trial_objective": result.trial_value, "train_seconds": result.seconds}
    if result.test_value is not None:
        metrics["test_objective"] = result.test_value
    try:
        tracker._log_params(run_id, {k: str(v) for k, v in {**params, "num_train_epochs": result.epochs}.items()})  # noqa: SLF001
        tracker.log_metrics(run_id, metrics, 0)
        tracker.log_dict(run_id, _args.args_to_dict(args), "training_args.json")
        tracker.log_artifact(run_id, str(result.model_dir / "README.md"))
        kind, model = trained
        model_uri, version = kind.log_to_mlflow(handle.tracking_uri, run_id, str(result.model_dir), register_as,
                                                model=model)
    except BaseException:  # the model is saved; its run must not stay RUNNING
        with contextlib.suppress(Exception):
            tracker.client.set_terminated(run_id, "FAILED")
        raise
    tracker._call("end the retrain run", tracker.client.set_terminated, run_id, "FINISHED")  # noqa: SLF001
    return dataclasses.replace(result, run_id=run_id, model_uri=model_uri, registered_version=version)
