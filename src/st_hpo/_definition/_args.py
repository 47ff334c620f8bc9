"""Training arguments: the base arguments of a study, and a trial's clone of them with its sampled values.

Arguments are rebuilt, never mutated: :func:`clone_args` makes a new object with ``dataclasses.replace``,
so ``__post_init__`` validation and derived fields run again for every trial.

``warmup_ratio`` works on both stacks users have: on transformers 5 (sentence-transformers 6) the ratio
lives in ``warmup_steps`` as a float in [0, 1) and ``warmup_ratio`` is a deprecated alias that reads back
as None; on transformers 4 ``warmup_ratio`` is the field itself. A sampled ratio is written where the
installed transformers reads it, so it reaches the scheduler (the trap ``Trainer.hyperparameter_search``
falls into on transformers 5 is a ``setattr`` after validation, which the scheduler never sees).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import enum
import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from st_hpo._definition._compat import batch_sampler_enums
from st_hpo.exceptions import SearchSpaceError, StudyDefinitionError

__all__ = [
    "FACTORY_PREFIXES",
    "RESERVED_ARGS",
    "args_to_dict",
    "arguments_off_the_gpu",
    "build_base_args",
    "check_arg_value",
    "clone_args",
    "pick_device",
    "suggest_name",
    "split_params",
    "training_arg_names",
    "uses_warmup_steps_for_ratio",
]

#: Space names with these prefixes go to the model and loss factories, not to the training arguments.
FACTORY_PREFIXES = ("loss.", "model.")

_STUDY_SCHEDULE = ("every trial of a study evaluates at the same points of training (the base args' cadence, or "
                   "where the pruner decides when they set none), so that the pruner compares like with like; set "
                   "it in the base args")
#: Why ``auto_find_batch_size`` is refused, in the base args and in the space.
AUTO_FIND_BATCH_SIZE = ("auto_find_batch_size halves the batch size when a step runs out of memory, which changes "
                        "a contrastive loss's in-batch negatives (so the objective) behind the sampler's back; use a "
                        "Cached loss (CachedMultipleNegativesRankingLoss, CachedGISTEmbedLoss, ...), whose "
                        "mini_batch_size st-hpo lowers on out of memory without changing the result, and leave "
                        "batch sizes that do not fit to the sampler, which learns from out-of-memory trials")
#: Fields st-hpo sets for every trial, or that no trial would use; a space that samples them is an error.
RESERVED_ARGS = {
    "auto_find_batch_size": AUTO_FIND_BATCH_SIZE,
    "output_dir": "st-hpo gives every trial its own output_dir under the study's output directory",
    "run_name": "st-hpo names each trial's run 'trial-<number>'",
    "report_to": "st-hpo logs to MLflow itself, one child run per trial",
    "eval_strategy": _STUDY_SCHEDULE,
    "eval_steps": _STUDY_SCHEDULE,
    "load_best_model_at_end": "a trial's value is its model's score at the end of training, and st-hpo keeps "
                              "that model itself; an earlier checkpoint loaded at the end would not be the one scored",
    "label_smoothing_factor": "sentence-transformers' trainers never read it (the loss module computes the loss); "
                              "search the loss's own parameters with 'loss.' names instead",
}

#: Deprecated argument names and the fields that hold their value (transformers 5 resets an alias that is
#: changed on a copy of the arguments to the value of the field it mirrors).
ALIASES = {"gradient_checkpointing": "activation_checkpointing",
           "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs"}
#: A field set to False whose companions, when set, turn it back on in the arguments' post-init
#: (``torch_compile_backend="inductor"`` is implied by a base ``torch_compile=True``).
_IMPLIED_BY = {"torch_compile": ("torch_compile_backend", "torch_compile_mode")}
#: Whole-number fields: an integral float (``16.0`` from a categorical list) is passed on as an int.
_COUNTS = frozenset({"per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "max_steps", "seed", "data_seed"})


def _args_class(args_class: type | None = None) -> type:
    """``args_class``, or the default kind's (SentenceTransformer's) arguments class."""
    if args_class is not None:
        return args_class
    from sentence_transformers import SentenceTransformerTrainingArguments

    return SentenceTransformerTrainingArguments


def training_arg_names(args_class: type | None = None) -> set[str]:
    """Names of the fields a user can set on ``args_class`` (default ``SentenceTransformerTrainingArguments``)."""
    return {f.name for f in dataclasses.fields(_args_class(args_class)) if f.init and not f.name.startswith("_")}


def uses_warmup_steps_for_ratio() -> bool:
    """True on transformers 5+, where a warmup ratio is given as a float ``warmup_steps``."""
    import transformers

    return "warmup_ratio" not in {f.name for f in dataclasses.fields(transformers.TrainingArguments)}


def suggest_name(name: str, known: set[str]) -> str:
    """' did you mean ...?' text for an unknown name, or ''."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Split sampled values into (training-argument overrides, loss params, model params).

    Loss and model params lose their prefix: ``{"loss.scale": 20}`` gives loss params ``{"scale": 20}``.
    """
    overrides: dict[str, Any] = {}
    loss_params: dict[str, Any] = {}
    model_params: dict[str, Any] = {}
    for key, value in params.items():
        if key.startswith("loss."):
            loss_params[key[len("loss.") :]] = value
        elif key.startswith("model."):
            model_params[key[len("model.") :]] = value
        else:
            overrides[key] = value
    return overrides, loss_params, model_params


def _warmup_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Write a sampled ``warmup_ratio`` where the installed transformers reads it."""
    if "warmup_ratio" not in overrides:
        return overrides
    out = dict(overrides)
    ratio = out.pop("warmup_ratio")
    ratio = 0.0 if ratio is None else float(ratio)
    if uses_warmup_steps_for_ratio():
        out["warmup_steps"] = ratio  # a float in [0, 1) is a ratio on transformers 5
        out["warmup_ratio"] = None
    else:
        out["warmup_ratio"] = ratio
        out["warmup_steps"] = 0  # on transformers 4 any warmup_steps > 0 would override the ratio
    return out


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def build_base_args(args: Any, *, output_dir: str, args_class: type | None = None) -> Any:
    """The study's base arguments as an object of the kind's ``args_class`` (default
    ``SentenceTransformerTrainingArguments``).

    ``args`` is an arguments object or a dict of its fields; reporting to other trackers is switched
    off (st-hpo logs to MLflow itself) and ``output_dir`` defaults to the study's trial folder.
    """
    cls = _args_class(args_class)
    if isinstance(args, Mapping):
        fields = dict(args)
        known = training_arg_names(cls)
        unknown = sorted(set(fields) - known)
        if unknown:
            name = unknown[0]
            raise StudyDefinitionError(
                f"unknown training argument {name!r} in Study(args=...) for {cls.__name__}"
                f"{suggest_name(name, known)}"
            )
        fields = _warmup_overrides(fields)
        fields.setdefault("output_dir", output_dir)
        fields["report_to"] = "none"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return _construct(cls, fields)
        except (ValueError, TypeError) as exc:
            raise StudyDefinitionError(f"Study(args=...) is not valid: {exc}") from None
    if not isinstance(args, cls):
        raise StudyDefinitionError(
            f"Study(args=...) must be a {cls.__name__} or a dict of its fields, "
            f"not {type(args).__name__}; build it with {cls.__name__}(...) (the same "
            "fields) or pass a dict"
        )
    return clone_args(args, {}, output_dir=output_dir, run_name=args.run_name)


