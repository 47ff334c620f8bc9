"""Several objectives (quality against cost): pruning on the first objective, constraints, the Pareto set as
the answer, and ``--trial N`` to pick one trial of it."""

from __future__ import annotations

import json
import textwrap

import optuna
import pytest

from st_hpo.exceptions import StudyDefinitionError
from tests.conftest import make_pairs
from tests.helpers import load_trials, mlflow_runs, run_cli

METRIC = "sts-dev_spearman_cosine"

STUDY = textwrap.dedent('''
    import optuna
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss
    import st_hpo

    PAIRS = {pairs!r}
    EVAL = {eval_pairs!r}

    def evaluator(ds):
        return EmbeddingSimilarityEvaluator(ds["sentence1"], ds["sentence2"], ds["score"], name="sts-dev")

    study = st_hpo.Study(
        name="quality-vs-size",
        model=lambda params: SentenceTransformer({model!r}, truncate_dim=params.get("model.truncate_dim"),
                                                 device="cpu"),
        train_dataset=lambda: Dataset.from_dict(PAIRS),
        eval_dataset=lambda: Dataset.from_dict(EVAL),
        loss=CoSENTLoss,
        evaluator=evaluator,
        objective=["sts-dev_spearman_cosine", "cost.embedding_dim"],
        constraints={{"cost.embedding_dim": "<= 16"}},
        args=dict(num_train_epochs=1, per_device_train_batch_size=8, logging_steps=1, save_strategy="no",
                  disable_tqdm=True, seed=7, use_cpu=True),
        # learning rates up to 3 ruin a model at once: successive halving (the default pruner) prunes them
        space={{"learning_rate": optuna.distributions.FloatDistribution(1e-5, 3.0, log=True),
               "model.truncate_dim": optuna.distributions.CategoricalDistribution([8, 16, 32])}},
        n_trials=10,
        seed=0,
        baseline=False,
    )
''')


def _front(trials: list[optuna.trial.FrozenTrial]) -> list[int]:
    """The non-dominated feasible complete trials, computed here from Optuna's own records: values (maximise
    the metric, minimise the embedding size) and constraint values (feasible when all are <= 0)."""
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE
            and all(c <= 0 for c in t.constraints.values())]

    def dominated(t: optuna.trial.FrozenTrial) -> bool:
        return any(o.values[0] >= t.values[0] and o.values[1] <= t.values[1]
                   and (o.values[0] > t.values[0] or o.values[1] < t.values[1]) for o in done)

    return sorted(t.number for t in done if not dominated(t))


