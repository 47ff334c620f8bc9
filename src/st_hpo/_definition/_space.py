"""Search spaces: a declarative dict of Optuna distributions, or a define-by-run callable.

Names are ``SentenceTransformerTrainingArguments`` fields, or carry a ``loss.``/``model.`` prefix for the
factories. A space is checked before any training (:func:`check_space`): names against the arguments,
and the values each distribution can produce against the fields' rules and the arguments' validation.
A define-by-run space is checked by sampling it a number of times in a throw-away in-memory study.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

from st_hpo._definition import _args
from st_hpo._definition._choice import Choice
from st_hpo._definition._study import is_module
from st_hpo.exceptions import SearchSpaceError

__all__ = ["LOSS_NAME", "check_space", "dry_samples", "extreme_values", "loss_options", "sample",
           "sample_config", "space_defaults"]

#: The space name whose value is the loss itself (a Choice of loss classes in a dict space).
LOSS_NAME = "loss"

#: How many times a define-by-run space is sampled to check what it can produce.
DRY_SAMPLES = 16


def _normalize(dist: Any) -> Any:
    """Enum choices (e.g. ``BatchSamplers.NO_DUPLICATES``) become their string values."""
    import optuna

    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        choices = tuple(c.value if isinstance(c, enum.Enum) else c for c in dist.choices)
        return optuna.distributions.CategoricalDistribution(choices)
    return dist


def sample(space: Mapping[str, Any] | Callable[..., dict[str, Any]], trial: Any) -> dict[str, Any]:
    """The trial's values: every distribution of a dict space suggested (a Choice's value), or the callable's dict."""
    return sample_config(space, trial)[0]


def sample_config(space: Mapping[str, Any] | Callable[..., dict[str, Any]],
                  trial: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """(the trial's values, the sampled label of every Choice name): what it trains with, what to show."""
    if callable(space) and not isinstance(space, Mapping):
        values = space(trial)
        if not isinstance(values, Mapping):
            raise SearchSpaceError(
                f"the space callable returned {type(values).__name__}; it must return a dict of names to values"
            )
        return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in values.items()}, {}
    out: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for name, dist in space.items():
        if isinstance(dist, Choice):
            labels[name] = trial.suggest_categorical(name, dist.labels)
            out[name] = dist.value(labels[name])
        else:
            out[name] = _suggest(trial, name, _normalize(dist))
    return out, labels


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    import optuna

    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, optuna.distributions.FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise SearchSpaceError(f"space[{name!r}]: unsupported distribution {type(dist).__name__}")


def extreme_values(dist: Any) -> list[Any]:
    """The values that bound what ``dist`` can produce: low and high, or every choice."""
    import optuna

    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return list(_normalize(dist).choices)
    if isinstance(dist, (optuna.distributions.FloatDistribution, optuna.distributions.IntDistribution)):
        return [dist.low, dist.high]
    raise SearchSpaceError(
        f"{type(dist).__name__} is not a distribution st-hpo can check; use optuna.distributions."
        "FloatDistribution, IntDistribution or CategoricalDistribution"
    )


def _check_value(base_args: Any, name: str, value: Any) -> None:
    if name == LOSS_NAME:
        _check_loss_value(value)
        return
    if name.startswith(_args.FACTORY_PREFIXES):
        return
    reason = (_args.check_arg_value(name, value) or _args.check_precision(base_args, name, value)
              or _args.check_clone(base_args, name, value))
    if reason:
        raise SearchSpaceError(f"search space: {reason}")


def _check_loss_value(value: Any) -> None:
    if is_module(value) or not callable(value):
        shown = type(value).__name__ if is_module(value) else repr(value)
        raise SearchSpaceError(
            f"the space's loss option {shown} is not a loss class or a callable (model, params) -> loss; give "
            "classes, e.g. 'loss': st_hpo.Choice({'cosent': CoSENTLoss, 'angle': AnglELoss})"
        )


def _check_name(name: str, args_class: type | None = None) -> None:
    if name != LOSS_NAME:
        _args.check_space_name(name, args_class)


def loss_options(space: Mapping[str, Any] | Callable[..., Any]) -> list[Any]:
    """The losses a dict space's ``loss`` Choice can give (every one is checked on rows), else []."""
    dist = space.get(LOSS_NAME) if isinstance(space, Mapping) else None
    return list(dist.options.values()) if isinstance(dist, Choice) else []


def _check_conflicts(base_args: Any, names: set[str]) -> None:
    if "warmup_ratio" in names and "warmup_steps" in names:
        raise SearchSpaceError(
            "the space samples both 'warmup_ratio' and 'warmup_steps'; they set the same warmup, keep one"
        )
    steps = getattr(base_args, "warmup_steps", 0) or 0
    if "warmup_ratio" in names and isinstance(steps, int) and steps >= 1:
        raise SearchSpaceError(
            f"the space samples 'warmup_ratio' but the base args fix warmup_steps={steps}, which would "
            "override every sampled ratio; remove warmup_steps from the base args"
        )
    if "max_steps" in names and "num_train_epochs" in names:
        raise SearchSpaceError(
            "the space samples both 'max_steps' and 'num_train_epochs'; a max_steps > 0 overrides the epochs, "
            "so the sampled epochs would do nothing: keep one"
        )
    max_steps = getattr(base_args, "max_steps", -1)
    if "num_train_epochs" in names and isinstance(max_steps, int) and max_steps > 0:
        raise SearchSpaceError(
            f"the space samples 'num_train_epochs' but the base args fix max_steps={max_steps}, which overrides "
            "every sampled number of epochs; remove max_steps from the base args"
        )
    if "per_device_train_batch_size" in names and getattr(base_args, "auto_find_batch_size", False):
        raise SearchSpaceError(
            "the space samples 'per_device_train_batch_size' but the base args set auto_find_batch_size=True: "
            f"{_args.AUTO_FIND_BATCH_SIZE}; set auto_find_batch_size=False"
        )


