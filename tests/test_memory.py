"""Out of memory as a result the sampler learns from, and GradCache losses that fit their mini-batches.

Out of memory is simulated where a GPU raises it: a loss whose forward raises ``torch.OutOfMemoryError``
above a batch size, a Cached loss whose ``embed_minibatch`` raises it above a mini-batch size."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution

import st_hpo
from st_hpo import SearchSpaceError, StudyDefinitionError
from st_hpo.cli import main
from tests.conftest import make_pairs
from tests.helpers import load_trials, mlflow_runs

STUDY = textwrap.dedent('''
    import optuna
    import torch
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss
    import st_hpo

    PAIRS = {pairs!r}
    EVAL = {eval_pairs!r}
    FITS = 16  # rows per forward pass that fit in the "GPU"


    class OutOfMemoryAbove16(CoSENTLoss):
        def forward(self, sentence_features, labels):
            rows = sentence_features[0]["input_ids"].shape[0]
            if rows > FITS:
                raise {error}(f"CUDA out of memory. Tried to allocate {{rows * 64}}.00 MiB (simulated: {{rows}} rows)")
            return super().forward(sentence_features, labels)


    def evaluator(ds):
        return EmbeddingSimilarityEvaluator(ds["sentence1"], ds["sentence2"], ds["score"], name="sts-dev")

    study = st_hpo.Study(
        name={name!r}, model={model!r},
        train_dataset=lambda: Dataset.from_dict(PAIRS), eval_dataset=lambda: Dataset.from_dict(EVAL),
        loss=OutOfMemoryAbove16, evaluator=evaluator, objective="sts-dev_spearman_cosine",
        args=dict(num_train_epochs=1, per_device_train_batch_size=8, save_strategy="no", disable_tqdm=True,
                  seed=7, use_cpu=True, logging_steps=1),
        space={{"per_device_train_batch_size": optuna.distributions.CategoricalDistribution([8, 16, 32, 64]),
               "learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)}},
        n_trials={n_trials}, seed=0, baseline=False, pruner="none", keep_best_model=False,
        max_failures_in_a_row={max_failures}, enqueue={enqueue!r},
    )
''')


def _study_file(tmp_path, model, name, *, error="torch.OutOfMemoryError", n_trials=3, max_failures=10,
                enqueue=(), train_rows=64):
    path = tmp_path / f"{name}.py"
    path.write_text(STUDY.format(pairs=make_pairs(train_rows, 1), eval_pairs=make_pairs(32, 2), name=name,
                                 model=model, error=error, n_trials=n_trials, max_failures=max_failures,
                                 enqueue=list(enqueue)))
    return path


@pytest.mark.slow
def test_out_of_memory_is_recorded_as_such_and_neither_counts_nor_stops_the_worker(tmp_path, tiny_model_path,
                                                                                     capsys):
    too_big = [{"per_device_train_batch_size": 64, "learning_rate": lr} for lr in (1e-4, 2e-4, 3e-4)]
    path = _study_file(tmp_path, tiny_model_path, "oom", n_trials=2, max_failures=2,
                       enqueue=[*too_big, {"per_device_train_batch_size": 8, "learning_rate": 1e-4}])
    out = tmp_path / "out"
    result = st_hpo.run_study(st_hpo.load_study_file(path), output_dir=out, progress=False)

    # three trials in a row out of memory: no failure in a row (max_failures_in_a_row=2), no budget used
    assert result.stop_reason is None and result.budget_met
    assert (result.n_complete, result.n_out_of_memory, result.n_fail) == (2, 3, 0)
    trials = load_trials(out, "oom")
    assert len(trials) == 5 and [t.state.name for t in trials[3:]] == ["COMPLETE", "COMPLETE"]
    for t in trials[:3]:
        # told as PRUNED with an infeasible constraint: a trial TPE reads and steers away from
        assert t.state.name == "PRUNED" and t.constraints == {"st_hpo.out_of_memory": 1.0}
        assert t.user_attrs["st_hpo.error"].startswith("out of memory: CUDA out of memory. Tried to allocate")
    assert result.best_trial_number in (3, 4)

    assert main(["status", str(path), "--output-dir", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in rows] == ["OUT_OF_MEMORY"] * 3 + ["COMPLETE"] * 2
    assert rows[0]["error"].startswith("out of memory: CUDA out of memory. Tried to allocate 4096.00 MiB")
    assert main(["status", str(path), "--output-dir", str(out)]) == 0
    table = capsys.readouterr().out
    assert "2 of 2 trials finished" in table and "3 out of memory" in table
    assert "out of memory: CUDA out of memory. Tried to allocate" in table
    rows = (out / "reports" / "trials.csv").read_text().splitlines()[1:]
    assert [row.split(",")[1] for row in rows] == ["OUT_OF_MEMORY"] * 3 + ["COMPLETE"] * 2
    assert "3 out of memory" in (out / "reports" / "summary.md").read_text()

    _, _, runs = mlflow_runs(out, "oom")
    by_number = {int(r.data.tags["st_hpo.trial_number"]): r for r in runs}
    for number in (0, 1, 2):
        run = by_number[number]
        assert run.info.status == "FAILED" and run.data.tags["st_hpo.out_of_memory"] == "true"
        assert run.data.tags["st_hpo.trial_state"] == "OUT_OF_MEMORY"
        assert run.data.tags["st_hpo.error"].startswith("out of memory: CUDA out of memory")
    assert "st_hpo.out_of_memory" not in by_number[3].data.tags
    # `sync` agrees: an out-of-memory run is already as the storage says
    assert main(["sync", str(path), "--output-dir", str(out)]) == 0
    assert "0 run(s) created or closed" in capsys.readouterr().out


def _too_big_after_start_up(trials):
    """Of TPE's 20 proposals after its 10 start-up trials, how many were batch sizes that do not fit."""
    return sum(t.params["per_device_train_batch_size"] > 16 for t in trials[10:30])


