"""Where a trial really trained: the devices of its model and optimizer state, read from the trainer."""

from __future__ import annotations

import st_hpo
from st_hpo._tracking._schema import DEVICE_ATTR
from tests.helpers import load_trials


def test_a_trial_records_the_devices_of_its_model_and_optimizer_state(make_study, tmp_path):
    study = make_study(n_trials=1, pruner="none")  # use_cpu=True: the trainer keeps everything on the CPU
    result = st_hpo.run_study(study, output_dir=tmp_path, progress=False)
    assert result.n_complete == 1
    (trial,) = load_trials(tmp_path, "tiny")
    # AdamW keeps exp_avg/exp_avg_sq per parameter (its 0-dim step counter, on the CPU even beside CUDA, is left out)
    assert trial.user_attrs[DEVICE_ATTR] == {"model": "cpu", "optimizer_state": "cpu"}
