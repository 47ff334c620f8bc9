"""What a trial really trained with, stored with the trial, and what every reader shows of it.

A trial's sampled values are not always what Optuna holds in ``trial.params``: a :class:`~st_hpo.Choice`
is sampled by its label (the trial trains with the label's value), and a define-by-run space returns
values it computed from suggestions that may not be arguments at all (a ``use_warmup`` switch). So every
trial stores its configuration as the user attribute ``st_hpo.config``::

    {"values": {name: value, ...},     # JSON-able values the trial trained with, names as in the space
     "labels": {name: label, ...},     # the sampled label of every Choice name
     "unrecorded": {name: text, ...},  # values that are not JSON (a loss class), shown as text
     "shown": {...}}                   # only for a baseline: the base value of every name of the space

A value that is not JSON-able is found again on read through the study's space: a Choice's by its label,
anything else by running the space on the trial's sampled params. :func:`trained_values` (what to train
with: ``retrain``, ``export``) and :func:`shown_params` (what to show: MLflow params, ``status``,
``best``, the reports) are the only readers of the record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from st_hpo._definition import _space
from st_hpo._tracking._schema import (
    BASELINE_UNSAMPLED_ATTR,
    CONFIG_ATTR,
    EFFECTIVE_PARAMS_ATTR,
    RUN_ATTR,
    UNSAMPLED_ATTR,
)
from st_hpo.exceptions import StudyDefinitionError

__all__ = ["BASELINE_UNSAMPLED_ATTR", "CONFIG_ATTR", "UNSAMPLED_ATTR", "run_id_of", "shown_params", "store_config",
           "trained_values"]

#: What a baseline run unsampled recorded before ``st_hpo.config`` existed (read, never written).
_LEGACY_EFFECTIVE_ATTR = EFFECTIVE_PARAMS_ATTR


def _json_safe(value: Any) -> bool:
    try:
        return json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        return False


def store_config(trial: Any, values: Mapping[str, Any], labels: Mapping[str, str], *,
                 shown: Mapping[str, Any] | None = None) -> None:
    """Record on ``trial`` the ``values`` it trains with and the ``labels`` of its Choice names."""
    safe = {k: v for k, v in values.items() if _json_safe(v)}
    record: dict[str, Any] = {"values": safe, "labels": dict(labels)}
    unrecorded = {k: _text(v) for k, v in values.items() if k not in safe and k not in labels}
    if unrecorded:
        record["unrecorded"] = unrecorded
    if shown is not None:
        record["shown"] = dict(shown)
    trial.set_user_attr(CONFIG_ATTR, record)


def _text(value: Any) -> str:
    if isinstance(value, type):
        return value.__name__
    return getattr(value, "__qualname__", None) or str(value)


def run_id_of(trial: Any, synced_runs: Mapping[str, str]) -> str | None:
    """The MLflow run id of ``trial``'s run: the one ``st-hpo sync`` made anew, when it did
    (``synced_runs``: the study's ``SYNCED_RUNS_ATTR``), else the one the trial recorded (None when untracked)."""
    return synced_runs.get(str(trial.number)) or trial.user_attrs.get(RUN_ATTR)


def shown_params(trial: Any) -> dict[str, Any]:
    """What to show as a trial's params (MLflow, ``status``, ``best``, trials.csv): Optuna's suggestions
    (helper ones of a define-by-run space too), the values the trial trained with, and the label of each
    Choice name; a baseline run unsampled shows its base values, a queued trial the values it was queued
    with."""
    record = trial.user_attrs.get(CONFIG_ATTR)
    if record is None:  # a queued trial, or one stored before trials recorded their configuration
        if trial.params:
            return dict(trial.params)
        legacy = trial.user_attrs.get(_LEGACY_EFFECTIVE_ATTR)
        if legacy:
            return dict(legacy)
        if trial.state.name == "WAITING":
            return dict(trial.system_attrs.get("fixed_params") or {})
        return {}
    if "shown" in record:
        return dict(record["shown"])
    return {**trial.params, **record["values"], **record.get("unrecorded", {}), **record["labels"]}


def trained_values(trial: Any, space: Any) -> dict[str, Any]:
    """The values ``trial`` trained with (names as in ``space``); none for a baseline run unsampled.

    ``space`` is the study's search space: it gives back what the record could not hold as JSON (a
    Choice's value by its label). StudyDefinitionError when the space no longer has it.
    """
    record = trial.user_attrs.get(CONFIG_ATTR)
    if trial.user_attrs.get(UNSAMPLED_ATTR):
        return {}
    if record is None:  # stored before trials recorded their configuration: the space on its params
        return _resampled(trial, space)
    values = dict(record["values"])
    for name, label in record["labels"].items():
        if name not in values:
            choice = space.get(name) if isinstance(space, Mapping) else None
            if not hasattr(choice, "value") or label not in getattr(choice, "labels", ()):
                raise StudyDefinitionError(
                    f"trial {trial.number} trained with {name}={label!r}, a Choice label the study's space no "
                    "longer has; was the study file changed since the study ran?")
            values[name] = choice.value(label)
    missing = [name for name in record.get("unrecorded", {}) if name not in values]
    if missing:
        again = _resampled(trial, space)
        values.update({name: again[name] for name in missing if name in again})
    return values


def _resampled(trial: Any, space: Any) -> dict[str, Any]:
    """The space sampled again with the trial's own params (what a trial stored without a record ran)."""
    import optuna

    try:
        return _space.sample(space, optuna.trial.FixedTrial(dict(trial.params)))
    except Exception as exc:  # noqa: BLE001 - a changed study file: say so in one line
        raise StudyDefinitionError(
            f"trial {trial.number}'s values could not be rebuilt from the study's space ({type(exc).__name__}: "
            f"{exc}); was the study file changed since the study ran?") from None