def check_space(space: Mapping[str, Any] | Callable[..., dict[str, Any]], base_args: Any) -> set[str]:
    """Check every name and the values the space can produce; the names the space can sample."""
    import optuna

    if isinstance(space, Mapping):
        if not space:
            raise SearchSpaceError("the search space is empty; add at least one distribution, e.g. learning_rate")
        for name, dist in space.items():
            _check_name(name, type(base_args))
            if isinstance(dist, Choice):  # every value as if it were the only one
                for value in dist.options.values():
                    _check_value(base_args, name, value)
                continue
            if name == LOSS_NAME:
                raise SearchSpaceError(
                    f"space['loss'] is a {type(dist).__name__}; the loss is sampled with a Choice of loss "
                    "classes, e.g. 'loss': st_hpo.Choice({'cosent': CoSENTLoss, 'angle': AnglELoss})"
                )
            if not isinstance(dist, optuna.distributions.BaseDistribution):
                raise SearchSpaceError(
                    f"space[{name!r}] is a {type(dist).__name__}, not an Optuna distribution or a st_hpo.Choice; "
                    f"write e.g. FloatDistribution(1e-5, 1e-4, log=True) or CategoricalDistribution([{dist!r}])"
                )
            if name in _args.INTEGER_ARGS and isinstance(dist, optuna.distributions.FloatDistribution):
                raise SearchSpaceError(
                    f"space[{name!r}] is a FloatDistribution, which samples floats, but {name} takes whole "
                    "numbers; use "
                    f"IntDistribution({int(dist.low)}, {int(dist.high)}) or CategoricalDistribution([...])"
                )
            for value in extreme_values(dist):
                _check_value(base_args, name, value)
        names = set(space)
        _check_conflicts(base_args, names)
        return names
    names = set()
    for values in dry_samples(space):  # each sample on its own: a branch may sample warmup_ratio, another steps
        for name, value in values.items():
            _check_name(name, type(base_args))
            _check_value(base_args, name, value)
        _check_conflicts(base_args, set(values))
        names |= set(values)
    return names


def dry_samples(space: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    """``DRY_SAMPLES`` samples of a define-by-run space (a fixed random sampler), for the checks."""
    import optuna

    dry = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    samples = []
    for _ in range(DRY_SAMPLES):
        trial = dry.ask()
        try:
            samples.append(sample(space, trial))
        except SearchSpaceError:
            raise
        except Exception as exc:
            raise SearchSpaceError(f"the space callable raised {type(exc).__name__}: {exc}") from exc
        dry.tell(trial, 0.0)
    return samples


def space_defaults(space: Mapping[str, Any] | Callable[..., Any], base_args: Any, *,
                   base_loss: Any = None) -> dict[str, Any] | None:
    """The baseline's params when the space can produce the base value of every name, else None (see
    :func:`st_hpo._definition._baseline.baseline_values`)."""
    from st_hpo._definition._baseline import baseline_values

    values = baseline_values(space, base_args, base_loss=base_loss)
    return None if values is None or values.unsampled else values.params


def _outside(dist: Any, value: Any) -> str | None:
    """Why ``dist`` cannot produce ``value``, or None."""
    import optuna

    if isinstance(dist, Choice):
        return None if value in dist.labels else f"is not one of its labels {list(dist.labels)}"
    dist = _normalize(dist)
    value = value.value if isinstance(value, enum.Enum) else value
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return None if value in dist.choices else f"is not one of its choices {list(dist.choices)}"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "is not a number"
    if not dist.low <= value <= dist.high:
        return f"lies outside its range [{dist.low}, {dist.high}]"
    return None


def check_enqueued(configs: Any, space: Mapping[str, Any] | Callable[..., Any], base_args: Any) -> None:
    """Check the configurations a study queues first (``Study.enqueue``, ``--enqueue``) against the space.

    Every name must be one the space samples, and every value one its distribution can produce (Optuna
    would otherwise drop an unknown name and sample instead, or run a value the space excludes). Names the
    configuration leaves out are sampled. A define-by-run space can only have its values checked.
    """
    for i, config in enumerate(configs):
        if not isinstance(config, Mapping):
            raise SearchSpaceError(f"enqueue[{i}] is a {type(config).__name__}; give a dict of names to values")
        for name, value in config.items():
            where = f"enqueue[{i}]: {name}={value!r}"
            if isinstance(space, Mapping):
                if name not in space:
                    raise SearchSpaceError(f"{where}: the space does not sample {name!r}"
                                           f"{_args.suggest_name(name, set(space))} (it samples: "
                                           f"{', '.join(space)})")
                reason = _outside(space[name], value)
                if reason:
                    raise SearchSpaceError(f"{where} {reason}")
            elif not name.startswith(_args.FACTORY_PREFIXES):
                _check_value(base_args, name, value)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(type(a) is type(b) and a == b) or (a is None and b in (None, {}))
    except Exception:  # noqa: BLE001 - values that cannot be compared are not the same
        return False