def clone_args(base: Any, overrides: Mapping[str, Any], *, output_dir: str, run_name: str | None) -> Any:
    """A new arguments object: ``base`` with ``overrides`` applied, validated again; ``base`` is untouched.

    Raises ``ValueError``/``TypeError`` from the arguments' own validation when a value is not allowed.
    """
    changes = _warmup_overrides({_field_of(base, k): _whole(k, _plain(v)) for k, v in overrides.items()})
    for name, companions in _IMPLIED_BY.items():  # e.g. no compile: the backend the base implied goes too
        if changes.get(name) is False:
            changes.update({c: None for c in companions if c not in changes and hasattr(base, c)})
    changes.update(output_dir=output_dir, run_name=run_name, report_to="none")
    with warnings.catch_warnings():
        # the deprecated-alias warning is about how the ratio is stored, which clone_args handles
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*warmup_ratio.*")
        args = _construct(lambda **kw: dataclasses.replace(base, **kw), changes, template=base)
    for name, wanted in changes.items():  # a value the arguments' own post-init overrode is never trained with
        if name in ("output_dir", "run_name", "report_to") or not isinstance(wanted, (bool, int, float, str)):
            continue
        got = _plain(getattr(args, name, wanted))
        if got != wanted and got != _as_stored(type(base), name, wanted, output_dir):
            raise ValueError(f"{name}={wanted!r} does not take effect: {type(base).__name__} sets it to {got!r} "
                             "from the other arguments")
    return args


