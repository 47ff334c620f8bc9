"""What a worker process prepares once and every trial reuses: datasets, the evaluator, base weights.

Every trial still gets its own model (a fresh copy of the base weights, made in memory rather than read
from disk again) and its own loss module; nothing a trial trains is shared with another.
"""

from __future__ import annotations

import copy
import inspect
import logging
from typing import Any

from st_hpo._study import Study
from st_hpo.exceptions import StudyDefinitionError

__all__ = ["StudyResources", "pick_device"]

logger = logging.getLogger(__name__)


def pick_device() -> str:
    """``cuda`` when a GPU is visible to this process, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _materialize(value: Any, what: str) -> Any:
    if value is None:
        return None
    if callable(value) and not hasattr(value, "column_names"):
        try:
            value = value()
        except Exception as exc:
            raise StudyDefinitionError(f"{what}() raised {type(exc).__name__}: {exc}") from exc
    if not hasattr(value, "column_names"):
        raise StudyDefinitionError(
            f"{what} must be a datasets.Dataset (or a callable returning one), not {type(value).__name__}"
        )
    return value


class StudyResources:
    """The study's heavy inputs, loaded at most once per process."""

    def __init__(self, study: Study) -> None:
        self.study = study
        self._train: Any = None
        self._eval: Any = None
        self._evaluator: Any = None
        self._base_model: Any = None

    @property
    def train_dataset(self) -> Any:
        if self._train is None:
            self._train = _materialize(self.study.train_dataset, "train_dataset")
        return self._train

    @property
    def eval_dataset(self) -> Any:
        if self._eval is None and self.study.eval_dataset is not None:
            self._eval = _materialize(self.study.eval_dataset, "eval_dataset")
        return self._eval

    @property
    def evaluator(self) -> Any:
        if self._evaluator is None:
            self._evaluator = self.build_evaluator(self.eval_dataset)
        return self._evaluator

    def build_evaluator(self, eval_dataset: Any) -> Any:
        """The study's evaluator, built from ``eval_dataset`` when the study gives a factory."""
        from st_hpo._compat import evaluator_base

        SentenceEvaluator = evaluator_base()  # noqa: N806
        evaluator = self.study.evaluator
        if isinstance(evaluator, SentenceEvaluator):
            return evaluator
        if callable(evaluator):
            if eval_dataset is None:
                raise StudyDefinitionError(
                    "evaluator is a factory (eval_dataset) -> evaluator but the study has no eval_dataset"
                )
            evaluator = evaluator(eval_dataset)
        if not isinstance(evaluator, SentenceEvaluator):
            raise StudyDefinitionError(
                f"evaluator must be a SentenceEvaluator or return one, not {type(evaluator).__name__}"
            )
        return evaluator

    def base_model(self) -> Any:
        """The base model loaded once on the CPU (only when ``study.model`` is a name or path)."""
        if self._base_model is None:
            from sentence_transformers import SentenceTransformer

            try:
                self._base_model = SentenceTransformer(self.study.model, device="cpu")
            except Exception as exc:
                raise StudyDefinitionError(
                    f"could not load model {self.study.model!r}: {type(exc).__name__}: {exc}"
                ) from exc
        return self._base_model

    def new_model(self, params: dict[str, Any], model_params: dict[str, Any]) -> Any:
        """A fresh model for one trial."""
        if callable(self.study.model):
            model = self.study.model(params)
            from sentence_transformers import SentenceTransformer

            if not isinstance(model, SentenceTransformer):
                raise StudyDefinitionError(
                    f"the model factory returned {type(model).__name__}, not a SentenceTransformer"
                )
            return model
        model = copy.deepcopy(self.base_model())
        for name, value in model_params.items():
            if not hasattr(model, name):
                raise StudyDefinitionError(
                    f"the space samples 'model.{name}' but SentenceTransformer has no attribute {name!r}; "
                    "use a model factory (params) -> SentenceTransformer to consume it"
                )
            setattr(model, name, value)
        return model

    def new_loss(self, model: Any, params: dict[str, Any], loss_params: dict[str, Any]) -> Any:
        """A fresh loss module for one trial."""
        loss = self.study.loss
        if inspect.isclass(loss):
            return loss(model, **loss_params)
        return loss(model, params)
