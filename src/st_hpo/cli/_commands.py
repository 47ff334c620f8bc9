"""The ``st-hpo`` commands: each parses nothing and decides nothing that the library does not."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from st_hpo._api import join_study, run_study, validate_study
from st_hpo._engines._worker import finish_from_plan, work_from_plan
from st_hpo._execution._probe_memory import NOTHING_TO_PROBE, probe_memory
from st_hpo._execution._progress import format_params
from st_hpo._execution._workers import EXIT_GAVE_UP, watch_supervisor
from st_hpo._results._confirm import join_confirmation
from st_hpo._tracking._view import trials_url
from st_hpo.cli._common import EXIT_ERROR, EXIT_INTERRUPTED, _handle, _load, quiet_optuna

__all__ = ["cmd_confirm", "cmd_run", "cmd_status", "cmd_sync", "cmd_validate", "cmd_worker"]


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _remaining(ns: argparse.Namespace) -> float | None:
    """What is left of ``--timeout``, which counts from the start of the command."""
    if ns.timeout is None:
        return None
    return max(ns.timeout - (time.monotonic() - getattr(ns, "started", time.monotonic())), 0.0)


def cmd_validate(ns: argparse.Namespace) -> int:
    study = _load(ns)
    validate_study(study)
    space = study.space if isinstance(study.space, dict) else {"(define-by-run)": study.space}
    objective = (f"objective {study.objective!r} ({study.direction})" if not study.is_multi_objective else
                 "objectives " + ", ".join(f"{n!r} ({d})" for n, d in zip(study.objectives, study.directions,
                                                                        strict=True)))
    _console().print(f"[green]ok[/green] study {study.name!r}: {objective}, {len(space)} searched name(s): "
                     f"{', '.join(map(str, space))}")
    if getattr(ns, "probe_memory", False):
        from rich.markup import escape

        corners = probe_memory(study)
        for line in [NOTHING_TO_PROBE] if corners is None else [c.line() for c in corners]:
            _console().print(escape(line))
    return 0


def shell_line(*words: str) -> str:
    """A command as a user pastes it into a shell: every word quoted where it needs it (``shlex.quote``)."""
    return " ".join(shlex.quote(str(w)) for w in words)


def _resume_line(argv: list[str]) -> str:
    return shell_line("st-hpo", *argv)


def _location_args(ns: argparse.Namespace) -> list[str]:
    """The options that say where the study is, as the command was given them."""
    words = []
    for option in ("output_dir", "storage", "study_name"):
        value = getattr(ns, option, None)
        if value:
            words += [f"--{option.replace('_', '-')}", str(value)]
    return words


def _enqueued(path: str | None) -> list[dict[str, Any]] | None:
    if not path:
        return None
    from st_hpo.exceptions import UsageError

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--enqueue {path}: cannot read a JSON list from it ({exc})") from None
    data = [data] if isinstance(data, dict) else data
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise UsageError(f"--enqueue {path}: expected a JSON list of {{name: value}} objects")
    return data


def cmd_run(ns: argparse.Namespace) -> int:
    study = _load(ns)
    enqueue = _enqueued(ns.enqueue)
    if enqueue:
        study = study.replace(enqueue=[*study.enqueue, *enqueue])
    engine_options = {"shared_dir": ns.shared_dir, "wait": ns.wait, "slurm_partition": ns.slurm_partition,
                      "slurm_time": ns.slurm_time, "slurm_account": ns.slurm_account,
                      "slurm_options": tuple(ns.slurm_option), "ray_address": ns.ray_address}
    result = run_study(
        study, n_trials=ns.n_trials, timeout=_remaining(ns), output_dir=ns.output_dir, storage=ns.storage,
        tracking_uri=ns.tracking_uri, pruner=ns.pruner, baseline=False if ns.no_baseline else None,
        intermediate_eval_rows=ns.intermediate_eval_rows, keep_best_model=ns.keep_best_model,
        workers=ns.workers, gpus=ns.gpus, trials_per_gpu=ns.trials_per_gpu, study_file=ns.study_file,
        progress=not ns.quiet, engine=ns.engine, gpus_per_worker=ns.gpus_per_worker,
        cpus_per_worker=ns.cpus_per_worker, engine_options=engine_options,
    )
    out = _console()
    if result.submission is not None:  # handed to a cluster engine; the study ends by itself
        sub = result.submission
        out.print(f"submitted to {sub.engine}: {' '.join(sub.ids)} (job script {sub.script})")
        out.print(f"watch: {shell_line('st-hpo', 'status', ns.study_file, *_location_args(ns))}; {sub.watch}")
        out.print(f"stop:  {sub.stop}")
        return 0
    if result.interrupted:
        sys.stderr.write(f"stopped: {_what_the_stop_ended(ns, result)}. Resume with: {_resume_line(ns.argv)}\n")
        return EXIT_INTERRUPTED
    _print_run(out, ns, study, result)
    return _run_exit(ns, result)


def _print_run(out: Any, ns: argparse.Namespace, study: Any, result: Any) -> None:
    """What a run that ended here found: the trials by state against the budget, the best trial, where to review."""
    from rich.markup import escape

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
    if result.pareto_numbers:
        out.print(f"Pareto front: trial {', '.join(map(str, result.pareto_numbers))} (st-hpo best shows them)")
    elif result.n_complete and result.best_value is None:  # complete trials, none feasible: no answer, say why
        out.print(f"no result: all {result.n_complete} complete trial(s) broke a constraint of the study; run "
                  "more trials, or relax Study(constraints=...)")
    if result.tracking_uri:
        for line in _review_lines(ns, result):
            out.print(escape(line))


def _run_exit(ns: argparse.Namespace, result: Any) -> int:
    """A finished run's exit code: 1, with what to do, when its trials kept failing (or all were pruned)."""
    if result.stop_reason and result.budget_met:  # every trial of the budget pruned or failed
        sys.stderr.write(f"error: {result.stop_reason}. See each trial with: "
                         f"{shell_line('st-hpo', 'status', ns.study_file)}; fix the cause, then extend the study "
                         "with a larger --n-trials (or prune less: --pruner)\n")
        return EXIT_ERROR
    if result.stop_reason:
        status = shell_line("st-hpo", "status", ns.study_file, *_location_args(ns))
        sys.stderr.write(f"error: {result.stop_reason}. See every failure with: {status}; "
                         "fix the cause and run the same command again to go on\n")
        return EXIT_ERROR
    return 0


