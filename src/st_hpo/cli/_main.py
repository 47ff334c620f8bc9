"""``st-hpo``: argument parsing, logging set-up, and the mapping of errors to one line and exit code 1.

Heavy libraries (torch, transformers, sentence-transformers, mlflow) are imported only by the commands
that need them, so ``st-hpo --help`` answers at once.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from st_hpo import __version__
from st_hpo._definition._study import PRUNER_NAMES
from st_hpo._engines import ENGINES
from st_hpo._interrupts import interrupt, redeliver_interrupts_from_finalizers
from st_hpo.cli import _commands, _review
from st_hpo.cli._common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    RUN_LOCATION_HELP,
    add_trial_option,
    location_options,
    study_file,
)
from st_hpo.exceptions import StHpoError

__all__ = ["main", "build_parser"]

RUN_HELP = """\
Run a study: validate it, then run trials until N trials have finished (complete or pruned) in total.

The budget is the total for the study, not for this command: re-running the same command resumes
(after a crash only the missing trials run; a finished study says so and does nothing), and a larger
--n-trials extends the study. Failed trials do not count towards it.

Everything goes to the output directory (default st-hpo-runs/<study name>/): the Optuna storage
(optuna.journal), the MLflow store (mlflow.db, mlartifacts/) and each trial's output (trials/).
"""


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small; give at least {minimum}")
        return value
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} seconds: give a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``st-hpo`` parser: the global options, then one subparser per command. Each command's parser is
    made of parent parsers (its own options first, then the groups it shares, the location options last) and
    names its handler with ``set_defaults(handler=...)``."""
    parser = argparse.ArgumentParser(
        prog="st-hpo", description="Hyperparameter search for sentence-transformers training "
        "(Optuna trials, MLflow review).")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--version", action="version", version=f"st-hpo {_version()}")
    #: traps_signals: SIGTERM and a second Ctrl-C stop it as a first Ctrl-C does; resumable: an interrupt
    #: prints the command to run again
    parser.set_defaults(traps_signals=False, resumable=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    tracked, untracked = location_options(RUN_LOCATION_HELP), location_options(RUN_LOCATION_HELP, tracking=False)
    _add_validate(sub)
    _add_run(sub, tracked)
    _add_worker(sub, tracked)
    sub.add_parser("status", help="list a study's trials", parents=[_status_options(), untracked],
                   description="How many trials finished out of the budget, then every trial: state, "
                   "value, params, seconds, and a note (how far a running trial got and on which worker, "
                   "where a pruned one stopped, why a failed one failed, the best one and its kept model). "
                   "Works while the study runs, from any machine that reaches its storage.",
                   ).set_defaults(handler=_commands.cmd_status)
    _add_confirm(sub, tracked)
    sub.add_parser("sync", help="bring MLflow up to date with the Optuna storage", parents=[study_file(), tracked],
                   description="Create or close MLflow runs so that every trial has exactly one run "
                   "in the state of its trial (also done at the start and end of every run).",
                   ).set_defaults(handler=_commands.cmd_sync)
    _review.add_parsers(sub)
    return parser


def _add_validate(sub: Any) -> None:
    own = study_file()
    own.add_argument("--probe-memory", action="store_true",
                     help="on a GPU, also train a few steps of the space's most memory-hungry corners (largest "
                     "batch first, longest rows, no gradient checkpointing) and print each one's peak memory and "
                     "whether it fits")
    sub.add_parser("validate", help="check a study file without training", parents=[own],
                   description="Check a study file without training: arguments, space, loss columns, "
                   "objective metric. Exit code 1 with a one-line reason when something is wrong.",
                   ).set_defaults(handler=_commands.cmd_validate)


def _add_run(sub: Any, location: argparse.ArgumentParser) -> None:
    own = study_file()
    own.add_argument("--n-trials", type=_count(1), help="total finished trials to reach (default: the study's n_trials)")
    own.add_argument("--timeout", type=_seconds, metavar="S",
                     help="stop starting trials S seconds after the command started (running trials finish; "
                     "every worker keeps to it)")
    own.add_argument("--pruner", choices=PRUNER_NAMES, help="override the study's pruner")
    own.add_argument("--intermediate-eval-rows", type=_count(0), metavar="N",
                     help="evaluate during training on a fixed subset of N eval rows, the final evaluation on "
                     "all of them (overrides the study's intermediate_eval_rows; 0: every evaluation on all rows)")
    own.add_argument("--keep-best-model", action=argparse.BooleanOptionalAction, default=None,
                     help="keep the best trial's model under <output-dir>/trials/trial-N/model (overrides the "
                     "study's keep_best_model, on by default)")
    own.add_argument("--no-baseline", action="store_true", help="do not run the base arguments as trial 0")
    own.add_argument("--enqueue", metavar="FILE.json",
                     help="a JSON list of {name: value} configurations to try first (warm start)")
    own.add_argument("--workers", type=int, help="run N worker processes sharing the study's storage (on a GPU "
                     "machine spread round-robin over the GPUs: --gpus, or every visible one)")
    own.add_argument("--gpus", help="comma-separated GPU ids as nvidia-smi numbers them (positions in "
                     "CUDA_VISIBLE_DEVICES when that is set): --trials-per-gpu workers per GPU, each seeing only "
                     "its GPU (default on a GPU machine: one worker per visible GPU)")
    own.add_argument("--trials-per-gpu", type=int, default=1, help="workers per GPU with --gpus (default 1)")
    sub.add_parser("run", help="run (or resume) a study", description=RUN_HELP,
                   formatter_class=argparse.RawDescriptionHelpFormatter, parents=[own, _engine_options(), location],
                   ).set_defaults(handler=_commands.cmd_run, traps_signals=True, resumable=True)


def _add_worker(sub: Any, location: argparse.ArgumentParser) -> None:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("study_file", nargs="?", help="the study file (not with --plan)")
    own.add_argument("--plan", metavar="PLAN.json", help="join the run this worker plan describes (the plan gives "
                     "the study file, location, options, budget and deadline)")
    own.add_argument("--slot", help="with --plan: the slot to take, by name or index (default: "
                     "$SLURM_ARRAY_TASK_ID, else the first)")
    own.add_argument("--finish", action="store_true", help="with --plan: end the study once its workers are done "
                     "(keep the best model, score it, write the reports, close the MLflow parent run)")
    own.add_argument("--n-trials", type=_count(1), help="the study's total budget (default: as the study records it)")
    own.add_argument("--timeout", type=_seconds, help="stop starting trials after this many seconds")
    own.add_argument("--pruner", choices=PRUNER_NAMES)
    own.add_argument("--intermediate-eval-rows", type=_count(0), metavar="N", help="as for run")
    own.add_argument("--keep-best-model", action=argparse.BooleanOptionalAction, default=None, help="as for run")
    own.add_argument("--worker-name", help="the name tagged on this worker's runs (default worker-<pid>)")
    own.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    own.add_argument("--confirm-of", metavar="STUDY", help=argparse.SUPPRESS)  # a worker of `st-hpo confirm`
    sub.add_parser("worker", help="join a running study from this machine", parents=[own, location],
                   description="Join a study (created by whichever process comes first) and run trials "
                   "until its global budget is met. Point every machine at the same --storage "
                   "(postgresql://...) and --tracking-uri (http://...); or give the --plan that `st-hpo "
                   "run` wrote into the output folder (worker-plan.json), which says all of that.",
                   ).set_defaults(handler=_commands.cmd_worker, traps_signals=True)


def _status_options() -> argparse.ArgumentParser:
    own = study_file()
    own.add_argument("--json", action="store_true", help="print a JSON list of {number, state, params, value, ...}")
    return own


def _add_confirm(sub: Any, location: argparse.ArgumentParser) -> None:
    own = study_file()
    own.add_argument("--top", type=_count(1), default=3, metavar="K", help="configurations to confirm (default 3)")
    own.add_argument("--seeds", type=_count(1), default=3, metavar="S", help="new training seeds each (default 3)")
    own.add_argument("--json", action="store_true", help="print the figures as JSON")
    own.add_argument("--workers", type=int, help="run the confirmation on N worker processes, as for run")
    own.add_argument("--gpus", help="comma-separated GPU ids, as for run (default on a GPU machine: every visible "
                     "one)")
    own.add_argument("--trials-per-gpu", type=int, default=1, help="workers per GPU with --gpus (default 1)")
    add_trial_option(own)
    sub.add_parser("confirm", help="train the best configurations and the baseline again with new seeds",
                   parents=[own, location],
                   description="Train the K best configurations and the baseline again with S new training "
                   "seeds each (seed + 1000 + i), in this process or on --workers/--gpus, as runs nested under the "
                   "study's parent run (st_hpo.kind=confirm). Prints mean and standard deviation per configuration "
                   "and whether the best one beats the baseline beyond seed noise (a one-sided paired t-test by "
                   "seed). Running it again resumes: only missing (configuration, seed) runs train.",
                   ).set_defaults(handler=_commands.cmd_confirm, traps_signals=True, resumable=True)


def _engine_options() -> argparse.ArgumentParser:
    """The options of ``run`` that say where its workers run (``--engine`` and what goes with it)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--engine", choices=ENGINES, default="local", help="where the workers run: this machine "
                   "(default), one SLURM job array (sbatch --array) of --workers tasks, or --workers Ray actors")
    p.add_argument("--gpus-per-worker", type=float, metavar="G", help="with --engine slurm or ray: GPUs per worker "
                   "(SLURM: whole ones, --gres=gpu:G; Ray: a share such as 0.5); not checked against this "
                   "machine's GPUs")
    p.add_argument("--cpus-per-worker", type=_count(1), default=1, metavar="C", help="CPUs per worker with "
                   "--engine slurm or ray (--cpus-per-task, num_cpus; default 1)")
    p.add_argument("--ray-address", metavar="ADDR", help="with --engine ray: the cluster to join, HOST:PORT of "
                   "its head (default: auto, the cluster this machine is part of)")
    p.add_argument("--slurm-partition", metavar="P", help="sbatch --partition")
    p.add_argument("--slurm-time", metavar="T", help="sbatch --time, per worker task (e.g. 08:00:00)")
    p.add_argument("--slurm-account", metavar="A", help="sbatch --account")
    p.add_argument("--slurm-option", action="append", default=[], metavar="OPT",
                   help="another sbatch option for every job, e.g. --slurm-option=--qos=high (repeatable)")
    p.add_argument("--shared-dir", action="store_true", help="the output folder (and a storage or MLflow file "
                   "in it) is on a filesystem every node mounts; without it --engine slurm needs a server "
                   "storage and tracking URI")
    p.add_argument("--wait", action="store_true", help="with --engine slurm: wait until the study has ended "
                   "(Ctrl-C cancels the jobs) instead of returning once they are submitted")
    return p


def _version() -> str:
    return __version__


#: Modules whose FutureWarning/DeprecationWarning the CLI hides below -vv (a study file's are shown).
LIBRARY_MODULES = (r"(transformers|torch|accelerate|datasets|huggingface_hub|mlflow|optuna|sentence_transformers|"
                   r"pydantic|sqlalchemy|alembic|matplotlib|plotly|pkg_resources|google|st_hpo|importlib|"
                   r"setuptools|_distutils_hack|safetensors|tokenizers|pyarrow|numpy|scipy|sklearn)(\.|$)")

#: The module name a study file runs under (:func:`st_hpo.load_study_file`): its warnings are the user's.
STUDY_MODULE = "__st_hpo_study__"

#: Carries -q/-v from ``st-hpo run`` to the worker processes it starts (they inherit the environment).
VERBOSITY_ENV = "ST_HPO_VERBOSITY"


def _inherit_verbosity(ns: argparse.Namespace) -> None:
    """A command without -q/-v takes its parent's (a worker of ``st-hpo -q run --workers N`` is quiet too)."""
    if not ns.verbose and not ns.quiet:
        inherited = os.environ.get(VERBOSITY_ENV, "")
        ns.quiet = inherited == "quiet"
        ns.verbose = int(inherited) if inherited.isdigit() else 0
    os.environ[VERBOSITY_ENV] = "quiet" if ns.quiet else str(ns.verbose)


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("st_hpo")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if not quiet and verbose == 0 else level)
    root.propagate = False
    if verbose < 2:
        for noisy in ("transformers", "sentence_transformers", "mlflow", "alembic", "optuna", "datasets"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        import warnings

        # the libraries' own deprecation notices, not those a study file's own code triggers (an import
        # path sentence-transformers deprecates is reported at the study file's line, and shown)
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=LIBRARY_MODULES)
            warnings.filterwarnings("default", category=category, module=STUDY_MODULE)
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")
        warnings.filterwarnings("ignore", message=".*pin_memory.*")