def _as_stored(cls: type, name: str, value: Any, output_dir: str) -> Any:
    """``value`` as ``cls`` stores it when given alone (``True`` -> ``"all"``, a JSON string -> a dict), so that
    a normalised value is not mistaken for one the other arguments overrode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _plain(getattr(cls(output_dir=output_dir, report_to="none", **{name: value}), name, value))
    except Exception:  # noqa: BLE001 - a value the class refuses alone: the mismatch stands
        return value


def _field_of(base: Any, name: str) -> str:
    """The field that holds ``name``'s value (a deprecated alias's new name, where the class has it)."""
    new = ALIASES.get(name)
    return new if new is not None and hasattr(base, new) else name


def _whole(name: str, value: Any) -> Any:
    if name in _COUNTS and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def effective_warmup_ratio(args: Any) -> float:
    """The warmup ratio the scheduler will use (0.0 when warmup is a step count or absent)."""
    steps = getattr(args, "warmup_steps", 0) or 0
    if isinstance(steps, float) and 0.0 <= steps < 1.0:
        return steps
    ratio = getattr(args, "warmup_ratio", None)
    return float(ratio) if ratio else 0.0


def args_to_dict(args: Any) -> dict[str, Any]:
    """The arguments as plain JSON values, secrets redacted by the arguments' own serialisation."""
    data = json.loads(args.to_json_string())
    if "warmup_ratio" in data and data["warmup_ratio"] is None:
        data["warmup_ratio"] = effective_warmup_ratio(args)
    return data


# --- value rules, checked before any training ---------------------------------------------------------


_SAMPLER_ARGS = ("batch_sampler", "multi_dataset_batch_sampler")


def _enum_values(name: str) -> tuple[str, ...] | None:
    if name in _SAMPLER_ARGS:
        enum_cls = batch_sampler_enums()[name == "multi_dataset_batch_sampler"]
        return tuple(v.value for v in enum_cls)
    if name == "lr_scheduler_type":
        from transformers import SchedulerType

        return tuple(v.value for v in SchedulerType)
    if name == "optim":
        from transformers.training_args import OptimizerNames

        return tuple(v.value for v in OptimizerNames)
    return None


_POSITIVE = {"learning_rate", "num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size",
             "gradient_accumulation_steps", "adam_epsilon"}
_NON_NEGATIVE = {"weight_decay", "max_grad_norm", "label_smoothing_factor", "warmup_steps"}
_INTEGER = {"per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
            "max_steps", "seed", "eval_steps", "logging_steps", "save_steps"}
_UNIT_INTERVAL = {"adam_beta1", "adam_beta2"}
#: Fields that take whole numbers only.
INTEGER_ARGS = frozenset(_INTEGER)
#: Fields whose base value is checked too (integers are left to the arguments class: ``eval_steps=0.125``
#: is a ratio there).
BASE_CHECKED = _POSITIVE | _NON_NEGATIVE | _UNIT_INTERVAL


def check_base_values(base: Any) -> None:
    """Raise StudyDefinitionError when the base arguments hold a value no trial can train with."""
    for name in sorted(BASE_CHECKED):
        if hasattr(base, name):
            problem = check_arg_value(name, getattr(base, name))
            if problem:
                raise StudyDefinitionError(f"Study(args=...): {problem}")
    if getattr(base, "auto_find_batch_size", False):
        raise StudyDefinitionError(f"Study(args=...): auto_find_batch_size=True is refused: {AUTO_FIND_BATCH_SIZE}")
    for name in _CUDA_ONLY:
        problem = check_precision(base, name, getattr(base, name, False))
        if problem:
            raise StudyDefinitionError(f"Study(args=...): {problem}")


#: True while a process that never trains (a supervisor whose workers own the GPUs) builds arguments.
_OFF_THE_GPU: contextvars.ContextVar[bool] = contextvars.ContextVar("st_hpo_arguments_off_the_gpu", default=False)
#: What transformers changes when ``use_cpu=True``: given back after an off-the-GPU build.
_CPU_SET = ("use_cpu", "dataloader_pin_memory")


@contextlib.contextmanager
def arguments_off_the_gpu(on: bool = True) -> Iterator[None]:
    """Within this, the training arguments built here never touch the GPU (``on``; for a process that never
    trains). transformers resolves the device while it builds the arguments, and on a GPU machine that calls
    ``torch.cuda.set_device``, which creates a CUDA context the process then holds for good: measured on an
    H200, a supervisor listed by nvidia-smi beside its two workers. The arguments read back as asked
    (``use_cpu``, ``dataloader_pin_memory``); only the device they resolved, which nothing here trains on,
    is the CPU."""
    token = _OFF_THE_GPU.set(bool(on) or _OFF_THE_GPU.get())
    try:
        yield
    finally:
        _OFF_THE_GPU.reset(token)


