"""SLURM: one job array of identical workers (``sbatch --array=0-(N-1)``), and a small final job that SLURM
starts once every task has ended (``--dependency=afterany``) to end the study.

Both job scripts are written to ``<output-dir>/slurm/`` before they are submitted, so a user can read them
and submit them again. Each array task runs ``st-hpo worker --plan PLAN`` and takes the plan's slot of its
``SLURM_ARRAY_TASK_ID``; a task that starts once the budget is met exits at once. Every trial records
``slurm:<array job id>_<task id>`` as its ``engine_ref``; a worker that finds a RUNNING trial whose task
SLURM says has ended (killed, cancelled, out of time, its node lost) fails it with that reason.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._engines._base import ClusterEngine, Submission, unreachable_from_other_nodes
from st_hpo.exceptions import StHpoError

if TYPE_CHECKING:
    from st_hpo._execution._plan import WorkerPlan

__all__ = ["SlurmEngine"]

#: Job states of a task that still runs or will (``COMPLETING``: its processes are being ended).
ALIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "COMPLETING", "REQUEUED", "RESIZING",
                "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED"}
#: Seconds a SLURM command may take before st-hpo gives up on it.
COMMAND_TIMEOUT = 30


def _slurm(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StHpoError(f"{args[0]} failed: {exc}") from None


#: The parameters the engine's errors name (the CLI shows them as its options).
_NAMES = ("engine", "gpus_per_worker", "storage", "tracking_uri", "shared_dir")


class SlurmEngine(ClusterEngine):
    name = "slurm"

    def check(self, *, storage: str, tracking_uri: str | None, slots: list[Any]) -> None:
        if shutil.which("sbatch") is None:
            raise StHpoError("engine=slurm: sbatch is not on the PATH; run st-hpo on a login node of the "
                             "cluster (where sbatch, squeue and scancel are), or use engine=local", parameters=_NAMES)
        shares = {s.gpus for s in slots}
        if any(g != int(g) for g in shares):
            raise StHpoError(f"gpus_per_worker={shares.pop():g}: SLURM gives whole GPUs (--gres=gpu:G); give a "
                             "whole number, or use engine=ray to share a GPU between workers", parameters=_NAMES)
        subject = unreachable_from_other_nodes(storage, tracking_uri)
        if subject and not self.settings.shared_dir:
            raise StHpoError(f"engine=slurm: {subject} is a file on this machine, which workers on other nodes "
                             "cannot reach; give storage=postgresql://... and tracking_uri=http://..., or "
                             "shared_dir= when the output folder is on a filesystem every node mounts",
                             parameters=_NAMES)

    def scripts(self, plan_path: Path, plan: WorkerPlan) -> tuple[Path, Path]:
        """Write the array's job script and the final job's script next to the plan; returns their paths."""
        folder = Path(plan.output_dir) / "slurm"
        folder.mkdir(parents=True, exist_ok=True)
        run = f"exec {shlex.quote(sys.executable)} -m st_hpo worker --plan {shlex.quote(str(plan_path))}"
        gpus = int(plan.slots[0].gpus)
        array = [f"--job-name=st-hpo-{plan.study_name}", f"--array=0-{len(plan.slots) - 1}",
                 f"--cpus-per-task={plan.slots[0].cpus}", *([f"--gres=gpu:{gpus}"] if gpus else []),
                 f"--output={folder}/worker-%A_%a.log", *self._common()]
        final = [f"--job-name=st-hpo-{plan.study_name}-finish", "--cpus-per-task=1",
                 f"--output={folder}/finish-%j.log", *self._common()]
        worker = folder / "workers.sbatch"
        worker.write_text(_script(f"st-hpo workers of study {plan.study_name!r}: one array task per slot of "
                                  f"{plan_path.name}", array, run))
        finish = folder / "finish.sbatch"
        finish.write_text(_script(f"ends study {plan.study_name!r} once its workers are done (keeps the best "
                                  "model, scores it, writes the reports, closes the MLflow parent run); "
                                  "submit with --dependency=afterany:<array job id>", final, run + " --finish"))
        return worker, finish

    def _common(self) -> list[str]:
        s = self.settings
        return [*([f"--partition={s.slurm_partition}"] if s.slurm_partition else []),
                *([f"--time={s.slurm_time}"] if s.slurm_time else []),
                *([f"--account={s.slurm_account}"] if s.slurm_account else []), *s.slurm_options]

    def submit(self, plan_path: Path, plan: WorkerPlan) -> Submission:
        worker, finish = self.scripts(plan_path, plan)
        array_id = _sbatch(str(worker))
        try:
            final_id = _sbatch(f"--dependency=afterany:{array_id}", "--kill-on-invalid-dep=yes", str(finish))
        except StHpoError:
            _slurm("scancel", array_id)
            raise
        return Submission("slurm", (array_id, final_id), worker, watch=f"squeue -j {array_id},{final_id}",
                          stop=f"scancel {array_id} {final_id}")

    def poll(self, submission: Submission) -> dict[str, str | None]:
        listed = _slurm("squeue", "-h", "-j", ",".join(submission.ids), "-o", "%F %T")
        queued = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
        return {job: None if job in queued else (_state(job) or "ENDED") for job in submission.ids}

    def cancel(self, submission: Submission) -> None:
        _slurm("scancel", *submission.ids)

    @staticmethod
    def ended(ref: str) -> str | None:
        if shutil.which("scontrol") is None:
            return None
        state = _state(ref)
        if state is None or state in ALIVE_STATES:
            return None
        return f"slurm job {ref} ended: {state}"


def _script(about: str, options: list[str], command: str) -> str:
    lines = ["#!/bin/bash", f"# {about}", "# written by st-hpo run --engine slurm; submit it again with sbatch",
             *(f"#SBATCH {shlex.quote(o)}" for o in options), command, ""]
    return "\n".join(lines)


def _sbatch(*args: str) -> str:
    done = _slurm("sbatch", "--parsable", *args)
    if done.returncode != 0:  # its last line says why ("fatal: ..."); the lines before it, how it got there
        said = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}").splitlines()[-1]
        raise StHpoError(f"sbatch refused {Path(args[-1]).name} ({said}); run the same command again once the "
                         "cluster answers (`sinfo`)")
    return done.stdout.strip().split(";")[0]


def _state(job: str) -> str | None:
    """The state SLURM gives job (or array task) ``job``: "RUNNING", "CANCELLED", ...; "PURGED" once SLURM
    has forgotten an ended job; None when scontrol cannot be asked."""
    try:
        shown = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True,
                               timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if shown.returncode != 0:
        return "PURGED" if "Invalid job id" in shown.stderr else None
    states = re.findall(r"\bJobState=(\w+)", shown.stdout)
    if not states:
        return None
    alive = [s for s in states if s in ALIVE_STATES]  # an array job lists every task
    return alive[0] if alive else states[0]
