"""What is recorded of a trial: its record in the storage (``_record``), and MLflow, one parent run per
study and one child run per trial."""

from st_hpo._tracking._mlflow import RUN_STATUS, MlflowTracker, default_tracking_uri

__all__ = ["MlflowTracker", "RUN_STATUS", "default_tracking_uri"]
