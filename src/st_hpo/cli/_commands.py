"""The ``st-hpo`` commands: each parses nothing and decides nothing that the library does not."""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from st_hpo.cli._common import EXIT_ERROR, EXIT_INTERRUPTED, _load

__all__ = ["cmd_confirm", "cmd_run", "cmd_status", "cmd_sync", "cmd_validate", "cmd_worker"]


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _remaining(ns: argparse.Namespace) -> float | None:
    """What is left of ``--timeout``, which counts from the start of the command."""
    if ns.timeout is None:
        return None
    return max(ns.timeout - (time.monotonic() - getattr(ns, "started", time.monotonic())), 0.0)


def _output_dir(ns: argparse.Namespace, study: Any) -> Path:
    return Path(ns.output_dir or Path("st-hpo-runs") / study.name).resolve()


def cmd_validate(ns: argparse.Namespace) -> int:
    from st_hpo._api import validate_study

    study = _load(ns)
    validate_study(study)
    space = study.space if isinstance(study.space, dict) else {"(define-by-run)": study.space}
    _console().print(f"[green]ok[/green] study {study.name!r}: objective {study.objective!r} "
                     f"({study.direction}), {len(space)} searched name(s): {', '.join(map(str, space))}")
    return 0


def _resume_line(argv: list[str]) -> str:
    return "st-hpo " + " ".join(shlex.quote(a) for a in argv)


def _enqueued(path: str | None) -> list[dict[str, Any]] | None:
    if not path:
        return None
    from st_hpo.exceptions import StudyDefinitionError

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise StudyDefinitionError(f"--enqueue {path}: cannot read a JSON list from it ({exc})") from None
    data = [data] if isinstance(data, dict) else data
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise StudyDefinitionError(f"--enqueue {path}: expected a JSON list of {{name: value}} objects")
    return data


def cmd_run(ns: argparse.Namespace) -> int:
    from st_hpo._api import run_study

    study = _load(ns)
    enqueue = _enqueued(ns.enqueue)
    if enqueue:
        study = study.replace(enqueue=[*study.enqueue, *enqueue])
    gpus = ns.gpus
    if gpus is None:  # a GPU machine: one worker per visible GPU, or --workers N spread over them
        from st_hpo._execution._workers import default_gpu_list

        gpus = default_gpu_list()
    result = run_study(
        study, n_trials=ns.n_trials, timeout=_remaining(ns), output_dir=ns.output_dir, storage=ns.storage,
        tracking_uri=ns.tracking_uri, pruner=ns.pruner, baseline=False if ns.no_baseline else None,
        intermediate_eval_rows=ns.intermediate_eval_rows, keep_best_model=ns.keep_best_model,
        workers=ns.workers, gpus=gpus, trials_per_gpu=ns.trials_per_gpu, study_file=ns.study_file,
        progress=not ns.quiet,
    )
    out = _console()
    if result.interrupted:
        sys.stderr.write(f"stopped: the running trial was marked FAIL. Resume with: {_resume_line(sys.argv[1:])}\n")
        return EXIT_INTERRUPTED
    budget = result.budget or ns.n_trials or study.n_trials
    out.print(f"study {result.study_name!r}: {result.n_complete} complete, {result.n_pruned} pruned, "
              f"{result.n_fail} failed (budget {budget} finished trials"
              f"{', met' if result.budget_met else _why_not_met(ns, result.stop_reason)})")
    if result.best_value is not None:
        gain = ""
        if result.base_model_value is not None:
            gain = f" (base model before fine-tuning: {result.base_model_value:.4f})"
        out.print(f"best: trial {result.best_trial_number}, {study.objective} = {result.best_value:.4f}{gain}")
        out.print(f"      {json.dumps(result.best_params)}")
        if result.test_value is not None:
            base = "" if result.base_model_test_value is None else f" (base model: {result.base_model_test_value:.4f})"
            out.print(f"held-out test: {result.test_value:.4f}{base}; the dev value above is optimistic, it "
                      "picked the trial")
        if result.best_model_dir:
            out.print(f"best model: {result.best_model_dir}")
    if result.tracking_uri:
        out.print(_review_line(ns, result))
    if result.stop_reason:
        sys.stderr.write(f"error: {result.stop_reason}. See every failure with: st-hpo status {ns.study_file}; "
                         "fix the cause and run the same command again to go on\n")
        return EXIT_ERROR
    return 0


