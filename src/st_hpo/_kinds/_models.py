"""Logging a SentenceTransformer into an existing MLflow run (and registering it), for retrain and register."""

from __future__ import annotations

import os
from typing import Any

from st_hpo.exceptions import TrackingError

__all__ = ["log_model_folder", "log_sentence_transformer"]


def log_sentence_transformer(tracking_uri: str, run_id: str, model: Any,
                             register_as: str | None) -> tuple[str, str | None]:
    """``mlflow.sentence_transformers.log_model`` into run ``run_id`` of ``tracking_uri``; (model URI, version).

    ``log_model`` talks to the process-wide tracking and registry URIs; both are pointed at the study's
    store for the call and put back as they were (unset stays unset) afterwards. The logged model (an
    MLflow 3 ``LoggedModel`` named ``model``) is made first in the run's own experiment: left to itself,
    ``log_model`` would make it in the process's active experiment, MLflow's Default one, whose artifact
    folder is wherever that store was first made.
    """
    import mlflow
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    saved_registry = registry_utils._registry_uri
    saved_env = os.environ.get("MLFLOW_REGISTRY_URI")  # set_registry_uri exports it for subprocesses
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        run = client.get_run(run_id)
        logged = client.create_logged_model(run.info.experiment_id, name="model", source_run_id=run_id,
                                            params=dict(run.data.params))
        with _use_tracking_uri(tracking_uri):
            mlflow.set_registry_uri(tracking_uri)
            info = mlflow.sentence_transformers.log_model(
                model, name="model", run_id=run_id, model_id=logged.model_id, registered_model_name=register_as,
                pip_requirements=_requirements(),  # inferring them would load the model again in a subprocess
            )
    except Exception as exc:  # noqa: BLE001 - the MLflow client raises many kinds
        raise TrackingError(f"MLflow at {tracking_uri} could not log the model: {type(exc).__name__}: {exc}") from exc
    finally:
        registry_utils._registry_uri = saved_registry
        if saved_env is None:
            os.environ.pop("MLFLOW_REGISTRY_URI", None)
        else:
            os.environ["MLFLOW_REGISTRY_URI"] = saved_env
    version = info.registered_model_version
    return info.model_uri, None if version is None else str(version)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("sentence-transformers", "transformers", "torch")]


def log_model_folder(tracking_uri: str, run_id: str, folder: str, register_as: str | None) -> tuple[str, str | None]:
    """Log a saved model folder as the ``model`` artifact of run ``run_id`` and register it; (URI, version).

    For the kinds MLflow has no flavor for (CrossEncoder, SparseEncoder, MultiVectorEncoder): the folder is
    what the model class loads back, e.g. ``CrossEncoder(mlflow.artifacts.download_artifacts(uri))``.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        client.log_artifacts(run_id, folder, artifact_path="model")
        source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/model"
        if register_as is None:
            return source, None
        try:
            client.get_registered_model(register_as)
        except Exception:  # noqa: BLE001 - not registered yet
            client.create_registered_model(register_as)
        version = client.create_model_version(register_as, source=source, run_id=run_id)
    except Exception as exc:  # noqa: BLE001 - the MLflow client raises many kinds
        raise TrackingError(f"MLflow at {tracking_uri} could not log the model: {type(exc).__name__}: {exc}") from exc
    return f"models:/{register_as}/{version.version}", str(version.version)
