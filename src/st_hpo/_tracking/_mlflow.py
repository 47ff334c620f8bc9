"""MLflow logging with the client API: one parent run per study, one child run per trial.

Optuna's storage is the source of truth; MLflow is the review surface. Every write is retried; a write
that still fails is left for :func:`~st_hpo._tracking._mlflow_sync.sync_runs`, which reconciles MLflow with
the storage (a run for every trial, in the state of its trial) and runs at the start and end of every
``st-hpo run`` and as ``st-hpo sync``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from st_hpo._interrupts import uninterrupted
from st_hpo._tracking._census import OUT_OF_MEMORY
from st_hpo._tracking._schema import (
    EFFECTIVE_PARAMS_ATTR,
    ERROR_ATTR,
    KIND_KEY,
    PARENT_ATTR,
    STUDY_KEY,
    TRIAL_NUMBER_KEY,
    TRIAL_STATE_KEY,
)
from st_hpo._tracking._view import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG
from st_hpo.exceptions import TrackingError

__all__ = ["ACCEPTED_STATUSES", "EFFECTIVE_PARAMS_ATTR", "MlflowTracker", "RUN_STATUS", "default_tracking_uri",
           "error_line", "experiment_id", "param_value", "seed_sqlite_store", "tracking_client"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Optuna trial state name -> MLflow run status.
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED", "RUNNING": "RUNNING",
              OUT_OF_MEMORY: "FAILED"}
#: Run statuses that agree with a finished trial's state (an interrupted FAIL trial's run is KILLED).
ACCEPTED_STATUSES = {"COMPLETE": {"FINISHED"}, "PRUNED": {"KILLED"}, "FAIL": {"FAILED", "KILLED"}, OUT_OF_MEMORY: {"FAILED"}}
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
#: After MLflow failed a write through all retries, skip writes for this long (trials go on meanwhile).
BACKOFF_SECONDS = 30.0


def default_tracking_uri(output_dir: str | Path) -> str:
    """The embedded tracking store: a SQLite file in the study's output directory."""
    return f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


def seed_sqlite_store(tracking_uri: str) -> None:
    """Start a new SQLite tracking store from an already-migrated empty one.

    MLflow runs its ~70 schema migrations on every new database (seconds on a small machine). The first
    time, st-hpo migrates an empty store once per MLflow version into ``~/.cache/st-hpo`` (or
    ``$ST_HPO_CACHE``), and copies it for every new study after that.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return
    target = Path(tracking_uri[len("sqlite:///") :])
    if target.exists():
        return
    import mlflow

    cache = Path(os.environ.get("ST_HPO_CACHE") or Path.home() / ".cache" / "st-hpo")
    template = cache / f"mlflow-{mlflow.__version__}-empty.db"
    try:
        if not template.exists():
            cache.mkdir(parents=True, exist_ok=True)
            scratch = cache / f".{template.name}.{os.getpid()}"
            from mlflow.tracking import MlflowClient

            MlflowClient(tracking_uri=f"sqlite:///{scratch}").search_experiments()  # runs the migrations
            os.replace(scratch, template)
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = target.with_name(f".{target.name}.{os.getpid()}")
        shutil.copyfile(template, scratch)
        try:
            os.link(scratch, target)  # never replaces a store another process created meanwhile
        except FileExistsError:
            pass
        finally:
            scratch.unlink()
    except OSError as exc:  # no cache: MLflow migrates the new store itself
        logger.debug("could not seed %s from %s: %s", target, template, exc)


def param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]


def _fail_fast() -> None:
    """An unreachable server must not hold a trial (or a command) for minutes: fail fast, retry here, sync later."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an error MLflow raised, without its documentation link."""
    first = (str(exc).strip().splitlines() or [""])[0].split(" See http")[0][:300]
    return f"{type(exc).__name__}: {first}"


