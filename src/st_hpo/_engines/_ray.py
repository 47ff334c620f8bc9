"""Ray: one long-lived actor per worker slot, with ``num_cpus``/``num_gpus`` (fractional allowed) and Ray's own
retries and restarts off (st-hpo decides about trials; a task Ray ran again would leave its trial RUNNING).

Each actor starts ``st-hpo worker --plan PLAN --slot NAME`` as its child (with the GPUs Ray gave it, and
``ST_HPO_ENGINE_REF=ray:<actor id>``) and waits for it; the child dies with the actor. ``st-hpo run --engine
ray`` is the driver: it stays up, and when an actor dies (its process killed, its node lost) it fails that
worker's RUNNING trial ("ray worker died") so that the other workers run what the budget still needs. Ctrl-C
stops every worker as on this machine (its trial FAIL, its run KILLED).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._engines._base import SupervisingEngine, unreachable_from_other_nodes
from st_hpo._execution._recovery import recover_stale_trials
from st_hpo._tracking._census import study_census
from st_hpo._tracking._mlflow_sync import sync_runs
from st_hpo.exceptions import StHpoError

if TYPE_CHECKING:
    from st_hpo._execution._plan import WorkerPlan
    from st_hpo._execution._session import StudySession

__all__ = ["RayEngine"]

#: Seconds the driver waits for stopped workers to end their trials before it kills their actors.
STOP_WAIT_SECONDS = 60.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes

    ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG: die with the actor


class _SlotWorker:
    """The actor: runs one ``st-hpo worker --plan`` process and stops it on request."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def ref(self) -> str:
        import ray

        return f"ray:{ray.get_runtime_context().get_actor_id()}"

    def run(self, plan_path: str, slot: str) -> int:
        env = {**os.environ, "ST_HPO_ENGINE_REF": self.ref(), "ST_HPO_WORKER_NAME": slot}
        self.proc = subprocess.Popen([sys.executable, "-m", "st_hpo", "worker", "--plan", plan_path, "--slot", slot],
                                     env=env, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        return self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)


def _unanswered(address: str) -> str | None:
    """Why nothing answers at ``HOST:PORT`` (Ray itself retries a dead address for minutes); None when
    something does, or when the address is not of that form (``auto``, ``ray://...``: Ray says itself)."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return None
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        return f"nothing answers there: {exc.strerror or exc}"
    return None


#: The parameters the engine's errors name (the CLI shows them as its options).
_NAMES = ("engine", "ray_address", "storage", "tracking_uri", "shared_dir")


class RayEngine(SupervisingEngine):
    name = "ray"

    def check(self, *, storage: str, tracking_uri: str | None, slots: list[Any]) -> None:
        try:
            import ray
        except ImportError:
            raise StHpoError('engine=ray: Ray is not installed; pip install "st-hpo[ray]"', parameters=_NAMES) from None
        address = self.settings.ray_address or "auto"
        unanswered = _unanswered(address)
        if unanswered:
            raise StHpoError(f"engine=ray: no Ray cluster at ray_address={address} ({unanswered}); start one "
                             "with `ray start --head` or give the head's HOST:PORT", parameters=_NAMES)
        try:
            ray.init(address=address, logging_level=logging.ERROR, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StHpoError(f"engine=ray: no Ray cluster at ray_address={address} ({first}); start one with "
                             "`ray start --head` or give the head's HOST:PORT", parameters=_NAMES) from None
        subject = unreachable_from_other_nodes(storage, tracking_uri)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if subject and len(nodes) > 1 and not self.settings.shared_dir:
            raise StHpoError(f"engine=ray: {subject} is a file on this machine, which workers on the cluster's "
                             f"other {len(nodes) - 1} node(s) cannot reach; give storage=postgresql://... and "
                             "tracking_uri=http://..., or shared_dir= when the output folder is on a filesystem "
                             "every node mounts", parameters=_NAMES)

    def run(self, session: StudySession, plan_path: Path, plan: WorkerPlan, *,
            progress: Any) -> tuple[bool, bool, str | None]:
        import ray

        actor_class = ray.remote(_SlotWorker)
        actors = {slot.name: actor_class.options(num_cpus=slot.cpus, num_gpus=slot.gpus, max_restarts=0,
                                                 max_task_retries=0, max_concurrency=2).remote()
                  for slot in plan.slots}
        refs = dict(zip(plan.slots, ray.get([a.ref.remote() for a in actors.values()]), strict=True))
        running = {actors[s.name].run.remote(str(plan_path), s.name): s for s in plan.slots}
        progress.message("ray actors: " + ", ".join(f"{s.name} {ref}" for s, ref in refs.items()))
        try:
            self._watch(session, running, refs, progress)
        except KeyboardInterrupt:
            self._stop(session, actors, running)
            return False, True, None
        finished = study_census(session.study).finished
        return finished >= plan.budget, False, None

    @staticmethod
    def _watch(session: StudySession, running: dict[Any, Any], refs: dict[Any, str], progress: Any) -> None:
        import ray
        from ray.exceptions import RayActorError

        ended: dict[str, str] = {}
        pending = list(running)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for done in ready:
                slot = running[done]
                try:
                    code = ray.get(done)
                    if code != 0:
                        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
                        ended[refs[slot]] = f"ray worker {slot.name} {how}"
                except RayActorError:
                    ended[refs[slot]] = "ray worker died"
                if refs[slot] in ended:
                    failed = recover_stale_trials(session.study, engine_ended=ended.get)
                    progress.message(f"[red]{ended[refs[slot]]} ({refs[slot]})[/red]"
                                     + (f"; trial(s) {failed} marked FAIL" if failed else ""))
                    if session.tracker is not None:
                        sync_runs(session.tracker, session.study, session.definition.objective)

    @staticmethod
    def _stop(session: StudySession, actors: dict[str, Any], running: dict[Any, Any]) -> None:
        """Ctrl-C: SIGTERM every worker (each ends its trial FAIL and its run KILLED), then cancel what is
        left after a minute (or at a second Ctrl-C)."""
        import ray

        for actor in actors.values():
            actor.stop.remote()
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        pending = list(running)
        try:
            while pending and time.monotonic() < deadline:
                _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
        except KeyboardInterrupt:
            pass
        for ref in pending:
            ray.cancel(ref, force=True)
        recover_stale_trials(session.study)

    @staticmethod
    def ended(ref: str) -> str | None:
        return None  # the driver tells: it sees each actor end
