"""Keeping the best trial's model, so that the study's result is on disk without retraining.

In a multi-objective study there is no one best: a trial keeps its model when it enters the Pareto front
(no feasible complete trial dominates it), and the models of trials that left the front are deleted, so the
folder holds one model per trial of the front.

With ``Study(keep_best_model=True)`` (the default) a trial whose final objective beats every complete
trial so far saves its fine-tuned model to ``<output-dir>/trials/trial-N/model`` before its memory is
released. After every trial ends, the saved models of finished trials that are not the study's best are
deleted, so that when the study ends the folder holds one model: the best trial's. Saved models of trials
still running (on other workers) are left alone, so several workers can share the folder.

A model is written to ``model.partial-<pid>`` and renamed into place, so a worker killed while saving
leaves no half-written ``model`` folder (the partial one is deleted with the next clean-up).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from st_hpo._tracking._census import is_feasible
from st_hpo._tracking._front import dominates, study_front
from st_hpo._tracking._schema import MODEL_DIR_ATTR

__all__ = ["MODEL_DIR_ATTR", "beats_best", "best_number", "enters_front", "keep_only_best", "kept_numbers",
           "model_dir", "save_model", "saved_best_model"]

logger = logging.getLogger(__name__)



def model_dir(output_dir: Path, number: int) -> Path:
    """Where trial ``number`` saves its model."""
    return Path(output_dir) / "trials" / f"trial-{number}" / "model"


def beats_best(study: Any, value: float) -> bool:
    """True when ``value`` is strictly better than every complete trial of ``study`` (or there is none)."""
    import optuna

    values = [t.value for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if t.value is not None and is_feasible(t)]
    if not values:
        return True
    if study.direction == optuna.study.StudyDirection.MINIMIZE:
        return value < min(values)
    return value > max(values)


def enters_front(study: Any, values: list[float]) -> bool:
    """True when no feasible complete trial of the multi-objective ``study`` dominates ``values``."""
    maximize = [d.name == "MAXIMIZE" for d in study.directions]
    return not any(dominates(t.values, values, maximize) for t in study_front(study))


def save_model(model: Any, output_dir: Path, number: int) -> Path:
    """Save ``model`` (a SentenceTransformer) as trial ``number``'s model; a rename makes it appear whole."""
    final = model_dir(output_dir, number)
    partial = final.with_name(f"model.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(partial))
    if final.exists():  # a re-run of the same trial number cannot happen; an earlier interrupted rename can
        shutil.rmtree(final)
    os.replace(partial, final)
    return final


def keep_only_best(study: Any, output_dir: Path) -> None:
    """Delete the saved models (and partial saves) of finished trials that are not the study's best."""
    trials_dir = Path(output_dir) / "trials"
    if not trials_dir.is_dir():
        return
    trials = study.get_trials(deepcopy=False)
    finished = {t.number for t in trials if t.state.is_finished()}
    kept = kept_numbers(study, trials)
    for path in trials_dir.glob("trial-*/model*"):
        try:
            number = int(path.parent.name.removeprefix("trial-"))
        except ValueError:
            continue
        if number in finished and (number not in kept or path.name != "model"):
            shutil.rmtree(path, ignore_errors=True)
            logger.debug("deleted %s: trial %d is not the best", path, number)


def saved_best_model(study: Any) -> Path | None:
    """The best trial's saved model folder, when it was kept and is on this machine; else None."""
    trials = study.get_trials(deepcopy=False)
    best = best_number(study, trials)
    if best is None:
        return None
    trial = next(t for t in trials if t.number == best)
    saved = trial.user_attrs.get(MODEL_DIR_ATTR)
    if saved and (Path(saved) / "modules.json").is_file():
        return Path(saved)
    return None


def kept_numbers(study: Any, trials: list[Any]) -> set[int]:
    """The trials whose models are kept: the best one, or (several objectives) those of the Pareto front."""
    if len(study.directions) > 1:
        return {t.number for t in study_front(study, trials)}
    best = best_number(study, trials)
    return set() if best is None else {best}


def best_number(study: Any, trials: list[Any]) -> int | None:
    """The number of the study's best feasible complete trial (``trials`` is the study's list), or None; None
    in a multi-objective study, which has a Pareto front instead (:func:`kept_numbers`)."""
    if len(study.directions) > 1 or not any(t.state.name == "COMPLETE" and is_feasible(t) for t in trials):
        return None
    return study.best_trial.number
