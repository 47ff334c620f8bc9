"""What a reviewer sees: a real `mlflow server` on a study's store, opened in headless Chromium."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import st_hpo
from st_hpo.cli._review import experiment_url, start_mlflow_server, stop_server
from tests.helpers import mlflow_runs
from tests.test_results import run_file_study

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic", "--window-size=1600,1000")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory, tiny_model_path):
    """A finished 3-trial study with its reports on the parent run: (study file, output dir)."""
    path, out = run_file_study(tmp_path_factory.mktemp("browser"), tiny_model_path)
    st_hpo.report_study(st_hpo.load_study_file(path), output_dir=out)
    return path, out


def _driver(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def _wait_for(driver, *texts, timeout=60):
    """Wait until every text is on the page; returns the page's text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d):
        body = d.find_element(By.TAG_NAME, "body").text
        return body if all(t in body for t in texts) else False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(shown)
    except Exception:
        missing = [t for t in texts if t not in driver.find_element(By.TAG_NAME, "body").text]
        pytest.fail(f"the page never showed {missing}; it shows:\n{driver.find_element(By.TAG_NAME, 'body').text[:2000]}")


def _wait_for_lines(driver, *lines, timeout=60):
    """Wait until each text is a whole line of the page (an axis title, not part of a chart's name)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d):
        body = d.find_element(By.TAG_NAME, "body").text.splitlines()
        return all(line in body for line in lines)

    WebDriverWait(driver, timeout, poll_frequency=0.5).until(shown, f"the page never showed the lines {lines}")


def _click(driver, xpath, timeout=30):
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(ec.element_to_be_clickable(("xpath", xpath))).click()


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium "
                    "chromium-driver; .ci/setup does it)")
def test_reviewer_sees_nested_trials_params_objective_and_reports(reviewed, tmp_path):
    _, out = reviewed
    client, parents, trials = mlflow_runs(out, "tiny-file")
    parent = parents[0]
    best = max(trials, key=lambda r: r.data.metrics["objective"])
    port = _free_port()
    server = start_mlflow_server(f"sqlite:///{out / 'mlflow.db'}", port=port)
    driver = _driver(tmp_path)
    base = experiment_url(f"http://127.0.0.1:{port}", parent.info.experiment_id)
    try:
        driver.get(f"{base}/runs")
        _wait_for(driver, "tiny-file", "4 matching runs")
        assert "trial-0" not in driver.find_element("tag name", "body").text, "trials are nested, not top-level"
        _click(driver, "//button[contains(@data-component-id, 'runnamecellrenderer')]")  # expand the parent
        _wait_for(driver, "trial-0", "trial-1", "trial-2")
        driver.save_screenshot(str(tmp_path / "experiment.png"))

        driver.get(f"{base}/runs/{best.info.run_id}")
        page = _wait_for(driver, "Parameters", "learning_rate", "warmup_ratio", "objective", "Parent run")
        assert str(best.data.metrics['objective'])[:7] in page, "the objective value is on the run page"
        driver.save_screenshot(str(tmp_path / "trial.png"))

        driver.get(f"{base}/runs/{parent.info.run_id}/artifacts")
        _wait_for(driver, "reports")
        _click(driver, "//*[normalize-space(text())='reports']")
        _wait_for(driver, "summary.md", "plots.html", "trials.csv", "optimization_history.png")
        _click(driver, "//*[normalize-space(text())='summary.md']")
        _wait_for(driver, "Study", "Improvement of the best trial")
        driver.save_screenshot(str(tmp_path / "reports.png"))
    finally:
        driver.quit()
        stop_server(server)
    for name in ("experiment.png", "trial.png", "reports.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name


def _start_ui(path, out, port):
    """`st-hpo ui` on the study; returns (the process, the URLs it printed before 'press Ctrl-C')."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "st_hpo.cli", "ui", str(path), "--output-dir", str(out),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    lines = []
    deadline = time.monotonic() + 120
    try:
        while not lines or "press Ctrl-C" not in lines[-1]:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "st-hpo ui exited early: " + "".join(lines)
            assert time.monotonic() < deadline, "st-hpo ui printed no URL: " + "".join(lines)
            lines.append(line)
    except BaseException:  # a failed start still stops the mlflow server it may have started (its own session)
        _stop_ui(proc)
        raise
    return proc, [line.rsplit(": ", 1)[1].strip() for line in lines if ": http" in line]


