"""The baseline trial's values: what every name of a dict space is when the base arguments run unchanged.

The baseline (trial 0 by default) trains with the base arguments, the study's loss and its defaults. Where
the space can produce such a value, the baseline is queued with it, so that Optuna stores it as the
trial's param (``best_params``, optuna-dashboard and the samplers see it); every reader shows every name,
a Choice by its label, a ``loss.`` name by the loss class's default.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Mapping
from typing import Any

from st_hpo._definition import _args
from st_hpo._definition._choice import Choice
from st_hpo._definition._space import LOSS_NAME, _normalize, _same

__all__ = ["BaselineValues", "baseline_values"]


@dataclasses.dataclass(frozen=True)
class BaselineValues:
    """What the baseline trial (the base arguments unchanged) has for each name of a dict space.

    ``params``: the names whose base value the space can produce, with that value as Optuna holds it (a
    Choice's label): the baseline is queued with them, so Optuna stores them as its params. ``shown``: every
    name, with its base value as every reader shows it (a Choice's label, a ``loss.`` name's default in the
    loss class, ``"(default)"`` when it is not known). Names in ``shown`` only keep their base value unsampled.
    """

    params: dict[str, Any]
    shown: dict[str, Any]

    @property
    def unsampled(self) -> list[str]:
        """The names the baseline leaves at their base value without a param (outside the space, unknown)."""
        return sorted(set(self.shown) - set(self.params))


def baseline_values(space: Mapping[str, Any] | Callable[..., Any], base_args: Any, *,
                    base_loss: Any = None) -> BaselineValues | None:
    """The baseline's value of every name of a dict space (see :class:`BaselineValues`); None for a
    define-by-run space (the baseline runs it unsampled). ``base_loss``: the study's ``loss``."""
    if not isinstance(space, Mapping):
        return None
    params: dict[str, Any] = {}
    shown: dict[str, Any] = {}
    for name, dist in space.items():
        base = _base_value(name, base_args, base_loss)
        if isinstance(dist, Choice):  # the label whose value is the base value
            label = None if base is _UNKNOWN else next((k for k, v in dist.options.items() if _same(v, base)), None)
            if label is not None:
                params[name] = shown[name] = label
            else:
                shown[name] = _shown(base)
            continue
        if base is not _UNKNOWN and _can_produce(_normalize(dist), base):
            params[name] = _as_param(_normalize(dist), base)
        shown[name] = params.get(name, _shown(base))
    return BaselineValues(params, shown)


#: A base value st-hpo does not know (a model factory's parameter, a loss factory's).
_UNKNOWN = object()


def _base_value(name: str, base_args: Any, base_loss: Any) -> Any:
    """The value ``name`` has when nothing is sampled: the base argument, the study's loss, or for a ``loss.``
    name the default of that parameter in the loss class (of the dataset's loss for a dict of losses)."""
    import inspect

    if name == LOSS_NAME:
        return _UNKNOWN if base_loss is None else base_loss
    if name.startswith("model."):
        return _UNKNOWN
    if name.startswith("loss."):
        loss, param = base_loss, name[len("loss.") :]
        if isinstance(base_loss, Mapping):
            dataset, _, param = param.rpartition(".")
            loss = base_loss.get(dataset)
        try:
            found = inspect.signature(loss).parameters.get(param) if inspect.isclass(loss) else None
        except (TypeError, ValueError):
            found = None
        return _UNKNOWN if found is None or found.default is inspect.Parameter.empty else found.default
    value = _args.effective_warmup_ratio(base_args) if name == "warmup_ratio" else getattr(base_args, name)
    return value.value if isinstance(value, enum.Enum) else value


def _as_param(dist: Any, value: Any) -> Any:
    """``value`` as Optuna holds it for ``dist``: a float for a float range, an int for an int range."""
    import optuna

    if isinstance(dist, optuna.distributions.FloatDistribution):
        return float(value)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return int(value)
    return value


def _can_produce(dist: Any, value: Any) -> bool:
    """True when the (normalised) distribution can produce ``value``."""
    import optuna

    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(dist, optuna.distributions.FloatDistribution):
        # e.g. max_length=None in the base args: no base value in the range
        return numeric and not math.isnan(value) and not (dist.log and value <= 0) and dist.low <= value <= dist.high
    if isinstance(dist, optuna.distributions.IntDistribution):
        return numeric and float(value).is_integer() and dist.low <= value <= dist.high
    try:
        return value in dist.choices
    except TypeError:  # an unhashable base value
        return False


def _shown(value: Any) -> Any:
    """A base value as readers show it (JSON: stored with the trial)."""
    if value is _UNKNOWN:
        return "(default)"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, type) or callable(value):
        return getattr(value, "__name__", None) or str(value)
    return str(value)
