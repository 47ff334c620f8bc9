"""The local engine: worker processes on this machine, started from the plan and supervised until the study
ends (replaced when they die, stopped on Ctrl-C); see :mod:`st_hpo._execution._workers`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._engines._base import SupervisingEngine
from st_hpo._execution._workers import WorkerSpec, supervise

if TYPE_CHECKING:
    from st_hpo._execution._plan import WorkerPlan
    from st_hpo._execution._session import StudySession

__all__ = ["LocalEngine"]


class LocalEngine(SupervisingEngine):
    name = "local"

    def check(self, *, storage: str, tracking_uri: str | None, slots: list[Any]) -> None:
        return None  # every file is on this machine

    def run(self, session: StudySession, plan_path: Path, plan: WorkerPlan, *,
            progress: Any) -> tuple[bool, bool, str | None]:
        """Start one ``st-hpo worker --plan`` process per slot and supervise them until the budget is met;
        returns (budget_met, interrupted, stop_reason) as :func:`st_hpo._execution._workers.supervise` does."""
        specs = [WorkerSpec(slot.name, slot.gpu) for slot in plan.slots]
        return supervise(session, study_file=plan.study_file, specs=specs, budget=plan.budget, extra_args=[],
                         progress=progress, timeout=plan.timeout(), plan=plan_path)

    @staticmethod
    def ended(ref: str) -> str | None:
        return None  # a local worker is known by its pid and host, which recovery checks itself
