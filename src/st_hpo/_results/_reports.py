"""Study reports: plots, a table of all trials and a short summary, written to the study's parent run.

:func:`write_reports` puts these files under the parent run's ``reports/`` artifact folder:

``summary.md``
    best trial, baseline, base model, improvement, trials by state, time spent, and which plots were
    left out and why (also set as the parent run's description, so MLflow shows it on the run page).
``trials.csv``
    one row per trial: number, state, value, baseline, seconds, sampled values, MLflow run id, error.
``plots.html``
    the interactive plots (plotly, via ``optuna.visualization``) in one self-contained page that works
    offline: optimisation history (with the baseline and base model as lines), parameter importances,
    parallel coordinates and intermediate values (pruned trials dotted and marked with an x where
    they stopped).
``<plot>.png``
    the same plots as images (matplotlib, via ``optuna.visualization.matplotlib``; no kaleido needed).
``pareto.html``, ``pareto.png``, ``pareto.csv``
    with several objectives, instead of the plots of one value: the Pareto front (and tags on the front's
    runs; see :mod:`st_hpo._results._pareto_report`); ``trials.csv`` has a ``values_<name>`` per objective.

Parameter importances need :data:`MIN_TRIALS_FOR_IMPORTANCE` complete trials; with fewer the summary
says so instead of plotting noise.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._results._pareto import is_multi_objective
from st_hpo._results._pareto_report import (
    front_summary_lines,
    tag_front_runs,
    value_cells,
    write_pareto_files,
)
from st_hpo._results._read import _baseline, best_of, shown_params
from st_hpo._tracking import MlflowTracker
from st_hpo._tracking._census import shown_state, take_census
from st_hpo._tracking._schema import (
    BASE_MODEL_VALUE_KEY,
    BASELINE_ATTR,
    ERROR_ATTR,
    PARENT_ATTR,
    RUN_ATTR,
    TRAIN_SECONDS_KEY,
    TRIAL_SECONDS_KEY,
)
from st_hpo._tracking._times import time_totals
from st_hpo.exceptions import TrackingError

__all__ = ["MIN_TRIALS_FOR_IMPORTANCE", "REPORTS_DIR", "report_at", "report_study", "write_reports"]

if TYPE_CHECKING:
    from st_hpo._results._handle import StudyHandle

logger = logging.getLogger(__name__)

#: Complete trials needed before parameter importances are computed.
MIN_TRIALS_FOR_IMPORTANCE = 4
#: With fewer complete trials, the summary calls the importances rough (Optuna warns some value ranges
#: of a parameter hold fewer than 2 trials).
ROUGH_IMPORTANCE_BELOW = 10
#: The parent run's artifact folder that holds the reports.
REPORTS_DIR = "reports"


def write_reports(study: Any, tracker: MlflowTracker, objective_name: str | Sequence[str],
                  base_model_value: float | None = None, *, local_dir: str | Path | None = None) -> list[str]:
    """Write the reports of ``study`` (an ``optuna.Study``) and log them to ``tracker``'s parent run.

    Args:
        tracker: an ``MlflowTracker`` with its parent run open, or None to only write files.
        objective_name: the objective's name, for axis labels and the summary (the names, in a study with
            several objectives, when the study does not record them).
        base_model_value: the objective of the model before fine-tuning; default the study's
            ``st_hpo.base_model_value`` user attribute.
        local_dir: keep the files in this folder (created); default a temporary folder.

    Returns the artifact paths written, e.g. ``["reports/summary.md", ...]``. A plot that cannot be
    drawn is left out and named in the summary; an MLflow error is raised as ``TrackingError``.
    """
    if base_model_value is None:
        base_model_value = study.user_attrs.get(BASE_MODEL_VALUE_KEY)
    with tempfile.TemporaryDirectory(prefix="st-hpo-reports-") as tmp:
        folder = Path(local_dir) if local_dir is not None else Path(tmp) / REPORTS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        notes: list[str] = []
        figures = _plotly_figures(study, objective_name, base_model_value, notes)
        names = _write_html(figures, folder, study.study_name)
        names += _write_pngs(study, objective_name, base_model_value, [n for n, _, _ in figures], folder)
        if is_multi_objective(study):
            names += write_pareto_files(study, folder, notes, objective_name)
        names.append(_write_csv(study, folder / "trials.csv", objective_name))
        summary = summarize(study, objective_name, base_model_value, notes)
        (folder / "summary.md").write_text(summary)
        names.append("summary.md")
        if tracker is not None and tracker.parent_run_id:
            for name in names:
                tracker.log_artifact(tracker.parent_run_id, str(folder / name), REPORTS_DIR)
            tracker.log_parent({}, tags={"mlflow.note.content": summary})
            if is_multi_objective(study):
                tag_front_runs(study, tracker)
    return [f"{REPORTS_DIR}/{name}" for name in names]


def report_study(study: Any, *, output_dir: str | Path | None = None, storage: str | None = None,
                 tracking_uri: str | None = None, study_name: str | None = None, track: bool = True) -> list[Path]:
    """Write the reports of a stored study to ``<output_dir>/reports/`` and to its MLflow parent run.

    ``study`` is the :class:`~st_hpo.Study` (the study file's); the location arguments are those the
    study ran with. Returns the local files written.
    """
    from st_hpo._results._handle import open_study

    return open_study(study, output_dir=output_dir, storage=storage, tracking_uri=tracking_uri,
                      study_name=study_name).report(track=track)


def report_at(handle: StudyHandle, *, track: bool = True) -> list[Path]:
    """Write the reports of the study ``handle`` holds (see :func:`report_study`); returns the local files."""

    optuna_study = handle.optuna_study
    tracker = None
    if track:
        tracker = handle.tracker()
        tracker.parent_run_id = optuna_study.user_attrs.get(PARENT_ATTR)
        if tracker.parent_run_id and not tracker.run_exists(tracker.parent_run_id):
            raise TrackingError(f"the study's MLflow run {tracker.parent_run_id} is not in the store at "
                                f"{handle.tracking_uri}; run `st-hpo sync STUDY_FILE` first (it re-creates "
                                "missing runs)")
    folder = handle.output_dir / REPORTS_DIR
    written = write_reports(optuna_study, tracker, handle.study.objective, local_dir=folder)
    return [folder / Path(name).name for name in written]


# --- plots --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence what plotting prints that a user cannot act on: Optuna's experimental-API warnings (its
    matplotlib plots are marked experimental), its log lines about empty plots, its warning, once per
    parameter and plot, that importances from few trials may be inaccurate (the summary says so once, see
    :func:`_plot_plan`), and matplotlib's warnings about degenerate axes."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "Study instance does not contain trials", ...
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # matplotlib's (limits of a plot with one point, an empty legend) and Optuna's importance notes
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _states(study: Any) -> dict[int, str]:
    return {t.number: shown_state(t) for t in study.get_trials(deepcopy=False)}


def _plot_plan(study: Any, notes: list[str]) -> list[str]:
    """Which plots the study's trials can support; the reasons for the others go to ``notes``."""
    if is_multi_objective(study):
        notes.append("Several objectives: the plots of one value are left out; `pareto.html` plots the front.")
        return []
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    plan = []
    if complete:
        plan.append("optimization_history")
    else:
        notes.append("No plots of values: no trial has completed yet.")
    if len(complete) >= MIN_TRIALS_FOR_IMPORTANCE and any(t.params for t in complete):
        plan.append("param_importances")
        if len(complete) < ROUGH_IMPORTANCE_BELOW:
            notes.append(f"Parameter importances: from {len(complete)} complete trials, a rough estimate; "
                         f"they settle from about {ROUGH_IMPORTANCE_BELOW}.")
    elif complete:
        notes.append(f"Parameter importances: not computed; they need at least {MIN_TRIALS_FOR_IMPORTANCE} "
                     f"complete trials and the study has {len(complete)}.")
    if complete and any(t.params for t in complete):
        plan.append("parallel_coordinate")
    if any(t.intermediate_values for t in trials):
        plan.append("intermediate_values")
    elif trials:
        notes.append("Intermediate values: none were reported (no trial reached an evaluation during training).")
    return plan


_TITLES = {"optimization_history": "Optimisation history", "param_importances": "Parameter importances",
           "parallel_coordinate": "Parallel coordinates", "intermediate_values": "Intermediate values"}


def _target(study: Any, objective_name: Any) -> dict[str, Any]:
    """The plots' target: the objective, or (several objectives) the first one, by name."""
    if len(study.directions) == 1:
        return {"target_name": objective_name}
    from st_hpo._tracking._front import objective_names

    return {"target": lambda t: t.values[0], "target_name": objective_names(study)[0]}


def _reference_lines(study: Any, base_model_value: float | None) -> list[tuple[str, float]]:
    lines = []
    baseline = _baseline(study.get_trials(deepcopy=False))
    if baseline is not None:
        lines.append((f"baseline (trial {baseline.number})", float(baseline.values[0])))
    if base_model_value is not None:
        lines.append(("base model", float(base_model_value)))
    return lines


def _plotly_figures(study: Any, objective_name: str, base_model_value: float | None,
                    notes: list[str]) -> list[tuple[str, str, Any]]:
    """(file stem, title, plotly figure) for every plot the study supports."""
    import optuna.visualization as ov

    makers: dict[str, Callable[[], Any]] = {
        "optimization_history": lambda: ov.plot_optimization_history(study, **_target(study, objective_name)),
        "param_importances": lambda: ov.plot_param_importances(study, **_target(study, objective_name)),
        "parallel_coordinate": lambda: ov.plot_parallel_coordinate(study, **_target(study, objective_name)),
        "intermediate_values": lambda: ov.plot_intermediate_values(study),
    }
    figures = []
    with _quiet():
        for name in _plot_plan(study, notes):
            try:
                fig = makers[name]()
            except Exception as exc:  # noqa: BLE001 - e.g. importances of constant values
                notes.append(f"{_TITLES[name]}: not plotted ({type(exc).__name__}: {exc}).")
                continue
            if name == "optimization_history":
                for label, value in _reference_lines(study, base_model_value):
                    fig.add_hline(y=value, line_dash="dash", annotation_text=label)
            if name == "intermediate_values":
                _mark_pruned_plotly(fig, _states(study))
            figures.append((name, _TITLES[name], fig))
    return figures


def _mark_pruned_plotly(fig: Any, states: dict[int, str]) -> None:
    import plotly.graph_objects as go

    for trace in list(fig.data):
        number = int(str(trace.name).removeprefix("Trial"))
        if states.get(number) != "PRUNED":
            trace.name = f"trial {number}"
            continue
        trace.name = f"trial {number} (pruned)"
        trace.line = {"dash": "dot"}
        fig.add_trace(go.Scatter(x=[trace.x[-1]], y=[trace.y[-1]], mode="markers", name=f"pruned: trial {number}",
                                 marker={"symbol": "x", "size": 12, "color": "red"}))
    fig.update_layout(showlegend=True, title="Intermediate values (pruned trials dotted, x where they stopped)")


def _write_html(figures: list[tuple[str, str, Any]], folder: Path, study_name: str) -> list[str]:
    if not figures:
        return []
    parts = [f"<h2>{title}</h2>" + fig.to_html(full_html=False, include_plotlyjs=(i == 0))
             for i, (_, title, fig) in enumerate(figures)]
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{study_name}: st-hpo report</title>"
            f"</head><body><h1>Study {study_name}</h1>{''.join(parts)}</body></html>")
    (folder / "plots.html").write_text(page)
    return ["plots.html"]


