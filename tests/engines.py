"""Real engines for tests, each inside namespaces it creates (``unshare --net --pid --fork --mount-proc``, as
root), so that nothing leaks to the host: daemons, jobs and ports end with the namespace.

:class:`SlurmCluster` is a one-node SLURM cluster on the namespace's loopback (munge, slurmctld, slurmd; two
fake GPUs for ``--gres``, symlinks to /dev/null and /dev/zero); :meth:`SlurmCluster.run` runs a command in it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Sets up the cluster in the namespace, then waits (the namespace lives as long as this shell, its pid 1).
_SETUP = r'''
set -eu
D=$1
mkdir -p $D/state $D/spool $D/log
chown -R slurm:slurm $D/state $D/spool $D/log
ip link set lo up
ip addr add 127.0.0.2/8 dev lo   # without a second address slurmctld cannot resolve its own name
H=$(hostname -s)
cat > $D/slurm.conf <<CONF
ClusterName=sthpo
SlurmctldHost=$H(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
AuthInfo=socket=$D/munge.sock
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=5
SchedulerParameters=sched_interval=1
GresTypes=gpu
NodeName=$H NodeAddr=127.0.0.1 CPUs=2 RealMemory=2000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
ln -sf /dev/null $D/gpu0
ln -sf /dev/zero $D/gpu1
printf 'NodeName=%s Name=gpu File=%s\n' $H $D/gpu0 $H $D/gpu1 > $D/gres.conf
export SLURM_CONF=$D/slurm.conf
munged --socket=$D/munge.sock --pid-file=$D/munged.pid --log-file=$D/log/munged.log --seed-file=$D/munge.seed \
  --force 2>/dev/null
slurmctld
slurmd
for _ in $(seq 100); do
  if sinfo -h -o %t 2>/dev/null | grep -q idle; then touch $D/ready; break; fi
  sleep 0.2
done
exec sleep infinity
'''


#: A Ray head and a second node in the namespace; its session files stay in the cluster's folder.
_RAY_SETUP = r'''
set -eu
D=$1
ip link set lo up
ip addr add 127.0.0.2/8 dev lo
export RAY_USAGE_STATS_ENABLED=0
common="--num-cpus=1 --object-store-memory=150000000 --disable-usage-stats"
$RAY_BIN start --head --port=6380 --include-dashboard=false --temp-dir=$D/ray $common > $D/head.log 2>&1
$RAY_BIN start --address=127.0.0.1:6380 $common > $D/node.log 2>&1
touch $D/ready
exec sleep infinity
'''


def slurm_available() -> str | None:
    """Why a SLURM cluster cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (to create namespaces and run the SLURM daemons)"
    missing = [c for c in ("unshare", "nsenter", "munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(c)]
    if missing:
        return f"needs {', '.join(missing)} (Debian: apt-get install slurmctld slurmd slurm-client munge)"
    return None


def ray_available() -> str | None:
    """Why a Ray cluster cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (to create namespaces)"
    if not shutil.which("unshare") or not shutil.which("nsenter"):
        return "needs unshare and nsenter"
    try:
        import ray  # noqa: F401
    except ImportError:
        return 'needs Ray (pip install "st-hpo[ray]")'
    return None


class SlurmCluster:
    """A one-node SLURM cluster in fresh namespaces; :meth:`stop` ends the namespace and everything in it."""

    setup = _SETUP
    prefix = "st-hpo-slurm-"
    env: dict[str, str] = {}

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=self.prefix))
        self.dir.chmod(0o755)  # the slurm user reaches its state and spool folders
        self.conf = self.dir / "slurm.conf"
        self.proc: subprocess.Popen | None = None
        self.pid1: int | None = None  # the namespace's pid 1, as the host numbers it

    def start(self, timeout: float = 240) -> SlurmCluster:
        (self.dir / "setup.sh").write_text(self.setup)
        self.proc = subprocess.Popen(
            ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL",
             "bash", str(self.dir / "setup.sh"), str(self.dir)],
            stdout=open(self.dir / "setup.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **self.env})
        deadline = time.monotonic() + timeout
        while not (self.dir / "ready").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "setup.log").read_text()[-2000:]
                self.stop()
                raise RuntimeError(f"the {type(self).__name__} did not start: {log}")
            time.sleep(0.2)
        self.pid1 = _child_of(self.proc.pid)
        return self

    def run(self, *cmd: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside the cluster's namespaces (its network, pids and /proc), with SLURM_CONF set."""
        return subprocess.run(self.command(*cmd), capture_output=True, text=True, timeout=timeout, **kw)

    def command(self, *cmd: str) -> list[str]:
        return ["nsenter", "-t", str(self.pid1), "-n", "-p", "-m", "--", "env", f"SLURM_CONF={self.conf}", *cmd]

    def squeue(self) -> list[str]:
        """The jobs SLURM lists (``%i %T``), one per line."""
        out = self.run("squeue", "-h", "-o", "%i %T")
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # unshare --kill-child ends the namespace with it
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class RayCluster(SlurmCluster):
    """A Ray head (127.0.0.1:6380) and a second node in fresh namespaces, one CPU each."""

    setup = _RAY_SETUP
    prefix = "st-hpo-ray-"
    env = {"RAY_BIN": str(Path(sys.executable).parent / "ray")}
    address = "127.0.0.1:6380"

    def command(self, *cmd: str) -> list[str]:
        return ["nsenter", "-t", str(self.pid1), "-n", "-p", "-m", "--", "env", "RAY_USAGE_STATS_ENABLED=0", *cmd]


def _child_of(pid: int) -> int:
    """The one child process of ``pid`` (the namespace's pid 1 under ``unshare --fork``)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        if children:
            return int(children[0])
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            return int(stat.parent.name)
    raise RuntimeError(f"process {pid} has no child")


def trials_so_far(out, name):
    """The study's trials in ``out``'s journal, or [] before the study exists."""
    from tests.helpers import load_trials

    try:
        return load_trials(out, name)
    except (KeyError, ValueError, OSError):  # the study is not created yet
        return []


def wait_for(what, condition, timeout: float, explain=None):
    """``condition()``'s first true value, polled every 0.5 s; AssertionError naming ``what`` after ``timeout``,
    with what ``explain()`` says of the state then (the queue, the trials, the workers' logs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{explain()}" if explain else ""))


def engine_state(out, name, queue=None) -> str:
    """What a failed wait should show: the queue, every trial (number, state, engine ref, reports), and the tail
    of each worker's log in ``out``."""
    trials = [(t.number, t.state.name, t.user_attrs.get("st_hpo.tag.engine_ref"), len(t.intermediate_values))
              for t in trials_so_far(out, name)]
    logs = "".join(f"\n--- {log.name}:\n{log.read_text(errors='replace')[-1500:]}"
                   for log in sorted(Path(out).rglob("*.log")) if log.is_file())
    return f"queue: {queue() if queue else '-'}\ntrials (number, state, engine ref, reports): {trials}{logs}"


#: The evaluator that :func:`hold_one_trial` puts in a study file. The first worker to evaluate in training
#: claims the hold: its ``nth`` trial's third evaluation (after two reports) writes its pid to ``held`` beside
#: the study file and sleeps until the test kills that worker (:func:`held_trial` finds that trial). Every
#: other worker waits for the mark before its evaluations go on.
_HOLD_ONE_TRIAL = '''
import os as _os, pathlib as _pathlib, time as _time

_MARKS = _pathlib.Path(__file__).parent


class HoldOneTrial(EmbeddingSimilarityEvaluator):
    holder = None
    trials_seen = 0

    def __call__(self, model, output_path=None, epoch=-1, steps=-1):
        if steps > 0 and HoldOneTrial.holder is None:
            try:
                _os.close(_os.open(_MARKS / "holder", _os.O_CREAT | _os.O_EXCL))
                HoldOneTrial.holder = True
            except FileExistsError:
                HoldOneTrial.holder = False
        if HoldOneTrial.holder and steps == 6:
            HoldOneTrial.trials_seen += 1
        if HoldOneTrial.holder and steps == 6 and HoldOneTrial.trials_seen == {nth}:
            (_MARKS / "held.tmp").write_text(str(_os.getpid()))
            _os.replace(_MARKS / "held.tmp", _MARKS / "held")
            _time.sleep(3600)
        if HoldOneTrial.holder is False:
            deadline = _time.monotonic() + 240
            while not (_MARKS / "held").exists() and _time.monotonic() < deadline:
                _time.sleep(0.2)
        return super().__call__(model, output_path=output_path, epoch=epoch, steps=steps)
'''


def hold_one_trial(path: Path, nth: int = 1) -> Path:
    """Make a study file from ``tests.conftest.study_file`` hold one trial in training until it is killed (the
    ``nth`` trial of the first worker to train), and hold the other workers' evaluations until then. A kill
    then lands where the test means it to on any machine, loaded or not. Its trials (12 steps) last under a
    second on a fast CPU: without this, a poll could see a trial in training that ended before the kill, or the
    other worker finish the whole budget before any trial was caught in training (as on an Intel Xeon, where
    the SLURM test timed out)."""
    text = path.read_text()
    assert "return EmbeddingSimilarityEvaluator(" in text and "def evaluator(ds):" in text
    hold = _HOLD_ONE_TRIAL.replace("{nth}", str(int(nth)))
    path.write_text(text.replace("return EmbeddingSimilarityEvaluator(", "return HoldOneTrial(")
                    .replace("def evaluator(ds):", hold + "\n\ndef evaluator(ds):"))
    return path


def held_trial(path: Path, out, name: str, timeout: float = 240, explain=None):
    """The trial that a study file made by :func:`hold_one_trial` at ``path`` holds in training, once it holds it
    (the other workers' trials may be in training too: this is the one that stays there)."""
    held = path.parent / "held"
    pid = wait_for("a trial held in training", lambda: held.exists() and held.read_text(), timeout, explain)
    return wait_for(f"the running trial of pid {pid}", lambda: next(
        (t for t in trials_so_far(out, name) if t.state.name == "RUNNING" and str(t.user_attrs.get("st_hpo.pid")) == pid
         and len(t.intermediate_values) >= 2), None), 60, explain)
