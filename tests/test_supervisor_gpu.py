"""A supervisor (``--workers``/``--gpus``: its workers own the GPUs) holds no CUDA context.

Found on the H200 (benchmarks/gpu_trials.py, 2026-12-04): nvidia-smi listed the supervisor's pid beside its
two workers. transformers' ``TrainingArguments`` resolves its device when it is built, and on a machine with
a GPU that calls ``torch.cuda.set_device``, which creates a CUDA context (hundreds of MB of the card, held for
the whole study). The supervisor builds the base arguments, and a clone per sampled choice, while it
validates the study. Here the GPU is simulated: ``torch.cuda.is_available`` says True and
``torch.cuda.set_device`` records its calls instead of making a context.
"""

from __future__ import annotations

import pytest

from st_hpo._definition._resources import StudyResources
from st_hpo._validation import validate_study


@pytest.fixture
def simulated_gpu(monkeypatch):
    import torch

    calls: list = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(str(device)))
    return calls


def _gpu_study(make_study):
    # the base arguments of a study that trains on the GPU: no use_cpu
    return make_study(args=dict(num_train_epochs=1, per_device_train_batch_size=16, learning_rate=5e-5,
                                eval_strategy="steps", eval_steps=2, logging_steps=1, save_strategy="no",
                                disable_tqdm=True, seed=7))


def test_a_process_that_never_trains_validates_without_setting_a_cuda_device(make_study, simulated_gpu, tmp_path):
    study = _gpu_study(make_study)
    validated = validate_study(study, StudyResources(study), output_dir=str(tmp_path), on_cpu=True)
    assert simulated_gpu == []  # no TrainingArguments built here resolved its device through CUDA
    assert validated.base_args.use_cpu is False  # the arguments the workers train with are the study's own


def test_a_process_that_trains_still_resolves_the_gpu(make_study, simulated_gpu, tmp_path):
    """The counter-check: where trials train, the arguments resolve to the GPU as transformers does it."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    SentenceTransformerTrainingArguments(output_dir=str(tmp_path))
    assert simulated_gpu == ["cuda:0"]


def test_a_supervisor_opens_its_session_without_setting_a_cuda_device(make_study, simulated_gpu, tmp_path):
    """All a supervisor does before its workers start: validation, the storage, MLflow, the queued trials."""
    from st_hpo._execution._session import SessionOptions, StudySession

    session = StudySession.open(_gpu_study(make_study), SessionOptions(output_dir=str(tmp_path), trains_here=False))
    try:
        assert simulated_gpu == []
        assert session.validated.base_args.use_cpu is False
    finally:
        session.close("FINISHED")
