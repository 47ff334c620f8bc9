"""``st-hpo``: argument parsing, logging set-up, and the mapping of errors to one line and exit code 1.

Heavy libraries (torch, transformers, sentence-transformers, mlflow) are imported only by the commands
that need them, so ``st-hpo --help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence

from st_hpo._interrupts import redeliver_interrupts_from_finalizers
from st_hpo.cli import _review
from st_hpo.cli._common import EXIT_ERROR, EXIT_INTERRUPTED, add_trial_option
from st_hpo.exceptions import StHpoError, UsageError

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


def _add_location(p: argparse.ArgumentParser, *, tracking: bool = True) -> None:
    p.add_argument("--output-dir", help="study folder (default: st-hpo-runs/<study name>)")
    p.add_argument("--storage", help="Optuna storage: a path ending in .journal, sqlite:///FILE or "
                   "postgresql://USER@HOST/DB (default: <output-dir>/optuna.journal)")
    p.add_argument("--study-name", help="run under another name than the study file's")
    if tracking:
        p.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. http://host:5000 "
                       "(default: sqlite:///<output-dir>/mlflow.db)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="st-hpo", description="Hyperparameter search for sentence-transformers training "
        "(Optuna trials, MLflow review).")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--version", action="version", version=f"st-hpo {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("validate", help="check a study file without training",
                       description="Check a study file without training: arguments, space, loss columns, "
                       "objective metric. Exit code 1 with a one-line reason when something is wrong.")
    p.add_argument("study_file")
    p.add_argument("--probe-memory", action="store_true",
                   help="on a GPU, also train a few steps of the space's most memory-hungry corners (largest "
                   "batch first, longest rows, no gradient checkpointing) and print each one's peak memory and "
                   "whether it fits")

    p = sub.add_parser("run", help="run (or resume) a study", description=RUN_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study_file")
    p.add_argument("--n-trials", type=_count(1),
                   help="total finished trials to reach (default: the study's n_trials)")
    p.add_argument("--timeout", type=_seconds, metavar="S",
                   help="stop starting trials S seconds after the command started (running trials finish; "
                   "every worker keeps to it)")
    p.add_argument("--pruner", choices=["median", "successive-halving", "hyperband", "patient", "none"],
                   help="override the study's pruner")
    p.add_argument("--intermediate-eval-rows", type=_count(0), metavar="N",
                   help="evaluate during training on a fixed subset of N eval rows, the final evaluation on "
                   "all of them (overrides the study's intermediate_eval_rows; 0: every evaluation on all rows)")
    p.add_argument("--keep-best-model", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the best trial's model under <output-dir>/trials/trial-N/model (overrides the "
                   "study's keep_best_model, on by default)")
    p.add_argument("--no-baseline", action="store_true", help="do not run the base arguments as trial 0")
    p.add_argument("--enqueue", metavar="FILE.json",
                   help="a JSON list of {name: value} configurations to try first (warm start)")
    p.add_argument("--workers", type=int, help="run N worker processes sharing the study's storage (on a GPU "
                   "machine spread round-robin over the GPUs: --gpus, or every visible one)")
    p.add_argument("--gpus", help="comma-separated GPU ids as nvidia-smi numbers them (positions in "
                   "CUDA_VISIBLE_DEVICES when that is set): --trials-per-gpu workers per GPU, each seeing only "
                   "its GPU (default on a GPU machine: one worker per visible GPU)")
    p.add_argument("--trials-per-gpu", type=int, default=1, help="workers per GPU with --gpus (default 1)")
    _add_engine(p)
    _add_location(p)

    p = sub.add_parser("worker", help="join a running study from this machine",
                       description="Join a study (created by whichever process comes first) and run trials "
                       "until its global budget is met. Point every machine at the same --storage "
                       "(postgresql://...) and --tracking-uri (http://...); or give the --plan that `st-hpo "
                       "run` wrote into the output folder (worker-plan.json), which says all of that.")
    p.add_argument("study_file", nargs="?", help="the study file (not with --plan)")
    p.add_argument("--plan", metavar="PLAN.json", help="join the run this worker plan describes (the plan gives "
                   "the study file, location, options, budget and deadline)")
    p.add_argument("--slot", help="with --plan: the slot to take, by name or index (default: "
                   "$SLURM_ARRAY_TASK_ID, else the first)")
    p.add_argument("--finish", action="store_true", help="with --plan: end the study once its workers are done "
                   "(keep the best model, score it, write the reports, close the MLflow parent run)")
    p.add_argument("--n-trials", type=_count(1), help="the study's total budget (default: as the study records it)")
    p.add_argument("--timeout", type=_seconds, help="stop starting trials after this many seconds")
    p.add_argument("--pruner", choices=["median", "successive-halving", "hyperband", "patient", "none"])
    p.add_argument("--intermediate-eval-rows", type=_count(0), metavar="N", help="as for run")
    p.add_argument("--keep-best-model", action=argparse.BooleanOptionalAction, default=None, help="as for run")
    p.add_argument("--worker-name", help="the name tagged on this worker's runs (default worker-<pid>)")
    p.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--confirm-of", metavar="STUDY", help=argparse.SUPPRESS)  # a worker of `st-hpo confirm`
    _add_location(p)

    p = sub.add_parser("status", help="list a study's trials",
                       description="How many trials finished out of the budget, then every trial: state, "
                       "value, params, seconds, and a note (how far a running trial got and on which worker, "
                       "where a pruned one stopped, why a failed one failed, the best one and its kept model). "
                       "Works while the study runs, from any machine that reaches its storage.")
    p.add_argument("study_file")
    p.add_argument("--json", action="store_true", help="print a JSON list of {number, state, params, value, ...}")
    _add_location(p, tracking=False)

    p = sub.add_parser("confirm", help="train the best configurations and the baseline again with new seeds",
                       description="Train the K best configurations and the baseline again with S new training "
                       "seeds each (seed + 1000 + i), in this process or on --workers/--gpus, as runs nested under the study's parent run "
                       "(st_hpo.kind=confirm). Prints mean and standard deviation per configuration and whether "
                       "the best one beats the baseline beyond seed noise (a one-sided paired t-test by seed). "
                       "Running it again resumes: only missing (configuration, seed) runs train.")
    p.add_argument("study_file")
    p.add_argument("--top", type=_count(1), default=3, metavar="K", help="configurations to confirm (default 3)")
    p.add_argument("--seeds", type=_count(1), default=3, metavar="S", help="new training seeds each (default 3)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--workers", type=int, help="run the confirmation on N worker processes, as for run")
    p.add_argument("--gpus", help="comma-separated GPU ids, as for run (default on a GPU machine: every visible one)")
    p.add_argument("--trials-per-gpu", type=int, default=1, help="workers per GPU with --gpus (default 1)")
    _add_location(p)
    add_trial_option(p)

    p = sub.add_parser("sync", help="bring MLflow up to date with the Optuna storage",
                       description="Create or close MLflow runs so that every trial has exactly one run "
                       "in the state of its trial (also done at the start and end of every run).")
    p.add_argument("study_file")
    _add_location(p)
    _review.add_parsers(sub)
    return parser


def _add_engine(p: argparse.ArgumentParser) -> None:
    from st_hpo._engines import ENGINES

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


def _version() -> str:
    from st_hpo import __version__

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
    from st_hpo._interrupts import interrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``st-hpo``; returns the exit code. Called in-process (from Python, a notebook), it
    leaves the process's environment as it found it: the verbosity it hands to worker processes
    (``ST_HPO_VERBOSITY``) holds for this command only."""
    saved = os.environ.get(VERBOSITY_ENV)
    try:
        return _main(argv)
    finally:
        if saved is None:
            os.environ.pop(VERBOSITY_ENV, None)
        else:
            os.environ[VERBOSITY_ENV] = saved


