"""A trial's MLflow run: made with the trial's tags, parameters and training arguments, then written to as
the trial trains; what MLflow could not take is kept in the trial's spool for ``st-hpo sync``."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_hpo._definition import _args
from st_hpo._definition._resources import pick_device
from st_hpo._tracking import _spool
from st_hpo._tracking._mlflow import param_value
from st_hpo._tracking._record import shown_params
from st_hpo._tracking._schema import (
    BASELINE_ATTR,
    GPU_KEY,
    HOST_KEY,
    INTERMEDIATE_EVAL_KEY,
    KIND_ATTR,
    LAST_SEEN_ATTR,
    PREFIX,
    RUN_ATTR,
    TAG_PREFIX,
    WORKER_KEY,
)
from st_hpo.exceptions import TrackingError

if TYPE_CHECKING:
    from st_hpo._execution._trial import TrialContext
    from st_hpo._tracking._mlflow import MlflowTracker

__all__ = ["TrialRun", "start_run"]

logger = logging.getLogger(__name__)

#: Fields that differ between trials by construction, left out of the "differs from base" params.
_PER_TRIAL_FIELDS = {"output_dir", "run_name", "logging_dir", "report_to"}


class TrialRun:
    """The trial's MLflow run; what MLflow could not take is kept in the trial's spool for ``st-hpo sync``.

    After the first failed write every later write goes to the spool (``mlflow-spool.jsonl`` in the trial's
    folder), so that the run, made again or completed by ``sync``, gets all of it. Every write also records
    when the trial was last seen working (``st_hpo.last_seen``, seconds since the epoch): a trial whose
    worker dies is ended at that time, not when its death is noticed.
    """

    def __init__(self, tracker: MlflowTracker, run_id: str | None, *, trial: Any = None,
                 spool: Path | None = None) -> None:
        self.tracker, self.run_id, self.failed = tracker, run_id, False
        self.trial, self.spool = trial, spool

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        self.series([(metrics, step)])

    def series(self, entries: list[tuple[dict[str, float], int]]) -> None:
        self._seen()
        if self.tracker is None:
            return
        if self.run_id is not None and not self.failed:
            try:
                self.tracker.log_series(self.run_id, entries)
                return
            except TrackingError as exc:
                logger.warning("%s; the trial goes on and `st-hpo sync` will fill MLflow in later", exc)
        self.keep({"kind": "series", "entries": entries})

    def keep(self, record: dict[str, Any]) -> None:
        """Spool ``record``: from now on MLflow gets this trial's writes from ``st-hpo sync``."""
        if self.spool is None:
            return
        if not self.failed and self.trial is not None:
            self.trial.set_user_attr(_spool.SPOOL_ATTR, str(self.spool))
        self.failed = True
        _spool.append(self.spool, record)

    def _seen(self) -> None:
        if self.trial is not None:
            try:
                self.trial.set_user_attr(LAST_SEEN_ATTR, round(time.time(), 3))
            except Exception as exc:  # noqa: BLE001 - a storage hiccup must not fail the trial here
                logger.debug("could not record trial %d as seen: %s", self.trial.number, exc)


def start_run(ctx: TrialContext, trial: Any, params: dict[str, Any], args: Any) -> TrialRun:
    baseline = str(bool(trial.user_attrs.get(BASELINE_ATTR))).lower()
    tags = {WORKER_KEY: ctx.worker.name, HOST_KEY: ctx.worker.host,
            GPU_KEY: ctx.worker.gpu or ("all visible" if pick_device(args) == "cuda" else "none"),
            BASELINE_ATTR: baseline, KIND_ATTR: ctx.validated.kind.name}
    tags = {**{k.replace(TAG_PREFIX, PREFIX): str(v) for k, v in trial.user_attrs.items()
               if k.startswith(TAG_PREFIX)}, **tags}  # set when enqueued
    rows = ctx.resources.subset_rows
    if rows is not None and ctx.validated.evaluates_during_training:
        # which values are which: intermediate (pruning) ones on the subset, `objective` on all eval rows
        tags[INTERMEDIATE_EVAL_KEY] = f"{rows} of {ctx.resources.eval_rows} eval rows"
    for key, value in tags.items():
        trial.set_user_attr(key.replace(PREFIX, TAG_PREFIX), value)
    if ctx.tracker is None:
        return TrialRun(None, None, trial=trial)
    if not params:
        params = shown_params(trial)  # an unsampled baseline: the values it trains with
    base = _args.args_to_dict(ctx.validated.base_args)
    effective = _args.args_to_dict(args)
    differs = {k: v for k, v in effective.items() if k not in _PER_TRIAL_FIELDS and base.get(k) != v}
    if "warmup_ratio" in params:
        differs.pop("warmup_steps", None)  # transformers 5 stores the sampled ratio there

    spool = ctx.output_dir / "trials" / f"trial-{trial.number}" / _spool.SPOOL_NAME
    # written ahead: a process killed between making the run and logging its training arguments leaves them
    # in the spool, and `sync` (run by whoever resumes the study) writes them into the run
    _spool.append(spool, {"kind": "dict", "data": effective, "path": "training_args.json"})
    trial.set_user_attr(_spool.SPOOL_ATTR, str(spool))
    run_id = None
    try:
        run_id = ctx.tracker.start_trial(trial.study.study_name, trial.number, params, differs, tags)
        trial.set_user_attr(RUN_ATTR, run_id)
        ctx.tracker.log_dict(run_id, effective, "training_args.json")
    except TrackingError as exc:
        logger.warning("%s; the trial goes on and `st-hpo sync` will write its run later", exc)
        run = TrialRun(ctx.tracker, run_id, trial=trial, spool=spool)
        run.failed = True  # the spool holds the training arguments already; later writes go there too
        if run_id is None:  # no run: its params too; `sync` makes the run and writes them
            run.keep({"kind": "params", "params": {k: param_value(v) for k, v in {**differs, **params}.items()}})
        return run
    spool.unlink(missing_ok=True)  # MLflow has them: nothing is spooled for this trial (yet)
    trial.set_user_attr(_spool.SPOOL_ATTR, None)
    return TrialRun(ctx.tracker, run_id, trial=trial, spool=spool)