def _construct(make: Callable[..., Any], fields: dict[str, Any], *, template: Any = None) -> Any:
    """``make(**fields)``; off the GPU (:func:`arguments_off_the_gpu`), built with ``use_cpu=True`` and then
    given back the ``use_cpu`` and ``dataloader_pin_memory`` asked for (from ``fields``, else ``template``,
    else the class defaults)."""
    if not _OFF_THE_GPU.get() or fields.get("use_cpu"):
        return make(**fields)
    args = make(**{**fields, "use_cpu": True})
    defaults = {f.name: f.default for f in dataclasses.fields(args)}
    for name in _CPU_SET:
        wanted = fields[name] if name in fields else getattr(template, name, defaults.get(name))
        object.__setattr__(args, name, wanted)
    return args


def pick_device(args: Any = None) -> str:
    """Where the trials train: ``cuda`` when a GPU is visible to this process and the training arguments
    ``args`` (if given) do not say ``use_cpu=True``, else ``cpu``."""
    import torch

    if args is not None and getattr(args, "use_cpu", False):
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


#: Half-precision flags that need a CUDA GPU (torch's CPU autocast runs bfloat16 only).
_CUDA_ONLY = ("fp16", "fp16_full_eval")


def check_precision(base: Any, name: str, value: Any) -> str | None:
    """Why ``name=value`` cannot train where this process trains (fp16 without a CUDA GPU), or None."""
    if name not in _CUDA_ONLY or value is not True:
        return None
    if pick_device(base) != "cpu":
        return None
    where = "the base args set use_cpu=True" if getattr(base, "use_cpu", False) else "no CUDA GPU is visible"
    return (f"{name}=True needs a CUDA GPU, but {where}; remove {name} to train in fp32 on the CPU (or use "
            "bf16=True with use_cpu=True for mixed precision there), or run where a GPU is visible")


def check_arg_value(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be given to training argument ``name`` (the rule and the fix), or None."""
    value = _plain(value)
    if name in _SAMPLER_ARGS and callable(value):  # a BatchSampler class or factory: the trainer takes it
        return None
    allowed = _enum_values(name)
    if allowed is not None:
        if value not in allowed:
            return f"{name}={value!r} is not one of the allowed values ({', '.join(allowed)})"
        return None
    if name == "warmup_ratio":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
            return f"warmup_ratio={value!r} must be a ratio in [0, 1), e.g. 0.1 for 10% of the steps"
        return None
    numeric = name in _POSITIVE | _NON_NEGATIVE | _INTEGER | _UNIT_INTERVAL
    if numeric and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        return f"{name}={value!r} must be a number"
    if name in _INTEGER and isinstance(value, float) and not value.is_integer():
        return f"{name}={value!r} must be a whole number; use an IntDistribution"
    if name in _POSITIVE and value <= 0:
        return f"{name}={value!r} must be greater than 0"
    if name in _NON_NEGATIVE and value < 0:
        return f"{name}={value!r} must not be negative"
    if name in _UNIT_INTERVAL and not 0.0 <= value < 1.0:
        return f"{name}={value!r} must lie in [0, 1)"
    return None


def check_clone(base: Any, name: str, value: Any) -> str | None:
    """Let the arguments' own validation judge ``name=value`` on a clone of ``base``; the reason or None."""
    try:
        clone_args(base, {name: value}, output_dir=base.output_dir, run_name=None)
    except (ValueError, TypeError) as exc:
        return f"{name}={value!r} is rejected by {type(base).__name__}: {exc}"
    return None


def check_space_name(name: str, args_class: type | None = None) -> None:
    """Raise SearchSpaceError when ``name`` is not a settable field of ``args_class`` (loss./model. excepted)."""
    if name.startswith(FACTORY_PREFIXES):
        return
    if name in RESERVED_ARGS:
        raise SearchSpaceError(f"the space samples {name!r}, but {RESERVED_ARGS[name]}; remove it from the space")
    known = training_arg_names(args_class)
    if name not in known:
        raise SearchSpaceError(
            f"unknown training argument {name!r} in the space{suggest_name(name, known)} "
            "(names with a 'loss.' or 'model.' prefix go to the loss and model factories)"
        )