def _stop_ui(proc):
    proc.send_signal(signal.SIGINT)
    try:
        rest, _ = proc.communicate(timeout=180)  # stopping mlflow server takes long on a loaded machine
    finally:
        if proc.poll() is None:
            proc.kill()
    return rest


def _row_order(driver, names):
    """The names in the order the page shows them (top to bottom)."""
    found = {n: driver.find_element("xpath", f"//*[normalize-space(text())='{n}']").location["y"] for n in names}
    return sorted(names, key=found.get)


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium "
                    "chromium-driver; .ci/setup does it)")
def test_the_printed_url_opens_on_the_trials_best_first_with_objective_and_params(reviewed, tmp_path):
    """No click: the first URL `st-hpo ui` prints shows the trials, flat and best first, with their objective
    and searched parameters, in MLflow's model-training view; the second one their charts."""
    path, out = reviewed
    client, _, trials = mlflow_runs(out, "tiny-file")
    ranked = sorted(trials, key=lambda r: r.data.metrics["objective"], reverse=True)
    experiment_id = trials[0].info.experiment_id
    for tag in ("mlflow.experimentKind", "mlflow.sharedViewState.st-hpo-trials"):  # as an earlier version made it
        client.delete_experiment_tag(experiment_id, tag)
    port = _free_port()
    proc, urls = _start_ui(path, out, port)  # puts them back
    driver = _driver(tmp_path)
    try:
        driver.get(urls[0])
        values = [str(r.data.metrics["objective"]) for r in ranked]  # a cell's text is the whole value
        page = _wait_for(driver, "trial-0", "trial-1", "trial-2", "3 matching runs", "objective", "learning_rate",
                         "warmup_ratio", "Model training")
        assert "tiny-file\n" not in page.split("3 matching runs")[0].split("Run Name")[-1], "the parent run is not listed"
        for value in values:
            assert value in page, f"objective {value} is not on screen"
        objective = {r.info.run_name: r.data.metrics["objective"] for r in ranked}
        shown = _row_order(driver, list(objective))
        assert [objective[name] for name in shown] == sorted(objective.values(), reverse=True), \
            f"the trials are listed best first (equal objectives in either order): {shown}, {objective}"
        assert "Judges" not in page and "Sessions" not in page, "MLflow's GenAI view"
        shot = tmp_path / "trials.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot of the first screen: {shot}")

        driver.get(urls[1])
        _wait_for(driver, "st-hpo: the trials", "Parallel Coordinates", "learning_rate vs. objective",
                  "warmup_ratio vs. objective")
        _wait_for_lines(driver, "learning_rate", "warmup_ratio", "objective")  # the charts' axes: drawn
        driver.save_screenshot(str(tmp_path / "charts.png"))
        print(f"screenshot of the charts: {tmp_path / 'charts.png'}")
    finally:
        driver.quit()
        _stop_ui(proc)
    assert shot.stat().st_size > 10_000


def test_ui_command_serves_the_study_and_stops_on_ctrl_c(reviewed):
    path, out = reviewed
    port = _free_port()
    proc, urls = _start_ui(path, out, port)
    try:
        assert all(url.startswith(f"http://127.0.0.1:{port}/#/experiments/") for url in urls) and len(urls) == 3
        experiment_id = urls[0].split("/#/experiments/", 1)[1].split("/", 1)[0]
        api = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/get?experiment_id={experiment_id}"
        with urllib.request.urlopen(api, timeout=10) as resp:
            assert json.load(resp)["experiment"]["name"] == "tiny-file"
    finally:
        rest = _stop_ui(proc)
    assert proc.returncode == 0 and "stopped the MLflow server" in rest
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the server is gone"


def test_ctrl_c_while_the_server_starts_stops_it(tmp_path, monkeypatch):
    """The server runs in its own session (no SIGINT from the terminal): Ctrl-C in st-hpo must stop it, or the
    next `st-hpo ui` finds the port taken."""
    from st_hpo.cli import _review

    started = []
    real_popen = subprocess.Popen

    def recording(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    def ctrl_c(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_review.subprocess, "Popen", recording)
    monkeypatch.setattr(_review.urllib.request, "urlopen", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        start_mlflow_server(f"sqlite:///{tmp_path / 'mlflow.db'}", port=_free_port())
    assert len(started) == 1 and started[0].poll() is not None, "the mlflow server was left running"
