"""The Pareto front of a multi-objective study on its parent run (pareto.html, pareto.png, pareto.csv) and on
its trials' runs (the tag st_hpo.pareto), from a real Optuna storage and a real MLflow store."""

from __future__ import annotations

import csv

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from st_hpo._results._reports import write_reports
from st_hpo._tracking import MlflowTracker

OBJECTIVES = ["sts-dev_spearman_cosine", "cost.encode_ms"]
DISTRIBUTIONS = {"learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
                 "model.truncate_dim": CategoricalDistribution([64, 128, 256, 384])}
#: (spearman, encode_ms, truncate_dim) of the complete trials, in trial order; trial 6 broke a constraint.
POINTS = [(0.80, 40.0, 384), (0.78, 20.0, 128), (0.81, 45.0, 384), (0.70, 10.0, 64), (0.785, 18.0, 256),
          (0.79, 20.0, 128), (0.95, 5.0, 64), (0.60, 12.0, 64), (0.81, 50.0, 384), (0.77, 25.0, 256)]
INFEASIBLE = {6}


def _run_tracker(tmp_path, name: str) -> MlflowTracker:
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", name, artifact_root=(tmp_path / "art").as_uri())
    return tracker


def _add(study: optuna.Study, tracker: MlflowTracker, values: tuple[float, ...] | None, truncate_dim: int, *,
         state: TrialState = TrialState.COMPLETE, infeasible: bool = False) -> int:
    """A trial told to the storage as st-hpo tells it, with its own MLflow run; returns its number."""
    number = len(study.get_trials(deepcopy=False))
    params = {"learning_rate": 1e-4 * (number + 1), "model.truncate_dim": truncate_dim}
    run_id = tracker.start_trial(study.study_name, number, params, {}, {})
    attrs = {"st_hpo.mlflow_run_id": run_id,
             "st_hpo.costs": {"cost.embedding_dim": float(truncate_dim), "cost.parameters": 22.7}}
    if values is not None:
        attrs["st_hpo.costs"]["cost.encode_ms"] = values[1]
    if infeasible:
        attrs["st_hpo.infeasible"] = True
    study.add_trial(create_trial(
        state=state, values=list(values) if values is not None else None, params=params,
        distributions=DISTRIBUTIONS, user_attrs=attrs,
        constraints={"st_hpo.infeasible": 128.0 if infeasible else 0.0} if values is not None else None))
    tracker.end_trial(run_id, state.name, status="FINISHED" if state == TrialState.COMPLETE else "KILLED")
    return number


def _study(tmp_path, directions=("maximize", "minimize"), objectives=OBJECTIVES) -> tuple[optuna.Study, MlflowTracker]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="quality-cost", directions=list(directions),
                                storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    study.set_user_attr("st_hpo.objectives", list(objectives))
    study.set_user_attr("st_hpo.constraints", {"cost.embedding_dim": "<= 256"})
    tracker = _run_tracker(tmp_path, "quality-cost")
    tracker.ensure_parent(study, {"study": "quality-cost"})
    for i, (spearman, ms, dim) in enumerate(POINTS):
        _add(study, tracker, (spearman, ms, *([float(dim)] * (len(objectives) - 2))), dim, infeasible=i in INFEASIBLE)
    _add(study, tracker, None, 64, state=TrialState.PRUNED)
    _add(study, tracker, None, 64, state=TrialState.FAIL)
    return study, tracker


def _front_by_hand(points: dict[int, tuple[float, ...]], signs: tuple[int, ...]) -> set[int]:
    """The trials no other beats on every objective (at least as good on all, better on one); ``signs``: +1
    to maximise, -1 to minimise."""
    def beats(a, b):
        return all(s * x >= s * y for s, x, y in zip(signs, a, b, strict=True)) and any(
            s * x > s * y for s, x, y in zip(signs, a, b, strict=True))
    return {n for n, p in points.items() if not any(beats(q, p) for m, q in points.items() if m != n)}


def _pareto_tags(tracker: MlflowTracker) -> dict[int, str]:
    return {n: r.data.tags.get("st_hpo.pareto") for n, r in tracker.trial_runs("quality-cost").items()}


