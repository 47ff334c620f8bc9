"""The time figures a trial records, and the parent run's totals of them.

Each trial records three figures (user attributes ``st_hpo.<name>``, and metrics of its MLflow run), for
complete, pruned and failed trials alike, an interrupted one included:

- ``trial_seconds``: the whole trial, from its start in the worker to its end: model and loss built,
  training, evaluations, its costs measured (a complete trial's ``cost.encode_ms`` passes, in a study that
  weighs it: see :mod:`st_hpo._execution._costs`), its model kept, its run written;
- ``train_seconds``: the time in the trainer's ``train()`` less the evaluations made during it: the
  training steps alone;
- ``eval_seconds``: the time in the objective's evaluations, those during training and the final one.

``train_seconds`` and ``eval_seconds`` do not overlap and both lie within ``trial_seconds``, so
``train_seconds + eval_seconds <= trial_seconds``. A trial whose process was killed records only
``trial_seconds`` (set by recovery, up to its last sign of life).

The parent run's ``trial_seconds_total``, ``train_seconds_total`` and ``eval_seconds_total`` sum each
figure over the same trials: every trial that ended (:data:`TOTALLED_STATES`), not the running ones.
"""

from __future__ import annotations

from typing import Any

from st_hpo._tracking._schema import PREFIX

__all__ = ["TIME_FIGURES", "TOTALLED_STATES", "time_totals"]

#: The figures every trial records, in seconds.
TIME_FIGURES = ("trial_seconds", "train_seconds", "eval_seconds")
#: The trials the parent run's totals add up: every trial that ended, whatever its state.
TOTALLED_STATES = ("COMPLETE", "PRUNED", "FAIL")


def time_totals(trials: list[Any]) -> dict[str, float]:
    """``{"<figure>_total": seconds}`` for each of :data:`TIME_FIGURES`, over the trials that ended."""
    ended = [t for t in trials if t.state.name in TOTALLED_STATES]
    return {f"{name}_total": round(sum(float(t.user_attrs.get(f"{PREFIX}{name}", 0.0)) for t in ended), 3)
            for name in TIME_FIGURES}
