"""Structured choices in a declarative space: values Optuna cannot hold, sampled by their labels.

An Optuna ``CategoricalDistribution`` holds only None, bools, numbers and strings, but what users of
sentence-transformers tune is often a dict or a class: ``prompts``, ``router_mapping``,
``learning_rate_mapping``, the loss itself. ``st_hpo.Choice({"label": value, ...})`` goes in a dict space
like a distribution: Optuna samples the label (what MLflow params, ``status`` and the reports show) and
the trial gets the value::

    space = {
        "prompts": st_hpo.Choice({"none": None, "query": {"anchor": "query: ", "positive": "passage: "}}),
        "loss": st_hpo.Choice({"cosent": CoSENTLoss, "angle": AnglELoss}),
    }
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from st_hpo.exceptions import SearchSpaceError

__all__ = ["Choice"]


class Choice:
    """A choice among labelled values; Optuna samples the label, the trial gets its value.

    Args:
        options: a non-empty dict from string labels to values (any Python object: a dict of prompts, a
            loss class, a mapping of learning rates).
    """

    def __init__(self, options: Mapping[str, Any]) -> None:
        if not isinstance(options, Mapping):
            raise SearchSpaceError(
                f"Choice takes a dict of labels to values, not {type(options).__name__}; e.g. "
                "Choice({'none': None, 'query': {'anchor': 'query: '}})"
            )
        if not options:
            raise SearchSpaceError("Choice({}) has no options; give at least one label and its value")
        bad = [label for label in options if not isinstance(label, str) or not label]
        if bad:
            raise SearchSpaceError(
                f"Choice labels must be non-empty strings (they are what Optuna samples and MLflow shows), "
                f"not {bad[0]!r}; e.g. Choice({{'cosent': CoSENTLoss}})"
            )
        self.options: dict[str, Any] = dict(options)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.options)

    def distribution(self) -> Any:
        """The Optuna distribution over the labels."""
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(self.labels)

    def value(self, label: str) -> Any:
        """The value of ``label``; SearchSpaceError naming the labels when it is not one of them."""
        if label not in self.options:
            raise SearchSpaceError(f"{label!r} is not a label of this Choice (labels: {', '.join(self.labels)})")
        return self.options[label]

    def __repr__(self) -> str:  # the values too (a study's identity notices a changed one), stable across runs
        return f"Choice({{{', '.join(f'{label!r}: {_describe(value)}' for label, value in self.options.items())}}})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Choice) and self.options == other.options

    def __hash__(self) -> int:
        return hash(self.labels)


def _describe(value: Any) -> str:
    """``repr`` of a value, but a class or function by its dotted name (its repr holds a memory address)."""
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    return repr(value)