@pytest.mark.slow
def test_tpe_learns_which_batch_sizes_do_not_fit(tmp_path, tiny_model_path):
    """The same study twice: the "GPU" fits 16 rows; the batch size is one of 8, 16, 32, 64. Out of memory
    raised as torch raises it is recorded as such; raised as any other error (as st-hpo recorded it before),
    the trial fails, and TPE, which skips failed trials, keeps proposing batch sizes that do not fit."""
    learns = _study_file(tmp_path, tiny_model_path, "learns", n_trials=22, train_rows=32)
    result = st_hpo.run_study(st_hpo.load_study_file(learns), output_dir=tmp_path / "learns", progress=False)
    assert result.budget_met and result.n_complete == 22 and result.n_out_of_memory >= 5
    with_feature = load_trials(tmp_path / "learns", "learns")
    assert len(with_feature) >= 30 and all(t.state.name in ("COMPLETE", "PRUNED") for t in with_feature)

    blind = _study_file(tmp_path, tiny_model_path, "blind", error="RuntimeError", n_trials=22, train_rows=32)
    before = st_hpo.run_study(st_hpo.load_study_file(blind), output_dir=tmp_path / "blind", progress=False)
    without = load_trials(tmp_path / "blind", "blind")
    assert len(without) >= 30, "the study without the feature ran out of trials to compare"
    assert "failed (max_failures_in_a_row=10)" in (before.stop_reason or "") or before.n_complete == 22

    learnt, blind_count = _too_big_after_start_up(with_feature), _too_big_after_start_up(without)
    print(f"batch sizes that do not fit, of TPE's 20 proposals after start-up: {learnt} with, "
          f"{blind_count} without")
    assert learnt <= 8, "fewer than half: a random sampler would propose 10 of 20"
    assert blind_count >= learnt + 5


CACHED_STUDY = textwrap.dedent('''
    import optuna
    import torch
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss
    import st_hpo

    PAIRS = {pairs!r}
    EVAL = {eval_pairs!r}


    class CachedOutOfMemoryAbove16(CachedMultipleNegativesRankingLoss):
        """A Cached loss on a "GPU" where mini-batches of more than 16 rows do not fit."""
        raised = []  # the mini-batch sizes that ran out of memory, over the process

        def embed_minibatch(self, sentence_feature, begin, end, *args, **kwargs):
            if end - begin > 16:
                CachedOutOfMemoryAbove16.raised.append(end - begin)
                raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {{(end - begin) * 8}}.00 MiB")
            return super().embed_minibatch(sentence_feature, begin, end, *args, **kwargs)


    def loss(model, params):
        return {loss}


    def evaluator(ds):
        return EmbeddingSimilarityEvaluator(ds["sentence1"], ds["sentence2"], ds["score"], name="sts-dev")

    study = st_hpo.Study(
        name={name!r}, model={model!r},
        train_dataset=lambda: Dataset.from_dict(PAIRS), eval_dataset=lambda: Dataset.from_dict(EVAL),
        loss=loss, evaluator=evaluator, objective="sts-dev_spearman_cosine",
        args=dict(num_train_epochs=1, per_device_train_batch_size=64, save_strategy="no", disable_tqdm=True,
                  seed=7, use_cpu=True, logging_steps=1),
        space={{"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)}},
        n_trials=2, seed=0, baseline=False, pruner="none", keep_best_model=False, adjust_mini_batch={adjust},
        enqueue=[{{"learning_rate": 1e-4}}, {{"learning_rate": 3e-4}}],
    )
''')


