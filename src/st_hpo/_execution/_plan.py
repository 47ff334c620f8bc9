"""The worker plan: what every worker of a run starts from, written as JSON in the output folder.

A run (``st-hpo run``, :func:`st_hpo.run_study`) validates and opens the study on the submitting host, then
writes a plan: the study file, where the study lives (output folder, storage, tracking URI), the options
that override the study file, the budget, the deadline, and one slot per worker with its GPU share. Every
worker, whatever starts it (the local supervisor, a SLURM array task, a Ray actor, a user on another
machine), starts through one entry point, ``st-hpo worker --plan PLAN.json [--slot NAME]``, and reads
everything from the plan rather than from CLI flags re-typed into its argv.

:func:`decide_slots` is the one place that decides the worker slots and their GPUs (``--workers``,
``--gpus``, ``--trials-per-gpu``, ``--gpus-per-worker``, the visible devices), for the CLI and the API alike.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from st_hpo.exceptions import UsageError

__all__ = ["PLAN_FILE", "SlotPlan", "WorkerPlan", "decide_slots", "read_plan", "slot_for_this_process"]

#: The plan's file name in the output folder.
PLAN_FILE = "worker-plan.json"
#: The plan format; a reader refuses a plan of a later format.
PLAN_VERSION = 1


@dataclasses.dataclass(frozen=True)
class SlotPlan:
    """One worker slot: its name, the devices it sees (``CUDA_VISIBLE_DEVICES``; None: as the engine or the
    environment gives them), and what it asks of an engine (``gpus`` may be fractional on Ray)."""

    name: str
    gpu: str | None = None
    gpus: float = 0.0
    cpus: int = 1


@dataclasses.dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker needs to join the run (see the module docstring)."""

    study_file: str
    study_name: str
    output_dir: str
    storage: str
    tracking_uri: str | None
    budget: int
    #: wall-clock time (seconds since the epoch) after which no worker starts a trial; None: no limit
    deadline: float | None
    engine: str
    slots: tuple[SlotPlan, ...]
    #: overrides of the study file: pruner, intermediate_eval_rows, keep_best_model
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    progress: bool = True

    def write(self, path: Path) -> Path:
        """Write the plan as JSON (atomically: a worker never reads half a plan); returns ``path``."""
        data = {"version": PLAN_VERSION, **dataclasses.asdict(self)}
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)
        return path

    def slot(self, name: str | None) -> SlotPlan:
        """The slot called ``name``, or at that index (a SLURM array task's id); the first one when None."""
        if name is None:
            return self.slots[0]
        for slot in self.slots:
            if slot.name == name:
                return slot
        if name.isdigit() and int(name) < len(self.slots):
            return self.slots[int(name)]
        raise UsageError(f"the worker plan has no slot {name!r}; its slots: {', '.join(s.name for s in self.slots)}")

    def timeout(self) -> float | None:
        """Seconds left until the deadline (0 when it passed); None without one."""
        return None if self.deadline is None else max(self.deadline - time.time(), 0.0)


def read_plan(path: str | Path) -> WorkerPlan:
    """The plan at ``path``; UsageError with what to do when it cannot be read."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"plan={path}: cannot read a worker plan from it ({exc}); it is written by `st-hpo run` "
                         "into the output folder", parameters=("plan",)) from None
    if not isinstance(data, dict) or data.pop("version", None) != PLAN_VERSION:
        raise UsageError(f"plan={path}: not a worker plan of this st-hpo version (format {PLAN_VERSION}); run "
                         "`st-hpo run` again to write one", parameters=("plan",))
    data["slots"] = tuple(SlotPlan(**s) for s in data["slots"])
    return WorkerPlan(**data)


def slot_for_this_process(given: str | None) -> str | None:
    """The slot a worker takes: ``--slot``, else its SLURM array task id, else None (the first one)."""
    return given or os.environ.get("SLURM_ARRAY_TASK_ID") or None


def decide_slots(*, engine: str = "local", workers: int | None = None, gpus: str | None = None,
                 trials_per_gpu: int = 1, gpus_per_worker: float | None = None, cpus_per_worker: int = 1,
                 study_file: Any = None) -> list[SlotPlan]:
    """The worker slots of a run, and the GPUs each one gets; [] to train in this process.

    ``engine="local"``: ``--gpus`` (ids are positions among the visible GPUs), ``--trials-per-gpu`` and
    ``--workers`` as :func:`st_hpo._execution._workers.plan_workers` reads them. With none of them, a
    machine with several visible GPUs (and a study file for the workers to load) gets one worker per GPU;
    one GPU or none trains in this process. Another engine: ``workers`` slots of ``gpus_per_worker`` GPUs
    each (fractional on Ray), never checked against this host's CUDA (a login node has none).
    """
    from st_hpo._execution._workers import plan_workers, visible_gpus

    names = ("cpus_per_worker", "gpus_per_worker", "engine", "gpus", "trials_per_gpu", "workers")
    if cpus_per_worker < 1:
        raise UsageError(f"cpus_per_worker={cpus_per_worker}: give at least 1", parameters=names)
    if gpus_per_worker is not None and gpus_per_worker < 0:
        raise UsageError(f"gpus_per_worker={gpus_per_worker}: give 0 or more", parameters=names)
    if engine != "local":
        if gpus is not None or trials_per_gpu != 1:
            raise UsageError(f"engine={engine} places workers on the cluster's GPUs: give gpus_per_worker=G "
                             "instead of gpus= and trials_per_gpu=", parameters=names)
        if workers is not None and workers < 1:
            raise UsageError(f"workers={workers}: give at least 1", parameters=names)
        share = float(gpus_per_worker or 0.0)
        return [SlotPlan(f"{engine}-w{i}", None, share, cpus_per_worker) for i in range(workers or 1)]
    if gpus_per_worker is not None:
        raise UsageError("gpus_per_worker= is for engine=slurm or ray; on this machine use gpus= and "
                         "trials_per_gpu=", parameters=names)
    if cpus_per_worker != 1:  # it would be ignored: the local engine shares the cores out itself
        raise UsageError(f"cpus_per_worker={cpus_per_worker} is for engine=slurm or ray; on this machine each "
                         "worker gets OMP_NUM_THREADS = cores / workers (set OMP_NUM_THREADS to choose)",
                         parameters=names)
    devices = visible_gpus()
    asked = (workers or 1) > 1 or trials_per_gpu > 1
    if gpus is None and (asked or (len(devices) > 1 and study_file is not None)):
        gpus = ",".join(str(i) for i in range(len(devices))) or None
    specs = plan_workers(workers=workers, gpus=gpus, trials_per_gpu=trials_per_gpu,
                         devices=devices if gpus else None)
    if not gpus and (workers or 1) <= 1:
        return []
    return [SlotPlan(s.name, s.gpu, 1.0 if s.gpu is not None else 0.0, cpus_per_worker) for s in specs]