def _review_line(ns: argparse.Namespace, result: Any) -> str:
    """Where to see the trials in MLflow: the URL of the trials view (see `st-hpo ui`)."""
    from st_hpo._tracking._view import trials_url

    uri, exp = result.tracking_uri, result.experiment_id
    if uri.startswith(("http://", "https://")) and exp:
        return f"review in MLflow: {trials_url(uri, exp)}"
    where = f"`st-hpo ui {ns.study_file}" + (f" --output-dir {ns.output_dir}`" if ns.output_dir else "`")
    url = f", then {trials_url('http://127.0.0.1:5000', exp)}" if exp else ""
    return f"review in MLflow: {where}{url} (or mlflow ui --backend-store-uri {uri})"


def _why_not_met(ns: argparse.Namespace, stop_reason: str | None = None) -> str:
    if stop_reason:
        return ", not met: see the error below"
    if ns.timeout is not None and _remaining(ns) == 0:
        return f", not met: --timeout {ns.timeout:g} s reached; run the same command again to go on"
    return ", not met: the workers stopped (see above); run the same command again to go on"


def cmd_worker(ns: argparse.Namespace) -> int:
    from st_hpo._api import join_study
    from st_hpo._execution._workers import watch_supervisor

    watch_supervisor()  # a supervisor killed by SIGKILL or SIGHUP stops its workers too

    study = _load(ns)
    if ns.confirm_of:  # started by `st-hpo confirm --workers`: run the companion study's queued pairs
        return _confirm_worker(ns, study.replace(name=ns.confirm_of))
    result = join_study(study, n_trials=ns.n_trials, worker_name=ns.worker_name, timeout=_remaining(ns),
                        output_dir=ns.output_dir, storage=ns.storage, tracking_uri=ns.tracking_uri,
                        pruner=ns.pruner, intermediate_eval_rows=ns.intermediate_eval_rows,
                        keep_best_model=ns.keep_best_model,
                        progress=not (ns.no_progress or ns.quiet))
    if result.interrupted:
        return EXIT_INTERRUPTED
    if result.stop_reason:
        from st_hpo._execution._workers import EXIT_GAVE_UP

        sys.stderr.write(f"error: {result.stop_reason}\n")
        return EXIT_GAVE_UP
    return 0


def _confirm_worker(ns: argparse.Namespace, study: Any) -> int:
    from st_hpo._results._confirm import join_confirmation

    loop = join_confirmation(study, worker_name=ns.worker_name, budget=ns.n_trials, output_dir=ns.output_dir,
                             storage=ns.storage, tracking_uri=ns.tracking_uri,
                             progress=not (ns.no_progress or ns.quiet))
    if loop.interrupted:
        return EXIT_INTERRUPTED
    if loop.gave_up:
        from st_hpo._execution._workers import EXIT_GAVE_UP

        return EXIT_GAVE_UP
    return 0