def _main(argv: Sequence[str] | None) -> int:
    started = time.monotonic()  # --timeout counts from here: the whole command, imports and set-up included
    parser = build_parser()
    ns = parser.parse_args(argv)
    ns.started = started
    ns.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: the resume line repeats it
    _inherit_verbosity(ns)
    _configure_logging(ns.verbose, ns.quiet)
    from st_hpo.cli import _commands

    command = getattr(_review if ns.command in _review.COMMANDS else _commands, f"cmd_{ns.command}")
    try:
        if ns.command in ("run", "worker", "confirm"):
            _sigterm_as_interrupt()
            redeliver_interrupts_from_finalizers()  # a second Ctrl-C stops without "Exception ignored in"
        code = command(ns)
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
        said = exc.as_options() if isinstance(exc, UsageError) else str(exc)  # the API's names as the options
        sys.stderr.write(f"error: {said}{hint}\n")
        return EXIT_ERROR
    except OSError as exc:  # a path that is a folder, a file where a folder should be, a full disk
        if ns.debug:
            raise
        sys.stderr.write(f"error: {exc} (--debug shows where)\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        if ns.command in ("run", "confirm"):  # the study's MLflow run was ended KILLED on the way out
            sys.stderr.write(f"interrupted. Resume with: {_commands.shell_line('st-hpo', *ns.argv)}\n")
        else:
            sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
