"""The commands st-hpo prints work when pasted into a shell, also for paths with spaces in them."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

# several processes and a server, yet not serial: the server takes a free port and is stopped by its own process
# group, and nothing is timed
pytestmark = pytest.mark.slow

FAILING_LOSS = (
    "class FailsFromStep2(CoSENTLoss):\n"
    "    calls = 0\n\n"
    "    def forward(self, *args, **kwargs):\n"
    "        self.calls += 1\n"
    "        if self.calls >= 2:\n"
    "            raise RuntimeError('out of memory (simulated)')\n"
    "        return super().forward(*args, **kwargs)\n\n\n"
    "def evaluator(ds):")


def _shell_env() -> dict[str, str]:
    """A shell where `st-hpo` and `mlflow` are this interpreter's, importing this checkout's st_hpo."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONPATH": os.pathsep.join(sys.path)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serves_experiment(port: int, name: str, proc: subprocess.Popen, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name={urllib.parse.quote(name)}"
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the pasted command exited with code {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return json.loads(resp.read())
        except OSError:
            time.sleep(1)
    raise AssertionError("the pasted mlflow ui command never answered")


def test_printed_commands_work_in_a_shell_with_spaces_in_the_paths(tmp_path, study_file):
    path = study_file(name="spaced", n_trials=1)
    text = path.read_text().replace("loss=CoSENTLoss,", "loss=FailsFromStep2, max_failures_in_a_row=1,")
    folder = tmp_path / "my studies"
    folder.mkdir()
    spaced = folder / "spaced study.py"
    spaced.write_text(text.replace("def evaluator(ds):", FAILING_LOSS))
    env = _shell_env()
    proc = subprocess.run([sys.executable, "-m", "st_hpo", "run", "my studies/spaced study.py", "--output-dir",
                           "runs/with space"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    # the command that lists the failures, pasted into a shell in the same folder
    status = re.search(r"See every failure with: (.*?); fix the cause", proc.stderr).group(1)
    shown = subprocess.run(["bash", "-c", status], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "0 complete, 0 pruned), 1 failed" in shown.stdout and "out of memory (simulated)" in shown.stdout
    # the MLflow UI command, pasted as printed (with a free port): it serves the study's store
    lead = "  or serve the store yourself: "
    ui = next(line for line in proc.stdout.splitlines() if line.startswith(lead))
    command = ui[len(lead):]
    assert command.startswith("mlflow ui --backend-store-uri ")
    port = _free_port()
    server = subprocess.Popen(["bash", "-c", f"exec {command} --host 127.0.0.1 --port {port}"], cwd="/",
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        experiment = _serves_experiment(port, "spaced", server)
        assert experiment["experiment"]["name"] == "spaced"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