def _rows(ns: argparse.Namespace) -> tuple[list[dict[str, Any]], int, str]:
    """Every trial of the study (cancelled ones left out) as a dict, the study's budget and model kind."""
    from st_hpo._execution._best_model import MODEL_DIR_ATTR, best_number
    from st_hpo._results._read import StudyLocation, load_study, shown_params, trial_duration

    study_def = _load(ns)
    study = load_study(study_def, StudyLocation.resolve(study_def, output_dir=ns.output_dir, storage=ns.storage))
    trials = study.get_trials(deepcopy=False)
    best = best_number(study, trials)
    now = datetime.datetime.now()
    rows = []
    for t in trials:
        if t.user_attrs.get("st_hpo.cancelled"):
            continue  # asked by a worker when others had filled the budget; it never ran
        duration = trial_duration(t, now)
        model_dir = t.user_attrs.get(MODEL_DIR_ATTR)
        rows.append({
            "number": t.number, "state": t.state.name, "params": shown_params(t), "value": t.value,
            "duration_seconds": duration, "baseline": bool(t.user_attrs.get("st_hpo.baseline")),
            "error": t.user_attrs.get("st_hpo.error"), "mlflow_run_id": t.user_attrs.get("st_hpo.mlflow_run_id"),
            # how far training got: the last evaluation's step is per-mille of training done
            "progress": max(t.intermediate_values) / 1000 if t.intermediate_values else None,
            "worker": t.user_attrs.get("st_hpo.tag.worker"), "host": t.user_attrs.get("st_hpo.tag.host"),
            "best": t.number == best,
            "model_dir": model_dir if t.number == best and model_dir and Path(model_dir).is_dir() else None,
            # on a GPU: what the trial needed, to size --trials-per-gpu by
            "peak_gpu_reserved_mb": t.user_attrs.get("st_hpo.peak_gpu_reserved_mb"),
            # a RUNNING trial whose worker on this host is gone: the next run or worker fails it
            "worker_gone": t.state.name == "RUNNING" and _gone(t.user_attrs),
            "gpu": t.user_attrs.get("st_hpo.tag.gpu"),
            # what the kind's evaluators report besides the objective (a sparse model's active dimensions)
            "side_metrics": t.user_attrs.get("st_hpo.side_metrics"),
        })
    budget = study.user_attrs.get("st_hpo.n_trials", study_def.n_trials)
    return rows, budget, study.user_attrs.get("st_hpo.model_kind", "sentence-transformer")


def _gone(attrs: dict[str, Any]) -> bool:
    """True when the trial's worker ran on this host and its process no longer exists."""
    from st_hpo._execution._recovery import current_host, worker_alive

    pid = attrs.get("st_hpo.pid")
    return bool(pid) and attrs.get("st_hpo.tag.host") == current_host() and not worker_alive(attrs)


def _note(r: dict[str, Any]) -> str:
    """The status table's last column: where a trial is, why it stopped, what it kept."""
    done = "" if r["progress"] is None else f"{r['progress']:.0%} of training"
    where = f" on {r['worker']}@{r['host']}" if r["worker"] and r["host"] else ""
    if r["state"] == "RUNNING" and r["worker_gone"]:
        return f"its worker{where} is gone; the next `st-hpo run` or `st-hpo sync` marks it FAIL"
    if r["state"] == "RUNNING":
        return f"{done or 'started'}{where}"
    if r["state"] == "PRUNED":
        return f"pruned at {done}" if done else "pruned"
    if r["state"] == "FAIL":
        return (r["error"] or "").splitlines()[0][:100] if r["error"] else ""
    side = ", ".join(f"{k} {v:g}" for k, v in (r.get("side_metrics") or {}).items())
    if r["best"]:
        best = "best, model kept" if r["model_dir"] else "best"
        return f"{best}; {side}" if side else best
    return side


