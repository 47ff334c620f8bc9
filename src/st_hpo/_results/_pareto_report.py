"""The Pareto front of a study with several objectives, on its parent run and on its trials' runs.

A multi-objective study has no one best trial: its answer is the front, the feasible complete trials that no
other feasible complete trial beats on every objective. :func:`st_hpo._results._reports.write_reports` calls
:func:`write_pareto_files` for such a study, which writes beside the other reports (``reports/``):

``pareto.html``
    every complete trial as a point over the first two objectives (plotly, self-contained: it works
    offline), the front highlighted and joined, the trials that broke a constraint marked with an x; the
    axes are named by objective and direction, and hovering a point shows its trial number, every objective
    and its params. A study of three or more objectives is plotted on its first two, and the title says so.
``pareto.png``
    the same plot as an image (matplotlib), the front's points labelled with their trial numbers.
``pareto.csv``
    one row per complete trial: ``number``, each objective (by name), each other cost st-hpo measured for it
    (``cost.*``), ``feasible``, ``on_front`` and its params (``params_<name>``).

:func:`tag_front_runs` then sets the run tag ``st_hpo.pareto`` to ``true`` on the runs of the front's trials
and to ``false`` on runs that had it and whose trial left the front.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from st_hpo._results._pareto import is_multi_objective
from st_hpo._tracking._census import is_feasible
from st_hpo._tracking._front import objective_names as stored_names
from st_hpo._tracking._front import study_front
from st_hpo._tracking._schema import (
    CONSTRAINTS_ATTR,
    COSTS_ATTR,
    PARETO_KEY,
)

__all__ = ["PARETO_FILES", "front_summary_lines", "objective_names", "tag_front_runs",
           "value_cells", "write_pareto_files"]

#: The files :func:`write_pareto_files` writes (each only when it can: the plots need a complete trial).
PARETO_FILES = ("pareto.html", "pareto.png", "pareto.csv")


def objective_names(study: Any, fallback: str | Sequence[str] | None = None) -> list[str]:
    """The objective names of ``study`` (an ``optuna.Study``), in order: the study's ``st_hpo.objectives``
    attribute, else ``fallback`` when it names as many, else ``objective 1``, ``objective 2``..."""
    count = len(study.directions)
    for names in (stored_names(study), fallback):
        if isinstance(names, str):
            names = [names]
        if isinstance(names, (list, tuple)) and len(names) == count:
            return [str(n) for n in names]
    return [f"objective {i + 1}" for i in range(count)]


def _directions(study: Any) -> list[str]:
    return [d.name.lower() for d in study.directions]


def _complete(study: Any) -> list[Any]:
    return [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.values]


def write_pareto_files(study: Any, folder: Path, notes: list[str], fallback_names: Any = None) -> list[str]:
    """Write ``pareto.html``, ``pareto.png`` and ``pareto.csv`` of ``study`` into ``folder``; returns the file
    names written. Without a complete trial only the table (its header) is written and ``notes`` says why."""
    names = objective_names(study, fallback_names)
    complete, front = _complete(study), {t.number for t in study_front(study)}
    written = [_write_csv(study, complete, front, names, folder / "pareto.csv")]
    if not complete:
        notes.append("Pareto front: no trial has completed yet, so there is nothing to plot.")
        return written
    plot = _PlotData(study, complete, front, names)
    (folder / "pareto.html").write_text(plot.plotly().to_html(full_html=True, include_plotlyjs=True))
    plot.save_png(folder / "pareto.png")
    return ["pareto.html", "pareto.png", *written]


# --- the tables ---------------------------------------------------------------------------------------


def value_cells(study: Any, fallback_names: Any = None) -> tuple[list[str], Any]:
    """The value columns of ``trials.csv`` and the function that gives a trial's cells: ``value`` with one
    objective, ``values_<name>`` per objective with several (empty for a trial that did not complete)."""
    if not is_multi_objective(study):
        return ["value"], lambda t: ["" if t.value is None else t.value]
    columns = [f"values_{n}" for n in objective_names(study, fallback_names)]
    return columns, lambda t: list(t.values) if t.values else [""] * len(columns)


def _write_csv(study: Any, complete: list[Any], front: set[int], names: list[str], path: Path) -> str:
    from st_hpo._tracking._record import shown_params

    params = {t.number: shown_params(t) for t in complete}
    param_names = sorted({n for p in params.values() for n in p})
    costs = sorted({c for t in complete for c in (t.user_attrs.get(COSTS_ATTR) or {}) if c not in names})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", *names, *costs, "feasible", "on_front", *(f"params_{n}" for n in param_names)])
        for t in complete:
            measured = t.user_attrs.get(COSTS_ATTR) or {}
            writer.writerow([t.number, *t.values, *(measured.get(c, "") for c in costs), is_feasible(t),
                             t.number in front, *(params[t.number].get(n, "") for n in param_names)])
    return path.name


# --- the plot -----------------------------------------------------------------------------------------


class _PlotData:
    """The points of the Pareto plot, split into the front, the dominated feasible trials and the
    infeasible ones, over the first two objectives."""

    def __init__(self, study: Any, complete: list[Any], front: set[int], names: list[str]) -> None:
        self.names, self.directions = names, _directions(study)
        self.front = sorted((t for t in complete if t.number in front), key=lambda t: (t.values[0], t.values[1]))
        self.dominated = [t for t in complete if t.number not in front and is_feasible(t)]
        self.infeasible = [t for t in complete if not is_feasible(t)]
        shown = f" ({len(names)} objectives; plotted on the first two)" if len(names) > 2 else ""
        self.title = (f"Pareto front of {study.study_name}: {len(self.front)} of {len(complete)} complete "
                      f"trials{shown}")
        constraints = study.user_attrs.get(CONSTRAINTS_ATTR)
        if constraints:
            self.title += "<br>constraints: " + ", ".join(f"{k} {v}" for k, v in constraints.items())

    def axis(self, i: int) -> str:
        return f"{self.names[i]} ({self.directions[i]})"

    def line_shape(self) -> str:
        """How the front's points are joined: along the edge of what they dominate (a staircase: across then
        up or down when the first objective is minimised, the other way round when it is maximised), or by
        straight lines when more than two objectives are projected on two."""
        if len(self.names) > 2:
            return "linear"
        return "hv" if self.directions[0] == "minimize" else "vh"

    def hover(self, trial: Any) -> str:
        from st_hpo._tracking._record import shown_params

        values = [f"{n}: {v:.6g}" for n, v in zip(self.names, trial.values, strict=False)]
        params = [f"{n} = {v:.4g}" if isinstance(v, float) else f"{n} = {v}" for n, v in shown_params(trial).items()]
        return "<br>".join([f"trial {trial.number}", *values, *params])

    def groups(self) -> list[tuple[str, list[Any]]]:
        return [("Pareto front", self.front), ("dominated", self.dominated), ("infeasible (broke a constraint)",
                                                                              self.infeasible)]

    def plotly(self) -> Any:
        import plotly.graph_objects as go

        styles = {
            "Pareto front": {"mode": "lines+markers", "marker": {"size": 11, "color": "#1f77b4"},
                             "line": {"color": "#1f77b4", "shape": self.line_shape()}},
            "dominated": {"mode": "markers", "marker": {"size": 8, "color": "#b0b0b0"}},
            "infeasible (broke a constraint)": {"mode": "markers", "marker": {"size": 9, "color": "#d62728",
                                                                              "symbol": "x"}},
        }
        fig = go.Figure()
        for name, trials in self.groups():
            if trials:
                fig.add_trace(go.Scatter(
                    x=[t.values[0] for t in trials], y=[t.values[1] for t in trials], name=name,
                    text=[self.hover(t) for t in trials], hovertemplate="%{text}<extra></extra>", **styles[name]))
        fig.update_layout(title=self.title, xaxis_title=self.axis(0), yaxis_title=self.axis(1), showlegend=True)
        return fig

    def save_png(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 5.5))
        try:
            if self.dominated:
                ax.scatter(*self._xy(self.dominated), s=30, color="#b0b0b0", label="dominated")
            if self.infeasible:
                ax.scatter(*self._xy(self.infeasible), s=40, color="#d62728", marker="x",
                           label="infeasible (broke a constraint)")
            where = {"hv": "post", "vh": "pre"}.get(self.line_shape())
            draw = ax.plot if where is None else lambda *xy, **kw: ax.step(*xy, where=where, **kw)
            draw(*self._xy(self.front), color="#1f77b4", marker="o", markersize=7, label="Pareto front")
            for t in self.front:
                ax.annotate(str(t.number), (t.values[0], t.values[1]), textcoords="offset points", xytext=(5, 5),
                            fontsize=8)
            ax.set_xlabel(self.axis(0))
            ax.set_ylabel(self.axis(1))
            ax.set_title(self.title.replace("<br>", "\n"), fontsize=10)
            ax.legend(loc="best", fontsize=8)
            fig.savefig(path, dpi=100, bbox_inches="tight")
        finally:
            plt.close(fig)

    @staticmethod
    def _xy(trials: list[Any]) -> tuple[list[float], list[float]]:
        return [t.values[0] for t in trials], [t.values[1] for t in trials]


# --- the runs and the summary -------------------------------------------------------------------------


def tag_front_runs(study: Any, tracker: Any) -> tuple[int, int]:
    """Tag the runs of the front's trials ``st_hpo.pareto=true``, and ``false`` the runs tagged ``true``
    whose trial is no longer on the front. Returns how many runs were tagged (true, false)."""
    front = {t.number for t in study_front(study)}
    on = off = 0
    for number, run in tracker.trial_runs(study.study_name).items():
        tagged = run.data.tags.get(PARETO_KEY) == "true"
        if number in front and not tagged:
            tracker.set_tags(run.info.run_id, {PARETO_KEY: "true"})
            on += 1
        elif number not in front and tagged:
            tracker.set_tags(run.info.run_id, {PARETO_KEY: "false"})
            off += 1
    return on, off


def front_summary_lines(study: Any, fallback_names: Any = None) -> list[str]:
    """The summary's lines for a study with several objectives: the objectives, the constraints, the front
    as a table, and the trials that broke a constraint."""
    names = objective_names(study, fallback_names)
    lines = ["Objectives: " + ", ".join(f"`{n}` ({d})" for n, d in zip(names, _directions(study), strict=False)), ""]
    constraints = study.user_attrs.get(CONSTRAINTS_ATTR)
    if constraints:
        lines += ["Constraints: " + ", ".join(f"`{k} {v}`" for k, v in constraints.items()), ""]
    complete = _complete(study)
    if not complete:
        return [*lines, "No trial has completed yet.", ""]
    front = study_front(study)
    lines += [f"Pareto front: {len(front)} of {len(complete)} complete trials (the feasible ones no other "
              "feasible trial beats on every objective; plotted in `pareto.html`, listed in `pareto.csv`)"
              + ("." if front else ": every complete trial broke a constraint.")]
    if front:
        lines += ["", "| trial | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        lines += [f"| {t.number} | " + " | ".join(_fmt(v) for v in t.values) + " |" for t in front]
    infeasible = [t.number for t in complete if not is_feasible(t)]
    if infeasible:
        lines += ["", f"Infeasible (complete, but broke a constraint): trial{'s' if len(infeasible) > 1 else ''} "
                  + ", ".join(map(str, infeasible)) + "."]
    return [*lines, ""]


def _fmt(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) and abs(value) < 10 else f"{value:.4g}"
