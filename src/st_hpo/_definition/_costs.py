"""The costs st-hpo measures for complete trials, and the constraints a study may put on them.

Names (all ``cost.*``; any metric the evaluator reports may also be an objective or be constrained):

- ``cost.encode_ms``: milliseconds to encode 1,000 sentences of the eval set with the trained model on the
  trial's device (the median of 3 timed passes after a warm-up pass). Measured only for a study that weighs
  it (:data:`MEASURED_WHEN_WEIGHED`).
- ``cost.embedding_dim``: the embedding size the model returns (after ``truncate_dim``).
- ``cost.parameters``: the model's parameters, in millions.
- ``cost.train_seconds``: seconds of training steps (evaluations left out; see ``_tracking/_times.py``).
- ``cost.peak_memory_mb``: the peak GPU memory the trial reserved, or the growth of the process's resident
  memory on the CPU, in MB.
- ``cost.active_dims`` and ``cost.flops``: for a sparse model, the evaluator's active dimensions and FLOPS
  (what the evaluator does not report is computed from the model's embeddings of the eval sentences, only
  for a study that weighs it).

Every complete trial gets the costs that take no measurement worth counting; the ones that take passes of
the model over the eval sentences (seconds each on a CPU) only when the study weighs them: an objective or a
constraint names them (:func:`weighed_costs`).

A constraint is a comparison written as text, ``"<= 256"``, ``"< 20.5"``, ``">= 0.8"`` or ``"> 0"``: the
trial is feasible when its value satisfies it.

This module needs nothing but the standard library: the study definition is checked with it before any
resource is loaded.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from st_hpo.exceptions import StudyDefinitionError

__all__ = ["COST_NAMES", "COST_PREFIX", "KNOWN_BEFORE_TRAINING", "MEASURED_WHEN_WEIGHED", "STATIC_COSTS",
           "TIMED_BEFORE_TRAINING", "Constraint", "is_cost", "parse_constraint", "parse_constraints", "weighed_costs"]

COST_PREFIX = "cost."

#: Every cost st-hpo measures, with what it is (for messages and the README).
COST_NAMES: dict[str, str] = {
    "cost.encode_ms": "milliseconds to encode 1,000 eval sentences on the trial's device",
    "cost.embedding_dim": "the embedding size (after truncate_dim)",
    "cost.parameters": "the model's parameters, in millions",
    "cost.train_seconds": "seconds of training steps",
    "cost.peak_memory_mb": "peak GPU reserved memory (CPU: resident memory growth), MB",
    "cost.active_dims": "a sparse model's active dimensions (from its evaluator)",
    "cost.flops": "a sparse model's FLOPS (from its evaluator)",
}

#: Costs that do not change during training: known once the trial's model is built, before training.
STATIC_COSTS = ("cost.embedding_dim", "cost.parameters")
#: Costs set by the model's architecture and input length, not by its weights, which st-hpo can time on the
#: freshly built model before it trains (only when a multi-objective study optimises one, for its pruning).
TIMED_BEFORE_TRAINING = ("cost.encode_ms",)
#: Every cost a multi-objective study's pruning can compare trials on while they train.
KNOWN_BEFORE_TRAINING = STATIC_COSTS + TIMED_BEFORE_TRAINING
#: Costs that take passes of the trained model over the eval sentences to measure: a trial measures them only
#: when its study weighs them (:func:`weighed_costs`); a study that does not would pay seconds per trial on a
#: CPU for a figure it never reads. (A sparse model's ``cost.active_dims`` and ``cost.flops`` need a pass only
#: where its evaluator does not report them, so they are measured from the embeddings on the same terms.)
MEASURED_WHEN_WEIGHED = ("cost.encode_ms", "cost.active_dims", "cost.flops")

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
_PATTERN = re.compile(r"^\s*(<=|>=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def is_cost(name: str) -> bool:
    """True when ``name`` is in the ``cost.`` namespace (known or not)."""
    return name.startswith(COST_PREFIX)


def weighed_costs(objectives: Iterable[str], constraints: Mapping[str, str] | None = None) -> frozenset[str]:
    """The costs a study weighs: those its objectives or its constraints name."""
    return frozenset(name for name in (*objectives, *(constraints or {})) if is_cost(name))


@dataclass(frozen=True)
class Constraint:
    """``name op bound``: a trial is feasible when its value of ``name`` satisfies the comparison."""

    name: str
    op: str
    bound: float

    def satisfied(self, value: float) -> bool:
        """Whether ``value`` keeps the constraint (a NaN never does)."""
        return not math.isnan(value) and _OPERATORS[self.op](value, self.bound)

    def violation(self, value: float) -> float:
        """Optuna's constraint value: 0 or less when kept, how far it is broken (> 0) when not."""
        if math.isnan(value):
            return 1.0
        if self.satisfied(value):
            return 0.0
        return max(abs(value - self.bound), 1e-12)

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.bound:g}"


def parse_constraint(name: str, text: str) -> Constraint:
    """Parse ``text`` (``"<= 256"``) as a constraint on ``name``; refuse an unknown ``cost.`` name or text
    that is not one comparison with a number, in one line."""
    if not isinstance(name, str) or not name:
        raise StudyDefinitionError(f"constraints: {name!r} is not a metric name; use e.g. 'cost.embedding_dim'")
    if is_cost(name) and name not in COST_NAMES:
        raise StudyDefinitionError(f"constraints: unknown cost {name!r}; st-hpo measures {', '.join(COST_NAMES)}")
    match = _PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise StudyDefinitionError(
            f"constraints: {name}: {text!r} is not a comparison st-hpo can read; write one of '<= N', '< N', "
            "'>= N' or '> N', e.g. {'cost.embedding_dim': '<= 256'}")
    return Constraint(name, match.group(1), float(match.group(2)))


def parse_constraints(constraints: dict[str, str] | None) -> tuple[Constraint, ...]:
    """Every constraint of a study, in the order written (none when ``constraints`` is None or empty)."""
    if constraints is None:
        return ()
    if not isinstance(constraints, dict):
        raise StudyDefinitionError(
            f"constraints={constraints!r} must be a dict of metric name to comparison, e.g. "
            "{'cost.embedding_dim': '<= 256'}")
    return tuple(parse_constraint(name, text) for name, text in constraints.items())