def _write_pngs(study: Any, objective_name: str, base_model_value: float | None, plan: list[str],
                folder: Path) -> list[str]:
    """The plots as PNG images with matplotlib; a plot that fails is skipped (logged)."""
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as om

    makers: dict[str, Callable[[], Any]] = {
        "optimization_history": lambda: om.plot_optimization_history(study, **_target(study, objective_name)),
        "param_importances": lambda: om.plot_param_importances(study, **_target(study, objective_name)),
        "parallel_coordinate": lambda: om.plot_parallel_coordinate(study, **_target(study, objective_name)),
        "intermediate_values": lambda: om.plot_intermediate_values(study),
    }
    written = []
    with _quiet():
        for name in plan:
            ax = None
            try:
                ax = makers[name]()
                if name == "optimization_history":
                    for (label, value), color in zip(_reference_lines(study, base_model_value), ("grey", "purple"), strict=False):
                        ax.axhline(value, linestyle="--", color=color, label=label)
                    ax.legend(bbox_to_anchor=(1.05, 1), loc="upper left")
                if name == "intermediate_values":
                    _mark_pruned_matplotlib(ax, _states(study))
                ax.figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
                written.append(f"{name}.png")
            except Exception as exc:  # noqa: BLE001 - a missing image must not lose the others
                logger.warning("could not draw %s.png: %s", name, exc)
            finally:
                if ax is not None:
                    plt.close(ax.figure)
    return written