def _cached_study(tmp_path, model, name, loss, *, adjust=True):
    pairs = make_pairs(128, 1)
    path = tmp_path / f"{name}.py"
    path.write_text(CACHED_STUDY.format(pairs={"sentence1": pairs["sentence1"], "sentence2": pairs["sentence2"]},
                                        eval_pairs=make_pairs(32, 2), name=name, model=model, loss=loss,
                                        adjust=adjust))
    return st_hpo.load_study_file(path), path


@pytest.mark.slow
def test_a_cached_loss_lowers_its_mini_batch_until_it_fits_and_trains_as_with_that_mini_batch(
        tmp_path, tiny_model_path, capsys):
    study, path = _cached_study(tmp_path, tiny_model_path, "cached",
                                "CachedOutOfMemoryAbove16(model, mini_batch_size=64)")
    out = tmp_path / "out"
    result = st_hpo.run_study(study, output_dir=out, progress=False)
    assert (result.n_complete, result.n_out_of_memory) == (2, 0), "trained at batch 64 despite out of memory"
    # 64 and 32 ran out of memory once, in trial 0's first step; its later steps and trial 1 (same batch
    # size and sequence length, same worker) started at 16
    assert study.loss.__globals__["CachedOutOfMemoryAbove16"].raised == [64, 32]
    trials = load_trials(out, "cached")
    assert [t.user_attrs["st_hpo.mini_batch_size"] for t in trials] == [16, 16]
    _, _, runs = mlflow_runs(out, "cached")
    assert [r.data.tags["st_hpo.mini_batch_size"] for r in runs] == ["16", "16"]
    assert main(["status", str(path), "--output-dir", str(out), "--json"]) == 0
    assert [r["mini_batch_size"] for r in json.loads(capsys.readouterr().out)] == [16, 16]

    fixed, _ = _cached_study(tmp_path, tiny_model_path, "fixed16",
                             "CachedMultipleNegativesRankingLoss(model, mini_batch_size=16)")
    st_hpo.run_study(fixed, output_dir=tmp_path / "fixed", progress=False)
    reference = load_trials(tmp_path / "fixed", "fixed16")
    assert [t.params for t in reference] == [t.params for t in trials]
    for got, want in zip(trials, reference, strict=True):
        assert got.value == pytest.approx(want.value, abs=1e-4)


@pytest.mark.slow
def test_adjust_mini_batch_false_keeps_the_mini_batch_and_the_trial_runs_out_of_memory(tmp_path, tiny_model_path):
    study, _ = _cached_study(tmp_path, tiny_model_path, "kept", "CachedOutOfMemoryAbove16(model, mini_batch_size=32)",
                             adjust=False)
    # every trial runs out of memory (none counts): the timeout ends the run
    result = st_hpo.run_study(study, n_trials=1, timeout=10, output_dir=tmp_path / "out", progress=False)
    assert result.n_complete == 0 and result.n_out_of_memory >= 1
    trials = load_trials(tmp_path / "out", "kept")
    assert trials[0].user_attrs["st_hpo.out_of_memory"] is True
    assert trials[0].user_attrs["st_hpo.mini_batch_size"] == 32


def test_validation_refuses_auto_find_batch_size_and_points_to_the_cached_losses(make_study):
    why = r"halves the batch size .* in-batch negatives .* Cached loss \(CachedMultipleNegativesRankingLoss"
    with pytest.raises(StudyDefinitionError, match=r"auto_find_batch_size=True is refused: auto_find_batch_size " + why):
        st_hpo.validate_study(make_study(args={**make_study().args, "auto_find_batch_size": True}))
    sampled = make_study(space={"auto_find_batch_size": CategoricalDistribution([False, True])})
    with pytest.raises(SearchSpaceError, match=r"the space samples 'auto_find_batch_size', but auto_find_batch_size " + why):
        st_hpo.validate_study(sampled)


