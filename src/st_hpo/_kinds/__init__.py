"""Model kinds: chosen in one place from what a study's parts say.

A study's kind comes from ``Study(kind=...)``, its ``args`` (a ``CrossEncoderTrainingArguments`` object
means CrossEncoder), or its ``model`` (an instance); a model factory's returned class decides when
nothing else does (:func:`resolve_kind`). Parts that contradict each other are refused in one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from st_hpo._kinds._base import ModelKind
from st_hpo._tracking._schema import KIND_ATTR
from st_hpo.exceptions import StudyDefinitionError

if TYPE_CHECKING:
    import optuna

__all__ = ["KIND_ATTR", "KIND_NAMES", "ModelKind", "all_kinds", "check_kind_of", "declared_kind", "kind_named", "kind_of_model",
           "resolve_kind", "stored_kind"]


#: The kinds by name, in the order they are tried.
KIND_NAMES = ("sentence-transformer", "cross-encoder", "sparse-encoder", "multi-vector-encoder")


def all_kinds() -> list[ModelKind]:
    from st_hpo._kinds import _cross_encoder, _multi_vector, _sentence_transformer, _sparse_encoder

    return [_sentence_transformer.KIND, _cross_encoder.KIND, _sparse_encoder.KIND, _multi_vector.KIND]


def kind_named(name: str) -> ModelKind:
    for kind in all_kinds():
        if kind.name == name:
            return kind
    raise StudyDefinitionError(f"kind={name!r} is not a model kind; use one of {', '.join(KIND_NAMES)}")


def _kind_of_args(args: Any) -> ModelKind | None:
    if isinstance(args, dict) or args is None:
        return None
    return next((k for k in all_kinds() if k.owns_args(args)), None)


def kind_of_model(model: Any) -> ModelKind | None:
    """The kind of a model instance (None for anything that is not one of the four model classes)."""
    return next((k for k in all_kinds() if k.owns_model(model)), None)


def declared_kind(study: Any) -> ModelKind | None:
    """The kind the study's ``kind``, ``args`` and model instance say (None: only a model factory can tell).

    Raises StudyDefinitionError when they disagree.
    """
    sources: list[tuple[str, ModelKind]] = []
    if getattr(study, "kind", None):
        sources.append((f"kind={study.kind!r}", kind_named(study.kind)))
    by_args = _kind_of_args(study.args)
    if by_args is not None:
        sources.append((f"args is a {type(study.args).__name__}", by_args))
    if not isinstance(study.model, str) and not _is_factory(study.model):
        by_model = kind_of_model(study.model)
        if by_model is not None:
            sources.append((f"model is a {type(study.model).__name__}", by_model))
    for (what, kind), (other_what, other) in zip(sources, sources[1:], strict=False):
        if kind is not other:
            raise StudyDefinitionError(
                f"the study's parts name two model kinds: {what} ({kind.model_class_name}) but {other_what} "
                f"({other.model_class_name}); make them agree, e.g. args={other.args_class_name}(...)"
            )
    return sources[0][1] if sources else None


def _is_factory(model: Any) -> bool:
    """A ``(params) -> model`` callable, as opposed to a model instance (a module is callable too)."""
    from st_hpo._kinds._base import is_model_factory

    return is_model_factory(model)


def resolve_kind(study: Any, probe_model: Any | None = None) -> ModelKind:
    """The study's kind: the declared one, else the class of the model a factory returned, else
    SentenceTransformer. Raises StudyDefinitionError when the factory's model contradicts the declaration."""
    declared = declared_kind(study)
    built = kind_of_model(probe_model) if probe_model is not None else None
    if probe_model is not None and built is None:
        raise StudyDefinitionError(
            f"the model is a {type(probe_model).__name__}, not a SentenceTransformer, CrossEncoder, SparseEncoder "
            "or MultiVectorEncoder"
        )
    if declared is not None and built is not None and declared is not built:
        raise StudyDefinitionError(
            f"the model factory returned a {built.model_class_name}, but the study says {declared.model_class_name} "
            f"(its args or kind=); return a {declared.model_class_name} or use {built.args_class_name}"
        )
    return declared or built or kind_named("sentence-transformer")


def stored_kind(optuna_study: optuna.Study) -> ModelKind:
    """The kind a stored study trains (SentenceTransformer for studies from before kinds were recorded)."""
    return kind_named(optuna_study.user_attrs.get(KIND_ATTR, "sentence-transformer"))


def check_kind_of(kind: ModelKind, what: str, part: Any) -> None:
    """Refuse a loss or evaluator (class or instance) of another model kind than the study's."""
    foreign = kind.package_of(part)
    if foreign:
        name = part.__name__ if isinstance(part, type) else type(part).__name__
        where = "losses" if what == "loss" else "evaluation"
        raise StudyDefinitionError(
            f"{what} {name} is from {foreign}, but the study trains a {kind.model_class_name}; use one from "
            f"{kind.package}.{where} (or change the study's kind: its args class, model or kind=)"
        )
