"""The baseline trial: run with the base arguments, it leaves names unsampled, and the factories must build
from params that do not hold them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from st_hpo._definition import _args, _space
from st_hpo._definition._baseline import baseline_values
from st_hpo._definition._study import Study, is_model_factory
from st_hpo.exceptions import StudyDefinitionError

if TYPE_CHECKING:
    from transformers import TrainingArguments

    from st_hpo._definition._resources import StudyResources
    from st_hpo._validation._state import Validation

__all__ = ["check_unsampled_baseline"]


def check_unsampled_baseline(state: Validation) -> None:
    """The factories build from the baseline trial's params."""
    _check_unsampled_baseline(state.study, state.resources, state.model, state.base_args, state.names)


def _check_unsampled_baseline(study: Study, resources: StudyResources, model: Any, base_args: TrainingArguments,
                              names: set[str]) -> None:
    """A baseline that leaves names unsampled (a ``model.`` name or a loss factory's ``loss.`` name has no base
    value, a base value lies outside the space, or the space is define-by-run) calls the factories with params
    that do not hold them: the loss (and, when ``model.`` names are searched, the model) must build from them."""
    import optuna

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