@pytest.fixture(scope="module")
def ran(tmp_path_factory, tiny_model_path):
    """The study run once by the CLI: (folder, study file, the run's output: stdout, then stderr, where the
    progress lines go)."""
    root = tmp_path_factory.mktemp("multi")
    path = root / "quality_vs_size.py"
    path.write_text(STUDY.format(pairs=make_pairs(64, 1), eval_pairs=make_pairs(32, 2), model=tiny_model_path))
    result = run_cli("run", path, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    return root, path, result.stdout + result.stderr


@pytest.mark.slow
def test_pruned_infeasible_and_front(ran):
    root, path, out = ran
    out_dir = root / "st-hpo-runs" / "quality-vs-size"
    trials = load_trials(out_dir, "quality-vs-size")
    assert len(trials) >= 10
    assert any(t.state == optuna.trial.TrialState.PRUNED for t in trials), out
    # pruned trials kept the first objective's intermediate values (Optuna refuses Trial.report here)
    assert all(t.user_attrs.get("st_hpo.intermediate") for t in trials if t.state.name == "PRUNED")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert all(len(t.values) == 2 for t in complete)
    infeasible = [t for t in complete if t.values[1] > 16]
    assert infeasible, "no complete trial with a 32-dim embedding: the constraint excluded nothing"
    assert all(t.constraints["st_hpo.infeasible"] > 0 and t.user_attrs["st_hpo.infeasible"] for t in infeasible)

    best = run_cli("best", path, "--json", cwd=root)
    assert best.returncode == 0, best.stderr
    pareto = json.loads(best.stdout)["pareto"]
    assert [row["number"] for row in pareto] == _front(trials) != []
    assert not {t.number for t in infeasible} & {row["number"] for row in pareto}
    by_number = {t.number: t for t in trials}
    for row in pareto:
        assert row["values"] == by_number[row["number"]].values
        assert set(row["params"]) == {"learning_rate", "model.truncate_dim"}
    # one kept model per trial of the front, none for the others
    kept = sorted(int(p.parent.name.removeprefix("trial-")) for p in (out_dir / "trials").glob("trial-*/model"))
    assert kept == [row["number"] for row in pareto]

    text = run_cli("best", path, cwd=root).stdout
    for row in pareto:
        assert f"trial {row['number']}: {METRIC} = " in text and "cost.embedding_dim = " in text

    rows = json.loads(run_cli("status", path, "--json", cwd=root).stdout)
    for row in rows:
        stored = by_number[row["number"]]
        assert row["values"] == (stored.values if stored.state.name == "COMPLETE" else None)
        assert row["pareto"] == (row["number"] in {r["number"] for r in pareto})
        assert bool(row["infeasible"]) == (stored in infeasible)
        assert "value" in row and "best" in row and row["best"] is False
    assert "COMPLETE (infeasible)" in run_cli("status", path, cwd=root).stdout
    # the run's reports: plotted on the first objective, the front in the summary, each objective in the table
    summary = (out_dir / "reports" / "summary.md").read_text()
    assert f"Pareto front: {len(pareto)} of {len(complete)} complete trials" in summary
    header = (out_dir / "reports" / "trials.csv").read_text().splitlines()[0].split(",")
    assert header[2:4] == [f"values_{METRIC}", "values_cost.embedding_dim"]


@pytest.mark.slow
def test_the_run_says_which_complete_trials_broke_a_constraint(ran):
    """A complete trial that broke a constraint is never on the front: its progress line says so, and why."""
    root, _, out = ran
    trials = load_trials(root / "st-hpo-runs" / "quality-vs-size", "quality-vs-size")
    lines = {int(line.split()[1]): line for line in out.splitlines()
             if line.startswith("trial ") and " COMPLETE " in line}
    assert any(t.state.name == "COMPLETE" and t.values[1] > 16 for t in trials), "no trial broke the constraint"
    for t in trials:
        if t.state.name == "COMPLETE":
            broke = t.values[1] > 16
            assert ("infeasible: cost.embedding_dim = 32 breaks <= 16" in lines[t.number]) == broke, lines[t.number]


@pytest.mark.slow
def test_trial_runs_log_each_objective(ran):
    root, _, _ = ran
    _, _, runs = mlflow_runs(root / "st-hpo-runs" / "quality-vs-size", "quality-vs-size")
    complete = [r for r in runs if r.data.tags["st_hpo.trial_state"] == "COMPLETE"]
    assert complete
    for run in complete:
        assert {f"objective.{METRIC}", "objective.cost.embedding_dim"} <= set(run.data.metrics)
        assert "objective" not in run.data.metrics
    infeasible = [r for r in complete if r.data.metrics["objective.cost.embedding_dim"] > 16]
    assert all(r.data.tags.get("st_hpo.infeasible") == "true" for r in infeasible)


@pytest.mark.slow
def test_trial_picks_one_of_the_front(ran):
    root, path, _ = ran
    front = [row["number"] for row in json.loads(run_cli("best", path, "--json", cwd=root).stdout)["pareto"]]
    refused = run_cli("export", path, "--to", root / "x.json", cwd=root)
    assert refused.returncode == 1
    assert "--trial N" in refused.stderr and ", ".join(map(str, front)) in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    chosen = front[-1]
    exported = run_cli("export", path, "--to", root / "chosen.json", "--trial", chosen, cwd=root)
    assert exported.returncode == 0, exported.stderr
    config = json.loads((root / "chosen.json").read_text())
    assert config["trial"] == chosen and set(config["values"]) == {METRIC, "cost.embedding_dim"}
    trials = {t.number: t for t in load_trials(root / "st-hpo-runs" / "quality-vs-size", "quality-vs-size")}
    assert config["args"]["learning_rate"] == pytest.approx(trials[chosen].params["learning_rate"])
    for number, t in trials.items():  # a complete trial off the front: dominated, or infeasible
        if t.state.name == "COMPLETE" and number not in front:
            refused = run_cli("export", path, "--to", root / "y.json", "--trial", number, cwd=root)
            why = "it is infeasible" if t.values[1] > 16 else "not on the Pareto front"
            assert refused.returncode == 1 and why in refused.stderr, refused.stderr
    retrained = run_cli("retrain", path, "--trial", chosen, "--no-track", "--model-dir", root / "again", cwd=root)
    assert retrained.returncode == 0, retrained.stderr
    assert f"retrained trial {chosen}'s configuration" in retrained.stdout
    from sentence_transformers import SentenceTransformer

    again = SentenceTransformer(str(root / "again"), device="cpu")
    assert again.encode(["a dog"]).shape[-1] == trials[chosen].params["model.truncate_dim"]
    for command in (["retrain", "--no-track"], ["register"], ["confirm", "--seeds", "1"]):  # no one best
        refused = run_cli(command[0], path, *command[1:], cwd=root)
        assert refused.returncode == 1 and "--trial N" in refused.stderr, (command, refused.stderr)
    confirmed = run_cli("confirm", path, "--trial", chosen, "--seeds", "1", "--json", cwd=root)
    assert confirmed.returncode == 0, confirmed.stderr
    assert [c["trial"] for c in json.loads(confirmed.stdout)["configs"]] == [chosen]


BASE = dict(name="x", model="m", train_dataset=lambda: None, loss=lambda m, p: None, evaluator=lambda ds: None,
            space={})


@pytest.mark.parametrize(("fields", "says"), [
    (dict(objective=[METRIC, "cost.latency"]), "unknown cost 'cost.latency'"),
    (dict(objective=[METRIC, "cost.encode_ms"], direction=["maximize"]), "one per objective"),
    (dict(objective=[METRIC, "cost.encode_ms"], direction=["maximize", "lower"]), "'lower' of objective"),
    (dict(objective=["cost.encode_ms", METRIC]), "put the evaluator's metric first"),
    (dict(objective=[METRIC, "cost.encode_ms"], sampler=optuna.samplers.CmaEsSampler()),
     "CmaEsSampler cannot optimise several objectives"),
    (dict(objective=METRIC, constraints={"cost.embedding_dim": "at most 256"}), "is not a comparison"),
    (dict(objective=METRIC, constraints={"cost.dims": "<= 256"}), "unknown cost 'cost.dims'"),
])
def test_definition_refusals(fields, says):
    with pytest.raises(StudyDefinitionError, match=says) as info:
        __import__("st_hpo").Study(**BASE, **fields)
    assert "\n" not in str(info.value)


def test_several_objectives_take_the_default_directions():
    study = __import__("st_hpo").Study(**BASE, objective=[METRIC, "cost.encode_ms"],
                                       sampler=optuna.samplers.NSGAIISampler(seed=0))
    assert study.is_multi_objective and study.directions == ("maximize", "minimize")
    single = __import__("st_hpo").Study(**BASE, objective=[METRIC])
    assert single.objective == METRIC and single.direction == "maximize" and not single.is_multi_objective


@pytest.mark.parametrize(("fields", "says"), [
    (dict(objective=[METRIC, "sts-dev_pearson_cosin"]), "did you mean 'sts-dev_pearson_cosine'"),
    (dict(constraints={"sts-dev_nope": ">= 0.5"}), "constraints: 'sts-dev_nope' is neither a cost"),
])
def test_validation_checks_every_metric(make_study, fields, says):
    from st_hpo import validate_study

    with pytest.raises(StudyDefinitionError, match=says):
        validate_study(make_study(**fields))


def test_identity_records_the_objectives(make_study):
    from st_hpo._definition._args import build_base_args
    from st_hpo._definition._identity import definition_record

    one = make_study()
    several = make_study(objective=[METRIC, "cost.embedding_dim"])
    args = build_base_args(one.args, output_dir="/tmp/x")
    assert definition_record(one, args, {})["objective"] == f"{METRIC} (maximize)"
    assert definition_record(several, args, {})["objective"] == \
        f"{METRIC} (maximize), cost.embedding_dim (minimize)"


@pytest.mark.slow
def test_resume_refuses_other_objectives(make_study, tmp_path):
    import st_hpo

    study = make_study(objective=[METRIC, "cost.embedding_dim"], n_trials=1, args=dict(
        num_train_epochs=1, per_device_train_batch_size=16, save_strategy="no", disable_tqdm=True, use_cpu=True))
    st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    trials = load_trials(tmp_path, "tiny")
    assert [t.state.name for t in trials] == ["COMPLETE"] and len(trials[0].values) == 2
    with pytest.raises(StudyDefinitionError, match="objective") as info:
        st_hpo.run_study(study.replace(objective=[METRIC, "cost.parameters"]), output_dir=tmp_path, progress=False)
    assert "\n" not in str(info.value)
    # another study name alone is refused in this folder (it holds this study): the fix names both
    assert str(info.value).endswith("use another study_name= (and another output_dir=, if you give one)")


@pytest.mark.parametrize(("dim", "pruned"), [(32, True), (8, False)])
def test_pruning_compares_only_trials_no_worse_on_a_static_cost(dim, pruned):
    """A trial behind on quality is pruned by trials as large as it, never for scoring below larger models:
    those may not dominate it, whatever they score."""
    from st_hpo._execution._first_objective import FirstObjectivePruning
    from st_hpo._tracking._schema import COSTS_ATTR, INTERMEDIATE_ATTR

    study = optuna.create_study(directions=["maximize", "minimize"],
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    for value in (0.8, 0.85, 0.9):
        study.add_trial(optuna.trial.create_trial(
            values=[value, 32.0], user_attrs={INTERMEDIATE_ATTR: {"111": value - 0.1},
                                              COSTS_ATTR: {"cost.embedding_dim": 32.0}}))
    trial = study.ask()
    trial.set_user_attr(COSTS_ATTR, {"cost.embedding_dim": float(dim)})
    pruning = FirstObjectivePruning(trial, (METRIC, "cost.embedding_dim"), ("maximize", "minimize"))
    pruning.report(0.2, 111)
    assert pruning.should_prune() is pruned
    assert trial.user_attrs[INTERMEDIATE_ATTR] == {"111": 0.2}


@pytest.mark.parametrize("ms, pruned", [(12000.0, False), (41000.0, True), (38500.0, True)])
def test_pruning_compares_only_trials_no_slower_to_encode(ms, pruned):
    """cost.encode_ms is set by the architecture and input length, not the weights: a fast model (a short
    max_seq_length) is not pruned for scoring below slower ones; one as slow or slower (within the timing
    slack: 38,500 ms against 38,000) is."""
    from st_hpo._execution._first_objective import FirstObjectivePruning
    from st_hpo._tracking._schema import COSTS_ATTR, INTERMEDIATE_ATTR

    study = optuna.create_study(directions=["maximize", "minimize"],
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    for value in (0.8, 0.85, 0.9):
        study.add_trial(optuna.trial.create_trial(
            values=[value, 38000.0], user_attrs={INTERMEDIATE_ATTR: {"111": value - 0.1},
                                                 COSTS_ATTR: {"cost.encode_ms": 38000.0}}))
    trial = study.ask()
    trial.set_user_attr(COSTS_ATTR, {"cost.encode_ms": ms})
    pruning = FirstObjectivePruning(trial, (METRIC, "cost.encode_ms"), ("maximize", "minimize"))
    pruning.report(0.2, 111)
    assert pruning.should_prune() is pruned


def test_encode_time_is_known_before_training_when_it_is_an_objective():
    """The fresh model is timed before it trains (for the pruning above) only when cost.encode_ms is an
    objective; static costs are read as before."""
    from st_hpo._execution._objectives import known_before_training
    from st_hpo._tracking._schema import COSTS_ATTR

    timed = []
    trial = optuna.create_study(directions=["maximize", "minimize"]).ask()
    known_before_training(trial, object(), (METRIC, "cost.train_seconds"), lambda m: timed.append(m) or 5.0)
    assert timed == [] and COSTS_ATTR not in trial.user_attrs
    model = object()
    costs = known_before_training(trial, model, (METRIC, "cost.encode_ms"), lambda m: timed.append(m) or 5.0)
    assert timed == [model] and costs == {"cost.encode_ms": 5.0} == trial.user_attrs[COSTS_ATTR]


@pytest.mark.slow
def test_a_single_objective_constraint_makes_trials_infeasible(make_study, tmp_path):
    """Constraints hold in a single-objective study too: a complete trial that breaks one is never the best,
    and its model is not kept."""
    import st_hpo
    from st_hpo.exceptions import NoResultError

    study = make_study(constraints={METRIC: ">= 2"}, n_trials=2)  # a correlation never reaches 2
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    trials = load_trials(tmp_path, "tiny")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"] and result.best_trial_number is None
    assert all(t.constraints["st_hpo.infeasible"] > 0 and "breaks >= 2" in t.user_attrs["st_hpo.infeasible"]
               for t in trials)
    assert not list((tmp_path / "trials").glob("trial-*/model"))
    with pytest.raises(NoResultError, match="no feasible complete trial"):
        st_hpo.best_trial(study, output_dir=tmp_path)
    rows = st_hpo.open_study(study, output_dir=tmp_path).status().rows
    assert [(r["best"], bool(r["infeasible"]), r["values"] == [r["value"]]) for r in rows] == [(False, True, True)] * 2


def test_models_of_trials_that_leave_the_front_are_deleted(tmp_path):
    from st_hpo._execution._best_model import enters_front, keep_only_best

    study = optuna.create_study(directions=["maximize", "minimize"])
    for values in ([0.80, 8.0], [0.85, 32.0], [0.84, 32.0], [0.90, 16.0]):  # trial 3 dominates 1 and 2
        study.add_trial(optuna.trial.create_trial(values=values))
        (tmp_path / "trials" / f"trial-{len(study.trials) - 1}" / "model").mkdir(parents=True)
    assert enters_front(study, [0.5, 4.0]) and not enters_front(study, [0.85, 16.0])
    keep_only_best(study, tmp_path)
    assert sorted(p.parent.name for p in (tmp_path / "trials").glob("trial-*/model")) == ["trial-0", "trial-3"]


def test_a_trial_off_the_front_is_refused_naming_the_trial_that_dominates_it():
    """A tie on quality and a lower cost dominate: the refusal says so (not "better on every objective") and
    names the trial that does it."""
    from st_hpo._results._pareto import chosen_trial
    from st_hpo.exceptions import UsageError

    study = optuna.create_study(directions=["maximize", "minimize"])
    for values in ([0.6, 205.8], [0.6, 139.5], [0.4, 100.0]):
        study.add_trial(optuna.trial.create_trial(values=values))
    with pytest.raises(UsageError) as info:
        chosen_trial(study, 0)
    assert str(info.value) == ("trial=0 is not on the Pareto front: trial 1 is at least as good on every objective "
                               "and better on one; the front: trials 1, 2")
    assert chosen_trial(study, 2).number == 2


def test_trial_picks_any_feasible_complete_trial_of_a_single_objective_study():
    """The README's CLI section: ``--trial N`` picks trial N instead of the best one, with one objective too."""
    from st_hpo._results._pareto import chosen_trial
    from st_hpo.exceptions import UsageError

    study = optuna.create_study(direction="maximize")
    for value in (0.5, 0.7):
        study.add_trial(optuna.trial.create_trial(value=value))
    assert chosen_trial(study, None).number == 1 and chosen_trial(study, 0).number == 0
    with pytest.raises(UsageError, match="no such trial"):
        chosen_trial(study, 5)


def test_an_empty_front_says_every_complete_trial_broke_a_constraint(capsys):
    """Every complete trial infeasible: the front is empty, and the refusal and ``best`` say why, instead of
    "none yet" and "pick one with --trial N"."""
    from st_hpo._results._pareto import chosen_trial, pareto_answer
    from st_hpo._tracking._schema import INFEASIBLE_ATTR, OBJECTIVES_ATTR
    from st_hpo.cli._review import _print_front
    from st_hpo.exceptions import UsageError

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr(OBJECTIVES_ATTR, [METRIC, "cost.embedding_dim"])
    assert "trials none yet" in _refusal(chosen_trial, study, UsageError)
    study.add_trial(optuna.trial.create_trial(values=[0.6, 32.0],
                                              user_attrs={INFEASIBLE_ATTR: "cost.embedding_dim = 32 breaks <= 1"}))
    assert _refusal(chosen_trial, study, UsageError).endswith(
        "trials none (every complete trial broke a constraint; run more trials, or relax Study(constraints=...))")
    _print_front(pareto_answer(study), as_json=False)
    out = capsys.readouterr().out
    assert "every complete trial broke a constraint of the study" in out and "--trial N" not in out


def _refusal(chosen_trial, study, error) -> str:
    with pytest.raises(error) as info:
        chosen_trial(study, None)
    return str(info.value)


@pytest.mark.slow
def test_a_run_whose_every_complete_trial_broke_a_constraint_says_so(tmp_path, tiny_model_path):
    """No front and no best: the run's last lines say why instead of ending on the counts alone."""
    text = STUDY.format(pairs=make_pairs(64, 1), eval_pairs=make_pairs(32, 2), model=tiny_model_path)
    path = tmp_path / "never_feasible.py"
    path.write_text(text.replace('"<= 16"', '"<= 1"').replace("n_trials=10", "n_trials=2"))
    result = run_cli("run", path, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "study 'quality-vs-size': 2 complete" in result.stdout, result.stdout
    assert ("no result: all 2 complete trial(s) broke a constraint of the study; run more trials, or relax "
            "Study(constraints=...)") in result.stdout


def test_sync_recreates_a_lost_trial_run_with_its_objectives(make_study, tmp_path):
    """A trial whose MLflow run is gone gets it back from `sync`, with each objective under its own name."""
    import st_hpo

    study = make_study(objective=[METRIC, "cost.embedding_dim"], n_trials=1, pruner="none")
    st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    client, _, (run,) = mlflow_runs(tmp_path, "tiny")
    logged = {k: v for k, v in run.data.metrics.items() if k.startswith("objective.")}
    assert set(logged) == {f"objective.{METRIC}", "objective.cost.embedding_dim"}
    client.delete_run(run.info.run_id)
    st_hpo.open_study(study, output_dir=tmp_path).sync()
    _, _, (again,) = mlflow_runs(tmp_path, "tiny")
    assert again.info.run_id != run.info.run_id and again.data.tags["st_hpo.trial_state"] == "COMPLETE"
    assert {k: v for k, v in again.data.metrics.items() if k.startswith("objective.")} == logged
