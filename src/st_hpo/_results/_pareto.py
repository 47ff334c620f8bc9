"""The answer of a multi-objective study: its Pareto set, and picking one trial of it (``--trial N``).

The front is the feasible complete trials that no other feasible complete trial dominates (Optuna's
``best_trials`` less what st-hpo does not take for a result: infeasible trials, see
:func:`st_hpo._tracking._census.is_feasible`). ``export``, ``retrain``, ``register``, ``confirm`` and ``test``
work on one trial: the best one of a single-objective study, or the trial of the front picked with
``trial=N`` (``--trial N``); a multi-objective study without it is refused with the front's numbers. In a
single-objective study ``trial=N`` picks any feasible complete trial.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from st_hpo._tracking._census import is_feasible
from st_hpo._tracking._front import objective_names, study_front, trial_values
from st_hpo._tracking._schema import COSTS_ATTR, MODEL_DIR_ATTR
from st_hpo.exceptions import UsageError

__all__ = ["ParetoTrial", "chosen_trial", "is_multi_objective", "pareto_set", "pareto_trials", "saved_model_of",
           "pareto_answer"]


def is_multi_objective(optuna_study: Any) -> bool:
    """True for a study with several objectives."""
    return len(optuna_study.directions) > 1


def pareto_trials(optuna_study: Any) -> list[Any]:
    """The Pareto front of ``optuna_study``: its feasible complete non-dominated trials, by number."""
    return study_front(optuna_study)


def saved_model_of(trial: Any) -> str | None:
    """Where ``trial``'s model is kept, when it is on this machine."""
    saved = trial.user_attrs.get(MODEL_DIR_ATTR)
    return str(saved) if saved and (Path(saved) / "modules.json").is_file() else None


@dataclasses.dataclass(frozen=True)
class ParetoTrial:
    """One trial of the front: its values by objective (in order), sampled values, costs and kept model."""

    number: int
    values: list[float]
    objectives: list[str]
    params: dict[str, Any]
    costs: dict[str, float]
    model_dir: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "values": self.values, "params": self.params,
                "objectives": dict(zip(self.objectives, self.values, strict=True)), "costs": self.costs,
                "model_dir": self.model_dir}


def pareto_set(optuna_study: Any) -> list[ParetoTrial]:
    """The front as :class:`ParetoTrial` rows (what ``st-hpo best`` shows for a multi-objective study)."""
    from st_hpo._tracking._record import shown_params

    names = objective_names(optuna_study)
    return [ParetoTrial(number=t.number, values=trial_values(t) or [], objectives=names, params=shown_params(t),
                        costs=dict(t.user_attrs.get(COSTS_ATTR) or {}), model_dir=saved_model_of(t))
            for t in pareto_trials(optuna_study)]


def chosen_trial(optuna_study: Any, trial: int | None) -> Any:
    """The trial a command works on: ``trial`` (a feasible complete trial; in a multi-objective study one of
    the front), or the best one of a single-objective study; a multi-objective study without ``trial`` is
    refused in one line that lists the front."""
    if trial is None:
        if not is_multi_objective(optuna_study):
            if not any(t.state.name == "COMPLETE" and is_feasible(t) for t in optuna_study.get_trials(deepcopy=False)):
                from st_hpo.exceptions import NoResultError

                raise NoResultError(f"study {optuna_study.study_name!r} has no feasible complete trial: every "
                                    "complete one broke a constraint of the study; run more trials, or relax "
                                    "Study(constraints=...)")
            return optuna_study.best_trial
        raise UsageError(
            f"study {optuna_study.study_name!r} has several objectives, so no one best trial; pick one of its "
            f"Pareto front with trial=N: trials {_front_numbers(optuna_study)}", parameters=("trial",))
    found = next((t for t in optuna_study.get_trials(deepcopy=False) if t.number == trial), None)
    if found is None or found.state.name != "COMPLETE" or not is_feasible(found):
        what = "no such trial" if found is None else (
            "it is infeasible" if found.state.name == "COMPLETE" else f"it is {found.state.name}")
        raise UsageError(f"trial={trial}: {what}; pick a feasible complete trial" + _front_hint(optuna_study),
                         parameters=("trial",))
    front = pareto_trials(optuna_study) if is_multi_objective(optuna_study) else None
    if front is not None and trial not in {t.number for t in front}:
        better = next((t.number for t in front if _dominates(optuna_study, t, found)), None)
        raise UsageError(f"trial={trial} is not on the Pareto front: trial {better} is at least as good on every "
                         f"objective and better on one{_front_hint(optuna_study)}", parameters=("trial",))
    return found


def _dominates(optuna_study: Any, one: Any, other: Any) -> bool:
    """True when trial ``one`` is at least as good as ``other`` on every objective and better on one."""
    signs = [1.0 if d.name == "MAXIMIZE" else -1.0 for d in optuna_study.directions]
    ahead = [s * (a - b) for s, a, b in zip(signs, trial_values(one) or [], trial_values(other) or [], strict=True)]
    return all(x >= 0 for x in ahead) and any(x > 0 for x in ahead)


def _front_hint(optuna_study: Any) -> str:
    if not is_multi_objective(optuna_study):
        return ""
    return f"; the front: trials {_front_numbers(optuna_study)}"


def _front_numbers(optuna_study: Any) -> str:
    """The front's trial numbers, or why it is empty: no complete trial yet, or every one broke a constraint."""
    numbers = ", ".join(str(t.number) for t in pareto_trials(optuna_study))
    if numbers:
        return numbers
    if any(t.state.name == "COMPLETE" for t in optuna_study.get_trials(deepcopy=False)):
        return "none (every complete trial broke a constraint; run more trials, or relax Study(constraints=...))"
    return "none yet"


def pareto_answer(optuna_study: Any) -> dict[str, Any] | None:
    """What ``st-hpo best`` answers for a stored multi-objective study (None for a single objective): the
    objectives, their directions, the count of complete trials and the front (``pareto``: rows as
    :meth:`ParetoTrial.to_dict`)."""
    from st_hpo._tracking._census import study_census

    if not is_multi_objective(optuna_study):
        return None
    census = study_census(optuna_study)
    return {"study_name": optuna_study.study_name, "objectives": objective_names(optuna_study),
            "directions": [d.name.lower() for d in optuna_study.directions], "n_complete": census.complete,
            "pareto": [row.to_dict() for row in pareto_set(optuna_study)]}
