"""Workers sharing a seeded study each draw their own values (the same seed would repeat configurations)."""

from __future__ import annotations

import optuna

from st_hpo._execution._sampling import make_sampler
from st_hpo._execution._session import SessionOptions, _sampler_salt
from st_hpo._execution._storage import open_storage


def _first_values(storage, sampler, n=3):
    study = optuna.load_study(study_name="s", storage=storage, sampler=sampler)
    values = []
    for _ in range(n):
        trial = study.ask()
        values.append(trial.suggest_float("lr", 1e-5, 1e-3, log=True))
        study.tell(trial, values[-1])
    return values


def test_workers_of_a_seeded_study_draw_apart_and_each_reproducibly(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    draws = {}
    for salt in ("host-a/w0", "host-a/w1", "host-b/w0", "host-a/w0"):
        storage = open_storage(str(tmp_path / f"{len(draws)}-{salt.replace('/', '_')}.journal"))
        optuna.create_study(study_name="s", storage=storage)
        draws.setdefault(salt, []).append(_first_values(storage, make_sampler("tpe", 0, salt, parallel=True)))
    assert draws["host-a/w0"][0] == draws["host-a/w0"][1], "the same worker draws the same values"
    firsts = {draws[s][0][0] for s in ("host-a/w0", "host-a/w1", "host-b/w0")}
    assert len(firsts) == 3, "different workers (names or hosts) draw different values"
    assert make_sampler("random", 0, "host-a/w0")._rng.rng.randint(10**9) != \
        make_sampler("random", 0, "host-a/w1")._rng.rng.randint(10**9)


def test_a_local_run_keeps_the_study_seed_and_qmc_shares_one_sequence():
    assert _sampler_salt(SessionOptions(), "/runs/s/optuna.journal") is None
    assert _sampler_salt(SessionOptions(), "sqlite:////runs/s/optuna.db") is None
    assert _sampler_salt(SessionOptions(role="worker", worker_name="w1"), "/runs/s/optuna.journal").endswith("/w1")
    assert _sampler_salt(SessionOptions(), "postgresql://db/st").endswith("/main"), "other machines may share it"
    assert make_sampler("qmc", 5, "host-a/w0")._seed == 5
    assert make_sampler("tpe", 5, "host-a/w0", parallel=True)._constant_liar, "TPE in workers penalises running trials"
    assert not make_sampler("tpe", 5, None)._constant_liar
