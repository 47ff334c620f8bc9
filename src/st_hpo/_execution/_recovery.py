"""Finding trials whose worker died: heartbeats on RDB storages, a liveness record elsewhere.

The journal file storage has no heartbeat, so every trial records its worker's host and pid
(``st_hpo.tag.host``, ``st_hpo.pid``) and, on Linux, the process's start time and the boot id
(``st_hpo.pid_start``, ``st_hpo.boot_id``), so a pid reused after a reboot or by a later process is not
taken for the worker; a RUNNING trial whose worker on this host is gone is failed with the reason. On RDB storages with a heartbeat Optuna's own ``fail_stale_trials`` does it (and re-queues the
parameters through ``RetryFailedTrialCallback``).
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable
from typing import Any

from st_hpo._execution._storage import uses_heartbeat
from st_hpo._tracking._schema import (
    BOOT_ID_ATTR,
    ENGINE_REF_ATTR,
    ERROR_ATTR,
    LAST_SEEN_ATTR,
    PID_KEY,
    PID_START_ATTR,
    RUNNER_ATTR,
    STOPPED_ATTR,
    SUPERVISOR_ATTR,
    TAG_HOST_KEY,
    TRIAL_SECONDS_KEY,
)

__all__ = ["ENGINE_REF_ATTR", "STOPPED_ATTR", "current_host", "engine_ref", "fail_trial", "pid_alive", "process_identity",
           "record_runner", "record_worker", "recover_stale_trials", "runner_gone", "worker_alive"]

logger = logging.getLogger(__name__)

#: A RUNNING trial that recorded no worker this long after it started lost its worker in between.
UNCLAIMED_SECONDS = 30.0
#: The pid of the supervisor (``st-hpo run --workers``) that started a worker: in its env, on its trials.
SUPERVISOR_ENV = "ST_HPO_SUPERVISOR_PID"
#: How long other workers leave a dead worker's trial to its live supervisor, which knows the exit code.
SUPERVISOR_GRACE_SECONDS = 15.0
#: Set by an engine that starts a worker in a way the environment does not tell (a Ray actor).
ENGINE_REF_ENV = "ST_HPO_ENGINE_REF"
_deferred: dict[int, float] = {}  # trial id -> when this process first left it to the supervisor


def current_host() -> str:
    """This machine's name as trials record it (``ST_HPO_HOST`` overrides it, e.g. in containers)."""
    return os.environ.get("ST_HPO_HOST") or socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (zombies count as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def process_identity(pid: int) -> dict[str, Any]:
    """What tells process ``pid`` apart from a later one with the same pid: its start time (field 22 of
    ``/proc/<pid>/stat``, clock ticks since boot) and the boot id. Empty where ``/proc`` is missing
    (macOS): there a worker is then recognised by its pid alone, which a reused pid can fool."""
    identity: dict[str, Any] = {}
    try:
        with open(f"/proc/{pid}/stat") as fh:  # the name (field 2) may hold spaces and ')': split after it
            identity[PID_START_ATTR] = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/sys/kernel/random/boot_id") as fh:
            identity[BOOT_ID_ATTR] = fh.read().strip()
    except (OSError, IndexError, ValueError):
        pass
    return identity


def worker_alive(attrs: dict[str, Any]) -> bool:
    """Whether the worker process a trial recorded (``st_hpo.pid`` and its identity) still runs here."""
    pid = int(attrs[PID_KEY])
    if not pid_alive(pid):
        return False
    recorded = {k: attrs[k] for k in (PID_START_ATTR, BOOT_ID_ATTR) if k in attrs}
    now = process_identity(pid)
    return all(now.get(k, v) == v for k, v in recorded.items())  # a key /proc cannot give: pid only


def engine_ref(pid: int | None = None) -> str:
    """This worker's ``engine_ref``: what its engine set, else its SLURM array task (or job), else
    ``local:<pid>``."""
    env = os.environ
    if env.get(ENGINE_REF_ENV):
        return env[ENGINE_REF_ENV]
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"slurm:{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    if env.get("SLURM_JOB_ID"):
        return f"slurm:{env['SLURM_JOB_ID']}"
    return f"local:{pid or os.getpid()}"


def record_worker(trial: Any, pid: int, host: str) -> None:
    """Record on a trial the worker process that runs it: its host, what identifies it beyond the pid, and
    the pid last. Recovery reads a trial without a pid as one whose worker died before it recorded itself,
    so a worker killed between two of these writes never leaves a half-recorded trial RUNNING for ever."""
    trial.set_user_attr(TAG_HOST_KEY, host)
    trial.set_user_attr(ENGINE_REF_ATTR, engine_ref(pid))
    for key, value in process_identity(pid).items():
        trial.set_user_attr(key, value)
    trial.set_user_attr(PID_KEY, pid)


def record_runner(study: Any) -> None:
    """Record on the study the process that runs it now and holds its parent run open (see :func:`runner_gone`)."""
    pid = os.getpid()
    study.set_user_attr(RUNNER_ATTR, {"host": current_host(), PID_KEY: pid, "since": round(time.time(), 3),
                                      **process_identity(pid)})


def runner_gone(study: Any) -> bool | None:
    """Whether the last process that ran the study (:func:`record_runner`) is gone: True or False when it ran on
    this host, None when it ran elsewhere or recorded nothing (a study run before this was recorded)."""
    runner = study.user_attrs.get(RUNNER_ATTR)
    if not isinstance(runner, dict) or runner.get("host") != current_host() or PID_KEY not in runner:
        return None
    return not worker_alive(runner)


def fail_trial(study: Any, trial: Any, reason: str) -> None:
    """Mark a RUNNING trial (a FrozenTrial) FAIL with ``reason``; a no-op if it already ended."""
    import optuna

    from st_hpo._execution._resume import queue_resume

    storage = study._storage  # noqa: SLF001 - the storage API is public, the attribute is not
    try:
        storage.set_trial_user_attr(trial._trial_id, ERROR_ATTR, reason)  # noqa: SLF001
        storage.set_trial_user_attr(trial._trial_id, STOPPED_ATTR, True)  # noqa: SLF001
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)  # noqa: SLF001
    except RuntimeError:
        return  # finished meanwhile (another worker got there first)
    logger.warning("trial %d marked FAIL: %s", trial.number, reason)
    queue_resume(study, trial)  # this process failed it: it alone queues its retry from the last checkpoint


