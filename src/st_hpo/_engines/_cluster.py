"""Handing a run to a cluster engine: submit the plan's slots, and with ``--wait`` watch them until the
study has ended (Ctrl-C cancels them: their trials end FAIL, their runs KILLED, the parent run KILLED)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._engines import ended_reason
from st_hpo._execution._plan import read_plan
from st_hpo._execution._progress import Progress
from st_hpo._execution._recovery import recover_stale_trials
from st_hpo._results._finish import finish_study

if TYPE_CHECKING:
    from st_hpo._execution._session import StudySession

__all__ = ["run_on_cluster"]

#: Seconds between looks at the engine's queue while waiting.
POLL_SECONDS = 2.0
#: How long a cancelled submission may take to end before st-hpo stops waiting for it.
CANCEL_WAIT_SECONDS = 90.0


def run_on_cluster(engine: Any, session: StudySession, plan_path: Path, *,
                   progress: bool) -> tuple[Any, bool, bool]:
    """Submit the plan's slots to ``engine``; returns (submission, waited, interrupted)."""
    plan = read_plan(plan_path)
    try:
        submission = engine.submit(plan_path, plan)
    except BaseException:  # nothing will run: the parent run must not stay RUNNING
        if session.tracker is not None:
            session.tracker.set_parent_status("FAILED")
        raise
    Progress(budget=plan.budget, enabled=progress).message(
        f"submitted to {submission.engine}: {', '.join(submission.ids)} ({len(plan.slots)} worker(s); job script "
        f"{submission.script}); watch: {submission.watch}; stop: {submission.stop}")
    if not engine.settings.wait:
        return submission, False, False
    try:
        _until_ended(engine, submission, timeout=None)
    except KeyboardInterrupt:
        _cancel(engine, session, submission)
        return submission, True, True
    return submission, True, False


def _until_ended(engine: Any, submission: Any, timeout: float | None) -> bool:
    deadline = None if timeout is None else time.monotonic() + timeout
    while any(state is None for state in engine.poll(submission).values()):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def _cancel(engine: Any, session: StudySession, submission: Any) -> None:
    """Cancel every job of the submission, wait for them to end, fail what they left RUNNING, and end the
    study KILLED (its final job was cancelled with the workers)."""
    engine.cancel(submission)
    try:
        _until_ended(engine, submission, timeout=CANCEL_WAIT_SECONDS)
    except KeyboardInterrupt:
        pass  # a second Ctrl-C: stop waiting; what is left RUNNING, the next run or `st-hpo sync` fails
    recover_stale_trials(session.study, engine_ended=ended_reason)
    finish_study(session, budget_met=False)