def _what_the_stop_ended(ns: argparse.Namespace, result: Any) -> str:
    """What a Ctrl-C or SIGTERM of this command ended: the trials it marked FAIL, or none when it came before
    any trial ran (the workers were still starting, or between two trials)."""
    import optuna

    from st_hpo._execution._storage import open_storage
    from st_hpo._tracking._schema import STOPPED_ATTR

    since = time.time() - (time.monotonic() - getattr(ns, "started", time.monotonic()))
    try:
        trials = optuna.load_study(study_name=result.study_name, storage=open_storage(result.storage)).get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    except Exception:  # noqa: BLE001 - the storage gone meanwhile: say what is sure
        return "any running trial is marked FAIL"
    stopped = [t.number for t in trials if t.user_attrs.get(STOPPED_ATTR) and t.datetime_complete is not None
               and t.datetime_complete.timestamp() >= since]
    if not stopped:
        return "no trial was running, none failed"
    numbers = ", ".join(str(n) for n in stopped)
    return f"the running trial{'s' if len(stopped) > 1 else ''} ({numbers}) marked FAIL, {'their runs' if len(stopped) > 1 else 'its run'} KILLED"


def _location_flags(ns: argparse.Namespace) -> str:
    """The flags `st-hpo status` needs to find the study a run used."""
    flags = [(f, getattr(ns, a)) for f, a in (("--output-dir", "output_dir"), ("--storage", "storage"),
                                              ("--study-name", "study_name")) if getattr(ns, a)]
    return "".join(f" {f} {shlex.quote(v)}" for f, v in flags)