def recover_stale_trials(study: Any, *, exit_codes: dict[int, int] | None = None,
                         engine_ended: Callable[[str], str | None] | None = None) -> list[int]:
    """Fail RUNNING trials whose worker is gone; returns their numbers.

    ``exit_codes`` maps pids of workers this process supervised to how they ended (negative: a signal),
    so the reason can say "worker killed by signal 9". ``engine_ended`` asks the engine about a trial's
    ``engine_ref`` first (:func:`st_hpo._engines.ended_reason`): a worker on any host whose SLURM task or Ray
    actor ended is failed with the engine's reason, before its pid or heartbeat is looked at.
    """
    import optuna

    failed: list[int] = []
    if uses_heartbeat(study._storage):  # noqa: SLF001
        before = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
        with warnings.catch_warnings():  # experimental since Optuna 2.9, and the one way to do this
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        after = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
        failed.extend(sorted(before - after))
    host = current_host()
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = trial.user_attrs.get(PID_KEY)
        if pid is None:  # a worker records itself right after it asks; this one died in between
            started = trial.datetime_start or now
            if (now - started).total_seconds() > UNCLAIMED_SECONDS:
                fail_trial(study, trial, "its worker died before it recorded itself on the trial")
                failed.append(trial.number)
            continue
        ref = str(trial.user_attrs.get(ENGINE_REF_ATTR, ""))
        by_engine = engine_ended is not None and ref and not ref.startswith("local:")
        why = engine_ended(ref) if by_engine else None
        if why:
            _record_run_time(study, trial)
            fail_trial(study, trial, why)
            failed.append(trial.number)
            continue
        if trial.user_attrs.get(TAG_HOST_KEY) != host or worker_alive(trial.user_attrs):
            continue
        if by_engine and _deferred_for(trial) < SUPERVISOR_GRACE_SECONDS:
            continue  # the engine (still ending the task) says how it ended in a moment
        if exit_codes is None and _left_to_supervisor(trial):
            continue
        code = (exit_codes or {}).get(int(pid))
        if code is not None and code < 0:
            reason = f"worker killed by signal {-code}"
        elif code is not None:
            reason = f"worker exited with code {code} during the trial"
        else:
            reason = f"worker (pid {pid} on {host}) died during the trial"
        _record_run_time(study, trial)
        fail_trial(study, trial, reason)
        failed.append(trial.number)
    return failed


def _record_run_time(study: Any, trial: Any) -> None:
    """Keep how long a dead worker's trial really ran (``st_hpo.trial_seconds``): from its start to its last
    sign of life (``st_hpo.last_seen``, written every few seconds while it runs: see
    :class:`st_hpo._execution._storage.HeartbeatThread`), not to when its death was noticed."""
    last_seen = trial.user_attrs.get(LAST_SEEN_ATTR)
    if last_seen is None or trial.datetime_start is None:
        return
    seconds = max(float(last_seen) - trial.datetime_start.timestamp(), 0.0)
    try:
        study._storage.set_trial_user_attr(trial._trial_id, TRIAL_SECONDS_KEY, round(seconds, 3))  # noqa: SLF001
    except RuntimeError:
        return  # finished meanwhile


def _left_to_supervisor(trial: Any) -> bool:
    """Whether a live supervisor (not this process) will fail this trial with its worker's exit code.

    A worker killed by a signal stays a zombie until its supervisor reaps it (every 0.5 s), and the
    supervisor alone knows the signal; the other workers leave the trial to it for a grace period, after
    which they fail it themselves (a supervisor that is alive but stuck must not leave it RUNNING).
    """
    supervisor = trial.user_attrs.get(SUPERVISOR_ATTR)
    if supervisor is None or int(supervisor) == os.getpid() or not pid_alive(int(supervisor)):
        return False
    return _deferred_for(trial) < SUPERVISOR_GRACE_SECONDS


def _deferred_for(trial: Any) -> float:
    """Seconds since this process first left the dead worker's trial to someone who knows more."""
    first = _deferred.setdefault(trial._trial_id, time.monotonic())  # noqa: SLF001
    return time.monotonic() - first
