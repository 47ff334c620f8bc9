"""`st-hpo confirm` / confirm_study: the best configurations and the baseline trained again with new seeds."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest

import st_hpo
from st_hpo._results._confirm import confirmed_line
from tests.helpers import load_trials, mlflow_runs


def _confirm_runs(out: Path, experiment: str) -> tuple[object, list, list, list]:
    client, parents, trials = mlflow_runs(out, experiment)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return client, parents, trials, [r for r in runs if r.data.tags.get("st_hpo.kind") == "confirm"]


def _by_pair(trials: list) -> dict[tuple[str, int], list]:
    """Complete confirmation trials by (configuration, training seed)."""
    pairs: dict[tuple[str, int], list] = {}
    for t in trials:
        if t.state.name == "COMPLETE":
            pairs.setdefault((t.user_attrs["st_hpo.confirm.config"], t.user_attrs["st_hpo.confirm.seed"]), []).append(t)
    return pairs


def _wait_for_complete(out: Path, name: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    from st_hpo._execution._storage import open_storage

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            study = optuna.load_study(study_name=name, storage=open_storage(str(out / "optuna.journal")))
            if any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
                return
        except KeyError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no confirmation trial completed (exit code {proc.poll()})")


@pytest.mark.slow  # not serial: the kill -9 is of its own child's pid, once a pair is done (polled, not timed)
def test_confirm_trains_each_configuration_with_new_seeds_and_a_killed_one_resumes(study_file, tmp_path):
    path = study_file(name="confk", n_trials=2, baseline=True)
    out = tmp_path / "st-hpo-runs" / "confk"
    study = st_hpo.load_study_file(path)
    st_hpo.run_study(study, output_dir=out, progress=False)
    best = st_hpo.best_trial(study, output_dir=out)
    # confirm's top 1 is the best trial other than the baseline (the baseline itself may tie for best)
    other = next(t.number for t in load_trials(out, "confk") if not t.user_attrs.get("st_hpo.baseline"))
    cmd = [sys.executable, "-m", "st_hpo", "confirm", str(path), "--top", "1", "--seeds", "2"]

    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_complete(out, "confk.confirm", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = len(_by_pair(load_trials(out, "confk.confirm")))
    assert 1 <= done_before < 4

    again = subprocess.run(cmd + ["--workers", "2"], cwd=tmp_path, capture_output=True, text=True)  # on workers
    assert again.returncode == 0, again.stderr
    trials = load_trials(out, "confk.confirm")
    pairs = _by_pair(trials)  # (baseline + the best trial) x 2 new seeds, each trained once
    assert set(pairs) == {(key, seed) for key in ("baseline", str(other)) for seed in (1007, 1008)}
    assert all(len(v) == 1 for v in pairs.values()) and sum(t.state.name == "COMPLETE" for t in trials) == 4
    assert "baseline" in again.stdout and f"trial {other}" in again.stdout and "std" in again.stdout
    assert "paired t-test over 2 seed(s), one-sided, alpha 0.05: p=" in again.stdout
    # the progress lines number the confirmation's runs apart from the study's trials
    assert re.search(r"confirm run +\d+ +COMPLETE", again.stderr), again.stderr[-2000:]
    assert not re.search(r"\btrial +\d+ +(started|COMPLETE)", again.stderr), again.stderr[-2000:]
    assert "after confirmation, " in again.stdout

    client, parents, study_runs, confirm = _confirm_runs(out, "confk")
    assert len(parents) == 1 and len(study_runs) == 2  # no confirmation run among the study's trial runs
    assert [r.info.status for r in confirm].count("FINISHED") == 4
    assert all(r.info.status in ("FINISHED", "FAILED", "KILLED") for r in confirm)  # the killed one closed
    by_workers = {r.data.tags["st_hpo.worker"] for r in confirm if r.info.status == "FINISHED"} - {"main"}
    assert by_workers and by_workers <= {"w0", "w1"}, "the resumed pairs ran on the worker processes"
    for run in confirm:
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["st_hpo.source_trial"] in ("0", str(other)) and tags["st_hpo.seed_index"] in ("0", "1")
        try:
            trained = json.loads(Path(client.download_artifacts(run.info.run_id, "training_args.json",
                                                                str(tmp_path))).read_text())
        except mlflow.exceptions.MlflowException:
            # only the run of a pair killed before it began (SIGKILL right after Optuna handed it out, before it
            # wrote anything): `sync` made its run from the storage, and nothing was trained with any arguments
            assert tags.get("st_hpo.synced") == "true" and run.info.status != "FINISHED", tags
            continue
        assert trained["seed"] == int(tags["st_hpo.training_seed"]) != 7  # trained with the new seed
    assert parents[0].data.tags["st_hpo.best_trial"] == str(best.number)  # the parent's best is the study's

    result = st_hpo.confirm_study(study, top=1, seeds=2, output_dir=out, progress=False)
    assert result.trials_run == 0 and len(load_trials(out, "confk.confirm")) == len(trials)  # nothing twice
    assert [c.label for c in result.configs] == ["baseline", f"trial {other}"]
    for c in result.configs:
        assert c.seeds == [1007, 1008] and c.mean == pytest.approx(sum(c.values) / 2) and c.std is not None
    confirmed = st_hpo.best_trial(study, output_dir=out).to_dict()["confirmed"]  # what `best --json` prints
    assert confirmed == json.loads(json.dumps(result.to_dict()))
    assert confirmed["test"]["method"] == "paired t-test over 2 seed(s), one-sided, alpha 0.05"


def test_best_names_the_winner_after_confirmation_only_when_it_differs():
    confirmed = {"winner": "trial 3", "winner_trial": 3, "seeds": [1007, 1008, 1009],
                 "test": {"line": "paired t-test over 3 seed(s), one-sided, alpha 0.05: p=0.030; ..."}}
    line = confirmed_line(confirmed, single_run_best=5)
    assert line.startswith("after confirmation (3 seeds each, st-hpo confirm), trial 3 wins, not trial 5")
    assert "paired t-test" in line
    assert confirmed_line(confirmed, single_run_best=3) is None
    assert confirmed_line(None, single_run_best=3) is None


def test_confirm_refuses_a_non_positive_seed_count(make_study, tmp_path):
    with pytest.raises(st_hpo.UsageError, match="seeds=0 must be a positive whole number"):
        st_hpo.confirm_study(make_study(), seeds=0, output_dir=tmp_path)


def test_the_paired_test_is_one_sided_in_the_study_direction_and_needs_two_seeds():
    from st_hpo._results._confirm_stats import paired_test, score

    seeds = [1007, 1008, 1009]
    best = score("trial 4", 4, False, {}, dict(zip(seeds, [0.50, 0.61, 0.55], strict=True)), seeds, 0.6, {})
    base = score("baseline", 0, True, {}, dict(zip(seeds, [0.40, 0.46, 0.44], strict=True)), seeds, 0.4, {})
    higher = paired_test(best, base, "maximize")
    assert higher["beats_baseline"] is True and higher["p_value"] < 0.05
    assert higher["line"].startswith("paired t-test over 3 seed(s), one-sided, alpha 0.05: p=0.0")
    lower = paired_test(best, base, "minimize")  # higher values are worse when minimising
    assert lower["beats_baseline"] is False and lower["p_value"] > 0.5
    one = paired_test(score("trial 4", 4, False, {}, {1007: 0.5}, [1007], 0.6, {}),
                      score("baseline", 0, True, {}, {1007: 0.4}, [1007], 0.4, {}), "maximize")
    assert one["p_value"] is None and "no test is possible" in one["line"]
