"""The review commands: ``best``, ``export``, ``register``, ``retrain``, ``report`` and ``ui``.

Each is a thin layer over the library (:mod:`st_hpo._results._read`, :mod:`st_hpo._results._register`,
:mod:`st_hpo._results._retrain`, :mod:`st_hpo._results._reports`); ``ui`` starts an ``mlflow server`` process on the
study's tracking store and stops it on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from st_hpo._tracking._view import trials_url
from st_hpo.cli._common import REVIEW_LOCATION_HELP, _handle, add_trial_option, location_options, study_file
from st_hpo.exceptions import TrackingError

__all__ = ["add_parsers", "cmd_best", "cmd_export", "cmd_register", "cmd_report", "cmd_retrain", "cmd_test", "cmd_ui",
           "experiment_url", "server_log", "start_mlflow_server", "stop_server"]

def add_parsers(sub: Any) -> None:
    """Register the review commands on the ``st-hpo`` subparsers (each names its handler)."""
    tracked = location_options(REVIEW_LOCATION_HELP)
    untracked = location_options(REVIEW_LOCATION_HELP, tracking=False)
    sub.add_parser("best", help="show the best trial and its gain over the baseline", parents=[_json(), untracked],
                   description="The best trial: number, objective value, sampled values, MLflow run, and "
                   "how much it beat the baseline trial and the base model (higher or lower, and whether that is "
                   "better for the study's direction).").set_defaults(handler=cmd_best)
    own = study_file()
    own.add_argument("--to", required=True, metavar="FILE", help="the file to write (.json or .yaml)")
    add_trial_option(own)
    sub.add_parser("export", help="write the best configuration (training arguments) to a file",
                   parents=[own, untracked],
                   description="Write the best trial's full effective training arguments, its loss./model. "
                   "values, the study name and objective to FILE (YAML when FILE ends in .yaml, else JSON). "
                   "Load with SentenceTransformerTrainingArguments(output_dir=..., **config['args']).",
                   ).set_defaults(handler=cmd_export)
    _add_register(sub, tracked)
    _add_retrain(sub, tracked)
    sub.add_parser("report", help="write plots, a trial table and a summary to the parent run",
                   parents=[study_file(), tracked],
                   description="Optimisation history, parameter importances, parallel coordinates and "
                   "intermediate values (HTML and PNG), trials.csv and summary.md: written to "
                   "<output-dir>/reports/ and to the study's MLflow parent run under reports/.",
                   ).set_defaults(handler=cmd_report)
    own = _json()
    add_trial_option(own)
    sub.add_parser("test", help="score the kept best model and the base model on the held-out test set",
                   parents=[own, tracked],
                   description="Score the best trial's kept model and the base model on the study's "
                   "test_dataset (never used to choose anything), record the values on the parent run "
                   "(test_objective, base_model_test_objective) and print them. A run that reaches its "
                   "budget does this by itself.").set_defaults(handler=cmd_test)
    own = study_file()
    own.add_argument("--port", type=_port, default=5000, help="port to serve on (default: 5000)")
    own.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    sub.add_parser("ui", help="open the study's MLflow store in the MLflow UI", parents=[own, tracked],
                   description="Start an MLflow server on the study's tracking store and print the URL "
                   "of its experiment; Ctrl-C stops it. With an http(s) --tracking-uri only the URL is printed.",
                   ).set_defaults(handler=cmd_ui)


def _json() -> argparse.ArgumentParser:
    own = study_file()
    own.add_argument("--json", action="store_true", help="print the result as JSON")
    return own


def _add_register(sub: Any, location: argparse.ArgumentParser) -> None:
    own = study_file()
    own.add_argument("--name", help="the registered model's name (default: the study's name)")
    own.add_argument("--new-version", action="store_true",
                     help="log and register the model again when it is already registered (a new version)")
    add_trial_option(own)
    sub.add_parser("register", help="log the kept best model on its trial's MLflow run and register it",
                   parents=[own, location],
                   description="Log the best trial's kept model (keep_best_model) as the 'model' artifact of "
                   "that trial's MLflow run and register it in the Model Registry. Nothing is trained again; "
                   "when the model was not kept, use st-hpo retrain --register-as NAME.",
                   ).set_defaults(handler=cmd_register)


def _add_retrain(sub: Any, location: argparse.ArgumentParser) -> None:
    own = study_file()
    own.add_argument("--model-dir", help="where to save the model (default: <output-dir>/best-model)")
    own.add_argument("--epochs", type=float, help="train this many epochs instead of the best trial's")
    own.add_argument("--register-as", metavar="NAME", help="register the model in the MLflow Model Registry")
    own.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    add_trial_option(own)
    sub.add_parser("retrain", help="train the best configuration again and save the model", parents=[own, location],
                   description="Train the best configuration again on the study's data, save it with a "
                   "model card, log it to MLflow under the study's parent run, optionally register it.",
                   ).set_defaults(handler=cmd_retrain)


def _print(text: str) -> None:
    from rich.console import Console

    Console(highlight=False, soft_wrap=True).print(text)


def _print_front(answer: dict[str, Any], as_json: bool) -> int:
    """``st-hpo best`` of a multi-objective study: its Pareto front, one line per trial."""
    if as_json:
        print(json.dumps(answer, indent=2))
        return 0
    shown = ", ".join(f"{n} ({d})" for n, d in zip(answer["objectives"], answer["directions"], strict=True))
    _print(f"Pareto front of {answer['n_complete']} complete trial(s) of {answer['study_name']!r}: "
           f"{len(answer['pareto'])} trial(s) no other feasible trial beats on every objective of {shown}")
    for row in answer["pareto"]:
        values = ", ".join(f"{n} = {v:.4g}" for n, v in row["objectives"].items())
        costs = ", ".join(f"{n} = {v:.4g}" for n, v in row["costs"].items() if n not in row["objectives"])
        kept = f"; model: {row['model_dir']}" if row["model_dir"] else ""
        _print(f"  trial {row['number']}: {values}" + (f"; costs: {costs}" if costs else "") + kept)
    if answer["pareto"]:
        _print("pick one with --trial N (export, retrain, register, confirm, test)")
    elif answer["n_complete"]:
        _print("every complete trial broke a constraint of the study; run more trials, or relax Study(constraints=...)")
    else:
        _print("no trial has completed yet")
    return 0


def cmd_best(ns: argparse.Namespace) -> int:
    handle = _handle(ns)
    answer = handle.pareto_answer()
    if answer is not None:
        return _print_front(answer, ns.json)
    best = handle.best()
    if ns.json:
        print(json.dumps(best.to_dict(), indent=2))
        return 0
    label = " (the baseline)" if best.is_baseline else ""
    _print(f"best of {best.n_complete} complete trial(s) of {best.study_name!r}: trial {best.number}{label}, "
           f"{best.objective} = {best.value:.4f} ({best.direction})")
    for name, value in best.params.items():
        _print(f"  {name} = {value:.6g}" if isinstance(value, float) else f"  {name} = {value}")
    for what, ref, gain in (("baseline trial", best.baseline_value, best.gain_over_baseline),
                            ("base model", best.base_model_value, best.gain_over_base_model)):
        if ref is not None:
            _print(f"  vs {what}: {ref:.4f} -> {best.value:.4f}, {_change(best.value - ref, gain)}")
    if best.test_value is not None:
        base = "" if best.base_model_test_value is None else f", base model {best.base_model_test_value:.4f}"
        _print(f"  held-out test: {best.test_value:.4f}{base} (the dev value is optimistic: it picked the trial)")
    if note := best.confirmation_note:
        _print(f"  {note}")
    if best.mlflow_run_id:
        _print(f"  MLflow run: {best.mlflow_run_id}")
    if best.model_dir:
        _print(f"  model: {best.model_dir} ({best.load_hint})")
    else:
        _print("  model: not kept on this machine; `st-hpo retrain` trains it again")
    return 0


def _change(delta: float, gain: float) -> str:
    """A change of the objective in words that hold whatever the direction: ``0.0059 lower (better)``."""
    if abs(delta) < 5e-5:
        return "the same to 4 decimals"
    return f"{abs(delta):.4f} {'higher' if delta > 0 else 'lower'} ({'better' if gain > 0 else 'worse'})"


def cmd_test(ns: argparse.Namespace) -> int:
    score = _handle(ns).test(trial=ns.trial)
    if ns.json:
        print(json.dumps(dataclasses.asdict(score), indent=2))
        return 0
    base = "" if score.base_model_value is None else f"; base model {score.base_model_value:.4f}"
    _print(f"trial {score.trial_number} on the held-out test set: {score.metric} = {score.value:.4f}{base} "
           f"(dev objective {score.dev_value:.4f})")
    return 0


def cmd_export(ns: argparse.Namespace) -> int:

    missing = next((p for p in reversed(Path(ns.to).resolve().parents) if not p.exists()), None)
    path = _handle(ns).export(ns.to, trial=ns.trial)
    if missing is not None:
        _print(f"created the folder {missing}" + ("" if missing == path.resolve().parent
                                                  else f" and those below it, to {path.resolve().parent}"))
    _print(f"wrote the best configuration to {path}" if ns.trial is None
           else f"wrote trial {ns.trial}'s configuration to {path}")
    return 0


def cmd_register(ns: argparse.Namespace) -> int:
    result = _handle(ns).register(ns.name, new_version=ns.new_version, trial=ns.trial)
    if result.already_registered:
        _print(f"trial {result.trial_number}'s model is already registered as {result.name!r} version "
               f"{result.version} (models:/{result.name}/{result.version}), from its MLflow run {result.run_id}; "
               "pass --new-version to log and register it again")
        return 0
    _print(f"logged trial {result.trial_number}'s model ({result.value:.4f}) from {result.model_dir} "
           f"on its MLflow run {result.run_id}: {result.model_uri}")
    if result.version:
        _print(f"registered as {result.name!r} version {result.version} (models:/{result.name}/{result.version})")
    return 0


def cmd_retrain(ns: argparse.Namespace) -> int:
    handle = _handle(ns)
    result = handle.retrain(model_dir=ns.model_dir, epochs=ns.epochs, register_as=ns.register_as,
                            track=not ns.no_track, trial=ns.trial)
    epochs = f"{result.epochs:g} epoch{'' if result.epochs == 1 else 's'}"
    _print(f"retrained trial {result.trial_number}'s configuration ({epochs}, "
           f"{result.seconds:.1f} s): {handle.study.objectives[0]} = {result.value:.4f} (the trial had "
           f"{result.trial_value:.4f})")
    if result.test_value is not None:
        _print(f"held-out test: {result.test_value:.4f}")
    _print(f"saved to {result.model_dir}")
    if result.run_id:
        _print(f"MLflow run {result.run_id}, model {result.model_uri}")
    if result.registered_version:
        _print(f"registered as {ns.register_as!r} version {result.registered_version}")
    return 0


def cmd_report(ns: argparse.Namespace) -> int:
    files = _handle(ns).report()
    _print(f"wrote {len(files)} report file(s) to {files[0].parent} and to the parent run's reports/")
    print(files[0].parent.joinpath("summary.md").read_text())
    return 0


# --- the MLflow UI ------------------------------------------------------------------------------------


def experiment_url(base: str, experiment_id: str) -> str:
    """The MLflow UI address of an experiment."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}"


