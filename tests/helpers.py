"""Reading back what a user would look at: trials in the Optuna storage and runs in MLflow."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient


def load_trials(output_dir: Path, name: str, storage: str | None = None) -> list[optuna.trial.FrozenTrial]:
    """The trials of study ``name``: in ``storage`` (a URL or journal path) or in ``output_dir``'s journal."""
    from st_hpo._execution._storage import open_storage

    url = storage or str(output_dir / "optuna.journal")
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=False)


def mlflow_runs(output_dir: Path, experiment: str) -> tuple[MlflowClient, list, list]:
    """(client, parent runs, trial runs sorted by trial number) of the embedded store."""
    client = MlflowClient(tracking_uri=f"sqlite:///{output_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("st_hpo.kind") == "study"]
    trials = sorted((r for r in runs if r.data.tags.get("st_hpo.kind") == "trial"),
                    key=lambda r: int(r.data.tags["st_hpo.trial_number"]))
    return client, parents, trials


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: float | None = None
            ) -> subprocess.CompletedProcess:
    """Run ``st-hpo ARGS`` in this process (``st_hpo.cli.main``), as a user would in ``cwd``: its exit code and
    what it wrote to stdout and stderr, like :func:`subprocess.run`. What the command changes in the process
    (the working directory, the environment, the SIGTERM handler, logging and warning filters) is put back.
    Tests about real process behaviour (signals, broken pipes, import time) start ``python -m st_hpo``
    instead. ``timeout`` is accepted for the same call shape and not enforced."""
    import contextlib
    import io
    import logging
    import signal
    import warnings

    from st_hpo.cli import main

    del timeout
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd, saved_term = dict(os.environ), os.getcwd(), signal.getsignal(signal.SIGTERM)
    logger = logging.getLogger("st_hpo")
    saved_logger = (list(logger.handlers), logger.level, logger.propagate)
    try:
        os.environ.update(env or {})
        os.chdir(cwd)
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        signal.signal(signal.SIGTERM, saved_term)
        logger.handlers[:], logger.level, logger.propagate = saved_logger
    return subprocess.CompletedProcess(["st-hpo", *map(str, args)], code, out.getvalue(), err.getvalue())
