"""What a trial could not write to MLflow, kept next to the trial until ``st-hpo sync`` writes it.

A trial whose MLflow write failed (the server went away mid-trial) appends every later write to
``<output>/trials/trial-N/mlflow-spool.jsonl``, one JSON record a line, and records the file's path on the
trial (``st_hpo.mlflow_spool``). :func:`~st_hpo._tracking._mlflow_sync.sync_runs` replays the records into the
trial's run (made again if it was never created) and deletes the file: params, ``training_args.json``, every
curve and metric.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from st_hpo._tracking._schema import SPOOL_ATTR

__all__ = ["SPOOL_ATTR", "SPOOL_NAME", "append", "read", "replay"]

logger = logging.getLogger(__name__)

SPOOL_NAME = "mlflow-spool.jsonl"


def append(path: Path, record: dict[str, Any]) -> None:
    """Add one record (``{"kind": "params" | "dict" | "series", ...}``) to the spool at ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
    except OSError as exc:  # a full disk: MLflow loses this write, the trial goes on
        logger.warning("could not keep an MLflow write in %s: %s", path, exc)


def read(path: str | Path | None) -> list[dict[str, Any]]:
    """The spool's records (a line cut short by a killed process is skipped); [] when there is none."""
    if not path or not Path(path).is_file():
        return []
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def replay(tracker: Any, run_id: str, records: list[dict[str, Any]]) -> None:
    """Write the spooled records into run ``run_id`` (raises TrackingError when MLflow fails again)."""
    params: dict[str, str] = {}
    series: list[tuple[dict[str, float], int]] = []
    for record in records:
        if record.get("kind") == "params":
            params.update(record["params"])
        elif record.get("kind") == "dict":
            tracker.log_dict(run_id, record["data"], record["path"])
        elif record.get("kind") == "series":
            series.extend((metrics, int(step)) for metrics, step in record["entries"])
    if params:
        tracker.log_params(run_id, params)
    if series:
        tracker.log_series(run_id, series)