def _review_lines(ns: argparse.Namespace, result: Any) -> list[str]:
    """Where to see the trials in MLflow: the URL of the trials view (see `st-hpo ui`), and the plain
    `mlflow ui` command for the embedded store; every path quoted for the shell."""
    uri, exp = result.tracking_uri, result.experiment_id
    if uri.startswith(("http://", "https://")) and exp:
        return [f"review in MLflow: {trials_url(uri, exp)}"]
    ui = shell_line("st-hpo", "ui", ns.study_file, *_location_args(ns))  # the study this run used, wherever
    url = f", then open {trials_url('http://127.0.0.1:5000', exp)}" if exp else ""
    return [f"review in MLflow: {ui}{url}",
            f"  or serve the store yourself: {shell_line('mlflow', 'ui', '--backend-store-uri', uri)}"]


def _why_not_met(ns: argparse.Namespace, stop_reason: str | None = None) -> str:
    if stop_reason:
        return ", not met: see the error below"
    if ns.timeout is not None and _remaining(ns) == 0:
        return f", not met: --timeout {ns.timeout:g} s reached; run the same command again to go on"
    return ", not met: the workers stopped (see above); run the same command again to go on"


def cmd_worker(ns: argparse.Namespace) -> int:
    watch_supervisor()  # a supervisor killed by SIGKILL or SIGHUP stops its workers too

    if ns.plan or ns.study_file is None:
        return _plan_worker(ns)
    study = _load(ns)
    if ns.confirm_of:  # started by `st-hpo confirm --workers`: run the companion study's queued pairs
        return _confirm_worker(ns, study.replace(name=ns.confirm_of))
    result = join_study(study, n_trials=ns.n_trials, worker_name=ns.worker_name, timeout=_remaining(ns),
                        output_dir=ns.output_dir, storage=ns.storage, tracking_uri=ns.tracking_uri,
                        pruner=ns.pruner, intermediate_eval_rows=ns.intermediate_eval_rows,
                        keep_best_model=ns.keep_best_model,
                        progress=not (ns.no_progress or ns.quiet))
    return _worker_exit(result.interrupted, result.stop_reason)


def _plan_worker(ns: argparse.Namespace) -> int:
    """``st-hpo worker --plan PLAN.json``: every flag but --slot and --finish comes from the plan."""
    from st_hpo.exceptions import UsageError

    if not ns.plan or ns.study_file:
        raise UsageError("give the study file, or --plan PLAN.json (which names it), not both and not "
                                   "neither")

    quiet_optuna(ns)
    if ns.finish:
        return 0 if finish_from_plan(ns.plan) else EXIT_ERROR
    loop = work_from_plan(ns.plan, slot=ns.slot, progress=False if (ns.no_progress or ns.quiet) else None)
    return _worker_exit(loop.interrupted, loop.gave_up)


def _worker_exit(interrupted: bool, gave_up: str | None) -> int:
    """A worker's exit code: interrupted, gave up (its trials kept failing, said in one line), or 0."""
    if interrupted:
        return EXIT_INTERRUPTED
    if gave_up:
        sys.stderr.write(f"error: {gave_up}\n")
        return EXIT_GAVE_UP
    return 0


def _confirm_worker(ns: argparse.Namespace, study: Any) -> int:
    loop = join_confirmation(study, worker_name=ns.worker_name, budget=ns.n_trials, output_dir=ns.output_dir,
                             storage=ns.storage, tracking_uri=ns.tracking_uri,
                             progress=not (ns.no_progress or ns.quiet))
    if loop.interrupted:
        return EXIT_INTERRUPTED
    if loop.gave_up:
        return EXIT_GAVE_UP
    return 0


#: The status table's cost columns: (header, cost, format), for a study that weighs costs.
_COST_COLUMNS = (("encode ms", "cost.encode_ms", "{:.1f}"), ("dim", "cost.embedding_dim", "{:.0f}"))


def _cost_columns(status: Any) -> tuple[tuple[str, str, str], ...]:
    """The cost columns of ``status``'s table: none unless the study weighs costs; ``encode ms`` only where a
    trial measured it (a study measures ``cost.encode_ms`` only when it weighs it)."""
    if not status.shows_costs:
        return ()
    return tuple(c for c in _COST_COLUMNS if c[1] != "cost.encode_ms"
                 or any(c[1] in (r["costs"] or {}) for r in status.rows))


def _cost_cells(costs: dict[str, float], columns: tuple[tuple[str, str, str], ...]) -> list[str]:
    """A trial's cells in the cost ``columns`` (empty where it has none)."""
    return ["" if costs.get(name) is None else form.format(costs[name]) for _, name, form in columns]