def _port(text: str) -> int:
    """A TCP port number for ``--port`` (1-65535)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number; give one from 1 to 65535")
    return port


def start_mlflow_server(tracking_uri: str, *, host: str = "127.0.0.1", port: int = 5000,
                        timeout: float = 90.0) -> subprocess.Popen:
    """Start ``mlflow server`` on ``tracking_uri`` in its own process group; return once it answers.

    Raises TrackingError when the port is taken or the server does not come up within ``timeout`` seconds.
    """
    with socket.socket() as probe:
        if probe.connect_ex((host, port)) == 0:
            raise TrackingError(f"port {port} on {host} is already in use; pass another --port")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
           "--host", host, "--port", str(port), "--workers", "1"]
    log = tempfile.TemporaryFile()  # a file, not a pipe: nobody reads the server's request log
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise TrackingError(f"mlflow server exited with code {proc.returncode}: {server_log(proc)[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return proc
            except OSError:
                time.sleep(0.5)
    except BaseException:  # Ctrl-C while it starts: its own session gets no SIGINT, so stop it here
        stop_server(proc)
        raise
    stop_server(proc)
    raise TrackingError(f"mlflow server did not answer on http://{host}:{port} within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop the server and its workers (its process group): SIGTERM, then SIGKILL after ``grace`` s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


def server_log(proc: subprocess.Popen) -> str:
    """What the server printed so far."""
    log = getattr(proc, "log", None)
    if log is None or log.closed:
        return ""
    log.seek(0)
    return log.read().decode(errors="replace").strip()


def cmd_ui(ns: argparse.Namespace) -> int:
    handle = _handle(ns)
    experiment_id = handle.review()
    if handle.tracking_uri.startswith(("http://", "https://")):
        _print_urls(handle.study, handle.tracking_uri, experiment_id)
        return 0
    proc = start_mlflow_server(handle.tracking_uri, host=ns.host, port=ns.port)
    _print_urls(handle.study, f"http://{ns.host}:{ns.port}", experiment_id)
    print("press Ctrl-C to stop", flush=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        stop_server(proc)
        print("stopped the MLflow server", flush=True)
        return 0
    sys.stderr.write(f"error: the MLflow server exited with code {proc.returncode}:\n{server_log(proc)[-2000:]}\n")
    return 1


def _print_urls(study: Any, base: str, experiment_id: str) -> None:
    """The trials view first (the runs list, best first), then its charts and the whole experiment."""
    print(f"MLflow UI for study {study.name!r}: {trials_url(base, experiment_id)}", flush=True)
    print(f"  the trials' charts (objective against each searched parameter): "
          f"{trials_url(base, experiment_id, charts=True)}", flush=True)
    print(f"  every run (the parent run, with the reports among its artifacts, and the trials nested under it): "
          f"{experiment_url(base, experiment_id)}/runs", flush=True)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
