"""What a confirmation concluded, in words that agree with its test (``st-hpo confirm`` and ``st-hpo best``).

A confirmation (see :mod:`st_hpo._results._confirm`) ranks its configurations by their mean over the new
seeds, and tests the best one against the baseline (or, in a study without a baseline trial, against the
runner-up). The best mean alone is not a win: a configuration *wins* only when the test says it beats
the other beyond seed noise. These functions read the stored record (``st_hpo.confirmed``, a
:meth:`ConfirmResult.to_dict`), older records included (no ``beats`` key: their ``beats_baseline``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["confirmed_line", "verdict"]


def _best_mean(confirmed: dict[str, Any]) -> tuple[str | None, int | None]:
    """(label, trial) of the best mean; a record made before ``best_mean`` was kept has it as ``winner``."""
    if "best_mean" in confirmed:
        return confirmed.get("best_mean"), confirmed.get("best_mean_trial")
    return confirmed.get("winner"), confirmed.get("winner_trial")


def _beats(test: dict[str, Any]) -> bool | None:
    """The test's verdict: True, False, or None (no test possible, or a record that does not say)."""
    return test.get("beats", test.get("beats_baseline"))


def verdict(confirmed: dict[str, Any]) -> str:
    """The confirmation's conclusion in one clause, e.g. ``trial 3 wins: it beats the baseline beyond seed
    noise`` or ``trial 3 has the best mean, but it does not beat the baseline beyond seed noise: no winner is
    confirmed``."""
    winner, _ = _best_mean(confirmed)
    test = confirmed.get("test") or {}
    if winner is None:
        return "no configuration finished its confirmation runs"
    against = test.get("against") or "baseline"
    against = "the baseline" if against == "baseline" else against
    if winner == "baseline":
        return "the baseline has the best mean: no configuration beats it"
    beats = _beats(test)
    if beats is True or (beats is None and "p_value" not in test):  # an old record with no verdict: as it said
        return f"{winner} wins" + (f": it beats {against} beyond seed noise" if beats else "")
    if beats is False:
        return (f"{winner} has the best mean, but it does not beat {against} beyond seed noise: no winner is "
                "confirmed")
    if test.get("against") is None:  # one configuration, no baseline: nothing was compared
        return f"{winner} was confirmed alone: nothing to compare it with"
    return f"{winner} has the best mean, but no test was possible: no winner is confirmed"


def confirmed_line(confirmed: dict[str, Any] | None, single_run_best: int) -> str | None:
    """``st-hpo best``'s note on the confirmation, or None when there is nothing to add.

    ``single_run_best`` is the study's best trial now. A confirmation made while another trial was the best
    (the study was extended since) is said to be of that earlier best, never of this one. A current one is
    noted when its best mean is not the single-run best.
    """
    if not confirmed or _best_mean(confirmed)[0] is None:
        return None
    seeds = len(confirmed.get("seeds") or [])
    then = confirmed.get("single_run_best")
    line = (confirmed.get("test") or {}).get("line", "")
    if then is not None and then != single_run_best:
        confirmed_trials = {c.get("trial") for c in confirmed.get("configs") or [] if not c.get("baseline")}
        now = ("it confirmed trial {n} too" if single_run_best in confirmed_trials else
               "trial {n}, the best now, was not confirmed: run st-hpo confirm again to include it").format(
                   n=single_run_best)
        return (f"st-hpo confirm ran when trial {then} was the best ({seeds} seeds each) and found: "
                f"{verdict(confirmed)}; {line}; {now}")
    if _best_mean(confirmed)[1] == single_run_best:
        return None
    words = verdict(confirmed)
    cut = min((i for i in (words.find(","), words.find(":")) if i >= 0), default=len(words))
    words = f"{words[:cut]}, not trial {single_run_best}{words[cut:]}"  # named after the first clause
    return f"after confirmation ({seeds} seeds each, st-hpo confirm), {words}; {line}"
