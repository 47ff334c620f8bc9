"""Reading back what a user would look at: trials in the Optuna storage and runs in MLflow."""

from __future__ import annotations

from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient


def load_trials(output_dir: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    from st_hpo._execution._storage import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(str(output_dir / "optuna.journal")))
    return study.get_trials(deepcopy=False)


def mlflow_runs(output_dir: Path, experiment: str) -> tuple[MlflowClient, list, list]:
    """(client, parent runs, trial runs sorted by trial number) of the embedded store."""
    client = MlflowClient(tracking_uri=f"sqlite:///{output_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("st_hpo.kind") == "study"]
    trials = sorted((r for r in runs if r.data.tags.get("st_hpo.kind") == "trial"),
                    key=lambda r: int(r.data.tags["st_hpo.trial_number"]))
    return client, parents, trials