def _mark_pruned_matplotlib(ax: Any, states: dict[int, str]) -> None:
    for line in ax.get_lines():
        label = str(line.get_label())
        if not label.startswith("Trial"):
            continue
        number = int(label.removeprefix("Trial"))
        if states.get(number) == "PRUNED":
            line.set_linestyle(":")
            line.set_label(f"trial {number} (pruned)")
            ax.plot(line.get_xdata()[-1:], line.get_ydata()[-1:], "x", color="red", markersize=9)
        else:
            line.set_label(f"trial {number}")
    ax.set_title("Intermediate values (pruned trials dotted, x where they stopped)")
    if len(ax.get_lines()) <= 30:
        ax.legend(bbox_to_anchor=(1.05, 1), loc="upper left", fontsize=7)


# --- table and summary --------------------------------------------------------------------------------


def _write_csv(study: Any, path: Path, objective_name: str | Sequence[str]) -> str:
    trials = study.get_trials(deepcopy=False)
    params = {t.number: shown_params(t) for t in trials}  # an unsampled baseline's base values too
    names = sorted({name for t in trials for name in params[t.number]})
    value_columns, values = value_cells(study, objective_name)
    header = ["number", "state", *value_columns, "baseline", "trial_seconds", "train_seconds", "started", "completed",
              *(f"params_{n}" for n in names), "mlflow_run_id", "error"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for t in trials:
            attrs = t.user_attrs
            writer.writerow([
                t.number, shown_state(t), *values(t), bool(attrs.get(BASELINE_ATTR)),
                attrs.get(TRIAL_SECONDS_KEY, ""), attrs.get(TRAIN_SECONDS_KEY, ""),
                t.datetime_start or "", t.datetime_complete or "", *(params[t.number].get(n, "") for n in names),
                attrs.get(RUN_ATTR, ""), attrs.get(ERROR_ATTR, "") or "",
            ])
    return path.name


def summarize(study: Any, objective_name: str | Sequence[str], base_model_value: float | None,
              notes: list[str]) -> str:
    """The Markdown summary of the study (see the module docstring)."""
    trials = study.get_trials(deepcopy=False)
    lines = [f"# Study `{study.study_name}`", ""]
    if is_multi_objective(study):  # the front instead of one best trial
        lines += front_summary_lines(study, objective_name)
    else:
        lines += _objective_lines(study, str(objective_name), base_model_value)
    census = take_census(trials)
    counts = {"complete": census.complete, "pruned": census.pruned, "failed": census.failed,
              "out of memory": census.out_of_memory, "running": census.running}
    if not census.out_of_memory:  # named only in a study that had some
        del counts["out of memory"]
    lines.append(f"Trials: {census.shown - census.waiting} in all: " + ", ".join(f"{n} {w}" for w, n in counts.items()))
    lines += ["", _time_line(trials), ""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"



def _objective_lines(study: Any, objective_name: str, base_model_value: float | None) -> list[str]:
    """The summary's lines about the objective of a study with one: its best trial against the references."""

    lines = [f"Objective: `{objective_name}` ({study.direction.name.lower()})", ""]
    if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        return [*lines, "No trial has completed yet.", ""]
    best = best_of(study, objective_name)
    if best.base_model_value is None and base_model_value is not None:
        best = _with_base_model(best, base_model_value)
    return lines + _best_lines(best)


def _with_base_model(best: Any, value: float) -> Any:
    import dataclasses

    return dataclasses.replace(best, base_model_value=float(value))


def _best_lines(best: Any) -> list[str]:
    fmt = "{:.4f}".format
    lines = ["| | trial | value |", "|---|---|---|",
             f"| best | {best.number}{' (baseline)' if best.is_baseline else ''} | {fmt(best.value)} |"]
    if best.baseline_value is not None:
        lines.append(f"| baseline (base arguments) | {best.baseline_number} | {fmt(best.baseline_value)} |")
    if best.base_model_value is not None:
        lines.append(f"| base model (before fine-tuning) | | {fmt(best.base_model_value)} |")
    lines.append("")
    gains = []
    for what, gain, ref in (("the baseline", best.gain_over_baseline, best.baseline_value),
                            ("the base model", best.gain_over_base_model, best.base_model_value)):
        if gain is not None:
            rel = f" ({gain / abs(ref):+.1%})" if ref else ""
            gains.append(f"{gain:+.4f} over {what}{rel}")
    if gains:
        lines += ["Improvement of the best trial: " + "; ".join(gains) + " (positive is better).", ""]
    values = ", ".join(f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}"
                       for k, v in best.params.items())
    lines += [f"Best trial's values: {values or '(the base arguments)'}", ""]
    return lines


def _time_line(trials: list[Any]) -> str:
    totals = time_totals(trials)  # the parent run's totals: the trials that ended
    in_trials, training = totals["trial_seconds_total"], totals["train_seconds_total"]
    evaluating = totals["eval_seconds_total"]
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    return (f"Time: {in_trials:.1f} s in trials (those that ended; {training:.1f} s of it training, "
            f"{evaluating:.1f} s evaluating); {wall:.1f} s wall clock from the first trial's start to the last "
            "one's end.")