def test_parent_run_holds_the_pareto_plot_and_table_and_the_front_is_tagged(tmp_path):
    study, tracker = _study(tmp_path)
    written = write_reports(study, tracker, OBJECTIVES, local_dir=tmp_path / "reports")
    for name in ("pareto.html", "pareto.png", "pareto.csv", "trials.csv", "summary.md"):
        assert f"reports/{name}" in written and (tmp_path / "reports" / name).stat().st_size > 0, name
    listed = {a.path for a in tracker.client.list_artifacts(tracker.parent_run_id, "reports")}
    assert {"reports/pareto.html", "reports/pareto.png", "reports/pareto.csv"} <= listed == set(written)
    assert "reports/plots.html" not in listed, "no plots of one value in a study of two"

    feasible = {i: p[:2] for i, p in enumerate(POINTS) if i not in INFEASIBLE}
    front = _front_by_hand(feasible, (1, -1))
    assert front == {2, 0, 5, 4, 3}, "trial 6 would beat them all but broke a constraint"

    rows = list(csv.DictReader(open(tmp_path / "reports" / "pareto.csv")))
    assert [int(r["number"]) for r in rows] == list(range(len(POINTS))), "one row per complete trial"
    assert {int(r["number"]) for r in rows if r["on_front"] == "True"} == front
    assert [int(r["number"]) for r in rows if r["feasible"] == "False"] == sorted(INFEASIBLE)
    for r in rows:
        spearman, ms, dim = POINTS[int(r["number"])]
        assert (float(r["sts-dev_spearman_cosine"]), float(r["cost.encode_ms"])) == (spearman, ms)
        assert float(r["cost.embedding_dim"]) == dim and int(r["params_model.truncate_dim"]) == dim
        assert float(r["params_learning_rate"]) == pytest.approx(1e-4 * (int(r["number"]) + 1))
    assert list(rows[0]).count("cost.encode_ms") == 1, "a cost that is an objective is one column"

    html = (tmp_path / "reports" / "pareto.html").read_text().replace("\\u003c", "<").replace("\\u003e", ">")
    assert "sts-dev_spearman_cosine (maximize)" in html and "cost.encode_ms (minimize)" in html
    assert "Pareto front" in html and "infeasible (broke a constraint)" in html and "dominated" in html
    assert "trial 5<br>sts-dev_spearman_cosine: 0.79<br>cost.encode_ms: 20<br>" in html, "hover: number, values"
    assert "model.truncate_dim = 128" in html, "hover: params"
    assert html.count("plotly.js v") == 1, "the page works offline"
    # the front joined along the edge of what it dominates: up from a point, then across to the next one
    assert '"line":{"color":"#1f77b4","shape":"vh"}' in html

    assert _pareto_tags(tracker) == {n: ("true" if n in front else None) for n in range(len(POINTS) + 2)}

    summary = (tmp_path / "reports" / "summary.md").read_text()
    assert "Objectives: `sts-dev_spearman_cosine` (maximize), `cost.encode_ms` (minimize)" in summary
    assert "Pareto front: 5 of 10 complete trials" in summary and "| 5 | 0.7900 | 20.0000 |" not in summary
    assert "| 5 | 0.7900 | 20 |" in summary and "Infeasible (complete, but broke a constraint): trial 6." in summary
    assert "Constraints: `cost.embedding_dim <= 256`" in summary
    assert "12 in all: 10 complete, 1 pruned, 1 failed, 0 running" in summary
    trials = list(csv.DictReader(open(tmp_path / "reports" / "trials.csv")))
    assert float(trials[3]["values_cost.encode_ms"]) == 10.0 and trials[10]["values_cost.encode_ms"] == ""
    assert "value" not in trials[0]


def test_a_trial_that_leaves_the_front_loses_its_tag(tmp_path):
    study, tracker = _study(tmp_path)
    write_reports(study, tracker, OBJECTIVES, local_dir=tmp_path / "reports")
    assert _pareto_tags(tracker)[5] == "true"
    newcomer = _add(study, tracker, (0.80, 19.0), 128)  # beats trial 5 (0.79, 20 ms) and trial 0 (0.80, 40 ms)
    write_reports(study, tracker, OBJECTIVES, local_dir=tmp_path / "reports")
    tags = _pareto_tags(tracker)
    assert tags[newcomer] == "true" and tags[5] == "false" and tags[0] == "false"
    assert tags[2] == tags[3] == tags[4] == "true" and tags[1] is None, "runs never on the front stay untagged"
    rows = list(csv.DictReader(open(tmp_path / "reports" / "pareto.csv")))
    assert {int(r["number"]) for r in rows if r["on_front"] == "True"} == {2, 3, 4, newcomer}


def test_three_objectives_are_plotted_on_the_first_two(tmp_path):
    objectives = [*OBJECTIVES, "cost.embedding_dim"]
    study, tracker = _study(tmp_path, ("maximize", "minimize", "minimize"), objectives)
    write_reports(study, tracker, objectives, local_dir=tmp_path / "reports")
    feasible = {i: (p[0], p[1], p[2]) for i, p in enumerate(POINTS) if i not in INFEASIBLE}
    front = _front_by_hand(feasible, (1, -1, -1))
    rows = list(csv.DictReader(open(tmp_path / "reports" / "pareto.csv")))
    assert {int(r["number"]) for r in rows if r["on_front"] == "True"} == front
    html = (tmp_path / "reports" / "pareto.html").read_text()
    assert "3 objectives; plotted on the first two" in html
    assert '"shape":"linear"' in html, "a projection of three objectives: no staircase on two of them"
    assert {n for n, tag in _pareto_tags(tracker).items() if tag == "true"} == front


def test_a_multi_objective_study_without_complete_trials_has_only_the_table(tmp_path):
    study = optuna.create_study(study_name="empty", directions=["maximize", "minimize"])
    written = write_reports(study, None, OBJECTIVES, local_dir=tmp_path)
    assert written == ["reports/pareto.csv", "reports/trials.csv", "reports/summary.md"]
    summary = (tmp_path / "summary.md").read_text()
    assert "No trial has completed yet." in summary and "nothing to plot" in summary


def test_a_front_of_no_trial_says_why(tmp_path):
    """Every complete trial broke a constraint: the plot shows them marked, the summary says there is no front."""
    study = optuna.create_study(study_name="all-infeasible", directions=["maximize", "minimize"])
    for spearman in (0.8, 0.7):
        study.add_trial(create_trial(values=[spearman, 10.0], user_attrs={"st_hpo.infeasible": True},
                                     constraints={"st_hpo.infeasible": 64.0}))
    write_reports(study, None, OBJECTIVES, local_dir=tmp_path)
    assert "Pareto front: 0 of 2 complete trials" in (summary := (tmp_path / "summary.md").read_text())
    assert "every complete trial broke a constraint" in summary and "| trial |" not in summary
    assert "infeasible (broke a constraint)" in (tmp_path / "pareto.html").read_text()
    rows = list(csv.DictReader(open(tmp_path / "pareto.csv")))
    assert [(r["feasible"], r["on_front"]) for r in rows] == [("False", "False")] * 2

