"""Worker processes on one machine: N long-lived workers sharing the study's storage, replaced when they die.

Each worker is a fresh ``st-hpo worker`` process (spawned, never forked, so CUDA is never initialised in
a process that forks): it pays the imports and data loading once, then runs trial after trial with
strict clean-up. The supervisor (``st-hpo run --workers N`` or ``--gpus``) does not train: it opens the
study first (validation, storage, MLflow parent run, baseline), starts the workers, and watches them.
A worker that dies mid-trial (``kill -9``, a segfault, the OOM killer) has its trial failed with the
reason ("worker killed by signal 9"), its run closed, and is replaced while the budget is not met.
Ctrl-C or SIGTERM: the workers are told to stop (their running trials end FAIL, runs KILLED); a second
Ctrl-C kills them at once. A supervisor that dies without telling them (SIGKILL, SIGHUP) stops them too:
each worker watches it (:func:`watch_supervisor`) and ends its trial as Ctrl-C does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._execution._recovery import SUPERVISOR_ENV, pid_alive, recover_stale_trials
from st_hpo._tracking._census import is_cancelled, take_census
from st_hpo._tracking._mlflow_sync import sync_runs
from st_hpo._tracking._schema import ERROR_ATTR, PID_KEY
from st_hpo.exceptions import UsageError

if TYPE_CHECKING:
    from st_hpo._execution._session import StudySession

__all__ = ["EXIT_GAVE_UP", "WorkerSpec", "plan_workers", "supervise", "supervisor_gone", "watch_supervisor"]

logger = logging.getLogger(__name__)

#: A worker slot that dies this many times in a row without finishing a trial is not restarted.
MAX_RESTARTS = 5
#: Seconds between a worker's looks at whether its supervisor is still its parent.
SUPERVISOR_POLL_SECONDS = 1.0
#: The exit code of a worker whose last ``Study.max_failures_in_a_row`` trials failed: not restarted.
EXIT_GAVE_UP = 3


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """One worker slot: its name and the GPU it sees (``None``: inherit the environment)."""

    name: str
    gpu: str | None = None


def plan_workers(*, workers: int | None, gpus: str | None, trials_per_gpu: int,
                 devices: list[str] | None = None) -> list[WorkerSpec]:
    """The worker slots: ``--gpus 0,1 --trials-per-gpu K`` gives K per GPU; ``--workers N`` gives N, spread
    round-robin over the GPUs when there are any (``--gpus``, or every visible one), else on the CPU.

    ``devices``: the GPUs this process sees, as ``CUDA_VISIBLE_DEVICES`` values (see :func:`visible_gpus`);
    ``--gpus`` ids are positions in that list, so inside a job whose ``CUDA_VISIBLE_DEVICES=2,3``,
    ``--gpus 0,1`` means GPUs 2 and 3. None: take the ids as they are, unchecked.
    """
    names = ("workers", "trials_per_gpu", "gpus")
    if workers is not None and workers < 1:
        raise UsageError(f"workers={workers}: give at least 1", parameters=names)
    if trials_per_gpu < 1:
        raise UsageError(f"trials_per_gpu={trials_per_gpu}: give at least 1", parameters=names)
    ids = [g.strip() for g in (gpus or "").split(",") if g.strip()]
    if workers is not None and trials_per_gpu > 1:
        raise UsageError("give workers=N (spread over the GPUs) or trials_per_gpu=K, not both", parameters=names)
    if not ids and trials_per_gpu > 1:
        raise UsageError(f"trials_per_gpu={trials_per_gpu} needs GPUs, and this process sees none (no gpus=, no "
                         "CUDA); use workers=N to run N workers on the CPU", parameters=names)
    if ids and devices is not None and not devices:  # every id is out of reach: name them all, as typed
        raise UsageError(f"gpus={','.join(ids)}: this process sees no GPU (torch.cuda.is_available() is False); "
                         "leave gpus= out, or use workers=N to run on the CPU", parameters=names)
    device = {i: _device_of(i, devices) for i in ids}
    if ids and workers is not None:
        return [WorkerSpec(f"gpu{ids[i % len(ids)]}-w{i // len(ids)}", device[ids[i % len(ids)]])
                for i in range(workers)]
    if ids:
        return [WorkerSpec(f"gpu{g}-w{k}", device[g]) for g in ids for k in range(trials_per_gpu)]
    return [WorkerSpec(f"w{i}") for i in range(workers or 1)]


def _device_of(gpu_id: str, devices: list[str] | None) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` value for ``--gpus`` id ``gpu_id``."""
    names = ("gpus", "workers")
    if devices is None:
        return gpu_id
    if not devices:
        raise UsageError(f"gpus={gpu_id}: this process sees no GPU (torch.cuda.is_available() is False); leave "
                         "gpus= out, or use workers=N to run on the CPU", parameters=names)
    if not gpu_id.isdigit() or int(gpu_id) >= len(devices):
        raise UsageError(f"gpus={gpu_id}: this process sees {len(devices)} GPU(s); give ids from 0 "
                         f"to {len(devices) - 1}" + (f" (positions in CUDA_VISIBLE_DEVICES="
                         f"{os.environ['CUDA_VISIBLE_DEVICES']})" if os.environ.get("CUDA_VISIBLE_DEVICES")
                         else ""), parameters=names)
    return devices[int(gpu_id)]


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` values: the inherited list when it is
    set, else ``0..N-1``; empty without CUDA."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return []
    if not torch.cuda.is_available():
        return []
    inherited = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return inherited or [str(i) for i in range(torch.cuda.device_count())]


def default_gpu_list() -> str | None:
    """On a GPU machine, one worker per visible GPU: '0,1,...' (positions in :func:`visible_gpus`); None
    without CUDA."""
    count = len(visible_gpus())
    return ",".join(str(i) for i in range(count)) if count else None


@dataclasses.dataclass
class _Slot:
    spec: WorkerSpec
    proc: subprocess.Popen | None = None
    restarts: int = 0
    done: bool = False


def _worker_command(study_file: str, spec: WorkerSpec, session: StudySession, budget: int, extra: list[str],
                    deadline: float | None = None, plan: Path | None = None) -> list[str]:
    if plan is not None:  # the plan holds everything else: location, options, budget, deadline
        return [sys.executable, "-m", "st_hpo", "worker", "--plan", str(plan), "--slot", spec.name]
    cmd = [sys.executable, "-m", "st_hpo", "worker", study_file, "--worker-name", spec.name,
           "--output-dir", str(session.output_dir), "--storage", session.storage_url,
           "--study-name", session.study.study_name, "--n-trials", str(budget)]
    if session.tracking_uri:
        cmd += ["--tracking-uri", session.tracking_uri]
    if deadline is not None:  # the run's timeout: what is left of it when this worker starts
        cmd += ["--timeout", f"{max(deadline - time.monotonic(), 0.1):.1f}"]  # the worker's parser needs > 0
    return cmd + extra


def _start(slot: _Slot, cmd: list[str], n_workers: int) -> None:
    env = dict(os.environ)
    if slot.spec.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot.spec.gpu
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # GPU ids as nvidia-smi numbers them
    if "OMP_NUM_THREADS" not in env:  # workers share the cores (tokenising, evaluator maths) instead of
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n_workers))  # oversubscribing them
    env["ST_HPO_WORKER_NAME"] = slot.spec.name
    env[SUPERVISOR_ENV] = str(os.getpid())
    slot.proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    logger.info("started worker %s (pid %d)", slot.spec.name, slot.proc.pid)


def supervise(session: StudySession, *, study_file: str, specs: list[WorkerSpec], budget: int,
              extra_args: list[str], progress: Any, timeout: float | None = None,
              plan: Path | None = None) -> tuple[bool, bool, str | None]:
    """Run worker processes until the budget is met (or, with ``timeout``, until the workers stop starting
    trials after that many seconds and finish their running ones); returns (budget_met, interrupted,
    stop_reason), where ``stop_reason`` says why workers gave up (their trials kept failing).

    ``plan``: the worker plan each worker starts from (``st-hpo worker --plan PLAN --slot NAME``); without
    it, the location and ``extra_args`` are passed as flags (``st-hpo confirm``'s workers)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    if deadline is not None and timeout <= 0:  # the run's --timeout went on validation: start no worker
        return _finished(session.study) >= budget, False, None
    slots = [_Slot(spec) for spec in specs]
    for slot in slots:
        _start(slot, _worker_command(study_file, slot.spec, session, budget, extra_args, deadline, plan), len(slots))
    try:
        return _watch(session, slots, study_file, budget, extra_args, progress, deadline, plan)
    except KeyboardInterrupt:
        from st_hpo._interrupts import forget_stop

        forget_stop()  # acted on here: the workers are told, and the caller reports the run as interrupted
        _stop_all(slots)
        recover_stale_trials(session.study, exit_codes=_exit_codes(slots))
        return False, True, None


def _exit_codes(slots: list[_Slot]) -> dict[int, int]:
    return {s.proc.pid: s.proc.returncode for s in slots if s.proc is not None and s.proc.returncode is not None}


def _finished(study: Any, pid: int | None = None) -> int:
    """Finished trials of the study, or of the worker process ``pid`` only."""
    return take_census(t for t in study.get_trials(deepcopy=False)
                       if pid is None or t.user_attrs.get(PID_KEY) == pid).finished


def _gave_up(study: Any, names: list[str]) -> str:
    """Why workers stopped on their own: their trials kept failing; with the last failure's reason."""
    failed = [t for t in study.get_trials(deepcopy=False)
              if t.state.name == "FAIL" and not is_cancelled(t)]
    last = max(failed, key=lambda t: t.number, default=None)
    why = f"; the last, trial {last.number}: {last.user_attrs.get(ERROR_ATTR, 'no reason recorded')}" if last else ""
    return f"worker(s) {', '.join(names)} stopped because their last trials all failed (max_failures_in_a_row){why}"


def _watch(session: StudySession, slots: list[_Slot], study_file: str, budget: int, extra: list[str],
           progress: Any, deadline: float | None, plan: Path | None = None) -> tuple[bool, bool, str | None]:
    codes: dict[int, int] = {}
    gave_up: list[str] = []
    crashed: dict[str, str] = {}  # workers that kept dying until no restart was left: how each last ended
    while True:
        for slot in slots:
            if slot.done or slot.proc is None or slot.proc.poll() is None:
                continue
            code = slot.proc.returncode
            codes[slot.proc.pid] = code
            if code == 0:
                slot.done = True
                continue
            if code == EXIT_GAVE_UP:  # its trials keep failing: a new process would fail them the same way
                slot.done = True
                gave_up.append(slot.spec.name)
                continue
            if _finished(session.study, slot.proc.pid):
                slot.restarts = 0  # "in a row": this worker did finish trials before it died
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            failed = recover_stale_trials(session.study, exit_codes=codes)
            progress.message(f"[red]worker {slot.spec.name} (pid {slot.proc.pid}) {how}[/red]"
                             + (f"; trial(s) {failed} marked FAIL" if failed else ""))
            if session.tracker is not None:
                sync_runs(session.tracker, session.study, session.definition.objective)
            out_of_time = deadline is not None and time.monotonic() >= deadline
            if _finished(session.study) >= budget or slot.restarts >= MAX_RESTARTS or out_of_time:
                slot.done = True
                if slot.restarts >= MAX_RESTARTS and not out_of_time and _finished(session.study) < budget:
                    crashed[slot.spec.name] = how
                continue
            slot.restarts += 1
            _start(slot, _worker_command(study_file, slot.spec, session, budget, extra, deadline, plan), len(slots))
        if all(slot.done for slot in slots):
            met = _finished(session.study) >= budget
            if met:
                return True, False, None
            if gave_up:
                return False, False, _gave_up(session.study, gave_up)
            if crashed:  # a worker that dies before (or between) trials: its own error is in the lines above
                ends = "; ".join(f"{name} {how}" for name, how in crashed.items())
                return False, False, (f"worker(s) {', '.join(crashed)} kept dying ({MAX_RESTARTS + 1} times in a "
                                      f"row, last: {ends}); their error is above")
            return False, False, None
        time.sleep(0.5)


def _stop_all(slots: list[_Slot]) -> None:
    """SIGTERM every live worker and wait; a second Ctrl-C (or 60 s) kills them."""
    live = [s.proc for s in slots if s.proc is not None and s.proc.poll() is None]
    for proc in live:
        proc.send_signal(signal.SIGTERM)
    try:
        deadline = time.monotonic() + 60
        for proc in live:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        for proc in live:
            if proc.poll() is None:
                proc.kill()
        for proc in live:
            proc.wait()



def supervisor_gone() -> str | None:
    """In a worker started by a supervisor: why it must stop when that supervisor is no longer its parent
    (it died; the worker was re-parented), else None."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor:
        return None
    # on Linux the parent-death signal comes when the supervisor's thread that started this worker exits,
    # which can be before the rest of the supervisor has (it is then a zombie, and not yet our ex-parent)
    if os.getppid() == int(supervisor) and pid_alive(int(supervisor)):
        return None
    return f"the supervisor (pid {supervisor}) is gone"


def watch_supervisor() -> None:
    """In a worker process: stop (SIGTERM to itself, which the CLI turns into Ctrl-C) when the supervisor
    that started it dies, even by SIGKILL or SIGHUP, so no worker trains on for a run nobody watches.

    On Linux the kernel sends the signal (``PR_SET_PDEATHSIG``: on the death of the thread that started
    this process; the supervisor starts its workers from the thread that then watches them until they
    end). Elsewhere a daemon thread looks at the parent pid every second. A no-op outside a supervisor.
    """
    if not os.environ.get(SUPERVISOR_ENV):
        return
    if not _parent_death_signal(signal.SIGTERM):
        threading.Thread(target=_poll_parent, name="st-hpo-supervisor-watch", daemon=True).start()
    if supervisor_gone():  # it died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


def _parent_death_signal(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent dies; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, int(signum), 0, 0, 0) == 0  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def _poll_parent() -> None:
    while not supervisor_gone():
        time.sleep(SUPERVISOR_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
