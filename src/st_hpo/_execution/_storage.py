"""Storage URLs -> Optuna storages: the embedded journal file, SQLite, or PostgreSQL with heartbeats.

The default is Optuna's journal file storage in the study's output directory: safe for several worker
processes on one machine (Optuna advises against SQLite for parallel workers). PostgreSQL (for several
machines) gets Optuna's heartbeat, so that a trial whose worker vanished is failed by the others, and
``RetryHeartbeatStaleTrialCallback`` so that its parameters are tried again.
"""

from __future__ import annotations

import os
import random
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from st_hpo._tracking._schema import LAST_SEEN_ATTR
from st_hpo.exceptions import StorageError

__all__ = ["HeartbeatThread", "default_storage_url", "open_storage", "HEARTBEAT_INTERVAL", "GRACE_PERIOD"]

#: Seconds between heartbeats of a running trial (RDB storages).
HEARTBEAT_INTERVAL = int(os.environ.get("ST_HPO_HEARTBEAT_INTERVAL", "30"))
#: Seconds without a heartbeat after which another worker fails the trial.
GRACE_PERIOD = int(os.environ.get("ST_HPO_GRACE_PERIOD", "120"))
#: How often the parameters of a trial failed by a vanished worker are tried again.
MAX_RETRY = 1
#: Seconds between a running trial's signs of life (``st_hpo.last_seen``, every storage): a trial whose
#: worker is killed is ended at its last one, so its run's end time and duration are right to this.
LIVENESS_INTERVAL = float(os.environ.get("ST_HPO_LIVENESS_INTERVAL", "2"))
#: Workers starting together on an empty database race to create Optuna's tables; the losers retry.
SCHEMA_RACE_RETRIES = 4


def default_storage_url(output_dir: str | Path) -> str:
    """The embedded storage: a journal file in the study's output directory."""
    return str(Path(output_dir).resolve() / "optuna.journal")


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url``: ``*.journal`` path, ``sqlite:///...`` or ``postgresql://...``."""
    import optuna

    if url.endswith(".journal") and "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        if Path(url).is_dir():
            raise StorageError(f"storage {url!r} is a folder; give the path of the journal file in it "
                               f"({Path(url) / 'optuna.journal'}, say), or output_dir= for the folder",
                               parameters=("output_dir",))
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(url))
    if url.startswith("sqlite:"):
        return _rdb(url, heartbeat=False, engine_kwargs={"connect_args": {"timeout": 60}})
    if url.startswith(("postgresql", "mysql")):
        return _rdb(url, heartbeat=True, engine_kwargs={"pool_pre_ping": True})
    raise StorageError(
        f"storage {url!r} is not supported; use a path ending in .journal, sqlite:///FILE or "
        "postgresql://USER@HOST/DB"
    )


def _rdb(url: str, *, heartbeat: bool, engine_kwargs: dict[str, Any]) -> Any:
    import optuna

    kwargs: dict[str, Any] = {"engine_kwargs": engine_kwargs}
    if heartbeat:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        kwargs.update(heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=GRACE_PERIOD,
                      heartbeat_stale_trial_callback=retry)
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **kwargs)
        except Exception as exc:  # noqa: BLE001 - sqlalchemy raises many kinds
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            racing = "already exists" in reason or "duplicate key" in reason or "UniqueViolation" in reason
            if racing and attempt < SCHEMA_RACE_RETRIES:
                time.sleep(0.5 + random.random())  # another worker is creating the schema: use theirs
                continue
            if isinstance(exc, ImportError):  # SQLAlchemy found no driver for the URL's dialect
                missing = getattr(exc.__cause__, "name", None) or "its driver"
                raise StorageError(f"could not open the Optuna storage {_redact(url)}: {missing} is not installed; "
                                   f"{_driver_hint(url, missing)}") from None
            raise StorageError(f"could not open the Optuna storage {_redact(url)}: {reason}") from None
    raise AssertionError("unreachable")


def _driver_hint(url: str, missing: str) -> str:
    """How to install the database driver a storage URL needs."""
    if url.startswith(("postgresql://", "postgresql+psycopg://")):
        return "install PostgreSQL's driver with `pip install 'st-hpo[postgres]'` (psycopg 3)"
    if url.startswith("postgresql"):
        return (f"install {missing}, the driver the URL names, or use postgresql:// with "
                "`pip install 'st-hpo[postgres]'` (psycopg 3)")
    if url.startswith("mysql"):
        return ("install the driver the URL names, e.g. `pip install pymysql` for mysql+pymysql:// (st-hpo is tested "
                "on PostgreSQL, SQLite and journal files)")
    return "install the database driver the URL's dialect needs"


def _redact(url: str) -> str:
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def uses_heartbeat(storage: Any) -> bool:
    from optuna.storages._heartbeat import BaseHeartbeat

    return isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval() is not None


class HeartbeatThread:
    """Records a running trial's signs of life while it runs, from a thread of its own.

    Every :data:`LIVENESS_INTERVAL` seconds, on every storage, the time as the trial's ``st_hpo.last_seen``:
    a trial whose worker is killed (``kill -9``, a lost machine) is ended, by whoever notices, at its last
    one (its MLflow run's end time and its ``trial_seconds``), not at its last report nor when it was
    noticed. On an RDB storage with a heartbeat, also Optuna's heartbeat at its own interval, by which
    other machines fail the trial.
    """

    def __init__(self, storage: Any, trial_id: int) -> None:
        self._storage, self._trial_id = storage, trial_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HeartbeatThread:
        optuna_beats = uses_heartbeat(self._storage)
        if optuna_beats:
            self._storage.record_heartbeat(self._trial_id)
        self._seen()
        self._thread = threading.Thread(target=self._beat, args=(optuna_beats,), name="st-hpo-heartbeat",
                                        daemon=True)
        self._thread.start()
        return self

    def _seen(self) -> bool:
        """Record the time on the trial; False once the trial has ended (nothing more to record)."""
        try:
            self._storage.set_trial_user_attr(self._trial_id, LAST_SEEN_ATTR, round(time.time(), 3))
        except RuntimeError:  # optuna's UpdateFinishedTrialError: it ended
            return False
        except Exception:  # noqa: BLE001 - a storage hiccup: the next beat tries again
            pass
        return True

    def _beat(self, optuna_beats: bool) -> None:
        interval = self._storage.get_heartbeat_interval() if optuna_beats else None
        next_optuna = time.monotonic() + (interval or 0)
        while not self._stop.wait(LIVENESS_INTERVAL):
            if not self._seen():
                return
            if interval and time.monotonic() >= next_optuna:
                next_optuna = time.monotonic() + interval
                try:
                    self._storage.record_heartbeat(self._trial_id)
                except Exception:  # noqa: BLE001 - a missed beat is retried at the next interval
                    pass

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