def cmd_status(ns: argparse.Namespace) -> int:
    rows, budget, kind = _rows(ns)
    if ns.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    from rich.markup import escape
    from rich.table import Table

    from st_hpo._execution._progress import format_params

    count = {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    table = Table(title=f"{kind}: {count['COMPLETE'] + count['PRUNED']} of {budget} trials finished "
                        f"({count['COMPLETE']} complete, {count['PRUNED']} pruned), {count['FAIL']} failed, "
                        f"{count['RUNNING']} running")
    for col in ("#", "state", "value", "params", "seconds", "note"):
        table.add_column(col)
    for r in rows:
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        secs = "" if r["duration_seconds"] is None else f"{r['duration_seconds']:.1f}"
        params = format_params(r["params"])
        label = f"{r['number']}{' (baseline)' if r['baseline'] else ''}"
        table.add_row(label, r["state"], value, escape(params or ("(base arguments)" if r["baseline"] else "")),
                      secs, escape(_note(r)))
    console = _console()
    if not console.is_terminal:  # piped or logged: a wide table rather than one wrapped at 80 columns
        console.width = 160
    console.print(table)
    best = next((r for r in rows if r["best"]), None)
    if best and best["model_dir"]:
        console.print(f"best model: {best['model_dir']}")
    return 0


def cmd_sync(ns: argparse.Namespace) -> int:
    from st_hpo._results._read import PARENT_ATTR, StudyLocation, load_study
    from st_hpo._tracking import MlflowTracker

    study_def = _load(ns)
    where = StudyLocation.resolve(study_def, output_dir=ns.output_dir, storage=ns.storage,
                                  tracking_uri=ns.tracking_uri)
    study = load_study(study_def, where)
    from st_hpo._execution._recovery import recover_stale_trials

    recover_stale_trials(study)  # a killed run's trials, as the next `run` would: FAIL, and their runs closed
    tracker = MlflowTracker(where.tracking_uri, study_def.experiment, artifact_root=where.artifact_root)
    before = study.user_attrs.get(PARENT_ATTR)
    tracker.ensure_parent(study, {"study": study_def.name})
    fixed = tracker.sync(study, study_def.objective)
    trials = study.get_trials(deepcopy=False)
    if not any(t.state.name == "RUNNING" for t in trials) and (
            tracker.parent_run_id != before or _abandoned(tracker, trials)):
        # the parent run was lost and made again here, or its run was killed: end it as the study stands
        # (its figures, and FINISHED or KILLED by the budget), not RUNNING forever
        from st_hpo._execution._session import log_study_figures

        log_study_figures(tracker, study)
        finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
        budget = int(study.user_attrs.get("st_hpo.n_trials", study_def.n_trials))
        tracker.set_parent_status("FINISHED" if finished >= budget else "KILLED")
    _console().print(f"MLflow at {where.tracking_uri}: {fixed} run(s) created or closed; every trial has its run")
    return 0


#: A parent run still RUNNING with no trial running and none ended for this long belongs to no live run.
ABANDONED_AFTER_SECONDS = 60.0


def _abandoned(tracker: Any, trials: list[Any]) -> bool:
    """True when the parent run says RUNNING but its run is gone: trials there are, none runs now (the
    caller checked) and the last one ended over a minute ago (a live run starts its next trial in seconds)."""
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    if not ends or tracker.parent_status() != "RUNNING":
        return False
    return (datetime.datetime.now() - max(ends)).total_seconds() > ABANDONED_AFTER_SECONDS


def cmd_confirm(ns: argparse.Namespace) -> int:
    from st_hpo._results._confirm import confirm_study

    study = _load(ns)
    gpus = ns.gpus
    if gpus is None and ns.workers and ns.workers > 1:  # spread over the GPUs, as run does
        from st_hpo._execution._workers import default_gpu_list

        gpus = default_gpu_list()
    result = confirm_study(study, top=ns.top, seeds=ns.seeds, output_dir=ns.output_dir, storage=ns.storage,
                           tracking_uri=ns.tracking_uri, progress=not ns.quiet, workers=ns.workers, gpus=gpus,
                           trials_per_gpu=ns.trials_per_gpu, study_file=ns.study_file)
    if result.interrupted:
        sys.stderr.write(f"stopped: the running confirmation trial was marked FAIL. Resume with: "
                         f"{_resume_line(sys.argv[1:])}\n")
        return EXIT_INTERRUPTED
    if ns.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return 0
    console = _console()
    if not console.is_terminal:
        console.width = 160
    console.print(_confirm_table(result))
    console.print(result.test["line"])
    if result.winner is not None:
        same = result.winner_trial == result.single_run_best
        console.print(f"after confirmation, {result.winner} wins" + (
            " (also the single-run best)" if same else f" (the single-run best was trial {result.single_run_best})"))
    return 0


def _confirm_table(result: Any) -> Any:
    from rich.markup import escape
    from rich.table import Table

    from st_hpo._execution._progress import format_params

    tests = any(c.test_values for c in result.configs)
    table = Table(title=f"{result.objective} ({result.direction}) over seeds {', '.join(map(str, result.seeds))}")
    for col in ("#", "configuration", "single run", "mean", "std", "seeds", *(("test mean", "test std") if tests
                                                                              else ()), "params"):
        table.add_column(col)

    def num(value: float | None) -> str:
        return "" if value is None else f"{value:.4f}"

    for c in result.configs:
        row = ["" if c.trial is None else str(c.trial), c.label + (" *" if c.label == result.winner else ""),
               num(c.single_run_value), num(c.mean), num(c.std), str(len(c.values))]
        if tests:
            row += [num(c.test_mean), num(c.test_std)]
        table.add_row(*row, escape(format_params(c.params) or "(base arguments)"))
    return table
