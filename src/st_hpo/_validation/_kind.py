"""The study's model kind, and the probe: one sample of the space and the model it builds, which the checks
of the loss, the baseline and the evaluators run on."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from st_hpo._definition import _args, _space
from st_hpo._definition._compat import evaluator_base
from st_hpo._definition._study import Study, is_model_factory
from st_hpo._kinds import ModelKind, check_kind_of, declared_kind, kind_named, resolve_kind
from st_hpo.exceptions import StudyDefinitionError

if TYPE_CHECKING:
    from st_hpo._definition._resources import StudyResources
    from st_hpo._validation._state import Validation

__all__ = ["build_probe", "check_kind_of_parts", "resolve_study_kind"]


def resolve_study_kind(state: Validation) -> None:
    """The study's kind, told to its resources; a model factory with no kind declared by ``kind=``, ``args``
    or a model instance is asked for one model (the probe) to tell it."""
    state.kind, state.probe = _study_kind(state.study, state.resources)


def build_probe(state: Validation) -> None:
    """One sample of the space and the model it builds, unless telling the kind already built them."""
    state.probe = state.probe or _probe(state.study, state.resources)


def check_kind_of_parts(state: Validation) -> None:
    """The loss class(es) and an evaluator instance must be the study's kind's (or shared ones)."""
    _check_kind_of_parts(state.kind, state.study, state.resources)


def _probe_params(study: Study) -> dict[str, Any]:
    """One sample of the space (from a throw-away study), to build a model and a loss for the checks."""
    import optuna

    dry = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return _space.sample(study.space, dry.ask())


def _study_kind(study: Study, resources: StudyResources) -> tuple[ModelKind, tuple[dict[str, Any], Any] | None]:
    """The study's kind, and the probe (params, model) when the model had to be built to tell it: a model
    factory, with no kind declared by ``kind=``, ``args`` or a model instance, is asked for one model."""
    kind = declared_kind(study)
    probe = None
    if kind is None and is_model_factory(study.model):
        probe = _probe(study, resources)
        kind = resolve_kind(study, probe[1])
    kind = kind or kind_named("sentence-transformer")
    resources.kind = kind
    return kind, probe


def _probe(study: Study, resources: StudyResources) -> tuple[dict[str, Any], Any]:
    """One sample of the space and the model it builds."""
    params = _probe_params(study)
    _, _, model_params = _args.split_params(params)
    return params, _probe_model(resources, params, model_params)


def _check_kind_of_parts(kind: ModelKind, study: Study, resources: StudyResources) -> None:
    """The loss class(es) and an evaluator instance must be the study's kind's (or shared ones); what factories
    build is checked where it is built."""
    for part in study.loss.values() if isinstance(study.loss, Mapping) else [study.loss]:
        if inspect.isclass(part):
            check_kind_of(kind, "loss", part)
    if isinstance(study.evaluator, evaluator_base()):
        check_kind_of(kind, "evaluator", study.evaluator)


def _probe_model(resources: StudyResources, params: dict[str, Any], model_params: dict[str, Any]) -> Any:
    """The model of the checks; a model factory that raises is named (it is called as model(params))."""
    try:
        return resources.new_model(params, model_params)
    except StudyDefinitionError:
        raise
    except Exception as exc:
        raise StudyDefinitionError(
            f"the model factory raised {type(exc).__name__}: {exc}; it is called as model(params), params being "
            "the trial's sampled values (a dict)"
        ) from exc