def _sigterm_as_interrupt() -> None:
    """SIGTERM stops as Ctrl-C does; both are recorded as stop requests (see st_hpo._interrupts), so that one
    whose KeyboardInterrupt a library swallows still stops the trial and the worker."""
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``st-hpo``; returns the exit code. Called in-process (from Python, a notebook), it
    leaves the process as it found it: the verbosity it hands to worker processes (``ST_HPO_VERBOSITY``) and
    its handling of Ctrl-C and SIGTERM hold for this command only."""
    saved = os.environ.get(VERBOSITY_ENV)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    try:
        return _main(argv)
    finally:
        if saved is None:
            os.environ.pop(VERBOSITY_ENV, None)
        else:
            os.environ[VERBOSITY_ENV] = saved
        # the Ctrl-C and SIGTERM handling a command installs (see _sigterm_as_interrupt) ends with it: a Ctrl-C
        # at a notebook's prompt afterwards must not be recorded as a stop that a later run would act on
        if threading.current_thread() is threading.main_thread():
            for signum, handler in handlers.items():
                if handler is not None:
                    signal.signal(signum, handler)
        sys.unraisablehook = hook


def console_main() -> int:
    """Entry point of an ``st-hpo`` process (the console script, ``python -m st_hpo``, the worker processes):
    :func:`main`, then the process ends.

    Before it ends, the objects alive then are frozen (``gc.freeze()``): the interpreter's collections at
    shutdown would otherwise scan the ~10^6 objects that torch, transformers and mlflow leave, for garbage
    that nobody waits for: 2 s of every command that trained (a tiny model's study on a 2-core CPU), 0.2 s
    frozen. Everything st-hpo writes is closed or flushed by then, and ``atexit`` handlers still run.
    :func:`main` itself, called in-process, never freezes anything.
    """
    try:
        return main()
    finally:
        gc.freeze()


def _main(argv: Sequence[str] | None) -> int:
    started = time.monotonic()  # --timeout counts from here: the whole command, imports and set-up included
    parser = build_parser()
    ns = parser.parse_args(argv)
    ns.started = started
    ns.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: the resume line repeats it
    _inherit_verbosity(ns)
    _configure_logging(ns.verbose, ns.quiet)
    try:
        if ns.traps_signals:
            _sigterm_as_interrupt()
            redeliver_interrupts_from_finalizers()  # a second Ctrl-C stops without "Exception ignored in"
        code = ns.handler(ns)
        sys.stdout.flush()  # a reader that left (`st-hpo status --json | head`) shows here, not at exit
        return code
    except BrokenPipeError:  # the reader of stdout left: stop without a word, as `cat | head` does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush at exit would fail again
        return EXIT_ERROR
    except StHpoError as exc:
        user_tb = getattr(exc, "user_traceback", None)
        if ns.debug and not user_tb:
            raise
        if ns.debug:  # a study file that raised: its own traceback, not st-hpo's frames that ran it
            sys.stderr.write(user_tb)
        hint = "; `st-hpo --debug ...` shows its traceback" if user_tb and not ns.debug else ""
        sys.stderr.write(f"error: {exc.as_options()}{hint}\n")  # the API's names as the options
        return EXIT_ERROR
    except OSError as exc:  # a path that is a folder, a file where a folder should be, a full disk
        if ns.debug:
            raise
        sys.stderr.write(f"error: {exc} (--debug shows where)\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        if ns.resumable:  # the study's MLflow run was ended KILLED on the way out
            sys.stderr.write(f"interrupted. Resume with: {_commands.shell_line('st-hpo', *ns.argv)}\n")
        else:
            sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