def cmd_status(ns: argparse.Namespace) -> int:
    status = _handle(ns).status()
    if ns.json:
        print(json.dumps(status.rows, indent=2, default=str))
        return 0
    from rich.markup import escape
    from rich.table import Table

    from st_hpo._execution._progress import format_params
    from st_hpo._results._status import trial_note

    table = Table(title=status.headline())
    costs = _cost_columns(status)  # a study that weighs quality against cost
    for col in ("#", "state", "value", "params", "seconds", *(c[0] for c in costs), "ran on", "note"):
        table.add_column(col)
    for r in status.rows:
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        if r.get("values") and len(r["values"]) > 1:  # several objectives: each
            value = " / ".join(f"{v:.4g}" for v in r["values"])
        state = f"{r['state']} (infeasible)" if r.get("infeasible") else r["state"]
        secs = "" if r["duration_seconds"] is None else f"{r['duration_seconds']:.1f}"
        params = format_params(r["params"])
        label = f"{r['number']}{' (baseline)' if r['baseline'] else ''}"
        state = f"{r['state']} (infeasible)" if r.get("infeasible") else r["state"]
        table.add_row(label, state, value, escape(params or ("(base arguments)" if r["baseline"] else "")),
                      secs, *_cost_cells(r["costs"] or {}, costs), escape(r["engine_ref"] or ""),
                      escape(trial_note(r)))
    console = _console()
    if not console.is_terminal:  # piped or logged: a wide table (status has 7 columns, an error note up to 160 characters)
        console.width = 240
    console.print(table)
    if status.best_model_dir:
        console.print(f"best model: {status.best_model_dir}")
    return 0


def cmd_sync(ns: argparse.Namespace) -> int:
    from rich.markup import escape

    result = _handle(ns).sync()
    ended = f" (the study's run ended {result.parent_ended})" if result.parent_ended else ""
    _console().print(escape(f"MLflow at {result.tracking_uri}: {result.fixed} run(s) created or closed{ended}; "
                            "every trial has its run"))
    return 0


def cmd_confirm(ns: argparse.Namespace) -> int:
    result = _handle(ns).confirm(top=ns.top, seeds=ns.seeds, progress=not ns.quiet, workers=ns.workers,
                                 gpus=ns.gpus, trials_per_gpu=ns.trials_per_gpu, study_file=ns.study_file,
                                 trial=ns.trial)
    if result.interrupted:
        sys.stderr.write(f"stopped: the running confirmation trial was marked FAIL. Resume with: "
                         f"{_resume_line(ns.argv)}\n")
        return EXIT_INTERRUPTED
    if ns.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return 0
    console = _console()
    if not console.is_terminal:
        console.width = 240
    console.print(_confirm_table(result))
    if not any(c.baseline for c in result.configs):
        console.print("the study has no baseline trial: the configurations are compared with each other (the "
                      "best mean against the runner-up)")
    console.print(result.test["line"])
    if result.best_mean is not None:  # the verdict agrees with the test line above it
        from st_hpo._results._confirm_verdict import verdict

        console.print(f"after confirmation, {verdict(result.to_dict())} (the single-run best: trial "
                      f"{result.single_run_best})")
    return 0


def _confirm_table(result: Any) -> Any:
    from rich.markup import escape
    from rich.table import Table

    tests = any(c.test_values for c in result.configs)
    table = Table(title=f"{result.objective} ({result.direction}) over seeds {', '.join(map(str, result.seeds))}")
    for col in ("#", "configuration", "single run", "mean", "std", "seeds", *(("test mean", "test std") if tests
                                                                              else ()), "params"):
        table.add_column(col)

    def num(value: float | None) -> str:
        return "" if value is None else f"{value:.4f}"

    for c in result.configs:
        row = ["" if c.trial is None else str(c.trial), c.label + (" *" if c.label == result.best_mean else ""),
               num(c.single_run_value), num(c.mean), num(c.std), str(len(c.values))]
        if tests:
            row += [num(c.test_mean), num(c.test_std)]
        table.add_row(*row, escape(format_params(c.params) or "(base arguments)"))
    return table
