"""What an engine does: place the worker slots of a plan, say how they ended, stop them.

An engine only places workers; the Optuna storage is the one coordination between them, and every worker
starts from the plan (:mod:`st_hpo._execution._plan`) through ``st-hpo worker --plan``. One module per
engine implements :class:`Engine`; :func:`st_hpo._engines.engine_for` chooses it from ``--engine``.
"""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from st_hpo._execution._plan import WorkerPlan
    from st_hpo._execution._session import StudySession

__all__ = ["ClusterEngine", "Engine", "SupervisingEngine", "EngineSettings", "Submission", "unreachable_from_other_nodes"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class EngineSettings:
    """What the user asked of the engine (``--engine`` and the options that go with it)."""

    name: str = "local"
    #: the storage and tracking URI live in a folder every node mounts (a journal file, a SQLite store)
    shared_dir: bool = False
    #: wait for the workers (and the study's end) instead of returning once they are submitted
    wait: bool = False
    slurm_partition: str | None = None
    slurm_time: str | None = None
    slurm_account: str | None = None
    slurm_options: tuple[str, ...] = ()
    ray_address: str | None = None


@dataclasses.dataclass(frozen=True)
class Submission:
    """What an engine was handed: its ids (SLURM job ids, Ray actor ids), the file it ran (the job script),
    and the commands a user watches and stops it with."""

    engine: str
    ids: tuple[str, ...]
    script: Path | None
    watch: str
    stop: str


class Engine(abc.ABC):
    """One way to place workers. Every method raises an :class:`st_hpo.exceptions.StHpoError` with what to do."""

    name: str

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings

    @abc.abstractmethod
    def check(self, *, storage: str, tracking_uri: str | None, slots: list[Any]) -> None:
        """Refuse, in one line and before anything is created or submitted, what the engine cannot run:
        its commands or library missing, a storage or tracking store its workers cannot reach."""

    @staticmethod
    @abc.abstractmethod
    def ended(ref: str) -> str | None:
        """Why the worker with this ``engine_ref`` (without the engine's prefix) is no longer running, in a
        few words ("slurm job 12_1 ended: CANCELLED"); None while it runs or when the engine cannot tell."""


class ClusterEngine(Engine):
    """An engine that hands the slots to a scheduler and can return at once (SLURM, Ray); the local engine
    instead supervises its worker processes until the study ends (:mod:`st_hpo._engines._local`)."""

    @abc.abstractmethod
    def submit(self, plan_path: Path, plan: WorkerPlan) -> Submission:
        """Start the plan's slots (and whatever ends the study once they are done); returns at once."""

    @abc.abstractmethod
    def poll(self, submission: Submission) -> dict[str, str | None]:
        """Each submitted id: None while it runs or waits, else how it ended ("COMPLETED", "CANCELLED")."""

    @abc.abstractmethod
    def cancel(self, submission: Submission) -> None:
        """Stop every worker of the submission (their running trials end FAIL, their runs KILLED)."""


def unreachable_from_other_nodes(storage: str, tracking_uri: str | None) -> str | None:
    """The first of the storage and the tracking store that is a file on this machine (a journal file, a
    SQLite database, an MLflow file store), said as the refusal's subject; None when both are servers."""
    if "://" not in storage or storage.startswith("sqlite:"):
        return f"the storage {storage}"
    if tracking_uri and (tracking_uri.startswith(("sqlite:", "file:", "/")) or "://" not in tracking_uri):
        return f"the MLflow store {tracking_uri}"
    return None


class SupervisingEngine(Engine):
    """An engine whose run stays up while the workers work: it starts them, notices how each one ends,
    and returns once the study's budget is met or nothing more can run (the local supervisor, a Ray
    driver); the run then ends the study itself."""

    @abc.abstractmethod
    def run(self, session: StudySession, plan_path: Path, plan: WorkerPlan, *,
            progress: Any) -> tuple[bool, bool, str | None]:
        """Run the plan's slots until they end; returns (budget_met, interrupted, stop_reason)."""
