"""The state of a study on its way through validation, and the validated study it ends as.

Each check of :data:`st_hpo._validation.CHECKS` takes a :class:`Validation`: the study and its loaded
resources, and what the checks before it worked out (the model kind, the base arguments, the sampled
names, the probe model). What validation hands on is a :class:`ValidatedStudy`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

from st_hpo._definition._schedule import evaluation_fractions
from st_hpo._definition._space import loss_options

if TYPE_CHECKING:
    from transformers import TrainingArguments

    from st_hpo._definition._resources import StudyResources
    from st_hpo._definition._study import Study
    from st_hpo._kinds import ModelKind

__all__ = ["Validation", "ValidatedStudy", "evaluations_per_trial", "objective_key"]


@dataclasses.dataclass(frozen=True)
class ValidatedStudy:
    """A study that passed validation, with what validation worked out."""

    study: Study
    base_args: TrainingArguments
    objective_metric: str  #: the key in the trainer's metrics, e.g. 'eval_sts-dev_spearman_cosine'
    space_names: frozenset[str]
    needs_eval_loss: bool
    evaluates_during_training: bool
    kind: ModelKind  #: the model kind the study trains (SentenceTransformer, CrossEncoder, ...)


def objective_key(objective: str) -> str:
    """The trainer's metric key for a study objective (the trainer prefixes metrics with 'eval_')."""
    return objective if objective.startswith("eval_") else f"eval_{objective}"


def evaluations_per_trial(base_args: TrainingArguments, train_rows: int, pruner: Any = None) -> int:
    """How many evaluations every trial runs (the one at the end of training included), for the study's
    ``pruner`` (None: the default one)."""
    return len(evaluation_fractions(base_args, train_rows, pruner))  # every trial evaluates on this grid


@dataclasses.dataclass
class Validation:
    """A study on its way through the checks: its inputs, then what the checks so far worked out.

    ``on_cpu``: run the loss probe on the CPU, for a process that never trains (a supervisor whose
    workers own the GPUs), so that it holds no GPU memory.
    """

    study: Study
    resources: StudyResources
    output_dir: str
    on_cpu: bool = False
    kind: ModelKind | None = None  #: the study's model kind (the first check)
    base_args: TrainingArguments | None = None  #: the study's base arguments, of the kind's class
    names: set[str] = dataclasses.field(default_factory=set)  #: every name the space samples
    probe: tuple[dict[str, Any], Any] | None = None  #: one sample of the space and the model it builds

    @property
    def objective_metric(self) -> str:
        """The trainer's metric key of the objective, e.g. 'eval_sts-dev_spearman_cosine'."""
        return objective_key(self.study.objectives[0])  # several objectives: the first is measured in training

    @property
    def needs_eval_loss(self) -> bool:
        return self.objective_metric == "eval_loss"

    @functools.cached_property
    def losses(self) -> list[Study]:
        """The study once per loss a ``loss`` Choice of the space can give, else the study itself."""
        return [self.study.replace(loss=option) for option in loss_options(self.study.space)] or [self.study]

    @property
    def params(self) -> dict[str, Any]:
        """The probe's sample of the space."""
        assert self.probe is not None, "the probe is built before the checks that use it"
        return self.probe[0]

    @property
    def model(self) -> Any:
        """The probe's model: the model of the checks that run the loss and the evaluators."""
        assert self.probe is not None, "the probe is built before the checks that use it"
        return self.probe[1]

    @property
    def evaluates(self) -> bool:
        """Whether a trial evaluates before the end of its training."""
        return evaluations_per_trial(self.base_args, self.resources.train_rows, self.study.pruner) > 1

    def validated(self) -> ValidatedStudy:
        assert self.kind is not None and self.base_args is not None
        return ValidatedStudy(self.study, self.base_args, self.objective_metric, frozenset(self.names),
                              self.needs_eval_loss, self.evaluates, self.kind)