def test_probe_memory_on_the_cpu_says_there_is_nothing_to_probe(study_file, capsys):
    from st_hpo._execution._probe_memory import NOTHING_TO_PROBE

    assert main(["validate", str(study_file()), "--probe-memory"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == NOTHING_TO_PROBE
    assert NOTHING_TO_PROBE.startswith("no CUDA GPU is visible here: nothing to probe")


def test_probe_memory_corners_are_the_batch_sizes_largest_first():
    from optuna.distributions import IntDistribution

    from st_hpo._execution._probe_memory import batch_sizes

    class Base:
        per_device_train_batch_size = 16

    assert batch_sizes({"per_device_train_batch_size": CategoricalDistribution([16, 64, 32])}, Base) == [64, 32, 16]
    assert batch_sizes({"per_device_train_batch_size": IntDistribution(8, 100)}, Base) == [100, 50, 25, 12]
    assert batch_sizes({"learning_rate": None}, Base) == [16]


@pytest.mark.slow
def test_probe_trains_the_largest_batch_first_down_to_one_that_fits(tmp_path, tiny_model_path):
    """The GPU path's corners, trained where the study trains (the CPU here): batch sizes 64 and 32 do
    not fit the simulated 16 rows, 16 does, and the probe stops there."""
    from st_hpo._execution._probe_memory import probe_corners

    study = st_hpo.load_study_file(_study_file(tmp_path, tiny_model_path, "probe"))
    corners = probe_corners(study, steps=2, total_mb=None)
    assert [(c.params["per_device_train_batch_size"], c.fits) for c in corners] == [(64, False), (32, False),
                                                                                     (16, True)]
    assert "does NOT fit (out of memory: CUDA out of memory" in corners[0].line()
    assert corners[2].line().startswith("per_device_train_batch_size=16: peak ? of ? MiB reserved, fits")


def test_the_gradcache_losses_of_every_kind_are_found_plain_losses_are_not(tiny_model_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.cross_encoder.losses import CachedMultipleNegativesRankingLoss as CrossCached
    from sentence_transformers.multi_vector_encoder import MultiVectorEncoder
    from sentence_transformers.multi_vector_encoder.losses import (
        CachedMultiVectorMultipleNegativesRankingLoss,
    )
    from sentence_transformers.sentence_transformer.losses import (
        CachedGISTEmbedLoss,
        CachedMultipleNegativesRankingLoss,
        CachedMultipleNegativesSymmetricRankingLoss,
        CoSENTLoss,
        MatryoshkaLoss,
    )
    from sentence_transformers.sparse_encoder import SparseEncoder
    from sentence_transformers.sparse_encoder.losses import (
        CachedSpladeLoss,
        SparseMultipleNegativesRankingLoss,
    )
    from sentence_transformers.sparse_encoder.models import MLMTransformer, SpladePooling

    from st_hpo._execution._memory import cached_losses

    model = SentenceTransformer(tiny_model_path, device="cpu")
    found = [CachedMultipleNegativesRankingLoss(model, mini_batch_size=8),
             CachedMultipleNegativesSymmetricRankingLoss(model, mini_batch_size=8),
             CachedGISTEmbedLoss(model, guide=model, mini_batch_size=8)]
    for loss in found:
        assert cached_losses(loss) == [loss]
    wrapped = MatryoshkaLoss(model, found[0], [32, 16])
    assert cached_losses(wrapped) == [found[0]]
    assert cached_losses({"a": found[1], "b": CoSENTLoss(model)}) == [found[1]]
    assert cached_losses(CoSENTLoss(model)) == []
    assert cached_losses(CachedMultipleNegativesRankingLoss(model, mini_batch_num_tokens=256)) == []
    # the other kinds' Cached losses, each on a model of its kind (the tiny BERT under it)
    hf = str(Path(tiny_model_path).parent / "hf")
    sparse = SparseEncoder(modules=[MLMTransformer(hf), SpladePooling("max")], device="cpu")
    for loss in (CrossCached(CrossEncoder(hf, num_labels=1, device="cpu"), mini_batch_size=8),
                 CachedSpladeLoss(sparse, loss=SparseMultipleNegativesRankingLoss(sparse),
                                  document_regularizer_weight=3e-5, mini_batch_size=8),
                 CachedMultiVectorMultipleNegativesRankingLoss(MultiVectorEncoder(hf, device="cpu"), mini_batch_size=8)):
        assert cached_losses(loss) == [loss]
