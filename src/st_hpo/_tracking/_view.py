"""What the MLflow UI shows first: the study's trials, best first, with the objective and the searched parameters.

MLflow's UI takes a runs filter and a sort from the URL, but not the visible columns or the charts. Those
come from a *shared view*: the UI's "Share" button stores the whole view as the experiment tag
``mlflow.sharedViewState.<key>`` and links it as ``?viewStateShareKey=<key>``. st-hpo writes that tag itself
(:func:`ensure_trials_view`) when it opens the experiment, so the URL it prints (:func:`trials_url`) opens:

- the runs list filtered to the trials (``tags.`st_hpo.kind` = 'trial'``: flat, not nested under the
  parent run), sorted by ``objective`` best first, with ``objective``, the trial's state and every searched
  parameter as columns;
- with ``compareRunsMode=CHART`` (:func:`trials_url`'s ``charts``): a parallel-coordinates chart of the
  searched parameters and ``objective``, and one scatter chart of ``objective`` against each parameter;
- MLflow's model-training view, not its GenAI one: the UI decides that by its ``workflowType`` (from the
  URL, else the browser's last choice, GenAI by default); older UIs read the experiment tag
  ``mlflow.experimentKind``, which st-hpo also sets.

The view is a snapshot the browser keeps once opened; what the UI's own controls change is kept by the
browser, not written back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from st_hpo._tracking._schema import TRIAL_STATE_KEY

__all__ = ["EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "VIEW_KEY", "VIEW_TAG", "ensure_trials_view", "searched_names",
           "trials_url", "trials_view"]

#: The experiment tag MLflow's UI reads for the kind of experiment, and the model-training kind.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: The share key of st-hpo's view of the trials, and the experiment tag that holds the view.
VIEW_KEY = "st-hpo-trials"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
#: The runs filter of the trial runs (the parent run and retrain runs left out).
TRIALS_FILTER = "tags.`st_hpo.kind` = 'trial'"
OBJECTIVE = "objective"


def _column(kind: str, name: str) -> str:
    """A column key as the UI writes it (``metrics.`objective```), also the sort key."""
    return f"{kind}.`{name}`"


def searched_names(space: Any, study: Any = None) -> list[str]:
    """The searched parameters' names: a space dict's keys, then any other name a trial of the Optuna study
    ``study`` sampled (a define-by-run space names them as it runs)."""
    names = list(space) if isinstance(space, Mapping) else []
    for trial in study.get_trials(deepcopy=False) if study is not None else ():
        names.extend(trial.params)
    return list(dict.fromkeys(names))


def trials_view(params: Iterable[str], *, maximize: bool) -> dict[str, Any]:
    """The shared view state: search facets (filter, sort) and the runs list's columns and charts."""
    params = list(dict.fromkeys(params))
    section = "st-hpo-section-trials"
    charts: list[dict[str, Any]] = [{
        "uuid": "st-hpo-parallel", "type": "PARALLEL", "deleted": False, "isGenerated": False,
        "metricSectionId": section, "displayName": f"{OBJECTIVE} and the searched parameters",
        "selectedParams": params, "selectedMetrics": [OBJECTIVE], "showAllRuns": True,
    }]
    for i, name in enumerate(params):
        charts.append({
            "uuid": f"st-hpo-scatter-{i}", "type": "SCATTER", "deleted": False, "isGenerated": False,
            "metricSectionId": section, "displayName": f"{OBJECTIVE} against {name}",
            "xaxis": {"key": name, "type": "PARAM"}, "yaxis": {"key": OBJECTIVE, "type": "METRIC"},
            "runsCountToCompare": 1000,
        })
    return {
        "searchFilter": TRIALS_FILTER,
        "orderByKey": _column("metrics", OBJECTIVE),
        "orderByAsc": not maximize,
        "selectedColumns": [_column("metrics", OBJECTIVE), _column("tags", TRIAL_STATE_KEY),
                            *(_column("params", p) for p in params)],
        "compareRunCharts": charts,
        "compareRunSections": [{"uuid": section, "name": "st-hpo: the trials", "display": True,
                                "isReordered": False}],
    }


def trials_url(base: str, experiment_id: str, *, charts: bool = False) -> str:
    """The UI address of the trials view of experiment ``experiment_id`` (``charts``: its charts)."""
    query = f"viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"
    if charts:
        query += "&compareRunsMode=CHART"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def ensure_trials_view(client: Any, experiment_id: str, params: Iterable[str], *, maximize: bool,
                       tags: dict[str, str] | None = None) -> None:
    """Set the model-training kind and the trials view on the experiment, where they differ from ``tags``
    (the experiment's tags as read; None: write both). An experiment made by an earlier version gets both."""
    tags = tags or {}
    if tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    view = json.dumps(trials_view(params, maximize=maximize), separators=(",", ":"))
    if tags.get(VIEW_TAG) != view:
        client.set_experiment_tag(experiment_id, VIEW_TAG, view)