def tracking_client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` on ``tracking_uri``; TrackingError, in one line, for a URI MLflow has no store for."""
    _fail_fast()
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri=tracking_uri)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds for a URI it cannot use
        raise TrackingError(
            f"MLflow cannot use the tracking URI {tracking_uri!r} ({error_line(exc)}); give "
            "tracking_uri= the http(s)://HOST:PORT of an MLflow server, sqlite:///FILE or a database URL, "
            "or leave it out to use the study's own store in its output folder", parameters=("tracking_uri",)
        ) from None


def experiment_id(tracking_uri: str, experiment: str) -> str:
    """The id of the experiment named ``experiment`` at ``tracking_uri``; TrackingError when MLflow cannot be
    read or has no such experiment (the study never ran against it)."""
    try:
        exp = tracking_client(tracking_uri).get_experiment_by_name(experiment)
    except TrackingError:
        raise
    except Exception as exc:  # noqa: BLE001 - the client raises many kinds for a server that is down
        raise TrackingError(f"MLflow at {tracking_uri} could not be read ({error_line(exc)}); "
                            "start the server, or check tracking_uri=", parameters=("tracking_uri",)) from None
    if exp is None:
        raise TrackingError(f"MLflow at {tracking_uri} has no experiment {experiment!r}; run the study first")
    return exp.experiment_id


class MlflowTracker:
    """Writes a study's runs to one MLflow tracking store (``tracking_uri``)."""

    def __init__(self, tracking_uri: str, experiment_name: str, *, artifact_root: str | None = None) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        _fail_fast()
        seed_sqlite_store(tracking_uri)
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self._artifact_root = artifact_root
        self.client = tracking_client(tracking_uri)
        self.experiment_id = self._call("open the experiment", self._ensure_experiment, retries=2)
        self.parent_run_id: str | None = None
        self._down_until = 0.0
        #: the ``st_hpo.kind`` tag of the runs :meth:`start_trial` makes and :meth:`trial_runs` finds
        self.run_kind = "trial"

    # --- plumbing -------------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., T], *args: Any, retries: int | None = None, **kw: Any) -> T:
        if time.monotonic() < getattr(self, "_down_until", 0.0):
            raise TrackingError(f"MLflow at {self.tracking_uri} is unreachable (skipped: {what})")
        delays = RETRY_DELAYS if retries is None else RETRY_DELAYS[:retries]
        for attempt in range(len(delays) + 1):
            try:
                with uninterrupted():  # a Ctrl-C inside a write can leave SQLite's lock held (see _interrupts)
                    return fn(*args, **kw)
            except Exception as exc:  # noqa: BLE001 - the client raises many kinds
                if attempt == len(delays):
                    self._down_until = time.monotonic() + BACKOFF_SECONDS
                    first = str(exc).splitlines()[0][:300] if str(exc) else ""
                    raise TrackingError(
                        f"MLflow at {self.tracking_uri} could not {what}: {type(exc).__name__}: {first}"
                    ) from exc
                logger.debug("MLflow %s failed (%s); retrying", what, exc)
                time.sleep(delays[attempt])
        raise AssertionError("unreachable")

    def _ensure_experiment(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        try:
            # a classic ML experiment: MLflow 3 would otherwise open it on the GenAI traces view
            return self.client.create_experiment(self.experiment_name, artifact_location=self._artifact_root,
                                                 tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception:
            exp = self.client.get_experiment_by_name(self.experiment_name)  # another worker created it
            if exp is None:
                raise
            return exp.experiment_id

    def show_trials(self, space: Any, study: Any, *, maximize: bool | None = None) -> None:
        """Make the UI open the experiment on the trials of ``study`` (Optuna's; None: none ran yet), best
        first (see :mod:`st_hpo._tracking._view`); an experiment made by an earlier version gets the
        model-training kind and the view here. ``maximize``: the direction, when there is no ``study``."""
        from st_hpo._tracking._view import ensure_trials_view, searched_names

        if study is not None:
            maximize = study.directions[0].name == "MAXIMIZE"  # several objectives: the first
        tags = self._call("read the experiment", self.client.get_experiment, self.experiment_id).tags
        self._call("set the trials view", ensure_trials_view, self.client, self.experiment_id,
                   searched_names(space, study), maximize=bool(maximize), tags=tags)

    # --- the parent run -------------------------------------------------------------------------------

    def ensure_parent(self, study: Any, settings: Mapping[str, Any]) -> str:
        """The study's parent run, created once and its id kept in the Optuna study's user attrs."""
        run_id = study.user_attrs.get(PARENT_ATTR)
        if run_id and self.run_exists(run_id):
            self.parent_run_id = run_id
            return run_id
        found = self._find_parent(study.study_name)
        if found is None:
            tags = {KIND_KEY: "study", STUDY_KEY: study.study_name, "mlflow.runName": study.study_name}
            run = self._call("create the parent run", self.client.create_run, self.experiment_id, tags=tags,
                             run_name=study.study_name)
            found = run.info.run_id
            params = {k: param_value(v) for k, v in settings.items()}
            self._log_params(found, params)
            again = self._find_parent(study.study_name)  # two workers may have raced: keep the oldest
            if again is not None and again != found:
                self.client.delete_run(found)
                found = again
        study.set_user_attr(PARENT_ATTR, found)
        self.parent_run_id = found
        return found

    def run_exists(self, run_id: str) -> bool:
        try:
            run = self.client.get_run(run_id)
        except Exception:  # noqa: BLE001 - not found, or another store
            return False
        return run.info.experiment_id == self.experiment_id and run.info.lifecycle_stage == "active"

    def _find_parent(self, study_name: str) -> str | None:
        runs = self._call(
            "search runs", self.client.search_runs, [self.experiment_id],
            filter_string=f"tags.`st_hpo.kind` = 'study' and tags.`st_hpo.study` = '{study_name}'",
            order_by=["attributes.start_time ASC"], max_results=10,
        )
        return runs[0].info.run_id if runs else None

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        """Params (values already strings) on run ``run_id``, 100 a write."""
        self._log_params(run_id, params)

    def _log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._call("log params", self.client.log_batch, run_id, params=items[i : i + 100])

    def set_parent_status(self, status: str, *, end_time: int | None = None) -> None:
        """RUNNING, or end the parent run (FINISHED/KILLED/FAILED) with its end time, so MLflow shows its duration.
        ``end_time`` (ms since the epoch; default now) is when the run that held it really stopped."""
        if not self.parent_run_id:
            return
        if status == "RUNNING":
            self._call("update the parent run", self.client.update_run, self.parent_run_id, status=status)
            return
        if end_time is not None:  # never before the run's own start
            start = self._call("read the parent run", self.client.get_run, self.parent_run_id).info.start_time
            end_time = max(end_time, start or 0)
        self._call("end the parent run", self.client.set_terminated, self.parent_run_id, status=status,
                   end_time=end_time)

    def parent_status(self) -> str | None:
        """The parent run's status in MLflow (RUNNING, FINISHED, KILLED, FAILED); None without a parent run."""
        if not self.parent_run_id:
            return None
        return self._call("read the parent run", self.client.get_run, self.parent_run_id).info.status

    def log_parent(self, metrics: Mapping[str, float], step: int = 0, tags: Mapping[str, str] | None = None) -> None:
        """Metrics (and tags) on the parent run."""
        if not self.parent_run_id:
            return
        self.log_metrics(self.parent_run_id, metrics, step)
        for key, value in (tags or {}).items():
            self._call("set a tag", self.client.set_tag, self.parent_run_id, key, value)

    # --- child runs -----------------------------------------------------------------------------------

    def start_trial(self, study_name: str, number: int, params: Mapping[str, Any],
                    extra_params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        """Create the child run of trial ``number``; returns its run id."""
        all_tags = {
            "mlflow.parentRunId": self.parent_run_id or "",
            KIND_KEY: self.run_kind,
            STUDY_KEY: study_name,
            TRIAL_NUMBER_KEY: str(number),
            TRIAL_STATE_KEY: "RUNNING",
            **tags,
        }
        run = self._call("create a trial run", self.client.create_run, self.experiment_id,
                         tags=all_tags, run_name=f"{self.run_kind}-{number}")
        run_id = run.info.run_id
        logged = {k: param_value(v) for k, v in extra_params.items()}
        logged.update({k: param_value(v) for k, v in params.items()})
        self._log_params(run_id, logged)
        return run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_metric_key(k), float(v), now, int(step)) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if items:
            self._call("log metrics", self.client.log_batch, run_id, metrics=items)

    def log_series(self, run_id: str, entries: list[tuple[Mapping[str, float], int]]) -> None:
        """Metrics at several steps in as few writes as possible (MLflow takes 1000 per batch)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_metric_key(k), float(v), now, int(step)) for metrics, step in entries
                 for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for i in range(0, len(items), 1000):
            self._call("log metrics", self.client.log_batch, run_id, metrics=items[i : i + 1000])

    def log_dict(self, run_id: str, data: Any, path: str) -> None:
        self._call(f"log {path}", self.client.log_dict, run_id, data, path)

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        self._call(f"log {local_path}", self.client.log_artifact, run_id, local_path, artifact_path)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Tags on a run of the study (a trial's, e.g. ``st_hpo.pareto``)."""
        for key, value in tags.items():
            self._call(f"tag {key}", self.client.set_tag, run_id, key, value)

    def end_trial(self, run_id: str, state: str, *, value: float | None = None,
                  error: str | None = None, step: int | None = None, status: str | None = None,
                  end_time: int | None = None, tags: Mapping[str, str] | None = None) -> None:
        """Close a trial's run with the status of its state (COMPLETE/PRUNED/FAIL/OUT_OF_MEMORY).

        ``value`` is logged as ``objective`` for a COMPLETE trial only: a trial that did not finish has
        intermediate values (``objective_intermediate``), never a final one. ``status`` overrides the
        MLflow status: an interrupted trial is FAIL in Optuna and KILLED here. ``end_time`` (ms since the
        epoch) is when the trial really stopped, for one whose dead worker was noticed later.
        """
        self._call("tag the trial state", self.client.set_tag, run_id, TRIAL_STATE_KEY, state)
        for key, tag in (tags or {}).items():  # what the trial learnt about memory (st_hpo._tracking._census)
            self._call(f"tag {key}", self.client.set_tag, run_id, key, tag)
        if error:
            self._call("tag the error", self.client.set_tag, run_id, ERROR_ATTR, error[:5000])
        if value is not None and state == "COMPLETE":
            self.log_metrics(run_id, {"objective": value}, step or 0)
        self._call("end the run", self.client.set_terminated, run_id, status=status or RUN_STATUS[state],
                   end_time=end_time)

    # --- reconciliation -------------------------------------------------------------------------------

    def trial_runs(self, study_name: str) -> dict[int, Any]:
        """The child runs of the study by trial number (the oldest when a trial has several)."""
        out: dict[int, Any] = {}
        token = None
        while True:
            page = self._call(
                "search runs", self.client.search_runs, [self.experiment_id],
                filter_string=f"tags.`st_hpo.kind` = '{self.run_kind}' and tags.`st_hpo.study` = '{study_name}'",
                order_by=["attributes.start_time ASC"], max_results=1000, page_token=token,
            )
            for run in page:
                out.setdefault(int(run.data.tags[TRIAL_NUMBER_KEY]), run)
            token = page.token
            if not token:
                return out


def _metric_key(key: str) -> str:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-. /")
    return "".join(ch if ch in allowed else "_" for ch in key)

